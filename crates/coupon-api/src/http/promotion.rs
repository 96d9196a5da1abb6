//! Running a promotion (admin): pause and resume issuance, end it now, and
//! read the audit of every admin change.

use actix_web::{get, post, web, HttpResponse};
use coupon_domain::CouponId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing_actix_web::RequestId;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::http::caller::Admin;
use crate::http::parse_coupon;
use crate::http::state::AppState;
use crate::promotion::audit::Recorded;
use crate::promotion::{Actor, ControlError, Standing};
use crate::store::Control;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlResponse {
    pub coupon_id: i64,
    pub paused: bool,
    /// Grows with every change of the coupon's controls.
    pub version: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndedResponse {
    pub coupon_id: i64,
    /// The new end of the issuance period: when the request was handled, by
    /// Redis's clock.
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    /// Grows with every change of the coupon's controls.
    pub version: i64,
}

/// Pauses (or resumes) `coupon` for `admin`, and answers.
async fn change(
    admin: Admin,
    request_id: RequestId,
    state: &AppState,
    coupon: &str,
    paused: bool,
) -> Result<HttpResponse, ApiError> {
    let coupon: CouponId = parse_coupon(coupon)?;
    let request = request_id.to_string();
    let actor = Actor { name: &admin.0, request_id: &request };
    let control =
        if paused { state.controls.pause(coupon, &actor).await } else { state.controls.resume(coupon, &actor).await };
    answer(coupon, control)
}

fn answer(coupon: CouponId, control: Result<Control, ControlError>) -> Result<HttpResponse, ApiError> {
    control
        .map(|control| {
            HttpResponse::Ok().json(ControlResponse {
                coupon_id: coupon.get(),
                paused: control.paused,
                version: control.version,
            })
        })
        .map_err(refusal)
}

/// What an operator's control answers when it changed nothing.
fn refusal(err: ControlError) -> ApiError {
    match err {
        ControlError::NotFound => ApiError::Rejected(coupon_domain::Rejection::CouponNotFound),
        ControlError::AlreadyThere(Standing::Paused) => {
            ApiError::Conflict { code: "ALREADY_PAUSED", message: "the promotion is already paused" }
        }
        ControlError::AlreadyThere(Standing::Running) => {
            ApiError::Conflict { code: "NOT_PAUSED", message: "the promotion is not paused" }
        }
        ControlError::AlreadyThere(Standing::Ended) => {
            ApiError::Conflict { code: "ALREADY_ENDED", message: "the promotion has already ended" }
        }
        ControlError::NotStarted => ApiError::Conflict {
            code: "NOT_STARTED",
            message: "the promotion has not started: only a started one can be ended now",
        },
        ControlError::Catalog(err) => ApiError::unavailable("PostgreSQL is unavailable; nothing was changed", &err),
        ControlError::Redis(err) => ApiError::unavailable(
            "recorded, but Redis did not get it yet: issuance may go on until you send this again",
            &err,
        ),
    }
}

/// Pause issuance (admin): from this answer on, every replica answers
/// `409 PAUSED` to issue requests; holders still redeem. Recorded in the audit.
#[utoipa::path(
    post,
    path = "/api/v1/coupons/{couponId}/pause",
    params(("couponId" = i64, Path, minimum = 1)),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ControlResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ALREADY_PAUSED (Redis is told again)", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this address failed to authenticate too often", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE: not recorded, or recorded but not yet in Redis (send it again)", body = ErrorBody),
    )
)]
#[post("/api/v1/coupons/{couponId}/pause")]
pub async fn pause(
    admin: Admin,
    request_id: RequestId,
    state: web::Data<AppState>,
    coupon: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change(admin, request_id, &state, &coupon, true).await
}

/// Resume issuance (admin). Recorded in the audit.
#[utoipa::path(
    post,
    path = "/api/v1/coupons/{couponId}/resume",
    params(("couponId" = i64, Path, minimum = 1)),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ControlResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "NOT_PAUSED (Redis is told again)", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this address failed to authenticate too often", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE: not recorded, or recorded but not yet in Redis (send it again)", body = ErrorBody),
    )
)]
#[post("/api/v1/coupons/{couponId}/resume")]
pub async fn resume(
    admin: Admin,
    request_id: RequestId,
    state: web::Data<AppState>,
    coupon: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change(admin, request_id, &state, &coupon, false).await
}

/// End issuance now (admin): the coupon's `endsAt` moves to this moment, and
/// from this answer on every replica answers `EXPIRED` to issue requests;
/// holders still redeem until `validUntil`. Recorded in the audit. A
/// coupon not started yet, or already ended, answers 409.
#[utoipa::path(
    post,
    path = "/api/v1/coupons/{couponId}/end",
    params(("couponId" = i64, Path, minimum = 1)),
    security(("bearer" = [])),
    responses(
        (status = 200, body = EndedResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ALREADY_ENDED or NOT_STARTED", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this address failed to authenticate too often", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE: not recorded, or recorded but not yet in Redis (send it again)", body = ErrorBody),
    )
)]
#[post("/api/v1/coupons/{couponId}/end")]
pub async fn end(
    admin: Admin,
    request_id: RequestId,
    state: web::Data<AppState>,
    coupon: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let coupon: CouponId = parse_coupon(&coupon)?;
    let request = request_id.to_string();
    let actor = Actor { name: &admin.0, request_id: &request };
    let (control, ends_at) = state.controls.end_now(coupon, &actor).await.map_err(refusal)?;
    state.coupons.forget(coupon);
    Ok(HttpResponse::Ok().json(EndedResponse { coupon_id: coupon.get(), ends_at, version: control.version }))
}

/// The most entries one audit read returns.
const MAX_AUDIT_PAGE: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this coupon's entries.
    #[param(minimum = 1)]
    pub coupon_id: Option<i64>,
    /// Entries after this id (the last one of the previous page).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// At most this many (default and most: 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Every admin change, oldest first (admin): who, what, before and after,
/// when, and the request.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = [Recorded]),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this address failed to authenticate too often", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE", body = ErrorBody),
    )
)]
#[get("/api/v1/audit")]
pub async fn audit(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let coupon = query
        .coupon_id
        .map(|id| CouponId::new(id).map_err(|err| ApiError::InvalidRequest(format!("couponId {err}"))))
        .transpose()?;
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(MAX_AUDIT_PAGE);
    if after < 0 || !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::InvalidRequest(format!("after must be 0 or more, limit 1 to {MAX_AUDIT_PAGE}")));
    }
    let entries = state
        .controls
        .audit(coupon, after, limit)
        .await
        .map_err(|err| ApiError::unavailable("PostgreSQL is unavailable", &err))?;
    Ok(HttpResponse::Ok().json(entries))
}
