//! Applies decoded events to PostgreSQL, one transaction per batch, idempotently:
//! a row that already exists is skipped, and a coupon's `remaining_quantity`
//! goes down by the rows actually inserted, so a redelivered batch changes
//! nothing. One statement per batch (`statements::ApplyBatch`), never one per event.
//!
//! An event the coupon's stock cannot cover is recorded in `sold_out_at_write`
//! and counted (`Applied::sold_out`); it is an outcome, not poison.
//!
//! A batch that hits a poison error is split in halves until the bad records
//! stand alone; the good halves are applied, the bad records are returned.
//! The events of a coupon the statement deferred (another writer wrote it
//! while this one waited for its lock) are applied again at once in a new
//! statement.

use std::collections::{BTreeMap, HashMap};
use std::ops::AddAssign;
use std::time::Instant;

use coupon_domain::{group_by_coupon, CouponId, CouponIssuedEvent};
use coupon_infra::db::PgPool;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use time::OffsetDateTime;

use crate::error::{Poison, WriteError};
use crate::metrics::Metrics;
use crate::statements::ApplyBatch;

/// How many statements in a row may defer a coupon before the batch fails as
/// retryable and waits for the backoff. Each deferral means another writer
/// committed rows for that coupon meanwhile: the system still progresses.
const MAX_DEFERRALS: u32 = 5;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub inserted: u64,
    /// Recorded in `sold_out_at_write`: the coupon had no stock left for them.
    pub sold_out: u64,
    pub duplicates: u64,
}

impl AddAssign for Applied {
    fn add_assign(&mut self, other: Self) {
        self.inserted += other.inserted;
        self.sold_out += other.sold_out;
        self.duplicates += other.duplicates;
    }
}

/// An event that can never be applied.
#[derive(Debug)]
pub struct Rejected {
    /// Its position in the slice given to `apply`.
    pub index: usize,
    pub reason: Poison<'static>,
    /// The transactions it took part in.
    pub attempts: u32,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub applied: Applied,
    /// Rows recorded in `sold_out_at_write`, per coupon that has any.
    pub sold_out: BTreeMap<CouponId, u64>,
    pub transactions: u32,
    /// In the order of the events.
    pub rejected: Vec<Rejected>,
}

/// Events still to apply.
struct Pending {
    /// Their positions in the slice given to `apply`.
    indexes: Vec<usize>,
    /// The transactions they will have taken part in after the next one.
    attempts: u32,
    /// How many times in a row their coupons were deferred.
    deferrals: u32,
}

/// Applies `events`, isolating poison. Returns an error only for a retryable
/// failure, after which applying the same events again is safe.
pub async fn apply(pool: &PgPool, metrics: &Metrics, events: &[&CouponIssuedEvent]) -> Result<Outcome, WriteError> {
    let mut outcome = Outcome::default();
    let result = apply_all(pool, metrics, events, &mut outcome).await;
    // Also after a failure: what was recorded before it stays recorded.
    if outcome.applied.sold_out > 0 {
        let coupons: Vec<i64> = outcome.sold_out.keys().map(|id| id.get()).collect();
        tracing::warn!(
            ?coupons,
            sold_out = outcome.applied.sold_out,
            "events recorded in sold_out_at_write: PostgreSQL had no stock left for customers told ISSUED"
        );
    }
    result?;
    outcome.rejected.sort_by_key(|rejected| rejected.index);
    Ok(outcome)
}

