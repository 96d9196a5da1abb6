//! Spending held coupons: an order uses one (redeem) and gives it back when
//! its payment fails (release).
//!
//! PostgreSQL decides, one transaction per request: the held coupon's row is
//! locked `FOR UPDATE`, so two orders redeeming one coupon at once, or a
//! redeem racing a release, run one after the other and the second sees the
//! first's outcome. The same transaction writes the change's event to
//! `coupon_usage_outbox`; the `relay` publishes it. A change without its event,
//! or an event without its change, cannot commit.
//!
//! A coupon Redis issued that coupon-writer has not written yet is usable:
//! when the row is missing and Redis (trusted, with the coupon present and
//! not fenced) says the customer holds it, the transaction writes the row as
//! coupon-writer would (under the coupon's lock, taking one from the remaining
//! quantity, never for a customer already recorded as sold out at write), and
//! the writer's later insert of the same event does nothing. A customer never
//! has to wait for the writer to pay with what the API told them they got.
//!
//! An order whose use was released (`released_order`) never uses the coupon
//! again: the order service cancelled it, so a late retry of its redeem is
//! refused (`ORDER_RELEASED`) instead of tying the coupon to it once more.

pub mod revoke;
pub mod usage_relay;

use std::sync::Arc;

use coupon_domain::{CouponId, CustomerId, HoldingStatus, UsageKind, UseRejection};
use coupon_infra::db::schema::{
    coupon, coupon_control, coupon_usage_outbox, customer_coupon, released_order, sold_out_at_write,
};
use coupon_infra::db::PgPool;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::audit::{Actor, Entry};
use crate::catalog::{self, CouponRow, Holding};
use crate::store::incarnation::Incarnations;
use crate::store::{CouponStore, Presence, RedisUnavailable};

#[derive(Debug, thiserror::Error)]
pub enum RedemptionError {
    #[error("{0}")]
    Rejected(UseRejection),
    /// Redis cannot tell now whether a coupon PostgreSQL does not have yet
    /// was issued (being rebuilt, or not trusted since a restart).
    #[error("whether the coupon was issued cannot be told until Redis is restored")]
    Undecided,
    #[error("no PostgreSQL connection: {0}")]
    Pool(#[from] diesel_async::pooled_connection::deadpool::PoolError),
    #[error("PostgreSQL query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error(transparent)]
    Redis(#[from] RedisUnavailable),
    #[error("Kafka did not acknowledge a usage event: {0}")]
    Publish(#[from] crate::delivery::publisher::PublishError),
    /// Revoked in PostgreSQL; Redis has not got the returned unit yet (it
    /// sells one less until the revoke is sent again).
    #[error("revoked; the returned unit has not reached Redis yet")]
    ReturnPending,
}

/// An order's use of a held coupon: redeem with `order_amount`, release without.
#[derive(Debug, Clone)]
pub struct OrderRef {
    pub coupon: CouponId,
    pub customer: CustomerId,
    pub order_id: String,
}

impl OrderRef {
    pub fn held(&self) -> Held {
        Held { coupon: self.coupon, customer: self.customer }
    }
}

/// A customer's holding of a coupon.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub coupon: CouponId,
    pub customer: CustomerId,
}

/// A held coupon's state after a redeem or a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub coupon: CouponId,
    pub customer: CustomerId,
    pub order_id: String,
    /// What the order gets off; `None` after a release.
    pub discount_amount: Option<i64>,
    pub status: HoldingStatus,
}

pub struct Redemptions {
    pool: PgPool,
    /// Who holds a coupon that Redis still knows.
    store: Arc<CouponStore>,
    incarnations: Arc<Incarnations>,
    /// Wakes the relay when an event was committed.
    committed: Arc<Notify>,
    /// How long after its period Redis keeps an ended coupon
    /// (`recovery.ended_grace_ms`). A coupon missing from Redis sooner was
    /// lost with Redis, and coupon-writer may not have applied all of its
    /// issuances yet.
    ended_grace: time::Duration,
    /// Puts a revoked unit back into Redis's stock (`return.lua`).
    give_back: redis::Script,
}

impl Redemptions {
    pub fn new(
        pool: PgPool,
        (store, incarnations): (Arc<CouponStore>, Arc<Incarnations>),
        committed: Arc<Notify>,
        ended_grace: std::time::Duration,
    ) -> Self {
        // Beyond time's range only for a grace nobody configures; a century is as final.
        let ended_grace = time::Duration::try_from(ended_grace).unwrap_or(time::Duration::days(36_500));
        let give_back = redis::Script::new(include_str!("return.lua"));
        Self { pool, store, incarnations, committed, ended_grace, give_back }
    }

