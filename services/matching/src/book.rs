//! Where rides, offers and driver locks live: the state half of dispatch.
//!
//! [`Dispatcher`](crate::Dispatcher) decides (who are the candidates, in which order); a
//! book records, and every record is one atomic step that re-checks what the decision
//! assumed (the ride still wants an offer, the driver is still free, the offer is still
//! current). Two books implement the same steps:
//! - [`MemoryBook`] (embedded): one mutex; the index's driver status is the driver lock.
//! - [`RedisBook`](crate::redis_book::RedisBook) (Redis mode): Lua scripts with a
//!   per-driver fencing token, so any number of matching replicas share one set of rides.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use geomatch_index::{EntryId, Index, Status};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::redis_book::RedisBook;
use crate::ride::{DispatchError, Fare, OfferView, RideRequest, RideState, RideView, Transition};

/// A ride as a book stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct RideDoc {
    pub base: RideBase,
    pub state: RideState,
    pub transitions: Vec<Transition>,
    pub driver: Option<String>,
    /// The assigned driver's fencing token (from the accepted offer).
    pub token: Option<u64>,
    pub pickup_eta_s: Option<u64>,
    pub offer: Option<String>,
    pub attempts: u32,
    /// Index into `matching.radii_m` of the last search.
    pub radius: usize,
    /// When dispatch (re)started: the request, or the scheduled start.
    pub since_ms: i64,
    pub tip_minor: u64,
    /// Drivers who declined or timed out on this ride.
    pub excluded: HashSet<String>,
}

/// The part of a ride fixed at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RideBase {
    pub id: String,
    pub rider: String,
    pub request: RideRequest,
    pub class: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fare: Option<Fare>,
}

impl RideDoc {
    pub fn new(base: RideBase, now: i64, dispatching: bool) -> Self {
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

    fn to(&mut self, state: RideState, at_ms: i64, by: Option<&str>) {
        self.state = state;
        self.transitions.push(Transition {
            state,
            at_ms,
            by: by.map(str::to_owned),
        });
    }

    pub fn view(&self) -> RideView {
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
    pub fn offer_view(&self, offer: &OfferRecord) -> OfferView {
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
pub struct OfferRecord {
    pub id: String,
    pub ride: String,
    pub driver: String,
    /// The driver's fencing token for this offer.
    pub token: u64,
    pub distance_m: f64,
    pub eta_s: u64,
    pub expires_at_ms: i64,
}

/// A driver a ride could be offered to, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub driver: String,
    pub distance_m: f64,
    pub eta_s: u64,
}

/// What [`Book::claim`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The first free candidate now holds this offer.
    Offered(OfferRecord),
    /// The ride no longer wants an offer (it has one, ended, or used its attempts).
    NotWanted,
    /// Every candidate was taken (by another ride); these were locked.
    AllTaken(Vec<String>),
}

/// A ride request's `Idempotency-Key`, with the body it came with.
#[derive(Debug, Clone, Copy)]
pub struct IdemKey<'a> {
    pub rider: &'a str,
    pub key: &'a str,
    /// The request body as JSON: the same key with another body is refused.
    pub body: &'a str,
    /// How long a finished key replays its ride.
    pub ttl_s: u64,
}

/// What an `Idempotency-Key` already used says about a new request with it.
#[derive(Debug, Clone, PartialEq)]
pub enum IdemSeen {
    /// Same body, answered: replay this ride.
    Replay(String),
    /// Same body, the first request is still being answered.
    InProgress,
    /// Another body.
    Reused,
}

/// A key stays "in progress" at most this long (a replica that died mid-request); then
/// it replays the ride it made.
pub const IDEM_PENDING_MS: i64 = 60_000;

/// What [`Book::create`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// Stored, with its key: in progress until [`Book::idem_finish`] (or a claim that
    /// carries the key) unless created `answered`.
    Made,
    /// Not stored: the rider's open ride.
    Open(String),
    /// Not stored: the key was used before.
    Seen(IdemSeen),
}

