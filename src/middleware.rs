//! Middleware applied to every route: [`Observe`] gives each request an id
//! (`X-Request-Id`, taken from the client when sane), runs it inside a
//! tracing span carrying that id, and counts it in the metrics; [`CatchPanic`]
//! turns a panic in a handler into a 500 with the contract's error body (and
//! a log line) instead of a dropped connection.

use std::future::{ready, Future, Ready};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use parley_actors::metrics::{Metrics, Rejection};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tracing::Instrument;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use futures_util::FutureExt;
use parley_actors::ChatError;

use crate::error::ApiError;

/// Request ids, spans, logging and HTTP metrics.
pub struct Observe {
    http: HttpMetrics,
    chat: Arc<Metrics>,
}

impl Observe {
    pub fn new(http: HttpMetrics, chat: Arc<Metrics>) -> Self {
        Observe { http, chat }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Observe
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = ObserveService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ObserveService {
            service,
            http: self.http.clone(),
            chat: self.chat.clone(),
        }))
    }
}

pub struct ObserveService<S> {
    service: S,
    http: HttpMetrics,
    chat: Arc<Metrics>,
}

/// A client's request id is kept if it is short and plain; otherwise one is made.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

const REQUEST_ID: &str = "x-request-id";

impl<S, B> Service<ServiceRequest> for ObserveService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let id = request_id(&req);
        let method = req.method().to_string();
        // The path only, never the query: a browser's WebSocket token travels there.
        let span = tracing::info_span!("http", request_id = %id, %method, path = %req.path());
        let response = self.service.call(req).instrument(span.clone());
        let (http, chat) = (self.http.clone(), self.chat.clone());
        Box::pin(async move {
            let result = response.await;
            let (status, route) = match &result {
                Ok(response) => (
                    response.status().as_u16(),
                    response.request().match_pattern(),
                ),
                Err(error) => (error.as_response_error().status_code().as_u16(), None),
            };
            let route = route.as_deref().unwrap_or("unmatched").to_owned();
            http.observe(&route, &method, status, started.elapsed());
            if let Some(reason) = Rejection::for_status(status) {
                chat.rejected(reason);
            }
            span.in_scope(|| {
                tracing::debug!(
                    status,
                    elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "request done"
                )
            });
            let mut response = result?;
            if let Ok(value) = HeaderValue::from_str(&id) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(REQUEST_ID), value);
            }
            Ok(response)
        })
    }
}

/// Request counts and durations by route template, method and status.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> HttpMetrics {
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("a valid counter");
        let duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request durations")
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 17).expect("valid buckets")),
            &["route", "method"],
        )
        .expect("a valid histogram");
        registry
            .register(Box::new(requests.clone()))
            .expect("a unique metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("a unique metric");
        HttpMetrics { requests, duration }
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.duration
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }
}

pub struct CatchPanic;

impl<S, B> Transform<S, ServiceRequest> for CatchPanic
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Transform = CatchPanicService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CatchPanicService { service }))
    }
}

pub struct CatchPanicService<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for CatchPanicService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // The request cannot be kept for the error response (routing needs to
        // own it), so the route is remembered as text and the failure is
        // returned as an error, which actix turns into its response.
        let route = format!("{} {}", req.method(), req.path());
        let response = AssertUnwindSafe(self.service.call(req)).catch_unwind();
        Box::pin(async move {
            match response.await {
                Ok(result) => result.map(ServiceResponse::map_into_boxed_body),
                Err(_) => Err(ApiError(ChatError::internal_msg(format_args!(
                    "handler for {route} panicked"
                )))
                .into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;
    use actix_web::{test, web, App, HttpResponse};

    use super::*;

    #[actix_web::test]
    async fn a_panicking_handler_answers_500_with_the_error_body() {
        let app = test::init_service(App::new().wrap(CatchPanic).route(
            "/boom",
            web::get().to(|| async {
                if true {
                    panic!("secret internals");
                }
                HttpResponse::Ok().finish()
            }),
        ))
        .await;
        let request = test::TestRequest::get().uri("/boom").to_request();
        // The server's dispatcher answers an error with its `error_response`.
        let error = test::try_call_service(&app, request).await.unwrap_err();
        let response = error.error_response();
        assert_eq!(response.status(), 500);
        let body = to_bytes(response.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], 500);
        assert_eq!(body["detail"], "internal server error");
        assert!(body["timestamp"].is_string());
        assert!(!body.to_string().contains("secret"));
    }
}
