//! Watching PostgreSQL until the writer has applied every issued coupon.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::bail;
use coupon_infra::db::schema::{coupon, customer_coupon};
use coupon_infra::db::PgPool;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;

pub async fn rows(db: &PgPool, coupon: i64) -> anyhow::Result<i64> {
    let mut conn = db.get().await?;
    Ok(customer_coupon::table.filter(customer_coupon::coupon_id.eq(coupon)).count().get_result(&mut conn).await?)
}

pub async fn remaining(db: &PgPool, coupon: i64) -> anyhow::Result<i64> {
    let mut conn = db.get().await?;
    let remaining: i32 = coupon::table.find(coupon).select(coupon::remaining_quantity).first(&mut conn).await?;
    Ok(i64::from(remaining))
}

/// Rows the writer has inserted for the coupon, read off its row: the writer
/// takes each inserted row off `remaining_quantity` in the same statement.
/// One indexed row, where counting the rows would scan them all, which a
/// poll every 50 ms during a drain of millions cannot afford.
pub async fn taken(db: &PgPool, coupon: i64) -> anyhow::Result<i64> {
    let mut conn = db.get().await?;
    let (total, remaining): (i32, i32) = coupon::table
        .find(coupon)
        .select((coupon::total_quantity, coupon::remaining_quantity))
        .first(&mut conn)
        .await?;
    Ok(i64::from(total - remaining))
}

pub async fn holders(db: &PgPool, coupon: i64) -> anyhow::Result<BTreeSet<i64>> {
    let mut conn = db.get().await?;
    Ok(customer_coupon::table
        .filter(customer_coupon::coupon_id.eq(coupon))
        .select(customer_coupon::customer_id)
        .load::<i64>(&mut conn)
        .await?
        .into_iter()
        .collect())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Events the writer could not apply because PostgreSQL had no stock left for
/// them: Redis granted more than the database holds.
pub async fn sold_out_at_write(db: &PgPool, coupon: i64) -> anyhow::Result<i64> {
    let mut conn = db.get().await?;
    let counted: Count = diesel::sql_query("SELECT count(*) AS count FROM sold_out_at_write WHERE coupon_id = $1")
        .bind::<BigInt, _>(coupon)
        .get_result(&mut conn)
        .await?;
    Ok(counted.count)
}

/// Samples the rows written (`taken`) until they reach `expected`; returns
/// the samples (elapsed, rows) — the writer's progress over time.
pub async fn wait_for_rows(
    db: &PgPool,
    coupon: i64,
    expected: i64,
    timeout: Duration,
) -> anyhow::Result<Vec<(Duration, i64)>> {
    let started = Instant::now();
    let mut samples = Vec::new();
    loop {
        let n = taken(db, coupon).await?;
        samples.push((started.elapsed(), n));
        if n >= expected {
            return Ok(samples);
        }
        if started.elapsed() >= timeout {
            bail!("coupon {coupon}: {n} of {expected} rows after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
