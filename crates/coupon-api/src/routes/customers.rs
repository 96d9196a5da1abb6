//! A customer's coupons (from PostgreSQL) and the state of one attempt.

use actix_web::{get, web, HttpResponse};
use coupon_domain::{CouponId, CustomerId};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::routes::parse_id;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldCouponResponse {
    pub coupon_id: i64,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptResponse {
    /// Redis granted the coupon (the customer got, or would have got, a 201).
    pub issued: bool,
    /// coupon-writer has written it to PostgreSQL.
    pub persisted: bool,
}

/// The coupons a customer holds, as written by coupon-writer (eventually consistent).
#[utoipa::path(
    get,
    path = "/api/v1/customers/{customerId}/coupons",
    params(("customerId" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = [HeldCouponResponse]),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE", body = ErrorBody),
    )
)]
#[get("/api/v1/customers/{customerId}/coupons")]
pub async fn coupons(state: web::Data<AppState>, customer: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let customer: CustomerId = parse_id(&customer, "customerId")?;
    let held = state
        .catalog
        .held_by(customer)
        .await
        .map_err(|err| ApiError::unavailable("PostgreSQL is unavailable", &err))?;
    let body: Vec<HeldCouponResponse> = held
        .into_iter()
        .map(|h| HeldCouponResponse { coupon_id: h.coupon_id, name: h.name, issued_at: h.issued_at })
        .collect();
    Ok(HttpResponse::Ok().json(body))
}

/// Whether a customer got a coupon, and whether it is durable yet.
#[utoipa::path(
    get,
    path = "/api/v1/coupons/{couponId}/customers/{customerId}",
    params(("couponId" = i64, Path, minimum = 1), ("customerId" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = AttemptResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE", body = ErrorBody),
    )
)]
#[get("/api/v1/coupons/{couponId}/customers/{customerId}")]
pub async fn attempt(state: web::Data<AppState>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let coupon: CouponId = parse_id(&path.0, "couponId")?;
    let customer: CustomerId = parse_id(&path.1, "customerId")?;
    let issued = state
        .issuer
        .holds(coupon, customer)
        .await
        .map_err(|err| ApiError::unavailable("Redis is unavailable", &err))?;
    let persisted = state
        .catalog
        .is_persisted(coupon, customer)
        .await
        .map_err(|err| ApiError::unavailable("PostgreSQL is unavailable", &err))?;
    Ok(HttpResponse::Ok().json(AttemptResponse { issued, persisted }))
}
