//! The coupons in PostgreSQL: the source of truth for what a coupon is, and the
//! durable record (written by coupon-writer) of who holds one.

pub mod cache;

use coupon_domain::{CouponId, CustomerId, Discount};
use coupon_infra::db::schema::{admin_audit, coupon, coupon_control, coupon_creation, customer_coupon};
use coupon_infra::db::PgPool;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use time::OffsetDateTime;

use crate::audit::{Actor, Entry, Recorded};
use crate::store::{Control, Holders};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no PostgreSQL connection: {0}")]
    Pool(#[from] diesel_async::pooled_connection::deadpool::PoolError),
    #[error("PostgreSQL query failed: {0}")]
    Query(#[from] diesel::result::Error),
}

/// Where a coupon is in its life, for an operator listing promotions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Not started yet.
    Scheduled,
    /// Issuing.
    Open,
    /// Inside its period, paused by an operator.
    Paused,
    /// Past its end.
    Ended,
}

impl Phase {
    pub fn of(row: &CouponRow, paused: bool, now: OffsetDateTime) -> Self {
        Self::at(row.starts_at, row.ends_at, paused, now)
    }

    /// The phase at `now` of a coupon with this period.
    pub fn at(starts_at: OffsetDateTime, ends_at: OffsetDateTime, paused: bool, now: OffsetDateTime) -> Self {
        if starts_at > now {
            Phase::Scheduled
        } else if ends_at <= now {
            Phase::Ended
        } else if paused {
            Phase::Paused
        } else {
            Phase::Open
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = coupon)]
pub struct CouponRow {
    /// A row whose id is not a valid coupon id fails to load (a query error)
    /// rather than being skipped or trusted.
    #[diesel(deserialize_as = i64)]
    pub id: CouponId,
    pub name: String,
    pub total_quantity: i32,
    pub remaining_quantity: i32,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    #[diesel(embed)]
    pub discount: DiscountColumns,
    pub min_order_amount: i64,
    pub valid_until: Option<OffsetDateTime>,
    /// Over how many shards Redis spreads its stock (coupon_domain::shards).
    pub shards: i16,
}

impl CouponRow {
    /// Its number of shards, as Redis's key sets count them.
    pub fn shard_count(&self) -> u16 {
        u16::try_from(self.shards).unwrap_or(1).max(1)
    }

    /// Until when held coupons can be used.
    pub fn valid_until(&self) -> OffsetDateTime {
        self.valid_until.unwrap_or(self.ends_at)
    }
}

/// A discount policy as the `coupon` table stores it (all NULL: none). As a
/// changeset it writes every column, NULLs included, so no field of an
/// earlier policy stays behind.
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset, Serialize)]
#[diesel(table_name = coupon, treat_none_as_null = true)]
pub struct DiscountColumns {
    discount_type: Option<String>,
    discount_amount: Option<i64>,
    discount_percent: Option<i16>,
    discount_max_amount: Option<i64>,
}

impl DiscountColumns {
    /// The policy; `None` for a coupon that cannot be redeemed. The table's
    /// constraints admit only the shapes read here.
    pub fn policy(&self) -> Option<Discount> {
        match (self.discount_type.as_deref(), self.discount_amount, self.discount_percent) {
            (Some("FIXED"), Some(amount), _) => Some(Discount::Fixed { amount }),
            (Some("RATE"), _, Some(percent)) => Some(Discount::Rate { percent, max_amount: self.discount_max_amount }),
            _ => None,
        }
    }
}

impl From<Option<Discount>> for DiscountColumns {
    fn from(discount: Option<Discount>) -> Self {
        match discount {
            None => Self::default(),
            Some(Discount::Fixed { amount }) => {
                Self { discount_type: Some("FIXED".into()), discount_amount: Some(amount), ..Self::default() }
            }
            Some(Discount::Rate { percent, max_amount }) => Self {
                discount_type: Some("RATE".into()),
                discount_percent: Some(percent),
                discount_max_amount: max_amount,
                ..Self::default()
            },
        }
    }
}

#[derive(Debug, Clone, Insertable, Serialize)]
#[diesel(table_name = coupon)]
pub struct NewCoupon {
    pub name: String,
    pub total_quantity: i32,
    pub remaining_quantity: i32,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    #[diesel(embed)]
    pub discount: DiscountColumns,
    pub min_order_amount: i64,
    pub valid_until: Option<OffsetDateTime>,
    pub shards: i16,
}

/// A new coupon as the audit records it, named as the API names its fields.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created<'a> {
    name: &'a str,
    total_quantity: i32,
    #[serde(with = "time::serde::rfc3339")]
    starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    ends_at: OffsetDateTime,
    discount: Option<Discount>,
    min_order_amount: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    valid_until: Option<OffsetDateTime>,
    shards: i16,
}

