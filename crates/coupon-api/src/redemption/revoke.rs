//! Support staff revoke a customer's unused coupon (fraud, a grant made in
//! error): the holding becomes `REVOKED` and can no longer be redeemed, and
//! `inside.coupon.revoked` goes out through the outbox, in one transaction
//! with the audit entry. The customer stays a holder: Redis still counts the
//! unit as issued, and a new issue request answers `ALREADY_ISSUED`.
//!
//! A coupon Redis issued that coupon-writer has not written yet is written
//! first, as a redeem does; the writer's later insert of the same event then
//! does nothing, so the revocation stands.

use coupon_domain::{UsageKind, UseRejection};
use coupon_infra::db::schema::customer_coupon;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;
use time::OffsetDateTime;

use super::{coupon_row, holding_row, locked_holding, record_event, Event, Held, RedemptionError, Redemptions};
use crate::audit::{Actor, Entry};

/// A revoked holding.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    pub coupon_id: i64,
    pub customer_id: i64,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
}

impl Redemptions {
    /// Revokes `held` for `reason`. A used coupon: `ALREADY_USED`; one revoked
    /// before: `ALREADY_REVOKED`; none held: `NOT_HELD`.
    pub async fn revoke(&self, held: Held, reason: &str, actor: &Actor<'_>) -> Result<Revocation, RedemptionError> {
        let now = OffsetDateTime::now_utc();
        let mut conn = self.pool.get().await?;
        let revocation = conn
            .transaction::<_, RedemptionError, _>(async |conn| {
                let coupon = coupon_row(conn, held.coupon).await?;
                let holding = match locked_holding(conn, held).await? {
                    Some(holding) => holding,
                    None => self.write_issued(conn, held, &coupon).await?,
                };
                if holding.is_revoked() {
                    return Err(RedemptionError::Rejected(UseRejection::AlreadyRevoked));
                }
                if holding.used_by().is_some() {
                    return Err(RedemptionError::Rejected(UseRejection::AlreadyUsed));
                }
                diesel::update(holding_row(held))
                    .set((
                        customer_coupon::status.eq("REVOKED"),
                        customer_coupon::revoked_at.eq(now),
                        customer_coupon::revoke_reason.eq(reason),
                    ))
                    .execute(&mut *conn)
                    .await?;
                let event =
                    Event { kind: UsageKind::Revoked, held, order_id: None, discount_amount: 0, reason: Some(reason) };
                record_event(conn, event, now).await?;
                let revocation = Revocation {
                    coupon_id: held.coupon.get(),
                    customer_id: held.customer.get(),
                    reason: reason.to_string(),
                    revoked_at: now,
                };
                let before = serde_json::json!({ "customerId": held.customer.get(), "status": "AVAILABLE" });
                Entry::new(actor, "revoke", held.coupon, &before, &revocation).insert(conn).await?;
                Ok(revocation)
            })
            .await?;
        self.committed.notify_one();
        tracing::warn!(coupon = %held.coupon, customer = %held.customer, actor = actor.name, "held coupon revoked");
        Ok(revocation)
    }
}
