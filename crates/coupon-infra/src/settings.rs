//! Settings: defaults in code, overridden by environment variables with the
//! prefix `COUPON` and `__` between levels (`COUPON__REDIS__URL` → `redis.url`).
//!
//! Settings are plain values handed to the code that needs them, never globals,
//! so tests build their own. The sections here are those both services use;
//! each service composes them into its own settings type.

use std::collections::HashMap;
use std::time::Duration;

use config::{Config, Environment};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_with::{serde_as, DurationMilliSeconds};

pub const ENV_PREFIX: &str = "COUPON";

/// A settings type that can check rules serde cannot express.
pub trait Validate {
    /// Returns the dotted key and what is wrong with it.
    fn validate(&self) -> Result<(), InvalidSetting>;
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Source(#[from] config::ConfigError),
    #[error("{0}")]
    Invalid(#[from] InvalidSetting),
}

#[derive(Debug, thiserror::Error)]
#[error("invalid value for key `{key}`: {reason}")]
pub struct InvalidSetting {
    pub key: &'static str,
    pub reason: String,
}

impl InvalidSetting {
    pub fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self { key, reason: reason.into() }
    }
}

/// Loads settings from the process environment.
pub fn load<T: DeserializeOwned + Validate>() -> Result<T, SettingsError> {
    load_with(None)
}

/// Loads settings from the given variables instead of the process environment.
pub fn load_from_vars<T: DeserializeOwned + Validate>(vars: HashMap<String, String>) -> Result<T, SettingsError> {
    load_with(Some(vars))
}

/// The secrets that may also be given as a file (a Kubernetes secret mount):
/// `<VARIABLE>_FILE` names the file, whose content (less a final newline) is
/// the value.
const SECRET_VARIABLES: [(&str, &str); 6] = [
    ("COUPON__ADMIN__TOKEN", "admin.token"),
    ("COUPON__ADMIN__TOKENS", "admin.tokens"),
    ("COUPON__AUTH__JWT_SECRET", "auth.jwt_secret"),
    ("COUPON__AUTH__GATEWAY_SECRET", "auth.gateway_secret"),
    ("COUPON__DATABASE__URL", "database.url"),
    ("COUPON__REDIS__URL", "redis.url"),
];

/// `vars` (or the process environment) with each secret given as a file read in.
fn with_secret_files(vars: Option<HashMap<String, String>>) -> Result<HashMap<String, String>, InvalidSetting> {
    let mut vars = vars.unwrap_or_else(|| std::env::vars().collect());
    for (variable, key) in SECRET_VARIABLES {
        let Some(path) = vars.remove(&format!("{variable}_FILE")) else { continue };
        if vars.contains_key(variable) {
            return Err(InvalidSetting::new(key, format!("give {variable} or {variable}_FILE, not both")));
        }
        let value = std::fs::read_to_string(&path)
            .map_err(|err| InvalidSetting::new(key, format!("reading {variable}_FILE {path:?}: {err}")))?;
        vars.insert(variable.to_string(), value.strip_suffix('\n').unwrap_or(&value).to_string());
    }
    Ok(vars)
}

fn load_with<T: DeserializeOwned + Validate>(vars: Option<HashMap<String, String>>) -> Result<T, SettingsError> {
    let vars = with_secret_files(vars)?;
    let env = Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .source(Some(vars));
    let settings: T = Config::builder().add_source(env).build()?.try_deserialize()?;
    settings.validate()?;
    Ok(settings)
}

/// Loads settings or ends the process with one line naming the bad key: a
/// misconfigured service must not start, and a backtrace helps nobody here.
pub fn load_or_exit<T: DeserializeOwned + Validate>(service: &str) -> T {
    match load() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{service}: invalid configuration: {err}");
            std::process::exit(2);
        }
    }
}

pub fn require_positive(key: &'static str, value: u64) -> Result<(), InvalidSetting> {
    if value == 0 {
        return Err(InvalidSetting::new(key, "must be greater than 0"));
    }
    Ok(())
}

