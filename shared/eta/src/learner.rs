//! Travel speeds learned online from the location stream.
//!
//! Each accepted move of a driver (previous position → new position over `dt`) is one
//! sample: its distance and its duration, attributed to the H3 resolution-7 cell of the
//! segment's midpoint and to the hour of the week it happened in. Samples that cannot be a
//! car driving are rejected (see [`SampleOutcome`]): too short or too long an interval,
//! an implied speed above the plausible maximum, or a driver standing still (drivers wait
//! between rides; their pings say nothing about how fast traffic moves).
//!
//! Per (cell, hour) slot the learner keeps exponentially weighted sums of distance and of
//! time, `D ← (1−α)·D + α·d` and `T ← (1−α)·T + α·t`, and answers `D / T`: total distance
//! over total time, recent samples weighing more. That is the speed that predicts travel
//! *time* (a mean of per-sample speeds would overweight short fast hops). The warm-up bias
//! of both sums is the same factor, so it cancels in the ratio. A slot counts as learned
//! after `min_samples` samples. Each cell also keeps an all-hours slot, used for hours not
//! learned yet.
//!
//! Slots live in sharded maps behind `RwLock`s, sharded by cell, so a sample takes one
//! write lock and concurrent queries of other cells never wait.

use std::sync::atomic::{AtomicUsize, Ordering};

use geomatch_index::{cell_of, CellIndex, Position, Resolution};
use parking_lot::RwLock;
use rustc_hash::FxHashMap;

/// The resolution speeds are learned at (about 5 km² per cell).
pub const SPEED_RESOLUTION: Resolution = Resolution::Seven;

/// Hours in a week; slot `HOURS_PER_WEEK` of a cell is its all-hours slot.
pub const HOURS_PER_WEEK: u8 = 168;
const ALL_HOURS: u8 = HOURS_PER_WEEK;

const SHARDS: usize = 64;

/// What the learner accepts as a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnerConfig {
    /// Shorter intervals are mostly GPS jitter; refused.
    pub min_interval_s: f64,
    /// Longer intervals hide stops and detours; refused.
    pub max_interval_s: f64,
    /// Implied speeds above this are GPS jumps; refused.
    pub max_speed_mps: f64,
    /// Below this the driver is standing (waiting for a ride), not driving; refused.
    pub min_speed_mps: f64,
    /// Weight α of a new sample in the exponentially weighted sums, in (0, 1].
    pub smoothing: f64,
    /// Samples before a slot's speed is trusted.
    pub min_samples: u32,
    /// Most (cell, hour) slots kept; beyond it new slots are not created (memory bound).
    pub max_slots: usize,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        Self {
            min_interval_s: 1.0,
            max_interval_s: 120.0,
            max_speed_mps: 200.0 / 3.6,
            min_speed_mps: 3.0 / 3.6,
            smoothing: 0.05,
            min_samples: 5,
            max_slots: 1_000_000,
        }
    }
}

/// What became of one observed move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleOutcome {
    /// Folded into its cell's speed.
    Learned,
    /// The interval was shorter than `min_interval_s` (or not positive).
    IntervalTooShort,
    /// The interval was longer than `max_interval_s`.
    IntervalTooLong,
    /// The implied speed was above `max_speed_mps`.
    TooFast,
    /// The implied speed was below `min_speed_mps`: a standing driver.
    Stationary,
    /// The slot is new and the learner is at `max_slots`.
    Full,
}

impl SampleOutcome {
    /// A metric label.
    pub fn name(self) -> &'static str {
        match self {
            SampleOutcome::Learned => "learned",
            SampleOutcome::IntervalTooShort => "interval_too_short",
            SampleOutcome::IntervalTooLong => "interval_too_long",
            SampleOutcome::TooFast => "too_fast",
            SampleOutcome::Stationary => "stationary",
            SampleOutcome::Full => "full",
        }
    }
}

