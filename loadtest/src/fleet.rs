//! The simulated drivers: where each one is at any wall-clock time.
//!
//! A driver's track is a pure function of its index, the seed and the Unix time: it
//! drives in a straight line at a constant speed (2–8 m/s, city traffic) and bounces off
//! the edges of the Seoul box. Two consequences the benchmark relies on:
//! - reports from separate runs (or separate processes: `put`, then `batch`, then `ws`
//!   against the same server) continue the same tracks, so the server's plausibility
//!   check never sees a teleport;
//! - the distance between two reports is at most `MAX_SPEED_MPS × Δt`, i.e. ≤ 100 m
//!   whenever a driver reports at least every 12.5 s ([`Fleet::max_move_m`]).
//!
//! The `seq` of a report is its scheduled Unix time in microseconds: increasing per driver
//! within and across runs.
//!
//! Which driver the k-th report belongs to is `k × stride mod n` with `stride` coprime to
//! `n`: every driver reports once per `n` reports, evenly spread, in a scrambled order
//! (which also gives every driver its own phase: the jittered start of `ws`).

use std::fmt::Write as _;

/// The Seoul box of every geomatch benchmark.
pub const LAT_MIN: f64 = 37.3;
pub const LAT_MAX: f64 = 37.85;
pub const LNG_MIN: f64 = 126.7;
pub const LNG_MAX: f64 = 127.4;
/// Metres per degree of latitude (mean Earth radius 6,371,008.8 m).
const M_PER_DEG_LAT: f64 = 111_195.08;
pub const MIN_SPEED_MPS: f64 = 2.0;
pub const MAX_SPEED_MPS: f64 = 8.0;

/// `n` drivers with ids `<prefix>0` … `<prefix>{n-1}`.
#[derive(Debug, Clone)]
pub struct Fleet {
    n: u32,
    stride: u64,
    /// Every driver's track, computed once (3.2 MB for 100k drivers).
    tracks: Vec<Track>,
    prefix: String,
    width_m: f64,
    height_m: f64,
    m_per_deg_lng: f64,
}

/// One driver's fixed parameters, derived from its index and the seed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Track {
    x0_m: f64,
    y0_m: f64,
    vx_mps: f64,
    vy_mps: f64,
}

impl Fleet {
    /// # Panics
    /// If `n` is 0.
    pub fn new(n: u32, seed: u64, prefix: &str) -> Self {
        assert!(n > 0, "a fleet needs at least one driver");
        let mid_lat = (LAT_MIN + LAT_MAX) / 2.0;
        let m_per_deg_lng = M_PER_DEG_LAT * mid_lat.to_radians().cos();
        let width_m = (LNG_MAX - LNG_MIN) * m_per_deg_lng;
        let height_m = (LAT_MAX - LAT_MIN) * M_PER_DEG_LAT;
        Fleet {
            n,
            stride: coprime_stride(u64::from(n)),
            tracks: (0..n)
                .map(|i| Track::new(seed, i, width_m, height_m))
                .collect(),
            prefix: prefix.to_owned(),
            width_m,
            height_m,
            m_per_deg_lng,
        }
    }

    pub fn len(&self) -> u32 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The driver of the `k`-th report.
    pub fn driver_of(&self, k: u64) -> u32 {
        // (k mod n) < 2^32 and stride < n ≤ 2^32: the product fits in a u64.
        ((k % u64::from(self.n)) * self.stride % u64::from(self.n)) as u32
    }

    pub fn id(&self, i: u32) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 10);
        self.write_id(&mut s, i);
        s
    }

    pub fn write_id(&self, out: &mut String, i: u32) {
        let _ = write!(out, "{}{i}", self.prefix);
    }

    /// `(lat, lng)` of driver `i` at Unix time `unix_s` (seconds, fractional).
    pub fn position(&self, i: u32, unix_s: f64) -> (f64, f64) {
        let t = &self.tracks[i as usize];
        let x = bounce(t.x0_m + t.vx_mps * unix_s, self.width_m);
        let y = bounce(t.y0_m + t.vy_mps * unix_s, self.height_m);
        (
            (LAT_MIN + y / M_PER_DEG_LAT).clamp(LAT_MIN, LAT_MAX),
            (LNG_MIN + x / self.m_per_deg_lng).clamp(LNG_MIN, LNG_MAX),
        )
    }

    /// The longest move between two reports of one driver `interval_s` apart.
    pub fn max_move_m(interval_s: f64) -> f64 {
        MAX_SPEED_MPS * interval_s
    }
}

