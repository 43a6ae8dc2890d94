//! Prometheus metrics: one registry per process, the HTTP metrics every route gets, and
//! the `/metrics` endpoint.
//!
//! Routes are labelled by their *pattern* (`/v1/drivers/{id}/location`), never by the raw
//! path, so ids cannot blow up the number of series. Services register their own metrics
//! on the same registry through [`Metrics::register`].

use std::{
    future::{ready, Future, Ready},
    pin::Pin,
    time::{Duration, Instant},
};

use actix_web::{
    dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform},
    http::{Method, StatusCode},
    web, Error, HttpResponse,
};
use prometheus::{
    core::Collector, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::error::ApiError;

/// Route label of requests no route matched (404s for unknown paths).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency buckets in seconds: geomatch answers in about a millisecond, so the fine end
/// matters; the coarse end still catches stalls.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Handle on the process's metrics. Cheap to clone: every part is reference-counted.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// `http_requests_total{method, route, status}`.
    requests: IntCounterVec,
    /// `http_request_duration_seconds{method, route}`: until the response head is ready.
    latency: HistogramVec,
}

impl Metrics {
    /// A fresh registry with the HTTP metrics and, on Linux, the standard `process_*`
    /// series. Each [`Metrics`] is independent, so tests can run several apps at once.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by method, route pattern and status code.",
            ),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from receiving a request to its response head, by method and route pattern.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            requests,
            latency,
        })
    }

    /// The registry itself, for whatever [`Metrics::register`] does not cover.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers a service's own metric (a counter, gauge, histogram or custom collector).
    /// Keep a clone of the metric to update it; registering the same name twice fails.
    pub fn register(&self, collector: impl Collector + 'static) -> Result<(), prometheus::Error> {
        self.registry.register(Box::new(collector))
    }

    /// Everything registered, in the Prometheus text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }

    /// Middleware recording the HTTP metrics of every request it wraps.
    pub fn middleware(&self) -> RecordHttp {
        RecordHttp {
            metrics: self.clone(),
        }
    }

    fn observe(&self, method: &'static str, route: &str, status: StatusCode, took: Duration) {
        self.requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[method, route])
            .observe(took.as_secs_f64());
    }
}

/// Registers `GET /metrics` and makes `metrics` available to handlers as
/// `web::Data<Metrics>`.
pub fn configure(cfg: &mut web::ServiceConfig, metrics: Metrics) {
    cfg.app_data(web::Data::new(metrics))
        .service(web::resource("/metrics").route(web::get().to(serve)));
}

async fn serve(metrics: web::Data<Metrics>) -> Result<HttpResponse, ApiError> {
    let text = metrics
        .render()
        .map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(text))
}

/// A fixed set of method labels, so a client cannot mint series with made-up methods.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Transform made by [`Metrics::middleware`].
pub struct RecordHttp {
    metrics: Metrics,
}

impl<S, B> Transform<S, ServiceRequest> for RecordHttp
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = RecordHttpService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RecordHttpService {
            service,
            metrics: self.metrics.clone(),
        }))
    }
}

/// The service [`RecordHttp`] wraps around the app.
pub struct RecordHttpService<S> {
    service: S,
    metrics: Metrics,
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

impl<S, B> Service<ServiceRequest> for RecordHttpService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let method = method_label(req.method());
        let route = req.match_pattern();
        let metrics = self.metrics.clone();
        let fut = self.service.call(req);
        Box::pin(async move {
            let result = fut.await;
            let status = match &result {
                Ok(res) => res.status(),
                Err(e) => e.as_response_error().status_code(),
            };
            let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE);
            metrics.observe(method, route, status, started.elapsed());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test as actix_test, App};

    #[actix_web::test]
    async fn requests_are_counted_by_route_pattern_not_raw_path() {
        let metrics = Metrics::new().unwrap();
        let app = actix_test::init_service(
            App::new()
                .route("/drivers/{id}", web::get().to(HttpResponse::Ok))
                .wrap(metrics.middleware()),
        )
        .await;

        for uri in ["/drivers/a", "/drivers/b", "/elsewhere"] {
            actix_test::call_service(&app, actix_test::TestRequest::get().uri(uri).to_request())
                .await;
        }
        let text = metrics.render().unwrap();

        assert!(
            text.contains(
                r#"http_requests_total{method="GET",route="/drivers/{id}",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#),
            "{text}"
        );
        assert!(!text.contains("/drivers/a"), "{text}");
        assert!(
            text.contains(
                r#"http_request_duration_seconds_count{method="GET",route="/drivers/{id}"} 2"#
            ),
            "{text}"
        );
    }

    #[test]
    fn services_can_register_their_own_metrics() {
        let metrics = Metrics::new().unwrap();
        let offers = prometheus::IntCounter::new("offers_total", "Offers sent.").unwrap();
        metrics.register(offers.clone()).unwrap();
        offers.inc();

        assert!(metrics.render().unwrap().contains("offers_total 1"));
        assert!(
            metrics.register(offers).is_err(),
            "a name registers only once"
        );
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let made_up = Method::from_bytes(b"BREW").unwrap();

        assert_eq!(method_label(&made_up), "other");
        assert_eq!(method_label(&Method::POST), "POST");
    }
}
