//! Ride dispatch, independent of HTTP and of where its state lives: the offer cycle.
//!
//! The cycle: a ride in `dispatching` has at most one outstanding offer. Candidates are the
//! available drivers of the product near the pickup (expanding radii, cap at the last),
//! ranked by pickup ETA, excluding drivers who declined or timed out on this ride. The
//! [`Book`] offers the ride to the first of them that is still free, in one atomic step
//! that also re-checks that the ride still wants an offer; the offer lasts
//! `offer_timeout_s`; decline or timeout moves on; `max_attempts` offers or nobody at the
//! cap ends the ride as `no_driver_found`.
//!
//! Decisions (candidate search here, ranking and batch assignment in [`crate::assign`])
//! happen against this process's index; every state change is a book step, so the same
//! code runs embedded and across replicas. A sweep (every replica, a few times a second)
//! times offers out, starts scheduled rides and picks up rides left without an offer (a
//! replica that died mid-step, or every candidate briefly taken), so no ride is lost.
//! Time comes from the process's [`Clock`], read once per operation.

use std::sync::Arc;

use geomatch_common::clock::Clock;
use geomatch_common::config::MatchingSettings;
use geomatch_common::ports::{DriverPush, Trip, TripPricing};
use geomatch_eta::EtaModel;
use geomatch_index::{Filter, Index, Position};

use crate::assign::{self, Hints, ENGAGED_HINT_MS, KM_CHUNK};
use crate::book::{
    Book, Candidate, Claim, Created, IdemKey, IdemSeen, NewRide, OfferEnd, Offering, RideBase,
    RideDoc, Step,
};
use crate::metrics::MatchingMetrics;
use crate::ride::{
    DispatchError, DriverId, OfferId, OfferView, RideId, RideRequest, RideState, RideView,
};

/// What a ride request answered: a new ride (201) or the replay of an earlier one (201,
/// same body).
pub(crate) struct RideAnswer {
    pub(crate) ride: RideView,
    pub(crate) replayed: bool,
}

/// A driver seen on the "cars around you" map.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub(crate) struct NearbyDriver {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) driver_id: Option<DriverId>,
    pub(crate) lat: f64,
    pub(crate) lng: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) distance_m: Option<f64>,
    pub(crate) vehicle_class: String,
}

/// What the dispatcher is built from besides the process's deps.
pub(crate) struct Wiring {
    pub(crate) book: Book,
    pub(crate) metrics: MatchingMetrics,
    /// Quote verification, fares and demand signals (eta-pricing).
    pub(crate) pricing: Arc<dyn TripPricing>,
    /// Ranks candidates by pickup ETA (geomatch-eta's learned-speed model in production).
    pub(crate) eta: Arc<dyn EtaModel>,
    /// Where offers go as they are made: the drivers' live connections (embedded), or a
    /// publisher for whichever process holds them (Redis mode); none: drivers poll.
    pub(crate) push: Option<Arc<dyn DriverPush>>,
}

/// Ride dispatch. Shared as `Arc<Dispatcher>`: the sweep holds a handle.
pub(crate) struct Dispatcher {
    index: Arc<Index>,
    settings: MatchingSettings,
    classes: Vec<String>,
    book: Book,
    /// Drivers engaged elsewhere, ahead of the index (shared with the hint follower).
    hints: Arc<Hints>,
    push: Option<Arc<dyn DriverPush>>,
    metrics: MatchingMetrics,
    eta: Arc<dyn EtaModel>,
    pricing: Arc<dyn TripPricing>,
    clock: Clock,
}

/// A ride left without an offer this long is picked up by the sweep.
const IDLE_GRACE_MS: i64 = 1_000;
/// Searches per advance when every candidate turns out taken.
const CLAIM_ROUNDS: usize = 4;

impl Dispatcher {
    pub(crate) fn new(
        index: Arc<Index>,
        settings: MatchingSettings,
        classes: Vec<String>,
        clock: Clock,
        wiring: Wiring,
    ) -> Self {
        Dispatcher {
            index,
            settings,
            classes,
            book: wiring.book,
            hints: Arc::default(),
            push: wiring.push,
            metrics: wiring.metrics,
            eta: wiring.eta,
            pricing: wiring.pricing,
            clock,
        }
    }

    pub(crate) fn settings(&self) -> &MatchingSettings {
        &self.settings
    }

    /// The engagement hints, for the follower of other replicas' announcements.
    pub(crate) fn hints(&self) -> Arc<Hints> {
        self.hints.clone()
    }

