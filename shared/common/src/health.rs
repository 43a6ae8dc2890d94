//! `GET /health/live` and `GET /health/ready`.
//!
//! - live: the process answers HTTP. Always 200 `{"status":"ok"}`; a failing liveness
//!   probe restarts the pod, so it must not depend on anything outside the process.
//! - ready: the process can serve traffic. 200 `{"status":"ok"}` when the [`Readiness`]
//!   check the binary supplies passes, 503 problem+json `not_ready` otherwise. Embedded
//!   mode is always ready; Redis mode plugs in a `PING`.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use actix_web::{http::StatusCode, web, HttpResponse};
use serde_json::json;

use crate::error::ApiError;

/// Default time a check may take: under Kubernetes' default probe timeout of 1 s, so a
/// hung dependency reads as "not ready" rather than a probe timeout.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// Why the process is not ready; shown in the 503 body and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady(pub String);

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), NotReady>>>>;
type CheckFn = dyn Fn() -> CheckFuture + Send + Sync;

/// The readiness check, supplied by the binary. Cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    check: Arc<CheckFn>,
    timeout: Duration,
}

impl Readiness {
    /// Always ready: nothing outside the process is needed (embedded mode).
    pub fn always() -> Self {
        Self::new(|| async { Ok(()) })
    }

    /// Ready when `check` resolves to `Ok` within [`DEFAULT_CHECK_TIMEOUT`]. It runs on
    /// every probe, so keep it to one cheap round trip (a Redis `PING`).
    pub fn new<F, Fut>(check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), NotReady>> + 'static,
    {
        Self {
            check: Arc::new(move || Box::pin(check()) as CheckFuture),
            timeout: DEFAULT_CHECK_TIMEOUT,
        }
    }

    /// Same check, another time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the check once.
    pub async fn check(&self) -> Result<(), NotReady> {
        match tokio::time::timeout(self.timeout, (self.check)()).await {
            Ok(result) => result,
            Err(_) => Err(NotReady(format!(
                "readiness check took longer than {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Registers both health routes with `readiness` as the readiness check.
pub fn configure(cfg: &mut web::ServiceConfig, readiness: Readiness) {
    cfg.app_data(web::Data::new(readiness))
        .service(web::resource("/health/live").route(web::get().to(live)))
        .service(web::resource("/health/ready").route(web::get().to(ready)));
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn ready(readiness: web::Data<Readiness>) -> Result<HttpResponse, ApiError> {
    match readiness.check().await {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({ "status": "ok" }))),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                reason.0,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Problem;
    use actix_web::{test as actix_test, App};

    async fn get_ready(readiness: Readiness) -> (StatusCode, serde_json::Value) {
        let app =
            actix_test::init_service(App::new().configure(|cfg| configure(cfg, readiness))).await;
        let res = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/health/ready")
                .to_request(),
        )
        .await;
        let status = res.status();
        (status, actix_test::read_body_json(res).await)
    }

    #[actix_web::test]
    async fn ready_is_200_when_the_check_passes() {
        let (status, body) = get_ready(Readiness::always()).await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({ "status": "ok" }));
    }

    #[actix_web::test]
    async fn ready_is_503_not_ready_when_the_check_fails() {
        let readiness = Readiness::new(|| async { Err(NotReady("redis: refused".into())) });
        let (status, body) = get_ready(readiness).await;
        let problem: Problem = serde_json::from_value(body).unwrap();

        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(problem.code, "not_ready");
        assert_eq!(problem.status, 503);
    }

    #[actix_web::test]
    async fn a_check_that_hangs_counts_as_not_ready() {
        let readiness =
            Readiness::new(std::future::pending).with_timeout(Duration::from_millis(10));

        assert!(readiness.check().await.is_err());
    }
}
