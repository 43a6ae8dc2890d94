//! Fixtures of the crate's unit tests: an engine on a manual clock, local or on a test
//! redis-server.

use std::sync::Arc;

use geomatch_common::config::PricingSettings;
use geomatch_common::redis::Redis;
use geomatch_common::{Clock, Deps, Metrics, Settings};
use geomatch_index::{Index, Position};

use crate::service::EtaPricing;
use crate::views::QuoteRequest;

/// 2024-01-01 00:00 UTC.
pub const T0: i64 = 1_704_067_200_000;

/// What `engine` builds from: default settings with `tune` applied to `[pricing]`, the
/// given Redis handle (Redis mode) or none, a fresh index and registry, a manual clock.
pub fn deps(tune: impl FnOnce(&mut PricingSettings), redis: Option<Redis>, clock: Clock) -> Deps {
    let mut settings = Settings::default();
    tune(&mut settings.pricing);
    Deps {
        index: Arc::new(Index::new(settings.index).expect("an index")),
        settings: Arc::new(settings),
        metrics: Metrics::new().expect("a registry"),
        redis,
        clock,
    }
}

/// A local engine on a manual clock at [`T0`].
pub fn engine(tune: impl FnOnce(&mut PricingSettings)) -> (Arc<EtaPricing>, Clock) {
    let clock = Clock::manual(T0);
    let (engine, _tasks) = crate::engine(&deps(tune, None, clock.clone())).expect("an engine");
    (engine, clock)
}

pub fn pos(lat: f64, lng: f64) -> Position {
    Position::new(lat, lng).expect("a position")
}

/// A trip of about 7 km in Seoul.
pub fn request(product: &str) -> QuoteRequest {
    QuoteRequest {
        pickup: pos(37.5, 127.0),
        dropoff: pos(37.55, 127.05),
        product: product.into(),
        rider_id: None,
    }
}
