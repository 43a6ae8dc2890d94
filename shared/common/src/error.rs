//! The one error body of every geomatch API: RFC 9457 `application/problem+json`.
//!
//! ```json
//! {"type": "about:blank", "title": "Not Found", "status": 404,
//!  "detail": "no route matches GET /v1/nope", "code": "not_found"}
//! ```
//!
//! `code` is the stable, machine-readable identifier clients switch on; `title` is the
//! HTTP reason phrase and `type` is `about:blank`, as RFC 9457 §4.2.1 asks when a problem
//! type has no documentation page of its own; `detail` is for humans and may change.
//!
//! - Domain errors implement [`ErrorCode`] and convert into [`ApiError`] with `?`.
//! - Extractor failures (bad JSON, path, query, body size) become problems through the
//!   handlers that [`crate::http::configure`] installs.
//! - [`problem_responses`] turns any remaining bare error response (405 from the router,
//!   errors raised inside actix) into a problem, so clients only ever see one format.

use std::fmt;

use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    error::{InternalError, JsonPayloadError, PathError, PayloadError, QueryPayloadError},
    http::{
        header::{self, HeaderValue},
        StatusCode,
    },
    middleware::Next,
    HttpRequest, HttpResponse, ResponseError,
};
use geomatch_index::{CoordError, IdError, IndexError};
use serde::{Deserialize, Serialize};

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Detail shown for server errors; the real cause goes to the log, not to the client.
const INTERNAL_DETAIL: &str =
    "the server failed to complete the request; the log has the cause under this request's id";

/// Maps a domain error to its HTTP status and stable code. Implement it next to the
/// error type (or in the service crate) and `?` converts the error into [`ApiError`].
pub trait ErrorCode: fmt::Display {
    fn status(&self) -> StatusCode;
    /// Stable snake_case identifier, e.g. `entry_not_found`. Never change a published one.
    fn code(&self) -> &'static str;
    /// Seconds after which a retry may succeed, sent as `Retry-After`: by default one
    /// second for 503 (a shared store briefly out of reach), none otherwise. Errors that
    /// know better (a rate limit's refill, a daily limit's reset) override it.
    fn retry_after_s(&self) -> Option<u64> {
        (self.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(1)
    }
}

/// The wire form of a problem (RFC 9457). Also what tests deserialize.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
}

/// An error an HTTP handler returns. Renders as `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    /// For humans. For 5xx it is logged but replaced by a generic text in the response.
    detail: String,
    /// Sent as `Retry-After` (seconds) when set.
    retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after_s: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
        }
    }

    /// Sets (or clears) the `Retry-After` seconds.
    pub fn with_retry_after(mut self, seconds: Option<u64>) -> Self {
        self.retry_after_s = seconds;
        self
    }

    pub fn retry_after_s(&self) -> Option<u64> {
        self.retry_after_s
    }

    /// 400 with a specific code, for input a handler refuses after parsing.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 500 `internal_error`; `detail` is logged, never sent.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", detail)
    }

    /// A problem for a bare status, with the generic code of that status.
    pub fn from_status(status: StatusCode, detail: impl Into<String>) -> Self {
        Self::new(status, generic_code(status), detail)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The body sent to the client.
    pub fn problem(&self) -> Problem {
        let detail = if self.status.is_server_error() {
            INTERNAL_DETAIL.to_owned()
        } else {
            self.detail.clone()
        };
        Problem {
            kind: "about:blank".to_owned(),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail,
            code: self.code.to_owned(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let body = serde_json::to_vec(&self.problem())
            .expect("a problem is strings and a number, which always serialize");
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        if let Some(seconds) = self.retry_after_s {
            response.insert_header((header::RETRY_AFTER, seconds));
        }
        response.body(body)
    }
}

impl<E: ErrorCode> From<E> for ApiError {
    fn from(error: E) -> Self {
        Self::new(error.status(), error.code(), error.to_string())
            .with_retry_after(error.retry_after_s())
    }
}

/// The code used when nothing more specific is known than the status.
pub fn generic_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        409 => "conflict",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable_content",
        429 => "too_many_requests",
        431 => "headers_too_large",
        503 => "unavailable",
        504 => "timeout",
        _ if status.is_client_error() => "client_error",
        _ => "internal_error",
    }
}

// ---- extractor error handlers (installed by `http::configure`) ----

