//! Refills an empty shard of a sharded coupon from its other shards, or finds
//! the coupon sold out (docs/design/sharding.md).
//!
//! A transfer takes units from a donor and records it there (`take.lua`),
//! adds them to the receiver once per id (`give.lua`), and lets the donor
//! forget it (`settle.lua`). Each step is idempotent by the transfer's id, so
//! whoever finds a transfer left open (a replica that died between two steps)
//! finishes it. The survey that decides what to do reads every shard at once
//! and follows coupon_domain::shards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use coupon_domain::shards::{
    confirms_sold_out, survey_step, transfer_size, CouponShard, ShardReading, SurveyStep, TransferRecord,
};
use coupon_domain::CouponId;
use futures::future::try_join_all;
use prometheus::{IntCounter, IntCounterVec};
use redis::{Script, Value};

use super::issuer::Route;
use crate::store::{CouponStore, RedisUnavailable};

/// Survey rounds before a request gives up and is answered as for a fenced
/// coupon (`503`): each lost round means units moved or were issued meanwhile.
const MAX_ROUNDS: usize = 16;

/// What an empty home shard found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refilled {
    /// The home shard holds stock again: decide there once more.
    Stock,
    /// Every shard was empty with nothing in flight at one moment.
    SoldOut,
    /// A shard is being rebuilt.
    Fenced,
    /// Every survey round lost its race (units moved or were issued
    /// meanwhile); answered as for a fenced coupon, so a request cannot loop.
    Contended,
    /// A shard has no state: the coupon must be rebuilt.
    Missing,
}

impl Refilled {
    const ALL: [Refilled; 5] =
        [Refilled::Stock, Refilled::SoldOut, Refilled::Fenced, Refilled::Contended, Refilled::Missing];

    fn label(self) -> &'static str {
        match self {
            Refilled::Stock => "stock",
            Refilled::SoldOut => "sold_out",
            Refilled::Fenced => "fenced",
            Refilled::Contended => "contended",
            Refilled::Missing => "missing",
        }
    }
}

/// The outcome label of a refill that Redis failed.
const REDIS_FAILED: &str = "error";

/// What the refills of this replica did, for `/metrics`.
#[derive(Clone)]
pub struct RefillCounters {
    /// Refills by how they ended (`Refilled`, or `error` when Redis failed).
    outcomes: IntCounterVec,
    /// Units this replica's transfers gave to a shard (refills, and the
    /// gathering of units for a lower total).
    moved: IntCounter,
}

impl RefillCounters {
    /// Sets a series for every outcome from the start, so that `rate()`
    /// over them has a zero to start from before the first refill.
    pub fn new(outcomes: IntCounterVec, moved: IntCounter) -> Self {
        for label in Refilled::ALL.map(Refilled::label).into_iter().chain([REDIS_FAILED]) {
            outcomes.with_label_values(&[label]);
        }
        Self { outcomes, moved }
    }
}

pub struct Refill {
    store: Arc<CouponStore>,
    /// Prefix of this process's transfer ids; a counter makes each unique.
    id_prefix: String,
    next_id: AtomicU64,
    read: Script,
    take: Script,
    give: Script,
    settle: Script,
    counters: RefillCounters,
}

/// A shard's read: its state, or that it has none.
enum Read {
    Shard(ShardReading),
    Missing,
}

impl Refill {
    pub fn new(store: Arc<CouponStore>, counters: RefillCounters) -> Self {
        Self {
            store,
            id_prefix: format!("{:016x}:", rand::random::<u64>()),
            next_id: AtomicU64::new(0),
            read: Script::new(include_str!("read.lua")),
            take: Script::new(include_str!("take.lua")),
            give: Script::new(include_str!("give.lua")),
            settle: Script::new(include_str!("settle.lua")),
            counters,
        }
    }

    /// Refills the route's shard, which found no stock for `wanted` customers.
    pub async fn refill(&self, route: Route, wanted: i64) -> Result<Refilled, RedisUnavailable> {
        let refilled = self.survey(route, wanted).await;
        let label = refilled.as_ref().map_or(REDIS_FAILED, |refilled| refilled.label());
        self.counters.outcomes.with_label_values(&[label]).inc();
        refilled
    }

    async fn survey(&self, route: Route, wanted: i64) -> Result<Refilled, RedisUnavailable> {
        let (CouponShard { coupon, shard: home }, shards) = (route.shard, route.shards);
        for _ in 0..MAX_ROUNDS {
            let Some(readings) = self.read_all(coupon, shards).await? else { return Ok(Refilled::Missing) };
            match survey_step(home, &readings) {
                SurveyStep::Fenced => return Ok(Refilled::Fenced),
                SurveyStep::Retry => return Ok(Refilled::Stock),
                SurveyStep::TakeFrom(donor) => {
                    let units = transfer_size(readings[usize::from(donor)].stock, wanted);
                    if self.transfer(coupon, donor, home, units).await? > 0 {
                        return Ok(Refilled::Stock);
                    }
                }
                SurveyStep::FinishTransfers => self.finish_open(coupon, shards).await?,
                SurveyStep::Confirm => {
                    let Some(again) = self.read_all(coupon, shards).await? else { return Ok(Refilled::Missing) };
                    let inflows: Vec<i64> = again.iter().map(|reading| reading.inflow).collect();
                    if confirms_sold_out(&readings, &inflows) {
                        return Ok(Refilled::SoldOut);
                    }
                }
            }
        }
        tracing::warn!(coupon = %coupon, home, "a refill lost every survey round; its customers are answered 503");
        Ok(Refilled::Contended)
    }

