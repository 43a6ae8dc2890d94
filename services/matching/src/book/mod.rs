//! Where rides, offers and driver locks live: the state half of dispatch, and its one
//! mode seam.
//!
//! The dispatcher decides (who the candidates are, in which order); a book records, and
//! every record is one atomic step that re-checks what the decision assumed (the ride
//! still wants an offer, the driver is still free, the offer is still current). Two books
//! keep the same contract, stated once on [`Book`]'s methods and tested once against both
//! (`contract.rs`):
//! - [`MemoryBook`](memory::MemoryBook) (embedded): one mutex; the index's driver status
//!   is the driver lock.
//! - [`RedisBook`](redis::RedisBook) (Redis mode): Lua scripts with a per-driver fencing
//!   token, so any number of matching replicas share one set of rides.
//!
//! Time is always the caller's `now` (ms since the Unix epoch); a book never reads a
//! clock.

use std::sync::Arc;

use geomatch_common::ports::Engagement;
use geomatch_common::redis::Redis;
use geomatch_index::Index;
use prometheus::HistogramVec;

mod memory;
mod model;
mod redis;

#[cfg(test)]
mod contract;

pub(crate) use model::{
    BookError, Candidate, Claim, Created, IdemKey, IdemSeen, NewRide, OfferEnd, OfferRecord,
    Offering, Refusable, RideBase, RideDoc, Step, Stepped,
};
pub(crate) use redis::ENGAGED;

use crate::ride::{DriverId, OfferId, RideId};
use memory::MemoryBook;
use redis::RedisBook;

/// The book of one process: in memory (embedded mode), or shared through Redis.
///
/// The contract both keep:
/// - A ride is created together with its request's `Idempotency-Key`, refusing a key used
///   before (replay, in progress, reused) and a rider's second open ride, in one step.
/// - A ride in `dispatching` holds at most one outstanding offer; a driver holds at most
///   one offer or one ride (the driver lock). A claim locks the first free candidate.
/// - An offer ends once: accepted (by its driver, while current and before its deadline),
///   declined (by its driver) or timed out (after its deadline); or withdrawn by a step
///   that ends or moves the ride. A driver who declined or timed out is excluded from
///   the ride.
/// - Trip steps after the accept are made only by the assigned driver (while the lock
///   holds that ride); a terminal step releases the driver and the rider's open ride.
/// - A tip only goes up, and not on a cancelled or unserved ride.
pub(crate) enum Book {
    Memory(MemoryBook),
    Redis(RedisBook),
}

/// Runs the same call on whichever book this is: the memory book's steps are plain
/// calls under its mutex, the Redis book's are awaited.
macro_rules! on_book {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            Book::Memory($b) => Ok($call),
            Book::Redis($b) => $call.await,
        }
    };
}

impl Book {
    /// The book of this process's mode: Redis when a handle is given (each call's latency
    /// recorded in `latency`, by step), else in memory over `index`.
    pub(crate) fn new(index: Arc<Index>, redis: Option<Redis>, latency: HistogramVec) -> Self {
        match redis {
            Some(redis) => Book::Redis(RedisBook::new(redis, latency)),
            None => Book::Memory(MemoryBook::new(index)),
        }
    }

    /// What an earlier use of `idem` says at `now`, if it was used (read only).
    pub(crate) async fn idem_seen(
        &self,
        idem: &IdemKey<'_>,
        now: i64,
    ) -> Result<Option<IdemSeen>, BookError> {
        on_book!(self, b => b.idem_seen(idem, now))
    }

    /// Marks the key's request answered: from now on it replays its ride.
    pub(crate) async fn idem_finish(&self, idem: &IdemKey<'_>) -> Result<(), BookError> {
        on_book!(self, b => b.idem_finish(idem))
    }

    /// Stores a new ride under its idempotency key, in one step: unless the key was used
    /// before ([`Created::Seen`]) or the rider already has an open ride
    /// ([`Created::Open`]). A `dispatching` ride waits for its first claim (it is idle);
    /// a `requested` one starts at `dispatch_at` ([`Self::start_due`]).
    pub(crate) async fn create(&self, new: &NewRide<'_>, now: i64) -> Result<Created, BookError> {
        on_book!(self, b => b.create(new, now))
    }

    /// The ride, while it exists (ended rides are kept for [`model::RETENTION_MS`]).
    pub(crate) async fn ride(&self, id: &RideId) -> Result<Option<RideDoc>, BookError> {
        on_book!(self, b => b.ride(id))
    }

