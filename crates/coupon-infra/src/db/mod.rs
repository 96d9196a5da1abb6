//! PostgreSQL: the schema, the embedded migrations and the connection pool.

pub mod schema;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deadpool::Runtime;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures::FutureExt;
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
    // The URL's TLS (certificate files read, verifier built) once, for every
    // connection the pool makes.
    let url = connection_url(settings);
    let target = Arc::new(tls::Target::parse(&url).context("database.url")?);
    config.custom_setup = Box::new(move |_| {
        let target = target.clone();
        async move { target.connect().await.map_err(|err| diesel::ConnectionError::BadConnection(err.to_string())) }
            .boxed()
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    let timeout = settings.timeout;
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .context("building the PostgreSQL pool")
}

/// The configured URL with the timeouts added as connection parameters,
/// unless the URL sets them itself. tokio-postgres takes them in whole seconds.
pub fn connection_url(settings: &DatabaseSettings) -> String {
    let url = settings.url.expose_secret();
    let seconds = |timeout: Duration| timeout.as_millis().div_ceil(1_000).to_string();
    let statement_timeout = format!("-c statement_timeout={}", settings.statement_timeout.as_millis());
    let parameters = [
        ("connect_timeout", seconds(settings.timeout)),
        ("tcp_user_timeout", seconds(settings.tcp_timeout)),
        ("keepalives_idle", seconds(settings.tcp_timeout)),
        ("options", statement_timeout),
    ];
    // A URL (`postgres://…?k=v&…`) or libpq's key/value form (`k=v k=v`).
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let mut out = url.to_string();
    for (key, value) in parameters {
        if url.contains(&format!("{key}=")) {
            continue;
        }
        if is_url {
            let separator = if out.contains('?') { '&' } else { '?' };
            out.push_str(&format!("{separator}{key}={}", value.replace(' ', "%20").replace('=', "%3D")));
        } else {
            out.push_str(&format!(" {key}='{value}'"));
        }
    }
    out
}

/// One connection, with TLS as the URL's libpq parameters say ([`tls`]).
pub async fn connect(url: &str) -> Result<AsyncPgConnection, tls::ConnectError> {
    tls::Target::parse(url)?.connect().await
}

/// Applies pending migrations and returns the versions it applied. Each
/// migration runs in its own transaction, so none is ever half-applied; an
/// advisory lock lets several replicas start at once.
///
/// Needs the multi-threaded Tokio runtime (the harness blocks in place).
pub async fn migrate(url: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = connect(url).await.context("connecting to PostgreSQL to migrate")?;
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

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn settings(url: &str) -> DatabaseSettings {
        DatabaseSettings { url: SecretString::from(url.to_string()), ..Default::default() }
    }

    #[test]
    fn timeouts_are_added_to_a_url_that_does_not_set_them() {
        assert_eq!(
            connection_url(&settings("postgres://u:p@h:5432/db?sslmode=disable&connect_timeout=3")),
            "postgres://u:p@h:5432/db?sslmode=disable&connect_timeout=3&tcp_user_timeout=10\
             &keepalives_idle=10&options=-c%20statement_timeout%3D10000"
        );
    }

    #[test]
    fn timeouts_are_added_to_the_key_value_form() {
        assert_eq!(
            connection_url(&settings("host=h dbname=db")),
            "host=h dbname=db connect_timeout='5' tcp_user_timeout='10' keepalives_idle='10' \
             options='-c statement_timeout=10000'"
        );
    }
}
