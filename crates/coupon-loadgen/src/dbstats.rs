//! What the database went through during a run: write transactions and the
//! peak of connections busy at once, read from PostgreSQL itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coupon_infra::db::PgPool;
use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(db: &PgPool, sql: &str) -> anyhow::Result<i64> {
    let mut conn = db.get().await?;
    Ok(diesel::sql_query(sql).get_result::<Count>(&mut conn).await?.n)
}

/// The next transaction id PostgreSQL will hand out. Only a transaction that
/// writes gets an id, so the difference of two readings is the number of write
/// transactions in between — exact and immediate, unlike `pg_stat_database`,
/// whose counters trail by up to seconds. It counts the whole cluster: nothing
/// else may write while a benchmark runs.
pub async fn next_transaction_id(db: &PgPool) -> anyhow::Result<i64> {
    count(db, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS n").await
}

/// Connections of this database that are running a statement or inside a
/// transaction, not counting the one asking.
pub async fn busy_connections(db: &PgPool) -> anyhow::Result<i64> {
    count(
        db,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
         AND state IS NOT NULL AND state <> 'idle' AND pid <> pg_backend_pid()",
    )
    .await
}

/// Coupons whose period has not ended: the ones coupon-api keeps in Redis.
pub async fn open_coupons(db: &PgPool) -> anyhow::Result<i64> {
    count(db, "SELECT count(*) AS n FROM coupon WHERE ends_at > now()").await
}

/// Samples busy connections until stopped and keeps the peak.
pub struct ConnectionSampler {
    pub peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl ConnectionSampler {
    pub fn start(db: PgPool, every: Duration) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !AtomicBool::load(&s, Ordering::Relaxed) {
                if let Ok(n) = busy_connections(&db).await {
                    p.fetch_max(n as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(every).await;
            }
        });
        Self { peak, stop }
    }

    /// Stops sampling; returns the peak of busy connections.
    pub fn stop(&self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        AtomicU64::load(&self.peak, Ordering::Relaxed)
    }
}
