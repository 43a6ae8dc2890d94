//! The Redis store: demand, surge rounds and learned speeds shared by every replica
//! (keys and scripts in [`scripts`]).
//!
//! - Quotes count through Redis at once (once per rider, cell and window across replicas).
//!   Ride requests are reported synchronously by matching, so they wait in
//!   `pending_demand` for the next [`RedisStore::sync`].
//! - Speed samples go to a batch (`pending_speeds`) flushed at each sync; the model reads
//!   its cache of the shared slots, which the sync fills with what changed.
//! - A surge round is `now / interval`: the first replica whose sync finds it unclaimed
//!   claims it, computes it from the shared demand (continuing the smoothing of the last
//!   published round) and publishes it; every replica installs the published round when
//!   its version changes.

/// Visible to the store's contract tests (the paging case drives the calls directly).
pub(super) mod scripts;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use geomatch_common::redis::{Redis, RedisError};
use geomatch_eta::SpeedLearner;
use geomatch_index::CellIndex;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::metrics::PricingMetrics;
use crate::rounds::{Computed, Rounds};
use crate::surge::{surge_cell, SurgeState, Window, NO_SURGE};

use scripts::{Scripts, SharedRound, SHARDS};

/// Redis mode: this replica's view of the shared state and what it has not sent yet.
pub struct RedisStore {
    scripts: Scripts,
    window: Window,
    /// `pricing.surge.interval_s`, ms: the length of a round.
    interval_ms: i64,
    /// The model's learner: a cache of the shared slots, filled by [`RedisStore::sync`].
    learner: Arc<SpeedLearner>,
    /// Ride requests not sent to Redis yet: (cell, bucket) → count.
    pending_demand: Mutex<FxHashMap<(CellIndex, i64), u32>>,
    /// This replica's speed samples since the last flush (a batch, see
    /// [`geomatch_eta::Slot::merge`]).
    pending_speeds: SpeedLearner,
    /// Version of the published surge round in use (0: none yet).
    version: AtomicI64,
    /// The last surge round this replica tried to claim.
    last_round: AtomicI64,
    /// Per speed shard, the change counter read up to. Only `sync` uses it.
    speeds_seen: Mutex<[i64; SHARDS]>,
    metrics: PricingMetrics,
}

impl RedisStore {
    pub fn new(
        redis: Redis,
        window: Window,
        interval_ms: i64,
        learner: Arc<SpeedLearner>,
        metrics: PricingMetrics,
    ) -> Self {
        RedisStore {
            scripts: Scripts::new(redis, metrics.clone()),
            window,
            interval_ms,
            pending_speeds: SpeedLearner::new(*learner.config()),
            learner,
            pending_demand: Mutex::default(),
            version: AtomicI64::new(0),
            last_round: AtomicI64::new(i64::MIN),
            speeds_seen: Mutex::new([0; SHARDS]),
            metrics,
        }
    }

    pub fn learner(&self) -> &Arc<SpeedLearner> {
        &self.learner
    }

    pub fn samples(&self) -> &SpeedLearner {
        &self.pending_speeds
    }

    pub async fn count_quote(
        &self,
        rider: &str,
        cell: CellIndex,
        now_ms: i64,
    ) -> Result<bool, RedisError> {
        let cell = surge_cell(cell);
        let bucket = self.window.bucket(now_ms);
        self.scripts
            .record_quote(
                rider,
                cell,
                bucket,
                self.window.window_ms,
                self.window.bucket_ms,
            )
            .await
    }

    pub fn record_demand(&self, cell: CellIndex, now_ms: i64) {
        let bucket = self.window.bucket(now_ms);
        *self
            .pending_demand
            .lock()
            .entry((surge_cell(cell), bucket))
            .or_insert(0) += 1;
    }

    /// Every step runs even when an earlier one failed (demand not sent is kept for the
    /// next call); the first error is returned.
    pub async fn sync(&self, now_ms: i64, rounds: &Rounds) -> Result<(), RedisError> {
        let results = [
            self.flush_demand(now_ms).await,
            self.flush_speeds().await,
            self.surge_round(now_ms, rounds).await,
            self.load_round(rounds).await,
            self.pull_speeds(rounds).await,
        ];
        results.into_iter().collect()
    }

