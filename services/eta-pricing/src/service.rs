//! [`EtaPricing`]: ETA, quotes and surge, independent of HTTP. The HTTP handlers and, in
//! process, matching call it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use geomatch_common::config::{EtaSettings, PricingSettings};
use geomatch_eta::{
    Eta, EtaModel, GreatCircleModel, LearnerConfig, ModelConfig, SampleOutcome, SpeedLearner,
};
use geomatch_index::{cell_of, CellIndex, Filter, Index, Kind, Position, Resolution, Status};
use parking_lot::{Mutex, RwLock};
use rand::Rng;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::error::PricingError;
use crate::fare::{fare, Product};
use crate::heatmap::{cells_in, ring, BBox};
use crate::metrics::PricingMetrics;
use crate::quote::{Quote, QuoteError, QuoteSigner};
use crate::store::{PricingStore, SharedRound, SHARDS};
use crate::surge::{
    surge_cell, DemandBook, SurgeParams, SurgeState, BUCKETS, NO_SURGE, SURGE_RESOLUTION,
};
use geomatch_common::redis::RedisError;

/// Coarsest heatmap resolution.
pub const MIN_HEATMAP_RES: u8 = 4;

/// Server clock, ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `POST /v1/quotes` body.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    pub pickup: Position,
    pub dropoff: Position,
    /// A configured product (vehicle class): `standard`, `xl`, …
    pub product: String,
    /// The rider the quote is for: required of service and admin tokens; a rider token
    /// may only name itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rider_id: Option<String>,
}

/// Where the surge of a quote came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurgeRef {
    pub multiplier: f64,
    /// The H3 resolution-7 cell of the pickup.
    pub cell: String,
}

/// What `POST /v1/quotes` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuoteView {
    /// Opaque; pass it back when requesting the ride.
    pub quote_id: String,
    pub rider_id: String,
    pub product: String,
    pub pickup: Position,
    pub dropoff: Position,
    pub fare: crate::fare::Fare,
    pub surge: SurgeRef,
    /// `null` when no driver of the product is within `pricing.pickup_radius_m`.
    pub pickup_eta_s: Option<u64>,
    pub trip_eta_s: u64,
    pub trip_distance_m: u64,
    /// ms since the Unix epoch.
    pub expires_at: i64,
}

impl QuoteView {
    fn new(quote_id: String, q: Quote) -> Self {
        QuoteView {
            quote_id,
            surge: SurgeRef {
                multiplier: q.fare.surge_multiplier,
                cell: q.surge_cell,
            },
            rider_id: q.rider_id,
            product: q.product,
            pickup: q.pickup,
            dropoff: q.dropoff,
            fare: q.fare,
            pickup_eta_s: q.pickup_eta_s,
            trip_eta_s: q.trip_eta_s,
            trip_distance_m: q.trip_distance_m,
            expires_at: q.expires_at,
        }
    }
}

/// An ETA as the API answers it: whole seconds and metres.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtaView {
    pub duration_s: u64,
    pub distance_m: u64,
    pub method: geomatch_eta::Method,
}

impl From<Eta> for EtaView {
    fn from(e: Eta) -> Self {
        EtaView {
            duration_s: e.duration_s.round() as u64,
            distance_m: e.distance_m.round() as u64,
            method: e.method,
        }
    }
}

/// What `GET /v1/surge` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurgeView {
    pub cell: String,
    pub surge_multiplier: f64,
    /// Available drivers in the cell at the last recomputation.
    pub supply: u32,
    /// Demand events in the cell's window at the last recomputation.
    pub demand: u32,
    /// ms since the Unix epoch of the last recomputation (0 before the first).
    pub computed_at: i64,
}

/// Surge, supply and demand as of the last recomputation; replaced whole, so readers see
/// one consistent round.
#[derive(Debug, Default)]
struct Snapshot {
    computed_at_ms: i64,
    surge: FxHashMap<CellIndex, u16>,
    demand: FxHashMap<CellIndex, u32>,
    supply: FxHashMap<CellIndex, u32>,
}

