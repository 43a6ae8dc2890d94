//! Surge per H3 resolution-7 cell, from demand over supply.
//!
//! - [`DemandBook`]: demand events (ride requests, quotes) per cell in a sliding window,
//!   kept as a ring of 30 buckets per cell, sharded. A rider's quotes count once per cell
//!   per window, so one rider refreshing the app cannot raise the price.
//! - [`SurgeState::recompute`]: the multiplier of every cell near demand. Pure: demand and
//!   supply in, published multipliers out, so it is tested without a clock or an index.
//!
//! The rule, per cell `c`, with `w(d) = 1/(1+d)` for cells `d` rings away (d ≤ k):
//!
//! ```text
//! D = Σ w·demand,  S = Σ w·available drivers            (k-ring smoothing)
//! raw = min(cap, 1 + sensitivity · max(0, D/(S+1) − threshold))
//! smoothed ← smoothed + α·(raw − smoothed)              (time smoothing)
//! published moves to smoothed, in whole steps, only once smoothed is a whole step away
//! ```
//!
//! Every stage is non-decreasing in demand and non-increasing in supply (positive weights,
//! a convex combination, a cap, and a step function that rounds toward the previous value),
//! so more demand or less supply never lowers a multiplier; the tests check it.

use geomatch_common::config::SurgeSettings;
use geomatch_index::{CellIndex, Resolution};
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};

/// The resolution surge is computed at (about 5 km² per cell).
pub const SURGE_RESOLUTION: Resolution = Resolution::Seven;

/// No surge, in hundredths.
pub const NO_SURGE: u16 = 100;

/// Buckets per demand window.
pub const BUCKETS: usize = 30;
const SHARDS: usize = 16;

/// Demand events of one cell in the last `BUCKETS` buckets.
#[derive(Debug, Clone)]
struct Ring {
    /// Bucket number (time / bucket length) of the newest bucket.
    newest: i64,
    counts: [u32; BUCKETS],
}

impl Ring {
    fn new(bucket: i64) -> Self {
        Ring {
            newest: bucket,
            counts: [0; BUCKETS],
        }
    }

    /// Moves the window forward to `bucket`, clearing what falls out.
    fn advance(&mut self, bucket: i64) {
        if bucket <= self.newest {
            return;
        }
        let gap = (bucket - self.newest).min(BUCKETS as i64);
        for i in 1..=gap {
            self.counts[(self.newest + i).rem_euclid(BUCKETS as i64) as usize] = 0;
        }
        self.newest = bucket;
    }

    fn add(&mut self, bucket: i64) {
        self.advance(bucket);
        if bucket > self.newest - BUCKETS as i64 {
            let slot = &mut self.counts[bucket.rem_euclid(BUCKETS as i64) as usize];
            *slot = slot.saturating_add(1);
        }
    }

    fn total(&mut self, bucket: i64) -> u32 {
        self.advance(bucket);
        self.counts.iter().fold(0u32, |a, c| a.saturating_add(*c))
    }
}

fn shard_of(cell: CellIndex) -> usize {
    (u64::from(cell).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
}

/// The resolution-7 cell of `cell` (itself when coarser, which callers avoid).
pub fn surge_cell(cell: CellIndex) -> CellIndex {
    cell.parent(SURGE_RESOLUTION).unwrap_or(cell)
}

/// When each (rider, cell) quote was last counted, ms.
type QuoteMarks = FxHashMap<(String, CellIndex), i64>;

/// The demand window: [`BUCKETS`] buckets of `bucket_ms`. Both stores cut time the same
/// way, so a round sees the same demand whichever store counted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Length of one bucket, ms.
    pub bucket_ms: i64,
    /// The window, ms (a whole number of buckets; at least [`BUCKETS`] seconds).
    pub window_ms: i64,
}

impl Window {
    pub fn new(window_s: u64) -> Self {
        let window_ms = (window_s as i64).max(BUCKETS as i64) * 1000;
        Window {
            bucket_ms: window_ms / BUCKETS as i64,
            window_ms,
        }
    }

    /// The bucket `now_ms` falls in.
    pub fn bucket(&self, now_ms: i64) -> i64 {
        now_ms.div_euclid(self.bucket_ms)
    }