/// How an offer ended without an accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferEnd {
    Declined,
    TimedOut,
}

impl OfferEnd {
    pub fn name(self) -> &'static str {
        match self {
            OfferEnd::Declined => "declined",
            OfferEnd::TimedOut => "timed_out",
        }
    }
}

/// A state change of an existing ride.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub to: RideState,
    /// The states the ride may be in.
    pub from: &'a [RideState],
    /// When set, only the ride's assigned driver (holding its fencing token) may step.
    pub driver: Option<&'a str>,
    /// Recorded in the transition.
    pub by: Option<&'a str>,
}

/// What a step did besides changing the state.
#[derive(Debug, Clone, PartialEq)]
pub struct Stepped {
    pub ride: RideDoc,
    /// An outstanding offer that the step withdrew.
    pub withdrawn: Option<OfferRecord>,
}

/// The shared store failed (Redis unreachable or slow): retry later.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the dispatch store is unavailable: {0}")]
pub struct BookError(pub String);

impl From<BookError> for DispatchError {
    fn from(e: BookError) -> Self {
        DispatchError::Unavailable(e.0)
    }
}

/// The book of one process: in memory, or shared through Redis.
pub enum Book {
    Memory(MemoryBook),
    Redis(RedisBook),
}

macro_rules! delegate {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            Book::Memory($b) => Ok($call),
            Book::Redis($b) => $call.await,
        }
    };
}

impl Book {
    /// What an earlier use of `idem` says, if it was used (read only).
    pub async fn idem_seen(&self, idem: &IdemKey<'_>) -> Result<Option<IdemSeen>, BookError> {
        delegate!(self, b => b.idem_seen(idem))
    }

    /// Marks the key's request answered: from now on it replays its ride.
    pub async fn idem_finish(&self, idem: &IdemKey<'_>) -> Result<(), BookError> {
        delegate!(self, b => b.idem_finish(idem))
    }

    /// Stores a new ride under its idempotency key, in one step: unless the key was used
    /// before or the rider already has an open ride. `answered`: the request's answer is
    /// the ride as stored (the key replays at once).
    pub async fn create(
        &self,
        ride: &RideDoc,
        dispatch_at: i64,
        idem: &IdemKey<'_>,
        answered: bool,
    ) -> Result<Created, BookError> {
        delegate!(self, b => b.create(ride, dispatch_at, idem, answered))
    }

    pub async fn ride(&self, id: &str) -> Result<Option<RideDoc>, BookError> {
        delegate!(self, b => b.ride(id))
    }

    /// Offers the ride to the first free candidate, if it still wants an offer. With
    /// `answers`, also marks that request key answered (the first offer of a request).
    pub async fn claim(
        &self,
        ride: &str,
        radius: usize,
        candidates: &[Candidate],
        max_attempts: u32,
        offer: (&str, i64),
        answers: Option<&IdemKey<'_>>,
    ) -> Result<Claim, BookError> {
        delegate!(self, b => b.claim(ride, radius, candidates, max_attempts, offer, answers))
    }

    /// Ends an offer by decline (only its driver, when `driver` is set) or timeout (only
    /// once its deadline passed, and by one replica). Returns the offer.
    pub async fn close_offer(
        &self,
        offer: &str,
        driver: Option<&str>,
        how: OfferEnd,
        now: i64,
    ) -> Result<Result<OfferRecord, DispatchError>, BookError> {
        delegate!(self, b => b.close_offer(offer, driver, how, now))
    }

    pub async fn accept(
        &self,
        offer: &str,
        driver: &str,
        now: i64,
    ) -> Result<Result<RideDoc, DispatchError>, BookError> {
        delegate!(self, b => b.accept(offer, driver, now))
    }

