//! geomatch's ETA model, behind a trait so that any service calls it in process (matching
//! ranks candidates by pickup ETA, eta-pricing quotes trips) and a routing engine can
//! replace it later.
//!
//! # Layout
//! - [`EtaModel`], [`Eta`], [`Method`]: the contract.
//! - [`learner`]: [`SpeedLearner`], travel speeds learned online per H3 resolution-7 cell
//!   and hour of the week from consecutive pings of moving drivers.
//! - [`model`]: [`GreatCircleModel`], the default model: great-circle distance × circuity ÷
//!   speed, the speed learned where known and a configured default elsewhere.
//!
//! Like the index, this crate is synchronous and deterministic: no async runtime, no I/O,
//! no clock (callers pass times in, as ms since the Unix epoch).

pub mod learner;
pub mod model;

pub use learner::{
    hour_of_week, LearnedSpeed, LearnerConfig, SampleOutcome, Slot, SpeedLearner, HOURS_PER_WEEK,
};
pub use model::{GreatCircleModel, ModelConfig};

use geomatch_index::Position;
use serde::{Deserialize, Serialize};

/// An estimated trip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Eta {
    /// Expected travel time, seconds.
    pub duration_s: f64,
    /// Expected road distance, metres (not the straight line).
    pub distance_m: f64,
    /// How the estimate was made.
    pub method: Method,
}

/// How an [`Eta`] was made, so callers (and dashboards) can tell a learned estimate from a
/// guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Every stretch of the trip used a speed learned for its area and hour.
    LearnedSpeed,
    /// Some stretches used learned speeds, the others the default speed.
    MixedSpeed,
    /// Nothing learned along the way: the configured default speed throughout.
    DefaultSpeed,
}

impl Method {
    /// The wire name (`learned_speed`, `mixed_speed`, `default_speed`).
    pub fn name(self) -> &'static str {
        match self {
            Method::LearnedSpeed => "learned_speed",
            Method::MixedSpeed => "mixed_speed",
            Method::DefaultSpeed => "default_speed",
        }
    }
}

/// Estimates travel between two points. Implementations must be cheap (matching asks for
/// dozens per ride request) and safe to share between threads.
pub trait EtaModel: Send + Sync {
    /// The trip from `from` to `to`, departing at `at_ms` (ms since the Unix epoch).
    fn eta(&self, from: &Position, to: &Position, at_ms: i64) -> Eta;

    /// One origin, many destinations, in order. Override when a batch is cheaper than its
    /// parts (a routing engine's one-to-many query).
    fn eta_many(&self, from: &Position, to: &[Position], at_ms: i64) -> Vec<Eta> {
        to.iter().map(|t| self.eta(from, t, at_ms)).collect()
    }
}
