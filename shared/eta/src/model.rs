//! The default ETA model: great-circle distance × circuity ÷ speed.
//!
//! Road distance is the great-circle distance times a circuity factor (roads are not
//! straight; 1.3 is typical of cities). The trip is cut into stretches of at most
//! `max_stretch_m` (at most `max_stretches` of them); each stretch is driven at the speed
//! learned for the cell and hour at its midpoint, or at the default speed where nothing is
//! learned, and the hour advances with the time already driven.

use std::sync::Arc;

use geomatch_index::Position;

use crate::learner::{along_units, SpeedLearner};
use crate::{Eta, EtaModel, Method};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelConfig {
    /// Road distance over great-circle distance.
    pub circuity: f64,
    /// Speed where nothing is learned, m/s.
    pub default_speed_mps: f64,
    /// Longest stretch driven at one cell's speed, metres.
    pub max_stretch_m: f64,
    /// Most stretches per trip (bounds the cost of a long trip).
    pub max_stretches: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            circuity: 1.3,
            default_speed_mps: 25.0 / 3.6,
            max_stretch_m: 2_000.0,
            max_stretches: 8,
        }
    }
}

/// Great-circle distance × circuity ÷ learned (or default) speed.
#[derive(Debug, Clone)]
pub struct GreatCircleModel {
    config: ModelConfig,
    learner: Arc<SpeedLearner>,
}

impl GreatCircleModel {
    pub fn new(config: ModelConfig, learner: Arc<SpeedLearner>) -> Self {
        Self { config, learner }
    }

    pub fn learner(&self) -> &Arc<SpeedLearner> {
        &self.learner
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
}

impl EtaModel for GreatCircleModel {
    fn eta(&self, from: &Position, to: &Position, at_ms: i64) -> Eta {
        let c = &self.config;
        let straight = from.distance_m(to);
        let road = straight * c.circuity;
        let stretches = ((straight / c.max_stretch_m).ceil() as usize).clamp(1, c.max_stretches);
        let each = road / stretches as f64;
        let (u, v) = (from.to_unit(), to.to_unit());
        let (mut duration_s, mut learned) = (0.0, 0);
        for i in 0..stretches {
            let mid = along_units(from, &u, &v, (i as f64 + 0.5) / stretches as f64);
            let now_ms = at_ms.saturating_add((duration_s * 1000.0) as i64);
            let speed = match self.learner.speed_at(&mid, now_ms) {
                Some(s) => {
                    learned += 1;
                    s.speed_mps
                }
                None => c.default_speed_mps,
            };
            duration_s += each / speed;
        }
        let method = match learned {
            0 => Method::DefaultSpeed,
            n if n == stretches => Method::LearnedSpeed,
            _ => Method::MixedSpeed,
        };
        Eta {
            duration_s,
            distance_m: road,
            method,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learner::LearnerConfig;

    const MONDAY_MS: i64 = 1_704_067_200_000;

    fn model() -> GreatCircleModel {
        let learner = Arc::new(SpeedLearner::new(LearnerConfig {
            min_samples: 1,
            smoothing: 1.0,
            ..LearnerConfig::default()
        }));
        GreatCircleModel::new(ModelConfig::default(), learner)
    }

    #[test]
    fn with_nothing_learned_the_default_speed_and_circuity_apply() {
        let m = model();
        let a = Position::new(37.5, 127.0).unwrap();
        let b = a.destination(90.0, 10_000.0);
        let eta = m.eta(&a, &b, MONDAY_MS);
        assert!((eta.distance_m - 13_000.0).abs() < 1.0, "{eta:?}");
        assert!(
            (eta.duration_s - 13_000.0 / (25.0 / 3.6)).abs() < 1.0,
            "{eta:?}"
        );
        assert_eq!(eta.method, Method::DefaultSpeed);
    }

    #[test]
    fn a_learned_area_uses_its_speed_and_a_trip_through_it_mixes() {
        let m = model();
        let a = Position::new(37.5, 127.0).unwrap();
        let near = a.destination(0.0, 500.0);
        // 15 m/s learned around `a` (one sample suffices in this model's learner).
        m.learner()
            .observe(&a, &a.destination(0.0, 150.0), 10.0, MONDAY_MS);
        let short = m.eta(&a, &near, MONDAY_MS);
        assert_eq!(short.method, Method::LearnedSpeed);
        assert!((short.duration_s - 650.0 / 15.0).abs() < 0.5, "{short:?}");
        // 15 km: 8 stretches; only the first one's midpoint (~940 m north) is learned.
        let first = a.destination(0.0, 15_000.0 / 16.0);
        m.learner()
            .observe(&first, &first.destination(0.0, 150.0), 10.0, MONDAY_MS);
        let long = m.eta(&a, &a.destination(0.0, 15_000.0), MONDAY_MS);
        assert_eq!(long.method, Method::MixedSpeed);
    }

    #[test]
    fn the_same_point_is_zero_seconds_away() {
        let m = model();
        let a = Position::new(-33.8688, 151.2093).unwrap();
        let eta = m.eta(&a, &a, MONDAY_MS);
        assert_eq!((eta.duration_s, eta.distance_m), (0.0, 0.0));
    }

    #[test]
    fn antipodes_and_the_antimeridian_give_finite_answers() {
        let m = model();
        let a = Position::new(0.0, 179.99).unwrap();
        let b = Position::new(0.0, -179.99).unwrap();
        let eta = m.eta(&a, &b, MONDAY_MS);
        assert!(
            eta.distance_m < 3_000.0 && eta.duration_s.is_finite(),
            "{eta:?}"
        );
        let c = Position::new(0.0, 0.0).unwrap();
        let d = Position::new(0.0, 180.0).unwrap();
        let eta = m.eta(&c, &d, MONDAY_MS);
        assert!(
            eta.duration_s.is_finite() && eta.duration_s > 0.0,
            "{eta:?}"
        );
    }

    #[test]
    fn eta_many_answers_in_order() {
        let m = model();
        let a = Position::new(37.5, 127.0).unwrap();
        let to: Vec<Position> = [3_000.0, 1_000.0, 2_000.0]
            .iter()
            .map(|d| a.destination(0.0, *d))
            .collect();
        let etas = m.eta_many(&a, &to, MONDAY_MS);
        assert!(etas[1].duration_s < etas[2].duration_s && etas[2].duration_s < etas[0].duration_s);
    }
}