impl<'a> From<&'a NewCoupon> for Created<'a> {
    fn from(new: &'a NewCoupon) -> Self {
        Self {
            name: &new.name,
            total_quantity: new.total_quantity,
            starts_at: new.starts_at,
            ends_at: new.ends_at,
            discount: new.discount.policy(),
            min_order_amount: new.min_order_amount,
            valid_until: new.valid_until,
            shards: new.shards,
        }
    }
}

/// A customer's coupon: the holding's row and its coupon's.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = customer_coupon)]
pub struct Holding {
    pub issued_at: OffsetDateTime,
    pub status: String,
    /// Revoked, and its unit went back into stock.
    pub stock_returned: bool,
    /// Which issuance to this customer it is (see `CouponIssuedEvent`).
    pub issuance: i32,
    /// Revoked with leave to get the coupon again: the customer's next
    /// issuance replaces the row.
    pub reissuable: bool,
    pub order_id: Option<String>,
    pub discount_amount: Option<i64>,
    pub used_at: Option<OffsetDateTime>,
}

impl Holding {
    /// Whether support staff revoked it.
    pub fn is_revoked(&self) -> bool {
        self.status == "REVOKED"
    }

    /// The order using the coupon, if it is used.
    pub fn used_by(&self) -> Option<&str> {
        (self.status == "USED").then_some(self.order_id.as_deref()).flatten()
    }
}

/// What an operator may change of a live coupon, as of one control version.
#[derive(Debug, Clone, Copy)]
pub struct Controlled {
    pub control: Control,
    pub ends_at: OffsetDateTime,
    pub total_quantity: i32,
}

/// What a create request came to.
#[derive(Debug)]
pub enum Creation {
    Created(CouponRow),
    /// The idempotency key's first request created this coupon.
    Replayed(CouponRow),
    /// The idempotency key was used, within its window, for another coupon.
    KeyReused,
}

/// How long an idempotency key returns the coupon it created.
pub const IDEMPOTENCY_WINDOW: time::Duration = time::Duration::days(1);

#[derive(Clone)]
pub struct Catalog {
    pool: PgPool,
}