    /// The buckets of the window ending at `now_ms`, oldest first.
    pub fn buckets(&self, now_ms: i64) -> std::ops::RangeInclusive<i64> {
        let newest = self.bucket(now_ms);
        newest - BUCKETS as i64 + 1..=newest
    }
}

/// Demand per cell over a sliding window.
pub struct DemandBook {
    bucket_ms: i64,
    window_ms: i64,
    cells: Box<[Mutex<FxHashMap<CellIndex, Ring>>]>,
    /// When each (rider, cell) quote was last counted.
    quoted: Box<[Mutex<QuoteMarks>]>,
}

impl DemandBook {
    pub fn new(window: Window) -> Self {
        DemandBook {
            bucket_ms: window.bucket_ms,
            window_ms: window.window_ms,
            cells: (0..SHARDS).map(|_| Mutex::default()).collect(),
            quoted: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// One demand event (a ride request) in `cell` (any resolution at or finer than 7).
    pub fn record(&self, cell: CellIndex, now_ms: i64) {
        let cell = surge_cell(cell);
        let bucket = now_ms.div_euclid(self.bucket_ms);
        self.cells[shard_of(cell)]
            .lock()
            .entry(cell)
            .or_insert_with(|| Ring::new(bucket))
            .add(bucket);
    }

    /// A quote by `rider` in `cell`: counted unless the rider's last counted quote in this
    /// cell is still in the window. Returns whether it counted.
    pub fn record_quote(&self, rider: &str, cell: CellIndex, now_ms: i64) -> bool {
        let cell = surge_cell(cell);
        let key = (rider.to_owned(), cell);
        {
            let mut quoted = self.quoted[shard_of(cell)].lock();
            match quoted.get_mut(&key) {
                Some(last) if now_ms - *last < self.window_ms => return false,
                Some(last) => *last = now_ms,
                None => {
                    quoted.insert(key, now_ms);
                }
            }
        }
        self.record(cell, now_ms);
        true
    }

    /// Events per cell in the window ending at `now_ms`; forgets cells and quote marks
    /// that left it.
    pub fn counts(&self, now_ms: i64) -> FxHashMap<CellIndex, u32> {
        let bucket = now_ms.div_euclid(self.bucket_ms);
        let mut out = FxHashMap::default();
        for shard in self.cells.iter() {
            shard.lock().retain(|cell, ring| {
                let n = ring.total(bucket);
                if n > 0 {
                    out.insert(*cell, n);
                }
                n > 0
            });
        }
        for shard in self.quoted.iter() {
            shard.lock().retain(|_, at| now_ms - *at < self.window_ms);
        }
        out
    }
}

/// [`SurgeSettings`] in the units the computation uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurgeParams {
    /// The cap, hundredths, a whole number of steps.
    pub cap: u16,
    /// The step and hysteresis band, hundredths.
    pub step: u16,
    pub threshold: f64,
    pub sensitivity: f64,
    pub smoothing: f64,
    pub k_ring: u32,
}

impl From<&SurgeSettings> for SurgeParams {
    fn from(s: &SurgeSettings) -> Self {
        let step = ((s.step * 100.0).round() as u16).max(1);
        let cap = ((s.cap * 100.0).round() as u16).max(NO_SURGE);
        SurgeParams {
            cap: (cap / step * step).max(NO_SURGE),
            step,
            threshold: s.threshold,
            sensitivity: s.sensitivity,
            smoothing: s.smoothing,
            k_ring: s.k_ring,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct CellSurge {
    /// Time-smoothed multiplier.
    smoothed: f64,
    /// What quotes use, hundredths.
    published: u16,
}

const CALM: CellSurge = CellSurge {
    smoothed: 1.0,
    published: NO_SURGE,
};

/// The surge of every cell that has any (cells absent are at 1.0).
#[derive(Debug, Clone, Default)]
pub struct SurgeState {
    cells: FxHashMap<CellIndex, CellSurge>,
}

impl SurgeState {
    /// One recomputation from demand and supply (available drivers) per resolution-7 cell.
    pub fn recompute(
        &mut self,
        p: &SurgeParams,
        demand: &FxHashMap<CellIndex, u32>,
        supply: &FxHashMap<CellIndex, u32>,
    ) {
        // Only cells within k rings of some demand can have pressure; cells already
        // surging must be updated to decay.
        let mut candidates: FxHashSet<CellIndex> = self.cells.keys().copied().collect();
        for (cell, n) in demand {
            if *n > 0 {
                candidates.extend(cell.grid_disk::<Vec<_>>(p.k_ring));
            }
        }
        let mut next = FxHashMap::default();
        for cell in candidates {
            let (mut d, mut s) = (0.0, 0.0);
            for (near, ring) in cell.grid_disk_distances::<Vec<_>>(p.k_ring) {
                let w = 1.0 / (1.0 + f64::from(ring));
                d += w * f64::from(demand.get(&near).copied().unwrap_or(0));
                s += w * f64::from(supply.get(&near).copied().unwrap_or(0));
            }
            let pressure = (d / (s + 1.0) - p.threshold).max(0.0);
            let raw = (1.0 + p.sensitivity * pressure).min(f64::from(p.cap) / 100.0);
            let prev = self.cells.get(&cell).copied().unwrap_or(CALM);
            let updated = step(p, prev, raw);
            if updated != CALM {
                next.insert(cell, updated);
            }
        }
        self.cells = next;
    }

    /// The published multiplier of `cell` (resolution 7), hundredths.
    #[cfg(test)]
    pub fn get(&self, cell: CellIndex) -> u16 {
        self.cells.get(&cell).map_or(NO_SURGE, |c| c.published)
    }

    /// Every cell's state: (cell, published hundredths, time-smoothed multiplier). What a
    /// Redis-mode replica publishes, so that the next round (computed by any replica)
    /// continues the smoothing and hysteresis.
    pub fn export(&self) -> Vec<(CellIndex, u16, f64)> {
        self.cells
            .iter()
            .map(|(cell, c)| (*cell, c.published, c.smoothed))
            .collect()
    }

    /// The state [`SurgeState::export`] gave (values out of range are clamped).
    pub fn import(p: &SurgeParams, cells: impl IntoIterator<Item = (CellIndex, u16, f64)>) -> Self {
        let cells = cells
            .into_iter()
            .filter(|(_, _, smoothed)| smoothed.is_finite())
            .map(|(cell, published, smoothed)| {
                let c = CellSurge {
                    smoothed: smoothed.clamp(1.0, f64::from(p.cap) / 100.0),
                    published: published.clamp(NO_SURGE, p.cap),
                };
                (surge_cell(cell), c)
            })
            .filter(|(_, c)| *c != CALM)
            .collect();
        SurgeState { cells }
    }

    /// Every cell with a published multiplier above 1.0, hundredths.
    pub fn published(&self) -> FxHashMap<CellIndex, u16> {
        self.cells
            .iter()
            .filter(|(_, c)| c.published > NO_SURGE)
            .map(|(cell, c)| (*cell, c.published))
            .collect()
    }
}

/// Time smoothing and hysteresis of one cell, given this round's raw multiplier.
fn step(p: &SurgeParams, prev: CellSurge, raw: f64) -> CellSurge {
    let mut smoothed = prev.smoothed + p.smoothing * (raw - prev.smoothed);
    // With no pressure now, a cell within half a step of calm is calm: without this it
    // would hover one step up for many rounds while smoothing converges.
    if raw <= 1.0 && smoothed < 1.0 + f64::from(p.step) / 200.0 {
        smoothed = 1.0;
    }
    let x = (smoothed * 100.0).clamp(f64::from(NO_SURGE), f64::from(p.cap));
    let (pub_, stepf) = (f64::from(prev.published), f64::from(p.step));
    // Round toward the previous value: up moves floor, down moves ceil. A move happens
    // only a whole step away, so a value wobbling inside the band does not flap.
    let published = if x >= pub_ + stepf {
        ((x / stepf).floor() * stepf) as u16
    } else if x <= pub_ - stepf {
        ((x / stepf).ceil() * stepf) as u16
    } else {
        prev.published
    };
    CellSurge {
        smoothed,
        published: published.clamp(NO_SURGE, p.cap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geomatch_index::{cell_of, Position};
    use proptest::prelude::*;

    fn params() -> SurgeParams {
        SurgeParams::from(&SurgeSettings::default())
    }

    fn seoul() -> CellIndex {
        cell_of(&Position::new(37.5665, 126.978).unwrap(), SURGE_RESOLUTION)
    }

    fn map(pairs: &[(CellIndex, u32)]) -> FxHashMap<CellIndex, u32> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn no_demand_means_no_surge() {
        let mut s = SurgeState::default();
        s.recompute(&params(), &map(&[]), &map(&[(seoul(), 10)]));
        assert_eq!(s.get(seoul()), NO_SURGE);
        assert!(s.published().is_empty());
    }

    #[test]
    fn demand_above_supply_surges_and_neighbours_feel_it_less() {
        let p = SurgeParams {
            smoothing: 1.0,
            ..params()
        };
        let mut s = SurgeState::default();
        let c = seoul();
        // Centre: 6 / (2 + 1) − 1 = 1 → 1.5; a neighbour: 3 / (1 + 1) − 1 = 0.5 → 1.25.
        s.recompute(&p, &map(&[(c, 6)]), &map(&[(c, 2)]));
        let neighbour = c.grid_ring::<Vec<_>>(1)[0];
        let far = c.grid_ring::<Vec<_>>(3)[0];
        assert_eq!(s.get(c), 150);
        assert_eq!(
            s.get(neighbour),
            120,
            "1.25 published in whole steps, rounded down"
        );
        assert_eq!(s.get(far), NO_SURGE);
    }

    #[test]
    fn the_multiplier_never_exceeds_the_cap() {
        let p = SurgeParams {
            smoothing: 1.0,
            ..params()
        };
        let mut s = SurgeState::default();
        s.recompute(&p, &map(&[(seoul(), 1_000_000)]), &map(&[]));
        assert_eq!(s.get(seoul()), 300);
        // With time smoothing it converges to the cap, never above it.
        let mut s = SurgeState::default();
        for _ in 0..100 {
            s.recompute(&params(), &map(&[(seoul(), u32::MAX)]), &map(&[]));
            assert!(s.get(seoul()) <= 300);
        }
        assert_eq!(s.get(seoul()), 300);
    }

    #[test]
    fn time_smoothing_rises_gradually_and_decays_to_calm_without_demand() {
        let mut s = SurgeState::default();
        let c = seoul();
        let busy = map(&[(c, 50)]);
        let mut seen = vec![];
        for _ in 0..6 {
            s.recompute(&params(), &busy, &map(&[]));
            seen.push(s.get(c));
        }
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert!(seen[0] < seen[5], "{seen:?}");
        for _ in 0..20 {
            s.recompute(&params(), &map(&[]), &map(&[]));
        }
        assert_eq!(s.get(c), NO_SURGE);
        assert!(s.cells.is_empty(), "calm cells are forgotten");
    }

    #[test]
    fn hysteresis_holds_the_multiplier_while_the_input_wobbles_inside_a_step() {
        // step 0.1, no time smoothing: the raw value itself wobbles 1.27 ↔ 1.33 around 1.3.
        let p = SurgeParams {
            smoothing: 1.0,
            sensitivity: 0.01,
            threshold: 0.0,
            k_ring: 0,
            ..params()
        };
        let c = seoul();
        let mut s = SurgeState::default();
        s.recompute(&p, &map(&[(c, 33)]), &map(&[])); // raw 1.33
        assert_eq!(s.get(c), 130);
        let mut seen = vec![];
        for demand in [27, 33, 27, 33, 25, 35] {
            s.recompute(&p, &map(&[(c, demand)]), &map(&[]));
            seen.push(s.get(c));
        }
        assert_eq!(seen, [130; 6], "no flapping between 1.2 and 1.3");
        s.recompute(&p, &map(&[(c, 19)]), &map(&[])); // raw 1.19: a whole step below
        assert_eq!(s.get(c), 120);
        s.recompute(&p, &map(&[(c, 29)]), &map(&[])); // 1.29 < 1.2 + 0.1: held
        assert_eq!(s.get(c), 120);
    }

    #[test]
    fn an_exported_state_continues_smoothing_and_hysteresis_where_it_left_off() {
        let c = seoul();
        let busy = map(&[(c, 50)]);
        let (mut straight, mut handed_over) = (SurgeState::default(), SurgeState::default());
        for round in 0..8 {
            straight.recompute(&params(), &busy, &map(&[]));
            // Another replica takes every round over from what the last one published.
            let mut next = SurgeState::import(&params(), handed_over.export());
            next.recompute(&params(), &busy, &map(&[]));
            handed_over = next;
            assert_eq!(straight.get(c), handed_over.get(c), "round {round}");
        }
        assert!(straight.get(c) > NO_SURGE);
        assert_eq!(straight.export().len(), handed_over.export().len());
    }

    #[test]
    fn demand_counts_within_the_window_and_a_riders_quotes_once_per_cell() {
        let book = DemandBook::new(Window::new(300));
        let c = seoul();
        let t = 1_700_000_000_000;
        book.record(c, t);
        book.record(c, t + 1_000);
        assert!(book.record_quote("u1", c, t + 2_000));
        assert!(
            !book.record_quote("u1", c, t + 3_000),
            "the same rider again"
        );
        assert!(book.record_quote("u2", c, t + 3_000));
        assert_eq!(book.counts(t + 4_000).get(&c), Some(&4));
        assert_eq!(book.counts(t + 299_000).get(&c), Some(&4));
        assert_eq!(
            book.counts(t + 600_000).get(&c),
            None,
            "all left the window"
        );
        assert!(
            book.record_quote("u1", c, t + 600_000),
            "a new window counts again"
        );
        // A finer cell counts in its resolution-7 parent.
        let fine = cell_of(&Position::new(37.5665, 126.978).unwrap(), Resolution::Nine);
        book.record(fine, t + 600_000);
        assert_eq!(book.counts(t + 600_000).get(&c), Some(&2));
    }

    /// A scenario: per round, demand and supply in a few nearby cells.
    fn rounds() -> impl Strategy<Value = Vec<Vec<(u8, u32, u32)>>> {
        prop::collection::vec(
            prop::collection::vec((0u8..7, 0u32..40, 0u32..10), 0..6),
            1..8,
        )
    }

    fn run(
        p: &SurgeParams,
        cells: &[CellIndex],
        rounds: &[Vec<(u8, u32, u32)>],
        bump: Option<(usize, u8, u32, u32)>,
    ) -> Vec<SurgeState> {
        let mut s = SurgeState::default();
        let mut states = vec![];
        for (r, round) in rounds.iter().enumerate() {
            let (mut demand, mut supply) = (FxHashMap::default(), FxHashMap::default());
            for (i, d, sup) in round {
                *demand.entry(cells[*i as usize]).or_insert(0) += d;
                *supply.entry(cells[*i as usize]).or_insert(0) += sup;
            }
            if let Some((at, i, more, fewer)) = bump {
                if at == r {
                    *demand.entry(cells[i as usize]).or_insert(0) += more;
                    let s = supply.entry(cells[i as usize]).or_insert(0);
                    *s = s.saturating_sub(fewer);
                }
            }
            s.recompute(p, &demand, &supply);
            states.push(s.clone());
        }
        states
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// More demand or less supply, in any cell at any round, never lowers any cell's
        /// multiplier in that round or later.
        #[test]
        fn more_demand_or_less_supply_never_lowers_a_multiplier(
            rounds in rounds(),
            at in 0usize..8,
            cell in 0u8..7,
            more in 0u32..30,
            fewer in 0u32..10,
            smoothing in prop::sample::select(vec![0.3, 0.5, 1.0]),
            k_ring in 0u32..3,
        ) {
            let p = SurgeParams { smoothing, k_ring, ..params() };
            let cells = seoul().grid_disk::<Vec<_>>(1);
            let base = run(&p, &cells, &rounds, None);
            let bumped = run(&p, &cells, &rounds, Some((at, cell, more, fewer)));
            for (a, b) in base.iter().zip(&bumped) {
                for c in seoul().grid_disk::<Vec<_>>(3) {
                    prop_assert!(b.get(c) >= a.get(c), "{} < {}", b.get(c), a.get(c));
                    prop_assert!(b.get(c) <= p.cap);
                }
            }
        }
    }
}