async fn apply_all(
    pool: &PgPool,
    metrics: &Metrics,
    events: &[&CouponIssuedEvent],
    outcome: &mut Outcome,
) -> Result<(), WriteError> {
    // Right halves are pushed first, so records are applied in their order.
    let mut pending = vec![Pending { indexes: (0..events.len()).collect(), attempts: 1, deferrals: 0 }];
    while let Some(Pending { indexes, attempts, deferrals }) = pending.pop() {
        if indexes.is_empty() {
            continue;
        }
        outcome.transactions += 1;
        let chosen: Vec<&CouponIssuedEvent> = indexes.iter().map(|&index| events[index]).collect();
        match apply_once(pool, metrics, &chosen).await {
            Ok(done) => {
                outcome.applied += done.applied;
                for (coupon, n) in done.sold_out {
                    *outcome.sold_out.entry(coupon).or_default() += n;
                }
                outcome.rejected.extend(done.unknown.into_iter().map(|i| Rejected {
                    index: indexes[i],
                    reason: Poison::UnknownCoupon(chosen[i].coupon_id),
                    attempts,
                }));
                if !done.deferred.is_empty() {
                    if deferrals + 1 >= MAX_DEFERRALS {
                        let mut coupons: Vec<CouponId> = done.deferred.iter().map(|&i| chosen[i].coupon_id).collect();
                        coupons.sort();
                        coupons.dedup();
                        return Err(WriteError::Contended { coupons, statements: MAX_DEFERRALS });
                    }
                    let indexes = done.deferred.into_iter().map(|i| indexes[i]).collect();
                    pending.push(Pending { indexes, attempts: attempts + 1, deferrals: deferrals + 1 });
                }
            }
            Err(err) if err.is_poison() && indexes.len() == 1 => {
                outcome.rejected.push(Rejected {
                    index: indexes[0],
                    reason: Poison::Refused(err.to_string()),
                    attempts,
                });
            }
            Err(err) if err.is_poison() => {
                let (left, right) = indexes.split_at(indexes.len() / 2);
                pending.push(Pending { indexes: right.to_vec(), attempts: attempts + 1, deferrals });
                pending.push(Pending { indexes: left.to_vec(), attempts: attempts + 1, deferrals });
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// What one transaction did. `unknown` indexes the events whose coupon does
/// not exist, which were left out; `deferred` those whose coupon the
/// statement left for a new one (nothing was written for them).
struct Transaction {
    applied: Applied,
    sold_out: Vec<(CouponId, u64)>,
    unknown: Vec<usize>,
    deferred: Vec<usize>,
}

/// What the statement did for one coupon.
struct CouponResult {
    inserted: u64,
    sold_out: u64,
    deferred: bool,
}

async fn apply_once(
    pool: &PgPool,
    metrics: &Metrics,
    events: &[&CouponIssuedEvent],
) -> Result<Transaction, WriteError> {
    let groups = group_by_coupon(events.iter().copied());
    let in_coupon_order = || groups.iter().flat_map(|group| group.events.iter().copied());
    let coupons: Vec<i64> = in_coupon_order().map(|event| event.coupon_id.get()).collect();
    let customers: Vec<i64> = in_coupon_order().map(|event| event.customer_id.get()).collect();
    let issued_at: Vec<OffsetDateTime> = in_coupon_order().map(|event| event.issued_at).collect();
    // One more per revocation with leave to reissue: never near i32's end.
    let issuance: Vec<i32> = in_coupon_order().map(|event| i32::try_from(event.issuance).unwrap_or(i32::MAX)).collect();

    let mut pooled = pool.get().await?;
    let conn: &mut AsyncPgConnection = &mut pooled;
    let started = Instant::now();
    // One statement: its own transaction, applied whole or not at all.
    let result: Result<Vec<(i64, i32, i32, bool)>, _> =
        ApplyBatch { coupons: &coupons, customers: &customers, issued_at: &issued_at, issuance: &issuance }
            .load(conn)
            .await;
    metrics.transaction_seconds.observe(started.elapsed().as_secs_f64());
    let per_coupon: HashMap<i64, CouponResult> = result?
        .into_iter()
        .map(|(coupon, inserted, sold_out, deferred)| {
            (coupon, CouponResult { inserted: inserted as u64, sold_out: sold_out as u64, deferred })
        })
        .collect();

    let (mut unknown, mut deferred) = (Vec::new(), Vec::new());
    for (index, event) in events.iter().enumerate() {
        match per_coupon.get(&event.coupon_id.get()) {
            None => unknown.push(index),
            Some(coupon) if coupon.deferred => deferred.push(index),
            Some(_) => {}
        }
    }
    let decided = (events.len() - unknown.len() - deferred.len()) as u64;
    let inserted: u64 = per_coupon.values().map(|coupon| coupon.inserted).sum();
    let sold_out: Vec<(CouponId, u64)> = groups
        .iter()
        .filter_map(|group| {
            let n = per_coupon.get(&group.coupon_id.get()).map_or(0, |coupon| coupon.sold_out);
            (n > 0).then_some((group.coupon_id, n))
        })
        .collect();
    let sold_out_total: u64 = sold_out.iter().map(|(_, n)| n).sum();
    metrics.sold_out_at_write.inc_by(sold_out_total);
    Ok(Transaction {
        applied: Applied { inserted, sold_out: sold_out_total, duplicates: decided - inserted - sold_out_total },
        sold_out,
        unknown,
        deferred,
    })
}