impl Catalog {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates a coupon. With an idempotency key used within the last day,
    /// returns the coupon that key created instead, or refuses when that
    /// request asked for another coupon. Requests with the same key are
    /// serialized by a lock on the key, so two at once never create two
    /// coupons. A new coupon is recorded in the audit in the same transaction.
    pub async fn create(&self, new: NewCoupon, key: Option<&str>, actor: &Actor<'_>) -> Result<Creation, CatalogError> {
        // What the request asked for, as validated: the same key must ask the same.
        let request = serde_json::to_string(&new).expect("a coupon serializes");
        let mut conn = self.pool.get().await?;
        let created = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                if let Some(key) = key {
                    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                        .bind::<diesel::sql_types::Text, _>(key)
                        .execute(&mut *conn)
                        .await?;
                    let earlier: Option<(CouponRow, Option<String>)> = coupon_creation::table
                        .inner_join(coupon::table)
                        .filter(coupon_creation::idempotency_key.eq(key))
                        .filter(coupon_creation::created_at.gt(OffsetDateTime::now_utc() - IDEMPOTENCY_WINDOW))
                        .select((CouponRow::as_select(), coupon_creation::request))
                        .first(&mut *conn)
                        .await
                        .optional()?;
                    match earlier {
                        Some((_, Some(asked))) if asked != request => return Ok(Creation::KeyReused),
                        Some((row, _)) => return Ok(Creation::Replayed(row)),
                        None => {}
                    }
                }
                let row: CouponRow = diesel::insert_into(coupon::table)
                    .values(&new)
                    .returning(CouponRow::as_returning())
                    .get_result(&mut *conn)
                    .await?;
                if let Some(key) = key {
                    diesel::insert_into(coupon_creation::table)
                        .values((
                            coupon_creation::idempotency_key.eq(key),
                            coupon_creation::coupon_id.eq(row.id.get()),
                            coupon_creation::request.eq(&request),
                        ))
                        .on_conflict(coupon_creation::idempotency_key)
                        .do_update()
                        .set((
                            coupon_creation::coupon_id.eq(row.id.get()),
                            coupon_creation::created_at.eq(OffsetDateTime::now_utc()),
                            coupon_creation::request.eq(&request),
                        ))
                        .execute(&mut *conn)
                        .await?;
                }
                Entry::made(actor, "create", row.id, &Created::from(&new)).insert(conn).await?;
                Ok(Creation::Created(row))
            })
            .await?;
        Ok(created)
    }

    pub async fn get(&self, id: CouponId) -> Result<Option<CouponRow>, CatalogError> {
        let mut conn = self.pool.get().await?;
        Ok(coupon::table.find(id.get()).select(CouponRow::as_select()).first(&mut conn).await.optional()?)
    }

    /// Coupons whose period had not ended at `since`: the ones Redis must know.
    pub async fn open(&self, since: OffsetDateTime) -> Result<Vec<CouponRow>, CatalogError> {
        let mut conn = self.pool.get().await?;
        Ok(coupon::table.filter(coupon::ends_at.gt(since)).select(CouponRow::as_select()).load(&mut conn).await?)
    }

    /// The coupons with these ids, ended or not.
    pub async fn rows(&self, ids: &[CouponId]) -> Result<Vec<CouponRow>, CatalogError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        let mut conn = self.pool.get().await?;
        Ok(coupon::table.filter(coupon::id.eq_any(ids)).select(CouponRow::as_select()).load(&mut conn).await?)
    }

    /// An operator's controls of the coupon (none yet: version 0, not
    /// paused), with the end of its period and its total quantity, read in
    /// one statement: an end or total changed by an operator comes with its
    /// control's version, and a rebuild must not pair a newer version with an
    /// older end or total. `None`: no such coupon.
    pub async fn control(&self, id: CouponId) -> Result<Option<Controlled>, CatalogError> {
        let mut conn = self.pool.get().await?;
        type Row = (OffsetDateTime, i32, Option<OffsetDateTime>, Option<i64>);
        let row: Option<Row> = coupon::table
            .left_join(coupon_control::table)
            .filter(coupon::id.eq(id.get()))
            .select((
                coupon::ends_at,
                coupon::total_quantity,
                coupon_control::paused_at.nullable(),
                coupon_control::version.nullable(),
            ))
            .first(&mut conn)
            .await
            .optional()?;
        Ok(row.map(|(ends_at, total_quantity, paused_at, version)| Controlled {
            // The rebuild carries what Redis decides: issuance's pause.
            control: Control { version: version.unwrap_or(0), paused: paused_at.is_some(), redemption_paused: false },
            ends_at,
            total_quantity,
        }))
    }

    /// A page of coupons, newest first: those with an id below `before`
    /// (all when `None`), in `phase` at `now` (any when `None`), with
    /// whether each is paused.
    pub async fn page(
        &self,
        phase: Option<Phase>,
        before: Option<i64>,
        limit: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<(CouponRow, bool)>, CatalogError> {
        let mut conn = self.pool.get().await?;
        let mut query = coupon::table
            .left_join(coupon_control::table)
            .filter(coupon::id.lt(before.unwrap_or(i64::MAX)))
            .into_boxed();
        let open = coupon::starts_at.le(now).and(coupon::ends_at.gt(now));
        query = match phase {
            None => query,
            Some(Phase::Scheduled) => query.filter(coupon::starts_at.gt(now)),
            Some(Phase::Ended) => query.filter(coupon::ends_at.le(now)),
            Some(Phase::Open) => query.filter(open).filter(coupon_control::paused_at.is_null()),
            Some(Phase::Paused) => query.filter(open).filter(coupon_control::paused_at.is_not_null()),
        };
        let rows: Vec<(CouponRow, Option<OffsetDateTime>)> = query
            .order(coupon::id.desc())
            .limit(limit)
            .select((CouponRow::as_select(), coupon_control::paused_at.nullable()))
            .load(&mut conn)
            .await?;
        Ok(rows.into_iter().map(|(row, paused_at)| (row, paused_at.is_some())).collect())
    }

    /// Records an admin action that changes nothing in PostgreSQL, before it is taken.
    pub async fn record(&self, entry: Entry) -> Result<(), CatalogError> {
        let mut conn = self.pool.get().await?;
        Ok(entry.insert(&mut conn).await?)
    }

    /// The audit's entries after `after` (an id), oldest first, of one coupon or of all.
    pub async fn audit(&self, coupon: Option<CouponId>, after: i64, limit: i64) -> Result<Vec<Recorded>, CatalogError> {
        let mut conn = self.pool.get().await?;
        let mut query = admin_audit::table.filter(admin_audit::id.gt(after)).into_boxed();
        if let Some(coupon) = coupon {
            query = query.filter(admin_audit::coupon_id.eq(coupon.get()));
        }
        Ok(query.order(admin_audit::id).limit(limit).select(Recorded::as_select()).load(&mut conn).await?)
    }

    /// The coupon's holders as PostgreSQL has them, for a rebuild, in one
    /// read (one snapshot).
    pub async fn holders(&self, id: CouponId) -> Result<Holders, CatalogError> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<(i64, bool, i32, bool)> = customer_coupon::table
            .filter(customer_coupon::coupon_id.eq(id.get()))
            .select((
                customer_coupon::customer_id,
                customer_coupon::stock_returned,
                customer_coupon::issuance,
                customer_coupon::reissuable,
            ))
            .load(&mut conn)
            .await?;
        let mut holders = Holders::default();
        for (customer, stock_returned, issuance, reissuable) in rows {
            // A reissuable row's customer holds nothing and may get it again.
            let next = issuance + i32::from(reissuable);
            if next > 0 {
                holders.reissued.push((customer, next));
            }
            if reissuable {
                continue;
            }
            holders.customers.push(customer);
            if stock_returned {
                holders.returned.push(customer);
            }
        }
        Ok(holders)
    }

    pub async fn held_by(&self, customer: CustomerId) -> Result<Vec<(Holding, CouponRow)>, CatalogError> {
        let mut conn = self.pool.get().await?;
        Ok(customer_coupon::table
            .inner_join(coupon::table)
            .filter(customer_coupon::customer_id.eq(customer.get()))
            .order(customer_coupon::issued_at.asc())
            .select((Holding::as_select(), CouponRow::as_select()))
            .load(&mut conn)
            .await?)
    }

    pub async fn is_persisted(&self, id: CouponId, customer: CustomerId) -> Result<bool, CatalogError> {
        let mut conn = self.pool.get().await?;
        Ok(diesel::select(diesel::dsl::exists(
            customer_coupon::table
                .filter(customer_coupon::coupon_id.eq(id.get()))
                .filter(customer_coupon::customer_id.eq(customer.get()))
                .filter(customer_coupon::reissuable.eq(false)),
        ))
        .get_result(&mut conn)
        .await?)
    }
}

