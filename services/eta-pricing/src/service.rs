//! [`EtaPricing`]: ETA, quotes and surge, independent of HTTP and of the mode. The HTTP
//! handlers call it, and in process matching (through [`geomatch_common::ports`]) and
//! location ingest (the moves it observes).

use std::sync::Arc;

use geomatch_common::config::PricingSettings;
use geomatch_common::redis::RedisError;
use geomatch_common::{Clock, Deps};
use geomatch_eta::{Eta, EtaModel, GreatCircleModel, LearnerConfig, ModelConfig, SpeedLearner};
use geomatch_index::{cell_of, CellIndex, Filter, Index, Position, Resolution};
use rand::Rng;
use rustc_hash::FxHashMap;

use crate::error::PricingError;
use crate::fare::{fare, Product};
use crate::heatmap::{cells_in, ring, BBox};
use crate::metrics::PricingMetrics;
use crate::quote::{Quote, QuoteError, QuoteSigner};
use crate::rounds::Rounds;
use crate::store::Store;
use crate::surge::{SurgeParams, Window, NO_SURGE, SURGE_RESOLUTION};
use crate::views::{
    Heatmap, HexFeature, HexGeometry, HexProperties, QuoteRequest, QuoteView, SurgeView,
};

/// Coarsest heatmap resolution.
pub const MIN_HEATMAP_RES: u8 = 4;

/// ETA, quotes and surge. Shared by every handler; matching and ingest hold it too.
pub struct EtaPricing {
    /// Supply (available drivers per cell) and the nearest driver for pickup ETAs.
    index: Arc<Index>,
    /// The learner-backed model, reading [`Store::learner`].
    model: Arc<dyn EtaModel>,
    products: Vec<Product>,
    settings: PricingSettings,
    max_eta_batch: usize,
    /// The installed surge round, and how a round is computed.
    rounds: Rounds,
    /// Demand, rounds and learned speeds: this process's, or shared through Redis.
    store: Store,
    signer: QuoteSigner,
    metrics: PricingMetrics,
    /// Where `now` comes from when the caller does not pass it.
    clock: Clock,
}

impl EtaPricing {
    /// The core on the store `deps.redis` says (local without, shared with). Products are
    /// `ingest.vehicle_classes` priced by `pricing.products`; quotes are signed with the
    /// JWT secret.
    pub(crate) fn new(deps: &Deps, metrics: PricingMetrics) -> Self {
        let settings = &deps.settings;
        let eta = &settings.eta;
        let pricing = &settings.pricing;
        let learner = Arc::new(SpeedLearner::new(LearnerConfig {
            min_interval_s: eta.min_sample_interval_s,
            max_interval_s: eta.max_sample_interval_s,
            max_speed_mps: eta.max_sample_speed_kmh / 3.6,
            min_speed_mps: eta.min_moving_speed_kmh / 3.6,
            smoothing: eta.smoothing,
            min_samples: eta.min_samples,
            max_slots: eta.max_learned_slots,
        }));
        let products = settings
            .ingest
            .vehicle_classes
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
        let store = Store::new(
            deps.redis.clone(),
            Window::new(pricing.surge.demand_window_s),
            pricing.surge.interval_s as i64 * 1000,
            learner,
            metrics.clone(),
        );
        let model = Arc::new(GreatCircleModel::new(
            ModelConfig {
                circuity: eta.circuity,
                default_speed_mps: eta.default_speed_kmh / 3.6,
                ..ModelConfig::default()
            },
            store.learner().clone(),
        ));
        EtaPricing {
            index: deps.index.clone(),
            model,
            products,
            settings: pricing.clone(),
            max_eta_batch: eta.max_batch,
            rounds: Rounds::new(
                deps.index.clone(),
                SurgeParams::from(&pricing.surge),
                metrics.clone(),
            ),
            store,
            signer: QuoteSigner::new(settings.auth.jwt_secret.expose().as_bytes()),
            metrics,
            clock: deps.clock.clone(),
        }
    }

    /// Whether demand, surge and learned speeds are shared with other replicas (Redis).
    pub(crate) fn is_shared(&self) -> bool {
        self.store.is_shared()
    }

    /// The ETA model, for in-process callers (matching ranks candidates with it).
    pub fn model(&self) -> Arc<dyn EtaModel> {
        self.model.clone()
    }

