//! `POST /api/v1/coupons/{couponId}/issue`: the hot path.

use std::time::Instant;

use actix_web::{post, web, HttpRequest, HttpResponse};
use coupon_domain::{CouponId, CustomerId};
use serde::{Deserialize, Serialize};
use tracing_actix_web::RequestId;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::http::caller::Customer;
use crate::http::parse_coupon;
use crate::http::state::AppState;
use crate::issuance::Answer;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssueRequest {
    /// Optional: the customer comes from the credential; when given, it
    /// must be that customer.
    #[serde(default, deserialize_with = "coupon_domain::whole::optional")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub customer_id: Option<CustomerId>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssueResponse {
    pub coupon_id: i64,
    pub customer_id: i64,
    /// Always `ISSUED`.
    pub status: &'static str,
}

/// Try to get one coupon for the authenticated customer. Answers at once,
/// without the database.
#[utoipa::path(
    post,
    path = "/api/v1/coupons/{couponId}/issue",
    params(("couponId" = i64, Path, minimum = 1)),
    request_body = IssueRequest,
    security(("customer" = [])),
    responses(
        (status = 201, body = IssueResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED: no valid customer credential", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: customerId is not the authenticated customer", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ALREADY_ISSUED, SOLD_OUT, or PAUSED (an operator paused the promotion)", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = ErrorBody),
        (status = 422, description = "NOT_STARTED or EXPIRED", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: over the customer's or the address's limit (nothing changed; retry after `Retry-After`)", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE: Redis cannot be reached or the coupon is being rebuilt (nothing changed; retry after `Retry-After`); UNCONFIRMED: maybe issued: the required Redis replicas did not confirm it in time, or Redis's reply was lost (ask `GET /api/v1/coupons/{couponId}/customers/{customerId}`)", body = ErrorBody),
    )
)]
#[post("/api/v1/coupons/{couponId}/issue")]
pub async fn issue(
    customer: Customer,
    request_id: RequestId,
    req: HttpRequest,
    state: web::Data<AppState>,
    coupon: web::Path<String>,
    body: web::Json<IssueRequest>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let result = match body.customer_id {
        Some(named) if named != customer.0 => {
            Err(ApiError::Forbidden("customerId must be the authenticated customer, or left out"))
        }
        _ => match state.limits.check(&req, Some(customer.0)) {
            Ok(()) => decide(&state, &coupon, customer.0, &request_id.to_string()).await,
            Err(err) => Err(err),
        },
    };
    let outcome = match &result {
        Ok(_) => "ISSUED",
        Err(ApiError::Fenced) => "FENCED",
        Err(err) => err.code(),
    };
    state.metrics.issue_requests.with_label_values(&[outcome]).inc();
    state.metrics.issue_seconds.observe(started.elapsed().as_secs_f64());
    result
}

async fn decide(
    state: &AppState,
    coupon: &str,
    customer: CustomerId,
    request_id: &str,
) -> Result<HttpResponse, ApiError> {
    let coupon: CouponId = parse_coupon(coupon)?;
    let answer = state.issuance.issue(coupon, customer, request_id).await;
    if let Some(outcome) = answer.as_ref().ok().and_then(Answer::about_a_known_coupon) {
        state.stats.count(coupon, outcome);
    }
    match answer {
        Ok(Answer::Issued) => Ok(HttpResponse::Created().json(IssueResponse {
            coupon_id: coupon.get(),
            customer_id: customer.get(),
            status: "ISSUED",
        })),
        Ok(Answer::Rejected(rejection)) => Err(ApiError::Rejected(rejection)),
        Ok(Answer::Fenced) => Err(ApiError::Fenced),
        Ok(Answer::Unconfirmed) => Err(ApiError::Unconfirmed),
        Err(err) => Err(ApiError::unavailable("Redis or PostgreSQL is unavailable; nothing was changed", &err)),
    }
}
