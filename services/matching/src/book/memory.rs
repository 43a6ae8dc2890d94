//! The embedded book: everything behind one mutex; the index's driver status (available →
//! offered → busy → available, by compare-and-set) is the driver lock, so other writers
//! of the index (a driver going offline) cannot race dispatch.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use geomatch_common::ports::{Engagement, PortFuture};
use geomatch_common::redis::RedisError;
use geomatch_index::{EntryId, Index, Status};
use parking_lot::Mutex;

use super::model::{
    Candidate, Claim, Created, IdemKey, IdemSeen, NewRide, OfferEnd, OfferRecord, Offering,
    RideDoc, Step, Stepped, IDEM_PENDING_MS,
};
use crate::ride::{DispatchError, DriverId, OfferId, RideId, RideState};

/// A rider's key: (rider, key).
type KeyOf = (String, String);

#[derive(Default)]
struct Memory {
    rides: HashMap<RideId, RideDoc>,
    offers: HashMap<OfferId, OfferRecord>,
    open_by_rider: HashMap<String, RideId>,
    offer_by_driver: HashMap<DriverId, OfferId>,
    ride_by_driver: HashMap<DriverId, RideId>,
    tokens: HashMap<DriverId, u64>,
    idempotency: HashMap<KeyOf, IdemRecord>,
    /// Keys by expiry time.
    idem_expiry: BTreeSet<(i64, KeyOf)>,
    deadlines: BTreeSet<(i64, OfferId)>,
    due: BTreeSet<(i64, RideId)>,
    idle: HashMap<RideId, i64>,
    open: usize,
    /// Ended rides by end time, forgotten after the retention.
    ended: VecDeque<(i64, RideId)>,
}

/// A used key: its body, the ride it made, since when it is in progress (unanswered), and
/// when it expires.
struct IdemRecord {
    body: String,
    ride: RideId,
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

fn key_of(idem: &IdemKey<'_>) -> KeyOf {
    (idem.rider.to_owned(), idem.key.to_owned())
}

/// The embedded book; see the module documentation.
pub(crate) struct MemoryBook {
    index: Arc<Index>,
    state: Mutex<Memory>,
}

fn set_status(index: &Index, driver: &DriverId, from: Status, to: Status) -> bool {
    EntryId::parse(driver.as_str())
        .ok()
        .is_some_and(|id| index.compare_and_set_status(&id, &[from], to, None).is_ok())
}

impl Memory {
    /// Marks a request key answered: it replays its ride from now on.
    fn answered(&mut self, idem: &IdemKey<'_>) {
        if let Some(r) = self.idempotency.get_mut(&key_of(idem)) {
            r.pending_since = None;
        }
    }

    fn remove_offer(&mut self, index: &Index, id: &OfferId) -> Option<OfferRecord> {
        let offer = self.offers.remove(id)?;
        self.deadlines.remove(&(offer.expires_at_ms, id.clone()));
        if self.offer_by_driver.get(&offer.driver) == Some(id) {
            self.offer_by_driver.remove(&offer.driver);
        }
        set_status(index, &offer.driver, Status::Offered, Status::Available);
        Some(offer)
    }

    /// Locks the first free candidate not excluded from `ride` for a new offer.
    fn lock_first(
        &mut self,
        index: &Index,
        ride: &RideDoc,
        candidates: &[Candidate],
    ) -> Result<(Candidate, u64), Vec<DriverId>> {
        let mut taken = Vec::new();
        for c in candidates {
            if ride.excluded.contains(&c.driver) {
                continue;
            }
            if !set_status(index, &c.driver, Status::Available, Status::Offered) {
                taken.push(c.driver.clone());
                continue;
            }
            let token = self.tokens.entry(c.driver.clone()).or_insert(0);
            *token += 1;
            return Ok((c.clone(), *token));
        }
        Err(taken)
    }
}

impl MemoryBook {
    pub(crate) fn new(index: Arc<Index>) -> Self {
        MemoryBook {
            index,
            state: Mutex::new(Memory::default()),
        }
    }

    pub(super) fn idem_seen(&self, idem: &IdemKey<'_>, now: i64) -> Option<IdemSeen> {
        let m = self.state.lock();
        m.idempotency
            .get(&key_of(idem))
            .filter(|r| r.expires > now)
            .map(|r| r.seen(idem.body, now))
    }

    pub(super) fn idem_finish(&self, idem: &IdemKey<'_>) {
        self.state.lock().answered(idem);
    }