impl Track {
    fn new(seed: u64, i: u32, width_m: f64, height_m: f64) -> Self {
        let mut h = seed ^ (u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut next = || {
            h = splitmix64(h);
            unit(h)
        };
        let x0_m = next() * width_m;
        let y0_m = next() * height_m;
        let speed = MIN_SPEED_MPS + next() * (MAX_SPEED_MPS - MIN_SPEED_MPS);
        let heading = next() * std::f64::consts::TAU;
        Track {
            x0_m,
            y0_m,
            vx_mps: speed * heading.cos(),
            vy_mps: speed * heading.sin(),
        }
    }
}

/// Appends `v` with 7 decimals (about 1 cm), without going through float formatting.
pub fn write_coord(out: &mut String, v: f64) {
    let scaled = (v * 1e7).round() as i64;
    if scaled < 0 {
        out.push('-');
    }
    let a = scaled.unsigned_abs();
    let _ = write!(out, "{}.{:07}", a / 10_000_000, a % 10_000_000);
}

/// A report's `seq`: its scheduled Unix time in microseconds.
pub fn seq_of(unix_s: f64) -> u64 {
    (unix_s * 1e6) as u64
}

/// Position on a segment `[0, len]` of a point moving freely along the line, reflected at
/// both ends (a triangle wave). Never moves farther than the free point did.
fn bounce(u: f64, len: f64) -> f64 {
    // Not `rem_euclid`: its software fmod was a tenth of the generator's time.
    let period = 2.0 * len;
    let m = (u - (u / period).floor() * period).clamp(0.0, period);
    if m <= len {
        m
    } else {
        2.0 * len - m
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform float in [0, 1) from the top 53 bits.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A stride near `n / φ` and coprime to `n`, so that `k × stride mod n` visits every
/// residue once per `n` steps and neighbours in `k` land far apart.
fn coprime_stride(n: u64) -> u64 {
    if n <= 2 {
        return 1;
    }
    let mut s = ((n as f64) * 0.618_033_988_75) as u64;
    s = s.max(1);
    while gcd(s, n) != 1 {
        s += 1;
    }
    s % n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
        let (la, lb) = (a.0.to_radians(), b.0.to_radians());
        let dlat = lb - la;
        let dlng = (b.1 - a.1).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + la.cos() * lb.cos() * (dlng / 2.0).sin().powi(2);
        2.0 * 6_371_008.8 * h.sqrt().asin()
    }

    #[test]
    fn every_driver_reports_once_per_n_reports() {
        for n in [1, 2, 3, 10, 200, 1000, 100_000] {
            let fleet = Fleet::new(n, 7, "drv-");
            let mut seen = vec![false; n as usize];
            for k in 0..u64::from(n) {
                let i = fleet.driver_of(k + 5 * u64::from(n)) as usize;
                assert!(!seen[i], "n={n}: driver {i} twice in one cycle");
                seen[i] = true;
            }
        }
    }

    #[test]
    fn positions_stay_in_the_seoul_box() {
        let fleet = Fleet::new(1000, 1, "drv-");
        for i in 0..1000 {
            for t in [0.0, 1.0e6, 1.8e9, 1.8e9 + 12_345.6] {
                let (lat, lng) = fleet.position(i, t);
                assert!((LAT_MIN..=LAT_MAX).contains(&lat), "{lat}");
                assert!((LNG_MIN..=LNG_MAX).contains(&lng), "{lng}");
            }
        }
    }

    #[test]
    fn a_move_is_at_most_max_speed_times_the_interval() {
        let fleet = Fleet::new(2000, 3, "drv-");
        let t0 = 1.8e9;
        for i in 0..2000 {
            for dt in [0.2, 2.0, 4.0, 12.5] {
                let d = distance_m(fleet.position(i, t0), fleet.position(i, t0 + dt));
                // 1 % slack: the box maps metres to degrees at its middle latitude.
                assert!(
                    d <= Fleet::max_move_m(dt) * 1.01,
                    "driver {i}: {d} m in {dt} s"
                );
            }
        }
        assert!(Fleet::max_move_m(12.5) <= 100.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_tracks_and_ids() {
        let (a, b) = (Fleet::new(50, 9, "d-"), Fleet::new(50, 9, "d-"));
        assert_eq!(a.position(17, 1.7e9), b.position(17, 1.7e9));
        assert_ne!(a.position(17, 1.7e9), a.position(18, 1.7e9));
        assert_eq!(a.id(17), "d-17");
    }

    #[test]
    fn coordinates_are_written_with_seven_decimals() {
        let mut s = String::new();
        for v in [37.5, 127.012_345_67, -0.000_000_04, -12.25, 0.0] {
            write_coord(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "37.5000000 127.0123457 0.0000000 -12.2500000 0.0000000 ");
    }

    #[test]
    fn bouncing_stays_on_the_segment_and_reflects() {
        assert_eq!(bounce(3.0, 10.0), 3.0);
        assert_eq!(bounce(13.0, 10.0), 7.0);
        assert_eq!(bounce(-3.0, 10.0), 3.0);
        assert_eq!(bounce(23.0, 10.0), 3.0);
        let far = bounce(1.4e10 + 0.5, 61_000.0);
        assert!((0.0..=61_000.0).contains(&far));
    }

    #[test]
    fn seq_increases_with_time() {
        assert!(seq_of(1.8e9 + 0.000_002) > seq_of(1.8e9));
        assert!(seq_of(1.8e9) <= i64::MAX as u64);
    }
}