    /// Every shard, read concurrently; `None` if one has no state.
    async fn read_all(&self, coupon: CouponId, shards: u16) -> Result<Option<Vec<ShardReading>>, RedisUnavailable> {
        let reads = try_join_all((0..shards).map(|shard| self.read(coupon, shard))).await?;
        Ok(reads
            .into_iter()
            .map(|read| match read {
                Read::Shard(reading) => Some(reading),
                Read::Missing => None,
            })
            .collect())
    }

    async fn read(&self, coupon: CouponId, shard: u16) -> Result<Read, RedisUnavailable> {
        let keys = self.store.shard_keys(CouponShard { coupon, shard });
        let reply: Value =
            self.store.redis().invoke(self.read.key(&keys.meta).key(&keys.stock).key(&keys.transfers)).await?;
        match &reply {
            Value::Array(items) => match items.as_slice() {
                [Value::BulkString(missing)] if missing == b"MISSING" => Ok(Read::Missing),
                [Value::Int(stock), Value::Int(inflow), Value::Int(open), Value::Int(fenced)] => {
                    Ok(Read::Shard(ShardReading {
                        stock: *stock,
                        inflow: *inflow,
                        open_transfers: u32::try_from(*open).unwrap_or(u32::MAX),
                        fenced: *fenced == 1,
                    }))
                }
                _ => Err(RedisUnavailable::Reply(reply)),
            },
            _ => Err(RedisUnavailable::Reply(reply)),
        }
    }

    /// Moves up to `units` from `donor` to `receiver`; how many arrived.
    pub async fn transfer(
        &self,
        coupon: CouponId,
        donor: u16,
        receiver: u16,
        units: i64,
    ) -> Result<i64, RedisUnavailable> {
        let id = format!("{}{}", self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed));
        let keys = self.store.shard_keys(CouponShard { coupon, shard: donor });
        let mut take = self.take.key(&keys.meta);
        take.key(&keys.stock).key(&keys.transfers).arg(&id).arg(units).arg(receiver);
        let (taken, epoch): (i64, String) = self.store.redis().invoke(&take).await?;
        if taken == 0 {
            return Ok(0);
        }
        if let Some(hold) = held_after_take() {
            tokio::time::sleep(hold).await;
        }
        let arrived =
            self.finish(coupon, donor, &Open { id, record: TransferRecord { receiver, units: taken, epoch } }).await?;
        Ok(if arrived { taken } else { 0 })
    }

    /// Gives and settles every transfer some shard recorded and has not
    /// settled: a replica died between two steps, or is between them now.
    async fn finish_open(&self, coupon: CouponId, shards: u16) -> Result<(), RedisUnavailable> {
        for donor in 0..shards {
            let keys = self.store.shard_keys(CouponShard { coupon, shard: donor });
            let open: Vec<(String, String)> =
                self.store.redis().query(redis::cmd("HGETALL").arg(&keys.transfers)).await?;
            for (id, record) in open {
                match record.parse() {
                    Ok(parsed) => {
                        self.finish(coupon, donor, &Open { id, record: parsed }).await?;
                    }
                    Err(_) => tracing::error!(coupon = %coupon, donor, record, "a transfer record that cannot be read"),
                }
            }
        }
        Ok(())
    }

    /// The give and the settle of a taken transfer; whether its units arrived
    /// (now or before). A voided transfer's units are in the stock the
    /// rebuild that voided it set.
    async fn finish(&self, coupon: CouponId, donor: u16, transfer: &Open) -> Result<bool, RedisUnavailable> {
        let Open { id, record } = transfer;
        let receiver = self.store.shard_keys(CouponShard { coupon, shard: record.receiver });
        let mut give = self.give.key(&receiver.meta);
        give.key(&receiver.stock).key(&receiver.received).arg(id).arg(record.units).arg(&record.epoch);
        let outcome: String = self.store.redis().invoke(&give).await?;
        if outcome == "GIVEN" {
            self.counters.moved.inc_by(record.units.unsigned_abs());
        }
        let donor = self.store.shard_keys(CouponShard { coupon, shard: donor });
        let _: i64 = self.store.redis().invoke(self.settle.key(&donor.transfers).arg(id)).await?;
        Ok(outcome != "VOID")
    }
}

/// How long the `refill-transfer-taken` fail point (`return(<ms>)`) holds a
/// transfer between its take and its give, as a replica that stalls there:
/// for the tests that fail a master while a transfer is open. Never without
/// the `failpoints` feature.
fn held_after_take() -> Option<std::time::Duration> {
    fail::fail_point!("refill-transfer-taken", |ms: Option<String>| {
        ms.and_then(|ms| ms.parse().ok()).map(std::time::Duration::from_millis)
    });
    None
}

/// A transfer a donor recorded and has not settled, under its id.
struct Open {
    id: String,
    record: TransferRecord,
}