    /// Uses the coupon for the order. The same order again answers as the
    /// first time did; another order while it is used: `ALREADY_USED`; an
    /// order whose use was released: `ORDER_RELEASED`.
    /// Support staff's redeem (`audited`) is recorded in the audit.
    pub async fn redeem(
        &self,
        order: &OrderRef,
        order_amount: i64,
        audited: Option<&Actor<'_>>,
    ) -> Result<Usage, RedemptionError> {
        let now = OffsetDateTime::now_utc();
        let mut conn = self.pool.get().await?;
        let usage = conn
            .transaction::<_, RedemptionError, _>(async |conn| {
                let coupon = coupon_row(conn, order.coupon).await?;
                let holding = self.holding(conn, order.held(), &coupon).await?;
                let usage = |discount_amount, status| Usage {
                    coupon: order.coupon,
                    customer: order.customer,
                    order_id: order.order_id.clone(),
                    discount_amount,
                    status,
                };
                match holding.used_by() {
                    _ if holding.is_revoked() => return Err(RedemptionError::Rejected(UseRejection::Revoked)),
                    Some(used_by) if used_by == order.order_id => {
                        return Ok((usage(holding.discount_amount, HoldingStatus::Used), false));
                    }
                    _ if was_released(conn, order).await? => {
                        return Err(RedemptionError::Rejected(UseRejection::OrderReleased));
                    }
                    Some(_) => return Err(RedemptionError::Rejected(UseRejection::AlreadyUsed)),
                    None => {}
                }
                if redemption_paused(conn, order.coupon).await? {
                    return Err(RedemptionError::Rejected(UseRejection::Paused));
                }
                let discount =
                    coupon.discount.policy().ok_or(RedemptionError::Rejected(UseRejection::NotRedeemable))?;
                if now > coupon.valid_until() {
                    return Err(RedemptionError::Rejected(UseRejection::Expired));
                }
                if order_amount < coupon.min_order_amount {
                    return Err(RedemptionError::Rejected(UseRejection::BelowMinimum));
                }
                let off = discount.amount_off(order_amount);
                diesel::update(holding_row(order.held()))
                    .set((
                        customer_coupon::status.eq("USED"),
                        customer_coupon::order_id.eq(&order.order_id),
                        customer_coupon::discount_amount.eq(off),
                        customer_coupon::used_at.eq(now),
                    ))
                    .execute(&mut *conn)
                    .await?;
                record_event(conn, Event::of_order(UsageKind::Used, order, off), now).await?;
                record_spent(conn, audited, "redeem", order, Some(off)).await?;
                Ok((usage(Some(off), HoldingStatus::Used), true))
            })
            .await;
        self.told(usage)
    }

    /// Gives the coupon back from the order that used it. Again for the same
    /// order (already given back, and no other order uses it since): the same
    /// answer; while another order uses it, or if this order never did (or the
    /// customer holds no such coupon): `NOT_USED_BY_ORDER`.
    /// Support staff's release (`audited`) is recorded in the audit.
    pub async fn release(&self, order: &OrderRef, audited: Option<&Actor<'_>>) -> Result<Usage, RedemptionError> {
        let now = OffsetDateTime::now_utc();
        let mut conn = self.pool.get().await?;
        let usage = conn
            .transaction::<_, RedemptionError, _>(async |conn| {
                let coupon = coupon_row(conn, order.coupon).await?;
                // A coupon not written yet was never used: nothing to give back.
                let holding = locked_holding(conn, order.held())
                    .await?
                    .ok_or(RedemptionError::Rejected(UseRejection::NotUsedByOrder))?;
                let available = HoldingStatus::as_of("AVAILABLE", coupon.valid_until(), now);
                let usage = Usage {
                    coupon: order.coupon,
                    customer: order.customer,
                    order_id: order.order_id.clone(),
                    discount_amount: None,
                    status: available,
                };
                match holding.used_by() {
                    Some(used_by) if used_by == order.order_id => {}
                    None if was_released(conn, order).await? => return Ok((usage, false)),
                    _ => return Err(RedemptionError::Rejected(UseRejection::NotUsedByOrder)),
                }
                let off = holding.discount_amount.unwrap_or(0);
                diesel::update(holding_row(order.held()))
                    .set((
                        customer_coupon::status.eq("AVAILABLE"),
                        customer_coupon::order_id.eq(None::<String>),
                        customer_coupon::discount_amount.eq(None::<i64>),
                        customer_coupon::used_at.eq(None::<OffsetDateTime>),
                        // Read only by replicas of the previous version (see
                        // the migration that added `released_order`).
                        customer_coupon::released_order_id.eq(&order.order_id),
                    ))
                    .execute(&mut *conn)
                    .await?;
                // Present already if an earlier version let this order redeem again.
                diesel::insert_into(released_order::table)
                    .values((
                        released_order::coupon_id.eq(order.coupon.get()),
                        released_order::customer_id.eq(order.customer.get()),
                        released_order::order_id.eq(&order.order_id),
                    ))
                    .on_conflict_do_nothing()
                    .execute(&mut *conn)
                    .await?;
                record_event(conn, Event::of_order(UsageKind::Released, order, off), now).await?;
                record_spent(conn, audited, "release", order, None).await?;
                Ok((usage, true))
            })
            .await;
        self.told(usage)
    }

