//! Running a promotion (admin): pause and resume issuance, end it now,
//! change its terms, watch it live, and read the audit of every admin change.

use std::time::Duration;

use actix_web::{get, patch, post, web, HttpResponse};
use coupon_domain::{CouponId, Discount};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing_actix_web::RequestId;
use utoipa::{IntoParams, ToSchema};

use crate::audit::{Actor, Recorded};
use crate::error::{ApiError, ErrorBody};
use crate::http::caller::Admin;
use crate::http::coupons::{valid_name, valid_quantity, CouponResponse};
use crate::http::parse_coupon;
use crate::http::state::AppState;
use crate::promotion::amend::Amendment;
use crate::promotion::stats::CouponStats;
use crate::promotion::{ControlError, Standing};
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

/// What a pause stops besides issuance.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PauseRequest {
    /// `false`: redeem answers `409 PAUSED` too, until the resume. Default
    /// `true`: holders still redeem.
    #[serde(default = "redemption_goes_on")]
    #[schema(default = true)]
    pub redemption: bool,
}

fn redemption_goes_on() -> bool {
    true
}

impl Default for PauseRequest {
    fn default() -> Self {
        Self { redemption: redemption_goes_on() }
    }
}

/// Pauses (`Some`: what else the pause stops) or resumes `coupon` for `admin`, and answers.
async fn change(
    admin: Admin,
    request_id: RequestId,
    state: &AppState,
    coupon: &str,
    pausing: Option<PauseRequest>,
) -> Result<HttpResponse, ApiError> {
    let coupon: CouponId = parse_coupon(coupon)?;
    let request = request_id.to_string();
    let actor = Actor { name: &admin.0, request_id: &request };
    let control = match pausing {
        Some(asked) => state.controls.pause(coupon, asked.redemption, &actor).await,
        None => state.controls.resume(coupon, &actor).await,
    };
    state.issuance.changed(coupon).await;
    answer(coupon, control)
}

/// A body that may be left out: none, empty or `null` is the default.
fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let invalid = |err: serde_json::Error| ApiError::InvalidRequest(format!("invalid JSON body: {err}"));
    match serde_json::from_slice(body).map_err(invalid)? {
        serde_json::Value::Null => Ok(T::default()),
        object @ serde_json::Value::Object(_) => serde_json::from_value(object).map_err(invalid),
        _ => Err(ApiError::InvalidRequest("the body must be a JSON object".into())),
    }
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
        ControlError::InvalidPeriod(message) => ApiError::InvalidPeriod(message),
        ControlError::BelowIssued => {
            ApiError::Unprocessable { code: "BELOW_ISSUED", message: "totalQuantity is below the units already issued" }
        }
        ControlError::PolicyLocked => ApiError::Conflict {
            code: "POLICY_LOCKED",
            message: "the discount policy cannot change once a unit was issued",
        },
        ControlError::Rebuilding => ApiError::Fenced,
        ControlError::Catalog(err) => ApiError::unavailable("PostgreSQL is unavailable; nothing was changed", &err),
        ControlError::Redis(err) => ApiError::unavailable(
            "recorded, but Redis did not get it yet: issuance may go on until you send this again",
            &err,
        ),
    }
}

/// Pause issuance (admin): from this answer on, every replica answers
/// `409 PAUSED` to issue requests; holders still redeem, unless the body
/// says `{"redemption": false}`. Pausing again with the other choice changes
/// it. Recorded in the audit.
#[utoipa::path(
    post,
    path = "/api/v1/coupons/{couponId}/pause",
    params(("couponId" = i64, Path, minimum = 1)),
    request_body(content = Option<PauseRequest>, description = "Optional; without it redemption goes on"),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ControlResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ALREADY_PAUSED, with the same redemption choice (Redis is told again)", body = ErrorBody),
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
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let asked: PauseRequest = optional_body(&body)?;
    change(admin, request_id, &state, &coupon, Some(asked)).await
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
    change(admin, request_id, &state, &coupon, None).await
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
    state.issuance.changed(coupon).await;
    Ok(HttpResponse::Ok().json(EndedResponse { coupon_id: coupon.get(), ends_at, version: control.version }))
}

/// What to change of a coupon; at least one field (`minProperties`, set in
/// `openapi.rs`: utoipa 5 writes `min_properties` as `maxProperties`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeCouponRequest {
    /// 1 to 200 characters, not all blank, no control characters; stored trimmed.
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    /// The new stock: new units are issuable at once; a lower one must not
    /// be below the units already issued.
    #[serde(default, deserialize_with = "coupon_domain::whole::optional")]
    #[schema(nullable = false, minimum = 1, maximum = 100_000_000)]
    pub total_quantity: Option<i64>,
    /// A new end of the issuance period, in the future and not after
    /// `validUntil`. `POST …/end` ends it now.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(nullable = false)]
    pub ends_at: Option<OffsetDateTime>,
    /// A new discount policy; only while no unit was issued.
    #[schema(nullable = false)]
    pub discount: Option<Discount>,
}

impl ChangeCouponRequest {
    fn validate(self) -> Result<Amendment, ApiError> {
        if self.name.is_none() && self.total_quantity.is_none() && self.ends_at.is_none() && self.discount.is_none() {
            return Err(ApiError::InvalidRequest(
                "give at least one of name, totalQuantity, endsAt and discount".into(),
            ));
        }
        if let Some(discount) = &self.discount {
            discount.validate().map_err(|err| ApiError::InvalidRequest(err.to_string()))?;
        }
        Ok(Amendment {
            name: self.name.as_deref().map(valid_name).transpose()?,
            total_quantity: self.total_quantity.map(valid_quantity).transpose()?,
            ends_at: self.ends_at,
            discount: self.discount,
        })
    }
}

