//! Applies decoded events to PostgreSQL, one transaction per batch, idempotently:
//! a row that already exists is skipped, and a coupon's `remaining_quantity`
//! goes down by the rows actually inserted, so a redelivered batch changes
//! nothing. The statements are per batch, never per event.
//!
//! A batch that hits a poison error is split in halves until the bad records
//! stand alone; the good halves are applied, the bad records are returned.

use std::collections::{BTreeMap, HashSet};
use std::ops::{AddAssign, Range};
use std::time::Instant;

use coupon_domain::{group_by_coupon, CouponIssuedEvent};
use coupon_infra::db::schema::coupon;
use coupon_infra::db::PgPool;
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use time::OffsetDateTime;

use crate::error::WriteError;
use crate::metrics::Metrics;
use crate::statements::{InsertIssued, TakeStock};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub inserted: u64,
    pub duplicates: u64,
}

impl AddAssign for Applied {
    fn add_assign(&mut self, other: Self) {
        self.inserted += other.inserted;
        self.duplicates += other.duplicates;
    }
}

/// An event that can never be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its position in the slice given to `apply`.
    pub index: usize,
    pub reason: String,
    /// The transactions it took part in.
    pub attempts: u32,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub applied: Applied,
    pub transactions: u32,
    /// In the order of the events.
    pub rejected: Vec<Rejected>,
}

/// Applies `events`, isolating poison. Returns an error only for a retryable
/// failure, after which applying the same events again is safe.
pub async fn apply(pool: &PgPool, metrics: &Metrics, events: &[&CouponIssuedEvent]) -> Result<Outcome, WriteError> {
    let mut outcome = Outcome::default();
    // Right halves are pushed first, so records are applied in their order.
    let mut pending: Vec<(Range<usize>, u32)> = vec![(0..events.len(), 1)];
    while let Some((range, attempts)) = pending.pop() {
        if range.is_empty() {
            continue;
        }
        outcome.transactions += 1;
        match apply_once(pool, metrics, &events[range.clone()]).await {
            Ok(done) => {
                outcome.applied += done.applied;
                outcome.rejected.extend(done.unknown.into_iter().map(|i| Rejected {
                    index: range.start + i,
                    reason: format!("unknown coupon id {}", events[range.start + i].coupon_id),
                    attempts,
                }));
            }
            Err(err) if err.is_poison() && range.len() == 1 => {
                outcome.rejected.push(Rejected { index: range.start, reason: err.to_string(), attempts });
            }
            Err(err) if err.is_poison() => {
                let middle = range.start + range.len() / 2;
                pending.push((middle..range.end, attempts + 1));
                pending.push((range.start..middle, attempts + 1));
            }
            Err(err) => return Err(err),
        }
    }
    outcome.rejected.sort_by_key(|rejected| rejected.index);
    Ok(outcome)
}

/// What one transaction did; `unknown` indexes the events whose coupon does
/// not exist, which were left out.
struct Transaction {
    applied: Applied,
    unknown: Vec<usize>,
}

async fn apply_once(
    pool: &PgPool,
    metrics: &Metrics,
    events: &[&CouponIssuedEvent],
) -> Result<Transaction, WriteError> {
    let mut pooled = pool.get().await?;
    let conn: &mut AsyncPgConnection = &mut pooled;
    let started = Instant::now();
    let result = conn.transaction(async |conn| write(conn, events).await).await;
    metrics.transaction_seconds.observe(started.elapsed().as_secs_f64());
    result
}

async fn write(conn: &mut AsyncPgConnection, events: &[&CouponIssuedEvent]) -> Result<Transaction, WriteError> {
    let groups = group_by_coupon(events.iter().copied());
    let ids: Vec<i64> = groups.iter().map(|group| group.coupon_id.get()).collect();
    // Locking the batch's coupons in id order (group_by_coupon's order) makes
    // writers that share coupons queue instead of deadlocking, and tells in the
    // same statement which coupons exist.
    let existing: HashSet<i64> = coupon::table
        .select(coupon::id)
        .filter(coupon::id.eq_any(&ids))
        .order(coupon::id)
        .for_no_key_update()
        .load::<i64>(conn)
        .await?
        .into_iter()
        .collect();
    let unknown: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, event)| !existing.contains(&event.coupon_id.get()))
        .map(|(index, _)| index)
        .collect();
    let known: Vec<&CouponIssuedEvent> = groups
        .iter()
        .filter(|group| existing.contains(&group.coupon_id.get()))
        .flat_map(|group| group.events.iter().copied())
        .collect();

    let coupons: Vec<i64> = known.iter().map(|event| event.coupon_id.get()).collect();
    let customers: Vec<i64> = known.iter().map(|event| event.customer_id.get()).collect();
    let issued_at: Vec<OffsetDateTime> = known.iter().map(|event| event.issued_at).collect();
    let inserted_for: Vec<i64> =
        InsertIssued { coupons: &coupons, customers: &customers, issued_at: &issued_at }.load(conn).await?;
    let mut inserted: BTreeMap<i64, i32> = BTreeMap::new();
    for coupon_id in inserted_for {
        *inserted.entry(coupon_id).or_default() += 1;
    }

    let total: u64 = inserted.values().map(|&n| n as u64).sum();
    if !inserted.is_empty() {
        let (ids, counts): (Vec<i64>, Vec<i32>) = inserted.into_iter().unzip();
        TakeStock { ids: &ids, counts: &counts }.execute(conn).await?;
    }
    Ok(Transaction { applied: Applied { inserted: total, duplicates: known.len() as u64 - total }, unknown })
}
