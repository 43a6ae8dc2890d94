//! Where eta-pricing keeps demand, surge rounds and learned speeds: this process alone
//! ([`local`], embedded mode) or shared by every replica through Redis ([`redis`]). The
//! one place the mode makes a difference; [`crate::EtaPricing`] never names a variant.

mod local;
mod redis;

use std::sync::Arc;

use geomatch_common::redis::{Redis, RedisError};
use geomatch_eta::SpeedLearner;
use geomatch_index::CellIndex;

use crate::metrics::PricingMetrics;
use crate::rounds::Rounds;
use crate::surge::Window;

use local::LocalStore;
use redis::RedisStore;

/// Demand, surge rounds and learned speeds of one process, and what it shares of them.
///
/// The contract, the same for both stores (`store::contract` tests it against each), with
/// "peers" the other processes of a deployment:
/// - **Quotes** count as demand once per rider, resolution-7 cell and demand window
///   ([`Store::count_quote`] says whether this one counted); shared stores count once
///   across all peers, and answer an error when the shared state is unreachable.
/// - **Ride requests** ([`Store::record_demand`]) always count; a shared store sends them
///   at the next [`Store::sync`].
/// - **Rounds**: one round per `pricing.surge.interval_s`, computed by [`Rounds::compute`]
///   from the demand of the window ending at `now` and installed into [`Rounds`]. Local:
///   [`Store::tick`] computes it. Shared: at [`Store::sync`] exactly one peer claims the
///   round, computes it from every peer's demand and publishes it; every peer installs
///   the published round.
/// - **Speeds**: moves are observed into [`Store::samples`]; the ETA model reads
///   [`Store::learner`]. Local: they are the same learner. Shared: samples are flushed at
///   [`Store::sync`] and merged into shared slots, which every peer (the sender too) reads
///   back into its learner at its next sync.
/// - Time is always the caller's `now` (ms since the Unix epoch); no store reads a clock.
pub enum Store {
    Local(LocalStore),
    /// Boxed: it is several times the local store's size (scripts, pending batches).
    Redis(Box<RedisStore>),
}

impl Store {
    /// The local store without `redis`, the shared one with it. `learner` is the ETA
    /// model's; `window` the demand window; `interval_ms` the length of a round.
    pub fn new(
        redis: Option<Redis>,
        window: Window,
        interval_ms: i64,
        learner: Arc<SpeedLearner>,
        metrics: PricingMetrics,
    ) -> Self {
        match redis {
            None => Store::Local(LocalStore::new(window, interval_ms, learner)),
            Some(redis) => Store::Redis(Box::new(RedisStore::new(
                redis,
                window,
                interval_ms,
                learner,
                metrics,
            ))),
        }
    }

    /// Whether peers share this store's demand, rounds and speeds (Redis mode).
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Redis(_))
    }

    /// The learner the ETA model reads.
    pub fn learner(&self) -> &Arc<SpeedLearner> {
        match self {
            Store::Local(s) => s.learner(),
            Store::Redis(s) => s.learner(),
        }
    }

    /// Where observed moves (speed samples) go.
    pub fn samples(&self) -> &SpeedLearner {
        match self {
            Store::Local(s) => s.learner(),
            Store::Redis(s) => s.samples(),
        }
    }

    /// A quote by `rider` with its pickup in `cell` (resolution 7 or finer): whether it
    /// counted as demand (not when the rider's last counted quote in the cell is still in
    /// the window).
    pub async fn count_quote(
        &self,
        rider: &str,
        cell: CellIndex,
        now_ms: i64,
    ) -> Result<bool, RedisError> {
        match self {
            Store::Local(s) => Ok(s.count_quote(rider, cell, now_ms)),
            Store::Redis(s) => s.count_quote(rider, cell, now_ms).await,
        }
    }

    /// One ride request in `cell` (resolution 7 or finer). Never waits on I/O.
    pub fn record_demand(&self, cell: CellIndex, now_ms: i64) {
        match self {
            Store::Local(s) => s.record_demand(cell, now_ms),
            Store::Redis(s) => s.record_demand(cell, now_ms),
        }
    }

    /// Called every second: computes and installs a round when one is due (local). A
    /// shared store's rounds run in [`Store::sync`]: always `false`. Whether a round ran.
    pub fn tick(&self, now_ms: i64, rounds: &Rounds) -> bool {
        match self {
            Store::Local(s) => s.tick(now_ms, rounds),
            Store::Redis(_) => false,
        }
    }

    /// Called every `pricing.sync_interval_ms` (shared): sends this peer's ride requests
    /// and speed samples; claims, computes and publishes the due round if no peer did;
    /// installs the published round when it changed; reads back the shared speeds that
    /// changed. Every step runs even when an earlier one failed; the first error is
    /// returned. The local store has nothing to exchange.
    pub async fn sync(&self, now_ms: i64, rounds: &Rounds) -> Result<(), RedisError> {
        match self {
            Store::Local(_) => Ok(()),
            Store::Redis(s) => s.sync(now_ms, rounds).await,
        }
    }
}

#[cfg(test)]
mod contract;
