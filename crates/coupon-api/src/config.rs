//! coupon-api settings (see coupon_infra::settings for how they are loaded).

use std::net::SocketAddr;
use std::time::Duration;

use coupon_infra::auth::{DEV_ADMIN_TOKEN, DEV_JWT_SECRET};
use coupon_infra::settings::{
    long_enough, require_nonzero, require_positive, AuthSettings, DatabaseSettings, InvalidSetting, KafkaSettings,
    LogSettings, RedisSettings, Validate, MIN_SECRET_BYTES,
};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_with::formats::CommaSeparator;
use serde_with::{serde_as, DurationMilliSeconds, StringWithSeparator};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// A development setup (`COUPON__DEV=true`): the development credentials
    /// are accepted. Never in production.
    pub dev: bool,
    pub http: HttpSettings,
    pub admin: AdminSettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub redis: RedisSettings,
    pub kafka: KafkaProducerSettings,
    pub database: DatabaseSettings,
    pub relay: RelaySettings,
    pub recovery: RecoverySettings,
    pub writer: WriterRef,
    pub issue: IssueSettings,
    pub cache: CacheSettings,
    pub log: LogSettings,
}

/// What coupon-api keeps in memory for a moment rather than ask PostgreSQL
/// on every request.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CacheSettings {
    /// How long a coupon's definition (or its absence) is reused by the
    /// public read and by issue requests Redis cannot answer.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "coupon_ttl_ms")]
    pub coupon_ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { coupon_ttl: Duration::from_millis(2_000) }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueMode {
    /// The design: answer after Redis (and Kafka's acknowledgement); the writer
    /// makes the issuance durable in batches.
    #[default]
    Kafka,
    /// The synchronous baseline it replaces, kept for comparison: answer only
    /// after a database transaction per issuance.
    SyncDb,
}

#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IssueSettings {
    pub mode: IssueMode,
    /// The most requests for one coupon one issue-script call decides
    /// (merged calls: those that arrived while the coupon's previous call
    /// was in flight). 1: a call per request, as before merged calls.
    pub max_batch: usize,
    /// How often a replica checks that the answers it remembers (a coupon
    /// paused, not started or sold out: issuance/memory.rs) still hold; an
    /// operator's change answers after twice this. 0: every request asks Redis.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "memory_check_ms")]
    pub memory_check: Duration,
}

/// The most requests one issue-script call may decide.
const MAX_ISSUE_BATCH: usize = 4_096;

impl Default for IssueSettings {
    fn default() -> Self {
        Self { mode: IssueMode::default(), max_batch: 256, memory_check: Duration::from_millis(100) }
    }
}

#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// The API: what clients, through the gateway, reach.
    pub addr: SocketAddr,
    /// `/metrics` and `/health/*`: for the orchestrator and Prometheus only.
    pub management_addr: SocketAddr,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// How long a new connection may take to deliver its first request's
    /// head before it is answered `408` and closed. actix checks the
    /// deadline before it reads the socket, so a worker starved past it
    /// refuses a head that arrived in time. actix's 5 s answered `408` in a
    /// test of 2,000 concurrent requests on a starved machine. 60 s, nginx's
    /// `client_header_timeout`, still closes connections that never send one.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "request_head_timeout_ms")]
    pub request_head_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            management_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            workers: 0,
            request_head_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AdminSettings {
    /// Bearer token for the admin endpoints, named `admin` in logs; without
    /// any token they answer 401.
    pub token: Option<SecretString>,
    /// More tokens, each with the name the logs give who used it:
    /// `name:token,name:token`.
    pub tokens: Option<SecretString>,
}