/// A learned speed and where it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnedSpeed {
    pub speed_mps: f64,
    /// Samples behind it.
    pub samples: u32,
    /// `true` when it is the cell's all-hours speed (the hour itself is not learned yet).
    pub all_hours: bool,
}

/// The exponentially weighted sums of one (cell, hour) slot: what replicas exchange
/// through Redis (see [`Slot::merge`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Slot {
    /// Exponentially weighted distance, metres.
    pub distance: f64,
    /// Exponentially weighted time, seconds.
    pub time: f64,
    pub samples: u32,
}

impl Slot {
    fn add(&mut self, alpha: f64, d: f64, t: f64) {
        self.distance += alpha * (d - self.distance);
        self.time += alpha * (t - self.time);
        self.samples = self.samples.saturating_add(1);
    }

    fn speed(&self) -> f64 {
        self.distance / self.time
    }

    /// `self` with `batch` applied after it. `batch` is a slot that started from zero and
    /// took `k` samples, so its sums are `Σ α(1−α)^(k−i)·x_i`; feeding the same samples
    /// one by one to `self` gives `(1−α)^k·self + batch`. Replicas learn into such batches
    /// and merge them into the shared slot, which then equals one learner that saw every
    /// replica's samples, a batch at a time. Redis runs the same formula (the flush script).
    pub fn merge(&self, batch: &Slot, alpha: f64) -> Slot {
        let keep = (1.0 - alpha).powi(batch.samples.min(i32::MAX as u32) as i32);
        Slot {
            distance: keep * self.distance + batch.distance,
            time: keep * self.time + batch.time,
            samples: self.samples.saturating_add(batch.samples),
        }
    }
}

type Shard = FxHashMap<(CellIndex, u8), Slot>;

/// Speeds per H3 resolution-7 cell and hour of the week, learned online. Thread-safe.
pub struct SpeedLearner {
    config: LearnerConfig,
    shards: Box<[RwLock<Shard>]>,
    /// Slots across every shard, for the `max_slots` bound.
    slots: AtomicUsize,
}

impl std::fmt::Debug for SpeedLearner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeedLearner")
            .field("config", &self.config)
            .field("slots", &self.slots.load(Ordering::Relaxed))
            .finish()
    }
}

/// Hour of the week in UTC, Monday 00:00–00:59 being 0. UTC rather than local time: a cell
/// is in one time zone, so its 168 slots are the same local hours shifted (daylight saving
/// moves them by one hour twice a year).
pub fn hour_of_week(at_ms: i64) -> u8 {
    // 1970-01-01 was a Thursday: 3 days (72 h) after a Monday 00:00.
    (at_ms.div_euclid(3_600_000) + 72).rem_euclid(168) as u8
}

/// The point halfway along the great circle from `a` to `b` (or `a`, for antipodes).
pub fn midpoint(a: &Position, b: &Position) -> Position {
    along(a, b, 0.5)
}

/// The point a fraction `f` of the way from `a` to `b`, interpolated on the unit sphere
/// (the chord, projected back onto the sphere); `a` when they are antipodal.
pub(crate) fn along(a: &Position, b: &Position, f: f64) -> Position {
    along_units(a, &a.to_unit(), &b.to_unit(), f)
}

/// [`along`] from the unit vectors `u` of `a` and `v` of the other end, for callers that
/// cut one segment many times (the trig of the ends is done once).
pub(crate) fn along_units(a: &Position, u: &[f64; 3], v: &[f64; 3], f: f64) -> Position {
    let p = [
        u[0] + f * (v[0] - u[0]),
        u[1] + f * (v[1] - u[1]),
        u[2] + f * (v[2] - u[2]),
    ];
    let norm = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
    if norm < 1e-9 {
        return *a;
    }
    let lat = (p[2] / norm).clamp(-1.0, 1.0).asin().to_degrees();
    let lng = p[1].atan2(p[0]).to_degrees();
    Position::new(lat.clamp(-90.0, 90.0), lng.clamp(-180.0, 180.0)).unwrap_or(*a)
}