    pub async fn step(
        &self,
        ride: &str,
        step: Step<'_>,
        now: i64,
    ) -> Result<Result<Stepped, DispatchError>, BookError> {
        delegate!(self, b => b.step(ride, step, now))
    }

    /// Sets the ride's tip (rider's own open or completed ride).
    pub async fn set_tip(
        &self,
        ride: &str,
        tip_minor: u64,
    ) -> Result<Result<RideDoc, DispatchError>, BookError> {
        delegate!(self, b => b.set_tip(ride, tip_minor))
    }

    pub async fn offer(&self, offer: &str) -> Result<Option<OfferRecord>, BookError> {
        delegate!(self, b => b.offer(offer))
    }

    pub async fn offer_of_driver(&self, driver: &str) -> Result<Option<OfferRecord>, BookError> {
        delegate!(self, b => b.offer_of_driver(driver))
    }

    /// Offers whose deadline has passed.
    pub async fn expired_offers(&self, now: i64) -> Result<Vec<String>, BookError> {
        delegate!(self, b => b.expired_offers(now))
    }

    /// Moves scheduled rides whose dispatch time has come to `dispatching`; returns them.
    pub async fn start_due(&self, now: i64) -> Result<Vec<String>, BookError> {
        delegate!(self, b => b.start_due(now))
    }

    /// Dispatching rides without an offer, with the time since when.
    pub async fn idle(&self) -> Result<Vec<(String, i64)>, BookError> {
        delegate!(self, b => b.idle())
    }

    /// Rides not in a terminal state.
    pub async fn open_count(&self) -> Result<u64, BookError> {
        delegate!(self, b => b.open_count())
    }
}

#[derive(Default)]
struct Memory {
    rides: HashMap<String, RideDoc>,
    offers: HashMap<String, OfferRecord>,
    open_by_rider: HashMap<String, String>,
    offer_by_driver: HashMap<String, String>,
    ride_by_driver: HashMap<String, String>,
    tokens: HashMap<String, u64>,
    idempotency: HashMap<(String, String), IdemRecord>,
    /// Keys by expiry time.
    idem_expiry: BTreeSet<(i64, (String, String))>,
    deadlines: BTreeSet<(i64, String)>,
    due: BTreeSet<(i64, String)>,
    idle: HashMap<String, i64>,
    open: usize,
    /// Ended rides by end time, forgotten after [`RETENTION_MS`].
    ended: std::collections::VecDeque<(i64, String)>,
}

/// A used key: its body, the ride it made, since when it is in progress (unanswered), and
/// when it expires.
struct IdemRecord {
    body: String,
    ride: String,
    pending_since: Option<i64>,
    expires: i64,
}

impl IdemRecord {
    fn seen(&self, body: &str, now: i64) -> IdemSeen {
        if self.body != body {
            IdemSeen::Reused
        } else if self
            .pending_since
            .is_some_and(|at| now - at < IDEM_PENDING_MS)
        {
            IdemSeen::InProgress
        } else {
            IdemSeen::Replay(self.ride.clone())
        }
    }
}

/// How long the embedded book keeps ended rides readable (Redis expires them alike).
pub const RETENTION_MS: i64 = 7 * 86_400_000;

/// The embedded book: everything behind one mutex; the index's driver status
/// (available → offered → busy → available, by compare-and-set) is the driver lock, so
/// other writers of the index (a driver going offline) cannot race dispatch.
pub struct MemoryBook {
    index: Arc<Index>,
    state: Mutex<Memory>,
}

fn set_status(index: &Index, driver: &str, from: Status, to: Status) -> bool {
    EntryId::parse(driver)
        .ok()
        .is_some_and(|id| index.compare_and_set_status(&id, &[from], to, None).is_ok())
}

impl Memory {
    /// Marks a request key answered: it replays its ride from now on.
    fn answered(&mut self, idem: &IdemKey<'_>) {
        if let Some(r) = self
            .idempotency
            .get_mut(&(idem.rider.to_owned(), idem.key.to_owned()))
        {
            r.pending_since = None;
        }
    }

