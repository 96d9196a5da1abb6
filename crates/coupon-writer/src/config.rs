//! coupon-writer settings (see coupon_infra::settings for how they are loaded).

use std::net::SocketAddr;

use coupon_infra::settings::{
    require_positive, DatabaseSettings, InvalidSetting, KafkaSettings, LogSettings, Validate,
};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub writer: WriterSettings,
    pub kafka: KafkaSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WriterSettings {
    pub http: HttpSettings,
    pub group: String,
    /// A batch closes at this many records...
    pub batch_max_records: usize,
    /// ...a limit each full batch doubles up to this one while a backlog
    /// lasts (crate::batch); `batch_max_records` or less: no growth...
    pub batch_ceiling_records: usize,
    /// ...or this long after its first record, whichever comes first.
    pub batch_max_wait_ms: u64,
    /// First delay before a batch that failed with a transient error is retried;
    /// it doubles with every further failure...
    pub retry_initial_ms: u64,
    /// ...up to this cap. Retries go on until the batch is applied.
    pub retry_max_ms: u64,
    /// librdkafka's `max.poll.interval.ms`: the consumer leaves the group when
    /// the writer does not poll for this long. Polling continues while a batch
    /// waits for a retry, so only one database transaction has to fit in it.
    pub max_poll_interval_ms: u64,
    /// librdkafka's `session.timeout.ms`: how long the group waits for a member
    /// that stopped heartbeating (e.g. was killed) before giving its partitions
    /// to the others. Short, because a killed writer's partitions stall for this
    /// long (the e2e suite measured ~45 s of lag per kill with librdkafka's
    /// 45 s default); the broker accepts no less than 6 s.
    pub session_timeout_ms: u64,
    /// How often librdkafka reports statistics (whether the member is in its
    /// group) and the group's lag is read from the broker.
    pub stats_interval_ms: u64,
    /// librdkafka's `auto.commit.interval.ms`: how often the offsets of applied
    /// batches are committed. One commit per interval however small the batches
    /// (a commit per batch, hundreds per second under a backlog, crowded the
    /// coordinator connection until the member lost its group); a crash
    /// redelivers at most this long's applied records, which the idempotent
    /// writes absorb.
    pub commit_interval_ms: u64,
    /// librdkafka's `queued.max.messages.kbytes`: records fetched ahead of the
    /// batches. Its default (64 MiB) let a backlog fill the writer's memory;
    /// a few ceiling-sized batches ahead keep a drain at full speed.
    pub fetch_queue_kbytes: u64,
    /// A member out of its group this long (not rejoined after a broker
    /// outage or a rebalance) gets a new consumer, as if the process had been
    /// restarted. Longer than a slow rejoin (28 s was measured after a broker
    /// outage), so only a consumer that will not rejoin is replaced.
    pub rejoin_timeout_ms: u64,
}

impl Default for WriterSettings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            group: coupon_domain::WRITER_GROUP.into(),
            batch_max_records: 100,
            batch_ceiling_records: 2_000,
            batch_max_wait_ms: 500,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            max_poll_interval_ms: 300_000,
            session_timeout_ms: 10_000,
            stats_interval_ms: 5_000,
            commit_interval_ms: 1_000,
            fetch_queue_kbytes: 4_096,
            rejoin_timeout_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Port 0 picks a free port; `Application::http_addr` tells which.
    pub addr: SocketAddr,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self { addr: SocketAddr::from(([127, 0, 0, 1], 9091)) }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.kafka.validate()?;
        self.database.validate()?;
        let writer = &self.writer;
        require_positive("writer.batch_max_records", writer.batch_max_records as u64)?;
        require_positive("writer.batch_max_wait_ms", writer.batch_max_wait_ms)?;
        require_positive("writer.retry_initial_ms", writer.retry_initial_ms)?;
        require_positive("writer.stats_interval_ms", writer.stats_interval_ms)?;
        require_positive("writer.commit_interval_ms", writer.commit_interval_ms)?;
        require_positive("writer.fetch_queue_kbytes", writer.fetch_queue_kbytes)?;
        require_positive("writer.session_timeout_ms", writer.session_timeout_ms)?;
        if writer.rejoin_timeout_ms < 2 * writer.stats_interval_ms.max(writer.session_timeout_ms) {
            return Err(InvalidSetting::new(
                "writer.rejoin_timeout_ms",
                "must be at least twice writer.stats_interval_ms and writer.session_timeout_ms",
            ));
        }
        if writer.group.is_empty() {
            return Err(InvalidSetting::new("writer.group", "must not be empty"));
        }
        if writer.retry_max_ms < writer.retry_initial_ms {
            return Err(InvalidSetting::new("writer.retry_max_ms", "must not be less than writer.retry_initial_ms"));
        }
        // A batch waits for its last record and then for one transaction (bounded
        // by the pool timeout) between two polls.
        if writer.max_poll_interval_ms <= writer.batch_max_wait_ms + self.database.timeout_ms {
            return Err(InvalidSetting::new(
                "writer.max_poll_interval_ms",
                "must exceed writer.batch_max_wait_ms + database.timeout_ms",
            ));
        }
        if writer.session_timeout_ms > writer.max_poll_interval_ms {
            return Err(InvalidSetting::new(
                "writer.session_timeout_ms",
                "must not exceed writer.max_poll_interval_ms",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coupon_infra::settings::{load_from_vars, SettingsError};

    fn load(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        load_from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn environment_sets_the_batch_and_retry_limits() {
        let s = load(&[
            ("COUPON__WRITER__BATCH_MAX_RECORDS", "250"),
            ("COUPON__WRITER__BATCH_MAX_WAIT_MS", "50"),
            ("COUPON__WRITER__RETRY_MAX_MS", "2000"),
            ("COUPON__WRITER__HTTP__ADDR", "127.0.0.1:0"),
        ])
        .unwrap();
        assert_eq!(s.writer.batch_max_records, 250);
        assert_eq!(s.writer.batch_max_wait_ms, 50);
        assert_eq!(s.writer.retry_max_ms, 2_000);
        assert_eq!(s.writer.http.addr.port(), 0);
    }

    #[test]
    fn cross_field_rules_name_their_key() {
        let err = load(&[("COUPON__WRITER__RETRY_MAX_MS", "10"), ("COUPON__WRITER__RETRY_INITIAL_MS", "50")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("writer.retry_max_ms"), "{err}");
        let err = load(&[("COUPON__WRITER__MAX_POLL_INTERVAL_MS", "1000")]).unwrap_err().to_string();
        assert!(err.contains("writer.max_poll_interval_ms"), "{err}");
    }
}
