//! What every geomatch service shares, so that all of them configure, fail, log and
//! report the same way.
//!
//! # Layout
//! - [`config`]: [`Settings`], loaded from defaults, a TOML file and `GEOMATCH__…`
//!   environment variables, validated at start-up.
//! - [`error`]: the one error body (RFC 9457 problem+json with a stable `code`),
//!   [`ApiError`], and the [`ErrorCode`] trait domain errors implement.
//! - [`http`]: body limits and extractor error handlers for the whole app.
//! - [`telemetry`]: logging set-up, request ids and the per-request span.
//! - [`metrics`]: the Prometheus registry, HTTP metrics by route pattern, `/metrics`.
//! - [`auth`]: bearer JWTs (HS256, pinned), the [`auth::Principal`] extractor, roles.
//! - [`health`]: `/health/live` and `/health/ready` with a pluggable readiness check.
//! - [`redis`]: Redis calls with a ceiling on each (Redis mode).
//! - [`clock`]: [`Clock`], the one source of `now` (system, or manual in tests).
//! - [`service`]: [`Deps`] and [`Part`], the seam between the binary and each service.
//! - [`ports`]: what one service needs of another, as traits.
//!
//! A binary builds [`Deps`] once, asks each service's `build` for its [`Part`], and mounts
//! the parts in this order (outermost middleware last):
//!
//! ```text
//! App::new()
//!     .configure(|cfg| http::configure(cfg, settings.server.max_body_bytes))
//!     .configure(|cfg| health::configure(cfg, deps.readiness()))
//!     .configure(|cfg| metrics::configure(cfg, deps.metrics.clone()))
//!     .configure(|cfg| mounted.configure(cfg)) // every selected service's routes
//!     .wrap(from_fn(error::problem_responses))
//!     .wrap(http::BodyLimit::new(settings.server.max_body_bytes))
//!     .wrap(metrics.middleware())
//!     .wrap(from_fn(telemetry::request_context))
//! ```

pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod health;
pub mod http;
pub mod metrics;
pub mod ports;
pub mod redis;
pub mod service;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use clock::{now_ms, Clock};
pub use config::{LogFormat, LogSettings, Mode, PeopleSettings, Settings};
pub use error::{ApiError, ErrorCode, Problem};
pub use health::{NotReady, Readiness};
pub use metrics::Metrics;
pub use service::{Deps, Part};
pub use telemetry::RequestId;

use serde::{Deserialize, Serialize};

/// Body of each service's `GET /v1/<service>/info`: which service answered, which build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub service: String,
    pub version: String,
}

impl ServiceInfo {
    pub fn new(service: &str, version: &str) -> Self {
        Self {
            service: service.to_owned(),
            version: version.to_owned(),
        }
    }
}