    fn remove_offer(&mut self, index: &Index, id: &str) -> Option<OfferRecord> {
        let offer = self.offers.remove(id)?;
        self.deadlines.remove(&(offer.expires_at_ms, id.to_owned()));
        if self.offer_by_driver.get(&offer.driver).map(String::as_str) == Some(id) {
            self.offer_by_driver.remove(&offer.driver);
        }
        set_status(index, &offer.driver, Status::Offered, Status::Available);
        Some(offer)
    }
}

impl MemoryBook {
    pub fn new(index: Arc<Index>) -> Self {
        MemoryBook {
            index,
            state: Mutex::new(Memory::default()),
        }
    }

    fn idem_seen(&self, idem: &IdemKey<'_>) -> Option<IdemSeen> {
        let now = crate::dispatch::now_ms();
        let m = self.state.lock();
        m.idempotency
            .get(&(idem.rider.to_owned(), idem.key.to_owned()))
            .filter(|r| r.expires > now)
            .map(|r| r.seen(idem.body, now))
    }

    fn idem_finish(&self, idem: &IdemKey<'_>) {
        self.state.lock().answered(idem);
    }

    fn create(
        &self,
        ride: &RideDoc,
        dispatch_at: i64,
        idem: &IdemKey<'_>,
        answered: bool,
    ) -> Created {
        let now = crate::dispatch::now_ms();
        let mut m = self.state.lock();
        while m.idem_expiry.first().is_some_and(|(at, _)| *at <= now) {
            let (_, k) = m.idem_expiry.pop_first().expect("checked");
            m.idempotency.remove(&k);
        }
        let k = (idem.rider.to_owned(), idem.key.to_owned());
        if let Some(r) = m.idempotency.get(&k) {
            return Created::Seen(r.seen(idem.body, now));
        }
        if let Some(open) = m.open_by_rider.get(&ride.base.rider) {
            return Created::Open(open.clone());
        }
        let id = ride.base.id.clone();
        let expires = now + idem.ttl_s as i64 * 1000;
        m.idempotency.insert(
            k.clone(),
            IdemRecord {
                body: idem.body.to_owned(),
                ride: id.clone(),
                pending_since: (!answered).then_some(now),
                expires,
            },
        );
        m.idem_expiry.insert((expires, k));
        m.open_by_rider.insert(ride.base.rider.clone(), id.clone());
        if ride.state == RideState::Dispatching {
            m.idle.insert(id.clone(), ride.since_ms);
        } else {
            m.due.insert((dispatch_at, id.clone()));
        }
        m.rides.insert(id, ride.clone());
        m.open += 1;
        Created::Made
    }

    fn ride(&self, id: &str) -> Option<RideDoc> {
        self.state.lock().rides.get(id).cloned()
    }

    fn claim(
        &self,
        ride_id: &str,
        radius: usize,
        candidates: &[Candidate],
        max_attempts: u32,
        (offer_id, expires_at_ms): (&str, i64),
        answers: Option<&IdemKey<'_>>,
    ) -> Claim {
        let mut m = self.state.lock();
        if let Some(idem) = answers {
            m.answered(idem);
        }
        let Some(ride) = m.rides.get(ride_id) else {
            return Claim::NotWanted;
        };
        if ride.state != RideState::Dispatching
            || ride.offer.is_some()
            || ride.attempts >= max_attempts
        {
            return Claim::NotWanted;
        }
        let mut taken = Vec::new();
        for c in candidates {
            if ride.excluded.contains(&c.driver) {
                continue;
            }
            if !set_status(&self.index, &c.driver, Status::Available, Status::Offered) {
                taken.push(c.driver.clone());
                continue;
            }
            let token = {
                let t = m.tokens.entry(c.driver.clone()).or_insert(0);
                *t += 1;
                *t
            };
            let offer = OfferRecord {
                id: offer_id.to_owned(),
                ride: ride_id.to_owned(),
                driver: c.driver.clone(),
                token,
                distance_m: c.distance_m,
                eta_s: c.eta_s,
                expires_at_ms,
            };
            let ride = m.rides.get_mut(ride_id).expect("checked above");
            ride.offer = Some(offer_id.to_owned());
            ride.attempts += 1;
            ride.radius = radius;
            m.idle.remove(ride_id);
            m.offer_by_driver
                .insert(c.driver.clone(), offer_id.to_owned());
            m.deadlines.insert((expires_at_ms, offer_id.to_owned()));
            m.offers.insert(offer_id.to_owned(), offer.clone());
            return Claim::Offered(offer);
        }
        Claim::AllTaken(taken)
    }

