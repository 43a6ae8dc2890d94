//! The opaque recommendations cursor: the index's [`PageKey`] of the last profile shown
//! (its exact squared chord from the viewer and its id), as hex. The next page starts
//! strictly after it in (distance, id) order, so pages never repeat or skip a profile
//! while nobody moves. It carries no coordinates.

use geomatch_index::{EntryId, PageKey};

use super::error::PeopleError;

pub fn encode(key: &PageKey) -> String {
    let mut s = format!("{:016x}", key.d2.to_bits());
    for b in key.id.as_str().bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub fn decode(s: &str) -> Result<PageKey, PeopleError> {
    let bad = || PeopleError::Cursor;
    if s.len() < 18 || s.len() % 2 != 0 || s.len() > 16 + 2 * geomatch_index::entry::MAX_ID_LEN {
        return Err(bad());
    }
    let d2 =
        f64::from_bits(u64::from_str_radix(s.get(..16).ok_or_else(bad)?, 16).map_err(|_| bad())?);
    if !d2.is_finite() || d2 < 0.0 {
        return Err(bad());
    }
    let bytes = (16..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>, _>>()?;
    let id = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| EntryId::parse(t).ok())
        .ok_or_else(bad)?;
    Ok(PageKey { d2, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let key = PageKey {
            d2: 1.234e-7,
            id: EntryId::parse("p-42.x").unwrap(),
        };
        assert_eq!(decode(&encode(&key)), Ok(key));
        for bad in [
            "",
            "zz",
            "00000000000000007",
            "7ff0000000000000aa",
            "000000000000000020",
        ] {
            assert_eq!(decode(bad), Err(PeopleError::Cursor), "{bad}");
        }
    }
}
