//! The small types every part of the service shares: what a report came to ([`Outcome`],
//! the store's [`Verdict`]), the one error type ([`IngestError`]), and the status and
//! driver bodies of the HTTP API.

use actix_web::http::StatusCode;
use geomatch_common::error::ErrorCode;
use geomatch_common::redis::RedisError;
use geomatch_index::{EntryId, IdError, Previous, Status};
use serde::{Deserialize, Serialize};

use crate::report::ReportError;

/// What happened to one accepted-for-processing report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The driver moved.
    Accepted,
    /// Older than what is stored (by seq, else device time); ignored.
    Stale,
}

/// What the store decided about one valid report (the store's `push_many`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Stored. `previous`: the entry's state in this process's index before the move,
    /// when it was there and moved (what move observers are told of).
    Accepted { previous: Option<Previous> },
    /// Older than the stored state (by seq when both have one, else by device time).
    Stale,
    /// Over the driver's rate limit; a token is available in `retry_after_ms`.
    RateLimited { retry_after_ms: u64 },
    /// The move implies `speed_kmh`, above the limit; nothing changed.
    Implausible { speed_kmh: f64 },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("invalid driver id: {0}")]
    Id(#[from] IdError),
    #[error("too many updates for this driver; retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    #[error("the jump from the last position implies {speed_kmh:.0} km/h (at most {max_kmh:.0})")]
    ImplausibleJump { speed_kmh: f64, max_kmh: f64 },
    #[error("no driver {0}")]
    NotFound(EntryId),
    #[error("driver {0} has no position yet: push a location before going online")]
    LocationRequired(EntryId),
    #[error("the driver is {0:?}: offered or on a ride, the status is dispatch's to change")]
    Engaged(Status),
    #[error("vehicle class {0:?} is not one of the configured classes")]
    UnknownClass(String),
    #[error("seats must be 1..=16, got {0}")]
    Seats(u8),
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
    #[error("batch of {got} updates is above the limit of {max}")]
    BatchTooLarge { got: usize, max: usize },
    #[error("a batch needs at least one update")]
    EmptyBatch,
}

impl ErrorCode for IngestError {
    fn status(&self) -> StatusCode {
        match self {
            IngestError::Report(e) => e.status(),
            IngestError::Id(_) => StatusCode::BAD_REQUEST,
            IngestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::ImplausibleJump { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            IngestError::NotFound(_) => StatusCode::NOT_FOUND,
            IngestError::LocationRequired(_) | IngestError::Engaged(_) => StatusCode::CONFLICT,
            IngestError::UnknownClass(_) | IngestError::Seats(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::EmptyBatch => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            IngestError::Report(e) => e.code(),
            IngestError::Id(_) => "invalid_driver_id",
            IngestError::RateLimited { .. } => "rate_limited",
            IngestError::ImplausibleJump { .. } => "implausible_jump",
            IngestError::NotFound(_) => "driver_not_found",
            IngestError::LocationRequired(_) => "location_required",
            IngestError::Engaged(_) => "driver_engaged",
            IngestError::UnknownClass(_) => "unknown_vehicle_class",
            IngestError::Seats(_) => "invalid_seats",
            IngestError::Unavailable(_) => "store_unavailable",
            IngestError::BatchTooLarge { .. } => "batch_too_large",
            IngestError::EmptyBatch => "empty_batch",
        }
    }

    /// Rate limited: when the next token is due, in whole seconds (at least 1); the store
    /// unavailable: 1 s.
    fn retry_after_s(&self) -> Option<u64> {
        match self {
            IngestError::RateLimited { retry_after_ms } => {
                Some(retry_after_ms.div_ceil(1000).max(1))
            }
            IngestError::Unavailable(_) => Some(1),
            _ => None,
        }
    }
}

impl From<RedisError> for IngestError {
    fn from(e: RedisError) -> Self {
        IngestError::Unavailable(e.to_string())
    }
}

/// Parses a path id.
pub fn driver_id(raw: &str) -> Result<EntryId, IngestError> {
    Ok(EntryId::parse(raw)?)
}

/// Body of `PUT /v1/drivers/{id}/status`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    /// `available` (online) or `offline`.
    pub status: OnlineStatus,
    /// A configured vehicle class name (for example `standard`, `xl`); required to go online.
    #[serde(default)]
    pub vehicle_class: Option<String>,
    #[serde(default)]
    pub seats: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnlineStatus {
    Available,
    Offline,
}

/// What `GET /v1/drivers/{id}` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverView {
    pub driver_id: String,
    pub lat: f64,
    pub lng: f64,
    pub h3_cell: String,
    pub status: Status,
    pub vehicle_class: String,
    pub seats: u8,
    pub seq: Option<u64>,
    pub ts_ms: Option<i64>,
    pub updated_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_the_rate_limit_wait_up_to_whole_seconds() {
        let limited = |ms| IngestError::RateLimited { retry_after_ms: ms }.retry_after_s();
        assert_eq!(limited(0), Some(1));
        assert_eq!(limited(200), Some(1));
        assert_eq!(limited(1000), Some(1));
        assert_eq!(limited(1001), Some(2));
        assert_eq!(
            IngestError::Unavailable("down".into()).retry_after_s(),
            Some(1)
        );
        assert_eq!(IngestError::EmptyBatch.retry_after_s(), None);
    }
}