fn shard_of(cell: CellIndex) -> usize {
    // Fibonacci hashing: neighbouring cells (close indexes) land in different shards.
    (u64::from(cell).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SHARDS
}

impl SpeedLearner {
    pub fn new(config: LearnerConfig) -> Self {
        Self {
            config,
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            slots: AtomicUsize::new(0),
        }
    }

    pub fn config(&self) -> &LearnerConfig {
        &self.config
    }

    /// One move of a driver: from `from` to `to` in `dt_s` seconds, at `at_ms`.
    pub fn observe(&self, from: &Position, to: &Position, dt_s: f64, at_ms: i64) -> SampleOutcome {
        let c = &self.config;
        if !(dt_s.is_finite() && dt_s >= c.min_interval_s) {
            return SampleOutcome::IntervalTooShort;
        }
        if dt_s > c.max_interval_s {
            return SampleOutcome::IntervalTooLong;
        }
        let d = from.distance_m(to);
        let speed = d / dt_s;
        if speed > c.max_speed_mps {
            return SampleOutcome::TooFast;
        }
        if speed < c.min_speed_mps {
            return SampleOutcome::Stationary;
        }
        let cell = cell_of(&midpoint(from, to), SPEED_RESOLUTION);
        self.add(cell, hour_of_week(at_ms), d, dt_s)
    }

    /// Folds a sample of `distance_m` over `time_s` into the cell's hour and all-hours slots.
    fn add(&self, cell: CellIndex, hour: u8, distance_m: f64, time_s: f64) -> SampleOutcome {
        let alpha = self.config.smoothing;
        let mut shard = self.shards[shard_of(cell)].write();
        for key in [(cell, hour), (cell, ALL_HOURS)] {
            match shard.get_mut(&key) {
                Some(slot) => slot.add(alpha, distance_m, time_s),
                None => {
                    if self.slots.load(Ordering::Relaxed) >= self.config.max_slots {
                        return SampleOutcome::Full;
                    }
                    self.slots.fetch_add(1, Ordering::Relaxed);
                    let mut slot = Slot::default();
                    slot.add(alpha, distance_m, time_s);
                    shard.insert(key, slot);
                }
            }
        }
        SampleOutcome::Learned
    }

    /// The learned speed of `cell` (any resolution at or finer than 7) at `hour` of the
    /// week: the hour's own when learned, else the cell's all-hours speed, else `None`.
    pub fn speed(&self, cell: CellIndex, hour: u8) -> Option<LearnedSpeed> {
        let cell = cell.parent(SPEED_RESOLUTION)?;
        let shard = self.shards[shard_of(cell)].read();
        let min = self.config.min_samples;
        let learned = |key, all_hours| {
            shard
                .get(&key)
                .filter(|s: &&Slot| s.samples >= min && s.time > 0.0)
                .map(|s| LearnedSpeed {
                    speed_mps: s.speed(),
                    samples: s.samples,
                    all_hours,
                })
        };
        learned((cell, hour), false).or_else(|| learned((cell, ALL_HOURS), true))
    }

    /// The learned speed at `at`, at time `at_ms`.
    pub fn speed_at(&self, at: &Position, at_ms: i64) -> Option<LearnedSpeed> {
        self.speed(cell_of(at, SPEED_RESOLUTION), hour_of_week(at_ms))
    }

    /// Cells with a learned (all-hours) speed: for the metric of learned coverage.
    pub fn learned_cells(&self) -> usize {
        let min = self.config.min_samples;
        self.shards
            .iter()
            .map(|s| {
                s.read()
                    .iter()
                    .filter(|((_, h), slot)| *h == ALL_HOURS && slot.samples >= min)
                    .count()
            })
            .sum()
    }

    /// (cell, hour) slots held, learned or not.
    pub fn slots(&self) -> usize {
        self.slots.load(Ordering::Relaxed)
    }

    /// Takes every slot out, leaving the learner empty: a replica's batch of samples since
    /// the last call, to merge into the shared slots ([`Slot::merge`]). Hour
    /// [`HOURS_PER_WEEK`] is a cell's all-hours slot.
    pub fn drain(&self) -> Vec<(CellIndex, u8, Slot)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let taken = std::mem::take(&mut *shard.write());
            self.slots.fetch_sub(taken.len(), Ordering::Relaxed);
            out.extend(
                taken
                    .into_iter()
                    .map(|((cell, hour), slot)| (cell, hour, slot)),
            );
        }
        out
    }

    /// Replaces a slot with the shared one (a replica's cache of what Redis holds). A new
    /// slot beyond `max_slots` is not kept; returns whether the slot is held.
    pub fn set(&self, cell: CellIndex, hour: u8, slot: Slot) -> bool {
        let Some(cell) = cell.parent(SPEED_RESOLUTION) else {
            return false;
        };
        if hour > HOURS_PER_WEEK {
            return false;
        }
        let mut shard = self.shards[shard_of(cell)].write();
        if let Some(held) = shard.get_mut(&(cell, hour)) {
            *held = slot;
            return true;
        }
        if self.slots.load(Ordering::Relaxed) >= self.config.max_slots {
            return false;
        }
        self.slots.fetch_add(1, Ordering::Relaxed);
        shard.insert((cell, hour), slot);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so the test needs no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Uniform in [lo, hi).
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * self.next()
        }
    }

    /// Monday 2024-01-01 00:00 UTC.
    const MONDAY_MS: i64 = 1_704_067_200_000;
    const HOUR_MS: i64 = 3_600_000;

    /// Drives `pings` pings at `speed_kmh` (±`jitter` relative), changing direction now and
    /// then, starting at `start` at `t0_ms`, and feeds consecutive pairs to the learner.
    fn drive(
        learner: &SpeedLearner,
        rng: &mut Rng,
        start: Position,
        t0_ms: i64,
        speed_kmh: f64,
        jitter: f64,
        pings: usize,
    ) -> Position {
        let mut at = start;
        let mut t = t0_ms;
        let mut bearing = rng.range(0.0, 360.0);
        for _ in 0..pings {
            let dt_s = rng.range(2.0, 8.0);
            let v = speed_kmh / 3.6 * rng.range(1.0 - jitter, 1.0 + jitter);
            // Stay near the start so the samples stay in one resolution-7 cell.
            if at.distance_m(&start) > 300.0 {
                bearing = (bearing + 180.0) % 360.0;
            } else {
                bearing = (bearing + rng.range(-30.0, 30.0)).rem_euclid(360.0);
            }
            let next = at.destination(bearing, v * dt_s);
            t += (dt_s * 1000.0) as i64;
            learner.observe(&at, &next, dt_s, t);
            at = next;
        }
        at
    }

    fn within_10_percent(learned: f64, truth_kmh: f64) -> bool {
        let kmh = learned * 3.6;
        (kmh - truth_kmh).abs() <= 0.1 * truth_kmh
    }

    #[test]
    fn the_hour_of_the_week_starts_on_monday_midnight_utc() {
        assert_eq!(hour_of_week(MONDAY_MS), 0);
        assert_eq!(hour_of_week(MONDAY_MS + 25 * HOUR_MS + 59 * 60_000), 25);
        assert_eq!(hour_of_week(MONDAY_MS - 1), 167, "Sunday 23:59");
        assert_eq!(hour_of_week(0), 72, "the epoch was a Thursday");
        assert_eq!(hour_of_week(-1), 71);
    }

    #[test]
    fn synthetic_trajectories_at_known_speeds_are_learned_within_10_percent() {
        let learner = SpeedLearner::new(LearnerConfig::default());
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        // Three areas of one city, each with its own traffic, far enough apart to be in
        // different resolution-7 cells; several drivers each.
        let areas = [
            (Position::new(37.5665, 126.9780).unwrap(), 18.0),
            (Position::new(37.4979, 127.0276).unwrap(), 32.0),
            (Position::new(37.6584, 127.0615).unwrap(), 55.0),
        ];
        let at = MONDAY_MS + 8 * HOUR_MS;
        for (start, kmh) in areas {
            for driver in 0..5 {
                drive(&learner, &mut rng, start, at + driver * 1000, kmh, 0.3, 60);
            }
        }
        for (start, kmh) in areas {
            let got = learner
                .speed_at(&start, at + 10 * 60_000)
                .expect("the area is learned");
            assert!(!got.all_hours, "the hour itself is learned");
            assert!(
                within_10_percent(got.speed_mps, kmh),
                "learned {:.1} km/h, drove {kmh} km/h",
                got.speed_mps * 3.6
            );
        }
        assert_eq!(learner.learned_cells(), 3);
    }

    #[test]
    fn each_hour_of_the_week_learns_its_own_speed_and_others_fall_back_to_all_hours() {
        let learner = SpeedLearner::new(LearnerConfig::default());
        let mut rng = Rng(42);
        let start = Position::new(51.5074, -0.1278).unwrap();
        let rush = MONDAY_MS + 8 * HOUR_MS;
        let night = MONDAY_MS + 2 * HOUR_MS;
        for _ in 0..4 {
            drive(&learner, &mut rng, start, rush, 15.0, 0.2, 50);
            drive(&learner, &mut rng, start, night, 45.0, 0.2, 50);
        }
        let at_rush = learner.speed_at(&start, rush + 60_000).unwrap();
        let at_night = learner.speed_at(&start, night + 60_000).unwrap();
        assert!(within_10_percent(at_rush.speed_mps, 15.0), "{at_rush:?}");
        assert!(within_10_percent(at_night.speed_mps, 45.0), "{at_night:?}");
        let sunday = learner.speed_at(&start, MONDAY_MS - HOUR_MS).unwrap();
        assert!(
            sunday.all_hours,
            "an unlearned hour uses the cell's all-hours speed"
        );
        assert!(sunday.speed_mps > at_rush.speed_mps && sunday.speed_mps < at_night.speed_mps);
        let elsewhere = Position::new(48.8566, 2.3522).unwrap();
        assert_eq!(learner.speed_at(&elsewhere, rush), None);
    }

    #[test]
    fn outliers_are_rejected_and_do_not_move_the_learned_speed() {
        let learner = SpeedLearner::new(LearnerConfig::default());
        let mut rng = Rng(7);
        let start = Position::new(40.7128, -74.0060).unwrap();
        let t = MONDAY_MS + 12 * HOUR_MS;
        drive(&learner, &mut rng, start, t, 30.0, 0.1, 200);
        let before = learner.speed_at(&start, t).unwrap();
        let near = start.destination(90.0, 50.0);
        let far = start.destination(90.0, 5_000.0);
        let cases = [
            (start, far, 10.0, SampleOutcome::TooFast), // 1800 km/h: a GPS jump
            (start, near, 0.2, SampleOutcome::IntervalTooShort),
            (start, near, 0.0, SampleOutcome::IntervalTooShort),
            (start, near, f64::NAN, SampleOutcome::IntervalTooShort),
            (start, near, 600.0, SampleOutcome::IntervalTooLong),
            (
                start,
                start.destination(0.0, 2.0),
                10.0,
                SampleOutcome::Stationary,
            ),
        ];
        for (from, to, dt, expected) in cases {
            for _ in 0..50 {
                assert_eq!(learner.observe(&from, &to, dt, t), expected);
            }
        }
        assert_eq!(learner.speed_at(&start, t), Some(before));
    }

    #[test]
    fn a_slot_is_trusted_only_after_min_samples() {
        let learner = SpeedLearner::new(LearnerConfig {
            min_samples: 3,
            ..LearnerConfig::default()
        });
        let a = Position::new(35.6762, 139.6503).unwrap();
        let b = a.destination(0.0, 100.0);
        for _ in 0..2 {
            assert_eq!(
                learner.observe(&a, &b, 10.0, MONDAY_MS),
                SampleOutcome::Learned
            );
        }
        assert_eq!(learner.speed_at(&a, MONDAY_MS), None);
        learner.observe(&a, &b, 10.0, MONDAY_MS);
        let got = learner.speed_at(&a, MONDAY_MS).unwrap();
        assert!((got.speed_mps - 10.0).abs() < 1e-6, "{got:?}");
    }

    #[test]
    fn no_slot_is_created_beyond_max_slots() {
        let learner = SpeedLearner::new(LearnerConfig {
            max_slots: 2,
            min_samples: 1,
            ..LearnerConfig::default()
        });
        let a = Position::new(35.0, 139.0).unwrap();
        let b = a.destination(0.0, 100.0);
        assert_eq!(
            learner.observe(&a, &b, 10.0, MONDAY_MS),
            SampleOutcome::Learned
        );
        assert_eq!(
            learner.observe(&a, &b, 10.0, MONDAY_MS + 5 * HOUR_MS),
            SampleOutcome::Full,
            "a new hour needs a new slot"
        );
        assert_eq!(learner.slots(), 2);
        assert_eq!(
            learner.observe(&a, &b, 10.0, MONDAY_MS),
            SampleOutcome::Learned
        );
    }

    #[test]
    fn merging_a_drained_batch_equals_feeding_its_samples_one_by_one() {
        let config = LearnerConfig {
            min_samples: 1,
            smoothing: 0.2,
            ..LearnerConfig::default()
        };
        let (whole, shared, batch) = (
            SpeedLearner::new(config),
            SpeedLearner::new(config),
            SpeedLearner::new(config),
        );
        let mut rng = Rng(99);
        let start = Position::new(37.5, 127.0).unwrap();
        let t = MONDAY_MS + 9 * HOUR_MS;
        // The first part reaches both `whole` and `shared` directly; the second reaches
        // `whole` directly and `shared` as a batch merged afterwards.
        let mut same = Rng(rng.0);
        let end = drive(&whole, &mut rng, start, t, 20.0, 0.2, 30);
        drive(&shared, &mut same, start, t, 20.0, 0.2, 30);
        let mut again = Rng(rng.0);
        drive(&whole, &mut rng, end, t + 60_000, 50.0, 0.2, 25);
        drive(&batch, &mut again, end, t + 60_000, 50.0, 0.2, 25);
        let drained = batch.drain();
        assert_eq!(batch.slots(), 0);
        assert!(!drained.is_empty());
        for (cell, hour, b) in drained {
            let key = (cell, hour);
            let held = shared.shards[shard_of(cell)].read().get(&key).copied();
            let merged = held.unwrap_or_default().merge(&b, 0.2);
            assert!(shared.set(cell, hour, merged));
        }
        let (a, b) = (
            whole.speed_at(&start, t).unwrap(),
            shared.speed_at(&start, t).unwrap(),
        );
        assert_eq!(a.samples, b.samples);
        assert!((a.speed_mps - b.speed_mps).abs() < 1e-9, "{a:?} vs {b:?}");
    }

    #[test]
    fn samples_from_many_threads_are_all_counted() {
        let learner = SpeedLearner::new(LearnerConfig {
            smoothing: 1.0,
            min_samples: 1,
            ..LearnerConfig::default()
        });
        let a = Position::new(52.52, 13.405).unwrap();
        let b = a.destination(45.0, 100.0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        learner.observe(&a, &b, 10.0, MONDAY_MS);
                    }
                });
            }
        });
        let got = learner.speed_at(&a, MONDAY_MS).unwrap();
        assert_eq!(got.samples, 4000);
        assert!((got.speed_mps - 10.0).abs() < 1e-6);
    }
}
