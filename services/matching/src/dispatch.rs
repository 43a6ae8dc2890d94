//! Ride dispatch, independent of HTTP: the offer cycle and its invariants.
//!
//! All ride and offer state sits in one [`Book`] behind one mutex, so every transition is
//! one atomic step; driver availability is the index's status, changed only by
//! compare-and-set (available → offered → busy → available), so a driver can never hold two
//! offers or two rides even against other writers of the index.
//!
//! The cycle: a ride in `dispatching` has at most one outstanding offer. Candidates are the
//! available drivers of the product near the pickup (expanding radii, cap at the last),
//! ranked by pickup ETA, excluding drivers who declined or timed out on this ride. The best
//! one is taken with a compare-and-set and offered for `offer_timeout_s`; decline or timeout
//! moves on; `max_attempts` offers or nobody at the cap ends the ride as `no_driver_found`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use geomatch_common::config::MatchingSettings;
use geomatch_index::{EntryId, Filter, Index, Position, Status};
use parking_lot::Mutex;
use rand::Rng;

use crate::metrics::MatchingMetrics;
use crate::ride::{DispatchError, OfferView, RideRequest, RideState, RideView, Transition};
use geomatch_eta::EtaModel;

/// Delivers offers to drivers (their WebSocket, in embedded mode).
pub trait Notifier: Send + Sync {
    fn offer(&self, driver_id: &str, offer: &OfferView);
}

/// A notifier that delivers nothing (drivers then poll `GET …/offer`).
pub struct NoNotifier;

impl Notifier for NoNotifier {
    fn offer(&self, _: &str, _: &OfferView) {}
}

/// Server clock, ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Ride {
    id: String,
    rider: String,
    request: RideRequest,
    class: u8,
    state: RideState,
    transitions: Vec<Transition>,
    driver: Option<String>,
    pickup_eta_s: Option<u64>,
    offer: Option<String>,
    excluded: HashSet<String>,
    attempts: u32,
    radius: usize,
    requested_at_ms: i64,
}

impl Ride {
    fn to(&mut self, state: RideState, at_ms: i64, by: Option<&str>) {
        self.state = state;
        self.transitions.push(Transition {
            state,
            at_ms,
            by: by.map(str::to_owned),
        });
    }

    fn view(&self) -> RideView {
        RideView {
            ride_id: self.id.clone(),
            rider_id: self.rider.clone(),
            state: self.state,
            pickup: self.request.pickup,
            dropoff: self.request.dropoff,
            product: self.request.product.clone(),
            driver_id: self.driver.clone(),
            pickup_eta_s: self.pickup_eta_s,
            scheduled_at: self.request.scheduled_at,
            attempts: self.attempts,
            transitions: self.transitions.clone(),
        }
    }
}

struct Offer {
    ride: String,
    driver: String,
    view: OfferView,
}

enum Idem {
    InProgress {
        body: RideRequest,
    },
    Done {
        body: RideRequest,
        ride: String,
        at_ms: i64,
    },
}

#[derive(Default)]
struct Book {
    rides: HashMap<String, Ride>,
    offers: HashMap<String, Offer>,
    open_by_rider: HashMap<String, String>,
    offer_by_driver: HashMap<String, String>,
    ride_by_driver: HashMap<String, String>,
    idempotency: HashMap<(String, String), Idem>,
}

/// What a ride request answered: a new ride (201) or the replay of an earlier one (201,
/// same body).
pub struct Created {
    pub ride: RideView,
    pub replayed: bool,
}

/// A driver seen on the "cars around you" map.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct NearbyDriver {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_id: Option<String>,
    pub lat: f64,
    pub lng: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
    pub vehicle_class: String,
}

/// Ride dispatch. Shared as `Arc<Dispatcher>`: offer timers hold a handle.
pub struct Dispatcher {
    index: Arc<Index>,
    settings: MatchingSettings,
    classes: Vec<String>,
    book: Mutex<Book>,
    notifier: Arc<dyn Notifier>,
    metrics: MatchingMetrics,
    /// Ranks candidates by pickup ETA (geomatch-eta's learned-speed model in production).
    eta: Arc<dyn EtaModel>,
    /// Quote verification and demand signals, when eta-pricing runs in the process.
    pricing: Option<Arc<dyn Pricing>>,
}