/// JSON bodies: malformed → 400 `invalid_json`; well-formed but not the expected shape
/// → 422 `invalid_body`; too large → 413; not `application/json` → 415.
pub fn json_error(error: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &error {
        JsonPayloadError::OverflowKnownLength { length, limit } => too_large(format!(
            "the body is {length} bytes; at most {limit} are accepted"
        )),
        JsonPayloadError::Overflow { limit } => {
            too_large(format!("the body exceeds {limit} bytes"))
        }
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be sent with Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            e.to_string(),
        ),
        JsonPayloadError::Deserialize(e) => {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        }
        JsonPayloadError::Payload(e) => payload_problem(e),
        other => ApiError::bad_request("invalid_body", other.to_string()),
    };
    api.into()
}

/// Path segments that do not parse → 400 `invalid_path`.
pub fn path_error(error: PathError, _req: &HttpRequest) -> actix_web::Error {
    let detail = match &error {
        PathError::Deserialize(e) => e.to_string(),
        other => other.to_string(),
    };
    ApiError::bad_request("invalid_path", detail).into()
}

/// Query strings that do not parse → 400 `invalid_query`.
pub fn query_error(error: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let detail = match &error {
        QueryPayloadError::Deserialize(e) => e.to_string(),
        other => other.to_string(),
    };
    ApiError::bad_request("invalid_query", detail).into()
}

fn payload_problem(error: &PayloadError) -> ApiError {
    match error {
        PayloadError::Overflow => too_large("the body exceeds the size limit"),
        // Every other payload failure is the client's stream (truncated, bad encoding).
        other => ApiError::bad_request("invalid_body", other.to_string()),
    }
}

fn too_large(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", detail)
}

/// Default service: any request no route matches → 404 `not_found`.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no route matches {} {}",
        req.method(),
        req.path()
    )))
}

/// Middleware: rewrites any error response that is not already a problem (405 from the
/// router, errors raised inside actix) as one, keeping its status and headers. Wrap it
/// innermost so the metrics and request-id layers see the final response.
pub async fn problem_responses(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let method = req.method().clone();
    let res = match next.call(req).await {
        Ok(res) => res.map_into_boxed_body(),
        // An error that escaped as `Err` (from a scope's middleware, say) has no request
        // left to build a response with; give it a problem body to render instead.
        Err(e) => {
            let status = e.as_response_error().status_code();
            let problem = HttpResponse::from_error(ApiError::from_status(status, e.to_string()));
            return Err(InternalError::from_response(e, problem).into());
        }
    };
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&res) {
        return Ok(res);
    }

    let allowed = res
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok());
    let detail = match (res.response().error(), allowed) {
        (Some(e), _) => e.to_string(),
        (None, Some(allowed)) if status == StatusCode::METHOD_NOT_ALLOWED => {
            format!("{method} is not allowed here; allowed: {allowed}")
        }
        (None, _) => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned(),
    };
    let mut problem = HttpResponse::from_error(ApiError::from_status(status, detail));
    for (name, value) in res.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(res.into_response(problem))
}

fn is_problem<B>(res: &ServiceResponse<B>) -> bool {
    res.headers().get(header::CONTENT_TYPE) == Some(&HeaderValue::from_static(PROBLEM_JSON))
}

// ---- the index's errors ----

impl ErrorCode for IndexError {
    fn status(&self) -> StatusCode {
        match self {
            IndexError::NotFound(_) => StatusCode::NOT_FOUND,
            IndexError::StatusConflict { .. } => StatusCode::CONFLICT,
            IndexError::BadResolution(_)
            | IndexError::ResolutionTooFine { .. }
            | IndexError::BadVehicleClass(_)
            | IndexError::BadSeq(_)
            | IndexError::DuplicateId(_) => StatusCode::BAD_REQUEST,
            // Only a misconfigured index can say this; configuration validation prevents it.
            IndexError::BadBucketLevel(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            IndexError::NotFound(_) => "entry_not_found",
            IndexError::StatusConflict { .. } => "status_conflict",
            IndexError::BadResolution(_) | IndexError::ResolutionTooFine { .. } => {
                "invalid_resolution"
            }
            IndexError::BadVehicleClass(_) => "invalid_vehicle_class",
            IndexError::BadSeq(_) => "invalid_seq",
            IndexError::DuplicateId(_) => "duplicate_id",
            IndexError::BadBucketLevel(_) => "internal_error",
        }
    }
}

impl ErrorCode for CoordError {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    fn code(&self) -> &'static str {
        "invalid_position"
    }
}

impl ErrorCode for IdError {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    fn code(&self) -> &'static str {
        "invalid_id"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{body::to_bytes, http::Method, test as actix_test, web, App};

    const LIMIT: usize = 64;