/// [`require_positive`] for a duration: rejects zero with the same message.
/// (A duration setting holds whole milliseconds, so non-zero is at least 1 ms.)
pub fn require_nonzero(key: &'static str, value: Duration) -> Result<(), InvalidSetting> {
    if value.is_zero() {
        return Err(InvalidSetting::new(key, "must be greater than 0"));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// `url` is the one Redis server.
    #[default]
    Standalone,
    /// `url` lists the sentinels (comma-separated) that know the primary named
    /// `master_name`; each new connection goes to the primary they name.
    Sentinel,
    /// `url` lists seed nodes of a Redis Cluster (comma-separated); the client
    /// follows the slot map, MOVED/ASK redirections and failovers.
    Cluster,
}

#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    pub mode: RedisMode,
    pub url: String,
    /// The primary's name at the sentinels (sentinel mode only).
    pub master_name: String,
    /// Replicas that must acknowledge an issuance before its `201` (`WAIT`);
    /// 0 answers once the primary has it.
    pub min_replicas: u32,
    /// How long an issuance waits for those replicas before answering `503`.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "replica_ack_timeout_ms")]
    pub replica_ack_timeout: Duration,
    /// Upper bound for connecting and for one command: how fast an
    /// unreachable Redis is noticed.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "timeout_ms")]
    pub timeout: Duration,
    /// Prepended to every key, so several systems (or tests) can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            mode: RedisMode::Standalone,
            url: "redis://127.0.0.1:6379".into(),
            master_name: "coupon".into(),
            min_replicas: 0,
            replica_ack_timeout: Duration::from_millis(500),
            timeout: Duration::from_millis(1_000),
            key_prefix: String::new(),
        }
    }
}

#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// Holds the password, so it is kept out of logs and debug output.
    pub url: SecretString,
    pub pool_size: usize,
    /// Waiting for a pooled connection, and connecting.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "timeout_ms")]
    pub timeout: Duration,
    /// PostgreSQL cancels a statement running longer (`statement_timeout`).
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "statement_timeout_ms")]
    pub statement_timeout: Duration,
    /// How long sent data may stay unacknowledged before the connection is
    /// dropped (`tcp_user_timeout`), and the keepalive probes' idle time: a
    /// silent network partition fails queries in bounded time, not minutes.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "tcp_timeout_ms")]
    pub tcp_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://coupon:coupon@127.0.0.1:5432/coupon"),
            pool_size: 10,
            timeout: Duration::from_millis(5_000),
            statement_timeout: Duration::from_millis(10_000),
            tcp_timeout: Duration::from_millis(10_000),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub dlq_topic: String,
    /// Partitions for the topics this service creates when they are missing.
    pub partitions: i32,
    /// Replicas of each partition of the topics this service creates.
    pub replication_factor: i32,
    /// `min.insync.replicas` of the topics this service creates (with the
    /// producers' `acks=all`, how many replicas must have a record before it
    /// is acknowledged); unset: the broker's default.
    pub min_insync_replicas: Option<i32>,
    /// Create missing topics at start; turn off where the service may not.
    pub create_topics: bool,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: coupon_domain::ISSUED_TOPIC.into(),
            dlq_topic: coupon_domain::DLQ_TOPIC.into(),
            partitions: 6,
            replication_factor: 1,
            min_insync_replicas: None,
            create_topics: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// How coupon-api learns which customer a request acts for; the tools that
/// act for customers read the same variables (`COUPON__AUTH__*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `Authorization: Bearer <JWT>` whose `sub` is the customer id.
    #[default]
    Jwt,
    /// A gateway in front authenticated the customer and names it in a header.
    Gateway,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// HS256 key.
    pub jwt_secret: Option<SecretString>,
    /// PEM public key (RSA for RS256, EC P-256 for ES256), instead of a secret.
    pub jwt_public_key_file: Option<std::path::PathBuf>,
    /// Required `iss`, when set.
    pub jwt_issuer: Option<String>,
    /// Required `aud`. A token the same identity provider minted for another
    /// service would be accepted without it, so jwt mode needs it unless
    /// `jwt_audience_optional` says so.
    pub jwt_audience: Option<String>,
    pub jwt_audience_optional: bool,
    /// How far `exp` and `nbf` may be off (clock skew), in seconds.
    pub jwt_leeway_s: u64,
    /// The header naming the customer in `gateway` mode.
    pub customer_header: String,
    /// What the gateway sends in `X-Gateway-Token` (gateway mode): proof that
    /// the request passed it.
    pub gateway_secret: Option<SecretString>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            mode: AuthMode::Jwt,
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_audience_optional: false,
            jwt_leeway_s: 5,
            customer_header: "X-Customer-Id".into(),
            gateway_secret: None,
        }
    }
}