/// Why pricing refused a ride's quote.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteRefusal {
    /// 403 (someone else's quote) rather than 422.
    pub forbidden: bool,
    pub code: &'static str,
    pub detail: String,
}

/// What dispatch needs of pricing.
pub trait Pricing: Send + Sync {
    /// Checks that `quote_id` is a live quote of `rider` for this request.
    fn verify_quote(
        &self,
        quote_id: &str,
        rider: &str,
        request: &RideRequest,
    ) -> Result<(), QuoteRefusal>;
    /// A ride request at `at`: demand for surge.
    fn record_demand(&self, at: &Position, now_ms: i64);
}

/// Pairs rides (rows, each with its candidate drivers and pickup distances) with
/// `drivers` (columns) so that the total cost is least; a ride is paired only with one of
/// its candidates. Returns (row, column) pairs.
fn min_cost_assignment(
    rows: &[(String, Vec<(String, f64)>)],
    drivers: &[String],
    cost: impl Fn(f64) -> i64,
) -> Vec<(usize, usize)> {
    // Kuhn–Munkres wants at least as many columns as rows: pad with "nobody" columns,
    // and make impossible pairs cost more than any real assignment could save.
    const IMPOSSIBLE: i64 = 1_000_000_000;
    const NOBODY: i64 = IMPOSSIBLE / 2;
    let cols = drivers.len().max(rows.len());
    let mut weights = vec![NOBODY; rows.len() * cols];
    for (r, (_, candidates)) in rows.iter().enumerate() {
        for c in 0..drivers.len() {
            weights[r * cols + c] = IMPOSSIBLE;
        }
        for (d, m) in candidates {
            if let Ok(c) = drivers.binary_search(d) {
                weights[r * cols + c] = cost(*m);
            }
        }
    }
    let Ok(matrix) = pathfinding::matrix::Matrix::from_vec(rows.len(), cols, weights) else {
        return Vec::new();
    };
    let (_, assignment) = pathfinding::kuhn_munkres::kuhn_munkres_min(&matrix);
    assignment
        .into_iter()
        .enumerate()
        .filter(|&(r, c)| c < drivers.len() && matrix[(r, c)] < NOBODY)
        .collect()
}

fn new_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    format!("{prefix}_{:016x}", rng.random::<u64>())
}

impl Dispatcher {
    pub fn new(
        index: Arc<Index>,
        settings: MatchingSettings,
        classes: Vec<String>,
        notifier: Arc<dyn Notifier>,
        metrics: MatchingMetrics,
        eta: Arc<dyn EtaModel>,
        pricing: Option<Arc<dyn Pricing>>,
    ) -> Self {
        Dispatcher {
            index,
            settings,
            classes,
            book: Mutex::new(Book::default()),
            notifier,
            metrics,
            eta,
            pricing,
        }
    }

