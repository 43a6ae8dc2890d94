//! location-ingest: owns the driver location push API. Drivers (and people-nearby
//! profiles) report where they are every few seconds; this service validates each report,
//! orders it against the previous one and writes it into the shared index.
//!
//! Routes are registered with [`configure`]; the binary mounts them next to the other
//! services (embedded mode) or alone (`geomatch serve --service location-ingest`, Redis mode).
//! Register each path as one `web::resource` holding all its methods: then a wrong method
//! gets 405 with `Allow` (`cfg.route` would give 404), and a path never hides another
//! service's. Avoid `web::scope`: it claims its whole prefix from the other services.

use actix_web::web;
use geomatch_common::ServiceInfo;

/// The service's name, as in `--service location-ingest` and its info route.
pub const NAME: &str = "location-ingest";

/// Registers this service's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/location-ingest/info").route(web::get().to(info)));
}

/// `GET /v1/location-ingest/info`: which service answered, which build.
async fn info() -> web::Json<ServiceInfo> {
    web::Json(ServiceInfo::new(NAME, env!("CARGO_PKG_VERSION")))
}
