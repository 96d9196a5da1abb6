//! Coupons: create (admin), read, list (admin), and prime Redis from
//! PostgreSQL (admin).

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use coupon_domain::shards::MAX_SHARDS;
use coupon_domain::{CouponId, Discount, Rejection, MAX_AMOUNT};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing_actix_web::RequestId;
use utoipa::{IntoParams, ToSchema};

use crate::audit::{Actor, Entry};
use crate::catalog::{CouponRow, Creation, NewCoupon, Phase};
use crate::error::{ApiError, ErrorBody};
use crate::http::caller::Admin;
use crate::http::state::AppState;
use crate::http::{parse_coupon, valid_text};
use crate::store::{Control, CouponState, Holders};

/// Largest stock one coupon may have; keeps every quantity inside PostgreSQL's INTEGER.
pub const MAX_QUANTITY: i64 = 100_000_000;
const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCouponRequest {
    /// 1 to 200 characters, not all blank, no control characters; stored trimmed.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[serde(deserialize_with = "coupon_domain::whole::number")]
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub total_quantity: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    /// What the coupon takes off an order; without one the coupon can be
    /// issued but not redeemed.
    pub discount: Option<Discount>,
    /// The smallest order (in the currency's smallest unit) it applies to; default 0.
    #[serde(default, deserialize_with = "coupon_domain::whole::number")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub min_order_amount: i64,
    /// Until when held coupons can be used; at or after `endsAt`, default `endsAt`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub valid_until: Option<OffsetDateTime>,
    /// Over how many Redis shards to spread the stock, so that one hot coupon
    /// is decided on several Redis masters; default 1. Fixed once created.
    #[serde(default = "one_shard", deserialize_with = "coupon_domain::whole::number")]
    #[schema(minimum = 1, maximum = 64, default = 1)]
    pub shards: i64,
}

fn one_shard() -> i64 {
    1
}

impl CreateCouponRequest {
    fn validate(self) -> Result<NewCoupon, ApiError> {
        let name = valid_name(&self.name)?;
        let quantity = valid_quantity(self.total_quantity)?;
        if self.starts_at >= self.ends_at {
            return Err(ApiError::InvalidPeriod("startsAt must be before endsAt"));
        }
        if let Some(discount) = &self.discount {
            discount.validate().map_err(|err| ApiError::InvalidRequest(err.to_string()))?;
        }
        if !(0..=MAX_AMOUNT).contains(&self.min_order_amount) {
            return Err(ApiError::InvalidRequest(format!("minOrderAmount must be between 0 and {MAX_AMOUNT}")));
        }
        if self.valid_until.is_some_and(|until| until < self.ends_at) {
            return Err(ApiError::InvalidPeriod("validUntil must not be before endsAt"));
        }
        if !(1..=i64::from(MAX_SHARDS)).contains(&self.shards) {
            return Err(ApiError::InvalidRequest(format!("shards must be between 1 and {MAX_SHARDS}")));
        }
        Ok(NewCoupon {
            name,
            total_quantity: quantity,
            remaining_quantity: quantity,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            discount: self.discount.into(),
            min_order_amount: self.min_order_amount,
            valid_until: self.valid_until,
            shards: self.shards as i16,
        })
    }
}

/// A coupon's name as stored: trimmed, 1 to 200 characters, no control characters.
pub fn valid_name(name: &str) -> Result<String, ApiError> {
    valid_text("name", name, MAX_NAME_CHARS)
}

/// A total quantity: 1 to [`MAX_QUANTITY`].
pub fn valid_quantity(quantity: i64) -> Result<i32, ApiError> {
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(ApiError::InvalidRequest(format!("totalQuantity must be between 1 and {MAX_QUANTITY}")));
    }
    Ok(quantity as i32)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouponResponse {
    pub id: i64,
    pub name: String,
    pub total_quantity: i32,
    /// Live stock from Redis (what can still be issued).
    pub remaining_quantity: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// `null`: the coupon can be issued but not redeemed.
    pub discount: Option<Discount>,
    pub min_order_amount: i64,
    /// Until when held coupons can be used.
    #[serde(with = "time::serde::rfc3339")]
    pub valid_until: OffsetDateTime,
    /// Over how many Redis shards its stock is spread.
    pub shards: i16,
}

