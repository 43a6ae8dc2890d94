//! Brute force: the reference answers every index query is checked against, a checker
//! that compares answers, and the benchmark scenario (a metro with hotspots).
//!
//! Everything here is deliberately simple: a linear scan with the haversine formula.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::entry::{Attributes, Entry, EntryId, Filter, Kind, Neighbor, Status};
use crate::index::{polygon_covers, Update};
use crate::sphere::Position;

/// Distances within this many metres count as equal (rounding differs between the chord
/// the index sorts by and the haversine formula).
pub const TOLERANCE_M: f64 = 1e-6;

/// A list of entries scanned in full for every question.
pub struct BruteForce {
    pub entries: Vec<Entry>,
}

impl BruteForce {
    pub fn new(entries: Vec<Entry>) -> Self {
        BruteForce { entries }
    }

    fn ranked(&self, at: &Position, filter: &Filter, max_m: f64) -> Vec<(EntryId, f64)> {
        let mut all: Vec<(EntryId, f64)> = self
            .entries
            .iter()
            .filter(|e| filter.matches(e.status, e.kind, e.attrs))
            .map(|e| (e.id.clone(), at.distance_m(&e.position)))
            .filter(|(_, d)| *d <= max_m)
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        all
    }

    /// The `k` nearest passing `filter`, with their haversine distances.
    pub fn nearest(
        &self,
        at: &Position,
        k: usize,
        filter: &Filter,
        max_m: Option<f64>,
    ) -> Vec<(EntryId, f64)> {
        let mut all = self.ranked(at, filter, max_m.unwrap_or(f64::INFINITY));
        all.truncate(k);
        all
    }

    /// All passing `filter` within `radius_m`, nearest first.
    pub fn within_radius(
        &self,
        at: &Position,
        radius_m: f64,
        filter: &Filter,
    ) -> Vec<(EntryId, f64)> {
        self.ranked(at, filter, radius_m)
    }

    /// Ids of all passing `filter` inside the polygon, sorted.
    pub fn within_polygon(&self, polygon: &geo::Polygon<f64>, filter: &Filter) -> Vec<EntryId> {
        let mut ids: Vec<EntryId> = self
            .entries
            .iter()
            .filter(|e| {
                filter.matches(e.status, e.kind, e.attrs) && polygon_covers(polygon, &e.position)
            })
            .map(|e| e.id.clone())
            .collect();
        ids.sort();
        ids
    }
}

/// Checks a nearest answer against the oracle's: same length, the same distance at every
/// rank, and the same ids except among entries tied (within tolerance) at the last rank.
/// `limit_m` is the query's maximum distance: entries within tolerance of it may be on
/// either side.
pub fn check_nearest(
    got: &[Neighbor],
    want: &[(EntryId, f64)],
    limit_m: Option<f64>,
) -> Result<(), String> {
    let near_limit = |d: f64| limit_m.is_some_and(|l| (d - l).abs() <= TOLERANCE_M);
    let trimmed_got: Vec<&Neighbor> = got.iter().filter(|n| !near_limit(n.distance_m)).collect();
    let trimmed_want: Vec<&(EntryId, f64)> = want.iter().filter(|w| !near_limit(w.1)).collect();
    if trimmed_got.len() != trimmed_want.len() {
        return Err(format!(
            "{} results, oracle has {} (got {:?}, want {:?})",
            trimmed_got.len(),
            trimmed_want.len(),
            got.iter()
                .map(|n| (n.entry.id.as_str(), n.distance_m))
                .collect::<Vec<_>>(),
            want.iter()
                .map(|(i, d)| (i.as_str(), *d))
                .collect::<Vec<_>>()
        ));
    }
    for (rank, (g, w)) in trimmed_got.iter().zip(&trimmed_want).enumerate() {
        if (g.distance_m - w.1).abs() > TOLERANCE_M {
            return Err(format!(
                "rank {rank}: {} at {} m, oracle has {} at {} m",
                g.entry.id, g.distance_m, w.0, w.1
            ));
        }
    }
    // Ids must agree except among ties at the cut-off distance.
    if let Some(last) = trimmed_want.last() {
        let cut = last.1;
        let mut a: Vec<&str> = trimmed_got
            .iter()
            .filter(|n| n.distance_m < cut - TOLERANCE_M)
            .map(|n| n.entry.id.as_str())
            .collect();
        let mut b: Vec<&str> = trimmed_want
            .iter()
            .filter(|w| w.1 < cut - TOLERANCE_M)
            .map(|w| w.0.as_str())
            .collect();
        a.sort_unstable();
        b.sort_unstable();
        if a != b {
            return Err(format!("ids differ: {a:?} vs {b:?}"));
        }
    }
    // Nearest first.
    if got
        .windows(2)
        .any(|w| w[0].distance_m > w[1].distance_m + TOLERANCE_M)
    {
        return Err("answer is not sorted nearest first".into());
    }
    Ok(())
}