    pub(super) fn create(&self, new: &NewRide<'_>, now: i64) -> Created {
        let NewRide {
            ride,
            dispatch_at,
            idem,
            answered,
        } = *new;
        let mut m = self.state.lock();
        while let Some((at, _)) = m.idem_expiry.first() {
            if *at > now {
                break;
            }
            if let Some((_, k)) = m.idem_expiry.pop_first() {
                m.idempotency.remove(&k);
            }
        }
        let k = key_of(idem);
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

    pub(super) fn ride(&self, id: &RideId) -> Option<RideDoc> {
        self.state.lock().rides.get(id).cloned()
    }

    pub(super) fn claim(&self, o: &Offering<'_>) -> Claim {
        let mut m = self.state.lock();
        if let Some(idem) = o.answers {
            m.answered(idem);
        }
        let Some(ride) = m.rides.get(o.ride) else {
            return Claim::NotWanted;
        };
        if ride.state != RideState::Dispatching
            || ride.offer.is_some()
            || ride.attempts >= o.max_attempts
        {
            return Claim::NotWanted;
        }
        let ride = ride.clone();
        let (c, token) = match m.lock_first(&self.index, &ride, o.candidates) {
            Ok(locked) => locked,
            Err(taken) => return Claim::AllTaken(taken),
        };
        let offer = OfferRecord {
            id: o.offer.clone(),
            ride: o.ride.clone(),
            driver: c.driver,
            token,
            distance_m: c.distance_m,
            eta_s: c.eta_s,
            expires_at_ms: o.expires_at_ms,
        };
        if let Some(ride) = m.rides.get_mut(o.ride) {
            ride.offer = Some(o.offer.clone());
            ride.attempts += 1;
            ride.radius = o.radius;
        }
        m.idle.remove(o.ride);
        m.offer_by_driver
            .insert(offer.driver.clone(), o.offer.clone());
        m.deadlines.insert((o.expires_at_ms, o.offer.clone()));
        m.offers.insert(o.offer.clone(), offer.clone());
        Claim::Offered(offer)
    }

    pub(super) fn close_offer(
        &self,
        offer_id: &OfferId,
        driver: Option<&DriverId>,
        how: OfferEnd,
        now: i64,
    ) -> Result<OfferRecord, DispatchError> {
        let mut m = self.state.lock();
        let offer = m.offers.get(offer_id).ok_or(DispatchError::OfferGone)?;
        if driver.is_some_and(|d| *d != offer.driver) {
            return Err(DispatchError::Forbidden);
        }
        if how == OfferEnd::TimedOut && offer.expires_at_ms > now {
            return Err(DispatchError::OfferGone);
        }
        let offer = m
            .remove_offer(&self.index, offer_id)
            .ok_or(DispatchError::OfferGone)?;
        let mut idle = None;
        if let Some(ride) = m.rides.get_mut(&offer.ride) {
            ride.excluded.insert(offer.driver.clone());
            if ride.offer.as_ref() == Some(offer_id) {
                ride.offer = None;
                if ride.state == RideState::Dispatching {
                    idle = Some(ride.base.id.clone());
                }
            }
        }
        if let Some(id) = idle {
            m.idle.insert(id, now);
        }
        Ok(offer)
    }

    pub(super) fn accept(
        &self,
        offer_id: &OfferId,
        driver: &DriverId,
        now: i64,
    ) -> Result<RideDoc, DispatchError> {
        let mut m = self.state.lock();
        let offer = m.offers.get(offer_id).ok_or(DispatchError::OfferGone)?;
        if offer.driver != *driver {
            return Err(DispatchError::Forbidden);
        }
        if offer.expires_at_ms <= now {
            return Err(DispatchError::OfferGone);
        }
        let offer = offer.clone();
        let ride = m
            .rides
            .get(&offer.ride)
            .ok_or_else(|| DispatchError::RideNotFound(offer.ride.clone()))?;
        if ride.state != RideState::Dispatching || ride.offer.as_ref() != Some(offer_id) {
            return Err(DispatchError::OfferGone);
        }
        if m.tokens.get(driver) != Some(&offer.token)
            || !set_status(&self.index, driver, Status::Offered, Status::Busy)
        {
            return Err(DispatchError::DriverUnavailable);
        }
        m.offers.remove(offer_id);
        m.deadlines.remove(&(offer.expires_at_ms, offer_id.clone()));
        m.offer_by_driver.remove(driver);
        m.ride_by_driver.insert(driver.clone(), offer.ride.clone());
        let ride = m
            .rides
            .get_mut(&offer.ride)
            .ok_or_else(|| DispatchError::RideNotFound(offer.ride.clone()))?;
        ride.offer = None;
        ride.driver = Some(driver.clone());
        ride.token = Some(offer.token);
        ride.pickup_eta_s = Some(offer.eta_s);
        ride.to(RideState::Accepted, now, Some(driver.as_str()));
        Ok(ride.clone())
    }

    pub(super) fn step(
        &self,
        ride_id: &RideId,
        step: Step<'_>,
        now: i64,
    ) -> Result<Stepped, DispatchError> {
        let mut m = self.state.lock();
        let not_found = || DispatchError::RideNotFound(ride_id.clone());
        let ride = m.rides.get(ride_id).ok_or_else(not_found)?;
        if let Some(d) = step.driver {
            let holds = ride.driver.as_ref() == Some(d) && m.ride_by_driver.get(d) == Some(ride_id);
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
        let ride = m.rides.get_mut(ride_id).ok_or_else(not_found)?;
        ride.offer = None;
        ride.to(step.to, now, step.by);
        let ride = ride.clone();
        if step.to.is_terminal() {
            if let Some(d) = &ride.driver {
                if m.ride_by_driver.get(d) == Some(ride_id) {
                    m.ride_by_driver.remove(d);
                    set_status(&self.index, d, Status::Busy, Status::Available);
                }
            }
            if m.open_by_rider.get(&ride.base.rider) == Some(ride_id) {
                m.open_by_rider.remove(&ride.base.rider);
            }
            m.idle.remove(ride_id);
            m.due.retain(|(_, id)| id != ride_id);
            m.open -= 1;
            m.ended.push_back((now, ride_id.clone()));
        }
        Ok(Stepped { ride, withdrawn })
    }

    pub(super) fn set_tip(
        &self,
        ride_id: &RideId,
        tip_minor: u64,
    ) -> Result<RideDoc, DispatchError> {
        let mut m = self.state.lock();
        let ride = m
            .rides
            .get_mut(ride_id)
            .ok_or_else(|| DispatchError::RideNotFound(ride_id.clone()))?;
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

    pub(super) fn offer(&self, offer: &OfferId) -> Option<OfferRecord> {
        self.state.lock().offers.get(offer).cloned()
    }

    pub(super) fn offer_of_driver(&self, driver: &DriverId) -> Option<OfferRecord> {
        let m = self.state.lock();
        m.offer_by_driver
            .get(driver)
            .and_then(|o| m.offers.get(o))
            .cloned()
    }

    pub(super) fn expired_offers(&self, now: i64) -> Vec<OfferId> {
        let m = self.state.lock();
        m.deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| id.clone())
            .collect()
    }

    pub(super) fn start_due(&self, now: i64) -> Vec<RideId> {
        let mut m = self.state.lock();
        let mut started = Vec::new();
        while let Some((at, _)) = m.due.first() {
            if *at > now {
                break;
            }
            let Some((_, id)) = m.due.pop_first() else {
                break;
            };
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

    pub(super) fn idle(&self) -> Vec<(RideId, i64)> {
        let m = self.state.lock();
        m.idle.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    pub(super) fn open_count(&self) -> u64 {
        self.state.lock().open as u64
    }

    /// Forgets rides that ended more than `retention_ms` before `now`; returns how many.
    pub(super) fn forget_ended(&self, now: i64, retention_ms: i64) -> usize {
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

    /// How many idempotency keys wait for their expiry (tests).
    #[cfg(test)]
    fn keys_held(&self) -> usize {
        self.state.lock().idem_expiry.len()
    }
}

/// Embedded mode's answer to "does dispatch hold this driver": nothing beyond the index,
/// whose status is the lock (offered, busy) and which ingest updates by compare-and-set.
pub(super) struct IndexIsTheLock;

impl Engagement for IndexIsTheLock {
    fn engagement<'a>(
        &'a self,
        _driver: &'a str,
    ) -> PortFuture<'a, Result<Option<Status>, RedisError>> {
        Box::pin(async { Ok(None) })
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{RideBase, RETENTION_MS};
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

    fn create(book: &MemoryBook, id: &str, rider: &str, idem: &IdemKey<'_>, now: i64) -> Created {
        let ride = RideDoc::new(base(id, rider), now, true);
        let new = NewRide {
            ride: &ride,
            dispatch_at: now,
            idem,
            answered: true,
        };
        book.create(&new, now)
    }

    const CANCEL: Step<'static> = Step {
        to: RideState::Cancelled,
        from: &[RideState::Dispatching],
        driver: None,
        by: None,
    };

    #[test]
    fn an_expired_key_leaves_the_expiry_queue_when_the_next_ride_is_made() {
        let book = MemoryBook::new(Arc::new(Index::new(IndexConfig::default()).unwrap()));
        let brief = IdemKey {
            rider: "u3",
            key: "k",
            body: "{}",
            ttl_s: 1,
        };
        assert_eq!(create(&book, "r4", "u3", &brief, 0), Created::Made);
        book.step(&"r4".into(), CANCEL, 1).unwrap();
        assert_eq!(create(&book, "r5", "u3", &brief, 1_000), Created::Made);
        assert_eq!(book.keys_held(), 1, "r4's key left the queue");
    }

    #[test]
    fn ended_rides_are_forgotten_after_the_retention_and_open_ones_never() {
        let book = MemoryBook::new(Arc::new(Index::new(IndexConfig::default()).unwrap()));
        for (id, rider) in [("r1", "u1"), ("r2", "u2")] {
            let idem = IdemKey {
                rider,
                key: "k",
                body: "{}",
                ttl_s: 60,
            };
            assert_eq!(create(&book, id, rider, &idem, 0), Created::Made);
        }
        book.step(&"r1".into(), CANCEL, 1_000).unwrap();
        assert_eq!(book.forget_ended(1_000 + RETENTION_MS, RETENTION_MS), 0);
        assert_eq!(book.forget_ended(1_001 + RETENTION_MS, RETENTION_MS), 1);
        assert!(book.ride(&"r1".into()).is_none());
        assert!(book.ride(&"r2".into()).is_some(), "an open ride stays");
        assert_eq!(book.open_count(), 1);
    }
}