/// The heatmap: a GeoJSON FeatureCollection.
#[derive(Debug, Serialize, Deserialize)]
pub struct Heatmap {
    #[serde(rename = "type")]
    pub kind: String,
    pub res: u8,
    pub computed_at: i64,
    pub features: Vec<HexFeature>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HexFeature {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub geometry: HexGeometry,
    pub properties: HexProperties,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HexGeometry {
    #[serde(rename = "type")]
    pub kind: String,
    pub coordinates: Vec<Vec<[f64; 2]>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HexProperties {
    pub cell: String,
    pub supply: u32,
    pub demand: u32,
    /// At resolution 7 the cell's multiplier; coarser, the highest of its cells.
    pub surge_multiplier: f64,
}

/// Redis mode: what one replica shares with the others, and its view of the shared state.
struct Shared {
    store: PricingStore,
    /// Ride requests not sent to Redis yet: (cell, bucket) → count. Sent by
    /// [`EtaPricing::sync`]; matching reports demand synchronously, so it cannot wait.
    pending_demand: Mutex<FxHashMap<(CellIndex, i64), u32>>,
    /// This replica's speed samples since the last flush (a batch, see
    /// [`geomatch_eta::Slot::merge`]); the model reads the shared slots instead.
    pending_speeds: SpeedLearner,
    /// Version of the published surge round in use (0: none yet).
    version: AtomicI64,
    /// The last surge round this replica tried to claim.
    last_round: AtomicI64,
    /// Per speed shard, the change counter read up to. Only `sync` uses it.
    speeds_seen: Mutex<[i64; SHARDS]>,
}

/// ETA, quotes and surge. Shared by every handler; matching holds it too.
pub struct EtaPricing {
    /// Supply (available drivers per cell) and the nearest driver for pickup ETAs.
    index: Arc<Index>,
    learner: Arc<SpeedLearner>,
    /// The learner-backed model by default; [`EtaPricing::with_model`] swaps it.
    model: Arc<dyn EtaModel>,
    products: Vec<Product>,
    settings: PricingSettings,
    max_eta_batch: usize,
    params: SurgeParams,
    demand: DemandBook,
    /// Only [`EtaPricing::recompute`] writes it (one at a time: the lock says so).
    surge: Mutex<SurgeState>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// When the next periodic recomputation is due, ms.
    next_recompute_ms: AtomicI64,
    signer: QuoteSigner,
    metrics: PricingMetrics,
    /// Redis mode: demand, surge rounds and learned speeds shared with the other replicas.
    shared: Option<Shared>,
}

impl EtaPricing {
    /// `classes` are `ingest.vehicle_classes` (product names map to their codes);
    /// `quote_secret` is the key material quotes are signed with (the JWT secret).
    pub fn new(
        index: Arc<Index>,
        eta: &EtaSettings,
        pricing: &PricingSettings,
        classes: &[String],
        quote_secret: &[u8],
        metrics: PricingMetrics,
    ) -> Self {
        let learner = Arc::new(SpeedLearner::new(LearnerConfig {
            min_interval_s: eta.min_sample_interval_s,
            max_interval_s: eta.max_sample_interval_s,
            max_speed_mps: eta.max_sample_speed_kmh / 3.6,
            min_speed_mps: eta.min_moving_speed_kmh / 3.6,
            smoothing: eta.smoothing,
            min_samples: eta.min_samples,
            max_slots: eta.max_learned_slots,
        }));
        let model = Arc::new(GreatCircleModel::new(
            ModelConfig {
                circuity: eta.circuity,
                default_speed_mps: eta.default_speed_kmh / 3.6,
                ..ModelConfig::default()
            },
            learner.clone(),
        ));
        let products = classes
            .iter()
            .enumerate()
            .filter_map(|(code, name)| {
                pricing.products.get(name).map(|fare| Product {
                    name: name.clone(),
                    class: code as u8,
                    fare: fare.clone(),
                })
            })
            .collect();
        EtaPricing {
            index,
            learner,
            model,
            products,
            settings: pricing.clone(),
            max_eta_batch: eta.max_batch,
            params: SurgeParams::from(&pricing.surge),
            demand: DemandBook::new(pricing.surge.demand_window_s),
            surge: Mutex::new(SurgeState::default()),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            next_recompute_ms: AtomicI64::new(i64::MIN),
            signer: QuoteSigner::new(quote_secret),
            metrics,
            shared: None,
        }
    }

    /// Redis mode: shares demand, surge and learned speeds with every other replica through
    /// `redis`. Surge is then computed by [`EtaPricing::sync`] (one replica per round), not
    /// by [`EtaPricing::tick`].
    pub fn with_redis(mut self, redis: geomatch_common::redis::Redis) -> Self {
        self.shared = Some(Shared {
            store: PricingStore::new(redis, self.metrics.clone()),
            pending_demand: Mutex::default(),
            pending_speeds: SpeedLearner::new(*self.learner.config()),
            version: AtomicI64::new(0),
            last_round: AtomicI64::new(i64::MIN),
            speeds_seen: Mutex::new([0; SHARDS]),
        });
        self
    }

    /// Whether this instance shares its state through Redis.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Replaces the ETA model (a routing engine, say); the learner keeps learning.
    pub fn with_model(mut self, model: Arc<dyn EtaModel>) -> Self {
        self.model = model;
        self
    }

    /// The ETA model, for in-process callers (matching ranks candidates with it).
    pub fn model(&self) -> Arc<dyn EtaModel> {
        self.model.clone()
    }

    pub fn learner(&self) -> &Arc<SpeedLearner> {
        &self.learner
    }

    pub fn settings(&self) -> &PricingSettings {
        &self.settings
    }

    // ---- ETA ----

    /// One accepted move of a driver (location ingest's observer): a speed sample.
    pub fn observe_move(&self, from: &Position, to: &Position, dt_s: f64, at_ms: i64) {
        let learner = match &self.shared {
            Some(shared) => &shared.pending_speeds,
            None => &self.learner,
        };
        let outcome: SampleOutcome = learner.observe(from, to, dt_s, at_ms);
        self.metrics.sample(outcome);
    }

    pub fn eta(&self, from: &Position, to: &Position, at_ms: i64) -> Eta {
        self.model.eta(from, to, at_ms)
    }

    /// One origin, up to `eta.max_batch` destinations.
    pub fn eta_batch(
        &self,
        from: &Position,
        to: &[Position],
        at_ms: i64,
    ) -> Result<Vec<Eta>, PricingError> {
        if to.is_empty() {
            return Err(PricingError::EmptyBatch);
        }
        if to.len() > self.max_eta_batch {
            return Err(PricingError::BatchTooLarge {
                got: to.len(),
                max: self.max_eta_batch,
            });
        }
        Ok(self.model.eta_many(from, to, at_ms))
    }

    // ---- quotes ----

    fn product(&self, name: &str) -> Result<&Product, PricingError> {
        self.products
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| PricingError::UnknownProduct(name.to_owned()))
    }

    /// A signed quote for `rider`; counts as demand at the pickup (once per rider, cell
    /// and window; in Redis mode across replicas, and a Redis failure refuses the quote).
    pub async fn quote(
        &self,
        rider: &str,
        req: &QuoteRequest,
        now_ms: i64,
    ) -> Result<QuoteView, PricingError> {
        if rider.is_empty() || rider.len() > 128 || !rider.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(PricingError::BadRider);
        }
        let product = self.product(&req.product)?;
        let straight_km = req.pickup.distance_m(&req.dropoff) / 1000.0;
        if straight_km > self.settings.max_trip_km {
            return Err(PricingError::TripTooLong {
                km: straight_km,
                max_km: self.settings.max_trip_km,
            });
        }
        let cell = cell_of(&req.pickup, SURGE_RESOLUTION);
        let counted = match &self.shared {
            None => self.demand.record_quote(rider, cell, now_ms),
            Some(shared) => {
                let bucket_ms = self.demand.bucket_ms();
                let window_ms = self.demand.window_ms();
                let bucket = now_ms.div_euclid(bucket_ms);
                shared
                    .store
                    .record_quote(rider, cell, bucket, window_ms, bucket_ms)
                    .await
                    .map_err(|e| PricingError::Unavailable(e.to_string()))?
            }
        };
        self.metrics
            .demand
            .with_label_values(&[if counted { "quote" } else { "repeat_quote" }])
            .inc();
        let surge = self.surge_hundredths(cell);
        let filter = Filter::available_drivers().vehicle_class(product.class);
        let pickup_eta_s = self
            .index
            .nearest(&req.pickup, 1, &filter, Some(self.settings.pickup_radius_m))
            .first()
            .map(|n| {
                self.model
                    .eta(&n.entry.position, &req.pickup, now_ms)
                    .duration_s
                    .round() as u64
            });
        let trip = self.model.eta(&req.pickup, &req.dropoff, now_ms);
        let quote = Quote {
            rider_id: rider.to_owned(),
            product: product.name.clone(),
            pickup: req.pickup,
            dropoff: req.dropoff,
            fare: fare(&product.fare, trip.distance_m, trip.duration_s, surge),
            surge_cell: cell.to_string(),
            pickup_eta_s,
            trip_eta_s: trip.duration_s.round() as u64,
            trip_distance_m: trip.distance_m.round() as u64,
            issued_at: now_ms,
            expires_at: now_ms + self.settings.quote_ttl_s as i64 * 1000,
            nonce: format!("{:016x}", rand::rng().random::<u64>()),
        };
        let id = self.signer.sign(&quote);
        self.metrics
            .quotes
            .with_label_values(&[&product.name])
            .inc();
        Ok(QuoteView::new(id, quote))
    }

    /// For matching, at ride creation: the quote behind `quote_id` if it is genuine,
    /// unexpired, made for `rider` and for `product`.
    pub fn verify_quote(
        &self,
        quote_id: &str,
        rider: &str,
        product: &str,
    ) -> Result<Quote, QuoteError> {
        self.verify_quote_at(quote_id, rider, product, now_ms())
    }

    /// [`EtaPricing::verify_quote`] at a given time.
    pub fn verify_quote_at(
        &self,
        quote_id: &str,
        rider: &str,
        product: &str,
        now_ms: i64,
    ) -> Result<Quote, QuoteError> {
        let result = self.signer.verify(quote_id, rider, Some(product), now_ms);
        self.count_verification(&result);
        result
    }

    /// `GET /v1/quotes/{id}`: the quote if genuine and unexpired, and made for `rider`
    /// (`None`: a privileged caller, any rider).
    pub fn get_quote(
        &self,
        quote_id: &str,
        rider: Option<&str>,
        now_ms: i64,
    ) -> Result<QuoteView, QuoteError> {
        let result = self.signer.open(quote_id).and_then(|q| {
            if rider.is_some_and(|r| r != q.rider_id) {
                Err(QuoteError::WrongRider)
            } else if now_ms >= q.expires_at {
                Err(QuoteError::Expired {
                    expired_at: q.expires_at,
                })
            } else {
                Ok(q)
            }
        });
        self.count_verification(&result);
        result.map(|q| QuoteView::new(quote_id.to_owned(), q))
    }

    fn count_verification(&self, result: &Result<Quote, QuoteError>) {
        let label = match result {
            Ok(_) => "ok",
            Err(e) => e.name(),
        };
        self.metrics.verifications.with_label_values(&[label]).inc();
    }

    // ---- surge ----

    /// For matching: one ride request in `cell` (any resolution at or finer than 7).
    pub fn record_demand(&self, cell: CellIndex, now_ms: i64) {
        match &self.shared {
            None => self.demand.record(cell, now_ms),
            Some(shared) => {
                let bucket = now_ms.div_euclid(self.demand.bucket_ms());
                *shared
                    .pending_demand
                    .lock()
                    .entry((surge_cell(cell), bucket))
                    .or_insert(0) += 1;
            }
        }
        self.metrics
            .demand
            .with_label_values(&["ride_request"])
            .inc();
    }

    /// [`EtaPricing::record_demand`] at a position.
    pub fn record_demand_at(&self, at: &Position, now_ms: i64) {
        self.record_demand(cell_of(at, SURGE_RESOLUTION), now_ms);
    }

    /// The published multiplier of `cell`'s resolution-7 cell, hundredths (100 = none).
    pub fn surge_hundredths(&self, cell: CellIndex) -> u16 {
        let cell = surge_cell(cell);
        self.snapshot
            .read()
            .surge
            .get(&cell)
            .copied()
            .unwrap_or(NO_SURGE)
    }

    /// `GET /v1/surge`: the surge at a position.
    pub fn surge_at(&self, at: &Position) -> SurgeView {
        let cell = cell_of(at, SURGE_RESOLUTION);
        let snap = self.snapshot.read().clone();
        SurgeView {
            cell: cell.to_string(),
            surge_multiplier: f64::from(snap.surge.get(&cell).copied().unwrap_or(NO_SURGE)) / 100.0,
            supply: snap.supply.get(&cell).copied().unwrap_or(0),
            demand: snap.demand.get(&cell).copied().unwrap_or(0),
            computed_at: snap.computed_at_ms,
        }
    }

    /// Recomputes surge when `pricing.surge.interval_s` has passed since the last time.
    /// Call it often (the binary does, every second). Returns whether it recomputed.
    pub fn tick(&self, now_ms: i64) -> bool {
        if self.shared.is_some() {
            return false; // Redis mode: `sync` runs the shared rounds
        }
        let due = self.next_recompute_ms.load(Ordering::Relaxed);
        if now_ms < due {
            return false;
        }
        let next = now_ms + self.settings.surge.interval_s as i64 * 1000;
        if self
            .next_recompute_ms
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false; // another caller took this round
        }
        self.recompute(now_ms);
        true
    }