    /// Pickup ETA of each candidate (from the driver to the pickup), whole seconds.
    fn pickup_etas(&self, pickup: &Position, drivers: &[Position], now: i64) -> Vec<u64> {
        drivers
            .iter()
            .map(|d| self.eta.eta(d, pickup, now).duration_s.round().max(0.0) as u64)
            .collect()
    }

    /// `POST /v1/rides`: creates a ride for `rider` under an idempotency key and starts
    /// dispatching it (or waits for its scheduled time).
    ///
    /// In Redis mode this is two round trips: the ride is stored together with its key
    /// (which refuses a reused key, a retry in progress and a second open ride in the
    /// same step), and the claim of the first offer marks the key answered.
    pub(crate) async fn request(
        &self,
        rider: &str,
        key: Option<&str>,
        req: RideRequest,
    ) -> Result<RideAnswer, DispatchError> {
        let key = key.ok_or(DispatchError::MissingKey)?;
        if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DispatchError::BadKey);
        }
        let body = serde_json::to_string(&req).map_err(|e| DispatchError::Query(e.to_string()))?;
        let idem = IdemKey {
            rider,
            key,
            body: &body,
            ttl_s: self.settings.idempotency_ttl_s,
        };
        let now = self.clock.now();
        let (doc, dispatch_at) = match self.new_ride(rider, req, now) {
            Ok(made) => made,
            Err(refused) => {
                // The key's first request may have been taken (say, before its quote
                // expired): its answer stands, and another body under it is refused.
                return match self.book.idem_seen(&idem, now).await? {
                    Some(seen) => self.earlier(seen).await,
                    None => Err(refused),
                };
            }
        };
        let answered = doc.state != RideState::Dispatching || self.batching();
        let new = NewRide {
            ride: &doc,
            dispatch_at,
            idem: &idem,
            answered,
        };
        match self.book.create(&new, now).await? {
            Created::Made => {}
            Created::Open(open) => return Err(DispatchError::RideOpen(open)),
            Created::Seen(seen) => return self.earlier(seen).await,
        }
        self.pricing.record_demand(&doc.base.request.pickup, now);
        if answered {
            return Ok(RideAnswer {
                ride: doc.view(),
                replayed: false,
            });
        }
        let id = doc.base.id.clone();
        // The ride as it stands after its first offer (or its end), without reading it
        // back: in Redis mode every read is a round trip.
        let after = self.advance_from(&id, Some(doc), now, Some(&idem)).await;
        // A claim that made an offer marked the key answered; any other outcome, here.
        if !matches!(&after, Ok(Some(r)) if r.offer.is_some()) {
            if let Err(e) = self.book.idem_finish(&idem).await {
                tracing::warn!(error = %e, "could not mark an idempotency key answered");
            }
        }
        let ride = match after? {
            Some(after) => after.view(),
            None => self.ride(&id).await?,
        };
        Ok(RideAnswer {
            ride,
            replayed: false,
        })
    }

    /// The answer to a request whose key was used before.
    async fn earlier(&self, seen: IdemSeen) -> Result<RideAnswer, DispatchError> {
        match seen {
            IdemSeen::Reused => Err(DispatchError::KeyReused),
            IdemSeen::InProgress => Err(DispatchError::InProgress),
            IdemSeen::Replay(ride) => Ok(RideAnswer {
                ride: self.ride(&ride).await?,
                replayed: true,
            }),
        }
    }

    /// Checks a request and prices it; the new ride and when to start dispatching it.
    fn new_ride(
        &self,
        rider: &str,
        req: RideRequest,
        now: i64,
    ) -> Result<(RideDoc, i64), DispatchError> {
        let class = self
            .classes
            .iter()
            .position(|c| *c == req.product)
            .ok_or_else(|| DispatchError::UnknownProduct(req.product.clone()))?
            as u8;
        if req.seats.is_some_and(|s| !(1..=16).contains(&s)) {
            return Err(DispatchError::Seats);
        }
        if req
            .tip_minor
            .is_some_and(|t| t > self.settings.max_tip_minor)
        {
            return Err(DispatchError::TipTooLarge(self.settings.max_tip_minor));
        }
        if let Some(at) = req.scheduled_at {
            let max_ahead = self.settings.max_schedule_days as i64 * 86_400_000;
            if at <= now || at > now + max_ahead {
                return Err(DispatchError::Schedule(self.settings.max_schedule_days));
            }
        }
        let trip = Trip {
            product: &req.product,
            pickup: &req.pickup,
            dropoff: &req.dropoff,
        };
        let fare = match &req.quote_id {
            Some(quote) => Some(
                self.pricing
                    .verify_quote_for_trip(quote, rider, &trip)
                    .map_err(DispatchError::Quote)?,
            ),
            None => self.pricing.price_trip(&trip, now),
        };
        let lead = self.settings.schedule_lead_s as i64 * 1000;
        let dispatch_at = req.scheduled_at.map_or(now, |at| at - lead);
        let base = RideBase {
            id: RideId::generate(),
            rider: rider.to_owned(),
            request: req,
            class,
            fare,
        };
        Ok((RideDoc::new(base, now, dispatch_at <= now), dispatch_at))
    }

    fn batching(&self) -> bool {
        self.settings.batch_window_ms > 0
    }

    /// Candidates for a ride: from its last radius outwards, the first radius with any
    /// free driver of the product, best first (see [`assign::rank`]). Returns the radius
    /// used; empty past the cap.
    fn candidates(&self, ride: &RideDoc, now: i64) -> (usize, Vec<Candidate>) {
        let req = &ride.base.request;
        let filter = Filter::available_drivers()
            .vehicle_class(ride.base.class)
            .min_seats(req.seats.unwrap_or(0));
        let free = self.hints.free_at(now);
        for radius in ride.radius..self.settings.radii_m.len() {
            let found = self.index.nearest_where(
                &req.pickup,
                self.settings.candidates,
                &filter,
                Some(self.settings.radii_m[radius]),
                |id| !ride.excluded.contains(id.as_str()) && free(id),
            );
            self.metrics.candidates.observe(found.len() as f64);
            if found.is_empty() {
                continue;
            }
            let positions: Vec<Position> = found.iter().map(|n| n.entry.position).collect();
            let etas = self.pickup_etas(&req.pickup, &positions, now);
            let mut ranked: Vec<Candidate> = found
                .into_iter()
                .zip(etas)
                .map(|(n, eta_s)| Candidate {
                    driver: DriverId::from(&n.entry.id),
                    distance_m: n.distance_m,
                    eta_s,
                })
                .collect();
            assign::rank(&mut ranked, req.preferred_driver_id.as_ref());
            return (radius, ranked);
        }
        (self.settings.radii_m.len(), Vec::new())
    }

    /// Makes the next offer of a dispatching ride that has none, or ends it.
    async fn advance(&self, ride_id: &RideId, now: i64) -> Result<(), DispatchError> {
        self.advance_from(ride_id, None, now, None)
            .await
            .map(|_| ())
    }

    /// [`Self::advance`] starting from `known` (the ride as just stored) instead of reading
    /// it. Returns the ride after this process's step when it knows it (an offer made,
    /// the ride ended, or nothing to do), `None` when another step intervened. The claims
    /// mark `answers` (the request being answered) answered.
    async fn advance_from(
        &self,
        ride_id: &RideId,
        mut known: Option<RideDoc>,
        now: i64,
        answers: Option<&IdemKey<'_>>,
    ) -> Result<Option<RideDoc>, DispatchError> {
        for _ in 0..CLAIM_ROUNDS {
            let ride = match known.take() {
                Some(ride) => ride,
                None => match self.book.ride(ride_id).await? {
                    Some(ride) => ride,
                    None => return Ok(None),
                },
            };
            // With batched matching the ride waits for the next batch instead.
            if ride.state != RideState::Dispatching || ride.offer.is_some() || self.batching() {
                return Ok(Some(ride));
            }
            let (radius, ranked) = if ride.attempts >= self.settings.max_attempts {
                (ride.radius, Vec::new())
            } else {
                self.candidates(&ride, now)
            };
            if ranked.is_empty() {
                return self.no_driver(ride_id, now).await;
            }
            match self.offer(&ride, radius, &ranked, now, answers).await? {
                Claim::Offered(offer) => {
                    let mut after = ride;
                    after.offer = Some(offer.id);
                    after.attempts += 1;
                    after.radius = radius;
                    return Ok(Some(after));
                }
                Claim::NotWanted => return Ok(None),
                Claim::AllTaken(_) => {}
            }
        }
        // Still every candidate taken: the sweep tries again shortly.
        Ok(None)
    }

    /// Offers `ride` to the first free of `ranked`. Drivers found taken are kept out of
    /// this replica's searches for a while (the caller searches again without them).
    async fn offer(
        &self,
        ride: &RideDoc,
        radius: usize,
        ranked: &[Candidate],
        now: i64,
        answers: Option<&IdemKey<'_>>,
    ) -> Result<Claim, DispatchError> {
        let timeout_ms = self.settings.offer_timeout_s as i64 * 1000;
        let offering = Offering {
            ride: &ride.base.id,
            radius,
            candidates: ranked,
            max_attempts: self.settings.max_attempts,
            offer: &OfferId::generate(),
            expires_at_ms: now + timeout_ms,
            answers,
        };
        let claim = self.book.claim(&offering).await?;
        match &claim {
            Claim::Offered(offer) => {
                if ride.attempts == 0 {
                    self.metrics
                        .to_first_offer
                        .observe((self.clock.now() - ride.since_ms).max(0) as f64 / 1000.0);
                }
                self.push(&offer.driver, &ride.offer_view(offer));
            }
            Claim::NotWanted => {}
            Claim::AllTaken(taken) => self.hints.taken(taken, now + ENGAGED_HINT_MS),
        }
        Ok(claim)
    }

    /// Sends an offer to its driver's live connection, if offers are pushed (best
    /// effort: a driver without the push still finds the offer by polling).
    fn push(&self, driver: &DriverId, offer: &OfferView) {
        if let Some(push) = &self.push {
            match serde_json::to_string(offer) {
                Ok(json) => {
                    push.push(driver.as_str(), &json);
                }
                Err(e) => tracing::warn!(error = %e, "could not encode an offer"),
            }
        }
    }

    /// Ends a dispatching ride without an offer as `no_driver_found`; the ride after it,
    /// when this call ended it.
    async fn no_driver(
        &self,
        ride_id: &RideId,
        now: i64,
    ) -> Result<Option<RideDoc>, DispatchError> {
        let step = Step {
            to: RideState::NoDriverFound,
            from: &[RideState::Dispatching],
            driver: None,
            by: None,
        };
        match self.book.step(ride_id, step, now).await? {
            Ok(done) => {
                self.ended(RideState::NoDriverFound);
                Ok(Some(done.ride))
            }
            Err(_) => Ok(None),
        }
    }

    fn ended(&self, state: RideState) {
        self.metrics.rides.with_label_values(&[state.name()]).inc();
    }

    /// Times out expired offers, starts scheduled rides whose lead time has come, and
    /// advances rides left without an offer. Every replica runs it; each step is claimed
    /// by one. Returns the number of rides it moved.
    pub(crate) async fn sweep(&self, now: i64) -> Result<usize, DispatchError> {
        let mut moved = 0;
        for offer in self.book.expired_offers(now).await? {
            if let Ok(o) = self
                .book
                .close_offer(&offer, None, OfferEnd::TimedOut, now)
                .await?
            {
                self.metrics.offers.with_label_values(&["timed_out"]).inc();
                self.advance(&o.ride, now).await?;
                moved += 1;
            }
        }
        for ride in self.book.start_due(now).await? {
            self.advance(&ride, now).await?;
            moved += 1;
        }
        if !self.batching() {
            for (ride, since) in self.book.idle().await? {
                if now - since >= IDLE_GRACE_MS {
                    self.advance(&ride, now).await?;
                    moved += 1;
                }
            }
        }
        self.metrics
            .open_rides
            .set(self.book.open_count().await? as i64);
        self.book.housekeep(now);
        self.hints.expire(now);
        Ok(moved)
    }

    /// One batch window, if this replica's turn: see [`Self::assign_batch`].
    pub(crate) async fn batch(&self, now: i64) -> Result<usize, DispatchError> {
        let window = self.settings.batch_window_ms.max(1);
        if self.book.batch_turn(window).await? {
            self.assign_batch(now).await
        } else {
            Ok(0)
        }
    }

    /// Batched matching: every `batch_window_ms`, assign all dispatching rides without an
    /// offer to available drivers at once, minimising the total pickup ETA (Kuhn–Munkres),
    /// then run the same offer cycle. Rides nobody can reach widen their radius, up to the
    /// cap, and end as `no_driver_found` past it or past `max_attempts`. Returns the
    /// number of offers made.
    async fn assign_batch(&self, now: i64) -> Result<usize, DispatchError> {
        let window = self.settings.batch_window_ms as i64;
        let mut rides = Vec::new();
        for (id, since) in self.book.idle().await? {
            let Some(ride) = self.book.ride(&id).await? else {
                continue;
            };
            // A request is held for one window, so that it can be paired with the others
            // of its window; a ride back from a decline or timeout goes at once.
            if ride.state != RideState::Dispatching
                || ride.offer.is_some()
                || (ride.attempts == 0 && now - since < window)
            {
                continue;
            }
            rides.push(ride);
        }
        // Near rides next to each other (H3 cells in index order are spatially local), so
        // that a large group of competing rides is split into compact chunks.
        rides.sort_by_key(|r| {
            u64::from(geomatch_index::cell_of(
                &r.base.request.pickup,
                geomatch_index::Resolution::Seven,
            ))
        });
        // Candidates of every pending ride, widening the radius of rides that have none.
        let mut rows: Vec<assign::Row> = Vec::new();
        let mut pending: Vec<(RideDoc, usize, Vec<Candidate>)> = Vec::new();
        for ride in rides {
            let (radius, found) = if ride.attempts >= self.settings.max_attempts {
                (ride.radius, Vec::new())
            } else {
                self.candidates(&ride, now)
            };
            if found.is_empty() {
                self.no_driver(&ride.base.id, now).await?;
                continue;
            }
            rows.push((
                ride.base.id.clone(),
                found
                    .iter()
                    .map(|c| (c.driver.clone(), c.eta_s as f64))
                    .collect(),
            ));
            pending.push((ride, radius, found));
        }
        if rows.is_empty() {
            return Ok(0);
        }
        let mut offers = 0;
        for (row, driver) in assign::assign_in_chunks(&rows, KM_CHUNK) {
            let (ride, radius, found) = &pending[row];
            let Some(c) = found.iter().find(|c| c.driver == driver) else {
                continue;
            };
            let claim = self
                .offer(ride, *radius, std::slice::from_ref(c), now, None)
                .await?;
            if matches!(claim, Claim::Offered(_)) {
                offers += 1;
            }
        }
        Ok(offers)
    }

    /// The driver's current offer.
    pub(crate) async fn current_offer(
        &self,
        driver: &DriverId,
    ) -> Result<OfferView, DispatchError> {
        let no_offer = || DispatchError::NoOffer(driver.clone());
        let offer = self
            .book
            .offer_of_driver(driver)
            .await?
            .ok_or_else(no_offer)?;
        let ride = self.book.ride(&offer.ride).await?.ok_or_else(no_offer)?;
        Ok(ride.offer_view(&offer))
    }

    /// The driver who holds `offer_id` (for authorisation).
    pub(crate) async fn offer_driver(&self, offer_id: &OfferId) -> Result<DriverId, DispatchError> {
        self.book
            .offer(offer_id)
            .await?
            .map(|o| o.driver)
            .ok_or(DispatchError::OfferGone)
    }

    /// Accepts the current offer of a still-open ride: atomic; a late or repeated accept
    /// is refused and changes nothing.
    pub(crate) async fn accept(
        &self,
        offer_id: &OfferId,
        driver: &DriverId,
    ) -> Result<RideView, DispatchError> {
        let now = self.clock.now();
        let ride = self.book.accept(offer_id, driver, now).await??;
        self.metrics.offers.with_label_values(&["accepted"]).inc();
        self.metrics
            .to_accept
            .observe((now - ride.since_ms).max(0) as f64 / 1000.0);
        Ok(ride.view())
    }

    /// Declines the current offer; dispatch moves on to the next candidate.
    pub(crate) async fn decline(
        &self,
        offer_id: &OfferId,
        driver: &DriverId,
    ) -> Result<(), DispatchError> {
        let now = self.clock.now();
        let offer = self
            .book
            .close_offer(offer_id, Some(driver), OfferEnd::Declined, now)
            .await??;
        self.metrics.offers.with_label_values(&["declined"]).inc();
        self.advance(&offer.ride, now).await
    }

    /// A trip step by the assigned driver (or, with no driver, a privileged caller):
    /// arrived, start, complete.
    pub(crate) async fn progress(
        &self,
        ride_id: &RideId,
        driver: Option<&DriverId>,
        to: RideState,
    ) -> Result<RideView, DispatchError> {
        let from = match to {
            RideState::DriverArrived => RideState::Accepted,
            RideState::InProgress => RideState::DriverArrived,
            RideState::Completed => RideState::InProgress,
            _ => return Err(DispatchError::WrongState("any", "a trip step")),
        };
        let step = Step {
            to,
            from: &[from],
            driver,
            by: driver.map(DriverId::as_str),
        };
        let done = self.book.step(ride_id, step, self.clock.now()).await??;
        if to.is_terminal() {
            self.ended(to);
        }
        Ok(done.ride.view())
    }

    /// Cancels an open ride (by its rider, its driver, or the platform). A ride on the
    /// road (in progress) can no longer be cancelled, only completed.
    pub(crate) async fn cancel(
        &self,
        ride_id: &RideId,
        by: &str,
    ) -> Result<RideView, DispatchError> {
        let step = Step {
            to: RideState::Cancelled,
            from: &[
                RideState::Requested,
                RideState::Dispatching,
                RideState::Accepted,
                RideState::DriverArrived,
            ],
            driver: None,
            by: Some(by),
        };
        let done = self.book.step(ride_id, step, self.clock.now()).await??;
        if done.withdrawn.is_some() {
            self.metrics.offers.with_label_values(&["withdrawn"]).inc();
        }
        self.ended(RideState::Cancelled);
        Ok(done.ride.view())
    }

    /// Sets the rider's tip on a ride (it may only go up): the driver's offer shows it.
    pub(crate) async fn tip(
        &self,
        ride_id: &RideId,
        tip_minor: u64,
    ) -> Result<RideView, DispatchError> {
        if tip_minor > self.settings.max_tip_minor {
            return Err(DispatchError::TipTooLarge(self.settings.max_tip_minor));
        }
        Ok(self.book.set_tip(ride_id, tip_minor).await??.view())
    }

    /// A ride (the caller checks who may see it).
    pub(crate) async fn ride(&self, ride_id: &RideId) -> Result<RideView, DispatchError> {
        self.book
            .ride(ride_id)
            .await?
            .map(|r| r.view())
            .ok_or_else(|| DispatchError::RideNotFound(ride_id.clone()))
    }

    /// Available drivers near a point. Riders get positions snapped to the centre of their
    /// H3 resolution-8 cell and no ids; privileged callers get ids, exact positions and
    /// distances.
    pub(crate) fn nearby(
        &self,
        at: &Position,
        k: usize,
        radius_m: f64,
        class: Option<&str>,
        exact: bool,
    ) -> Result<Vec<NearbyDriver>, DispatchError> {
        let mut filter = Filter::available_drivers();
        if let Some(c) = class {
            let code = self
                .classes
                .iter()
                .position(|x| x == c)
                .ok_or_else(|| DispatchError::UnknownProduct(c.to_owned()))?;
            filter = filter.vehicle_class(code as u8);
        }
        let found = {
            let free = self.hints.free_at(self.clock.now());
            self.index.nearest_where(
                at,
                k.min(self.settings.max_nearby),
                &filter,
                Some(radius_m),
                free,
            )
        };
        Ok(found
            .into_iter()
            .map(|n| {
                let class = self
                    .classes
                    .get(n.entry.attrs.vehicle_class as usize)
                    .cloned()
                    .unwrap_or_default();
                if exact {
                    NearbyDriver {
                        driver_id: Some(DriverId::from(&n.entry.id)),
                        lat: n.entry.position.lat(),
                        lng: n.entry.position.lng(),
                        distance_m: Some(n.distance_m),
                        vehicle_class: class,
                    }
                } else {
                    let cell = n
                        .entry
                        .cell
                        .parent(geomatch_index::Resolution::Eight)
                        .unwrap_or(n.entry.cell);
                    let centre = h3o::LatLng::from(cell);
                    NearbyDriver {
                        driver_id: None,
                        lat: centre.lat(),
                        lng: centre.lng(),
                        distance_m: None,
                        vehicle_class: class,
                    }
                }
            })
            .collect())
    }
}

