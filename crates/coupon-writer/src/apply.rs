//! Applies decoded events to PostgreSQL, one transaction per batch, idempotently:
//! a row that already exists is skipped, and a coupon's `remaining_quantity`
//! goes down by the rows actually inserted, so a redelivered batch changes
//! nothing. One statement per batch (`statements::ApplyBatch`), never one per event.
//!
//! A batch that hits a poison error is split in halves until the bad records
//! stand alone; the good halves are applied, the bad records are returned.

use std::collections::HashMap;
use std::ops::{AddAssign, Range};
use std::time::Instant;

use coupon_domain::{group_by_coupon, CouponIssuedEvent};
use coupon_infra::db::PgPool;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use time::OffsetDateTime;

use crate::error::WriteError;
use crate::metrics::Metrics;
use crate::statements::ApplyBatch;

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
    let groups = group_by_coupon(events.iter().copied());
    let in_coupon_order = || groups.iter().flat_map(|group| group.events.iter().copied());
    let coupons: Vec<i64> = in_coupon_order().map(|event| event.coupon_id.get()).collect();
    let customers: Vec<i64> = in_coupon_order().map(|event| event.customer_id.get()).collect();
    let issued_at: Vec<OffsetDateTime> = in_coupon_order().map(|event| event.issued_at).collect();

    let mut pooled = pool.get().await?;
    let conn: &mut AsyncPgConnection = &mut pooled;
    let started = Instant::now();
    // One statement: its own transaction, applied whole or not at all.
    let result: Result<Vec<(i64, i32)>, _> =
        ApplyBatch { coupons: &coupons, customers: &customers, issued_at: &issued_at }.load(conn).await;
    metrics.transaction_seconds.observe(started.elapsed().as_secs_f64());
    let inserted_per_coupon: HashMap<i64, i32> = result?.into_iter().collect();

    let unknown: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, event)| !inserted_per_coupon.contains_key(&event.coupon_id.get()))
        .map(|(index, _)| index)
        .collect();
    let known = (events.len() - unknown.len()) as u64;
    let total: u64 = inserted_per_coupon.values().map(|&n| n as u64).sum();
    Ok(Transaction { applied: Applied { inserted: total, duplicates: known - total }, unknown })
}
