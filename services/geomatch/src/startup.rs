//! Building and running the server.

use std::{future::Future, io, net::TcpListener, sync::Arc};

use actix_web::{dev::Server, middleware::from_fn, web, App, HttpServer};
use anyhow::Context;
use eta_pricing::{metrics::PricingMetrics, EtaPricing};
use geomatch_common::{
    auth::Authenticator, error, health, http, metrics, telemetry, Metrics, Mode, NotReady,
    Readiness, Settings,
};
use geomatch_index::Index;
use location_ingest::follower::{Follower, FollowerMetrics};
use location_ingest::{
    ingest::now_ms, metrics::IngestMetrics, store::RedisStore, stream::Hub, Ingest, Store,
};
use matching::book::{Book, MemoryBook};
use matching::people::{People, PeopleStore};
use matching::redis_book::{RedisBook, RedisNotifier};
use matching::{metrics::MatchingMetrics, Dispatcher, Notifier};

/// Which services' routes a process mounts (`--service`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Services {
    /// Every service in one process: embedded mode.
    #[default]
    All,
    /// The driver location push API.
    LocationIngest,
    /// Ride dispatch and people nearby.
    Matching,
    /// ETA, quotes and surge.
    EtaPricing,
}

impl Services {
    fn includes_ingest(self) -> bool {
        matches!(self, Services::All | Services::LocationIngest)
    }

    fn includes_matching(self) -> bool {
        matches!(self, Services::All | Services::Matching)
    }

    fn includes_eta_pricing(self) -> bool {
        matches!(self, Services::All | Services::EtaPricing)
    }

    /// Registers the selected services' routes.
    fn configure(self, cfg: &mut web::ServiceConfig, state: &ServiceState) {
        // Matching first: its `/v1/drivers/nearby` must win over ingest's
        // `/v1/drivers/{driver_id}`.
        if self.includes_matching() {
            matching::configure(cfg, state.dispatcher.clone());
            matching::people::configure(cfg, state.people.clone());
        }
        if self.includes_ingest() {
            location_ingest::configure(cfg, state.ingest.clone(), state.hub.clone());
        }
        if self.includes_eta_pricing() {
            eta_pricing::configure(cfg, state.pricing.clone());
        }
    }

    /// The OpenAPI 3 document of the mounted routes.
    fn openapi(self) -> serde_json::Value {
        let mut paths = serde_json::Map::new();
        let mut schemas = serde_json::Map::new();
        schemas.insert("Problem".into(), serde_json::json!({
            "type": "object", "description": "RFC 9457 problem details, application/problem+json",
            "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                           "detail": {"type": "string"}, "code": {"type": "string", "description": "stable machine-readable code"}}
        }));
        if self.includes_ingest() {
            if let serde_json::Value::Object(p) = location_ingest::openapi::paths() {
                paths.extend(p);
            }
            if let serde_json::Value::Object(s) = location_ingest::openapi::schemas() {
                schemas.extend(s);
            }
        }
        if self.includes_matching() {
            if let serde_json::Value::Object(p) = matching::openapi::paths() {
                paths.extend(p);
            }
            if let serde_json::Value::Object(s) = matching::openapi::schemas() {
                schemas.extend(s);
            }
            if let serde_json::Value::Object(p) = matching::people::openapi::paths() {
                paths.extend(p);
            }
            if let serde_json::Value::Object(s) = matching::people::openapi::schemas() {
                schemas.extend(s);
            }
        }
        if self.includes_eta_pricing() {
            if let serde_json::Value::Object(p) = eta_pricing::openapi::paths() {
                paths.extend(p);
            }
            if let serde_json::Value::Object(s) = eta_pricing::openapi::schemas() {
                schemas.extend(s);
            }
        }
        serde_json::json!({
            "openapi": "3.1.0",
            "info": {"title": "geomatch", "version": env!("CARGO_PKG_VERSION")},
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
            }
        })
    }
}

/// The services' own state, built once per process.
#[derive(Clone)]
struct ServiceState {
    ingest: web::Data<Ingest>,
    hub: web::Data<Hub>,
    dispatcher: web::Data<Arc<Dispatcher>>,
    pricing: web::Data<EtaPricing>,
    people: web::Data<People>,
}

/// Dispatch verifies quotes with, and reports demand to, eta-pricing in the same process.
struct PricingBridge(Arc<EtaPricing>);