impl CouponResponse {
    pub fn new(row: CouponRow, remaining_quantity: i64) -> Self {
        let (discount, valid_until) = (row.discount.policy(), row.valid_until());
        Self {
            id: row.id.get(),
            name: row.name,
            total_quantity: row.total_quantity,
            remaining_quantity,
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            created_at: row.created_at,
            discount,
            min_order_amount: row.min_order_amount,
            valid_until,
            shards: row.shards,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PrimeResponse {
    /// Always true: the coupon is fenced and will be rebuilt.
    pub rebuilding: bool,
}

/// The coupon's PostgreSQL row, or `404 COUPON_NOT_FOUND`.
async fn coupon_row(state: &AppState, id: CouponId) -> Result<CouponRow, ApiError> {
    state
        .catalog
        .get(id)
        .await
        .map_err(|err| ApiError::unavailable("PostgreSQL is unavailable", &err))?
        .ok_or(ApiError::Rejected(Rejection::CouponNotFound))
}

/// The most characters an `Idempotency-Key` may have.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

/// The request's `Idempotency-Key`, if any: printable ASCII, 1 to 200 characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(value) = req.headers().get("Idempotency-Key") else { return Ok(None) };
    match value.to_str() {
        Ok(key)
            if (1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key))
        }
        _ => Err(ApiError::InvalidRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters"
        ))),
    }
}

/// Create a coupon (admin). Written to PostgreSQL, then primed in Redis.
/// With an `Idempotency-Key`, a retry within a day (say, after a timeout)
/// answers with the coupon the first request created.
#[utoipa::path(
    post,
    path = "/api/v1/coupons",
    request_body = CreateCouponRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = r"^[\x21-\x7e]+$",
        description = "Makes a retry within a day return the first request's coupon; 1 to 200 printable ASCII characters")),
    security(("bearer" = [])),
    responses(
        (status = 201, body = CouponResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this address failed to authenticate too often", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = ErrorBody),
        (status = 422, description = "INVALID_PERIOD: startsAt not before endsAt, or validUntil before endsAt; IDEMPOTENCY_KEY_REUSED: the key was used within its day for another coupon", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE: not saved, or saved but not yet open (the sync opens it)", body = ErrorBody),
    )
)]
#[post("/api/v1/coupons")]
pub async fn create(
    admin: Admin,
    request_id: RequestId,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<CreateCouponRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let new = body.into_inner().validate()?;
    let request = request_id.to_string();
    let actor = Actor { name: &admin.0, request_id: &request };
    let creation = state
        .catalog
        .create(new, key, &actor)
        .await
        .map_err(|err| ApiError::unavailable("PostgreSQL is unavailable; the coupon was not created", &err))?;
    let (row, replayed) = match creation {
        Creation::Created(row) => (row, false),
        Creation::Replayed(row) => (row, true),
        Creation::KeyReused => return Err(ApiError::IdempotencyKeyReused),
    };
    let coupon_state = CouponState {
        id: row.id,
        starts_at: row.starts_at,
        ends_at: row.ends_at,
        total_quantity: row.total_quantity,
        shards: row.shard_count(),
        holders: Holders::default(),
        control: Control::default(),
    };
    // PostgreSQL has the coupon now; if Redis fails, a request for it or a
    // replica's start creates it. A replay creates it here if the first
    // request could not (create.lua never touches an existing coupon).
    state.coupons.forget(row.id);
    state.issuance.issuer.create(&coupon_state).await.map_err(|err| {
        ApiError::unavailable("coupon saved but Redis is unavailable; it opens once the sync primes it", &err)
    })?;
    let remaining = i64::from(row.remaining_quantity);
    let mut response = HttpResponse::Created();
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.json(CouponResponse::new(row, remaining)))
}

/// A coupon with its live remaining stock. Its definition is reused for
/// `cache.coupon_ttl_ms` (2 s); one that has not started is unknown to
/// anyone but support staff.
#[utoipa::path(
    get,
    path = "/api/v1/coupons/{couponId}",
    params(("couponId" = i64, Path, minimum = 1)),
    // Anyone; the admin token also shows a coupon that has not started.
    security((), ("bearer" = [])),
    responses(
        (status = 200, body = CouponResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND: unknown, or not started yet", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this address's limit", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE", body = ErrorBody),
    )
)]
#[get("/api/v1/coupons/{couponId}")]
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    coupon: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let admin = state.access.is_admin(&req);
    if !admin {
        state.limits.check(&req, None)?;
    }
    let id: CouponId = parse_coupon(&coupon)?;
    let row = state
        .coupons
        .get(id)
        .await
        .map_err(|err| ApiError::unavailable("PostgreSQL is unavailable", &err))?
        // A promotion not started yet is nobody's business but its operators'.
        .filter(|row| admin || row.starts_at <= OffsetDateTime::now_utc())
        .ok_or(ApiError::Rejected(Rejection::CouponNotFound))?;
    let stock = state
        .store
        .stock(id)
        .await
        .map_err(|err| ApiError::unavailable("Redis is unavailable", &err))?
        .unwrap_or(i64::from(row.remaining_quantity));
    Ok(HttpResponse::Ok().json(CouponResponse::new(row, stock)))
}

