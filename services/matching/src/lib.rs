//! matching: owns ride dispatch and people-nearby. A rider request is offered to the
//! nearest suitable available drivers one at a time, best first, until one accepts; a
//! people-nearby request returns nearby profiles that fit both sides' preferences, and a
//! like from both sides is a match.
//!
//! Routes are registered with [`configure`]; the binary mounts them next to the other
//! services (embedded mode) or alone (`geomatch serve --service matching`, Redis mode).
//! Register each path as one `web::resource` holding all its methods: then a wrong method
//! gets 405 with `Allow` (`cfg.route` would give 404), and a path never hides another
//! service's. Avoid `web::scope`: it claims its whole prefix from the other services.

use actix_web::web;
use geomatch_common::ServiceInfo;

/// The service's name, as in `--service matching` and its info route.
pub const NAME: &str = "matching";

/// Registers this service's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/matching/info").route(web::get().to(info)));
}

/// `GET /v1/matching/info`: which service answered, which build.
async fn info() -> web::Json<ServiceInfo> {
    web::Json(ServiceInfo::new(NAME, env!("CARGO_PKG_VERSION")))
}