    /// Wakes the relay after a commit that wrote an event.
    fn told(&self, outcome: Result<(Usage, bool), RedemptionError>) -> Result<Usage, RedemptionError> {
        let (usage, changed) = outcome?;
        if changed {
            self.committed.notify_one();
        }
        Ok(usage)
    }

    /// The customer's holding, locked: its row, or the one Redis issued and
    /// coupon-writer has not written yet (`write_issued`).
    async fn holding(
        &self,
        conn: &mut AsyncPgConnection,
        held: Held,
        coupon: &CouponRow,
    ) -> Result<Holding, RedemptionError> {
        match locked_holding(conn, held).await? {
            Some(holding) if !holding.reissuable => Ok(holding),
            row => self.write_issued(conn, held, coupon, row).await,
        }
    }

    /// The row for a coupon PostgreSQL did not have for this customer (or
    /// had only as `revoked`, reissuable): the one coupon-writer committed
    /// while this waited for the coupon's lock, or else one written here if
    /// Redis issued it (see the module's documentation); locked. A revoked
    /// row stays the answer while Redis has issued nothing newer.
    async fn write_issued(
        &self,
        conn: &mut AsyncPgConnection,
        held: Held,
        coupon: &CouponRow,
        revoked: Option<Holding>,
    ) -> Result<Holding, RedemptionError> {
        let not_held = RedemptionError::Rejected(UseRejection::NotHeld);
        if !self.incarnations.is_trusted().await? {
            return Err(RedemptionError::Undecided);
        }
        let now = OffsetDateTime::now_utc();
        // Whether Redis still knows the coupon: then it says who holds it.
        let known = match <[Presence]>::first(&self.store.presence(&[(held.coupon, coupon.shard_count())]).await?) {
            Some(Presence::Ready) => true,
            Some(Presence::Fenced) => return Err(RedemptionError::Undecided),
            // Redis drops a coupon only after its period; an open coupon
            // missing is being restored.
            Some(Presence::Missing) | None if now <= coupon.ends_at => return Err(RedemptionError::Undecided),
            Some(Presence::Missing) | None => false,
        };
        let newer = |issuance: u32| revoked.as_ref().is_none_or(|row| i64::from(issuance) > i64::from(row.issuance));
        let issuance = match known {
            true => match self.store.holding(held.coupon, held.customer).await? {
                Some(issuance) if newer(issuance) => Some(issuance),
                _ => return revoked.ok_or(not_held),
            },
            false => None,
        };
        // Waits behind a coupon-writer statement that holds the coupon, and
        // each statement after it reads what that one committed.
        let remaining: i32 = coupon::table
            .find(held.coupon.get())
            .select(coupon::remaining_quantity)
            .for_no_key_update()
            .first(&mut *conn)
            .await?;
        // The writer may have written this customer's row while we waited.
        if let Some(holding) = locked_holding(conn, held).await? {
            if !holding.reissuable || issuance.is_none_or(|issuance| !newer(issuance)) {
                return Ok(holding);
            }
        }
        let recorded_sold_out: bool = diesel::select(diesel::dsl::exists(
            sold_out_at_write::table
                .filter(sold_out_at_write::coupon_id.eq(held.coupon.get()))
                .filter(sold_out_at_write::customer_id.eq(held.customer.get())),
        ))
        .get_result(&mut *conn)
        .await?;
        // Final either way: stock never comes back, or the writer refused this customer.
        if remaining == 0 || recorded_sold_out {
            return revoked.ok_or(not_held);
        }
        let Some(issuance) = issuance else {
            // Whether coupon-writer still has this customer's issuance to
            // apply cannot be told, and a 404 would make the order service
            // drop a coupon the customer may hold: 503 while the coupon is
            // usable and the writer has had less time than a retired coupon
            // gives it.
            let unsettled = now <= coupon.valid_until() && now < coupon.ends_at + self.ended_grace;
            return if unsettled { Err(RedemptionError::Undecided) } else { revoked.ok_or(not_held) };
        };
        // The issuance's own time left Redis with its event; coupon-writer
        // puts it in place of this estimate when it applies the event.
        let grant = catalog::Grant { issued_at: now, issuance, estimated: true };
        if catalog::grant(conn, held.coupon, held.customer, grant).await? {
            tracing::info!(coupon = %held.coupon, customer = %held.customer, issuance, "redeemed before coupon-writer wrote the issuance; wrote it");
        }
        locked_holding(conn, held).await?.ok_or(not_held)
    }
}

/// The coupon's row, share-locked until commit: an operator's pause (which
/// locks it for update) waits for the redeems under way, and a redeem that
/// starts after it reads its outcome, so none commits after the pause's answer.
/// coupon-writer's batches do not conflict with it.
async fn coupon_row(conn: &mut AsyncPgConnection, id: CouponId) -> Result<CouponRow, RedemptionError> {
    coupon::table
        .find(id.get())
        .select(CouponRow::as_select())
        .for_key_share()
        .first(conn)
        .await
        .optional()?
        .ok_or(RedemptionError::Rejected(UseRejection::CouponNotFound))
}

/// Whether an operator paused the coupon's redemption.
async fn redemption_paused(conn: &mut AsyncPgConnection, id: CouponId) -> Result<bool, RedemptionError> {
    Ok(coupon_control::table
        .find(id.get())
        .select(coupon_control::redemption_paused)
        .first(conn)
        .await
        .optional()?
        .unwrap_or(false))
}

fn holding_row(
    held: Held,
) -> diesel::dsl::Filter<
    diesel::dsl::Filter<customer_coupon::table, diesel::dsl::Eq<customer_coupon::coupon_id, i64>>,
    diesel::dsl::Eq<customer_coupon::customer_id, i64>,
> {
    customer_coupon::table
        .filter(customer_coupon::coupon_id.eq(held.coupon.get()))
        .filter(customer_coupon::customer_id.eq(held.customer.get()))
}

async fn locked_holding(conn: &mut AsyncPgConnection, held: Held) -> Result<Option<Holding>, RedemptionError> {
    Ok(holding_row(held).select(Holding::as_select()).for_update().first(conn).await.optional()?)
}

/// Whether this order's use of the holding was released.
async fn was_released(conn: &mut AsyncPgConnection, order: &OrderRef) -> Result<bool, RedemptionError> {
    let key = (order.coupon.get(), order.customer.get(), &order.order_id);
    Ok(diesel::select(diesel::dsl::exists(released_order::table.find(key))).get_result(conn).await?)
}

async fn record_event(
    conn: &mut AsyncPgConnection,
    event: Event<'_>,
    at: OffsetDateTime,
) -> Result<(), RedemptionError> {
    diesel::insert_into(coupon_usage_outbox::table)
        .values((
            coupon_usage_outbox::kind.eq(event.kind.as_str()),
            coupon_usage_outbox::coupon_id.eq(event.held.coupon.get()),
            coupon_usage_outbox::customer_id.eq(event.held.customer.get()),
            coupon_usage_outbox::order_id.eq(event.order_id),
            coupon_usage_outbox::discount_amount.eq(event.discount_amount),
            coupon_usage_outbox::reason.eq(event.reason),
            coupon_usage_outbox::occurred_at.eq(at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// A change of a held coupon, as its event says it.
struct Event<'a> {
    kind: UsageKind,
    held: Held,
    order_id: Option<&'a str>,
    discount_amount: i64,
    reason: Option<&'a str>,
}

impl<'a> Event<'a> {
    fn of_order(kind: UsageKind, order: &'a OrderRef, discount_amount: i64) -> Self {
        Self { kind, held: order.held(), order_id: Some(&order.order_id), discount_amount, reason: None }
    }
}

/// Support staff's use or release of a customer's coupon, in the audit.
async fn record_spent(
    conn: &mut AsyncPgConnection,
    audited: Option<&Actor<'_>>,
    action: &str,
    order: &OrderRef,
    discount_amount: Option<i64>,
) -> Result<(), diesel::result::Error> {
    let Some(actor) = audited else { return Ok(()) };
    let spent = serde_json::json!({
        "customerId": order.customer.get(),
        "orderId": order.order_id,
        "discountAmount": discount_amount,
    });
    Entry::made(actor, action, order.coupon, &spent).insert(conn).await
}
