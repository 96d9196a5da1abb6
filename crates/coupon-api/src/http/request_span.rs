//! One span per HTTP request (tracing-actix-web's middleware), so every log
//! line a request causes names it: its request id, route and status, and,
//! once known, the customer (set by the `Customer` extractor), who else
//! acted (`admin:<name>` or `service:<name>`, set by the extractors of support
//! staff and services) and the coupon (set by the handlers of a coupon). The issued event carries the request id
//! to coupon-writer in the `request-id` Kafka header.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use coupon_domain::{CouponId, CustomerId};
use tracing::field::Empty;
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

/// Fewer fields than tracing-actix-web's default span: this one is built for
/// every request of the hot path.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request.extensions().get::<RequestId>().copied();
        tracing::info_span!(
            "request",
            request_id = request_id.map(tracing::field::display),
            method = %request.method(),
            route = request.match_pattern().as_deref().unwrap_or("unmatched"),
            status = Empty,
            coupon = Empty,
            customer = Empty,
            caller = Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let status = match outcome {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        span.record("status", status.as_u16());
    }
}

pub fn record_customer(customer: CustomerId) {
    Span::current().record("customer", customer.get());
}

/// Who acted, when it is not a customer: a named admin token or a service.
pub fn record_caller(caller: &str) {
    Span::current().record("caller", caller);
}

pub fn record_coupon(coupon: CouponId) {
    Span::current().record("coupon", coupon.get());
}