    /// One recomputation now: demand in the window, available drivers per cell, surge;
    /// then the learned-cells gauge.
    pub fn recompute(&self, now_ms: i64) {
        let demand = self.demand.counts(now_ms);
        let supply = self.supply();
        let published = {
            let mut state = self.surge.lock();
            state.recompute(&self.params, &demand, &supply);
            state.published()
        };
        self.observe_round(&published);
        self.metrics
            .learned_cells
            .set(self.learner.learned_cells() as i64);
        self.metrics.learned_slots.set(self.learner.slots() as i64);
        self.install(now_ms, published, demand, supply);
    }

    /// Available drivers per resolution-7 cell, from this process's index (which, in
    /// Redis mode, follows the shared driver state).
    fn supply(&self) -> FxHashMap<CellIndex, u32> {
        match self.index.cell_counts(SURGE_RESOLUTION) {
            Ok(counts) => counts
                .into_iter()
                .map(|(cell, c)| (cell, c.get(Kind::Driver, Status::Available)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            // Configuration validation keeps the index at resolution 7 or finer.
            Err(_) => FxHashMap::default(),
        }
    }

    /// The surge distribution of a round this process computed.
    fn observe_round(&self, published: &FxHashMap<CellIndex, u16>) {
        self.metrics.surge_rounds.inc();
        for h in published.values() {
            self.metrics.surge_multiplier.observe(f64::from(*h) / 100.0);
        }
    }

    /// Makes a round the one quotes, `GET /v1/surge` and the heatmap answer from.
    fn install(
        &self,
        computed_at_ms: i64,
        surge: FxHashMap<CellIndex, u16>,
        demand: FxHashMap<CellIndex, u32>,
        supply: FxHashMap<CellIndex, u32>,
    ) {
        let max = surge.values().copied().max().unwrap_or(NO_SURGE);
        self.metrics.surge_cells.set(surge.len() as i64);
        self.metrics.surge_max.set(f64::from(max) / 100.0);
        *self.snapshot.write() = Arc::new(Snapshot {
            computed_at_ms,
            surge,
            demand,
            supply,
        });
    }

    // ---- Redis mode ----

    /// Redis mode, every `pricing.sync_interval_ms` on every replica: sends this replica's
    /// ride-request demand and speed samples; computes and publishes the surge round if it
    /// is due and this replica claims it; loads the published round when it changed; reads
    /// back the shared learned speeds that changed. Each step runs even when an earlier one
    /// failed (demand not sent is kept for the next call); the first error is returned.
    /// Embedded mode: does nothing.
    pub async fn sync(&self, now_ms: i64) -> Result<(), RedisError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let results = [
            self.flush_demand(shared, now_ms).await,
            self.flush_speeds(shared).await,
            self.surge_round(shared, now_ms).await,
            self.load_round(shared).await,
            self.pull_speeds(shared).await,
        ];
        results.into_iter().collect()
    }

    async fn flush_demand(&self, shared: &Shared, now_ms: i64) -> Result<(), RedisError> {
        let events = std::mem::take(&mut *shared.pending_demand.lock());
        let bucket_ms = self.demand.bucket_ms();
        let ttl_ms = self.demand.window_ms() + bucket_ms;
        let result = shared.store.add_demand(&events, ttl_ms).await;
        if result.is_err() {
            // Kept for the next call, except what has left the window meanwhile.
            let oldest = now_ms.div_euclid(bucket_ms) - BUCKETS as i64 + 1;
            let mut pending = shared.pending_demand.lock();
            for ((cell, bucket), n) in events {
                if bucket >= oldest {
                    *pending.entry((cell, bucket)).or_insert(0) += n;
                }
            }
        }
        result
    }

    async fn flush_speeds(&self, shared: &Shared) -> Result<(), RedisError> {
        // A batch that fails is dropped: samples keep coming, and a stale batch merged
        // later would count as newer than what others sent meanwhile.
        let batch = shared.pending_speeds.drain();
        let c = self.learner.config();
        shared
            .store
            .flush_speeds(batch, c.smoothing, c.max_slots)
            .await
    }

    /// Claims, computes and publishes the current surge round, unless another replica
    /// claimed it (or this one already tried).
    async fn surge_round(&self, shared: &Shared, now_ms: i64) -> Result<(), RedisError> {
        let interval_ms = self.settings.surge.interval_s as i64 * 1000;
        let round = now_ms.div_euclid(interval_ms);
        if shared.last_round.load(Ordering::Relaxed) >= round {
            return Ok(());
        }
        let claimed = shared.store.claim_round(round).await?;
        shared.last_round.fetch_max(round, Ordering::Relaxed);
        if !claimed {
            return Ok(());
        }
        // Smoothing and hysteresis continue from the last published round, whoever
        // computed it.
        let previous = shared.store.load_round().await?;
        let mut state = previous.map_or_else(SurgeState::default, |(_, r)| {
            SurgeState::import(
                &self.params,
                r.cells.iter().filter_map(|(c, p, s)| {
                    CellIndex::try_from(*c).ok().map(|cell| (cell, *p, *s))
                }),
            )
        });
        let newest = now_ms.div_euclid(self.demand.bucket_ms());
        let buckets: Vec<i64> = (newest - BUCKETS as i64 + 1..=newest).collect();
        let demand = shared.store.demand(&buckets).await?;
        let supply = self.supply();
        state.recompute(&self.params, &demand, &supply);
        let published = state.published();
        self.observe_round(&published);
        let entries = |m: &FxHashMap<CellIndex, u32>| -> Vec<(u64, u32)> {
            m.iter().map(|(c, n)| (u64::from(*c), *n)).collect()
        };
        let shared_round = SharedRound {
            round,
            computed_at_ms: now_ms,
            cells: state
                .export()
                .into_iter()
                .map(|(c, p, s)| (u64::from(c), p, s))
                .collect(),
            demand: entries(&demand),
            supply: entries(&supply),
        };
        if let Some(version) = shared.store.publish_round(&shared_round).await? {
            shared.version.store(version, Ordering::Relaxed);
            self.metrics.surge_version.set(version);
            self.install(now_ms, published, demand, supply);
        }
        Ok(())
    }

    /// Loads the published round when its version is not the one in use.
    async fn load_round(&self, shared: &Shared) -> Result<(), RedisError> {
        let version = shared.store.round_version().await?;
        if version == shared.version.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Some((version, round)) = shared.store.load_round().await? else {
            return Ok(());
        };
        let cells = |v: &[(u64, u32)]| -> FxHashMap<CellIndex, u32> {
            v.iter()
                .filter_map(|(c, n)| CellIndex::try_from(*c).ok().map(|c| (c, *n)))
                .collect()
        };
        let surge = round
            .cells
            .iter()
            .filter(|(_, p, _)| *p > NO_SURGE)
            .filter_map(|(c, p, _)| CellIndex::try_from(*c).ok().map(|c| (c, *p)))
            .collect();
        self.install(
            round.computed_at_ms,
            surge,
            cells(&round.demand),
            cells(&round.supply),
        );
        shared.version.store(version, Ordering::Relaxed);
        self.metrics.surge_version.set(version);
        Ok(())
    }

    /// Reads the shared speed slots that changed into the model's cache.
    async fn pull_speeds(&self, shared: &Shared) -> Result<(), RedisError> {
        /// Pages per call: a replica starting against a large table loads it over a few
        /// calls instead of one long one.
        const MAX_PAGES: usize = 16;
        let mut seen = *shared.speeds_seen.lock();
        let mut changed = Vec::new();
        let mut result = Ok(());
        for _ in 0..MAX_PAGES {
            match shared.store.changed_speeds(&mut seen, &mut changed).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        *shared.speeds_seen.lock() = seen;
        if !changed.is_empty() {
            for (cell, hour, slot) in changed {
                self.learner.set(cell, hour, slot);
            }
            self.metrics
                .learned_cells
                .set(self.learner.learned_cells() as i64);
            self.metrics.learned_slots.set(self.learner.slots() as i64);
        }
        result
    }

    /// `GET /v1/heatmap`: every cell of `res` meeting `bbox`, with supply, demand and surge
    /// as of the last recomputation.
    pub fn heatmap(&self, bbox: &BBox, res: u8) -> Result<Heatmap, PricingError> {
        let max_res = u8::from(SURGE_RESOLUTION);
        let resolution = Resolution::try_from(res)
            .ok()
            .filter(|_| (MIN_HEATMAP_RES..=max_res).contains(&res))
            .ok_or(PricingError::Resolution {
                got: res,
                min: MIN_HEATMAP_RES,
                max: max_res,
            })?;
        let max = self.settings.max_heatmap_cells;
        let cells = cells_in(bbox, resolution, max).map_err(|e| PricingError::TooManyCells {
            estimate: e.estimate,
            res,
            max,
        })?;
        let snap = self.snapshot.read().clone();
        // Coarser than 7: sum supply and demand over the cells inside, surge the highest.
        let coarse = resolution != SURGE_RESOLUTION;
        let up = |c: &CellIndex| c.parent(resolution).unwrap_or(*c);
        let mut agg: FxHashMap<CellIndex, (u32, u32, u16)> = FxHashMap::default();
        if coarse {
            for (c, n) in &snap.supply {
                agg.entry(up(c)).or_insert((0, 0, NO_SURGE)).0 += n;
            }
            for (c, n) in &snap.demand {
                agg.entry(up(c)).or_insert((0, 0, NO_SURGE)).1 += n;
            }
            for (c, s) in &snap.surge {
                let e = agg.entry(up(c)).or_insert((0, 0, NO_SURGE));
                e.2 = e.2.max(*s);
            }
        }
        let features = cells
            .into_iter()
            .map(|cell| {
                let (supply, demand, surge) = if coarse {
                    agg.get(&cell).copied().unwrap_or((0, 0, NO_SURGE))
                } else {
                    (
                        snap.supply.get(&cell).copied().unwrap_or(0),
                        snap.demand.get(&cell).copied().unwrap_or(0),
                        snap.surge.get(&cell).copied().unwrap_or(NO_SURGE),
                    )
                };
                HexFeature {
                    kind: "Feature".into(),
                    id: cell.to_string(),
                    geometry: HexGeometry {
                        kind: "Polygon".into(),
                        coordinates: vec![ring(cell)],
                    },
                    properties: HexProperties {
                        cell: cell.to_string(),
                        supply,
                        demand,
                        surge_multiplier: f64::from(surge) / 100.0,
                    },
                }
            })
            .collect();
        Ok(Heatmap {
            kind: "FeatureCollection".into(),
            res,
            computed_at: snap.computed_at_ms,
            features,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geomatch_common::Metrics;
    use geomatch_index::{Attributes, EntryId, IndexConfig, Update};

    const T0: i64 = 1_704_067_200_000;

    fn service(tune: impl FnOnce(&mut PricingSettings)) -> EtaPricing {
        let mut pricing = PricingSettings::default();
        tune(&mut pricing);
        let classes: Vec<String> = ["standard", "xl", "premium"].map(String::from).to_vec();
        EtaPricing::new(
            Arc::new(Index::new(IndexConfig::default()).unwrap()),
            &EtaSettings::default(),
            &pricing,
            &classes,
            b"test-secret-test-secret-test-secret!",
            PricingMetrics::new(&Metrics::new().unwrap()).unwrap(),
        )
    }

    fn pos(lat: f64, lng: f64) -> Position {
        Position::new(lat, lng).unwrap()
    }

    fn request(product: &str) -> QuoteRequest {
        QuoteRequest {
            pickup: pos(37.5, 127.0),
            dropoff: pos(37.55, 127.05),
            product: product.into(),
            rider_id: None,
        }
    }

    fn add_driver(s: &EtaPricing, id: &str, at: Position, class: u8) {
        let id = EntryId::parse(id).unwrap();
        s.index
            .upsert(&Update {
                status: Some(Status::Available),
                attrs: Some(Attributes {
                    vehicle_class: class,
                    seats: 4,
                }),
                ..Update::moved(id, Kind::Driver, at, T0)
            })
            .unwrap();
    }

    #[tokio::test]
    async fn a_quote_prices_the_trip_and_verifies_for_matching() {
        let s = service(|_| {});
        let q = s.quote("u1", &request("standard"), T0).await.unwrap();
        assert_eq!(q.fare.currency, "USD");
        assert_eq!(q.fare.surge_multiplier, 1.0);
        assert_eq!(q.pickup_eta_s, None, "no driver near");
        assert!(q.trip_eta_s > 0 && q.trip_distance_m > 7_000);
        assert_eq!(q.expires_at, T0 + 120_000);
        let back = s
            .verify_quote_at(&q.quote_id, "u1", "standard", T0 + 1)
            .unwrap();
        assert_eq!(back.fare, q.fare);
        assert_eq!(
            s.verify_quote_at(&q.quote_id, "u1", "xl", T0 + 1),
            Err(QuoteError::WrongProduct {
                quoted: "standard".into(),
                requested: "xl".into()
            })
        );
        assert!(matches!(
            s.verify_quote_at(&q.quote_id, "u1", "standard", T0 + 120_000),
            Err(QuoteError::Expired { .. })
        ));
    }

    #[tokio::test]
    async fn the_pickup_eta_is_the_nearest_available_driver_of_the_product() {
        let s = service(|_| {});
        add_driver(&s, "xl-near", pos(37.5005, 127.0), 1);
        add_driver(&s, "std", pos(37.51, 127.0), 0);
        let q = s.quote("u1", &request("standard"), T0).await.unwrap();
        // 1.11 km × 1.3 at 25 km/h ≈ 208 s.
        let eta = q.pickup_eta_s.unwrap();
        assert!((200..=216).contains(&eta), "{eta}");
        let xl = s.quote("u1", &request("xl"), T0).await.unwrap();
        assert!(xl.pickup_eta_s.unwrap() < 20);
        assert!(xl.fare.total > q.fare.total, "xl costs more");
    }

    #[tokio::test]
    async fn quotes_count_as_demand_and_demand_over_supply_surges_the_next_quote() {
        let s = service(|p| {
            p.surge.smoothing = 1.0;
        });
        let before = s.quote("u0", &request("standard"), T0).await.unwrap();
        for i in 1..=20 {
            s.quote(&format!("u{i}"), &request("standard"), T0)
                .await
                .unwrap();
        }
        s.record_demand_at(&pos(37.5, 127.0), T0);
        assert!(s.tick(T0));
        assert!(!s.tick(T0 + 1_000), "not due again before the interval");
        let after = s
            .quote("u1", &request("standard"), T0 + 1_000)
            .await
            .unwrap();
        assert!(after.surge.multiplier > 1.0, "{:?}", after.surge);
        assert!(after.fare.total > before.fare.total);
        let view = s.surge_at(&pos(37.5, 127.0));
        assert_eq!(view.demand, 22);
        assert_eq!(view.surge_multiplier, after.surge.multiplier);
        assert_eq!(view.computed_at, T0);
    }

    #[tokio::test]
    async fn unknown_products_and_overlong_trips_are_refused() {
        let s = service(|p| p.max_trip_km = 5.0);
        assert_eq!(
            s.quote("u1", &request("moto"), T0).await.unwrap_err(),
            PricingError::UnknownProduct("moto".into())
        );
        assert!(matches!(
            s.quote("u1", &request("standard"), T0).await,
            Err(PricingError::TripTooLong { .. })
        ));
    }

    #[test]
    fn an_eta_batch_is_bounded() {
        let s = service(|_| {});
        let from = pos(37.5, 127.0);
        assert_eq!(s.eta_batch(&from, &[], T0), Err(PricingError::EmptyBatch));
        let to = vec![pos(37.51, 127.0); 101];
        assert!(matches!(
            s.eta_batch(&from, &to, T0),
            Err(PricingError::BatchTooLarge { got: 101, max: 100 })
        ));
        assert_eq!(s.eta_batch(&from, &to[..100], T0).unwrap().len(), 100);
    }

    #[test]
    fn the_heatmap_lists_hexagons_with_supply_demand_and_surge() {
        let s = service(|p| p.surge.smoothing = 1.0);
        add_driver(&s, "d1", pos(37.5, 127.0), 0);
        for i in 0..10 {
            s.record_demand_at(&pos(37.5, 127.0), T0 + i);
        }
        s.recompute(T0 + 100);
        let bbox: BBox = "126.98,37.49,127.02,37.51".parse().unwrap();
        let map = s.heatmap(&bbox, 7).unwrap();
        let here = cell_of(&pos(37.5, 127.0), Resolution::Seven).to_string();
        let f = map.features.iter().find(|f| f.id == here).unwrap();
        assert_eq!((f.properties.supply, f.properties.demand), (1, 10));
        assert!(f.properties.surge_multiplier > 1.0);
        let coarse = s.heatmap(&bbox, 5).unwrap();
        assert!(coarse.features.len() < map.features.len());
        let total: u32 = coarse.features.iter().map(|f| f.properties.demand).sum();
        assert_eq!(total, 10);
        assert!(matches!(
            s.heatmap(&bbox, 8),
            Err(PricingError::Resolution { got: 8, .. })
        ));
        let world: BBox = "-180,-80,180,80".parse().unwrap();
        assert!(matches!(
            s.heatmap(&world, 7),
            Err(PricingError::TooManyCells { .. })
        ));
    }

    #[test]
    fn observed_moves_teach_the_model() {
        let s = service(|_| {});
        let a = pos(37.5, 127.0);
        let far = a.destination(0.0, 3_000.0);
        let before = s.eta(&a, &far, T0);
        assert_eq!(before.method, geomatch_eta::Method::DefaultSpeed);
        let mut at = a;
        for i in 0..50 {
            // 15 m/s north and back, 5 s apart, around `a`.
            let bearing = if (i / 5) % 2 == 0 { 0.0 } else { 180.0 };
            let next = at.destination(bearing, 75.0);
            s.observe_move(&at, &next, 5.0, T0 + i * 5_000);
            at = next;
        }
        let learned = s.eta(&a, &a.destination(0.0, 500.0), T0);
        assert_eq!(learned.method, geomatch_eta::Method::LearnedSpeed);
        assert!(
            (learned.duration_s - 650.0 / 15.0).abs() < 2.0,
            "{learned:?}"
        );
    }
}