/// Change a coupon's stock, end, name, or (while nothing was issued) its
/// discount policy (admin), on every replica at once. Added units are
/// issuable from this answer on. Recorded in the audit with the terms before
/// and after.
#[utoipa::path(
    patch,
    path = "/api/v1/coupons/{couponId}",
    params(("couponId" = i64, Path, minimum = 1)),
    request_body = ChangeCouponRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = CouponResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ALREADY_ENDED, or POLICY_LOCKED: a unit was issued", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = ErrorBody),
        (status = 422, description = "BELOW_ISSUED, or INVALID_PERIOD", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this address failed to authenticate too often", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE: not recorded, or recorded but not yet in Redis (send it again)", body = ErrorBody),
    )
)]
#[patch("/api/v1/coupons/{couponId}")]
pub async fn change_coupon(
    admin: Admin,
    request_id: RequestId,
    state: web::Data<AppState>,
    coupon: web::Path<String>,
    body: web::Json<ChangeCouponRequest>,
) -> Result<HttpResponse, ApiError> {
    let coupon: CouponId = parse_coupon(&coupon)?;
    let amendment = body.into_inner().validate()?;
    let request = request_id.to_string();
    let actor = Actor { name: &admin.0, request_id: &request };
    let (row, _) = state.controls.amend(coupon, amendment, &actor).await.map_err(refusal)?;
    state.coupons.forget(coupon);
    state.issuance.changed(coupon).await;
    let stock = state
        .store
        .stock(coupon)
        .await
        .map_err(|err| ApiError::unavailable("changed, but Redis is unavailable to read the stock", &err))?
        .unwrap_or(i64::from(row.remaining_quantity));
    Ok(HttpResponse::Ok().json(CouponResponse::new(row, stock)))
}

/// A coupon's live view, or 404 / 503.
async fn read_stats(state: &AppState, coupon: CouponId) -> Result<CouponStats, ApiError> {
    state
        .stats
        .read(coupon)
        .await
        .map_err(|err| ApiError::unavailable("Redis or PostgreSQL is unavailable", &err))?
        .ok_or(ApiError::Rejected(coupon_domain::Rejection::CouponNotFound))
}

/// A promotion's live view (admin): issued, remaining, persisted, pending,
/// redeemed, refusals by code and units issued per second over the last ten
/// seconds, summed over every replica (each adds its counts once a second).
#[utoipa::path(
    get,
    path = "/api/v1/coupons/{couponId}/stats",
    params(("couponId" = i64, Path, minimum = 1)),
    security(("bearer" = [])),
    responses(
        (status = 200, body = CouponStats),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this address failed to authenticate too often", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE", body = ErrorBody),
    )
)]
#[get("/api/v1/coupons/{couponId}/stats")]
pub async fn stats(_: Admin, state: web::Data<AppState>, coupon: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let coupon: CouponId = parse_coupon(&coupon)?;
    Ok(HttpResponse::Ok().json(read_stats(&state, coupon).await?))
}

/// How often the stream sends the view.
const STREAM_EVERY: Duration = Duration::from_secs(1);

/// The live view as Server-Sent Events (admin): an `event: stats` with the
/// view as JSON every second, or an `event: unavailable` while Redis or
/// PostgreSQL cannot answer; it ends when the service stops (the client
/// reconnects after `retry`). Read it with a streaming `fetch` and the
/// admin token, as the console does.
#[utoipa::path(
    get,
    path = "/api/v1/coupons/{couponId}/stats/stream",
    params(("couponId" = i64, Path, minimum = 1)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`text/event-stream` of `CouponStats`", content_type = "text/event-stream", body = String),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this address failed to authenticate too often", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE", body = ErrorBody),
    )
)]
#[get("/api/v1/coupons/{couponId}/stats/stream")]
pub async fn stats_stream(
    _: Admin,
    state: web::Data<AppState>,
    coupon: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let coupon: CouponId = parse_coupon(&coupon)?;
    // An unknown coupon is a 404, not an empty stream.
    let first = read_stats(&state, coupon).await?;
    let mut ticks = tokio::time::interval(STREAM_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.reset();
    let opening = format!("retry: 2000\n\n{}", event(Ok(first)));
    let updates = futures::stream::unfold((state, ticks), move |(state, mut ticks)| async move {
        tokio::select! {
            _ = state.stopping.cancelled() => None,
            _ = ticks.tick() => {
                let view = event(read_stats(&state, coupon).await);
                Some((Ok::<_, actix_web::Error>(web::Bytes::from(view)), (state, ticks)))
            }
        }
    });
    let stream = futures::stream::once(async move { Ok(web::Bytes::from(opening)) }).chain(updates);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-cache"))
        .streaming(stream))
}

/// One Server-Sent Event: the view, or why there is none this second.
fn event(view: Result<CouponStats, ApiError>) -> String {
    match view {
        Ok(view) => format!("event: stats\ndata: {}\n\n", serde_json::to_string(&view).expect("stats serialize")),
        Err(err) => {
            let body = serde_json::json!({ "code": err.code(), "message": err.to_string() });
            format!("event: unavailable\ndata: {body}\n\n")
        }
    }
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
        .catalog
        .audit(coupon, after, limit)
        .await
        .map_err(|err| ApiError::unavailable("PostgreSQL is unavailable", &err))?;
    Ok(HttpResponse::Ok().json(entries))
}
