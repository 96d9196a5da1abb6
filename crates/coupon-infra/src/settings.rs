//! Settings: defaults in code, overridden by environment variables with the
//! prefix `COUPON` and `__` between levels (`COUPON__REDIS__URL` → `redis.url`).
//!
//! Settings are plain values handed to the code that needs them, never globals,
//! so tests build their own. The sections here are those both services use;
//! each service composes them into its own settings type.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
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
    #[error("{0}")]
    Unknown(#[from] UnknownKey),
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
const SECRET_VARIABLES: [(&str, &str); 10] = [
    ("COUPON__ADMIN__TOKEN", "admin.token"),
    ("COUPON__ADMIN__TOKENS", "admin.tokens"),
    ("COUPON__AUTH__JWT_SECRET", "auth.jwt_secret"),
    ("COUPON__AUTH__GATEWAY_SECRET", "auth.gateway_secret"),
    ("COUPON__DATABASE__URL", "database.url"),
    ("COUPON__REDIS__URL", "redis.url"),
    ("COUPON__REDIS__PASSWORD", "redis.password"),
    ("COUPON__REDIS__SENTINEL_PASSWORD", "redis.sentinel_password"),
    ("COUPON__KAFKA__SASL_PASSWORD", "kafka.sasl_password"),
    ("COUPON__KAFKA__SSL_KEY_PASSWORD", "kafka.ssl_key_password"),
];

/// Every key some service of the project reads. deploy/ gives all services
/// one ConfigMap, so a service accepts the others' keys; a key outside this
/// list is a typo, which would otherwise leave a setting at its default
/// (a password unset, a timeout unchanged) without a word.
#[rustfmt::skip]
const KNOWN_KEYS: &[&str] = &[
    "dev",
    "http.addr", "http.management_addr", "http.workers",
    "admin.token", "admin.tokens",
    "auth.mode", "auth.jwt_secret", "auth.jwt_public_key_file", "auth.jwt_issuer", "auth.jwt_audience",
    "auth.jwt_audience_optional", "auth.jwt_leeway_s", "auth.customer_header", "auth.gateway_secret",
    "limits.per_customer_per_second", "limits.per_customer_burst", "limits.per_address_per_second",
    "limits.per_address_burst", "limits.failed_auth_per_minute", "limits.trust_forwarded_for",
    "limits.trusted_proxies",
    "redis.mode", "redis.url", "redis.master_name", "redis.min_replicas", "redis.replica_ack_timeout_ms",
    "redis.timeout_ms", "redis.key_prefix", "redis.username", "redis.password", "redis.sentinel_username",
    "redis.sentinel_password", "redis.tls_ca_file", "redis.tls_cert_file", "redis.tls_key_file",
    "database.url", "database.pool_size", "database.timeout_ms", "database.statement_timeout_ms",
    "database.tcp_timeout_ms",
    "kafka.brokers", "kafka.topic", "kafka.dlq_topic", "kafka.partitions", "kafka.replication_factor",
    "kafka.min_insync_replicas", "kafka.create_topics", "kafka.security_protocol", "kafka.sasl_mechanism",
    "kafka.sasl_username", "kafka.sasl_password", "kafka.ssl_ca_location", "kafka.ssl_certificate_location",
    "kafka.ssl_key_location", "kafka.ssl_key_password", "kafka.partition_key", "kafka.linger_ms",
    "kafka.message_timeout_ms", "kafka.ack_timeout_ms", "kafka.used_topic", "kafka.released_topic",
    "kafka.revoked_topic",
    "relay.interval_ms", "relay.min_age_ms", "relay.batch_size", "relay.max_backoff_ms", "relay.replica_ttl_ms",
    "recovery.poll_ms", "recovery.lock_ttl_ms", "recovery.ended_grace_ms", "recovery.sync_interval_ms",
    "writer.group", "writer.http.addr", "writer.batch_max_records", "writer.batch_ceiling_records",
    "writer.batch_max_wait_ms", "writer.retry_initial_ms", "writer.retry_max_ms", "writer.max_poll_interval_ms",
    "writer.session_timeout_ms", "writer.stats_interval_ms", "writer.commit_interval_ms",
    "writer.fetch_queue_kbytes", "writer.rejoin_timeout_ms", "writer.dlq_timeout_ms",
    "issue.mode", "issue.max_batch", "issue.memory_check_ms",
    "cache.coupon_ttl_ms",
    "log.format",
];

/// Keys under this prefix pass through to librdkafka (see [`KafkaSettings::properties`]).
const KAFKA_PROPERTIES: &str = "kafka.properties.";

/// The key a `COUPON__` variable sets (`COUPON__REDIS__URL` sets `redis.url`);
/// `None` for any other variable.
fn key_of(variable: &str) -> Option<String> {
    variable.strip_prefix(&format!("{ENV_PREFIX}__")).map(|rest| rest.to_lowercase().replace("__", "."))
}

/// Refuses a `COUPON__` variable that names no key of any service.
fn refuse_unknown_keys(vars: &HashMap<String, String>) -> Result<(), UnknownKey> {
    let mut unknown: Vec<&String> = vars
        .keys()
        .filter(|variable| {
            key_of(variable).is_some_and(|key| {
                !KNOWN_KEYS.contains(&key.as_str())
                    && key.strip_prefix(KAFKA_PROPERTIES).is_none_or(|name| name.is_empty())
            })
        })
        .collect();
    unknown.sort();
    match unknown.first() {
        Some(variable) => Err(UnknownKey((*variable).clone())),
        None => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown variable {0}: no service of this project reads it (a typo?)")]
pub struct UnknownKey(String);

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

/// Whether `variable`'s value is text as written, never parsed as a boolean
/// or a number: a secret (the password `007` is not the number 7, and a long
/// run of digits not a float), or a librdkafka property, which librdkafka
/// takes as text (and a section that flattens the Kafka settings in, as
/// coupon-api's producer does, would hand a parsed `true` to a string).
fn is_text(variable: &str) -> bool {
    SECRET_VARIABLES.iter().any(|(secret, _)| *secret == variable)
        || key_of(variable).is_some_and(|key| key.starts_with(KAFKA_PROPERTIES))
}

fn load_with<T: DeserializeOwned + Validate>(vars: Option<HashMap<String, String>>) -> Result<T, SettingsError> {
    let vars = with_secret_files(vars)?;
    refuse_unknown_keys(&vars)?;
    let (text, typed): (HashMap<_, _>, HashMap<_, _>) = vars.into_iter().partition(|(variable, _)| is_text(variable));
    let source = |vars, try_parsing| {
        Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(try_parsing)
            .source(Some(vars))
    };
    let settings: T =
        Config::builder().add_source(source(typed, true)).add_source(source(text, false)).build()?.try_deserialize()?;
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
#[derive(Clone, Deserialize)]
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
    /// The ACL user and its password on the data nodes, in every mode
    /// (instead of putting them in the URL).
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// The sentinels' own credentials (sentinel mode).
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<SecretString>,
    /// With a `rediss://` URL: the CA that signed the servers' certificates
    /// (default: the system's roots), and a client certificate and key (PEM)
    /// for servers that ask for one.
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

/// The URL may carry a password, so debug output shows it redacted.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url: Vec<String> = self.url.split(',').map(|url| redact_userinfo(url.trim())).collect();
        f.debug_struct("RedisSettings")
            .field("mode", &self.mode)
            .field("url", &url.join(","))
            .field("master_name", &self.master_name)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("sentinel_username", &self.sentinel_username)
            .field("sentinel_password", &self.sentinel_password)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// `redis://user:secret@host` as `redis://user:***@host`.
fn redact_userinfo(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

impl RedisSettings {
    /// Whether the URL (each of them) asks for TLS.
    pub fn tls(&self) -> bool {
        self.url.split(',').any(|url| url.trim().starts_with("rediss://"))
    }
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
            username: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
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
    /// How the clients reach the brokers: TLS, SASL, both or neither.
    pub security_protocol: SecurityProtocol,
    pub sasl_mechanism: Option<SaslMechanism>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<SecretString>,
    /// The CA that signed the brokers' certificates (default: the system's),
    /// and a client certificate and key (PEM) for brokers that ask for one.
    pub ssl_ca_location: Option<PathBuf>,
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    pub ssl_key_password: Option<SecretString>,
    /// Any other librdkafka property, for what a managed Kafka may need:
    /// `COUPON__KAFKA__PROPERTIES__SOCKET_KEEPALIVE_ENABLE=true` sets
    /// `socket.keepalive.enable` (underscores become dots). Set last, so one
    /// also overrides the project's own choices; the settings above have
    /// keys of their own and are refused here.
    pub properties: BTreeMap<String, SecretString>,
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SecurityProtocol {
    #[default]
    #[serde(rename = "PLAINTEXT", alias = "plaintext")]
    Plaintext,
    #[serde(rename = "SSL", alias = "ssl")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT", alias = "sasl_plaintext")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL", alias = "sasl_ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanism`: the ones built in with OpenSSL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN", alias = "plain")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl KafkaSettings {
    /// The pass-through properties under librdkafka's names.
    pub fn librdkafka_properties(&self) -> impl Iterator<Item = (String, &SecretString)> {
        self.properties.iter().map(|(key, value)| (key.replace('_', "."), value))
    }
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
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            properties: BTreeMap::new(),
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
        self.validate_access()?;
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

impl RedisSettings {
    /// Credentials and TLS: each given once, and each file readable.
    fn validate_access(&self) -> Result<(), InvalidSetting> {
        let urls: Vec<&str> = self.url.split(',').map(str::trim).collect();
        if urls.iter().any(|url| url.starts_with("rediss://")) && !urls.iter().all(|url| url.starts_with("rediss://")) {
            return Err(InvalidSetting::new("redis.url", "mixes rediss:// and redis:// URLs"));
        }
        let url_has_password = urls.iter().any(|url| url::Url::parse(url).is_ok_and(|url| url.password().is_some()));
        if url_has_password && self.password.is_some() && self.mode != RedisMode::Sentinel {
            return Err(InvalidSetting::new(
                "redis.password",
                "give the password in redis.url or redis.password, not both",
            ));
        }
        if self.mode != RedisMode::Sentinel && (self.sentinel_username.is_some() || self.sentinel_password.is_some()) {
            return Err(InvalidSetting::new("redis.sentinel_password", "is for sentinel mode only"));
        }
        let tls_files = [
            ("redis.tls_ca_file", &self.tls_ca_file),
            ("redis.tls_cert_file", &self.tls_cert_file),
            ("redis.tls_key_file", &self.tls_key_file),
        ];
        for (key, file) in tls_files {
            if file.is_some() && !self.tls() {
                return Err(InvalidSetting::new(key, "is set, but redis.url is not a rediss:// (TLS) URL"));
            }
            readable_file(key, file.as_deref())?;
        }
        both_or_neither(("redis.tls_cert_file", &self.tls_cert_file), ("redis.tls_key_file", &self.tls_key_file))
    }
}

/// A file setting must name a file this process can read, so a wrong path
/// stops the service at start rather than at its first connection.
fn readable_file(key: &'static str, file: Option<&Path>) -> Result<(), InvalidSetting> {
    match file.map(std::fs::File::open) {
        Some(Err(err)) => {
            Err(InvalidSetting::new(key, format!("cannot read {}: {err}", file.unwrap_or(Path::new("")).display())))
        }
        _ => Ok(()),
    }
}

/// A client certificate needs its key, and the other way round.
fn both_or_neither(
    (cert_key, cert): (&'static str, &Option<PathBuf>),
    (key_key, key): (&'static str, &Option<PathBuf>),
) -> Result<(), InvalidSetting> {
    match (cert, key) {
        (Some(_), None) => Err(InvalidSetting::new(key_key, format!("must be set with {cert_key}"))),
        (None, Some(_)) => Err(InvalidSetting::new(cert_key, format!("must be set with {key_key}"))),
        _ => Ok(()),
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
        self.validate_security()?;
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

/// The librdkafka properties the services set from settings of their own.
const KAFKA_OWN_PROPERTIES: [(&str, &str); 10] = [
    ("bootstrap.servers", "COUPON__KAFKA__BROKERS"),
    ("client.id", "the service's name"),
    ("security.protocol", "COUPON__KAFKA__SECURITY_PROTOCOL"),
    ("sasl.mechanism", "COUPON__KAFKA__SASL_MECHANISM"),
    ("sasl.username", "COUPON__KAFKA__SASL_USERNAME"),
    ("sasl.password", "COUPON__KAFKA__SASL_PASSWORD"),
    ("ssl.ca.location", "COUPON__KAFKA__SSL_CA_LOCATION"),
    ("ssl.certificate.location", "COUPON__KAFKA__SSL_CERTIFICATE_LOCATION"),
    ("ssl.key.location", "COUPON__KAFKA__SSL_KEY_LOCATION"),
    ("ssl.key.password", "COUPON__KAFKA__SSL_KEY_PASSWORD"),
];

impl KafkaSettings {
    fn validate_security(&self) -> Result<(), InvalidSetting> {
        let protocol = self.security_protocol;
        if protocol.sasl() {
            if self.sasl_mechanism.is_none() {
                return Err(InvalidSetting::new(
                    "kafka.sasl_mechanism",
                    format!("must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with {}", protocol.as_str()),
                ));
            }
            if self.sasl_username.as_deref().is_none_or(|name| name.trim().is_empty()) {
                return Err(InvalidSetting::new(
                    "kafka.sasl_username",
                    format!("must be set with {}", protocol.as_str()),
                ));
            }
            if self.sasl_password.is_none() {
                return Err(InvalidSetting::new(
                    "kafka.sasl_password",
                    format!("must be set with {}", protocol.as_str()),
                ));
            }
        } else if self.sasl_mechanism.is_some() || self.sasl_username.is_some() || self.sasl_password.is_some() {
            return Err(InvalidSetting::new(
                "kafka.sasl_mechanism",
                format!("SASL is set, but kafka.security_protocol is {}", protocol.as_str()),
            ));
        }
        let tls_files = [
            ("kafka.ssl_ca_location", &self.ssl_ca_location),
            ("kafka.ssl_certificate_location", &self.ssl_certificate_location),
            ("kafka.ssl_key_location", &self.ssl_key_location),
        ];
        for (key, file) in tls_files {
            if file.is_some() && !protocol.tls() {
                return Err(InvalidSetting::new(
                    key,
                    format!("is set, but kafka.security_protocol is {}", protocol.as_str()),
                ));
            }
            readable_file(key, file.as_deref())?;
        }
        both_or_neither(
            ("kafka.ssl_certificate_location", &self.ssl_certificate_location),
            ("kafka.ssl_key_location", &self.ssl_key_location),
        )?;
        for (name, _) in self.librdkafka_properties() {
            if let Some((_, own)) = KAFKA_OWN_PROPERTIES.iter().find(|(property, _)| *property == name) {
                return Err(InvalidSetting::new("kafka.properties", format!("{name} is set from {own}")));
            }
        }
        Ok(())
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
    fn secrets_and_librdkafka_properties_are_taken_as_written() {
        let s = load(&[
            ("COUPON__REDIS__PASSWORD", "0012345678901234567890123"),
            ("COUPON__KAFKA__PROPERTIES__SOCKET_KEEPALIVE_ENABLE", "TRUE"),
            ("COUPON__KAFKA__PROPERTIES__BATCH_NUM_MESSAGES", "05000"),
        ])
        .unwrap();
        let password = s.redis.password.as_ref().map(secrecy::ExposeSecret::expose_secret);
        assert_eq!(password, Some("0012345678901234567890123"));
        let properties: Vec<(String, String)> = s
            .kafka
            .librdkafka_properties()
            .map(|(name, value)| (name, secrecy::ExposeSecret::expose_secret(value).to_string()))
            .collect();
        assert_eq!(
            properties,
            [
                ("batch.num.messages".to_string(), "05000".to_string()),
                ("socket.keepalive.enable".to_string(), "TRUE".to_string()),
            ]
        );
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
    fn a_variable_no_service_reads_stops_the_service_naming_it() {
        let err = load(&[("COUPON__REDIS__PASWORD", "x")]).unwrap_err().to_string();
        assert_eq!(err, "unknown variable COUPON__REDIS__PASWORD: no service of this project reads it (a typo?)");
        // Another service's key is fine: deploy/ shares one ConfigMap.
        assert!(load(&[("COUPON__WRITER__BATCH_MAX_RECORDS", "100")]).is_ok());
        let err = load(&[("COUPON__REDIS__TIMEOUT_MS_FILE", "/x")]).unwrap_err().to_string();
        assert!(err.contains("COUPON__REDIS__TIMEOUT_MS_FILE"), "only secrets come from files: {err}");
    }

    #[test]
    fn kafka_security_is_checked_as_a_whole() {
        let sasl = [
            ("COUPON__KAFKA__SECURITY_PROTOCOL", "SASL_SSL"),
            ("COUPON__KAFKA__SASL_MECHANISM", "SCRAM-SHA-512"),
            ("COUPON__KAFKA__SASL_USERNAME", "coupon"),
            ("COUPON__KAFKA__SASL_PASSWORD", "secret"),
            ("COUPON__KAFKA__PROPERTIES__SOCKET_KEEPALIVE_ENABLE", "true"),
        ];
        let s = load(&sasl).unwrap();
        assert_eq!(s.kafka.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(s.kafka.sasl_mechanism, Some(SaslMechanism::ScramSha512));
        let properties: Vec<(String, String)> = s
            .kafka
            .librdkafka_properties()
            .map(|(name, value)| (name, secrecy::ExposeSecret::expose_secret(value).to_string()))
            .collect();
        assert_eq!(properties, [("socket.keepalive.enable".to_string(), "true".to_string())]);
        assert!(!format!("{:?}", s.kafka).contains("secret"), "the password is redacted");

        let err = load(&sasl[..3]).unwrap_err().to_string();
        assert_eq!(err, "invalid value for key `kafka.sasl_password`: must be set with SASL_SSL");
        let err = load(&[("COUPON__KAFKA__SASL_USERNAME", "coupon")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid value for key `kafka.sasl_mechanism`: SASL is set, but kafka.security_protocol is PLAINTEXT"
        );
        let err = load(&[("COUPON__KAFKA__SSL_CA_LOCATION", "/etc/hostname")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid value for key `kafka.ssl_ca_location`: is set, but kafka.security_protocol is PLAINTEXT"
        );
        let err = load(&[
            ("COUPON__KAFKA__SECURITY_PROTOCOL", "SSL"),
            ("COUPON__KAFKA__SSL_CA_LOCATION", "/nonexistent/ca.crt"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("invalid value for key `kafka.ssl_ca_location`: cannot read /nonexistent/ca.crt"),
            "{err}"
        );
        let err = load(&[("COUPON__KAFKA__PROPERTIES__SASL_PASSWORD", "x")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid value for key `kafka.properties`: sasl.password is set from COUPON__KAFKA__SASL_PASSWORD"
        );
        let err = load(&[("COUPON__KAFKA__SECURITY_PROTOCOL", "TLS")]).unwrap_err().to_string();
        assert!(err.contains("kafka.security_protocol"), "{err}");
    }

    #[test]
    fn redis_tls_and_credentials_are_checked() {
        let err = load(&[("COUPON__REDIS__TLS_CA_FILE", "/etc/hostname")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid value for key `redis.tls_ca_file`: is set, but redis.url is not a rediss:// (TLS) URL"
        );
        let tls =
            [("COUPON__REDIS__URL", "rediss://127.0.0.1:6380"), ("COUPON__REDIS__TLS_CERT_FILE", "/etc/hostname")];
        let err = load(&tls).unwrap_err().to_string();
        assert_eq!(err, "invalid value for key `redis.tls_key_file`: must be set with redis.tls_cert_file");
        let both = [("COUPON__REDIS__URL", "redis://:one@127.0.0.1"), ("COUPON__REDIS__PASSWORD", "two")];
        let err = load(&both).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid value for key `redis.password`: give the password in redis.url or redis.password, not both"
        );
        let s =
            load(&[("COUPON__REDIS__URL", "redis://:hunter2@127.0.0.1"), ("COUPON__REDIS__USERNAME", "api")]).unwrap();
        let debug = format!("{:?}", s.redis);
        assert!(!debug.contains("hunter2") && debug.contains("redis://:***@127.0.0.1"), "{debug}");
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
