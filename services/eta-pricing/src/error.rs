//! What eta-pricing refuses, with the status and stable code of each refusal.

use actix_web::http::StatusCode;
use geomatch_common::error::ErrorCode;
use geomatch_index::CoordError;

use crate::heatmap::BBoxError;
use crate::quote::QuoteError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PricingError {
    #[error("invalid query: {0}")]
    Query(String),
    #[error(transparent)]
    Position(#[from] CoordError),
    #[error(transparent)]
    BBox(#[from] BBoxError),
    #[error("res must be in {min}..={max} (surge is computed at resolution 7), got {got}")]
    Resolution { got: u8, min: u8, max: u8 },
    #[error("the box holds about {estimate} cells at resolution {res}; at most {max} are answered: zoom in or use a coarser res")]
    TooManyCells {
        estimate: usize,
        res: u8,
        max: usize,
    },
    #[error("batch of {got} destinations is above the limit of {max}")]
    BatchTooLarge { got: usize, max: usize },
    #[error("a batch needs at least one destination")]
    EmptyBatch,
    #[error("unknown product {0:?}")]
    UnknownProduct(String),
    #[error("the trip is {km:.0} km; at most {max_km:.0} km are quoted")]
    TripTooLong { km: f64, max_km: f64 },
    #[error("a service or admin token must name the rider_id the quote is for")]
    RiderRequired,
    #[error("rider_id must be 1 to 128 visible ASCII characters")]
    BadRider,
    #[error("this token may not do this")]
    Forbidden,
    #[error(transparent)]
    Quote(#[from] QuoteError),
    /// Redis mode: the shared state could not be reached; retry shortly.
    #[error("shared pricing state unavailable: {0}")]
    Unavailable(String),
}

impl ErrorCode for PricingError {
    fn status(&self) -> StatusCode {
        use PricingError::*;
        match self {
            Query(_) | Position(_) | BBox(_) | Resolution { .. } | TooManyCells { .. } => {
                StatusCode::BAD_REQUEST
            }
            BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EmptyBatch | UnknownProduct(_) | TripTooLong { .. } | RiderRequired | BadRider => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Forbidden => StatusCode::FORBIDDEN,
            Quote(e) => e.status(),
            Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        use PricingError::*;
        match self {
            Query(_) => "invalid_query",
            Position(e) => e.code(),
            BBox(_) => "invalid_bbox",
            Resolution { .. } => "invalid_resolution",
            TooManyCells { .. } => "too_many_cells",
            BatchTooLarge { .. } => "batch_too_large",
            EmptyBatch => "empty_batch",
            UnknownProduct(_) => "unknown_product",
            TripTooLong { .. } => "trip_too_long",
            RiderRequired => "rider_id_required",
            BadRider => "invalid_rider_id",
            Forbidden => "forbidden",
            Quote(e) => e.code(),
            Unavailable(_) => "store_unavailable",
        }
    }
}