    fn close_offer(
        &self,
        offer_id: &str,
        driver: Option<&str>,
        how: OfferEnd,
        now: i64,
    ) -> Result<OfferRecord, DispatchError> {
        let mut m = self.state.lock();
        let offer = m.offers.get(offer_id).ok_or(DispatchError::OfferGone)?;
        if driver.is_some_and(|d| d != offer.driver) {
            return Err(DispatchError::Forbidden);
        }
        if how == OfferEnd::TimedOut && offer.expires_at_ms > now {
            return Err(DispatchError::OfferGone);
        }
        let offer = m
            .remove_offer(&self.index, offer_id)
            .expect("checked above");
        if let Some(ride) = m.rides.get_mut(&offer.ride) {
            ride.excluded.insert(offer.driver.clone());
            if ride.offer.as_deref() == Some(offer_id) {
                ride.offer = None;
                if ride.state == RideState::Dispatching {
                    let id = ride.base.id.clone();
                    m.idle.insert(id, now);
                }
            }
        }
        Ok(offer)
    }

    fn accept(&self, offer_id: &str, driver: &str, now: i64) -> Result<RideDoc, DispatchError> {
        let mut m = self.state.lock();
        let offer = m.offers.get(offer_id).ok_or(DispatchError::OfferGone)?;
        if offer.driver != driver {
            return Err(DispatchError::Forbidden);
        }
        let offer = offer.clone();
        let ride = m
            .rides
            .get(&offer.ride)
            .ok_or_else(|| DispatchError::RideNotFound(offer.ride.clone()))?;
        if ride.state != RideState::Dispatching || ride.offer.as_deref() != Some(offer_id) {
            return Err(DispatchError::OfferGone);
        }
        if m.tokens.get(driver) != Some(&offer.token)
            || !set_status(&self.index, driver, Status::Offered, Status::Busy)
        {
            return Err(DispatchError::DriverUnavailable);
        }
        m.offers.remove(offer_id);
        m.deadlines
            .remove(&(offer.expires_at_ms, offer_id.to_owned()));
        m.offer_by_driver.remove(driver);
        m.ride_by_driver
            .insert(driver.to_owned(), offer.ride.clone());
        let ride = m.rides.get_mut(&offer.ride).expect("checked above");
        ride.offer = None;
        ride.driver = Some(driver.to_owned());
        ride.token = Some(offer.token);
        ride.pickup_eta_s = Some(offer.eta_s);
        ride.to(RideState::Accepted, now, Some(driver));
        Ok(ride.clone())
    }