impl AdminSettings {
    /// Every admin token with its name; the key of the first bad one otherwise.
    pub fn named(&self) -> Result<Vec<(String, SecretString)>, InvalidSetting> {
        let mut named: Vec<(String, SecretString)> =
            self.token.iter().map(|token| ("admin".to_string(), token.clone())).collect();
        for entry in self.tokens.iter().flat_map(|tokens| tokens.expose_secret().split(',')) {
            let (name, token) = entry
                .trim()
                .split_once(':')
                .ok_or_else(|| InvalidSetting::new("admin.tokens", "must be name:token pairs, comma-separated"))?;
            if name.is_empty() || named.iter().any(|(known, _)| known == name) {
                return Err(InvalidSetting::new(
                    "admin.tokens",
                    format!("names must be unique and non-empty: {name:?}"),
                ));
            }
            named.push((name.to_string(), SecretString::from(token.to_string())));
        }
        if let Some((name, _)) = named.iter().find(|(_, token)| !long_enough(Some(token))) {
            let key = if name == "admin" && self.token.is_some() { "admin.token" } else { "admin.tokens" };
            return Err(InvalidSetting::new(
                key,
                format!(
                    "{name}'s token must be at least {MIN_SECRET_BYTES} bytes (leave COUPON__ADMIN__TOKEN and COUPON__ADMIN__TOKENS unset to turn the admin endpoints off)"
                ),
            ));
        }
        Ok(named)
    }
}

/// Requests per second (and bursts) one customer and one client address may
/// send, on every route but the probes; 0 turns a limit off. The defaults are
/// far above what a person pressing a button does; a load test from one
/// address turns the address limit off.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LimitSettings {
    pub per_customer_per_second: u32,
    pub per_customer_burst: u32,
    pub per_address_per_second: u32,
    pub per_address_burst: u32,
    /// Failed authentications one address may make a minute before it is
    /// answered 429.
    pub failed_auth_per_minute: u32,
    /// The peer is a proxy that appends the client's address to
    /// `X-Forwarded-For`; limit by that address instead of the peer's.
    pub trust_forwarded_for: bool,
    /// The proxies in front (CIDRs, comma-separated): the client is the
    /// right-most `X-Forwarded-For` address outside them.
    #[serde_as(as = "StringWithSeparator::<CommaSeparator, IpNet>")]
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            per_customer_per_second: 5,
            per_customer_burst: 10,
            per_address_per_second: 100,
            per_address_burst: 200,
            failed_auth_per_minute: 20,
            trust_forwarded_for: false,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionKey {
    /// Per-coupon order; one promotion lands on one partition.
    #[default]
    Coupon,
    /// Spreads one promotion over every partition (the writer is order-insensitive).
    Customer,
}

#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KafkaProducerSettings {
    #[serde(flatten)]
    pub client: KafkaSettings,
    pub partition_key: PartitionKey,
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "linger_ms")]
    pub linger: Duration,
    /// How long librdkafka keeps retrying one record; the relay takes over after.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "message_timeout_ms")]
    pub message_timeout: Duration,
    /// How long a request waits for Kafka's acknowledgement before answering
    /// anyway (the outbox keeps the event). 0: never wait.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "ack_timeout_ms")]
    pub ack_timeout: Duration,
    /// Where uses, releases and revocations of held coupons go (key = coupon id).
    pub used_topic: String,
    pub released_topic: String,
    pub revoked_topic: String,
}

impl Default for KafkaProducerSettings {
    fn default() -> Self {
        Self {
            client: KafkaSettings::default(),
            partition_key: PartitionKey::Coupon,
            linger: Duration::from_millis(2),
            message_timeout: Duration::from_millis(10_000),
            ack_timeout: Duration::from_millis(1_000),
            used_topic: coupon_domain::USED_TOPIC.into(),
            released_topic: coupon_domain::RELEASED_TOPIC.into(),
            revoked_topic: coupon_domain::REVOKED_TOPIC.into(),
        }
    }
}

#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RelaySettings {
    /// Pause between passes over the outboxes when all is well.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "interval_ms")]
    pub interval: Duration,
    /// Entries younger than this belong to the request that wrote them.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "min_age_ms")]
    pub min_age: Duration,
    pub batch_size: usize,
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "max_backoff_ms")]
    pub max_backoff: Duration,
    /// How long a replica that stopped beating counts as alive; its outboxes
    /// are taken over by another replica after that.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "replica_ttl_ms")]
    pub replica_ttl: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(1_000),
            min_age: Duration::from_millis(5_000),
            batch_size: 500,
            max_backoff: Duration::from_millis(30_000),
            replica_ttl: Duration::from_millis(10_000),
        }
    }
}

