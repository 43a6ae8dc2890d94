//! eta-pricing: owns ETA, quotes and surge. It estimates when a car will arrive and what a
//! ride will cost before it is booked, with surge pricing from supply and demand per area.
//!
//! # Front door
//! - [`engine`]: the core ([`EtaPricing`]) on its store, and its background tasks (the
//!   surge tick every second; in Redis mode the sync with the other replicas). Every
//!   process builds it: matching prices and ranks with it, location ingest feeds it moves.
//! - [`build`]: the routes and OpenAPI of this service, for processes that serve it.
//! - [`EtaPricing`] implements the ports other services consume
//!   ([`geomatch_common::ports::TripPricing`] for dispatch,
//!   [`geomatch_common::ports::MoveObserver`] for ingest) and gives its ETA model
//!   ([`EtaPricing::model`]).
//!
//! # Layout
//! - `service`: [`EtaPricing`], the transport-free core: ETA (through the
//!   [`geomatch_eta::EtaModel`] it holds), quotes, demand, surge, heatmap.
//! - `ports`: the trip rules other services rely on (a quote must match the trip; a ride
//!   without a quote is priced from product, road ETA and surge) and the move observer.
//! - `store/`: the one mode seam: demand, surge rounds and learned speeds, local
//!   (`store/local.rs`) or shared by every replica through Redis (`store/redis.rs`, keys
//!   and scripts in `store/redis/scripts.rs`). Its contract is written on `store::Store`
//!   and tested against both in `store/contract.rs`.
//! - `rounds`: computing a surge round and the round every reader answers from.
//! - `surge`: demand windows and the surge rule (k-ring, time smoothing, cap,
//!   hysteresis); pure, property-tested for monotonicity.
//! - `fare`: products and the fare breakdown, in integer minor units.
//! - `quote`: signed quote ids (HMAC-SHA256) and their verification.
//! - `heatmap`: bounding boxes and the hexagons that meet them.
//! - `views` (the API bodies), `routes` (thin HTTP adapters), `openapi`, `metrics`,
//!   `error`.
//!
//! Imports go one way: `routes`, `ports` → `service` → `store` → `rounds` → `surge`,
//! `metrics`; nothing imports `service` but the adapters.
//!
//! Register each path as one `web::resource` holding all its methods: then a wrong method
//! gets 405 with `Allow` (`cfg.route` would give 404), and a path never hides another
//! service's. Avoid `web::scope`: it claims its whole prefix from the other services.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use anyhow::Context;
use geomatch_common::service::{every, Deps, Part};
use geomatch_common::ServiceInfo;

mod error;
mod fare;
mod heatmap;
mod metrics;
mod openapi;
mod ports;
mod quote;
mod rounds;
mod routes;
mod service;
mod store;
mod surge;
mod views;

pub use error::PricingError;
pub use fare::Fare;
pub use heatmap::BBoxError;
pub use quote::QuoteError;
pub use service::EtaPricing;
pub use views::{QuoteRequest, QuoteView, SurgeRef};

/// The service's name, as in `--service eta-pricing` and its info route.
pub const NAME: &str = "eta-pricing";

/// The core on the store `deps.redis` chooses, and a tasks-only part: the surge tick
/// every second and, in Redis mode, the sync every `pricing.sync_interval_ms`.
pub fn engine(deps: &Deps) -> anyhow::Result<(Arc<EtaPricing>, Part)> {
    let metrics =
        metrics::PricingMetrics::new(&deps.metrics).context("registering pricing metrics")?;
    let pricing = Arc::new(EtaPricing::new(deps, metrics));
    let ticking = pricing.clone();
    let mut part = Part::new().task(
        "pricing-tick",
        every(Duration::from_secs(1), deps.clock.clone(), move |now| {
            ticking.tick(now);
            std::future::ready(())
        }),
    );
    if pricing.is_shared() {
        let syncing = pricing.clone();
        let interval = Duration::from_millis(deps.settings.pricing.sync_interval_ms);
        part = part.task(
            "pricing-sync",
            every(interval, deps.clock.clone(), move |now| {
                let pricing = syncing.clone();
                async move {
                    if let Err(e) = pricing.sync(now).await {
                        tracing::warn!(error = %e, "pricing sync with Redis failed; retrying next interval");
                    }
                }
            }),
        );
    }
    Ok((pricing, part))
}

/// The routes and OpenAPI of eta-pricing, answering from `engine`.
pub fn build(_deps: &Deps, engine: Arc<EtaPricing>) -> Part {
    Part::new()
        .routes(move |cfg| configure(cfg, web::Data::from(engine.clone())))
        .openapi(openapi::paths(), openapi::schemas())
}

/// Registers this service's routes with `pricing` as their state.
fn configure(cfg: &mut web::ServiceConfig, pricing: web::Data<EtaPricing>) {
    cfg.app_data(pricing)
        .service(web::resource("/v1/eta-pricing/info").route(web::get().to(info)))
        .service(web::resource("/v1/eta").route(web::get().to(routes::get_eta)))
        .service(web::resource("/v1/eta/batch").route(web::post().to(routes::post_eta_batch)))
        .service(web::resource("/v1/quotes").route(web::post().to(routes::post_quote)))
        .service(web::resource("/v1/quotes/{quote_id}").route(web::get().to(routes::get_quote)))
        .service(web::resource("/v1/surge").route(web::get().to(routes::get_surge)))
        .service(web::resource("/v1/heatmap").route(web::get().to(routes::get_heatmap)));
}

/// `GET /v1/eta-pricing/info`: which service answered, which build.
async fn info() -> web::Json<ServiceInfo> {
    web::Json(ServiceInfo::new(NAME, env!("CARGO_PKG_VERSION")))
}

#[cfg(test)]
mod test_support;
