//! location-ingest: owns the driver location push API. Drivers (and people-nearby
//! profiles) report where they are every few seconds; this service authenticates,
//! validates and orders each report and keeps the shared index (and, in Redis mode, the
//! shared state in Redis) current.
//!
//! # Layout
//! - [`report`]: the report body and its validation.
//! - [`ingest`]: the rules (rate limit, ordering, plausibility, expiry), transport-free.
//! - [`ratelimit`]: per-driver token buckets.
//! - [`store`]: Redis mode: Lua scripts that apply the same rules atomically in Redis.
//! - [`routes`], [`stream`]: thin HTTP and WebSocket adapters.
//! - [`openapi`]: the OpenAPI 3 document of these routes.
//!
//! Routes are registered with [`configure`]; register each path as one `web::resource`
//! holding all its methods (a wrong method then gets 405 with `Allow`).

use actix_web::web;
use geomatch_common::ServiceInfo;

pub mod follower;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod report;
pub mod routes;
pub mod store;
pub mod stream;

pub use ingest::{Ingest, Store};

/// The service's name, as in `--service location-ingest` and its info route.
pub const NAME: &str = "location-ingest";

/// Registers this service's routes, with `ingest` as their shared state.
pub fn configure(
    cfg: &mut web::ServiceConfig,
    ingest: web::Data<Ingest>,
    hub: web::Data<stream::Hub>,
) {
    cfg.app_data(ingest)
        .app_data(hub)
        .service(web::resource("/v1/location-ingest/info").route(web::get().to(info)))
        .service(
            web::resource("/v1/drivers/{driver_id}/location")
                .route(web::put().to(routes::put_location)),
        )
        .service(web::resource("/v1/locations/batch").route(web::post().to(routes::post_batch)))
        .service(
            web::resource("/v1/profiles/{profile_id}/location")
                .route(web::put().to(routes::put_profile_location)),
        )
        .service(
            web::resource("/v1/drivers/{driver_id}/status")
                .route(web::put().to(routes::put_status)),
        )
        .service(web::resource("/v1/drivers/{driver_id}").route(web::get().to(routes::get_driver)))
        .service(
            web::resource("/v1/drivers/{driver_id}/stream").route(web::get().to(stream::connect)),
        );
}

/// `GET /v1/location-ingest/info`: which service answered, which build.
async fn info() -> web::Json<ServiceInfo> {
    web::Json(ServiceInfo::new(NAME, env!("CARGO_PKG_VERSION")))
}
