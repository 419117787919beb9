//! Middleware applied to every route: a panic in a handler becomes a 500 with
//! the contract's error body (and a log line) instead of a dropped connection.

use std::future::{ready, Future, Ready};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use futures_util::FutureExt;
use parley_actors::ChatError;

use crate::error::ApiError;

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
