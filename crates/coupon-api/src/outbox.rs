//! The outbox: one Redis Stream per coupon (`coupon:{id}:outbox`), written by the
//! issue script in the same atomic step as the issuance. An entry lives until
//! Kafka acknowledged its event, so an issuance can never be lost between Redis
//! and Kafka: a crash, a timeout or a broker outage leaves the entry for the relay.

use std::collections::BTreeMap;
use std::sync::Arc;

use coupon_domain::{CouponId, CouponIssuedEvent, CustomerId};
use coupon_infra::redis::SharedRedis;
use redis::streams::StreamRangeReply;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::issuer::{release_all, Issuer, RedisUnavailable};

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
    issuer: Arc<Issuer>,
}

impl Outbox {
    pub fn new(issuer: Arc<Issuer>) -> Self {
        Self { issuer }
    }

    fn redis(&self) -> &SharedRedis {
        self.issuer.redis()
    }

    fn key(&self, coupon: CouponId) -> String {
        self.issuer.keys(coupon).outbox
    }

    /// Removes delivered entries, one script call per coupon, pipelined. A
    /// fenced coupon keeps them (see release.lua).
    pub async fn acknowledge(&self, delivered: &[Delivered]) -> Result<(), RedisUnavailable> {
        let mut by_coupon: BTreeMap<CouponId, Vec<&str>> = BTreeMap::new();
        for d in delivered {
            by_coupon.entry(d.coupon).or_default().push(&d.entry);
        }
        let by_coupon: Vec<(CouponId, Vec<&str>)> = by_coupon.into_iter().collect();
        release_all(&self.issuer, &by_coupon).await?;
        Ok(())
    }

    /// Redis's clock in milliseconds; outbox entry ids are stamped with it.
    pub async fn server_time_ms(&self) -> Result<i64, RedisUnavailable> {
        self.issuer.server_time_ms().await
    }

    /// Up to `count` entries written at or before `until_ms` (Redis time),
    /// oldest first; `None` while the coupon is fenced, since nothing could
    /// leave the outbox then and the relay would send the same entries again
    /// and again.
    pub async fn pending(
        &self,
        coupon: CouponId,
        until_ms: i64,
        count: usize,
    ) -> Result<Option<Vec<PendingEvent>>, RedisUnavailable> {
        let keys = self.issuer.keys(coupon);
        let mut pipe = redis::pipe();
        pipe.cmd("HEXISTS").arg(&keys.meta).arg("fenced");
        pipe.cmd("XRANGE").arg(&keys.outbox).arg("-").arg(until_ms).arg("COUNT").arg(count);
        let (fenced, reply): (bool, StreamRangeReply) = self.redis().query_pipe(&pipe).await?;
        if fenced {
            return Ok(None);
        }
        Ok(Some(
            reply
                .ids
                .into_iter()
                .filter_map(|entry| {
                    let customer = CustomerId::new(entry.get::<i64>("customer")?).ok()?;
                    let issued_ms: i64 = entry.get("issued_at")?;
                    let issued_at =
                        OffsetDateTime::from_unix_timestamp_nanos(i128::from(issued_ms) * 1_000_000).ok()?;
                    Some(PendingEvent {
                        entry: entry.id,
                        event: CouponIssuedEvent { coupon_id: coupon, customer_id: customer, issued_at },
                    })
                })
                .collect(),
        ))
    }

    /// Entries not yet acknowledged in these coupons' outboxes.
    pub async fn depth(&self, coupons: &[CouponId]) -> Result<u64, RedisUnavailable> {
        let lengths: Vec<redis::Cmd> =
            coupons.iter().map(|coupon| redis::cmd("XLEN").arg(self.key(*coupon)).to_owned()).collect();
        let lengths: Vec<u64> = self.redis().query_each(&lengths).await?;
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