    #[actix_web::test]
    async fn an_api_error_renders_as_problem_json() {
        let err = ApiError::bad_request("invalid_seq", "seq 7 is behind 9");
        let res = err.error_response();

        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
        let body = to_bytes(res.into_body()).await.ok().unwrap();
        let problem: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            problem,
            Problem {
                kind: "about:blank".into(),
                title: "Bad Request".into(),
                status: 400,
                detail: "seq 7 is behind 9".into(),
                code: "invalid_seq".into(),
            }
        );
    }

    #[test]
    fn server_errors_do_not_leak_their_detail() {
        let err = ApiError::internal("connection to 10.0.0.7:6379 refused");

        assert_eq!(err.problem().detail, INTERNAL_DETAIL);
        assert!(
            err.to_string().contains("10.0.0.7"),
            "the log keeps the cause"
        );
    }

    #[test]
    fn domain_errors_convert_with_their_status_and_code() {
        let id = geomatch_index::EntryId::parse("driver-1").unwrap();
        let not_found: ApiError = IndexError::NotFound(id).into();
        let bad_id: ApiError = geomatch_index::EntryId::parse("").unwrap_err().into();

        assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
        assert_eq!(not_found.code(), "entry_not_found");
        assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST);
        assert_eq!(bad_id.code(), "invalid_id");
    }

    #[derive(Deserialize)]
    struct Body {
        lat: f64,
    }

    #[derive(Deserialize)]
    struct Query {
        k: u32,
    }

    async fn echo(body: web::Json<Body>) -> HttpResponse {
        HttpResponse::Ok().json(body.lat)
    }

    async fn by_id(id: web::Path<u32>, query: web::Query<Query>) -> HttpResponse {
        HttpResponse::Ok().json((id.into_inner(), query.k))
    }

    /// Sends `req` through the shared extractor set-up and returns the problem it gets.
    async fn problem_for(req: actix_test::TestRequest) -> (StatusCode, Problem) {
        let app = actix_test::init_service(
            App::new()
                .configure(|cfg| crate::http::configure(cfg, LIMIT))
                .service(web::resource("/echo").route(web::post().to(echo)))
                .service(web::resource("/items/{id}").route(web::get().to(by_id)))
                .wrap(actix_web::middleware::from_fn(problem_responses)),
        )
        .await;
        let res = actix_test::call_service(&app, req.to_request()).await;
        let status = res.status();
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON,
            "every error is problem+json"
        );
        let body = to_bytes(res.into_body()).await.ok().unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    fn post_json(body: impl Into<String>) -> actix_test::TestRequest {
        actix_test::TestRequest::post()
            .uri("/echo")
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(body.into())
    }

    #[actix_web::test]
    async fn malformed_json_is_400_invalid_json() {
        let (status, problem) = problem_for(post_json("{\"lat\": ")).await;

        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(problem.code, "invalid_json");
    }

    #[actix_web::test]
    async fn json_of_the_wrong_shape_is_422_invalid_body() {
        let (status, problem) = problem_for(post_json("{\"lat\": \"north\"}")).await;

        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem.code, "invalid_body");
    }

    #[actix_web::test]
    async fn a_json_body_over_the_limit_is_413_payload_too_large() {
        let body = format!("{{\"lat\": 1.{}}}", "0".repeat(LIMIT));
        let (status, problem) = problem_for(post_json(body)).await;

        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(problem.code, "payload_too_large");
    }

    #[actix_web::test]
    async fn a_body_without_json_content_type_is_415() {
        let req = actix_test::TestRequest::post()
            .uri("/echo")
            .insert_header((header::CONTENT_TYPE, "text/plain"))
            .set_payload("{\"lat\": 1}");
        let (status, problem) = problem_for(req).await;

        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(problem.code, "unsupported_media_type");
    }

    #[actix_web::test]
    async fn a_bad_path_parameter_is_400_invalid_path() {
        let (status, problem) =
            problem_for(actix_test::TestRequest::get().uri("/items/abc?k=1")).await;

        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(problem.code, "invalid_path");
    }

    #[actix_web::test]
    async fn a_bad_query_parameter_is_400_invalid_query() {
        let (status, problem) =
            problem_for(actix_test::TestRequest::get().uri("/items/1?k=-3")).await;

        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(problem.code, "invalid_query");
    }

    #[actix_web::test]
    async fn an_unknown_route_is_404_not_found() {
        let (status, problem) = problem_for(actix_test::TestRequest::get().uri("/nowhere")).await;

        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(problem.code, "not_found");
    }

    #[actix_web::test]
    async fn a_wrong_method_is_405_method_not_allowed() {
        let req = actix_test::TestRequest::default()
            .method(Method::DELETE)
            .uri("/echo");
        let (status, problem) = problem_for(req).await;

        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(problem.code, "method_not_allowed");
    }
}
