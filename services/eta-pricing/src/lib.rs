//! eta-pricing: owns ETA, quotes and surge. It estimates when a car will arrive and what a
//! ride will cost before it is booked, with surge pricing from supply and demand per area.
//!
//! Routes are registered with [`configure`]; the binary mounts them next to the other
//! services (embedded mode) or alone (`geomatch serve --service eta-pricing`, Redis mode).
//! Register each path as one `web::resource` holding all its methods: then a wrong method
//! gets 405 with `Allow` (`cfg.route` would give 404), and a path never hides another
//! service's. Avoid `web::scope`: it claims its whole prefix from the other services.

use actix_web::web;
use geomatch_common::ServiceInfo;

/// The service's name, as in `--service eta-pricing` and its info route.
pub const NAME: &str = "eta-pricing";

/// Registers this service's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/eta-pricing/info").route(web::get().to(info)));
}

/// `GET /v1/eta-pricing/info`: which service answered, which build.
async fn info() -> web::Json<ServiceInfo> {
    web::Json(ServiceInfo::new(NAME, env!("CARGO_PKG_VERSION")))
}
