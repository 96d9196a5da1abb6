//! The secured local stack (`make up-secure`): Redis with TLS and ACL users
//! on 6380, PostgreSQL with TLS and SCRAM on 5433, Kafka with SASL_SSL on
//! 9093. A world on it takes the variables `.stack/secure/env` exports, as a
//! user who sources that file would.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use coupon_infra::settings::{load_from_vars, RedisSettings};
use coupon_reconcile::Settings;
use secrecy::SecretString;

/// Where `make up-secure` keeps its state.
pub fn dir() -> PathBuf {
    let stack = std::env::var_os("STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.stack"));
    let dir = stack.join("secure");
    // As the env file names its files: without `..`.
    dir.canonicalize().unwrap_or(dir)
}

/// The variables of the secure stack, for the services and for the checks.
pub struct SecureStack {
    /// What `.stack/secure/env` exports: coupon-api's and coupon-writer's.
    pub env: BTreeMap<String, String>,
    /// What `.stack/secure/env.reconcile` changes for coupon-reconcile.
    pub reconcile_env: BTreeMap<String, String>,
    /// The stores' settings, read from those variables as coupon-reconcile,
    /// which uses all three, reads its own.
    pub clients: Settings,
}

impl SecureStack {
    pub fn load() -> anyhow::Result<Self> {
        let dir = dir();
        let env = exports(&dir.join("env"))?;
        let reconcile_env = exports(&dir.join("env.reconcile"))?;
        let clients = load_from_vars(env.clone().into_iter().collect()).context("the secure stack's variables")?;
        Ok(Self { env, reconcile_env, clients })
    }

    /// Redis's `admin` user, for what the services' users may not do (the
    /// tests' clean-up).
    pub fn admin_redis(&self) -> anyhow::Result<RedisSettings> {
        let password =
            std::fs::read_to_string(dir().join("secrets/redis-admin")).context("the Redis admin password")?;
        Ok(RedisSettings {
            username: Some("admin".into()),
            password: Some(SecretString::from(password.trim().to_string())),
            ..self.clients.redis.clone()
        })
    }
}

impl SecureStack {
    /// Empties the stack's Redis: a world on it keeps its keys unprefixed,
    /// where an earlier hand-made coupon of the same id would meet them.
    pub async fn empty_redis(&self) -> anyhow::Result<()> {
        let admin = coupon_infra::redis::SharedRedis::new(&self.admin_redis()?)?;
        let _: () = admin.query(&redis::cmd("FLUSHALL")).await.context("emptying the secure stack's Redis")?;
        Ok(())
    }
}

/// The `export KEY=value` lines of a file (a shell would also run its other
/// lines; these files hold comments, a `.` of another and exports only).
fn exports(file: &std::path::Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading {}: is the secure stack up (make up-secure)?", file.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(key, value)| (key.to_string(), value.trim_matches(['\'', '"']).to_string()))
        .collect())
}
