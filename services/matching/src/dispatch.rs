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
//! Decisions (candidate search, ranking, batch assignment) happen here, against this
//! process's index; every state change is a book step, so the same code runs embedded
//! ([`MemoryBook`](crate::book::MemoryBook)) and across replicas
//! ([`RedisBook`](crate::redis_book::RedisBook)). A sweep (every replica, a few times a
//! second) times offers out, starts scheduled rides and picks up rides left without an
//! offer (a replica that died mid-step, or every candidate briefly taken), so no ride is
//! lost.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use geomatch_common::config::MatchingSettings;
use geomatch_index::{Filter, Index, Position};
use parking_lot::RwLock;
use rand::Rng;

use crate::book::{
    Book, Candidate, Claim, Created as BookCreated, IdemKey, IdemSeen, OfferEnd, RideBase, RideDoc,
    Step,
};
use crate::metrics::MatchingMetrics;
use crate::ride::{DispatchError, Fare, OfferView, RideRequest, RideState, RideView};
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

/// Ride dispatch. Shared as `Arc<Dispatcher>`: the sweep holds a handle.
pub struct Dispatcher {
    index: Arc<Index>,
    settings: MatchingSettings,
    classes: Vec<String>,
    book: Book,
    /// Drivers a claim found engaged by another ride, each until a time (ms), until the
    /// index says so (Redis mode: other replicas' offers reach this index with a delay).
    /// Searches skip them; the sweep forgets expired ones.
    engaged_hint: RwLock<HashMap<String, i64>>,
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
    /// Checks that `quote_id` is a live quote of `rider` for this request; its fare.
    fn verify_quote(
        &self,
        quote_id: &str,
        rider: &str,
        request: &RideRequest,
    ) -> Result<Fare, QuoteRefusal>;
    /// The fare of a ride requested without a quote (priced now).
    fn price(&self, request: &RideRequest, now_ms: i64) -> Option<Fare>;
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

/// Most rides one Kuhn–Munkres problem holds (its cost grows with the cube).
const KM_CHUNK: usize = 64;

/// Assigns rides (rows: each with its candidate drivers and costs) to drivers, each driver
/// at most once, minimising the total cost within each group of rides that compete for
/// drivers: rides that share no candidate (directly or through others) are solved apart,
/// and a group larger than `chunk` rides is solved `chunk` consecutive rides at a time
/// (callers order rows so that consecutive rides are near each other), later chunks
/// without the drivers earlier ones took. Returns (row, driver) pairs.
fn assign_in_chunks(rows: &[(String, Vec<(String, f64)>)], chunk: usize) -> Vec<(usize, String)> {
    // Union-find over rows, joined through shared drivers.
    let mut parent: Vec<usize> = (0..rows.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_row_of: HashMap<&str, usize> = HashMap::new();
    for (r, (_, candidates)) in rows.iter().enumerate() {
        for (d, _) in candidates {
            match first_row_of.get(d.as_str()) {
                Some(&other) => {
                    let (a, b) = (root(&mut parent, r), root(&mut parent, other));
                    parent[a] = b;
                }
                None => {
                    first_row_of.insert(d, r);
                }
            }
        }
    }
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for r in 0..rows.len() {
        let g = root(&mut parent, r);
        groups.entry(g).or_default().push(r);
    }
    let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
    groups.sort_unstable();
    let mut taken: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for group in groups {
        for part in group.chunks(chunk.max(1)) {
            let sub: Vec<(String, Vec<(String, f64)>)> = part
                .iter()
                .map(|&r| {
                    let (id, c) = &rows[r];
                    let free = c.iter().filter(|(d, _)| !taken.contains(d)).cloned();
                    (id.clone(), free.collect())
                })
                .collect();
            let mut drivers: Vec<String> = sub
                .iter()
                .flat_map(|(_, c)| c.iter().map(|(d, _)| d.clone()))
                .collect();
            drivers.sort_unstable();
            drivers.dedup();
            if drivers.is_empty() {
                continue;
            }
            for (row, col) in min_cost_assignment(&sub, &drivers, |cost| cost as i64) {
                taken.insert(drivers[col].clone());
                out.push((part[row], drivers[col].clone()));
            }
        }
    }
    out
}

fn new_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    format!("{prefix}_{:016x}", rng.random::<u64>())
}

/// How long a claim's "engaged" finding keeps a driver out of this replica's searches.
const ENGAGED_HINT_MS: i64 = 30_000;
/// How long an engagement announced by another replica does (until its release is
/// announced; bounded in case that announcement is lost).
const ANNOUNCED_HINT_MS: i64 = 15 * 60_000;
/// A ride left without an offer this long is picked up by the sweep.
const IDLE_GRACE_MS: i64 = 1_000;
/// Searches per advance when every candidate turns out taken.
const CLAIM_ROUNDS: usize = 4;

impl Dispatcher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: Arc<Index>,
        book: Book,
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
            book,
            engaged_hint: RwLock::default(),
            notifier,
            metrics,
            eta,
            pricing,
        }
    }

    pub fn settings(&self) -> &MatchingSettings {
        &self.settings
    }

    /// The book (tests inspect the embedded one's assignments).
    pub fn book(&self) -> &Book {
        &self.book
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
    pub async fn request(
        self: &Arc<Self>,
        rider: &str,
        key: Option<&str>,
        req: RideRequest,
    ) -> Result<Created, DispatchError> {
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
        let now = now_ms();
        let (doc, dispatch_at) = match self.new_ride(rider, req, now) {
            Ok(made) => made,
            Err(refused) => {
                // The key's first request may have been taken (say, before its quote
                // expired): its answer stands, and another body under it is refused.
                return match self.book.idem_seen(&idem).await? {
                    Some(seen) => self.earlier(seen).await,
                    None => Err(refused),
                };
            }
        };
        let answered = doc.state != RideState::Dispatching || self.batching();
        match self.book.create(&doc, dispatch_at, &idem, answered).await? {
            BookCreated::Made => {}
            BookCreated::Open(open) => return Err(DispatchError::RideOpen(open)),
            BookCreated::Seen(seen) => return self.earlier(seen).await,
        }
        if let Some(p) = &self.pricing {
            p.record_demand(&doc.base.request.pickup, now);
        }
        if answered {
            return Ok(Created {
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
        Ok(Created {
            ride,
            replayed: false,
        })
    }

    /// The answer to a request whose key was used before.
    async fn earlier(&self, seen: IdemSeen) -> Result<Created, DispatchError> {
        match seen {
            IdemSeen::Reused => Err(DispatchError::KeyReused),
            IdemSeen::InProgress => Err(DispatchError::InProgress),
            IdemSeen::Replay(ride) => Ok(Created {
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
        let fare = match (&req.quote_id, &self.pricing) {
            (Some(quote), Some(p)) => Some(
                p.verify_quote(quote, rider, &req)
                    .map_err(DispatchError::Quote)?,
            ),
            (Some(_), None) => return Err(DispatchError::QuotesUnavailable),
            (None, Some(p)) => p.price(&req, now),
            (None, None) => None,
        };
        let lead = self.settings.schedule_lead_s as i64 * 1000;
        let dispatch_at = req.scheduled_at.map_or(now, |at| at - lead);
        let base = RideBase {
            id: new_id("ride"),
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
    /// free driver of the product, best first (the rider's preferred driver, then pickup
    /// ETA). Returns the radius used; empty past the cap.
    fn candidates(&self, ride: &RideDoc, now: i64) -> (usize, Vec<Candidate>) {
        let req = &ride.base.request;
        let filter = Filter::available_drivers()
            .vehicle_class(ride.base.class)
            .min_seats(req.seats.unwrap_or(0));
        // Read under the lock while searching: the hints can run to thousands of
        // drivers, and copying them per request was most of a request's CPU.
        let hint = self.engaged_hint.read();
        let preferred = req.preferred_driver_id.as_ref().map(|d| d.as_str());
        for radius in ride.radius..self.settings.radii_m.len() {
            let found = self.index.nearest_where(
                &req.pickup,
                self.settings.candidates,
                &filter,
                Some(self.settings.radii_m[radius]),
                |id| {
                    !ride.excluded.contains(id.as_str())
                        && hint.get(id.as_str()).is_none_or(|until| *until <= now)
                },
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
                    driver: n.entry.id.to_string(),
                    distance_m: n.distance_m,
                    eta_s,
                })
                .collect();
            ranked.sort_by_key(|c| (Some(c.driver.as_str()) != preferred, c.eta_s));
            return (radius, ranked);
        }
        (self.settings.radii_m.len(), Vec::new())
    }

    /// Makes the next offer of a dispatching ride that has none, or ends it.
    async fn advance(self: &Arc<Self>, ride_id: &str, now: i64) -> Result<(), DispatchError> {
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
        ride_id: &str,
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
        let offer_id = new_id("offer");
        let claim = self
            .book
            .claim(
                &ride.base.id,
                radius,
                ranked,
                self.settings.max_attempts,
                (&offer_id, now + timeout_ms),
                answers,
            )
            .await?;
        match &claim {
            Claim::Offered(offer) => {
                if ride.attempts == 0 {
                    self.metrics
                        .to_first_offer
                        .observe((now_ms() - ride.since_ms).max(0) as f64 / 1000.0);
                }
                self.notifier.offer(&offer.driver, &ride.offer_view(offer));
            }
            Claim::NotWanted => {}
            Claim::AllTaken(taken) => {
                let mut h = self.engaged_hint.write();
                for d in taken {
                    h.insert(d.clone(), now + ENGAGED_HINT_MS);
                }
            }
        }
        Ok(claim)
    }

    /// Ends a dispatching ride without an offer as `no_driver_found`; the ride after it,
    /// when this call ended it.
    async fn no_driver(&self, ride_id: &str, now: i64) -> Result<Option<RideDoc>, DispatchError> {
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

    /// Engagement of a driver seen elsewhere (another replica's offer, accept or release).
    pub fn engaged_elsewhere(&self, driver: &str, engaged: bool) {
        let mut h = self.engaged_hint.write();
        if engaged {
            h.insert(driver.to_owned(), now_ms() + ANNOUNCED_HINT_MS);
        } else {
            h.remove(driver);
        }
    }

    /// Forgets every engagement hint (the announcements may have been missed).
    pub fn forget_engagements(&self) {
        self.engaged_hint.write().clear();
    }

    /// Sweeps every `interval` until the process stops.
    pub async fn run_sweeps(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.sweep(now_ms()).await {
                tracing::warn!(error = %e, "dispatch sweep failed; retrying");
            }
        }
    }

    /// Times out expired offers, starts scheduled rides whose lead time has come, and
    /// advances rides left without an offer. Every replica runs it; each step is claimed
    /// by one. Returns the number of rides it moved.
    pub async fn sweep(self: &Arc<Self>, now: i64) -> Result<usize, DispatchError> {
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
        if let Book::Memory(m) = &self.book {
            m.forget_ended(now, crate::book::RETENTION_MS);
        }
        self.engaged_hint.write().retain(|_, until| *until > now);
        Ok(moved)
    }

    /// Batched matching: every `batch_window_ms`, assign all dispatching rides without an
    /// offer to available drivers at once, minimising the total pickup ETA (Kuhn–Munkres),
    /// then run the same offer cycle. Rides nobody can reach widen their radius, up to the
    /// cap, and end as `no_driver_found` past it or past `max_attempts`.
    pub async fn run_batches(self: Arc<Self>) {
        let window = self.settings.batch_window_ms.max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(window));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // One replica assigns each window.
            let turn = match &self.book {
                Book::Memory(_) => Ok(true),
                Book::Redis(r) => r.batch_turn(window).await,
            };
            match turn {
                Ok(true) => {
                    if let Err(e) = self.assign_batch(now_ms()).await {
                        tracing::warn!(error = %e, "batch assignment failed; retrying");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "batch turn failed; retrying"),
            }
        }
    }

    /// One batch; returns the number of offers made.
    pub async fn assign_batch(self: &Arc<Self>, now: i64) -> Result<usize, DispatchError> {
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
        let mut rows: Vec<(String, Vec<(String, f64)>)> = Vec::new();
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
        for (row, driver) in assign_in_chunks(&rows, KM_CHUNK) {
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
    pub async fn current_offer(&self, driver: &str) -> Result<OfferView, DispatchError> {
        let offer = self
            .book
            .offer_of_driver(driver)
            .await?
            .ok_or_else(|| DispatchError::NoOffer(driver.to_owned()))?;
        let ride = self
            .book
            .ride(&offer.ride)
            .await?
            .ok_or_else(|| DispatchError::NoOffer(driver.to_owned()))?;
        Ok(ride.offer_view(&offer))
    }

    /// The driver who holds `offer_id` (for authorisation).
    pub async fn offer_driver(&self, offer_id: &str) -> Result<String, DispatchError> {
        self.book
            .offer(offer_id)
            .await?
            .map(|o| o.driver)
            .ok_or(DispatchError::OfferGone)
    }

    /// Accepts the current offer of a still-open ride: atomic; a late or repeated accept
    /// is refused and changes nothing.
    pub async fn accept(&self, offer_id: &str, driver: &str) -> Result<RideView, DispatchError> {
        let now = now_ms();
        let ride = self.book.accept(offer_id, driver, now).await??;
        self.metrics.offers.with_label_values(&["accepted"]).inc();
        self.metrics
            .to_accept
            .observe((now - ride.since_ms).max(0) as f64 / 1000.0);
        Ok(ride.view())
    }

    /// Declines the current offer; dispatch moves on to the next candidate.
    pub async fn decline(
        self: &Arc<Self>,
        offer_id: &str,
        driver: &str,
    ) -> Result<(), DispatchError> {
        let now = now_ms();
        let offer = self
            .book
            .close_offer(offer_id, Some(driver), OfferEnd::Declined, now)
            .await??;
        self.metrics.offers.with_label_values(&["declined"]).inc();
        self.advance(&offer.ride, now).await
    }

    /// A trip step by the assigned driver: arrived, start, complete.
    pub async fn progress(
        &self,
        ride_id: &str,
        driver: Option<&str>,
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
            by: driver,
        };
        let done = self.book.step(ride_id, step, now_ms()).await??;
        if to.is_terminal() {
            self.ended(to);
        }
        Ok(done.ride.view())
    }

    /// Cancels an open ride (by its rider, its driver, or the platform). A ride on the
    /// road (in progress) can no longer be cancelled, only completed.
    pub async fn cancel(&self, ride_id: &str, by: &str) -> Result<RideView, DispatchError> {
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
        let done = self.book.step(ride_id, step, now_ms()).await??;
        if done.withdrawn.is_some() {
            self.metrics.offers.with_label_values(&["withdrawn"]).inc();
        }
        self.ended(RideState::Cancelled);
        Ok(done.ride.view())
    }

    /// Sets the rider's tip on a ride (it may only go up): the driver's offer shows it.
    pub async fn tip(&self, ride_id: &str, tip_minor: u64) -> Result<RideView, DispatchError> {
        if tip_minor > self.settings.max_tip_minor {
            return Err(DispatchError::TipTooLarge(self.settings.max_tip_minor));
        }
        Ok(self.book.set_tip(ride_id, tip_minor).await??.view())
    }

    /// A ride (the caller checks who may see it).
    pub async fn ride(&self, ride_id: &str) -> Result<RideView, DispatchError> {
        self.book
            .ride(ride_id)
            .await?
            .map(|r| r.view())
            .ok_or_else(|| DispatchError::RideNotFound(ride_id.to_owned()))
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
        let now = now_ms();
        let hint = self.engaged_hint.read();
        let found = self.index.nearest_where(
            at,
            k.min(self.settings.max_nearby),
            &filter,
            Some(radius_m),
            |id| hint.get(id.as_str()).is_none_or(|until| *until <= now),
        );
        drop(hint);
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
    fn chunked_assignment_equals_the_optimum_when_groups_fit_and_never_reuses_a_driver() {
        // Two independent groups: each solved optimally (as in the test above).
        let rows = vec![
            row("r1", &[("d1", 10.0), ("d2", 100.0)]),
            row("x1", &[("e1", 5.0)]),
            row("r2", &[("d1", 10.0), ("d2", 120.0)]),
            row("x2", &[("e1", 7.0), ("e2", 50.0)]),
        ];
        let mut a = assign_in_chunks(&rows, 64);
        a.sort();
        let pairs: Vec<(usize, &str)> = a.iter().map(|(r, d)| (*r, d.as_str())).collect();
        assert_eq!(pairs, vec![(0, "d2"), (1, "e1"), (2, "d1"), (3, "e2")]);
    }

    #[test]
    fn a_large_group_is_solved_in_chunks_without_giving_a_driver_twice() {
        // 500 rides all competing for overlapping drivers: one group, many chunks.
        let rows: Vec<_> = (0..500)
            .map(|i| {
                let c: Vec<(String, f64)> = (0..20)
                    .map(|k| {
                        (
                            format!("d{}", (i + k * 7) % 600),
                            ((i * 31 + k * 17) % 97) as f64,
                        )
                    })
                    .collect();
                (format!("r{i}"), c)
            })
            .collect();
        let a = assign_in_chunks(&rows, 64);
        let mut drivers: Vec<&str> = a.iter().map(|(_, d)| d.as_str()).collect();
        let n = drivers.len();
        drivers.sort_unstable();
        drivers.dedup();
        assert_eq!(drivers.len(), n, "a driver was assigned twice");
        let mut rides: Vec<usize> = a.iter().map(|(r, _)| *r).collect();
        rides.sort_unstable();
        rides.dedup();
        assert_eq!(rides.len(), n, "a ride got two drivers");
        for (r, d) in &a {
            assert!(
                rows[*r].1.iter().any(|(c, _)| c == d),
                "ride {r} got a stranger"
            );
        }
        assert!(n >= 450, "most rides are served: {n}");
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