/// The writer as the API sees it: the consumer group whose progress a rebuild
/// waits for (the same variable, `COUPON__WRITER__GROUP`, as the writer's).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WriterRef {
    pub group: String,
}

impl Default for WriterRef {
    fn default() -> Self {
        Self { group: coupon_domain::WRITER_GROUP.into() }
    }
}

#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RecoverySettings {
    /// How often a rebuild asks Kafka whether the writer has caught up.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "poll_ms")]
    pub poll: Duration,
    /// How long the recovery lock outlives a replica that died holding it.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "lock_ttl_ms")]
    pub lock_ttl: Duration,
    /// How long an ended coupon's keys stay in Redis once its outbox is empty.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "ended_grace_ms")]
    pub ended_grace: Duration,
    /// How often the recovery looks for coupons left fenced and retires
    /// ended ones.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "sync_interval_ms")]
    pub sync_interval: Duration,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(250),
            lock_ttl: Duration::from_millis(30_000),
            ended_grace: Duration::from_millis(86_400_000),
            sync_interval: Duration::from_millis(30_000),
        }
    }
}

impl Settings {
    /// The credentials `make run` uses are public: outside a development
    /// setup they would let anyone in.
    fn refuse_development_credentials(&self) -> Result<(), InvalidSetting> {
        if self.dev {
            return Ok(());
        }
        let is = |secret: &Option<SecretString>, dev: &str| secret.as_ref().is_some_and(|s| s.expose_secret() == dev);
        let development = [
            ("admin.token", is(&self.admin.token, DEV_ADMIN_TOKEN)),
            ("auth.jwt_secret", is(&self.auth.jwt_secret, DEV_JWT_SECRET)),
        ];
        match development.into_iter().find(|(_, is_dev)| *is_dev) {
            Some((key, _)) => Err(InvalidSetting::new(
                key,
                "is the public development value; set a secret of your own (or COUPON__DEV=true on a development machine)",
            )),
            None => Ok(()),
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.redis.validate()?;
        self.kafka.client.validate()?;
        self.database.validate()?;
        self.auth.validate()?;
        self.admin.named()?;
        self.refuse_development_credentials()?;
        require_nonzero("kafka.message_timeout_ms", self.kafka.message_timeout)?;
        let usage = [
            ("kafka.used_topic", &self.kafka.used_topic),
            ("kafka.released_topic", &self.kafka.released_topic),
            ("kafka.revoked_topic", &self.kafka.revoked_topic),
        ];
        for (i, (name, topic)) in usage.iter().enumerate() {
            if topic.is_empty() || **topic == self.kafka.client.topic || **topic == self.kafka.client.dlq_topic {
                return Err(InvalidSetting::new(name, "must be set and differ from kafka.topic and kafka.dlq_topic"));
            }
            if let Some((other, _)) = usage[..i].iter().find(|(_, earlier)| earlier == topic) {
                return Err(InvalidSetting::new(name, format!("must differ from {other}")));
            }
        }
        if !(1..=MAX_ISSUE_BATCH).contains(&self.issue.max_batch) {
            // One call runs alone on Redis's core: a longer one delays every coupon.
            return Err(InvalidSetting::new("issue.max_batch", format!("must be 1 to {MAX_ISSUE_BATCH}")));
        }
        if self.issue.memory_check > Duration::from_millis(500) {
            // Issue 38: a change reaches every replica's answers within a
            // second (two intervals), and operators wait that long.
            return Err(InvalidSetting::new("issue.memory_check_ms", "must be 0 (off) to 500"));
        }
        require_nonzero("relay.interval_ms", self.relay.interval)?;
        require_positive("relay.batch_size", self.relay.batch_size as u64)?;
        require_nonzero("relay.max_backoff_ms", self.relay.max_backoff)?;
        if self.relay.replica_ttl < Duration::from_millis(3) {
            return Err(InvalidSetting::new(
                "relay.replica_ttl_ms",
                "must be at least 3 (a replica beats every third of it)",
            ));
        }
        require_nonzero("recovery.poll_ms", self.recovery.poll)?;
        require_nonzero("recovery.ended_grace_ms", self.recovery.ended_grace)?;
        require_nonzero("recovery.sync_interval_ms", self.recovery.sync_interval)?;
        if self.recovery.lock_ttl < 3 * self.recovery.poll.max(Duration::from_secs(1)) {
            return Err(InvalidSetting::new(
                "recovery.lock_ttl_ms",
                "must be at least three times recovery.poll_ms and 3000, or the lock expires between renewals",
            ));
        }
        if self.redis.min_replicas > 0 && self.redis.replica_ack_timeout >= self.redis.timeout {
            return Err(InvalidSetting::new(
                "redis.replica_ack_timeout_ms",
                "must be below redis.timeout_ms, or the connection gives up on WAIT first",
            ));
        }
        if self.relay.min_age <= self.kafka.ack_timeout {
            return Err(InvalidSetting::new(
                "relay.min_age_ms",
                "must exceed kafka.ack_timeout_ms, or the relay races the requests",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coupon_infra::settings::load_from_vars;

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes";

    fn vars(vars: &[(&str, &str)]) -> Result<Settings, coupon_infra::settings::SettingsError> {
        load_from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    /// Loads `vars` with a JWT secret and audience, which the service cannot start without.
    fn load(more: &[(&str, &str)]) -> Result<Settings, coupon_infra::settings::SettingsError> {
        let base = [("COUPON__AUTH__JWT_SECRET", SECRET), ("COUPON__AUTH__JWT_AUDIENCE", "coupon-api")];
        vars(&base.iter().chain(more).copied().collect::<Vec<_>>())
    }

    #[test]
    fn jwt_mode_without_a_key_refuses_to_start() {
        let err = vars(&[]).unwrap_err().to_string();
        assert!(err.contains("auth.jwt_secret") && err.contains("COUPON__AUTH__JWT_PUBLIC_KEY_FILE"), "{err}");
    }

    #[test]
    fn weak_secrets_stop_the_start_naming_their_setting() {
        let sixteen = "0123456789abcdef";
        let err = vars(&[("COUPON__AUTH__JWT_SECRET", sixteen), ("COUPON__AUTH__JWT_AUDIENCE", "a")]).unwrap_err();
        assert!(err.to_string().contains("`auth.jwt_secret`: must be at least 32 bytes"), "{err}");
        let err = load(&[("COUPON__ADMIN__TOKEN", "12345678")]).unwrap_err().to_string();
        assert!(err.contains("`admin.token`") && err.contains("at least 32 bytes"), "{err}");
        let err = load(&[("COUPON__ADMIN__TOKEN", " ")]).unwrap_err().to_string();
        assert!(err.contains("admin.token"), "{err}");
    }

    #[test]
    fn admin_tokens_carry_names() {
        let tokens = format!("alice:{SECRET},bob:{SECRET}-2");
        let s = load(&[("COUPON__ADMIN__TOKENS", tokens.as_str())]).unwrap();
        let names: Vec<String> = s.admin.named().unwrap().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["alice", "bob"]);
        for bad in ["alice", "alice:short", &format!("alice:{SECRET},alice:{SECRET}")] {
            let err = load(&[("COUPON__ADMIN__TOKENS", bad)]).unwrap_err().to_string();
            assert!(err.contains("`admin.tokens`"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_development_credentials_start_only_in_development() {
        let err = load(&[("COUPON__ADMIN__TOKEN", DEV_ADMIN_TOKEN)]).unwrap_err().to_string();
        assert!(err.contains("`admin.token`") && err.contains("COUPON__DEV=true"), "{err}");
        let dev_secret = [("COUPON__AUTH__JWT_SECRET", DEV_JWT_SECRET), ("COUPON__AUTH__JWT_AUDIENCE", "a")];
        let err = vars(&dev_secret).unwrap_err().to_string();
        assert!(err.contains("`auth.jwt_secret`") && err.contains("development"), "{err}");
        assert!(load(&[("COUPON__ADMIN__TOKEN", DEV_ADMIN_TOKEN), ("COUPON__DEV", "true")]).is_ok());
        assert!(vars(&[dev_secret[0], dev_secret[1], ("COUPON__DEV", "true")]).is_ok());
    }

    #[test]
    fn jwt_mode_needs_an_audience_unless_told_it_is_optional() {
        let err = vars(&[("COUPON__AUTH__JWT_SECRET", SECRET)]).unwrap_err().to_string();
        assert!(err.contains("`auth.jwt_audience`"), "{err}");
        assert!(vars(&[("COUPON__AUTH__JWT_SECRET", SECRET), ("COUPON__AUTH__JWT_AUDIENCE_OPTIONAL", "true")]).is_ok());
    }

    #[test]
    fn gateway_mode_needs_a_strong_gateway_secret() {
        let err = vars(&[("COUPON__AUTH__MODE", "gateway")]).unwrap_err().to_string();
        assert!(err.contains("`auth.gateway_secret`"), "{err}");
        let short = vars(&[("COUPON__AUTH__MODE", "gateway"), ("COUPON__AUTH__GATEWAY_SECRET", "short")]);
        assert!(short.unwrap_err().to_string().contains("`auth.gateway_secret`"));
        assert!(vars(&[("COUPON__AUTH__MODE", "gateway"), ("COUPON__AUTH__GATEWAY_SECRET", SECRET)]).is_ok());
    }

    #[test]
    fn each_usage_event_has_a_topic_of_its_own() {
        let err = load(&[("COUPON__KAFKA__REVOKED_TOPIC", "inside.coupon.used")]).unwrap_err().to_string();
        assert!(err.contains("`kafka.revoked_topic`") && err.contains("kafka.used_topic"), "{err}");
        let err = load(&[("COUPON__KAFKA__RELEASED_TOPIC", "")]).unwrap_err().to_string();
        assert!(err.contains("`kafka.released_topic`"), "{err}");
        assert_eq!(load(&[]).unwrap().kafka.revoked_topic, "inside.coupon.revoked");
    }

    #[test]
    fn trusted_proxies_are_a_list_of_networks() {
        let s = load(&[("COUPON__LIMITS__TRUSTED_PROXIES", "10.0.0.0/8,fd00::/8")]).unwrap();
        assert_eq!(s.limits.trusted_proxies.len(), 2);
        assert!(load(&[]).unwrap().limits.trusted_proxies.is_empty());
        let err = load(&[("COUPON__LIMITS__TRUSTED_PROXIES", "not-a-network")]).unwrap_err().to_string();
        assert!(err.contains("trusted_proxies"), "{err}");
    }

    #[test]
    fn flattened_sections_take_their_variables() {
        let s = load(&[
            ("COUPON__KAFKA__BROKERS", "10.1.1.1:9092"),
            ("COUPON__KAFKA__PARTITION_KEY", "customer"),
            ("COUPON__REDIS__URL", "redis://10.1.1.2:6379"),
            ("COUPON__REDIS__MODE", "sentinel"),
            ("COUPON__REDIS__KEY_PREFIX", "shop1:"),
            ("COUPON__ADMIN__TOKEN", SECRET),
            ("COUPON__ISSUE__MODE", "sync-db"),
        ])
        .unwrap();
        assert_eq!(s.kafka.client.brokers, "10.1.1.1:9092");
        assert_eq!(s.kafka.partition_key, PartitionKey::Customer);
        assert_eq!(s.redis.url, "redis://10.1.1.2:6379");
        assert_eq!(s.redis.mode, coupon_infra::settings::RedisMode::Sentinel);
        assert_eq!(s.redis.key_prefix, "shop1:");
        assert_eq!(s.admin.token.unwrap().expose_secret(), SECRET);
        assert_eq!(s.issue.mode, IssueMode::SyncDb);
    }

    #[test]
    fn librdkafka_properties_that_read_as_booleans_or_numbers_pass_through_the_flattened_section() {
        let s = load(&[
            ("COUPON__KAFKA__PROPERTIES__SOCKET_NAGLE_DISABLE", "true"),
            ("COUPON__KAFKA__PROPERTIES__BATCH_NUM_MESSAGES", "5000"),
            ("COUPON__KAFKA__PROPERTIES__COMPRESSION_TYPE", "lz4"),
        ])
        .unwrap();
        let properties: Vec<(String, String)> = s
            .kafka
            .client
            .librdkafka_properties()
            .map(|(name, value)| (name, value.expose_secret().to_string()))
            .collect();
        assert_eq!(
            properties,
            [
                ("batch.num.messages".to_string(), "5000".to_string()),
                ("compression.type".to_string(), "lz4".to_string()),
                ("socket.nagle.disable".to_string(), "true".to_string()),
            ]
        );
    }

    #[test]
    fn durations_are_read_in_milliseconds() {
        let s = load(&[
            ("COUPON__KAFKA__LINGER_MS", "5"),
            ("COUPON__KAFKA__MESSAGE_TIMEOUT_MS", "20000"),
            ("COUPON__KAFKA__ACK_TIMEOUT_MS", "750"),
            ("COUPON__RELAY__INTERVAL_MS", "100"),
            ("COUPON__RELAY__MIN_AGE_MS", "1500"),
            ("COUPON__RELAY__MAX_BACKOFF_MS", "500"),
            ("COUPON__RELAY__REPLICA_TTL_MS", "3000"),
            ("COUPON__RECOVERY__POLL_MS", "100"),
            ("COUPON__RECOVERY__LOCK_TTL_MS", "9000"),
            ("COUPON__RECOVERY__ENDED_GRACE_MS", "600000"),
            ("COUPON__RECOVERY__SYNC_INTERVAL_MS", "200"),
            ("COUPON__REDIS__MIN_REPLICAS", "1"),
            ("COUPON__REDIS__REPLICA_ACK_TIMEOUT_MS", "250"),
            ("COUPON__REDIS__TIMEOUT_MS", "800"),
            ("COUPON__DATABASE__TIMEOUT_MS", "1000"),
            ("COUPON__DATABASE__STATEMENT_TIMEOUT_MS", "300"),
            ("COUPON__DATABASE__TCP_TIMEOUT_MS", "4000"),
        ])
        .unwrap();
        let ms = Duration::from_millis;
        assert_eq!((s.kafka.linger, s.kafka.message_timeout, s.kafka.ack_timeout), (ms(5), ms(20_000), ms(750)));
        assert_eq!((s.relay.interval, s.relay.min_age, s.relay.max_backoff), (ms(100), ms(1_500), ms(500)));
        assert_eq!(s.relay.replica_ttl, ms(3_000));
        assert_eq!((s.recovery.poll, s.recovery.lock_ttl), (ms(100), ms(9_000)));
        assert_eq!((s.recovery.ended_grace, s.recovery.sync_interval), (ms(600_000), ms(200)));
        assert_eq!((s.redis.replica_ack_timeout, s.redis.timeout), (ms(250), ms(800)));
        assert_eq!(s.database.timeout, ms(1_000));
        assert_eq!((s.database.statement_timeout, s.database.tcp_timeout), (ms(300), ms(4_000)));
    }

    #[test]
    fn defaults_keep_their_values() {
        let s = load(&[]).unwrap();
        let ms = Duration::from_millis;
        assert_eq!((s.kafka.linger, s.kafka.message_timeout, s.kafka.ack_timeout), (ms(2), ms(10_000), ms(1_000)));
        assert_eq!((s.relay.interval, s.relay.min_age, s.relay.max_backoff), (ms(1_000), ms(5_000), ms(30_000)));
        assert_eq!(s.relay.replica_ttl, ms(10_000));
        assert_eq!((s.recovery.poll, s.recovery.lock_ttl), (ms(250), ms(30_000)));
        assert_eq!((s.recovery.ended_grace, s.recovery.sync_interval), (ms(86_400_000), ms(30_000)));
    }

    #[test]
    fn a_zero_duration_is_refused_where_zero_means_nothing() {
        for (var, key) in [
            ("COUPON__KAFKA__MESSAGE_TIMEOUT_MS", "kafka.message_timeout_ms"),
            ("COUPON__RELAY__INTERVAL_MS", "relay.interval_ms"),
            ("COUPON__RELAY__MAX_BACKOFF_MS", "relay.max_backoff_ms"),
            ("COUPON__RECOVERY__POLL_MS", "recovery.poll_ms"),
            ("COUPON__RECOVERY__ENDED_GRACE_MS", "recovery.ended_grace_ms"),
            ("COUPON__RECOVERY__SYNC_INTERVAL_MS", "recovery.sync_interval_ms"),
            ("COUPON__REDIS__TIMEOUT_MS", "redis.timeout_ms"),
            ("COUPON__DATABASE__TIMEOUT_MS", "database.timeout_ms"),
        ] {
            let err = load(&[(var, "0")]).unwrap_err().to_string();
            assert_eq!(err, format!("invalid value for key `{key}`: must be greater than 0"), "{var}");
        }
        let err = load(&[("COUPON__REDIS__MIN_REPLICAS", "1"), ("COUPON__REDIS__REPLICA_ACK_TIMEOUT_MS", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis.replica_ack_timeout_ms") && err.contains("greater than 0"), "{err}");
        // 0 means "never wait" and "send at once".
        let s = load(&[("COUPON__KAFKA__ACK_TIMEOUT_MS", "0"), ("COUPON__KAFKA__LINGER_MS", "0")]).unwrap();
        assert!(s.kafka.ack_timeout.is_zero() && s.kafka.linger.is_zero());
        let err = load(&[("COUPON__RECOVERY__POLL_MS", "-5")]).unwrap_err().to_string();
        assert!(err.contains("recovery.poll_ms"), "{err}");
    }

    #[test]
    fn rules_between_durations_keep_their_bounds() {
        let err = load(&[("COUPON__RELAY__REPLICA_TTL_MS", "2")]).unwrap_err().to_string();
        assert!(err.contains("relay.replica_ttl_ms") && err.contains("at least 3"), "{err}");
        assert!(load(&[("COUPON__RELAY__REPLICA_TTL_MS", "3")]).is_ok());
        let err = load(&[("COUPON__RECOVERY__LOCK_TTL_MS", "2999")]).unwrap_err().to_string();
        assert!(err.contains("recovery.lock_ttl_ms"), "{err}");
        assert!(load(&[("COUPON__RECOVERY__LOCK_TTL_MS", "3000")]).is_ok());
        let err = load(&[("COUPON__RECOVERY__POLL_MS", "1001"), ("COUPON__RECOVERY__LOCK_TTL_MS", "3002")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("recovery.lock_ttl_ms"), "{err}");
        let min_replicas = ("COUPON__REDIS__MIN_REPLICAS", "1");
        let err = load(&[min_replicas, ("COUPON__REDIS__REPLICA_ACK_TIMEOUT_MS", "1000")]).unwrap_err().to_string();
        assert!(err.contains("redis.replica_ack_timeout_ms") && err.contains("redis.timeout_ms"), "{err}");
        assert!(load(&[min_replicas, ("COUPON__REDIS__REPLICA_ACK_TIMEOUT_MS", "999")]).is_ok());
        let err = load(&[("COUPON__KAFKA__ACK_TIMEOUT_MS", "5000")]).unwrap_err().to_string();
        assert!(err.contains("relay.min_age_ms") && err.contains("kafka.ack_timeout_ms"), "{err}");
        assert!(load(&[("COUPON__KAFKA__ACK_TIMEOUT_MS", "4999")]).is_ok());
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = load(&[("COUPON__KAFKA__PARTITION_KEY", "random")]).unwrap_err().to_string();
        assert!(err.contains("partition_key"), "{err}");
        let err = load(&[("COUPON__RELAY__MIN_AGE_MS", "10")]).unwrap_err().to_string();
        assert!(err.contains("relay.min_age_ms"), "{err}");
    }
}
