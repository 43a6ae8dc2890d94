//! What one service needs of another, as traits the consumer calls and the provider
//! implements. Services never depend on each other's crates; the composition root hands
//! each service the providers it needs (see [`crate::service`]).

use std::future::Future;
use std::pin::Pin;

use geomatch_index::{Position, Status};
use serde::{Deserialize, Serialize};

use crate::redis::RedisError;

/// A boxed future of a port call (ports are object-safe; their calls are not on the hot
/// path of the index).
pub type PortFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Dispatch's hold on drivers, as location ingest sees it: a driver holding an offer or
/// on a ride cannot change its own status, and its state shows the engagement.
/// Provided by matching.
pub trait Engagement: Send + Sync {
    /// `Offered` or `Busy` while dispatch holds the driver, else `None`.
    fn engagement<'a>(
        &'a self,
        driver: &'a str,
    ) -> PortFuture<'a, Result<Option<Status>, RedisError>>;
}

/// Messages to drivers' live connections (their WebSocket). Provided by location ingest
/// (the connections it holds) or by matching in Redis mode (published for whichever
/// process holds the connection).
pub trait DriverPush: Send + Sync {
    /// Sends one JSON text to `driver` if it is connected here (or, published, wherever it
    /// is). Never blocks: a full outbox drops the message, and drivers can poll.
    fn push(&self, driver: &str, json: &str) -> bool;
}

/// Told of every accepted move of a driver: its previous and new position and the seconds
/// between them. Provided by eta-pricing (the learned speeds); called outside the
/// index's locks, keep it cheap.
pub trait MoveObserver: Send + Sync {
    fn moved(&self, from: &Position, to: &Position, dt_s: f64, now_ms: i64);
}

/// A fare in integer minor units of a currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fare {
    pub total_minor: u64,
    pub currency: String,
}

/// The trip a ride is for, as pricing sees it.
#[derive(Debug, Clone, Copy)]
pub struct Trip<'a> {
    pub product: &'a str,
    pub pickup: &'a Position,
    pub dropoff: &'a Position,
}

/// Why a quote cannot pay for a ride: a problem code and detail for the rider.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteRefusal {
    /// The quote belongs to another rider (403) rather than being invalid (422).
    pub forbidden: bool,
    pub code: &'static str,
    pub detail: String,
}

/// What dispatch needs of pricing. Provided by eta-pricing.
pub trait TripPricing: Send + Sync {
    /// Checks that `quote_id` is a live quote of `rider` for this trip; its fare.
    fn verify_quote_for_trip(
        &self,
        quote_id: &str,
        rider: &str,
        trip: &Trip<'_>,
    ) -> Result<Fare, QuoteRefusal>;
    /// The fare of a ride requested without a quote (priced now), if its product exists.
    fn price_trip(&self, trip: &Trip<'_>, now_ms: i64) -> Option<Fare>;
    /// A ride request at `at`: demand for surge.
    fn record_demand(&self, at: &Position, now_ms: i64);
}
