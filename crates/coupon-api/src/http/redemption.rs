//! Redeem and release a held coupon: by the customer (their credential), or
//! by support staff for a customer (admin token).

use actix_web::{delete, post, web, HttpResponse};
use coupon_domain::{is_valid_order_id, CouponId, CustomerId, HoldingStatus, MAX_AMOUNT, MAX_ORDER_ID_LEN};
use serde::{Deserialize, Serialize};
use tracing_actix_web::RequestId;
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::error::{ApiError, ErrorBody};
use coupon_infra::auth::{SCOPE_REDEEM, SCOPE_RELEASE};

use crate::http::caller::{Admin, Spender};
use crate::http::state::AppState;
use crate::http::{parse_coupon, parse_id, valid_text};
use crate::redemption::revoke::Unit;
use crate::redemption::{Held, OrderRef, Usage};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedeemRequest {
    /// The order service's id: 1 to 64 of `A-Z a-z 0-9 . _ : -`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._:-]{1,64}$")]
    pub order_id: String,
    /// In the currency's smallest unit.
    #[serde(deserialize_with = "coupon_domain::whole::number")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub order_amount: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseRequest {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._:-]{1,64}$")]
    pub order_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageResponse {
    pub coupon_id: i64,
    pub customer_id: i64,
    pub order_id: String,
    /// What the order gets off, in the currency's smallest unit (after a redeem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_amount: Option<i64>,
    /// `USED` after a redeem; `AVAILABLE` after a release (`EXPIRED` if the
    /// coupon is past its validity by then).
    pub status: HoldingStatus,
}

impl From<Usage> for UsageResponse {
    fn from(usage: Usage) -> Self {
        Self {
            coupon_id: usage.coupon.get(),
            customer_id: usage.customer.get(),
            order_id: usage.order_id,
            discount_amount: usage.discount_amount,
            status: usage.status,
        }
    }
}

fn order_ref(coupon: CouponId, customer: CustomerId, order_id: String) -> Result<OrderRef, ApiError> {
    if !is_valid_order_id(&order_id) {
        return Err(ApiError::InvalidRequest(format!(
            "orderId must be 1 to {MAX_ORDER_ID_LEN} of A-Z a-z 0-9 . _ : -"
        )));
    }
    Ok(OrderRef { coupon, customer, order_id })
}

async fn redeem(
    state: &AppState,
    customer: CustomerId,
    coupon: &str,
    body: RedeemRequest,
    audited: Option<&Actor<'_>>,
) -> Result<HttpResponse, ApiError> {
    let coupon: CouponId = parse_coupon(coupon)?;
    let order = order_ref(coupon, customer, body.order_id)?;
    if !(1..=MAX_AMOUNT).contains(&body.order_amount) {
        return Err(ApiError::InvalidRequest(format!("orderAmount must be between 1 and {MAX_AMOUNT}")));
    }
    let outcome = state.redemptions.redeem(&order, body.order_amount, audited).await.map_err(ApiError::from);
    answer(state, "redeem", outcome)
}

async fn release(
    state: &AppState,
    customer: CustomerId,
    coupon: &str,
    body: ReleaseRequest,
    audited: Option<&Actor<'_>>,
) -> Result<HttpResponse, ApiError> {
    let coupon: CouponId = parse_coupon(coupon)?;
    let order = order_ref(coupon, customer, body.order_id)?;
    let outcome = state.redemptions.release(&order, audited).await.map_err(ApiError::from);
    answer(state, "release", outcome)
}

fn answer(state: &AppState, action: &str, outcome: Result<Usage, ApiError>) -> Result<HttpResponse, ApiError> {
    let code = match &outcome {
        Ok(_) => "OK",
        Err(err) => err.code(),
    };
    state.metrics.usage_requests.with_label_values(&[action, code]).inc();
    Ok(HttpResponse::Ok().json(UsageResponse::from(outcome?)))
}

/// Use a customer's held coupon for an order: the order service (a token
/// with scope `coupons:redeem`) or support staff (the admin token); a
/// customer's own credential answers 403. Idempotent per order: the same
/// `orderId` again answers as the first time. An `orderId` whose use was
/// released never uses the coupon again (a late retry of a cancelled order's
/// redeem): `ORDER_RELEASED`. A coupon issued moments ago that coupon-writer
/// has not written yet is usable: the API writes it first.
#[utoipa::path(
    post,
    path = "/api/v1/customers/{customerId}/coupons/{couponId}/redeem",
    params(("customerId" = i64, Path, minimum = 1), ("couponId" = i64, Path, minimum = 1)),
    request_body = RedeemRequest,
    security(("service" = []), ("bearer" = [])),
    responses(
        (status = 200, body = UsageResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: a customer's credential, or a service token without the scope", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this customer's limit", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND, NOT_HELD", body = ErrorBody),
        (status = 409, description = "ALREADY_USED: by another order; ORDER_RELEASED: this order's use was released, so it cannot use the coupon again (a new order id can); REVOKED: support staff revoked it; PAUSED: an operator paused redemption", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = ErrorBody),
        (status = 422, description = "EXPIRED, BELOW_MINIMUM, NOT_REDEEMABLE (no discount policy)", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE: nothing was changed (a backing service is away, or whether the customer holds the coupon cannot be told yet); retry after Retry-After", body = ErrorBody),
    )
)]
#[post("/api/v1/customers/{customerId}/coupons/{couponId}/redeem")]
pub async fn redeem_for(
    spender: Spender,
    request_id: RequestId,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<RedeemRequest>,
) -> Result<HttpResponse, ApiError> {
    spender.may(SCOPE_REDEEM)?;
    let customer: CustomerId = parse_id(&path.0, "customerId")?;
    state.limits.check_customer(Some(customer))?;
    let request = request_id.to_string();
    let audited = spender.audited().map(|name| Actor { name, request_id: &request });
    redeem(&state, customer, &path.1, body.into_inner(), audited.as_ref()).await
}

