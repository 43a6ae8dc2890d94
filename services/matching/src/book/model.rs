//! What a book stores and what its steps say: rides, offers, claims, idempotency keys.

use std::collections::HashSet;

use geomatch_common::ports::Fare;
use serde::{Deserialize, Serialize};

use crate::ride::{
    DispatchError, DriverId, OfferId, OfferView, RideId, RideRequest, RideState, RideView,
    Transition,
};

/// A ride as a book stores it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RideDoc {
    pub(crate) base: RideBase,
    pub(crate) state: RideState,
    pub(crate) transitions: Vec<Transition>,
    pub(crate) driver: Option<DriverId>,
    /// The assigned driver's fencing token (from the accepted offer).
    pub(crate) token: Option<u64>,
    pub(crate) pickup_eta_s: Option<u64>,
    pub(crate) offer: Option<OfferId>,
    pub(crate) attempts: u32,
    /// Index into `matching.radii_m` of the last search.
    pub(crate) radius: usize,
    /// When dispatch (re)started: the request, or the scheduled start.
    pub(crate) since_ms: i64,
    pub(crate) tip_minor: u64,
    /// Drivers who declined or timed out on this ride.
    pub(crate) excluded: HashSet<DriverId>,
}

/// The part of a ride fixed at creation (stored as JSON in Redis mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RideBase {
    pub(crate) id: RideId,
    pub(crate) rider: String,
    pub(crate) request: RideRequest,
    pub(crate) class: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fare: Option<Fare>,
}

impl RideDoc {
    /// A new ride requested at `now`: `dispatching` at once, or `requested` until its
    /// scheduled dispatch.
    pub(crate) fn new(base: RideBase, now: i64, dispatching: bool) -> Self {
        let mut transitions = vec![Transition {
            state: RideState::Requested,
            at_ms: now,
            by: None,
        }];
        if dispatching {
            transitions.push(Transition {
                state: RideState::Dispatching,
                at_ms: now,
                by: None,
            });
        }
        let tip_minor = base.request.tip_minor.unwrap_or(0);
        RideDoc {
            base,
            state: if dispatching {
                RideState::Dispatching
            } else {
                RideState::Requested
            },
            transitions,
            driver: None,
            token: None,
            pickup_eta_s: None,
            offer: None,
            attempts: 0,
            radius: 0,
            since_ms: now,
            tip_minor,
            excluded: HashSet::new(),
        }
    }

    /// Moves to `state`, recording the transition.
    pub(crate) fn to(&mut self, state: RideState, at_ms: i64, by: Option<&str>) {
        self.state = state;
        self.transitions.push(Transition {
            state,
            at_ms,
            by: by.map(str::to_owned),
        });
    }

    pub(crate) fn view(&self) -> RideView {
        let req = &self.base.request;
        RideView {
            ride_id: self.base.id.clone(),
            rider_id: self.base.rider.clone(),
            state: self.state,
            pickup: req.pickup,
            dropoff: req.dropoff,
            product: req.product.clone(),
            driver_id: self.driver.clone(),
            pickup_eta_s: self.pickup_eta_s,
            scheduled_at: req.scheduled_at,
            fare: self.base.fare.clone(),
            tip_minor: self.tip_minor,
            offer_id: self.offer.clone(),
            attempts: self.attempts,
            transitions: self.transitions.clone(),
        }
    }

    /// The offer of this ride to a driver, as the driver sees it.
    pub(crate) fn offer_view(&self, offer: &OfferRecord) -> OfferView {
        let req = &self.base.request;
        OfferView {
            kind: "offer".into(),
            offer_id: offer.id.clone(),
            ride_id: self.base.id.clone(),
            pickup: req.pickup,
            dropoff: req.dropoff,
            product: req.product.clone(),
            pickup_distance_m: offer.distance_m,
            pickup_eta_s: offer.eta_s,
            expires_at_ms: offer.expires_at_ms,
            fare: self.base.fare.clone(),
            tip_minor: self.tip_minor,
            total_minor: self
                .base
                .fare
                .as_ref()
                .map(|f| f.total_minor + self.tip_minor),
        }
    }
}

