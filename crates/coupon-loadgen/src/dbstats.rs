//! What the database went through during a run: transactions committed and the
//! peak of connections busy at once, read from PostgreSQL's own statistics.

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

/// Transactions committed in this database so far (as PostgreSQL's statistics
/// have them; backends report at least once a second).
pub async fn commits(db: &PgPool) -> anyhow::Result<i64> {
    count(db, "SELECT xact_commit AS n FROM pg_stat_database WHERE datname = current_database()").await
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

/// Samples busy connections until stopped; keeps the peak and how many
/// queries it ran itself (each is a transaction to subtract from the count).
pub struct ConnectionSampler {
    pub peak: Arc<AtomicU64>,
    pub own_queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl ConnectionSampler {
    pub fn start(db: PgPool, every: Duration) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let own_queries = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, q, s) = (peak.clone(), own_queries.clone(), stop.clone());
        tokio::spawn(async move {
            while !AtomicBool::load(&s, Ordering::Relaxed) {
                if let Ok(n) = busy_connections(&db).await {
                    p.fetch_max(n as u64, Ordering::Relaxed);
                }
                q.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(every).await;
            }
        });
        Self { peak, own_queries, stop }
    }

    pub fn stop(&self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        (AtomicU64::load(&self.peak, Ordering::Relaxed), AtomicU64::load(&self.own_queries, Ordering::Relaxed))
    }
}