/// The benchmark city: a 60 × 60 km box around Seoul, 70 % of entries in five hotspots
/// (normal around a district centre, σ 2.5–4 km: Gangnam-sized districts, about 2,000
/// entries per km² at their peak), 30 % uniform; statuses 60 % available, 10 %
/// offered, 10 % busy, 20 % offline; four vehicle classes; 4 or 6 seats. Fixed seed.
pub struct Metro {
    rng: ChaCha8Rng,
    hotspots: [(f64, f64, f64); 5],
}

pub const METRO_LAT: (f64, f64) = (37.3, 37.85);
pub const METRO_LNG: (f64, f64) = (126.7, 127.4);

impl Metro {
    pub fn new(seed: u64) -> Self {
        Metro {
            rng: ChaCha8Rng::seed_from_u64(seed),
            // (lat, lng, sigma in metres): Gangnam, Jongno, Yeouido, Jamsil, Incheon airport road.
            hotspots: [
                (37.498, 127.028, 3_000.0),
                (37.570, 126.983, 2_500.0),
                (37.525, 126.925, 2_500.0),
                (37.511, 127.098, 3_500.0),
                (37.480, 126.750, 4_000.0),
            ],
        }
    }

    /// A random position of the city's distribution.
    pub fn position(&mut self) -> Position {
        if self.rng.random_bool(0.7) {
            let (lat, lng, sigma) = self.hotspots[self.rng.random_range(0..5)];
            // Box–Muller.
            let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
            let u2: f64 = self.rng.random_range(0.0..1.0);
            let r = sigma * (-2.0 * u1.ln()).sqrt();
            let centre = Position::new(lat, lng).expect("hotspot centres are valid");
            let p = centre.destination(u2 * 360.0, r);
            if (METRO_LAT.0..=METRO_LAT.1).contains(&p.lat())
                && (METRO_LNG.0..=METRO_LNG.1).contains(&p.lng())
            {
                return p;
            }
        }
        self.uniform()
    }

    /// A position uniform in the city's box.
    pub fn uniform(&mut self) -> Position {
        Position::new(
            self.rng.random_range(METRO_LAT.0..METRO_LAT.1),
            self.rng.random_range(METRO_LNG.0..METRO_LNG.1),
        )
        .expect("the box is valid")
    }

    fn status(&mut self) -> Status {
        match self.rng.random_range(0..10) {
            0..=5 => Status::Available,
            6 => Status::Offered,
            7 => Status::Busy,
            _ => Status::Offline,
        }
    }

    /// `n` drivers `drv-0` … with the city's distribution, all received at `at_ms`.
    pub fn drivers(&mut self, n: usize, at_ms: i64) -> Vec<Update> {
        (0..n)
            .map(|i| {
                let position = self.position();
                let status = self.status();
                Update {
                    id: EntryId::parse(&format!("drv-{i}")).expect("valid id"),
                    kind: Kind::Driver,
                    position,
                    seq: Some(0),
                    device_ts_ms: Some(at_ms),
                    received_at_ms: at_ms,
                    status: Some(status),
                    attrs: Some(Attributes {
                        vehicle_class: self.rng.random_range(0..4),
                        seats: if self.rng.random_bool(0.8) { 4 } else { 6 },
                    }),
                }
            })
            .collect()
    }

    /// A move of at most `max_m` metres in a random direction.
    pub fn step(&mut self, from: &Position, max_m: f64) -> Position {
        from.destination(
            self.rng.random_range(0.0..360.0),
            self.rng.random_range(0.0..max_m),
        )
    }

    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}

/// A uniformly random position on the whole sphere, with extra weight on the places where
/// geometry goes wrong: near the poles, along the antimeridian and on the equator.
pub fn awkward_position(rng: &mut impl Rng) -> Position {
    let lat = match rng.random_range(0..5) {
        0 => rng.random_range(85.0..=90.0),
        1 => rng.random_range(-90.0..=-85.0),
        2 => rng.random_range(-0.01..0.01),
        _ => {
            let z: f64 = rng.random_range(-1.0..=1.0);
            z.asin().to_degrees()
        }
    };
    let lng = match rng.random_range(0..3) {
        0 => {
            if rng.random_bool(0.5) {
                rng.random_range(179.9..=180.0)
            } else {
                rng.random_range(-180.0..-179.9)
            }
        }
        _ => rng.random_range(-180.0..=180.0),
    };
    Position::new(lat, lng).expect("generated in range")
}