/// An outstanding offer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OfferRecord {
    pub(crate) id: OfferId,
    pub(crate) ride: RideId,
    pub(crate) driver: DriverId,
    /// The driver's fencing token for this offer.
    pub(crate) token: u64,
    pub(crate) distance_m: f64,
    pub(crate) eta_s: u64,
    pub(crate) expires_at_ms: i64,
}

/// A driver a ride could be offered to, best first.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Candidate {
    pub(crate) driver: DriverId,
    pub(crate) distance_m: f64,
    pub(crate) eta_s: u64,
}

/// A new ride for [`Book::create`](super::Book::create).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRide<'a> {
    pub(crate) ride: &'a RideDoc,
    /// When a `requested` (scheduled) ride starts dispatching.
    pub(crate) dispatch_at: i64,
    pub(crate) idem: &'a IdemKey<'a>,
    /// The request's answer is the ride as stored: its key replays at once.
    pub(crate) answered: bool,
}

/// An offer to make, for [`Book::claim`](super::Book::claim).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offering<'a> {
    pub(crate) ride: &'a RideId,
    /// The radius (index into `matching.radii_m`) the candidates were found within.
    pub(crate) radius: usize,
    /// Best first.
    pub(crate) candidates: &'a [Candidate],
    /// A ride with this many offers made wants no more.
    pub(crate) max_attempts: u32,
    pub(crate) offer: &'a OfferId,
    pub(crate) expires_at_ms: i64,
    /// The request this claim answers (its first offer), if any.
    pub(crate) answers: Option<&'a IdemKey<'a>>,
}

/// What [`Book::claim`](super::Book::claim) did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Claim {
    /// The first free candidate now holds this offer.
    Offered(OfferRecord),
    /// The ride no longer wants an offer (it has one, ended, or used its attempts).
    NotWanted,
    /// Every candidate was taken (by another ride); these were locked.
    AllTaken(Vec<DriverId>),
}

/// A ride request's `Idempotency-Key`, with the body it came with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdemKey<'a> {
    pub(crate) rider: &'a str,
    pub(crate) key: &'a str,
    /// The request body as JSON: the same key with another body is refused.
    pub(crate) body: &'a str,
    /// How long a finished key replays its ride.
    pub(crate) ttl_s: u64,
}

/// What an `Idempotency-Key` already used says about a new request with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum IdemSeen {
    /// Same body, answered: replay this ride.
    Replay(RideId),
    /// Same body, the first request is still being answered.
    InProgress,
    /// Another body.
    Reused,
}

/// A key stays "in progress" at most this long (a replica that died mid-request); then
/// it replays the ride it made.
pub(crate) const IDEM_PENDING_MS: i64 = 60_000;

/// How long ended rides stay readable.
pub(crate) const RETENTION_MS: i64 = 7 * 86_400_000;

/// What [`Book::create`](super::Book::create) did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Created {
    /// Stored, with its key: in progress until `idem_finish` (or a claim that carries the
    /// key) unless created `answered`.
    Made,
    /// Not stored: the rider's open ride.
    Open(RideId),
    /// Not stored: the key was used before.
    Seen(IdemSeen),
}

/// How an offer ended without an accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OfferEnd {
    Declined,
    TimedOut,
}

/// A state change of an existing ride.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step<'a> {
    pub(crate) to: RideState,
    /// The states the ride may be in.
    pub(crate) from: &'a [RideState],
    /// When set, only the ride's assigned driver (holding its fencing token) may step.
    pub(crate) driver: Option<&'a DriverId>,
    /// Recorded in the transition.
    pub(crate) by: Option<&'a str>,
}

/// What a step did besides changing the state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stepped {
    pub(crate) ride: RideDoc,
    /// An outstanding offer that the step withdrew.
    pub(crate) withdrawn: Option<OfferRecord>,
}

/// The shared store failed (Redis unreachable or slow): retry later.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the dispatch store is unavailable: {0}")]
pub(crate) struct BookError(pub(crate) String);

impl From<BookError> for DispatchError {
    fn from(e: BookError) -> Self {
        DispatchError::Unavailable(e.0)
    }
}

/// A step that the book may refuse (the ride or offer is not as the step needs: the
/// inner error) or fail to record (the outer one).
pub(crate) type Refusable<T> = Result<Result<T, DispatchError>, BookError>;
