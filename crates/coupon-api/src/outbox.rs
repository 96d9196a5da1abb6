//! The outbox: one Redis Stream per coupon (`coupon:{id}:outbox`), written by the
//! issue script in the same atomic step as the issuance. An entry lives until
//! Kafka acknowledged its event, so an issuance can never be lost between Redis
//! and Kafka: a crash, a timeout or a broker outage leaves the entry for the relay.

use std::collections::BTreeMap;
use std::sync::Arc;

use coupon_domain::{CouponId, CouponIssuedEvent, CustomerId};
use deadpool_redis::Pool;
use redis::streams::StreamRangeReply;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::issuer::{keys, CouponKeys, RedisUnavailable};

/// An outbox entry whose event Kafka acknowledged (or, in the `sync-db` mode,
/// the database committed): it may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub coupon: CouponId,
    pub entry: String,
}

/// An outbox entry with the event it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub entry: String,
    pub event: CouponIssuedEvent,
}

pub struct Outbox {
    pool: Pool,
    key_prefix: String,
}

impl Outbox {
    pub fn new(pool: Pool, key_prefix: String) -> Self {
        Self { pool, key_prefix }
    }

    fn key(&self, coupon: CouponId) -> String {
        CouponKeys::new(&self.key_prefix, coupon).outbox
    }

    /// Removes delivered entries: one XDEL per coupon, all in one round trip.
    pub async fn acknowledge(&self, delivered: &[Delivered]) -> Result<(), RedisUnavailable> {
        let mut by_coupon: BTreeMap<CouponId, Vec<&str>> = BTreeMap::new();
        for d in delivered {
            by_coupon.entry(d.coupon).or_default().push(&d.entry);
        }
        if by_coupon.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (coupon, entries) in by_coupon {
            pipe.cmd("XDEL").arg(self.key(coupon)).arg(entries).ignore();
        }
        let mut conn = self.pool.get().await?;
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The coupons that may have outbox entries: every primed coupon.
    pub async fn coupons(&self) -> Result<Vec<CouponId>, RedisUnavailable> {
        let mut conn = self.pool.get().await?;
        let ids: Vec<i64> =
            redis::cmd("SMEMBERS").arg(keys::index_key(&self.key_prefix)).query_async(&mut conn).await?;
        Ok(ids.into_iter().filter_map(|id| CouponId::new(id).ok()).collect())
    }

    /// Redis's clock in milliseconds; outbox entry ids are stamped with it.
    pub async fn server_time_ms(&self) -> Result<i64, RedisUnavailable> {
        let mut conn = self.pool.get().await?;
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok(secs * 1_000 + micros / 1_000)
    }

    /// Up to `count` entries written at or before `until_ms` (Redis time), oldest first.
    pub async fn pending(
        &self,
        coupon: CouponId,
        until_ms: i64,
        count: usize,
    ) -> Result<Vec<PendingEvent>, RedisUnavailable> {
        let mut conn = self.pool.get().await?;
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.key(coupon))
            .arg("-")
            .arg(until_ms)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .filter_map(|entry| {
                let customer = CustomerId::new(entry.get::<i64>("customer")?).ok()?;
                let issued_ms: i64 = entry.get("issued_at")?;
                let issued_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(issued_ms) * 1_000_000).ok()?;
                Some(PendingEvent {
                    entry: entry.id,
                    event: CouponIssuedEvent { coupon_id: coupon, customer_id: customer, issued_at },
                })
            })
            .collect())
    }

    /// Entries not yet acknowledged, over all coupons.
    pub async fn depth(&self, coupons: &[CouponId]) -> Result<u64, RedisUnavailable> {
        if coupons.is_empty() {
            return Ok(0);
        }
        let mut conn = self.pool.get().await?;
        let mut pipe = redis::pipe();
        for coupon in coupons {
            pipe.cmd("XLEN").arg(self.key(*coupon));
        }
        let lengths: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(lengths.iter().sum())
    }
}

/// The most entries one acknowledgement round trip removes.
const ACK_BATCH: usize = 1_024;

/// Hands delivered entries to the [`Acknowledger`]; never waits.
#[derive(Clone)]
pub struct AckQueue(mpsc::UnboundedSender<Delivered>);

impl AckQueue {
    pub fn push(&self, delivered: Delivered) {
        if let Err(err) = self.0.send(delivered) {
            tracing::debug!(coupon = %err.0.coupon, "acknowledger stopped; the relay will send the event again");
        }
    }
}

/// Removes delivered entries off the request path, in batches: whatever was
/// delivered while one XDEL round trip was in flight goes in the next, so a
/// spike costs Redis a few large XDELs rather than one per issuance. An entry
/// whose removal fails stays for the relay, which sends it again (a duplicate
/// the idempotent writer absorbs, never a loss).
pub struct Acknowledger {
    outbox: Arc<Outbox>,
    queue: mpsc::UnboundedReceiver<Delivered>,
}

impl Acknowledger {
    pub fn new(outbox: Arc<Outbox>) -> (AckQueue, Self) {
        let (tx, queue) = mpsc::unbounded_channel();
        (AckQueue(tx), Self { outbox, queue })
    }

    /// Runs until `stop` is cancelled, then removes what was queued until then.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(ACK_BATCH);
        let mut stopping = false;
        loop {
            tokio::select! {
                received = self.queue.recv_many(&mut batch, ACK_BATCH) => if received == 0 { break },
                _ = stop.cancelled(), if !stopping => {
                    // Closing lets recv_many drain what is queued, then end.
                    self.queue.close();
                    stopping = true;
                    continue;
                }
            }
            if let Err(err) = self.outbox.acknowledge(&batch).await {
                tracing::warn!(error = %err, entries = batch.len(), "could not remove delivered outbox entries; the relay will send them again");
            }
            batch.clear();
        }
        tracing::info!("outbox acknowledger stopped");
    }
}