    fn step(&self, ride_id: &str, step: Step<'_>, now: i64) -> Result<Stepped, DispatchError> {
        let mut m = self.state.lock();
        let ride = m
            .rides
            .get(ride_id)
            .ok_or_else(|| DispatchError::RideNotFound(ride_id.to_owned()))?;
        if let Some(d) = step.driver {
            let holds = ride.driver.as_deref() == Some(d)
                && m.ride_by_driver.get(d).map(String::as_str) == Some(ride_id);
            if !holds {
                return Err(DispatchError::Forbidden);
            }
        }
        if !step.from.contains(&ride.state)
            || (step.to == RideState::NoDriverFound && ride.offer.is_some())
        {
            return Err(DispatchError::WrongState(ride.state.name(), step.to.name()));
        }
        let withdrawn = ride
            .offer
            .clone()
            .and_then(|o| m.remove_offer(&self.index, &o));
        let ride = m.rides.get_mut(ride_id).expect("checked above");
        ride.offer = None;
        ride.to(step.to, now, step.by);
        let ride = ride.clone();
        if step.to.is_terminal() {
            if let Some(d) = &ride.driver {
                if m.ride_by_driver.get(d).map(String::as_str) == Some(ride_id) {
                    m.ride_by_driver.remove(d);
                    set_status(&self.index, d, Status::Busy, Status::Available);
                }
            }
            if m.open_by_rider.get(&ride.base.rider).map(String::as_str) == Some(ride_id) {
                m.open_by_rider.remove(&ride.base.rider);
            }
            m.idle.remove(ride_id);
            m.due.retain(|(_, id)| id != ride_id);
            m.open -= 1;
            m.ended.push_back((now, ride_id.to_owned()));
        }
        Ok(Stepped { ride, withdrawn })
    }

    fn set_tip(&self, ride_id: &str, tip_minor: u64) -> Result<RideDoc, DispatchError> {
        let mut m = self.state.lock();
        let ride = m
            .rides
            .get_mut(ride_id)
            .ok_or_else(|| DispatchError::RideNotFound(ride_id.to_owned()))?;
        if matches!(ride.state, RideState::Cancelled | RideState::NoDriverFound) {
            return Err(DispatchError::WrongState(
                ride.state.name(),
                "not cancelled",
            ));
        }
        if tip_minor < ride.tip_minor {
            return Err(DispatchError::TipLowered(ride.tip_minor));
        }
        ride.tip_minor = tip_minor;
        Ok(ride.clone())
    }

    fn offer(&self, offer: &str) -> Option<OfferRecord> {
        self.state.lock().offers.get(offer).cloned()
    }

    fn offer_of_driver(&self, driver: &str) -> Option<OfferRecord> {
        let m = self.state.lock();
        m.offer_by_driver
            .get(driver)
            .and_then(|o| m.offers.get(o))
            .cloned()
    }

