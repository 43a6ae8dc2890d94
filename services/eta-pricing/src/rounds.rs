//! [`Rounds`]: computing a surge round from demand and supply, and the round quotes,
//! `GET /v1/surge` and the heatmap answer from. Where the demand comes from, who computes
//! a round and when, is the store's business ([`crate::store::Store`]); this is the same
//! in both modes.

use std::sync::Arc;

use geomatch_eta::SpeedLearner;
use geomatch_index::{CellIndex, Index, Kind, Status};
use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use crate::metrics::PricingMetrics;
use crate::surge::{surge_cell, SurgeParams, SurgeState, NO_SURGE, SURGE_RESOLUTION};

/// Surge, supply and demand as of the last round; replaced whole, so readers see one
/// consistent round.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// ms since the Unix epoch (0 before the first round).
    pub computed_at_ms: i64,
    /// Published multipliers above 1.0, hundredths.
    pub surge: FxHashMap<CellIndex, u16>,
    pub demand: FxHashMap<CellIndex, u32>,
    pub supply: FxHashMap<CellIndex, u32>,
}

/// One round computed here: what [`Rounds::install`] takes.
pub struct Computed {
    pub surge: FxHashMap<CellIndex, u16>,
    pub demand: FxHashMap<CellIndex, u32>,
    pub supply: FxHashMap<CellIndex, u32>,
}

/// Computes rounds and holds the one installed.
pub struct Rounds {
    /// Supply: available drivers per cell (in Redis mode this process's replica of them).
    index: Arc<Index>,
    params: SurgeParams,
    snapshot: RwLock<Arc<Snapshot>>,
    metrics: PricingMetrics,
}

impl Rounds {
    pub fn new(index: Arc<Index>, params: SurgeParams, metrics: PricingMetrics) -> Self {
        Rounds {
            index,
            params,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            metrics,
        }
    }

    pub fn params(&self) -> &SurgeParams {
        &self.params
    }

    /// The installed round.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.read().clone()
    }

    /// The published multiplier of `cell`'s resolution-7 cell, hundredths (100 = none).
    pub fn surge_hundredths(&self, cell: CellIndex) -> u16 {
        let cell = surge_cell(cell);
        self.snapshot
            .read()
            .surge
            .get(&cell)
            .copied()
            .unwrap_or(NO_SURGE)
    }

    /// Moves `state` one round on, from `demand` and this process's supply; counts the
    /// round in the metrics.
    pub fn compute(&self, state: &mut SurgeState, demand: FxHashMap<CellIndex, u32>) -> Computed {
        let supply = self.supply();
        state.recompute(&self.params, &demand, &supply);
        let surge = state.published();
        self.metrics.surge_rounds.inc();
        for h in surge.values() {
            self.metrics.surge_multiplier.observe(f64::from(*h) / 100.0);
        }
        Computed {
            surge,
            demand,
            supply,
        }
    }

    /// Makes a round the one quotes, `GET /v1/surge` and the heatmap answer from.
    pub fn install(&self, computed_at_ms: i64, round: Computed) {
        let max = round.surge.values().copied().max().unwrap_or(NO_SURGE);
        self.metrics.surge_cells.set(round.surge.len() as i64);
        self.metrics.surge_max.set(f64::from(max) / 100.0);
        *self.snapshot.write() = Arc::new(Snapshot {
            computed_at_ms,
            surge: round.surge,
            demand: round.demand,
            supply: round.supply,
        });
    }

    /// The learned-speed gauges, from the model's learner.
    pub fn observe_learner(&self, learner: &SpeedLearner) {
        self.metrics
            .learned_cells
            .set(learner.learned_cells() as i64);
        self.metrics.learned_slots.set(learner.slots() as i64);
    }

    /// Available drivers per resolution-7 cell, from this process's index (which, in
    /// Redis mode, follows the shared driver state).
    fn supply(&self) -> FxHashMap<CellIndex, u32> {
        match self.index.cell_counts(SURGE_RESOLUTION) {
            Ok(counts) => counts
                .into_iter()
                .map(|(cell, c)| (cell, c.get(Kind::Driver, Status::Available)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            // Configuration validation keeps the index at resolution 7 or finer.
            Err(_) => FxHashMap::default(),
        }
    }
}
