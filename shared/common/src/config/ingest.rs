//! Location ingest and the index it feeds (sections `ingest`, `index`).

use geomatch_index::{Index, IndexConfig, IndexError};
use serde::Deserialize;

use super::error::{check_range, invalid, ConfigError};

/// Rules of location ingest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// A driver not heard from within this many seconds goes offline and leaves the index.
    pub ttl_s: u64,
    /// Most updates in one `POST /v1/locations/batch`.
    pub max_batch: usize,
    /// Sustained updates per second allowed per driver id.
    pub rate_per_s: f64,
    /// Updates a driver may send at once above the sustained rate.
    pub burst: f64,
    /// A jump implying more than this speed is refused as implausible.
    pub max_speed_kmh: f64,
    /// How far ahead of the server clock a device time may be.
    pub max_future_ms: i64,
    /// Vehicle class names, in the order of their codes (at most 32).
    pub vehicle_classes: Vec<String>,
    /// Seconds between WebSocket pings; a connection silent for three intervals is closed.
    pub ws_heartbeat_s: u64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            ttl_s: 30,
            max_batch: 1_000,
            rate_per_s: 5.0,
            burst: 10.0,
            max_speed_kmh: 300.0,
            max_future_ms: 30_000,
            vehicle_classes: vec!["standard".into(), "xl".into(), "premium".into()],
            ws_heartbeat_s: 10,
        }
    }
}

impl IngestSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_range("ingest.ttl_s", self.ttl_s, 1, 86_400)?;
        check_range("ingest.max_batch", self.max_batch, 1, 100_000)?;
        if !(self.rate_per_s.is_finite() && self.rate_per_s > 0.0 && self.rate_per_s <= 1_000.0) {
            return Err(invalid("ingest.rate_per_s", "must be in (0, 1000]"));
        }
        if !(self.burst.is_finite() && self.burst >= 1.0 && self.burst <= 10_000.0) {
            return Err(invalid("ingest.burst", "must be in [1, 10000]"));
        }
        if !(self.max_speed_kmh.is_finite() && self.max_speed_kmh > 0.0) {
            return Err(invalid("ingest.max_speed_kmh", "must be a positive number"));
        }
        check_range("ingest.max_future_ms", self.max_future_ms, 0, 3_600_000)?;
        check_range("ingest.ws_heartbeat_s", self.ws_heartbeat_s, 1, 300)?;
        if self.vehicle_classes.is_empty() || self.vehicle_classes.len() > 32 {
            return Err(invalid(
                "ingest.vehicle_classes",
                "must name 1 to 32 classes",
            ));
        }
        Ok(())
    }
}

/// The index crate owns its ranges; building an (empty, cheap) index checks them without
/// copying its limits here.
pub(super) fn validate_index(config: &IndexConfig) -> Result<(), ConfigError> {
    match Index::new(*config) {
        Ok(_) => Ok(()),
        Err(e @ IndexError::BadResolution(_)) => Err(invalid("index.cell_resolution", e)),
        Err(e @ IndexError::BadBucketLevel(_)) => Err(invalid("index.bucket_level", e)),
        Err(e) => Err(invalid("index", e)),
    }
}