/// An issuance written to PostgreSQL by coupon-api itself (see [`grant`]).
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    pub issued_at: OffsetDateTime,
    pub issuance: u32,
    /// `issued_at` is coupon-api's clock standing in for the issuance's own
    /// time, which coupon-writer sets when it applies the event.
    pub estimated: bool,
}

/// Writes a holder as coupon-writer would: the row if absent, or in place of
/// a reissuable row of an earlier issuance, and one taken from the remaining
/// quantity only if it was written. Returns whether it was. Run it inside the
/// caller's transaction.
pub async fn grant(
    conn: &mut AsyncPgConnection,
    id: CouponId,
    customer: CustomerId,
    grant: Grant,
) -> Result<bool, diesel::result::Error> {
    use diesel::query_dsl::methods::FilterDsl;
    use diesel::upsert::excluded;
    let issuance = i32::try_from(grant.issuance).unwrap_or(i32::MAX);
    let written = diesel::insert_into(customer_coupon::table)
        .values((
            customer_coupon::coupon_id.eq(id.get()),
            customer_coupon::customer_id.eq(customer.get()),
            customer_coupon::issued_at.eq(grant.issued_at),
            customer_coupon::issuance.eq(issuance),
            customer_coupon::issued_at_estimated.eq(grant.estimated),
        ))
        .on_conflict((customer_coupon::coupon_id, customer_coupon::customer_id))
        .do_update()
        .set(Reissue::new(grant.issued_at, issuance, grant.estimated))
        .filter(customer_coupon::reissuable.and(excluded(customer_coupon::issuance).gt(customer_coupon::issuance)))
        .execute(&mut *conn)
        .await?;
    if written == 1 {
        diesel::update(coupon::table.find(id.get()))
            .set(coupon::remaining_quantity.eq(coupon::remaining_quantity - 1))
            .execute(conn)
            .await?;
    }
    Ok(written == 1)
}

/// A new issuance over a reissuable row: a fresh, unused holding.
#[derive(AsChangeset)]
#[diesel(table_name = customer_coupon, treat_none_as_null = true)]
struct Reissue {
    issued_at: OffsetDateTime,
    issued_at_estimated: bool,
    issuance: i32,
    status: &'static str,
    order_id: Option<String>,
    discount_amount: Option<i64>,
    used_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
    revoke_reason: Option<String>,
    released_order_id: Option<String>,
    stock_returned: bool,
    reissuable: bool,
}

impl Reissue {
    fn new(issued_at: OffsetDateTime, issuance: i32, issued_at_estimated: bool) -> Self {
        Self {
            issued_at,
            issued_at_estimated,
            issuance,
            status: "AVAILABLE",
            order_id: None,
            discount_amount: None,
            used_at: None,
            revoked_at: None,
            revoke_reason: None,
            released_order_id: None,
            stock_returned: false,
            reissuable: false,
        }
    }
}
