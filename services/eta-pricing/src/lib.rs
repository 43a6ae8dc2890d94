//! eta-pricing: owns ETA, quotes and surge. It estimates when a car will arrive and what a
//! ride will cost before it is booked, with surge pricing from supply and demand per area.
//!
//! # Layout
//! - [`service`]: [`EtaPricing`], the transport-free core: ETA (through the
//!   [`geomatch_eta::EtaModel`] it holds), quotes, demand, surge recomputation, heatmap.
//!   Matching calls it in process: [`EtaPricing::model`], [`EtaPricing::verify_quote`],
//!   [`EtaPricing::record_demand`].
//! - [`fare`]: products and the fare breakdown, in integer minor units.
//! - [`surge`]: demand windows and the surge rule (k-ring, time smoothing, cap,
//!   hysteresis); pure, property-tested for monotonicity.
//! - [`quote`]: signed quote ids (HMAC-SHA256) and their verification.
//! - [`heatmap`]: bounding boxes and the hexagons that meet them.
//! - [`store`] (Redis mode): demand, surge rounds and learned speeds shared by replicas.
//! - [`routes`] (thin HTTP adapters), [`openapi`], [`metrics`], [`error`].
//!
//! The speed learner is fed by location ingest's move observer (the binary wires it to
//! [`EtaPricing::observe_move`]); surge is recomputed by [`EtaPricing::tick`], which the
//! binary calls every second. In Redis mode ([`EtaPricing::with_redis`]) demand and learned
//! speeds go to Redis and surge rounds are computed by one replica per round and loaded by
//! all: the binary runs [`EtaPricing::sync`] every `pricing.sync_interval_ms`.
//!
//! Routes are registered with [`configure`]; the binary mounts them next to the other
//! services (embedded mode) or alone (`geomatch serve --service eta-pricing`, Redis mode).
//! Register each path as one `web::resource` holding all its methods: then a wrong method
//! gets 405 with `Allow` (`cfg.route` would give 404), and a path never hides another
//! service's. Avoid `web::scope`: it claims its whole prefix from the other services.

use actix_web::web;
use geomatch_common::ServiceInfo;

pub mod error;
pub mod fare;
pub mod heatmap;
pub mod metrics;
pub mod openapi;
pub mod quote;
pub mod routes;
pub mod service;
pub mod store;
pub mod surge;

pub use error::PricingError;
pub use quote::{Quote, QuoteError};
pub use service::EtaPricing;

/// The service's name, as in `--service eta-pricing` and its info route.
pub const NAME: &str = "eta-pricing";

/// Registers this service's routes with `pricing` as their state.
pub fn configure(cfg: &mut web::ServiceConfig, pricing: web::Data<EtaPricing>) {
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
