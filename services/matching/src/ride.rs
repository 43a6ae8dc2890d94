//! Rides and offers: states, the requests that create them and the views returned.

use actix_web::http::StatusCode;
use geomatch_common::error::ErrorCode;
use geomatch_index::{EntryId, Position};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RideState {
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
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RideState::Completed | RideState::Cancelled | RideState::NoDriverFound
        )
    }

    pub fn name(self) -> &'static str {
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
}

/// `POST /v1/rides` body.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RideRequest {
    pub pickup: Position,
    pub dropoff: Position,
    /// A configured vehicle class (`standard`, `xl`, …).
    pub product: String,
    /// Minimum seats (defaults to any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_driver_id: Option<EntryId>,
    /// ms since the Unix epoch; up to `matching.max_schedule_days` ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<i64>,
    /// A tip for the driver, in the fare's minor units (up to `matching.max_tip_minor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tip_minor: Option<u64>,
}

/// The fare of a ride, fixed when it was requested (the quote's, or priced then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fare {
    /// Integer minor units (cents), never floats.
    pub total_minor: u64,
    /// ISO 4217 code.
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transition {
    pub state: RideState,
    pub at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A ride as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RideView {
    pub ride_id: String,
    pub rider_id: String,
    pub state: RideState,
    pub pickup: Position,
    pub dropoff: Position,
    pub product: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_id: Option<String>,
    /// Pickup ETA of the assigned driver when they accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pickup_eta_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fare: Option<Fare>,
    /// The rider's tip, minor units of the fare's currency.
    pub tip_minor: u64,
    /// The outstanding offer, shown to service and admin callers only (operators, and
    /// drivers' backends acting for them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    /// Offers made so far.
    pub attempts: u32,
    pub transitions: Vec<Transition>,
}

/// An offer as the driver sees it (also the WebSocket event).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OfferView {
    #[serde(rename = "type")]
    pub kind: String,
    pub offer_id: String,
    pub ride_id: String,
    pub pickup: Position,
    pub dropoff: Position,
    pub product: String,
    pub pickup_distance_m: f64,
    pub pickup_eta_s: u64,
    pub expires_at_ms: i64,
    /// The ride's fare, when priced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fare: Option<Fare>,
    /// The rider's tip (minor units).
    pub tip_minor: u64,
    /// Fare plus tip: what the driver is offered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_minor: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DispatchError {
    #[error("an Idempotency-Key header is required")]
    MissingKey,
    #[error("Idempotency-Key must be 1 to 128 visible ASCII characters")]
    BadKey,
    #[error("this Idempotency-Key was used with a different body")]
    KeyReused,
    #[error("a request with this Idempotency-Key is still being processed")]
    InProgress,
    #[error("the rider already has an open ride ({0})")]
    RideOpen(String),
    #[error("unknown product {0:?}")]
    UnknownProduct(String),
    #[error("seats must be 1..=16")]
    Seats,
    #[error("scheduled_at must be in the future and at most {0} days ahead")]
    Schedule(u64),
    #[error("the quote was refused: {}", .0.detail)]
    Quote(crate::dispatch::QuoteRefusal),
    #[error("quotes are not offered by this deployment; omit quote_id")]
    QuotesUnavailable,
    #[error("no ride {0}")]
    RideNotFound(String),
    #[error("no offer {0}")]
    OfferNotFound(String),
    #[error("driver {0} has no current offer")]
    NoOffer(String),
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
            KeyReused | UnknownProduct(_) | Seats | Schedule(_) | Quote(_) | QuotesUnavailable => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            InProgress | RideOpen(_) | OfferGone | WrongState(..) | DriverUnavailable => {
                StatusCode::CONFLICT
            }
            RideNotFound(_) | OfferNotFound(_) | NoOffer(_) => StatusCode::NOT_FOUND,
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
            QuotesUnavailable => "quote_unavailable",
            RideNotFound(_) => "ride_not_found",
            OfferNotFound(_) => "offer_not_found",
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
