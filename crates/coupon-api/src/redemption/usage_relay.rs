//! Publishes `coupon_usage_outbox` to Kafka: uses to `kafka.used_topic`,
//! releases to `kafka.released_topic`, revocations to `kafka.revoked_topic`,
//! key = coupon id.
//!
//! One replica at a time relays (a transaction-scoped advisory lock; the
//! others skip the pass), in id order, so a coupon's events reach Kafka in the
//! order they were committed. A row is deleted in the transaction that read
//! it, after Kafka acknowledged its event: at least once. A crash or a
//! PostgreSQL failure between the acknowledgement and the commit sends those
//! events again on the next pass with the same `eventId`, which is how
//! consumers recognise the repeat.

use std::sync::Arc;
use std::time::Duration;

use coupon_domain::{CouponId, CouponUsageEvent, CustomerId, UsageKind};
use coupon_infra::backoff::Backoff;
use coupon_infra::db::schema::coupon_usage_outbox;
use coupon_infra::db::PgPool;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use futures::future::join_all;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::delivery::publisher::Publisher;
use crate::metrics::Metrics;
use crate::redemption::RedemptionError;

/// The advisory lock that makes one relay at a time read the outbox.
const RELAY_LOCK: i64 = 0x636f_7570_6f6e_7573; // "couponus"

/// Events per pass; a full pass is followed by the next at once.
const BATCH: i64 = 500;

/// How often the outbox is read when no commit wakes the relay: events of
/// other replicas, and of passes that failed.
const IDLE_INTERVAL: Duration = Duration::from_secs(1);

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = coupon_usage_outbox)]
struct OutboxRow {
    id: i64,
    kind: String,
    coupon_id: i64,
    customer_id: i64,
    order_id: Option<String>,
    discount_amount: i64,
    occurred_at: OffsetDateTime,
    reason: Option<String>,
}

impl OutboxRow {
    /// The event; `None` for a row no version of this service writes.
    fn event(self) -> Option<CouponUsageEvent> {
        Some(CouponUsageEvent {
            event_id: self.id,
            kind: UsageKind::parse(&self.kind)?,
            coupon_id: CouponId::new(self.coupon_id).ok()?,
            customer_id: CustomerId::new(self.customer_id).ok()?,
            order_id: self.order_id,
            discount_amount: self.discount_amount,
            reason: self.reason,
            occurred_at: self.occurred_at,
        })
    }
}

pub struct UsageRelay {
    pub pool: PgPool,
    pub publisher: Arc<Publisher>,
    pub used_topic: String,
    pub released_topic: String,
    pub revoked_topic: String,
    pub metrics: Metrics,
    /// Notified by each commit that wrote an event.
    pub committed: Arc<Notify>,
}

impl UsageRelay {
    pub async fn run(self, stop: CancellationToken) {
        // The pause after a failed pass; reset by a pass that succeeds.
        let mut backoff = Backoff::new(FIRST_RETRY, MAX_BACKOFF);
        let mut wait = IDLE_INTERVAL;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.committed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            // A full pass leaves more: the next one follows at once.
            let outcome = loop {
                match self.pass().await {
                    Ok(published) if published == BATCH as usize => continue,
                    outcome => break outcome,
                }
            };
            wait = match outcome {
                Ok(_) => {
                    backoff.reset();
                    IDLE_INTERVAL
                }
                Err(err) => {
                    let retry_in = backoff.next_delay();
                    tracing::warn!(error = %err, ?retry_in, "usage events not relayed; they stay in the outbox");
                    retry_in
                }
            };
        }
    }

    /// Publishes the oldest events and deletes those Kafka acknowledged;
    /// returns how many it published. Fails if any was not acknowledged
    /// (those stay, and the next pass sends them again).
    async fn pass(&self) -> Result<usize, RedemptionError> {
        let mut conn = self.pool.get().await?;
        let (published, failure) = conn
            .transaction::<_, RedemptionError, _>(async |conn| {
                let locked: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
                    "pg_try_advisory_xact_lock({RELAY_LOCK})"
                )))
                .get_result(&mut *conn)
                .await?;
                if !locked {
                    return Ok((0, None));
                }
                let rows: Vec<OutboxRow> = coupon_usage_outbox::table
                    .order(coupon_usage_outbox::id)
                    .limit(BATCH)
                    .select(OutboxRow::as_select())
                    .load(&mut *conn)
                    .await?;
                let (ids, sends): (Vec<i64>, Vec<_>) = rows
                    .into_iter()
                    .filter_map(|row| {
                        let id = row.id;
                        let event = row.event().or_else(|| {
                            tracing::error!(id, "a usage outbox row no event can be made of; left in place");
                            None
                        })?;
                        let topic = match event.kind {
                            UsageKind::Used => &self.used_topic,
                            UsageKind::Released => &self.released_topic,
                            UsageKind::Revoked => &self.revoked_topic,
                        };
                        Some((id, self.publisher.send_usage(topic, &event)))
                    })
                    .unzip();
                let outcomes = join_all(sends).await;
                let delivered: Vec<i64> =
                    ids.iter().zip(&outcomes).filter(|(_, outcome)| outcome.is_ok()).map(|(id, _)| *id).collect();
                diesel::delete(coupon_usage_outbox::table.filter(coupon_usage_outbox::id.eq_any(&delivered)))
                    .execute(&mut *conn)
                    .await?;
                Ok((delivered.len(), outcomes.into_iter().find_map(Result::err)))
            })
            .await?;
        self.metrics.usage_events_published.inc_by(published as u64);
        // Every replica reports the shared outbox, the one relaying or not.
        let depth: i64 = coupon_usage_outbox::table.count().get_result(&mut conn).await?;
        self.metrics.usage_outbox_depth.set(depth);
        match failure {
            Some(err) => Err(RedemptionError::Publish(err)),
            None => Ok(published),
        }
    }
}