impl Validate for AuthSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        let secret = self.jwt_secret.as_ref().filter(|s| !secrecy::ExposeSecret::expose_secret(*s).is_empty());
        match (self.mode, secret, &self.jwt_public_key_file) {
            (AuthMode::Jwt, None, None) => Err(InvalidSetting::new(
                "auth.jwt_secret",
                "jwt mode needs COUPON__AUTH__JWT_SECRET (HS256) or COUPON__AUTH__JWT_PUBLIC_KEY_FILE (RS256/ES256)",
            )),
            (AuthMode::Jwt, Some(_), Some(_)) => Err(InvalidSetting::new(
                "auth.jwt_public_key_file",
                "give COUPON__AUTH__JWT_SECRET or COUPON__AUTH__JWT_PUBLIC_KEY_FILE, not both",
            )),
            (AuthMode::Gateway, _, _) if self.customer_header.trim().is_empty() => {
                Err(InvalidSetting::new("auth.customer_header", "must name a header in gateway mode"))
            }
            (AuthMode::Gateway, _, _) if !long_enough(self.gateway_secret.as_ref()) => Err(InvalidSetting::new(
                "auth.gateway_secret",
                format!(
                    "gateway mode needs COUPON__AUTH__GATEWAY_SECRET of at least {MIN_SECRET_BYTES} bytes, which the gateway sends in X-Gateway-Token"
                ),
            )),
            (AuthMode::Jwt, Some(_), None) if !long_enough(secret) => Err(InvalidSetting::new(
                "auth.jwt_secret",
                format!(
                    "must be at least {MIN_SECRET_BYTES} bytes: a shorter HS256 secret is guessed offline from any token it signed"
                ),
            )),
            (AuthMode::Jwt, _, _) if self.jwt_audience.is_none() && !self.jwt_audience_optional => {
                Err(InvalidSetting::new(
                    "auth.jwt_audience",
                    "jwt mode needs COUPON__AUTH__JWT_AUDIENCE (the `aud` this API's tokens carry), or COUPON__AUTH__JWT_AUDIENCE_OPTIONAL=true to accept tokens minted for any audience",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The shortest shared secret (HS256 key, admin token, gateway secret)
/// accepted: 256 bits, as RFC 7518 asks of an HS256 key.
pub const MIN_SECRET_BYTES: usize = 32;

/// Whether `secret` is set and at least [`MIN_SECRET_BYTES`] long.
pub fn long_enough(secret: Option<&SecretString>) -> bool {
    secret.is_some_and(|secret| secrecy::ExposeSecret::expose_secret(secret).len() >= MIN_SECRET_BYTES)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    pub format: LogFormat,
}

impl Validate for RedisSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.url.trim().is_empty() {
            return Err(InvalidSetting::new("redis.url", "must name a Redis server or, in sentinel mode, sentinels"));
        }
        if self.mode == RedisMode::Sentinel && self.master_name.trim().is_empty() {
            return Err(InvalidSetting::new("redis.master_name", "must name the primary in sentinel mode"));
        }
        if self.min_replicas > 0 {
            require_nonzero("redis.replica_ack_timeout_ms", self.replica_ack_timeout)?;
            if self.mode == RedisMode::Cluster {
                // WAIT answers for the writes of its own connection; a cluster
                // client's WAIT goes to every primary over other connections.
                return Err(InvalidSetting::new("redis.min_replicas", "is not supported in cluster mode yet"));
            }
        }
        require_nonzero("redis.timeout_ms", self.timeout)
    }
}

impl Validate for DatabaseSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        require_positive("database.pool_size", self.pool_size as u64)?;
        require_nonzero("database.timeout_ms", self.timeout)
    }
}

