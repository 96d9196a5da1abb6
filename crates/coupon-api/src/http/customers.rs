//! A customer's coupons (from PostgreSQL) and the state of one attempt.

use actix_web::{get, web, HttpRequest, HttpResponse};
use coupon_domain::{CouponId, CustomerId, Discount, HoldingStatus};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::catalog::{CouponRow, Holding};
use crate::error::{ApiError, ErrorBody};
use crate::http::caller::{Customer, Reader};
use crate::http::state::AppState;
use crate::http::{parse_coupon, parse_id};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldCouponResponse {
    pub coupon_id: i64,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// `AVAILABLE`, `USED`, `EXPIRED` (available but past `validUntil`), or
    /// `REVOKED` (by support staff; it cannot be used).
    pub status: HoldingStatus,
    /// `null`: the coupon cannot be redeemed.
    pub discount: Option<Discount>,
    pub min_order_amount: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_until: OffsetDateTime,
    /// The order using it, and what that order got off (while `USED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub used_at: Option<OffsetDateTime>,
}

impl HeldCouponResponse {
    fn new(holding: Holding, coupon: CouponRow, now: OffsetDateTime) -> Self {
        let valid_until = coupon.valid_until();
        Self {
            coupon_id: coupon.id.get(),
            name: coupon.name,
            issued_at: holding.issued_at,
            status: HoldingStatus::as_of(&holding.status, valid_until, now),
            discount: coupon.discount.policy(),
            min_order_amount: coupon.min_order_amount,
            valid_until,
            order_id: holding.order_id,
            discount_amount: holding.discount_amount,
            used_at: holding.used_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptResponse {
    /// Redis granted the coupon (the customer got, or would have got, a 201).
    pub issued: bool,
    /// coupon-writer has written it to PostgreSQL.
    pub persisted: bool,
}

/// The authenticated customer's coupons, as written by coupon-writer
/// (eventually consistent).
#[utoipa::path(
    get,
    path = "/api/v1/customers/me/coupons",
    security(("customer" = [])),
    responses(
        (status = 200, body = [HeldCouponResponse]),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE", body = ErrorBody),
    )
)]
#[get("/api/v1/customers/me/coupons")]
pub async fn my_coupons(
    customer: Customer,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check(&req, Some(customer.0))?;
    held_by(&state, customer.0).await
}

/// A customer's coupons: for that customer, or for support staff (admin token).
#[utoipa::path(
    get,
    path = "/api/v1/customers/{customerId}/coupons",
    params(("customerId" = i64, Path, minimum = 1)),
    security(("customer" = []), ("bearer" = [])),
    responses(
        (status = 200, body = [HeldCouponResponse]),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: another customer's", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE", body = ErrorBody),
    )
)]
#[get("/api/v1/customers/{customerId}/coupons")]
pub async fn coupons(
    reader: Reader,
    state: web::Data<AppState>,
    customer: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let customer: CustomerId = parse_id(&customer, "customerId")?;
    reader.may_read(customer)?;
    held_by(&state, customer).await
}

async fn held_by(state: &AppState, customer: CustomerId) -> Result<HttpResponse, ApiError> {
    let held = state
        .catalog
        .held_by(customer)
        .await
        .map_err(|err| ApiError::unavailable("PostgreSQL is unavailable", &err))?;
    let now = OffsetDateTime::now_utc();
    let body: Vec<HeldCouponResponse> =
        held.into_iter().map(|(holding, coupon)| HeldCouponResponse::new(holding, coupon, now)).collect();
    Ok(HttpResponse::Ok().json(body))
}

/// Whether a customer got a coupon, and whether it is durable yet: for that
/// customer, or for support staff (admin token).
#[utoipa::path(
    get,
    path = "/api/v1/coupons/{couponId}/customers/{customerId}",
    params(("couponId" = i64, Path, minimum = 1), ("customerId" = i64, Path, minimum = 1)),
    security(("customer" = []), ("bearer" = [])),
    responses(
        (status = 200, body = AttemptResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: another customer's", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE", body = ErrorBody),
    )
)]
#[get("/api/v1/coupons/{couponId}/customers/{customerId}")]
pub async fn attempt(
    reader: Reader,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let coupon: CouponId = parse_coupon(&path.0)?;
    let customer: CustomerId = parse_id(&path.1, "customerId")?;
    reader.may_read(customer)?;
    let issued = state
        .store
        .holding(coupon, customer)
        .await
        .map_err(|err| ApiError::unavailable("Redis is unavailable", &err))?
        .is_some();
    let persisted = state
        .catalog
        .is_persisted(coupon, customer)
        .await
        .map_err(|err| ApiError::unavailable("PostgreSQL is unavailable", &err))?;
    Ok(HttpResponse::Ok().json(AttemptResponse { issued, persisted }))
}