impl matching::dispatch::Pricing for PricingBridge {
    fn verify_quote(
        &self,
        quote_id: &str,
        rider: &str,
        request: &matching::ride::RideRequest,
    ) -> Result<matching::ride::Fare, matching::dispatch::QuoteRefusal> {
        use geomatch_common::ErrorCode;
        let refuse = |code: &'static str, detail: String, forbidden: bool| {
            matching::dispatch::QuoteRefusal {
                forbidden,
                code,
                detail,
            }
        };
        let quote = self
            .0
            .verify_quote(quote_id, rider, &request.product)
            .map_err(|e| {
                refuse(
                    e.code(),
                    e.to_string(),
                    e.status() == actix_web::http::StatusCode::FORBIDDEN,
                )
            })?;
        // A quote prices one trip: the ride must be that trip (within 100 m at each end).
        if quote.pickup.distance_m(&request.pickup) > 100.0
            || quote.dropoff.distance_m(&request.dropoff) > 100.0
        {
            return Err(refuse(
                "quote_trip_mismatch",
                "the quote was made for another pickup or dropoff".into(),
                false,
            ));
        }
        Ok(matching::ride::Fare {
            total_minor: quote.fare.total,
            currency: quote.fare.currency,
        })
    }

    fn price(
        &self,
        request: &matching::ride::RideRequest,
        now_ms: i64,
    ) -> Option<matching::ride::Fare> {
        let product = self.0.settings().products.get(&request.product)?;
        let trip = self.0.eta(&request.pickup, &request.dropoff, now_ms);
        let surge = (self.0.surge_at(&request.pickup).surge_multiplier * 100.0).round() as u16;
        let fare = eta_pricing::fare::fare(product, trip.distance_m, trip.duration_s, surge);
        Some(matching::ride::Fare {
            total_minor: fare.total,
            currency: fare.currency,
        })
    }

    fn record_demand(&self, at: &geomatch_index::Position, now_ms: i64) {
        self.0.record_demand_at(at, now_ms);
    }
}

/// Offers reach drivers through their WebSocket (location-ingest's hub).
struct HubNotifier(web::Data<Hub>);

impl Notifier for HubNotifier {
    fn offer(&self, driver_id: &str, offer: &matching::ride::OfferView) {
        self.0.send(driver_id, offer);
    }
}

/// State every HTTP worker gets a handle on. Cloned once per worker thread.
#[derive(Clone)]
struct Shared {
    /// The index of drivers and profiles; handlers take it as `web::Data<Index>`.
    index: web::Data<Index>,
    /// The process's registry; services register their own metrics on it.
    metrics: Metrics,
    /// What `/health/ready` asks.
    readiness: Readiness,
    max_body_bytes: usize,
    services: Services,
    auth: web::Data<Authenticator>,
    state: ServiceState,
    openapi: web::Data<serde_json::Value>,
}

