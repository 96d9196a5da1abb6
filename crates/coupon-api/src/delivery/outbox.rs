//! The outbox: one Redis Stream per coupon (`coupon:{id}:outbox`), written by the
//! issue script in the same atomic step as the issuance. An entry lives until
//! Kafka acknowledged its event, so an issuance can never be lost between Redis
//! and Kafka: a crash, a timeout or a broker outage leaves the entry for the relay.

use std::collections::BTreeMap;
use std::sync::Arc;

use coupon_domain::keys::CouponKeys;
use coupon_domain::shards::CouponShard;
use coupon_domain::{CouponId, CouponIssuedEvent, CustomerId};
use coupon_infra::redis::SharedRedis;
use futures::future::try_join_all;
use redis::streams::{StreamId, StreamRangeReply};
use redis::Script;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::{from_unix_ms, CouponStore, RedisUnavailable};

/// An outbox entry whose event Kafka acknowledged (or, in the `sync-db` mode,
/// the database committed): it may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub shard: CouponShard,
    pub entry: String,
}

/// A page of a coupon's outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub events: Vec<PendingEvent>,
    /// Entries read, malformed ones included: only a read of none means the
    /// outbox has nothing more up to the time asked for.
    pub read: usize,
    /// Malformed entries moved out of the outbox by this read.
    pub moved_aside: usize,
}

/// An outbox entry with the event it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    /// Whose outbox holds it.
    pub shard: CouponShard,
    pub entry: String,
    pub event: CouponIssuedEvent,
}

pub struct Outbox {
    store: Arc<CouponStore>,
    /// Removes delivered entries unless the coupon is fenced.
    release: Script,
}

impl Outbox {
    pub fn new(store: Arc<CouponStore>) -> Self {
        Self { store, release: Script::new(include_str!("release.lua")) }
    }

    fn redis(&self) -> &SharedRedis {
        self.store.redis()
    }

    fn key(&self, shard: CouponShard) -> String {
        self.store.shard_keys(shard).outbox
    }

    /// Removes delivered entries, one script call per coupon, pipelined. A
    /// fenced coupon keeps them (see release.lua).
    pub async fn acknowledge(&self, delivered: &[Delivered]) -> Result<(), RedisUnavailable> {
        let mut by_shard: BTreeMap<CouponShard, Vec<&str>> = BTreeMap::new();
        for d in delivered {
            by_shard.entry(d.shard).or_default().push(&d.entry);
        }
        try_join_all(by_shard.iter().map(|(shard, entries)| self.release(*shard, entries))).await?;
        Ok(())
    }

    /// Removes delivered entries of one coupon unless it is fenced; returns
    /// how many went.
    async fn release(&self, shard: CouponShard, entries: &[&str]) -> Result<u64, RedisUnavailable> {
        let keys = self.store.shard_keys(shard);
        let mut release = self.release.key(&keys.meta);
        release.key(&keys.outbox).arg(entries);
        Ok(self.redis().invoke(&release).await?)
    }

    /// Redis's clock in milliseconds; outbox entry ids are stamped with it.
    pub async fn server_time_ms(&self) -> Result<i64, RedisUnavailable> {
        self.store.server_time_ms().await
    }

    /// Up to `count` entries written at or before `until_ms` (Redis time),
    /// oldest first; `None` while the coupon is fenced, since nothing could
    /// leave the outbox then and the relay would send the same entries again
    /// and again. An entry that is not an issuance (no customer id or time)
    /// is moved to the coupon's `outbox:malformed` stream and logged: left in
    /// place it would stay forever, and a page it shortened could be taken
    /// for the end of the outbox.
    pub async fn pending(
        &self,
        shard: CouponShard,
        until_ms: i64,
        count: usize,
    ) -> Result<Option<Page>, RedisUnavailable> {
        let keys = self.store.shard_keys(shard);
        let mut pipe = redis::pipe();
        pipe.cmd("HEXISTS").arg(&keys.meta).arg("fenced");
        pipe.cmd("XRANGE").arg(&keys.outbox).arg("-").arg(until_ms).arg("COUNT").arg(count);
        let (fenced, reply): (bool, StreamRangeReply) = self.redis().query_pipe(&pipe).await?;
        if fenced {
            return Ok(None);
        }
        let read = reply.ids.len();
        let mut events = Vec::with_capacity(read);
        let mut malformed = Vec::new();
        for entry in reply.ids {
            match issued_event(shard.coupon, &entry) {
                Some(event) => events.push(PendingEvent { shard, entry: entry.id, event }),
                None => malformed.push(entry),
            }
        }
        if !malformed.is_empty() {
            self.move_aside(&keys, &malformed).await?;
        }
        Ok(Some(Page { events, read, moved_aside: malformed.len() }))
    }

    /// Moves entries to the `outbox:malformed` stream, each with its id and
    /// fields, and out of the outbox, in one transaction (one slot: same hash tag).
    async fn move_aside(&self, keys: &CouponKeys, entries: &[StreamId]) -> Result<(), RedisUnavailable> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for entry in entries {
            let fields = format!("{:?}", entry.map);
            tracing::error!(outbox = %keys.outbox, entry = %entry.id, %fields, "outbox entry is not an issuance; moved to {}", keys.outbox_malformed);
            pipe.cmd("XADD")
                .arg(&keys.outbox_malformed)
                .arg("*")
                .arg("entry")
                .arg(&entry.id)
                .arg("fields")
                .arg(&fields)
                .ignore();
            pipe.cmd("XDEL").arg(&keys.outbox).arg(&entry.id).ignore();
        }
        Ok(self.redis().query_pipe::<()>(&pipe).await?)
    }

    /// Entries not yet acknowledged in these coupons' outboxes.
    pub async fn depth(&self, shards: &[CouponShard]) -> Result<u64, RedisUnavailable> {
        let lengths: Vec<redis::Cmd> =
            shards.iter().map(|shard| redis::cmd("XLEN").arg(self.key(*shard)).to_owned()).collect();
        let lengths: Vec<u64> = self.redis().query_each(&lengths).await?;
        Ok(lengths.iter().sum())
    }
}

/// The event an entry written by issue.lua stands for; `None` if it is not one.
fn issued_event(coupon: CouponId, entry: &StreamId) -> Option<CouponIssuedEvent> {
    let customer = CustomerId::new(entry.get::<i64>("customer")?).ok()?;
    let issued_at = from_unix_ms(entry.get("issued_at")?)?;
    // Written only for a reissue.
    let issuance = match entry.map.get("issuance") {
        None => 0,
        Some(_) => entry.get("issuance")?,
    };
    Some(CouponIssuedEvent { coupon_id: coupon, customer_id: customer, issued_at, issuance })
}

/// The most entries one acknowledgement round trip removes.
const ACK_BATCH: usize = 1_024;

/// Hands delivered entries to the [`Acknowledger`]; never waits.
#[derive(Clone)]
pub struct AckQueue(mpsc::UnboundedSender<Delivered>);

impl AckQueue {
    pub fn push(&self, delivered: Delivered) {
        if let Err(err) = self.0.send(delivered) {
            tracing::debug!(coupon = %err.0.shard, "acknowledger stopped; the relay will send the event again");
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