    /// Offers the ride to the first free candidate not excluded from it, if the ride still
    /// wants an offer (dispatching, no offer out, fewer than `max_attempts` made). With
    /// `answers`, also marks that request's key answered (the first offer of a request).
    pub(crate) async fn claim(&self, offering: &Offering<'_>) -> Result<Claim, BookError> {
        on_book!(self, b => b.claim(offering))
    }

    /// Ends an offer, once: by decline (only its driver, when `driver` is set: else
    /// `Forbidden`) or by timeout (only once its deadline has passed at `now`: else
    /// `OfferGone`). The driver is released and excluded from the ride; a dispatching
    /// ride left without an offer is idle from `now`. Returns the offer.
    pub(crate) async fn close_offer(
        &self,
        offer: &OfferId,
        driver: Option<&DriverId>,
        how: OfferEnd,
        now: i64,
    ) -> Refusable<OfferRecord> {
        on_book!(self, b => b.close_offer(offer, driver, how, now))
    }

    /// The offer's driver accepts it: only while it is the ride's current offer, before
    /// its deadline (else `OfferGone`; another driver: `Forbidden`), and while the driver
    /// still holds it under its token (else `DriverUnavailable`). The driver now holds
    /// the ride. Returns the ride after the accept.
    pub(crate) async fn accept(
        &self,
        offer: &OfferId,
        driver: &DriverId,
        now: i64,
    ) -> Refusable<RideDoc> {
        on_book!(self, b => b.accept(offer, driver, now))
    }

    /// Moves the ride to `step.to` from one of `step.from` (else `WrongState`; ending it
    /// as `no_driver_found` also needs no offer out), by its assigned driver only when
    /// `step.driver` is set (else `Forbidden`). Withdraws an outstanding offer; a
    /// terminal step releases the driver and the rider's open ride.
    pub(crate) async fn step(&self, ride: &RideId, step: Step<'_>, now: i64) -> Refusable<Stepped> {
        on_book!(self, b => b.step(ride, step, now))
    }

    /// Sets the ride's tip: it only goes up (else `TipLowered`), and not on a cancelled
    /// or unserved ride (`WrongState`).
    pub(crate) async fn set_tip(&self, ride: &RideId, tip_minor: u64) -> Refusable<RideDoc> {
        on_book!(self, b => b.set_tip(ride, tip_minor))
    }

    /// The outstanding offer with this id.
    pub(crate) async fn offer(&self, offer: &OfferId) -> Result<Option<OfferRecord>, BookError> {
        on_book!(self, b => b.offer(offer))
    }

    /// The driver's outstanding offer.
    pub(crate) async fn offer_of_driver(
        &self,
        driver: &DriverId,
    ) -> Result<Option<OfferRecord>, BookError> {
        on_book!(self, b => b.offer_of_driver(driver))
    }

    /// Offers whose deadline is at or before `now`, earliest first.
    pub(crate) async fn expired_offers(&self, now: i64) -> Result<Vec<OfferId>, BookError> {
        on_book!(self, b => b.expired_offers(now))
    }

    /// Moves scheduled rides whose dispatch time has come to `dispatching` (idle from
    /// `now`); returns them.
    pub(crate) async fn start_due(&self, now: i64) -> Result<Vec<RideId>, BookError> {
        on_book!(self, b => b.start_due(now))
    }

    /// Dispatching rides without an offer, with the time since when.
    pub(crate) async fn idle(&self) -> Result<Vec<(RideId, i64)>, BookError> {
        on_book!(self, b => b.idle())
    }

    /// Rides not in a terminal state.
    pub(crate) async fn open_count(&self) -> Result<u64, BookError> {
        on_book!(self, b => b.open_count())
    }

    /// Whether this process assigns the batch window starting now: one replica per window
    /// (the memory book's process is the only one).
    pub(crate) async fn batch_turn(&self, window_ms: u64) -> Result<bool, BookError> {
        match self {
            Book::Memory(_) => Ok(true),
            Book::Redis(b) => b.batch_turn(window_ms).await,
        }
    }

    /// Periodic upkeep at `now`: the memory book forgets rides ended more than
    /// [`model::RETENTION_MS`] ago (Redis expires them by itself).
    pub(crate) fn housekeep(&self, now: i64) {
        if let Book::Memory(b) = self {
            b.forget_ended(now, model::RETENTION_MS);
        }
    }
}

/// Dispatch's hold on drivers as other services see it (location ingest: an engaged
/// driver cannot change its own status). Redis mode reads the driver lock; embedded mode
/// answers `None`, since there the index status is the lock and ingest's compare-and-set
/// honours it.
pub(crate) fn engagement(redis: Option<Redis>) -> Arc<dyn Engagement> {
    match redis {
        Some(redis) => Arc::new(redis::DriverLocks::new(redis)),
        None => Arc::new(memory::IndexIsTheLock),
    }
}
