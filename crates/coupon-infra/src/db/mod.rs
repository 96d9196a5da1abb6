//! PostgreSQL: the schema, the embedded migrations and the connection pool.

pub mod schema;

use std::time::Duration;

use anyhow::Context;
use deadpool::Runtime;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use secrecy::ExposeSecret;

use crate::settings::DatabaseSettings;

pub type PgPool = Pool<AsyncPgConnection>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Any fixed number: the advisory lock that serializes concurrent migrators.
const MIGRATION_LOCK: i64 = 0x636f_7570_6f6e;

pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    // Fast recycling skips the test query diesel-async would otherwise run on
    // every checkout: one round trip per writer batch and per synchronous
    // issuance. A connection that died with the server fails its next query
    // (a transient error the caller retries or answers 503) and is dropped.
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(settings.url.expose_secret(), config);
    let timeout = Duration::from_millis(settings.timeout_ms);
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .context("building the PostgreSQL pool")
}

/// Applies pending migrations and returns the versions it applied. Each
/// migration runs in its own transaction, so none is ever half-applied; an
/// advisory lock lets several replicas start at once.
///
/// Needs the multi-threaded Tokio runtime (the harness blocks in place).
pub async fn migrate(url: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = AsyncPgConnection::establish(url).await.context("connecting to PostgreSQL to migrate")?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .execute(&mut conn)
        .await
        .context("taking the migration lock")?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let applied = harness
        .run_pending_migrations(MIGRATIONS)
        .map_err(|err| anyhow::anyhow!("applying migrations: {err}"))?
        .into_iter()
        .map(|version| version.to_string())
        .collect();
    let mut conn = harness.into_inner();
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .execute(&mut conn)
        .await
        .context("releasing the migration lock")?;
    Ok(applied)
}
