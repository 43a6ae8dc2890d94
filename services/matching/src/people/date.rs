//! Calendar dates without a date library: birth dates, ages and the UTC day that daily
//! limits count in. Dates are packed as `yyyymmdd` integers, which makes an age one
//! subtraction and one division: `(today - birth) / 10000`.

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

const DAY_MS: i64 = 86_400_000;

/// Today's UTC date at `now_ms`, as `yyyymmdd`.
pub fn ymd_of(now_ms: i64) -> u32 {
    let (y, m, d) = civil_from_days(now_ms.div_euclid(DAY_MS));
    (y.clamp(0, 9999) as u32) * 10_000 + m * 100 + d
}

/// The next UTC midnight after `now_ms`, in ms: when daily limits reset.
pub fn next_midnight_ms(now_ms: i64) -> i64 {
    (now_ms.div_euclid(DAY_MS) + 1) * DAY_MS
}

/// `ms` as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    let s = ms.rem_euclid(DAY_MS) / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Parses `YYYY-MM-DD` (a real calendar date, year 1900 or later) into `yyyymmdd`.
pub fn parse_ymd(s: &str) -> Option<u32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        s.get(r.clone())
            .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))?
            .parse()
            .ok()
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if y < 1900 || !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    // Round trip through the day number: 2023-02-29 comes back as 2023-03-01.
    let back = civil_from_days(days_from_civil(i64::from(y), m, d));
    (back == (i64::from(y), m, d)).then_some(y * 10_000 + m * 100 + d)
}

/// Age in whole years on `today` of someone born on `birth` (both `yyyymmdd`).
pub fn age(today: u32, birth: u32) -> u32 {
    today.saturating_sub(birth) / 10_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_invalid_ones_are_refused() {
        assert_eq!(parse_ymd("2000-02-29"), Some(20_000_229));
        assert_eq!(parse_ymd("2023-02-29"), None);
        assert_eq!(parse_ymd("1999-13-01"), None);
        assert_eq!(parse_ymd("1999-1-01"), None);
        assert_eq!(parse_ymd("+999-01-01"), None);
        assert_eq!(parse_ymd("1850-01-01"), None);
        for z in [-1_000_000, -1, 0, 1, 19_000, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn ages_turn_on_the_birthday() {
        assert_eq!(age(20_261_120, 20_001_121), 25);
        assert_eq!(age(20_261_121, 20_001_121), 26);
        assert_eq!(age(20_240_228, 20_000_229), 23);
        assert_eq!(age(20_240_301, 20_000_229), 24);
    }

    #[test]
    fn the_utc_day_and_its_end() {
        // 2026-11-21T13:20:00Z
        let t = 1_795_219_200_000 + 48_000_000;
        assert_eq!(ymd_of(t), 20_261_121);
        assert_eq!(rfc3339(next_midnight_ms(t)), "2026-11-22T00:00:00Z");
        assert_eq!(rfc3339(t), "2026-11-21T13:20:00Z");
    }
}
