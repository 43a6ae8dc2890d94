//! Rides and offers as clients see them: ids, states, the request that creates a ride, the
//! views returned, and the errors of dispatch with their codes.

use std::borrow::Borrow;
use std::fmt;

use actix_web::http::StatusCode;
use geomatch_common::error::ErrorCode;
use geomatch_common::ports::{Fare, QuoteRefusal};
use geomatch_index::{EntryId, Position};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// An id newtype over the string clients see (serialised as that string).
macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub(crate) struct $name(String);

        impl $name {
            pub(crate) fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Hashes and compares as its string, so maps keyed by the id answer `&str`.
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

id!(
    /// A ride's id (`ride_…`).
    RideId
);
id!(
    /// An offer's id (`offer_…`): one offer of a ride to one driver.
    OfferId
);
id!(
    /// A driver's id, as the index and the driver's token name it.
    DriverId
);

/// `<prefix>_<16 random hex digits>`.
fn random_id(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::rng().random::<u64>())
}

impl RideId {
    /// A new ride's id.
    pub(crate) fn generate() -> Self {
        RideId(random_id("ride"))
    }
}

impl OfferId {
    /// A new offer's id.
    pub(crate) fn generate() -> Self {
        OfferId(random_id("offer"))
    }
}

impl From<&EntryId> for DriverId {
    fn from(id: &EntryId) -> Self {
        DriverId(id.as_str().to_owned())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RideState {
    Requested,
    Dispatching,
    Accepted,
    DriverArrived,
    InProgress,
    Completed,
    Cancelled,
    NoDriverFound,
}

impl RideState {
    pub(crate) fn is_terminal(self) -> bool {
        matches!(
            self,
            RideState::Completed | RideState::Cancelled | RideState::NoDriverFound
        )
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            RideState::Requested => "requested",
            RideState::Dispatching => "dispatching",
            RideState::Accepted => "accepted",
            RideState::DriverArrived => "driver_arrived",
            RideState::InProgress => "in_progress",
            RideState::Completed => "completed",
            RideState::Cancelled => "cancelled",
            RideState::NoDriverFound => "no_driver_found",
        }
    }

    /// The state named `name` (as [`Self::name`] writes it).
    pub(crate) fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }
}

/// `POST /v1/rides` body.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RideRequest {
    pub(crate) pickup: Position,
    pub(crate) dropoff: Position,
    /// A configured vehicle class (`standard`, `xl`, …).
    pub(crate) product: String,
    /// Minimum seats (defaults to any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) seats: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) quote_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) preferred_driver_id: Option<EntryId>,
    /// ms since the Unix epoch; up to `matching.max_schedule_days` ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) scheduled_at: Option<i64>,
    /// A tip for the driver, in the fare's minor units (up to `matching.max_tip_minor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tip_minor: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Transition {
    pub(crate) state: RideState,
    pub(crate) at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) by: Option<String>,
}

/// A ride as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct RideView {
    pub(crate) ride_id: RideId,
    pub(crate) rider_id: String,
    pub(crate) state: RideState,
    pub(crate) pickup: Position,
    pub(crate) dropoff: Position,
    pub(crate) product: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) driver_id: Option<DriverId>,
    /// Pickup ETA of the assigned driver when they accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pickup_eta_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scheduled_at: Option<i64>,
    /// The fare fixed when the ride was requested (the quote's, or priced then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fare: Option<Fare>,
    /// The rider's tip, minor units of the fare's currency.
    pub(crate) tip_minor: u64,
    /// The outstanding offer, shown to service and admin callers only (operators, and
    /// drivers' backends acting for them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) offer_id: Option<OfferId>,
    /// Offers made so far.
    pub(crate) attempts: u32,
    pub(crate) transitions: Vec<Transition>,
}

/// An offer as the driver sees it (also the WebSocket event).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct OfferView {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) offer_id: OfferId,
    pub(crate) ride_id: RideId,
    pub(crate) pickup: Position,
    pub(crate) dropoff: Position,
    pub(crate) product: String,
    pub(crate) pickup_distance_m: f64,
    pub(crate) pickup_eta_s: u64,
    pub(crate) expires_at_ms: i64,
    /// The ride's fare, when priced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fare: Option<Fare>,
    /// The rider's tip (minor units).
    pub(crate) tip_minor: u64,
    /// Fare plus tip: what the driver is offered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) total_minor: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum DispatchError {
    #[error("an Idempotency-Key header is required")]
    MissingKey,
    #[error("Idempotency-Key must be 1 to 128 visible ASCII characters")]
    BadKey,
    #[error("this Idempotency-Key was used with a different body")]
    KeyReused,
    #[error("a request with this Idempotency-Key is still being processed")]
    InProgress,
    #[error("the rider already has an open ride ({0})")]
    RideOpen(RideId),
    #[error("unknown product {0:?}")]
    UnknownProduct(String),
    #[error("seats must be 1..=16")]
    Seats,
    #[error("scheduled_at must be in the future and at most {0} days ahead")]
    Schedule(u64),
    #[error("the quote was refused: {}", .0.detail)]
    Quote(QuoteRefusal),
    #[error("no ride {0}")]
    RideNotFound(RideId),
    #[error("driver {0} has no current offer")]
    NoOffer(DriverId),
    #[error("this offer is no longer current (accepted, declined, expired or withdrawn)")]
    OfferGone,
    #[error("the ride is {0}; this step needs it to be {1}")]
    WrongState(&'static str, &'static str),
    #[error("the driver is no longer available")]
    DriverUnavailable,
    #[error("forbidden")]
    Forbidden,
    #[error("invalid query: {0}")]
    Query(String),
    #[error("a tip can only be raised; it is {0}")]
    TipLowered(u64),
    #[error("a tip may be at most {0} minor units")]
    TipTooLarge(u64),
    #[error("dispatch is unavailable; retry shortly ({0})")]
    Unavailable(String),
}

impl ErrorCode for DispatchError {
    fn status(&self) -> StatusCode {
        use DispatchError::*;
        match self {
            MissingKey | BadKey | Query(_) => StatusCode::BAD_REQUEST,
            TipLowered(_) | TipTooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Quote(r) if r.forbidden => StatusCode::FORBIDDEN,
            KeyReused | UnknownProduct(_) | Seats | Schedule(_) | Quote(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            InProgress | RideOpen(_) | OfferGone | WrongState(..) | DriverUnavailable => {
                StatusCode::CONFLICT
            }
            RideNotFound(_) | NoOffer(_) => StatusCode::NOT_FOUND,
            Forbidden => StatusCode::FORBIDDEN,
        }
    }
    fn code(&self) -> &'static str {
        use DispatchError::*;
        match self {
            MissingKey => "idempotency_key_required",
            BadKey => "invalid_idempotency_key",
            KeyReused => "idempotency_key_reused",
            InProgress => "request_in_progress",
            RideOpen(_) => "ride_already_open",
            UnknownProduct(_) => "unknown_product",
            Seats => "invalid_seats",
            Schedule(_) => "invalid_schedule",
            Quote(r) => r.code,
            RideNotFound(_) => "ride_not_found",
            NoOffer(_) => "no_current_offer",
            OfferGone => "offer_not_current",
            WrongState(..) => "invalid_ride_state",
            DriverUnavailable => "driver_unavailable",
            Forbidden => "forbidden",
            Query(_) => "invalid_query",
            TipLowered(_) => "tip_lowered",
            TipTooLarge(_) => "tip_too_large",
            Unavailable(_) => "store_unavailable",
        }
    }
}