/// The most coupons one page of the list holds.
const MAX_PAGE: i64 = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only coupons in this phase now.
    pub state: Option<Phase>,
    /// Coupons older than this id: the `next` of the previous page.
    #[param(minimum = 1)]
    pub after: Option<i64>,
    /// At most this many (default 50, most 100).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListedCoupon {
    #[serde(flatten)]
    pub coupon: CouponResponse,
    pub state: Phase,
    /// Issued by Redis so far: the stock less what remains.
    pub issued: i64,
    /// Written to PostgreSQL by coupon-writer so far.
    pub persisted: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouponPage {
    /// Newest first.
    pub coupons: Vec<ListedCoupon>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next: Option<i64>,
}

/// Promotions, newest first, with their live counts (admin).
#[utoipa::path(
    get,
    path = "/api/v1/coupons",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = CouponPage),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this address failed to authenticate too often", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE", body = ErrorBody),
    )
)]
#[get("/api/v1/coupons")]
pub async fn list(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) || query.after.is_some_and(|after| after < 1) {
        return Err(ApiError::InvalidRequest(format!("limit must be 1 to {MAX_PAGE}, after 1 or more")));
    }
    let now = OffsetDateTime::now_utc();
    let rows = state
        .catalog
        .page(query.state, query.after, limit, now)
        .await
        .map_err(|err| ApiError::unavailable("PostgreSQL is unavailable", &err))?;
    let ids: Vec<CouponId> = rows.iter().map(|(row, _)| row.id).collect();
    let stocks = state.store.stocks(&ids).await.map_err(|err| ApiError::unavailable("Redis is unavailable", &err))?;
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|(row, _)| row.id.get())).flatten();
    let coupons = rows
        .into_iter()
        .zip(stocks)
        .map(|((row, paused), stock)| {
            let phase = Phase::of(&row, paused, now);
            let total = i64::from(row.total_quantity);
            let persisted = total - i64::from(row.remaining_quantity);
            let remaining = stock.unwrap_or(i64::from(row.remaining_quantity));
            ListedCoupon {
                state: phase,
                issued: total - remaining,
                persisted,
                coupon: CouponResponse::new(row, remaining),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(CouponPage { coupons, next }))
}

/// Rebuild a coupon's Redis state from PostgreSQL (admin). The coupon is
/// fenced at once (from this answer on, every replica answers its issue
/// requests 503, none from memory) and rebuilt once coupon-writer has
/// applied everything issued before; the answer does not wait for that. Safe
/// to repeat; for a Redis suspected of having lost or rolled back data.
#[utoipa::path(
    post,
    path = "/api/v1/coupons/{couponId}/prime",
    params(("couponId" = i64, Path, minimum = 1)),
    security(("bearer" = [])),
    responses(
        (status = 202, body = PrimeResponse),
        (status = 400, description = "INVALID_REQUEST", body = ErrorBody),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this address failed to authenticate too often", body = ErrorBody),
        (status = 404, description = "COUPON_NOT_FOUND", body = ErrorBody),
        (status = 422, description = "EXPIRED: an ended coupon is not kept in Redis", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE", body = ErrorBody),
    )
)]
#[post("/api/v1/coupons/{couponId}/prime")]
pub async fn prime_coupon(
    admin: Admin,
    request_id: RequestId,
    state: web::Data<AppState>,
    coupon: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: CouponId = parse_coupon(&coupon)?;
    let row = coupon_row(&state, id).await?;
    if row.ends_at <= OffsetDateTime::now_utc() {
        return Err(ApiError::Rejected(Rejection::Expired));
    }
    let answer = PrimeResponse { rebuilding: true };
    let request = request_id.to_string();
    let actor = Actor { name: &admin.0, request_id: &request };
    state
        .catalog
        .record(Entry::made(&actor, "prime", id, &answer))
        .await
        .map_err(|err| ApiError::unavailable("PostgreSQL is unavailable; nothing was fenced", &err))?;
    state
        .fences
        .fence(&[(id, row.shard_count())], "operator")
        .await
        .map_err(|err| ApiError::unavailable("Redis is unavailable; nothing was fenced", &err))?;
    state.recovery.coupon(id);
    // The fence changes every answer: answered once no replica answers from
    // memory taken before it (a sold-out coupon's refusals).
    state.issuance.changed(id).await;
    Ok(HttpResponse::Accepted().json(answer))
}