    /// The time now, from the process's clock.
    pub(crate) fn now(&self) -> i64 {
        self.clock.now()
    }

    pub(crate) fn settings(&self) -> &PricingSettings {
        &self.settings
    }

    // ---- ETA ----

    /// One accepted move of a driver (location ingest's observer): a speed sample.
    pub fn observe_move(&self, from: &Position, to: &Position, dt_s: f64, at_ms: i64) {
        let outcome = self.store.samples().observe(from, to, dt_s, at_ms);
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
        let counted = self
            .store
            .count_quote(rider, cell, now_ms)
            .await
            .map_err(|e| PricingError::Unavailable(e.to_string()))?;
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

    /// At ride creation: the quote behind `quote_id` if it is genuine, unexpired at
    /// `now_ms`, made for `rider` and for `product` (see also the trip rule of
    /// [`geomatch_common::ports::TripPricing`]).
    pub(crate) fn verify_quote(
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
    pub(crate) fn get_quote(
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

    /// One ride request in `cell` (any resolution at or finer than 7): demand for surge.
    pub(crate) fn record_demand(&self, cell: CellIndex, now_ms: i64) {
        self.store.record_demand(cell, now_ms);
        self.metrics
            .demand
            .with_label_values(&["ride_request"])
            .inc();
    }

    /// One ride request at `at`: demand for surge in its resolution-7 cell.
    pub(crate) fn record_demand_at(&self, at: &Position, now_ms: i64) {
        self.record_demand(cell_of(at, SURGE_RESOLUTION), now_ms);
    }

    /// The published multiplier of `cell`'s resolution-7 cell, hundredths (100 = none).
    pub(crate) fn surge_hundredths(&self, cell: CellIndex) -> u16 {
        self.rounds.surge_hundredths(cell)
    }

    /// `GET /v1/surge`: the surge at a position.
    pub(crate) fn surge_at(&self, at: &Position) -> SurgeView {
        let cell = cell_of(at, SURGE_RESOLUTION);
        let snap = self.rounds.current();
        SurgeView {
            cell: cell.to_string(),
            surge_multiplier: f64::from(snap.surge.get(&cell).copied().unwrap_or(NO_SURGE)) / 100.0,
            supply: snap.supply.get(&cell).copied().unwrap_or(0),
            demand: snap.demand.get(&cell).copied().unwrap_or(0),
            computed_at: snap.computed_at_ms,
        }
    }

    /// Every second: computes a surge round when `pricing.surge.interval_s` has passed
    /// since the last one and this process computes its own (embedded). Returns whether
    /// it computed one.
    pub fn tick(&self, now_ms: i64) -> bool {
        self.store.tick(now_ms, &self.rounds)
    }

    /// Every `pricing.sync_interval_ms` (Redis mode): exchanges demand, surge rounds and
    /// learned speeds with the other replicas (see `Store::sync`). Embedded: nothing.
    pub(crate) async fn sync(&self, now_ms: i64) -> Result<(), RedisError> {
        self.store.sync(now_ms, &self.rounds).await
    }

    /// `GET /v1/heatmap`: every cell of `res` meeting `bbox`, with supply, demand and surge
    /// as of the last recomputation.
    pub(crate) fn heatmap(&self, bbox: &BBox, res: u8) -> Result<Heatmap, PricingError> {
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
        let snap = self.rounds.current();
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
    use crate::test_support::{engine, pos, request, T0};
    use geomatch_index::{Attributes, EntryId, Kind, Status, Update};

    fn service(tune: impl FnOnce(&mut PricingSettings)) -> Arc<EtaPricing> {
        engine(tune).0
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
            .verify_quote(&q.quote_id, "u1", "standard", T0 + 1)
            .unwrap();
        assert_eq!(back.fare, q.fare);
        assert_eq!(
            s.verify_quote(&q.quote_id, "u1", "xl", T0 + 1),
            Err(QuoteError::WrongProduct {
                quoted: "standard".into(),
                requested: "xl".into()
            })
        );
        assert!(matches!(
            s.verify_quote(&q.quote_id, "u1", "standard", T0 + 120_000),
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
        assert!(s.tick(T0 + 100));
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