    async fn flush_demand(&self, now_ms: i64) -> Result<(), RedisError> {
        let events = std::mem::take(&mut *self.pending_demand.lock());
        let ttl_ms = self.window.window_ms + self.window.bucket_ms;
        let result = self.scripts.add_demand(&events, ttl_ms).await;
        if result.is_err() {
            // Kept for the next call, except what has left the window meanwhile.
            let oldest = *self.window.buckets(now_ms).start();
            let mut pending = self.pending_demand.lock();
            for ((cell, bucket), n) in events {
                if bucket >= oldest {
                    *pending.entry((cell, bucket)).or_insert(0) += n;
                }
            }
        }
        result
    }

    async fn flush_speeds(&self) -> Result<(), RedisError> {
        // A batch that fails is dropped: samples keep coming, and a stale batch merged
        // later would count as newer than what others sent meanwhile.
        let batch = self.pending_speeds.drain();
        let c = self.learner.config();
        self.scripts
            .flush_speeds(batch, c.smoothing, c.max_slots)
            .await
    }

    /// Claims, computes and publishes the current surge round, unless another replica
    /// claimed it (or this one already tried).
    async fn surge_round(&self, now_ms: i64, rounds: &Rounds) -> Result<(), RedisError> {
        let round = now_ms.div_euclid(self.interval_ms);
        if self.last_round.load(Ordering::Relaxed) >= round {
            return Ok(());
        }
        let claimed = self.scripts.claim_round(round).await?;
        self.last_round.fetch_max(round, Ordering::Relaxed);
        if !claimed {
            return Ok(());
        }
        // Smoothing and hysteresis continue from the last published round, whoever
        // computed it.
        let previous = self.scripts.load_round().await?;
        let mut state = previous.map_or_else(SurgeState::default, |(_, r)| {
            SurgeState::import(
                rounds.params(),
                r.cells.iter().filter_map(|(c, p, s)| {
                    CellIndex::try_from(*c).ok().map(|cell| (cell, *p, *s))
                }),
            )
        });
        let buckets: Vec<i64> = self.window.buckets(now_ms).collect();
        let demand = self.scripts.demand(&buckets).await?;
        let computed = rounds.compute(&mut state, demand);
        let entries = |m: &FxHashMap<CellIndex, u32>| -> Vec<(u64, u32)> {
            m.iter().map(|(c, n)| (u64::from(*c), *n)).collect()
        };
        let shared_round = SharedRound {
            round,
            computed_at_ms: now_ms,
            cells: state
                .export()
                .into_iter()
                .map(|(c, p, s)| (u64::from(c), p, s))
                .collect(),
            demand: entries(&computed.demand),
            supply: entries(&computed.supply),
        };
        if let Some(version) = self.scripts.publish_round(&shared_round).await? {
            self.version.store(version, Ordering::Relaxed);
            self.metrics.surge_version.set(version);
            rounds.install(now_ms, computed);
        }
        Ok(())
    }

    /// Loads the published round when its version is not the one in use.
    async fn load_round(&self, rounds: &Rounds) -> Result<(), RedisError> {
        let version = self.scripts.round_version().await?;
        if version == self.version.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Some((version, round)) = self.scripts.load_round().await? else {
            return Ok(());
        };
        let cells = |v: &[(u64, u32)]| -> FxHashMap<CellIndex, u32> {
            v.iter()
                .filter_map(|(c, n)| CellIndex::try_from(*c).ok().map(|c| (c, *n)))
                .collect()
        };
        let surge = round
            .cells
            .iter()
            .filter(|(_, p, _)| *p > NO_SURGE)
            .filter_map(|(c, p, _)| CellIndex::try_from(*c).ok().map(|c| (c, *p)))
            .collect();
        rounds.install(
            round.computed_at_ms,
            Computed {
                surge,
                demand: cells(&round.demand),
                supply: cells(&round.supply),
            },
        );
        self.version.store(version, Ordering::Relaxed);
        self.metrics.surge_version.set(version);
        Ok(())
    }

    /// Reads the shared speed slots that changed into the model's cache.
    async fn pull_speeds(&self, rounds: &Rounds) -> Result<(), RedisError> {
        /// Pages per call: a replica starting against a large table loads it over a few
        /// calls instead of one long one.
        const MAX_PAGES: usize = 16;
        let mut seen = *self.speeds_seen.lock();
        let mut changed = Vec::new();
        let mut result = Ok(());
        for _ in 0..MAX_PAGES {
            match self.scripts.changed_speeds(&mut seen, &mut changed).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        *self.speeds_seen.lock() = seen;
        if !changed.is_empty() {
            for (cell, hour, slot) in changed {
                self.learner.set(cell, hour, slot);
            }
            rounds.observe_learner(&self.learner);
        }
        result
    }
}
