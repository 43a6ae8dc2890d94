//! The local store: demand, surge and learned speeds of this process alone (embedded
//! mode). Rounds are computed by [`LocalStore::tick`] once per interval.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use geomatch_eta::SpeedLearner;
use geomatch_index::CellIndex;
use parking_lot::Mutex;

use crate::rounds::Rounds;
use crate::surge::{DemandBook, SurgeState, Window};

pub struct LocalStore {
    demand: DemandBook,
    /// `pricing.surge.interval_s`, ms.
    interval_ms: i64,
    /// The model's learner: samples go straight into it.
    learner: Arc<SpeedLearner>,
    /// Only a round writes it (one at a time: the lock says so).
    surge: Mutex<SurgeState>,
    /// When the next round is due, ms.
    next_round_ms: AtomicI64,
}

impl LocalStore {
    pub fn new(window: Window, interval_ms: i64, learner: Arc<SpeedLearner>) -> Self {
        LocalStore {
            demand: DemandBook::new(window),
            interval_ms,
            learner,
            surge: Mutex::new(SurgeState::default()),
            next_round_ms: AtomicI64::new(i64::MIN),
        }
    }

    pub fn learner(&self) -> &Arc<SpeedLearner> {
        &self.learner
    }

    pub fn count_quote(&self, rider: &str, cell: CellIndex, now_ms: i64) -> bool {
        self.demand.record_quote(rider, cell, now_ms)
    }

    pub fn record_demand(&self, cell: CellIndex, now_ms: i64) {
        self.demand.record(cell, now_ms);
    }

    pub fn tick(&self, now_ms: i64, rounds: &Rounds) -> bool {
        let due = self.next_round_ms.load(Ordering::Relaxed);
        if now_ms < due {
            return false;
        }
        if self
            .next_round_ms
            .compare_exchange(
                due,
                now_ms + self.interval_ms,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false; // another caller took this round
        }
        let demand = self.demand.counts(now_ms);
        let computed = rounds.compute(&mut self.surge.lock(), demand);
        rounds.observe_learner(&self.learner);
        rounds.install(now_ms, computed);
        true
    }
}