    pub fn settings(&self) -> &MatchingSettings {
        &self.settings
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
    pub fn request(
        self: &Arc<Self>,
        rider: &str,
        key: Option<&str>,
        req: RideRequest,
    ) -> Result<Created, DispatchError> {
        let key = key.ok_or(DispatchError::MissingKey)?;
        if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DispatchError::BadKey);
        }
        let now = now_ms();
        let idem_key = (rider.to_owned(), key.to_owned());
        {
            let mut book = self.book.lock();
            book.idempotency
                .retain(|_, v| !matches!(v, Idem::Done { at_ms, .. } if now - *at_ms > self.settings.idempotency_ttl_s as i64 * 1000));
            match book.idempotency.get(&idem_key) {
                Some(Idem::InProgress { body }) | Some(Idem::Done { body, .. }) if *body != req => {
                    return Err(DispatchError::KeyReused)
                }
                Some(Idem::InProgress { .. }) => return Err(DispatchError::InProgress),
                Some(Idem::Done { ride, .. }) => {
                    let ride = book
                        .rides
                        .get(ride)
                        .map(Ride::view)
                        .ok_or_else(|| DispatchError::RideNotFound(ride.clone()))?;
                    return Ok(Created {
                        ride,
                        replayed: true,
                    });
                }
                None => {
                    book.idempotency
                        .insert(idem_key.clone(), Idem::InProgress { body: req.clone() });
                }
            }
        }
        let result = self.create(rider, req.clone(), now);
        let mut book = self.book.lock();
        match &result {
            Ok(view) => {
                book.idempotency.insert(
                    idem_key,
                    Idem::Done {
                        body: req,
                        ride: view.ride_id.clone(),
                        at_ms: now,
                    },
                );
            }
            // A refused request leaves the key free for a corrected retry.
            Err(_) => {
                book.idempotency.remove(&idem_key);
            }
        }
        result.map(|ride| Created {
            ride,
            replayed: false,
        })
    }

    fn create(
        self: &Arc<Self>,
        rider: &str,
        req: RideRequest,
        now: i64,
    ) -> Result<RideView, DispatchError> {
        let class = self
            .classes
            .iter()
            .position(|c| *c == req.product)
            .ok_or_else(|| DispatchError::UnknownProduct(req.product.clone()))?
            as u8;
        if req.seats.is_some_and(|s| !(1..=16).contains(&s)) {
            return Err(DispatchError::Seats);
        }
        if let Some(quote) = &req.quote_id {
            match &self.pricing {
                Some(p) => p
                    .verify_quote(quote, rider, &req)
                    .map_err(DispatchError::Quote)?,
                None => return Err(DispatchError::QuotesUnavailable),
            }
        }
        if let Some(p) = &self.pricing {
            p.record_demand(&req.pickup, now);
        }
        if let Some(at) = req.scheduled_at {
            let max_ahead = self.settings.max_schedule_days as i64 * 86_400_000;
            if at <= now || at > now + max_ahead {
                return Err(DispatchError::Schedule(self.settings.max_schedule_days));
            }
        }
        let mut book = self.book.lock();
        if let Some(open) = book.open_by_rider.get(rider) {
            return Err(DispatchError::RideOpen(open.clone()));
        }
        let id = new_id("ride");
        let mut ride = Ride {
            id: id.clone(),
            rider: rider.to_owned(),
            class,
            state: RideState::Requested,
            transitions: vec![Transition {
                state: RideState::Requested,
                at_ms: now,
                by: None,
            }],
            request: req,
            driver: None,
            pickup_eta_s: None,
            offer: None,
            excluded: HashSet::new(),
            attempts: 0,
            radius: 0,
            requested_at_ms: now,
        };
        let due = ride
            .request
            .scheduled_at
            .is_none_or(|at| at - self.settings.schedule_lead_s as i64 * 1000 <= now);
        if due {
            ride.to(RideState::Dispatching, now, None);
        }
        book.open_by_rider.insert(rider.to_owned(), id.clone());
        book.rides.insert(id.clone(), ride);
        self.metrics.open_rides.inc();
        if due {
            self.advance(&mut book, &id, now);
        }
        Ok(book.rides[&id].view())
    }

    fn batching(&self) -> bool {
        self.settings.batch_window_ms > 0
    }

    /// Makes the next offer of a dispatching ride that has none, or ends it.
    fn advance(self: &Arc<Self>, book: &mut Book, ride_id: &str, now: i64) {
        let Some(ride) = book.rides.get(ride_id) else {
            return;
        };
        // With batched matching the ride waits for the next batch instead.
        if ride.state != RideState::Dispatching || ride.offer.is_some() || self.batching() {
            return;
        }
        if ride.attempts >= self.settings.max_attempts {
            self.finish(book, ride_id, RideState::NoDriverFound, now, None);
            return;
        }
        let (pickup, class, seats, preferred) = (
            ride.request.pickup,
            ride.class,
            ride.request.seats.unwrap_or(0),
            ride.request.preferred_driver_id.clone(),
        );
        let filter = Filter::available_drivers()
            .vehicle_class(class)
            .min_seats(seats);
        let mut radius = ride.radius;
        while radius < self.settings.radii_m.len() {
            let limit = self.settings.radii_m[radius];
            let excluded = &book.rides[ride_id].excluded;
            let mut candidates = self.index.nearest_where(
                &pickup,
                self.settings.candidates,
                &filter,
                Some(limit),
                |id| !excluded.contains(id.as_str()),
            );
            // Ranked by pickup ETA; the rider's preferred driver first when suitable and
            // within reach.
            let positions: Vec<Position> = candidates.iter().map(|n| n.entry.position).collect();
            let etas = self.pickup_etas(&pickup, &positions, now);
            let mut ranked: Vec<(geomatch_index::Neighbor, u64)> =
                candidates.drain(..).zip(etas).collect();
            ranked.sort_by_key(|(n, eta)| (preferred.as_ref() != Some(&n.entry.id), *eta));
            self.metrics.candidates.observe(ranked.len() as f64);
            for (n, eta) in ranked {
                let id = n.entry.id;
                let taken = self
                    .index
                    .compare_and_set_status(&id, &[Status::Available], Status::Offered, None)
                    .is_ok();
                if !taken {
                    continue; // raced by another ride; try the next
                }
                self.offer(book, ride_id, id.as_str(), n.distance_m, eta, now);
                if let Some(r) = book.rides.get_mut(ride_id) {
                    r.radius = radius;
                }
                return;
            }
            radius += 1;
        }
        self.finish(book, ride_id, RideState::NoDriverFound, now, None);
    }

    fn offer(
        self: &Arc<Self>,
        book: &mut Book,
        ride_id: &str,
        driver: &str,
        distance_m: f64,
        pickup_eta_s: u64,
        now: i64,
    ) {
        let offer_id = new_id("offer");
        let Some(ride) = book.rides.get_mut(ride_id) else {
            return;
        };
        ride.offer = Some(offer_id.clone());
        ride.attempts += 1;
        if ride.attempts == 1 {
            self.metrics
                .to_first_offer
                .observe((now - ride.requested_at_ms).max(0) as f64 / 1000.0);
        }
        let timeout = Duration::from_secs(self.settings.offer_timeout_s);
        let view = OfferView {
            kind: "offer".into(),
            offer_id: offer_id.clone(),
            ride_id: ride_id.to_owned(),
            pickup: ride.request.pickup,
            dropoff: ride.request.dropoff,
            product: ride.request.product.clone(),
            pickup_distance_m: distance_m,
            pickup_eta_s,
            expires_at_ms: now + timeout.as_millis() as i64,
        };
        self.notifier.offer(driver, &view);
        book.offer_by_driver
            .insert(driver.to_owned(), offer_id.clone());
        book.offers.insert(
            offer_id.clone(),
            Offer {
                ride: ride_id.to_owned(),
                driver: driver.to_owned(),
                view,
            },
        );
        let me = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            me.expire(&offer_id);
        });
    }

    /// Ends an outstanding offer (declined, timed out or withdrawn): the driver is
    /// available again and excluded from this ride.
    fn close_offer(&self, book: &mut Book, offer_id: &str, outcome: &str) -> Option<String> {
        let offer = book.offers.remove(offer_id)?;
        book.offer_by_driver.remove(&offer.driver);
        if let Ok(id) = EntryId::parse(&offer.driver) {
            let _ =
                self.index
                    .compare_and_set_status(&id, &[Status::Offered], Status::Available, None);
        }
        if let Some(ride) = book.rides.get_mut(&offer.ride) {
            if ride.offer.as_deref() == Some(offer_id) {
                ride.offer = None;
            }
            ride.excluded.insert(offer.driver.clone());
        }
        self.metrics.offers.with_label_values(&[outcome]).inc();
        Some(offer.ride)
    }

    fn expire(self: &Arc<Self>, offer_id: &str) {
        let mut book = self.book.lock();
        if let Some(ride) = self.close_offer(&mut book, offer_id, "timed_out") {
            self.advance(&mut book, &ride, now_ms());
        }
    }

    fn finish(&self, book: &mut Book, ride_id: &str, state: RideState, now: i64, by: Option<&str>) {
        let Some(ride) = book.rides.get_mut(ride_id) else {
            return;
        };
        ride.to(state, now, by);
        if let Some(driver) = ride.driver.clone() {
            book.ride_by_driver.remove(&driver);
            if let Ok(id) = EntryId::parse(&driver) {
                let _ = self.index.compare_and_set_status(
                    &id,
                    &[Status::Busy],
                    Status::Available,
                    None,
                );
            }
        }
        let rider = ride.rider.clone();
        if book.open_by_rider.get(&rider).map(String::as_str) == Some(ride_id) {
            book.open_by_rider.remove(&rider);
        }
        self.metrics.rides.with_label_values(&[state.name()]).inc();
        self.metrics.open_rides.dec();
    }

    /// Batched matching: every `batch_window_ms`, assign all dispatching rides without an
    /// offer to available drivers at once, minimising the total pickup ETA (Kuhn–Munkres),
    /// then run the same offer cycle. Rides nobody can reach widen their radius, up to the
    /// cap, and end as `no_driver_found` past it or past `max_attempts`.
    pub async fn run_batches(self: Arc<Self>) {
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.settings.batch_window_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.assign_batch(now_ms());
        }
    }

    /// One batch; returns the number of offers made.
    pub fn assign_batch(self: &Arc<Self>, now: i64) -> usize {
        let mut book = self.book.lock();
        let pending: Vec<String> = book
            .rides
            .values()
            // A request is held for one window, so that it can be paired with the others
            // of its window; a ride back from a decline or timeout goes at once.
            .filter(|r| r.state == RideState::Dispatching && r.offer.is_none())
            .filter(|r| {
                r.attempts > 0 || now - r.requested_at_ms >= self.settings.batch_window_ms as i64
            })
            .map(|r| r.id.clone())
            .collect();
        // Candidates of every pending ride, widening the radius of rides that have none.
        let mut rows: Vec<(String, Vec<(String, f64)>)> = Vec::new();
        let mut distances: Vec<HashMap<String, f64>> = Vec::new();
        for id in pending {
            let ride = &book.rides[&id];
            let pickup = ride.request.pickup;
            if ride.attempts >= self.settings.max_attempts {
                self.finish(&mut book, &id, RideState::NoDriverFound, now, None);
                continue;
            }
            let filter = Filter::available_drivers()
                .vehicle_class(ride.class)
                .min_seats(ride.request.seats.unwrap_or(0));
            let mut radius = ride.radius;
            let mut found = Vec::new();
            while radius < self.settings.radii_m.len() {
                found = self
                    .index
                    .nearest_where(
                        &ride.request.pickup,
                        self.settings.candidates,
                        &filter,
                        Some(self.settings.radii_m[radius]),
                        |d| !ride.excluded.contains(d.as_str()),
                    )
                    .into_iter()
                    .map(|n| (n.entry.id.to_string(), n.distance_m, n.entry.position))
                    .collect();
                if !found.is_empty() {
                    break;
                }
                radius += 1;
            }
            self.metrics.candidates.observe(found.len() as f64);
            if found.is_empty() {
                self.finish(&mut book, &id, RideState::NoDriverFound, now, None);
                continue;
            }
            if let Some(r) = book.rides.get_mut(&id) {
                r.radius = radius;
            }
            let positions: Vec<Position> = found.iter().map(|c| c.2).collect();
            let etas = self.pickup_etas(&pickup, &positions, now);
            distances.push(
                found
                    .iter()
                    .map(|c| (c.0.clone(), c.1))
                    .collect::<HashMap<_, _>>(),
            );
            rows.push((
                id,
                found
                    .into_iter()
                    .zip(etas)
                    .map(|(c, eta)| (c.0, eta as f64))
                    .collect(),
            ));
        }
        if rows.is_empty() {
            return 0;
        }
        let mut drivers: Vec<String> = rows
            .iter()
            .flat_map(|(_, c)| c.iter().map(|(d, _)| d.clone()))
            .collect();
        drivers.sort_unstable();
        drivers.dedup();
        let assignment = min_cost_assignment(&rows, &drivers, |eta_s| eta_s as i64);
        let mut offers = 0;
        for (row, col) in assignment {
            let (ride_id, candidates) = &rows[row];
            let driver = &drivers[col];
            let Some(&(_, eta)) = candidates.iter().find(|(d, _)| d == driver) else {
                continue;
            };
            let distance = distances[row].get(driver).copied().unwrap_or(0.0);
            let Ok(id) = EntryId::parse(driver) else {
                continue;
            };
            if self
                .index
                .compare_and_set_status(&id, &[Status::Available], Status::Offered, None)
                .is_ok()
            {
                self.offer(&mut book, ride_id, driver, distance, eta as u64, now);
                offers += 1;
            }
        }
        offers
    }

    /// The driver's current offer.
    pub fn current_offer(&self, driver: &str) -> Result<OfferView, DispatchError> {
        let book = self.book.lock();
        book.offer_by_driver
            .get(driver)
            .and_then(|o| book.offers.get(o))
            .map(|o| o.view.clone())
            .ok_or_else(|| DispatchError::NoOffer(driver.to_owned()))
    }

    /// The driver who holds `offer_id` (for authorisation).
    pub fn offer_driver(&self, offer_id: &str) -> Result<String, DispatchError> {
        self.book
            .lock()
            .offers
            .get(offer_id)
            .map(|o| o.driver.clone())
            .ok_or(DispatchError::OfferGone)
    }

    /// Accepts the current offer of a still-open ride: atomic; a late or repeated accept
    /// is refused and changes nothing.
    pub fn accept(&self, offer_id: &str, driver: &str) -> Result<RideView, DispatchError> {
        let now = now_ms();
        let mut book = self.book.lock();
        let offer = book.offers.get(offer_id).ok_or(DispatchError::OfferGone)?;
        if offer.driver != driver {
            return Err(DispatchError::Forbidden);
        }
        let ride_id = offer.ride.clone();
        let eta = offer.view.pickup_eta_s;
        let ride = book
            .rides
            .get(&ride_id)
            .ok_or_else(|| DispatchError::RideNotFound(ride_id.clone()))?;
        if ride.state != RideState::Dispatching || ride.offer.as_deref() != Some(offer_id) {
            return Err(DispatchError::OfferGone);
        }
        let id = EntryId::parse(driver).map_err(|_| DispatchError::DriverUnavailable)?;
        if self
            .index
            .compare_and_set_status(&id, &[Status::Offered], Status::Busy, None)
            .is_err()
        {
            return Err(DispatchError::DriverUnavailable);
        }
        book.offers.remove(offer_id);
        book.offer_by_driver.remove(driver);
        book.ride_by_driver
            .insert(driver.to_owned(), ride_id.clone());
        let ride = book.rides.get_mut(&ride_id).expect("checked above");
        ride.offer = None;
        ride.driver = Some(driver.to_owned());
        ride.pickup_eta_s = Some(eta);
        ride.to(RideState::Accepted, now, Some(driver));
        self.metrics.offers.with_label_values(&["accepted"]).inc();
        self.metrics
            .to_accept
            .observe((now - ride.requested_at_ms).max(0) as f64 / 1000.0);
        Ok(ride.view())
    }

    /// Declines the current offer; dispatch moves on to the next candidate.
    pub fn decline(self: &Arc<Self>, offer_id: &str, driver: &str) -> Result<(), DispatchError> {
        let mut book = self.book.lock();
        let offer = book.offers.get(offer_id).ok_or(DispatchError::OfferGone)?;
        if offer.driver != driver {
            return Err(DispatchError::Forbidden);
        }
        if let Some(ride) = self.close_offer(&mut book, offer_id, "declined") {
            self.advance(&mut book, &ride, now_ms());
        }
        Ok(())
    }

    /// A trip step by the assigned driver: arrived, start, complete.
    pub fn progress(
        &self,
        ride_id: &str,
        driver: Option<&str>,
        to: RideState,
    ) -> Result<RideView, DispatchError> {
        let (from, name) = match to {
            RideState::DriverArrived => (RideState::Accepted, "accepted"),
            RideState::InProgress => (RideState::DriverArrived, "driver_arrived"),
            RideState::Completed => (RideState::InProgress, "in_progress"),
            _ => return Err(DispatchError::WrongState("any", "a trip step")),
        };
        let now = now_ms();
        let mut book = self.book.lock();
        let ride = book
            .rides
            .get_mut(ride_id)
            .ok_or_else(|| DispatchError::RideNotFound(ride_id.to_owned()))?;
        if driver.is_some_and(|d| ride.driver.as_deref() != Some(d)) {
            return Err(DispatchError::Forbidden);
        }
        if ride.state != from {
            return Err(DispatchError::WrongState(ride.state.name(), name));
        }
        if to == RideState::Completed {
            self.finish(&mut book, ride_id, to, now, driver);
        } else {
            ride.to(to, now, driver);
        }
        Ok(book.rides[ride_id].view())
    }

    /// Cancels an open ride (by its rider, its driver, or the platform). A ride on the
    /// road (in progress) can no longer be cancelled, only completed.
    pub fn cancel(&self, ride_id: &str, by: &str) -> Result<RideView, DispatchError> {
        let now = now_ms();
        let mut book = self.book.lock();
        let ride = book
            .rides
            .get(ride_id)
            .ok_or_else(|| DispatchError::RideNotFound(ride_id.to_owned()))?;
        if ride.state.is_terminal() || ride.state == RideState::InProgress {
            return Err(DispatchError::WrongState(
                ride.state.name(),
                "requested, dispatching, accepted or driver_arrived",
            ));
        }
        if let Some(offer) = ride.offer.clone() {
            self.close_offer(&mut book, &offer, "withdrawn");
        }
        self.finish(&mut book, ride_id, RideState::Cancelled, now, Some(by));
        Ok(book.rides[ride_id].view())
    }

    /// A ride (the caller checks who may see it).
    pub fn ride(&self, ride_id: &str) -> Result<RideView, DispatchError> {
        self.book
            .lock()
            .rides
            .get(ride_id)
            .map(Ride::view)
            .ok_or_else(|| DispatchError::RideNotFound(ride_id.to_owned()))
    }

    /// Starts dispatch of scheduled rides whose lead time has come. Run periodically.
    pub fn dispatch_due(self: &Arc<Self>, now: i64) -> usize {
        let lead = self.settings.schedule_lead_s as i64 * 1000;
        let mut book = self.book.lock();
        let due: Vec<String> = book
            .rides
            .values()
            .filter(|r| {
                r.state == RideState::Requested
                    && r.request.scheduled_at.is_some_and(|at| at - lead <= now)
            })
            .map(|r| r.id.clone())
            .collect();
        for id in &due {
            if let Some(r) = book.rides.get_mut(id) {
                r.to(RideState::Dispatching, now, None);
                r.requested_at_ms = now;
            }
            self.advance(&mut book, id, now);
        }
        due.len()
    }

    /// Available drivers near a point. Riders get positions snapped to the centre of their
    /// H3 resolution-8 cell and no ids; privileged callers get ids, exact positions and
    /// distances.
    pub fn nearby(
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
        let found =
            self.index
                .nearest(at, k.min(self.settings.max_nearby), &filter, Some(radius_m));
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
                        driver_id: Some(n.entry.id.to_string()),
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

    /// Every driver's active ride and outstanding offer (for invariant checks).
    pub fn assignments(&self) -> (HashMap<String, String>, HashMap<String, String>) {
        let book = self.book.lock();
        (book.ride_by_driver.clone(), book.offer_by_driver.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, c: &[(&str, f64)]) -> (String, Vec<(String, f64)>) {
        (
            id.into(),
            c.iter().map(|(d, m)| ((*d).into(), *m)).collect(),
        )
    }

    #[test]
    fn the_assignment_minimises_the_total_where_greedy_would_not() {
        // r1 is 10 m from d1 and 100 m from d2; r2 is 10 m from d1 and 120 m from d2.
        // Greedy (r1 first) gives r1-d1, r2-d2 = 130; the optimum is r1-d2, r2-d1 = 110.
        let rows = vec![
            row("r1", &[("d1", 10.0), ("d2", 100.0)]),
            row("r2", &[("d1", 10.0), ("d2", 120.0)]),
        ];
        let drivers = vec!["d1".to_owned(), "d2".to_owned()];
        let mut a = min_cost_assignment(&rows, &drivers, |m| m as i64);
        a.sort_unstable();
        assert_eq!(a, vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn rides_without_a_reachable_driver_stay_unassigned_and_never_get_a_stranger() {
        let rows = vec![
            row("r1", &[("d1", 10.0)]),
            row("r2", &[("d1", 20.0)]),
            row("r3", &[]),
        ];
        let drivers = vec!["d1".to_owned(), "d2".to_owned()];
        let a = min_cost_assignment(&rows, &drivers, |m| m as i64);
        assert_eq!(a, vec![(0, 0)], "d2 is nobody's candidate, r3 has none");
    }
}