/// The offer cycle's time rules on a manual clock, against both books: what the HTTP
/// suite checks with real waits, checked here by moving `now`.
#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use geomatch_common::metrics::Metrics;
    use geomatch_common::ports::{Fare, QuoteRefusal};
    use geomatch_common::testing::RedisServer;
    use geomatch_eta::{Eta, Method};
    use geomatch_index::{Attributes, EntryId, IndexConfig, Kind, Status, Update};

    use super::*;

    const T0: i64 = 1_700_000_000_000;

    /// Straight lines at 5 m/s.
    struct Straight;

    impl EtaModel for Straight {
        fn eta(&self, from: &Position, to: &Position, _at_ms: i64) -> Eta {
            let distance_m = from.distance_m(to);
            Eta {
                duration_s: distance_m / 5.0,
                distance_m,
                method: Method::DefaultSpeed,
            }
        }
    }

    /// Every ride costs 1000 KRW; quotes are refused.
    struct Flat;

    impl TripPricing for Flat {
        fn verify_quote_for_trip(
            &self,
            _: &str,
            _: &str,
            _: &Trip<'_>,
        ) -> Result<Fare, QuoteRefusal> {
            Err(QuoteRefusal {
                forbidden: false,
                code: "invalid_quote",
                detail: "no quotes here".into(),
            })
        }
        fn price_trip(&self, _: &Trip<'_>, _: i64) -> Option<Fare> {
            Some(Fare {
                total_minor: 1_000,
                currency: "KRW".into(),
            })
        }
        fn record_demand(&self, _: &Position, _: i64) {}
    }

    /// Remembers what was pushed to whom.
    #[derive(Default)]
    struct Pushed(Mutex<Vec<(String, serde_json::Value)>>);

    impl DriverPush for Pushed {
        fn push(&self, driver: &str, json: &str) -> bool {
            let offer = serde_json::from_str(json).expect("an offer as JSON");
            self.0
                .lock()
                .expect("lock")
                .push((driver.to_owned(), offer));
            true
        }
    }

    struct Fixture {
        dispatcher: Dispatcher,
        index: Arc<Index>,
        clock: Clock,
        pushed: Arc<Pushed>,
        _server: Option<RedisServer>,
    }

    impl Fixture {
        fn new(redis: bool, tune: impl FnOnce(&mut MatchingSettings)) -> Self {
            let server = redis.then(RedisServer::start);
            let index = Arc::new(Index::new(IndexConfig::default()).expect("index"));
            let metrics =
                MatchingMetrics::new(&Metrics::new().expect("registry")).expect("metrics");
            let mut settings = MatchingSettings::default();
            tune(&mut settings);
            let clock = Clock::manual(T0);
            let pushed = Arc::new(Pushed::default());
            let wiring = Wiring {
                book: Book::new(
                    index.clone(),
                    server.as_ref().map(RedisServer::handle),
                    metrics.redis_seconds.clone(),
                ),
                metrics,
                pricing: Arc::new(Flat),
                eta: Arc::new(Straight),
                push: Some(pushed.clone()),
            };
            let dispatcher = Dispatcher::new(
                index.clone(),
                settings,
                vec!["standard".into()],
                clock.clone(),
                wiring,
            );
            Fixture {
                dispatcher,
                index,
                clock,
                pushed,
                _server: server,
            }
        }

        /// An available standard car at `lat`, 127.0.
        fn online(&self, id: &str, lat: f64) {
            let at = Position::new(lat, 127.0).expect("position");
            let mut u = Update::moved(EntryId::parse(id).expect("id"), Kind::Driver, at, T0);
            u.status = Some(Status::Available);
            u.attrs = Some(Attributes {
                vehicle_class: 0,
                seats: 4,
            });
            self.index.upsert(&u).expect("upsert");
        }

        async fn request(&self, rider: &str, lat: f64, scheduled_at: Option<i64>) -> RideView {
            let req = RideRequest {
                pickup: Position::new(lat, 127.0).expect("position"),
                dropoff: Position::new(lat + 0.05, 127.05).expect("position"),
                product: "standard".into(),
                seats: None,
                quote_id: None,
                preferred_driver_id: None,
                scheduled_at,
                tip_minor: None,
            };
            let answer = self.dispatcher.request(rider, Some("k"), req).await;
            answer.expect("a ride").ride
        }

        /// The ride offered to `driver` now, if any.
        async fn offered(&self, driver: &str) -> Option<RideId> {
            match self.dispatcher.current_offer(&driver.into()).await {
                Ok(offer) => Some(offer.ride_id),
                Err(DispatchError::NoOffer(_)) => None,
                Err(e) => panic!("{e}"),
            }
        }

        async fn offer_id(&self, driver: &str) -> OfferId {
            let offer = self.dispatcher.current_offer(&driver.into()).await;
            offer.expect("an offer").offer_id
        }
    }

    macro_rules! against_both_books {
        ($($case:ident),* $(,)?) => {
            mod memory {
                $(
                    #[tokio::test]
                    async fn $case() {
                        super::$case(false).await
                    }
                )*
            }
            mod redis {
                $(
                    #[tokio::test]
                    async fn $case() {
                        super::$case(true).await
                    }
                )*
            }
        };
    }

    against_both_books!(
        a_decline_or_a_timeout_moves_the_offer_to_the_next_driver_and_excludes_the_first,
        a_scheduled_ride_waits_until_its_lead_time_then_dispatches,
        batched_matching_minimises_total_pickup_eta_where_greedy_does_not,
        an_offer_is_pushed_to_its_driver_with_the_fare,
    );

    async fn a_decline_or_a_timeout_moves_the_offer_to_the_next_driver_and_excludes_the_first(
        redis: bool,
    ) {
        let f = Fixture::new(redis, |s| s.offer_timeout_s = 15);
        f.online("a", 37.5001);
        f.online("b", 37.5005);
        f.online("c", 37.5010);
        let ride = f.request("u1", 37.5, None).await;
        assert_eq!(f.offered("a").await, Some(ride.ride_id.clone()));

        f.clock.advance(1_000);
        let offer = f.offer_id("a").await;
        f.dispatcher
            .decline(&offer, &"a".into())
            .await
            .expect("declined");
        assert_eq!(
            f.offered("b").await,
            Some(ride.ride_id.clone()),
            "the next nearest"
        );

        // b lets it time out: nothing moves before its deadline, then c is asked.
        let deadline = f.clock.now() + 15_000;
        assert_eq!(f.dispatcher.sweep(deadline - 1).await, Ok(0));
        assert!(f.offered("b").await.is_some());
        f.clock.set(deadline);
        assert_eq!(f.dispatcher.sweep(deadline).await, Ok(1));
        assert_eq!(f.offered("b").await, None);
        assert_eq!(
            f.offered("c").await,
            Some(ride.ride_id.clone()),
            "timed out: the next"
        );
        assert_eq!(
            f.offered("a").await,
            None,
            "a declined and is never asked again"
        );
        assert_eq!(
            f.dispatcher.ride(&ride.ride_id).await.map(|r| r.attempts),
            Ok(3)
        );

        let accepted = f
            .dispatcher
            .accept(&f.offer_id("c").await, &"c".into())
            .await;
        assert_eq!(accepted.map(|r| r.state), Ok(RideState::Accepted));
        let m = &f.dispatcher.metrics.offers;
        for outcome in ["accepted", "declined", "timed_out"] {
            assert_eq!(m.with_label_values(&[outcome]).get(), 1, "{outcome}");
        }
    }

    async fn a_scheduled_ride_waits_until_its_lead_time_then_dispatches(redis: bool) {
        let f = Fixture::new(redis, |s| s.schedule_lead_s = 1);
        f.online("a", 37.5001);
        let ride = f.request("u1", 37.5, Some(T0 + 2_500)).await;
        assert_eq!(ride.state, RideState::Requested);
        // Dispatch starts at the lead time: 2.5 s ahead with a 1 s lead.
        assert_eq!(f.dispatcher.sweep(T0 + 1_499).await, Ok(0));
        assert_eq!(f.offered("a").await, None);
        assert_eq!(f.dispatcher.sweep(T0 + 1_500).await, Ok(1));
        assert_eq!(f.offered("a").await, Some(ride.ride_id));

        let too_far = f.dispatcher.request(
            "u2",
            Some("k"),
            RideRequest {
                scheduled_at: Some(T0 + 8 * 86_400_000),
                ..serde_json::from_value(serde_json::json!({
                    "pickup": {"lat": 37.5, "lng": 127.0},
                    "dropoff": {"lat": 37.6, "lng": 127.0},
                    "product": "standard"
                }))
                .expect("a request")
            },
        );
        assert_eq!(too_far.await.err(), Some(DispatchError::Schedule(7)));
    }

    async fn batched_matching_minimises_total_pickup_eta_where_greedy_does_not(redis: bool) {
        // r1 at 37.5; d1 11 m north of r1; r2 22 m north of r1 (11 m from d1); d2 100 m
        // south of r1. Greedy would give r1-d1 and leave r2 with d2 (11 + 122 m); the
        // batch pairs r1-d2 and r2-d1 (100 + 11 m).
        let f = Fixture::new(redis, |s| s.batch_window_ms = 1_000);
        f.online("d1", 37.5001);
        f.online("d2", 37.4991);
        let r1 = f.request("r1", 37.5, None).await;
        let r2 = f.request("r2", 37.5002, None).await;
        assert_eq!((f.offered("d1").await, f.offered("d2").await), (None, None));
        // Requests are held for one window, so that they are paired together. (The
        // window's turn is taken once, in Redis by Redis's own clock: one `batch` here.)
        assert_eq!(f.dispatcher.assign_batch(T0 + 999).await, Ok(0));
        assert_eq!(f.dispatcher.batch(T0 + 1_000).await, Ok(2));
        assert_eq!(
            (f.offered("d1").await, f.offered("d2").await),
            (Some(r2.ride_id), Some(r1.ride_id))
        );
    }

    async fn an_offer_is_pushed_to_its_driver_with_the_fare(redis: bool) {
        let f = Fixture::new(redis, |_| {});
        f.online("a", 37.5001);
        let ride = f.request("u1", 37.5, None).await;
        let pushed = f.pushed.0.lock().expect("lock").clone();
        let [(driver, offer)] = &pushed[..] else {
            panic!("one push expected: {pushed:?}");
        };
        assert_eq!(driver, "a");
        assert_eq!(offer["type"], "offer");
        assert_eq!(offer["ride_id"], ride.ride_id.as_str());
        assert_eq!(
            offer["fare"],
            serde_json::json!({"total_minor": 1000, "currency": "KRW"})
        );
        assert_eq!(offer["total_minor"], 1000);
    }
}