/// A bound, ready-to-run server.
pub struct Application {
    port: u16,
    server: Server,
    /// Periodic work (expiry sweeps); stopped with the server.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Builds the server with every service mounted (embedded mode).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Services::All).await
    }

    /// Builds the server with the selected services mounted: creates the shared state and
    /// binds `server.host:server.port` (port 0 picks a free port; see [`Self::port`]).
    /// Nothing is served until [`Self::run_until_stopped`] is awaited.
    pub async fn build_with(settings: Settings, services: Services) -> anyhow::Result<Self> {
        settings.validate()?;
        if settings.auth.uses_dev_secret() {
            tracing::warn!("auth.jwt_secret is the built-in development secret; set GEOMATCH__AUTH__JWT_SECRET outside development");
        }

        let index = Arc::new(Index::new(settings.index).context("creating the index")?);
        let metrics = Metrics::new().context("registering metrics")?;
        let ingest_metrics = IngestMetrics::new(&metrics).context("registering ingest metrics")?;
        let (store, readiness) = match settings.mode {
            Mode::Embedded => (Store::Embedded, Readiness::always()),
            Mode::Redis => {
                let redis = Arc::new(
                    RedisStore::new(&settings.redis, ingest_metrics.clone())
                        .context("creating the Redis pool")?,
                );
                let probe = redis.clone();
                let readiness = Readiness::new(move || {
                    let probe = probe.clone();
                    async move { probe.ping().await.map_err(|e| NotReady(e.to_string())) }
                });
                (Store::Redis(redis), readiness)
            }
        };
        let people_store = match &store {
            Store::Embedded => PeopleStore::Embedded(Default::default()),
            // People nearby shares the process's Redis pool.
            Store::Redis(redis) => PeopleStore::Redis(matching::people::redis::RedisPeople::new(
                redis.redis().clone(),
            )),
        };
        let people = web::Data::new(People::new(
            index.clone(),
            people_store,
            settings.people.clone(),
        ));
        let mut background = Vec::new();
        let shared_redis = match &store {
            Store::Redis(redis) => Some(redis.redis().clone()),
            Store::Embedded => None,
        };
        background.push(tokio::spawn(people_sweep(
            people.clone().into_inner(),
            match &store {
                Store::Redis(redis) => Some(redis.clone()),
                Store::Embedded => None,
            },
        )));
        if let Store::Redis(redis) = &store {
            // This process's index follows the shared state (snapshot, then the streams).
            let follower = Follower::new(
                redis.redis().pool().clone(),
                index.clone(),
                FollowerMetrics::new(&metrics).context("registering replica metrics")?,
            )
            .skipping_writes_of(redis.writer());
            background.push(tokio::spawn(follower.run()));
        }
        let mut pricing = EtaPricing::new(
            index.clone(),
            &settings.eta,
            &settings.pricing,
            &settings.ingest.vehicle_classes,
            settings.auth.jwt_secret.expose().as_bytes(),
            PricingMetrics::new(&metrics).context("registering pricing metrics")?,
        );
        if let Store::Redis(redis) = &store {
            // Demand, surge rounds and learned speeds shared by every replica (of every
            // service: matching prices and ranks with the same model).
            pricing = pricing.with_redis(redis.redis().clone());
        }
        let pricing = web::Data::new(pricing);
        if pricing.is_shared() {
            background.push(tokio::spawn(pricing_sync(
                pricing.clone().into_inner(),
                settings.pricing.sync_interval_ms,
            )));
        }
        let mut ingest = Ingest::new(
            index.clone(),
            store,
            settings.ingest.clone(),
            ingest_metrics,
        );
        // Every accepted move is a speed sample for the ETA model.
        let learner = pricing.clone();
        ingest.set_move_observer(Arc::new(move |_, previous, to, dt_s| {
            learner.observe_move(&previous.position, to, dt_s, now_ms());
        }));
        let ingest = web::Data::new(ingest);
        let hub = web::Data::new(Hub::default());
        let hub_notifier: Arc<dyn Notifier> = Arc::new(HubNotifier(hub.clone()));
        // Embedded: rides live in this process and offers go straight to the hub. Redis:
        // rides live in Redis and offers are published for whichever process holds the
        // driver's WebSocket.
        let matching_metrics =
            MatchingMetrics::new(&metrics).context("registering matching metrics")?;
        let (book, notifier) = match &shared_redis {
            None => (
                Book::Memory(MemoryBook::new(index.clone())),
                hub_notifier.clone(),
            ),
            Some(redis) => (
                Book::Redis(RedisBook::new(
                    redis.clone(),
                    matching_metrics.redis_seconds.clone(),
                )),
                Arc::new(RedisNotifier::new(redis.clone())) as Arc<dyn Notifier>,
            ),
        };
        let dispatcher = Arc::new(Dispatcher::new(
            index.clone(),
            book,
            settings.matching.clone(),
            settings.ingest.vehicle_classes.clone(),
            notifier,
            matching_metrics,
            pricing.model(),
            Some(Arc::new(PricingBridge(pricing.clone().into_inner()))
                as Arc<dyn matching::dispatch::Pricing>),
        ));
        background.push(tokio::spawn(periodic(
            ingest.clone().into_inner(),
            pricing.clone().into_inner(),
        )));
        if services.includes_matching() {
            let every = std::time::Duration::from_millis(settings.matching.sweep_interval_ms);
            background.push(tokio::spawn(dispatcher.clone().run_sweeps(every)));
            if settings.matching.batch_window_ms > 0 {
                background.push(tokio::spawn(dispatcher.clone().run_batches()));
            }
        }
        if shared_redis.is_some() && (services.includes_matching() || services.includes_ingest()) {
            // Other replicas' offers and rides (search hints), and offers for the drivers
            // connected here.
            background.push(tokio::spawn(matching::redis_book::follow_events(
                settings.redis.url.clone(),
                services.includes_matching().then(|| dispatcher.clone()),
                services.includes_ingest().then(|| hub_notifier.clone()),
            )));
        }
        let shared = Shared {
            index: web::Data::from(index),
            metrics,
            readiness,
            max_body_bytes: settings.server.max_body_bytes,
            services,
            auth: web::Data::new(Authenticator::new(&settings.auth)),
            state: ServiceState {
                ingest,
                hub,
                dispatcher: web::Data::new(dispatcher),
                pricing,
                people,
            },
            openapi: web::Data::new(services.openapi()),
        };

        let server = &settings.server;
        let listener = TcpListener::bind((server.host.as_str(), server.port))
            .with_context(|| format!("binding {}:{}", server.host, server.port))?;
        let address = listener.local_addr()?;

        let mut http_server = HttpServer::new(move || {
            let shared = shared.clone();
            App::new()
                .app_data(shared.index.clone())
                .app_data(shared.auth.clone())
                .app_data(shared.openapi.clone())
                .service(web::resource("/openapi.json").route(web::get().to(openapi)))
                .configure(|cfg| http::configure(cfg, shared.max_body_bytes))
                .configure(|cfg| health::configure(cfg, shared.readiness.clone()))
                .configure(|cfg| metrics::configure(cfg, shared.metrics.clone()))
                .configure(|cfg| shared.services.configure(cfg, &shared.state))
                // Outermost last: the request id and span cover everything, metrics see
                // the final status, and every error leaves as problem+json.
                .wrap(from_fn(error::problem_responses))
                .wrap(http::BodyLimit::new(shared.max_body_bytes))
                .wrap(shared.metrics.middleware())
                .wrap(from_fn(telemetry::request_context))
        })
        .listen(listener)?
        // Signals are handled in `run_until_stopped`, so tests can stop the server too.
        .disable_signals()
        .shutdown_timeout(server.shutdown_timeout_s);
        if server.workers > 0 {
            http_server = http_server.workers(server.workers);
        }

        tracing::info!(
            %address,
            mode = ?settings.mode,
            ?services,
            workers = server.workers,
            "listening"
        );
        Ok(Self {
            port: address.port(),
            server: http_server.run(),
            background,
        })
    }

    /// The port actually bound (useful when the configured port was 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or Ctrl-C, then stops gracefully.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, then stops accepting connections and gives
    /// in-flight requests up to `server.shutdown_timeout_s` to finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let mut server = self.server;
        let handle = server.handle();
        let background = self.background;
        tokio::select! {
            result = &mut server => {
                background.iter().for_each(tokio::task::JoinHandle::abort);
                return result;
            }
            () = shutdown => {}
        }
        tracing::info!("stop requested: refusing new connections, finishing in-flight requests");
        let (result, ()) = tokio::join!(server, handle.stop(true));
        background.iter().for_each(tokio::task::JoinHandle::abort);
        tracing::info!("stopped");
        result
    }
}