impl Validate for KafkaSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.brokers.trim().is_empty() {
            return Err(InvalidSetting::new("kafka.brokers", "must name at least one broker"));
        }
        if self.topic.is_empty() {
            return Err(InvalidSetting::new("kafka.topic", "must not be empty"));
        }
        if self.dlq_topic == self.topic {
            return Err(InvalidSetting::new("kafka.dlq_topic", "must differ from kafka.topic"));
        }
        require_positive("kafka.partitions", self.partitions.max(0) as u64)?;
        require_positive("kafka.replication_factor", self.replication_factor.max(0) as u64)?;
        match self.min_insync_replicas {
            Some(replicas) if replicas < 1 || replicas > self.replication_factor => {
                Err(InvalidSetting::new("kafka.min_insync_replicas", "must be between 1 and kafka.replication_factor"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Sample {
        redis: RedisSettings,
        kafka: KafkaSettings,
        http: Http,
    }

    #[derive(Debug, Deserialize)]
    #[serde(default)]
    struct Http {
        addr: std::net::SocketAddr,
    }

    impl Default for Http {
        fn default() -> Self {
            Self { addr: "127.0.0.1:8080".parse().unwrap() }
        }
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), InvalidSetting> {
            self.redis.validate()?;
            self.kafka.validate()
        }
    }

    fn load(vars: &[(&str, &str)]) -> Result<Sample, SettingsError> {
        load_from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_apply_without_any_variable() {
        let s = load(&[]).unwrap();
        assert_eq!(s.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(s.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(s.http.addr.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let s = load(&[
            ("COUPON__REDIS__URL", "redis://10.0.0.1:7000"),
            ("COUPON__REDIS__TIMEOUT_MS", "64"),
            ("COUPON__HTTP__ADDR", "127.0.0.1:18080"),
        ])
        .unwrap();
        assert_eq!(s.redis.url, "redis://10.0.0.1:7000");
        assert_eq!(s.redis.timeout, Duration::from_millis(64));
        assert_eq!(s.http.addr.port(), 18080);
    }

    #[test]
    fn a_wrongly_typed_value_names_its_key() {
        let err = load(&[("COUPON__REDIS__TIMEOUT_MS", "lots")]).unwrap_err().to_string();
        assert!(err.contains("redis.timeout_ms"), "{err}");
        let err = load(&[("COUPON__HTTP__ADDR", "localhost")]).unwrap_err().to_string();
        assert!(err.contains("http.addr"), "{err}");
    }

    #[test]
    fn topic_replication_is_configurable_and_checked() {
        let s =
            load(&[("COUPON__KAFKA__REPLICATION_FACTOR", "3"), ("COUPON__KAFKA__MIN_INSYNC_REPLICAS", "2")]).unwrap();
        assert_eq!((s.kafka.replication_factor, s.kafka.min_insync_replicas), (3, Some(2)));
        let err = load(&[("COUPON__KAFKA__MIN_INSYNC_REPLICAS", "2")]).unwrap_err().to_string();
        assert!(err.contains("kafka.min_insync_replicas"), "{err}");
    }

    #[test]
    fn cluster_mode_takes_seed_nodes_and_refuses_min_replicas() {
        let s = load(&[
            ("COUPON__REDIS__MODE", "cluster"),
            ("COUPON__REDIS__URL", "redis://127.0.0.1:7001,redis://127.0.0.1:7002"),
        ])
        .unwrap();
        assert_eq!(s.redis.mode, RedisMode::Cluster);
        let err =
            load(&[("COUPON__REDIS__MODE", "cluster"), ("COUPON__REDIS__MIN_REPLICAS", "1")]).unwrap_err().to_string();
        assert!(err.contains("redis.min_replicas"), "{err}");
    }

    #[test]
    fn durations_are_read_in_milliseconds() {
        let s =
            load(&[("COUPON__REDIS__MIN_REPLICAS", "1"), ("COUPON__REDIS__REPLICA_ACK_TIMEOUT_MS", "250")]).unwrap();
        assert_eq!(s.redis.replica_ack_timeout, Duration::from_millis(250));
        assert_eq!(s.redis.timeout, Duration::from_secs(1), "the default");
        let err = load(&[("COUPON__REDIS__TIMEOUT_MS", "-1")]).unwrap_err().to_string();
        assert!(err.contains("redis.timeout_ms"), "{err}");
        let err = load(&[("COUPON__REDIS__MIN_REPLICAS", "1"), ("COUPON__REDIS__REPLICA_ACK_TIMEOUT_MS", "0")])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "invalid value for key `redis.replica_ack_timeout_ms`: must be greater than 0");
        // Without replicas to wait for, the timeout is unused and 0 is fine.
        assert!(load(&[("COUPON__REDIS__REPLICA_ACK_TIMEOUT_MS", "0")]).is_ok());
    }

    #[test]
    fn a_rule_violation_names_its_key() {
        let err = load(&[("COUPON__REDIS__TIMEOUT_MS", "0")]).unwrap_err().to_string();
        assert_eq!(err, "invalid value for key `redis.timeout_ms`: must be greater than 0");
    }

    #[test]
    fn a_secret_may_come_from_the_file_its_file_variable_names() {
        let dir = std::env::temp_dir().join(format!("coupon-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("redis-url");
        std::fs::write(&file, "redis://:secret@10.0.0.1:6379\n").unwrap();
        let path = file.to_string_lossy().to_string();
        let vars = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let s: Sample = load_from_vars(vars(&[("COUPON__REDIS__URL_FILE", &path)])).unwrap();
        assert_eq!(s.redis.url, "redis://:secret@10.0.0.1:6379", "the content, less its final newline");
        let both = load_from_vars::<Sample>(vars(&[("COUPON__REDIS__URL_FILE", &path), ("COUPON__REDIS__URL", "x")]));
        assert!(both.unwrap_err().to_string().contains("`redis.url`: give COUPON__REDIS__URL or"));
        let missing = load_from_vars::<Sample>(vars(&[("COUPON__REDIS__URL_FILE", "/nonexistent/secret")]));
        assert!(missing.unwrap_err().to_string().contains("`redis.url`: reading COUPON__REDIS__URL_FILE"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
