//! Logging set-up and the per-request context: request id and tracing span.
//!
//! Every request runs inside a span `request{request_id, method, route}` where `route`
//! is the route pattern (`/v1/drivers/{id}/location`), never the raw path, so logs group
//! by endpoint and carry no ids in the span name. Completion is logged at `debug`
//! (`GEOMATCH__LOG__LEVEL=debug` for an access log), server errors at `error`.

use std::{
    fmt,
    future::{ready, Ready},
    io::IsTerminal,
    time::{Duration, Instant},
};

use actix_web::{
    body::MessageBody,
    dev::{Payload, ServiceRequest, ServiceResponse},
    error::InternalError,
    http::{
        header::{HeaderName, HeaderValue},
        StatusCode,
    },
    middleware::Next,
    FromRequest, HttpMessage, HttpRequest,
};
use tracing::Instrument;
use tracing_subscriber::{filter::ParseError, EnvFilter};

use crate::{
    config::{LogFormat, LogSettings},
    error::ApiError,
    metrics::UNMATCHED_ROUTE,
};

/// Header carrying the request id in both directions.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log.level {level:?} is not a valid filter: {source}")]
    Filter {
        level: String,
        #[source]
        source: ParseError,
    },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber: plain or JSON lines on stdout, filtered by
/// `settings.level`. Also routes the `log` records actix emits into tracing. Call once.
pub fn init(settings: &LogSettings) -> Result<(), TelemetryError> {
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = EnvFilter::try_new(&settings.level).map_err(|source| TelemetryError::Filter {
        level: settings.level.clone(),
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours for a terminal only, not for files and log collectors.
        .with_ansi(std::io::stdout().is_terminal());
    let installed = match settings.format {
        LogFormat::Plain => builder.finish().try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInstalled)
}

/// The id of one request: the client's `X-Request-Id` when it is sane (1–128 characters
/// from `A–Z a–z 0–9 - _ . :`), otherwise 32 random hex digits. Handlers can take it as
/// an extractor to log it or pass it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A new random id.
    pub fn generate() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }

    /// The client's id, if it is safe to log and echo.
    pub fn from_client(value: &HeaderValue) -> Option<Self> {
        let value = value.to_str().ok()?;
        let sane = (1..=MAX_REQUEST_ID_LEN).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        sane.then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromRequest for RequestId {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions().get::<RequestId>().cloned().ok_or_else(|| {
                ApiError::internal("the request_context middleware is not installed")
            }),
        )
    }
}

/// Middleware (use with `actix_web::middleware::from_fn`, outermost): assigns the request
/// id, echoes it in `X-Request-Id`, runs the request inside its span and logs the outcome.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(RequestId::from_client)
        .unwrap_or_else(RequestId::generate);
    req.extensions_mut().insert(id.clone());
    let route = req.match_pattern();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        route = route.as_deref().unwrap_or(UNMATCHED_ROUTE),
    );

    let id_header = HeaderValue::from_str(id.as_str()).ok();
    match next.call(req).instrument(span.clone()).await {
        Ok(mut res) => {
            span.in_scope(|| log_outcome(res.status(), res.response().error(), started.elapsed()));
            if let Some(value) = id_header {
                res.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            Ok(res)
        }
        // An error that escaped every layer: render it now so it still carries the id.
        Err(e) => {
            let mut res = e.error_response();
            span.in_scope(|| log_outcome(res.status(), Some(&e), started.elapsed()));
            if let Some(value) = id_header {
                res.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            Err(InternalError::from_response(e, res).into())
        }
    }
}

fn log_outcome(status: StatusCode, error: Option<&actix_web::Error>, took: Duration) {
    let latency_ms = took.as_secs_f64() * 1e3;
    if status.is_server_error() {
        let error = error.map(tracing::field::display);
        tracing::error!(
            status = status.as_u16(),
            latency_ms,
            error,
            "request failed"
        );
    } else {
        tracing::debug!(status = status.as_u16(), latency_ms, "request finished");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{middleware::from_fn, test as actix_test, web, App, HttpResponse};

    async fn echo_id(id: RequestId) -> HttpResponse {
        HttpResponse::Ok().body(id.to_string())
    }

    async fn call_with(header: Option<&str>) -> (String, String) {
        let app = actix_test::init_service(
            App::new()
                .route("/", web::get().to(echo_id))
                .wrap(from_fn(request_context)),
        )
        .await;
        let mut req = actix_test::TestRequest::get().uri("/");
        if let Some(value) = header {
            req = req.insert_header((REQUEST_ID_HEADER, value));
        }
        let res = actix_test::call_service(&app, req.to_request()).await;
        let echoed = res
            .headers()
            .get(REQUEST_ID_HEADER)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let seen = String::from_utf8(actix_test::read_body(res).await.to_vec()).unwrap();
        (echoed, seen)
    }

    #[actix_web::test]
    async fn a_sane_client_request_id_is_kept_and_echoed() {
        let (echoed, seen) = call_with(Some("req-42.a:b_c")).await;

        assert_eq!(echoed, "req-42.a:b_c");
        assert_eq!(seen, "req-42.a:b_c");
    }

    #[actix_web::test]
    async fn a_missing_or_unsafe_request_id_is_replaced_by_a_generated_one() {
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        for header in [
            None,
            Some("has space"),
            Some("a\"quote"),
            Some(long.as_str()),
        ] {
            let (echoed, seen) = call_with(header).await;

            assert_eq!(echoed, seen, "handler and client see the same id");
            assert_eq!(echoed.len(), 32, "{header:?} -> {echoed}");
            assert!(echoed.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(RequestId::generate(), RequestId::generate());
    }

    #[test]
    fn a_bad_level_is_refused() {
        let settings = LogSettings {
            format: LogFormat::Plain,
            level: "info,=[".to_owned(),
        };

        assert!(matches!(
            init(&settings),
            Err(TelemetryError::Filter { .. })
        ));
    }
}