/// `GET /openapi.json`
async fn openapi(doc: web::Data<serde_json::Value>) -> web::Json<serde_json::Value> {
    web::Json(doc.get_ref().clone())
}

/// Once a second: takes silent drivers offline, recomputes surge when its interval has
/// passed.
async fn periodic(ingest: Arc<Ingest>, pricing: Arc<EtaPricing>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        pricing.tick(now_ms());
        match ingest.evict_expired(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(drivers = n, "took silent drivers offline"),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed; retrying next second"),
        }
    }
}

/// Redis mode: exchanges demand, surge and learned speeds with the other replicas every
/// `interval_ms` (see [`EtaPricing::sync`]).
async fn pricing_sync(pricing: Arc<EtaPricing>, interval_ms: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = pricing.sync(now_ms()).await {
            tracing::warn!(error = %e, "pricing sync with Redis failed; retrying next interval");
        }
    }
}

/// Once a minute: profiles not seen for `people.not_seen_for_s` leave this process's index
/// (and, in Redis mode, the profiles' seen sets; their state expires by TTL).
async fn people_sweep(people: Arc<People>, redis: Option<Arc<RedisStore>>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_ms();
        let gone = people.evict_stale(now);
        if gone > 0 {
            tracing::info!(profiles = gone, "stale profiles left the index");
        }
        if let Some(redis) = &redis {
            let cutoff = now - people.settings().not_seen_for_s as i64 * 1000;
            if let Err(e) = redis.trim_profiles_seen(cutoff).await {
                tracing::warn!(error = %e, "trimming the profiles' seen sets failed");
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends before killing a pod).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalid_settings_are_refused_before_binding() {
        let mut settings = Settings::default();
        settings.server.max_body_bytes = 0;

        assert!(Application::build(settings).await.is_err());
    }
}