/// Give a used coupon back from its order (say, the payment failed): the
/// order service (scope `coupons:release`) or support staff. Idempotent per order.
#[utoipa::path(
    post,
    path = "/api/v1/customers/{customerId}/coupons/{couponId}/release",
    params(("customerId" = i64, Path, minimum = 1), ("couponId" = i64, Path, minimum = 1)),
    request_body = ReleaseRequest,
    security(("service" = []), ("bearer" = [])),
    responses(
        (status = 200, body = UsageResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: a customer's credential, or a service token without the scope", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this customer's limit", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "NOT_USED_BY_ORDER: used by another order, not used, or not held", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE: nothing was changed", body = ErrorBody),
    )
)]
#[post("/api/v1/customers/{customerId}/coupons/{couponId}/release")]
pub async fn release_for(
    spender: Spender,
    request_id: RequestId,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<ReleaseRequest>,
) -> Result<HttpResponse, ApiError> {
    spender.may(SCOPE_RELEASE)?;
    let customer: CustomerId = parse_id(&path.0, "customerId")?;
    state.limits.check_customer(Some(customer))?;
    let request = request_id.to_string();
    let audited = spender.audited().map(|name| Actor { name, request_id: &request });
    release(&state, customer, &path.1, body.into_inner(), audited.as_ref()).await
}

/// The most characters a revocation's reason may have.
const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why: 1 to 500 characters, not all blank, no control characters; stored trimmed.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub reason: String,
    /// `true`: the unit becomes issuable again (to another customer). Default `false`.
    #[serde(default)]
    pub return_to_stock: bool,
    /// `true` (with `returnToStock` only, else `422 REISSUE_NEEDS_RETURN`):
    /// this customer may get the coupon again too. Default `false`.
    #[serde(default)]
    pub allow_reissue: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokeResponse {
    pub coupon_id: i64,
    pub customer_id: i64,
    /// Always `REVOKED`.
    pub status: HoldingStatus,
    pub reason: String,
    pub returned_to_stock: bool,
    pub reissue_allowed: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: time::OffsetDateTime,
}

/// Revoke a customer's unused coupon (support staff): it becomes `REVOKED`
/// and can no longer be redeemed, `inside.coupon.revoked` goes out, and the
/// audit records who did it and why. With `returnToStock` its unit becomes
/// issuable to another customer; the customer itself cannot get the coupon
/// again unless `allowReissue` is given too. A
/// coupon Redis issued moments ago that coupon-writer has not written yet is
/// revoked all the same.
#[utoipa::path(
    delete,
    path = "/api/v1/customers/{customerId}/coupons/{couponId}",
    params(("customerId" = i64, Path, minimum = 1), ("couponId" = i64, Path, minimum = 1)),
    request_body = RevokeRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = RevokeResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND, NOT_HELD", body = ErrorBody),
        (status = 409, description = "ALREADY_USED: redeemed by an order; ALREADY_REVOKED", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = ErrorBody),
        (status = 422, description = "REISSUE_NEEDS_RETURN: allowReissue without returnToStock", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this address failed to authenticate too often", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE: nothing was changed, or revoked but the returned unit has not reached Redis yet; send it again", body = ErrorBody),
    )
)]
#[delete("/api/v1/customers/{customerId}/coupons/{couponId}")]
pub async fn revoke(
    admin: Admin,
    request_id: RequestId,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<RevokeRequest>,
) -> Result<HttpResponse, ApiError> {
    let customer: CustomerId = parse_id(&path.0, "customerId")?;
    let coupon: CouponId = parse_coupon(&path.1)?;
    let RevokeRequest { reason, return_to_stock, allow_reissue } = body.into_inner();
    let reason = valid_text("reason", &reason, MAX_REASON_CHARS)?;
    let unit = match (return_to_stock, allow_reissue) {
        (false, false) => Unit::Kept,
        (true, false) => Unit::Returned,
        (true, true) => Unit::Reissuable,
        // A combination JSON Schema does not express: 422, as dates out of order.
        (false, true) => {
            return Err(ApiError::Unprocessable {
                code: "REISSUE_NEEDS_RETURN",
                message: "allowReissue needs returnToStock: the unit the customer would get again",
            })
        }
    };
    let request = request_id.to_string();
    let actor = Actor { name: &admin.0, request_id: &request };
    let revoked = state.redemptions.revoke(Held { coupon, customer }, &reason, unit, &actor).await?;
    if unit != Unit::Kept {
        // A unit back in stock: every replica issues it from the answer on.
        state.issuance.changed(coupon).await;
    }
    Ok(HttpResponse::Ok().json(RevokeResponse {
        coupon_id: revoked.coupon_id,
        customer_id: revoked.customer_id,
        status: HoldingStatus::Revoked,
        reason: revoked.reason,
        returned_to_stock: revoked.returned_to_stock,
        reissue_allowed: revoked.reissue_allowed,
        revoked_at: revoked.revoked_at,
    }))
}
