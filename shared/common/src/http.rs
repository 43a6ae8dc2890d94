//! Request limits and extractor set-up shared by every service's routes.

use std::{
    future::{ready, Future, Ready},
    pin::Pin,
};

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform},
    http::header,
    web, Error, ResponseError,
};

use crate::error::{self, ApiError};

/// Installs, for the whole app: body limits on `Json`, `Bytes` and `String` extractors,
/// problem+json answers for every extractor failure, and the 404 default service.
pub fn configure(cfg: &mut web::ServiceConfig, max_body_bytes: usize) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(max_body_bytes)
            .error_handler(error::json_error),
    )
    .app_data(web::PayloadConfig::new(max_body_bytes))
    .app_data(web::PathConfig::default().error_handler(error::path_error))
    .app_data(web::QueryConfig::default().error_handler(error::query_error))
    .default_service(web::to(error::not_found));
}

/// Middleware: answers 413 `payload_too_large` to a request whose `Content-Length` is over
/// the limit, before routing or any handler runs, whatever the route. Bodies sent without
/// a length (chunked) are held to the same limit by the extractors [`configure`] sets up.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    max_bytes: usize,
}

impl BodyLimit {
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes }
    }
}

impl<S, B> Transform<S, ServiceRequest> for BodyLimit
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = BodyLimitService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(BodyLimitService {
            service,
            max_bytes: self.max_bytes,
        }))
    }
}

/// The service [`BodyLimit`] wraps around the app.
pub struct BodyLimitService<S> {
    service: S,
    max_bytes: usize,
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

impl<S, B> Service<ServiceRequest> for BodyLimitService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if let Some(length) = declared_length(&req).filter(|&len| len > self.max_bytes) {
            let refusal = ApiError::new(
                actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the body is {length} bytes; at most {} are accepted",
                    self.max_bytes
                ),
            );
            let res = req.into_response(refusal.error_response());
            return Box::pin(ready(Ok(res.map_into_right_body())));
        }
        let fut = self.service.call(req);
        Box::pin(async move { fut.await.map(ServiceResponse::map_into_left_body) })
    }
}

fn declared_length(req: &ServiceRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{http::StatusCode, test as actix_test, App, HttpResponse};

    #[actix_web::test]
    async fn a_declared_length_over_the_limit_is_refused_before_routing() {
        let app = actix_test::init_service(
            App::new()
                .route("/", web::get().to(HttpResponse::Ok))
                .wrap(BodyLimit::new(8)),
        )
        .await;

        let over = actix_test::TestRequest::get()
            .uri("/")
            .set_payload("123456789");
        let within = actix_test::TestRequest::get()
            .uri("/")
            .set_payload("12345678");

        let res = actix_test::call_service(&app, over.to_request()).await;
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let res = actix_test::call_service(&app, within.to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}