    fn expired_offers(&self, now: i64) -> Vec<String> {
        let m = self.state.lock();
        m.deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| id.clone())
            .collect()
    }

    fn start_due(&self, now: i64) -> Vec<String> {
        let mut m = self.state.lock();
        let mut started = Vec::new();
        while let Some((at, id)) = m.due.first().cloned() {
            if at > now {
                break;
            }
            m.due.pop_first();
            if let Some(r) = m.rides.get_mut(&id) {
                if r.state == RideState::Requested {
                    r.to(RideState::Dispatching, now, None);
                    r.since_ms = now;
                    m.idle.insert(id.clone(), now);
                    started.push(id);
                }
            }
        }
        started
    }

    fn idle(&self) -> Vec<(String, i64)> {
        let m = self.state.lock();
        m.idle.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn open_count(&self) -> u64 {
        self.state.lock().open as u64
    }

    /// Forgets rides that ended more than `retention_ms` before `now`; returns how many.
    pub fn forget_ended(&self, now: i64, retention_ms: i64) -> usize {
        let mut m = self.state.lock();
        let mut n = 0;
        while m
            .ended
            .front()
            .is_some_and(|(at, _)| now - *at > retention_ms)
        {
            if let Some((_, id)) = m.ended.pop_front() {
                m.rides.remove(&id);
                n += 1;
            }
        }
        n
    }

    /// Every driver's active ride and outstanding offer (for invariant checks).
    pub fn assignments(&self) -> (HashMap<String, String>, HashMap<String, String>) {
        let m = self.state.lock();
        (m.ride_by_driver.clone(), m.offer_by_driver.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ride::RideRequest;
    use geomatch_index::{IndexConfig, Position};

    fn base(id: &str, rider: &str) -> RideBase {
        RideBase {
            id: id.into(),
            rider: rider.into(),
            request: RideRequest {
                pickup: Position::new(37.5, 127.0).unwrap(),
                dropoff: Position::new(37.6, 127.0).unwrap(),
                product: "standard".into(),
                seats: None,
                quote_id: None,
                preferred_driver_id: None,
                scheduled_at: None,
                tip_minor: None,
            },
            class: 0,
            fare: None,
        }
    }

    fn key<'a>(rider: &'a str, key: &'a str, body: &'a str, ttl_s: u64) -> IdemKey<'a> {
        IdemKey {
            rider,
            key,
            body,
            ttl_s,
        }
    }

    #[test]
    fn an_idempotency_key_is_in_progress_until_answered_then_replays_and_expires() {
        let book = MemoryBook::new(Arc::new(Index::new(IndexConfig::default()).unwrap()));
        let doc = |id| RideDoc::new(base(id, "u1"), 0, true);
        let k = key("u1", "k", "{\"a\":1}", 3_600);
        assert_eq!(book.create(&doc("r1"), 0, &k, false), Created::Made);
        assert_eq!(
            book.create(&doc("r2"), 0, &k, false),
            Created::Seen(IdemSeen::InProgress)
        );
        assert_eq!(book.idem_seen(&k), Some(IdemSeen::InProgress));
        book.idem_finish(&k);
        assert_eq!(
            book.create(&doc("r2"), 0, &k, false),
            Created::Seen(IdemSeen::Replay("r1".into()))
        );
        let other = key("u1", "k", "{\"a\":2}", 3_600);
        assert_eq!(book.idem_seen(&other), Some(IdemSeen::Reused));
        assert_eq!(book.idem_seen(&key("u2", "k", "{\"a\":1}", 3_600)), None);
        // Another key of the same rider meets the open ride.
        let k2 = key("u1", "k2", "{}", 0);
        assert_eq!(
            book.create(&doc("r3"), 0, &k2, true),
            Created::Open("r1".into())
        );

        // A key past its TTL is forgotten: its rider's next ride may reuse it.
        let brief = key("u3", "k", "{}", 0);
        let doc3 = |id| RideDoc::new(base(id, "u3"), 0, true);
        assert_eq!(book.create(&doc3("r4"), 0, &brief, true), Created::Made);
        assert_eq!(book.idem_seen(&brief), None);
        let cancel = Step {
            to: RideState::Cancelled,
            from: &[RideState::Dispatching],
            driver: None,
            by: None,
        };
        book.step("r4", cancel, 1).unwrap();
        assert_eq!(book.create(&doc3("r5"), 0, &brief, true), Created::Made);
        assert_eq!(
            book.state.lock().idem_expiry.len(),
            2,
            "r4's key left the queue"
        );
    }

    #[test]
    fn ended_rides_are_forgotten_after_the_retention_and_open_ones_never() {
        let book = MemoryBook::new(Arc::new(Index::new(IndexConfig::default()).unwrap()));
        for (id, rider) in [("r1", "u1"), ("r2", "u2")] {
            let idem = key(rider, "k", "{}", 60);
            let made = book.create(&RideDoc::new(base(id, rider), 0, true), 0, &idem, true);
            assert_eq!(made, Created::Made);
        }
        let cancel = Step {
            to: RideState::Cancelled,
            from: &[RideState::Dispatching],
            driver: None,
            by: None,
        };
        book.step("r1", cancel, 1_000).unwrap();
        assert_eq!(book.forget_ended(1_000 + RETENTION_MS, RETENTION_MS), 0);
        assert_eq!(book.forget_ended(1_001 + RETENTION_MS, RETENTION_MS), 1);
        assert!(book.ride("r1").is_none());
        assert!(book.ride("r2").is_some(), "an open ride stays");
        assert_eq!(book.open_count(), 1);
    }
}
