//! matching: owns ride dispatch (and, later, people-nearby). A rider request is offered to
//! the nearest suitable available drivers one at a time, best first, until one accepts.
//!
//! # Layout
//! - [`ride`]: ride states, the request body, views, errors with their codes.
//! - [`dispatch`]: [`Dispatcher`], the offer cycle and its invariants (transport-free).
//! - [`routes`]: thin HTTP adapters; [`metrics`].
//! - [`people`]: people nearby (profiles, recommendations, swipes, matches), with its own
//!   routes ([`people::configure`]) and OpenAPI paths.
//!
//! Register each path as one `web::resource` holding all its methods (a wrong method then
//! gets 405 with `Allow`).

use std::sync::Arc;

use actix_web::web;
use geomatch_common::ServiceInfo;

pub mod book;
pub mod dispatch;
pub mod metrics;
pub mod openapi;
pub mod people;
pub mod redis_book;
pub mod ride;
pub mod routes;

pub use dispatch::{Dispatcher, Notifier};

/// The service's name, as in `--service matching` and its info route.
pub const NAME: &str = "matching";

/// Registers this service's routes with `dispatcher` as their state.
pub fn configure(cfg: &mut web::ServiceConfig, dispatcher: web::Data<Arc<Dispatcher>>) {
    cfg.app_data(dispatcher)
        .service(web::resource("/v1/matching/info").route(web::get().to(info)))
        .service(web::resource("/v1/drivers/nearby").route(web::get().to(routes::nearby)))
        .service(web::resource("/v1/rides").route(web::post().to(routes::post_ride)))
        .service(web::resource("/v1/rides/{ride_id}").route(web::get().to(routes::get_ride)))
        .service(web::resource("/v1/rides/{ride_id}/cancel").route(web::post().to(routes::cancel)))
        .service(web::resource("/v1/rides/{ride_id}/tip").route(web::post().to(routes::tip)))
        .service(
            web::resource("/v1/rides/{ride_id}/arrived").route(web::post().to(routes::arrived)),
        )
        .service(web::resource("/v1/rides/{ride_id}/start").route(web::post().to(routes::start)))
        .service(
            web::resource("/v1/rides/{ride_id}/complete").route(web::post().to(routes::complete)),
        )
        .service(
            web::resource("/v1/drivers/{driver_id}/offer")
                .route(web::get().to(routes::current_offer)),
        )
        .service(
            web::resource("/v1/offers/{offer_id}/accept").route(web::post().to(routes::accept)),
        )
        .service(
            web::resource("/v1/offers/{offer_id}/decline").route(web::post().to(routes::decline)),
        );
}

/// `GET /v1/matching/info`: which service answered, which build.
async fn info() -> web::Json<ServiceInfo> {
    web::Json(ServiceInfo::new(NAME, env!("CARGO_PKG_VERSION")))
}
