//! coupon-writer settings (see coupon_infra::settings for how they are loaded).

use std::net::SocketAddr;
use std::time::Duration;

use coupon_infra::settings::{
    require_nonzero, require_positive, DatabaseSettings, InvalidSetting, KafkaSettings, LogSettings, Validate,
};
use serde::Deserialize;
use serde_with::{serde_as, DurationMilliSeconds};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub writer: WriterSettings,
    pub kafka: KafkaSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
}

#[serde_as]
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
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "batch_max_wait_ms")]
    pub batch_max_wait: Duration,
    /// First delay before a batch that failed with a transient error is retried;
    /// it doubles with every further failure...
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "retry_initial_ms")]
    pub retry_initial: Duration,
    /// ...up to this cap. Retries go on until the batch is applied.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "retry_max_ms")]
    pub retry_max: Duration,
    /// librdkafka's `max.poll.interval.ms`: the consumer leaves the group when
    /// the writer does not poll for this long. Polling continues while a batch
    /// waits for a retry, so only one database transaction has to fit in it.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "max_poll_interval_ms")]
    pub max_poll_interval: Duration,
    /// librdkafka's `session.timeout.ms`: how long the group waits for a member
    /// that stopped heartbeating (e.g. was killed) before giving its partitions
    /// to the others. Short, because a killed writer's partitions stall for this
    /// long (the e2e suite measured ~45 s of lag per kill with librdkafka's
    /// 45 s default); the broker accepts no less than 6 s.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "session_timeout_ms")]
    pub session_timeout: Duration,
    /// How often librdkafka reports statistics (whether the member is in its
    /// group) and the group's lag is read from the broker.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "stats_interval_ms")]
    pub stats_interval: Duration,
    /// librdkafka's `auto.commit.interval.ms`: how often the offsets of applied
    /// batches are committed. One commit per interval however small the batches
    /// (a commit per batch, hundreds per second under a backlog, crowded the
    /// coordinator connection until the member lost its group); a crash
    /// redelivers at most this long's applied records, which the idempotent
    /// writes absorb.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "commit_interval_ms")]
    pub commit_interval: Duration,
    /// librdkafka's `queued.max.messages.kbytes`: records fetched ahead of the
    /// batches. Its default (64 MiB) let a backlog fill the writer's memory;
    /// a few ceiling-sized batches ahead keep a drain at full speed.
    pub fetch_queue_kbytes: u64,
    /// A member out of its group this long (not rejoined after a broker
    /// outage or a rebalance) gets a new consumer, as if the process had been
    /// restarted. Longer than a slow rejoin (28 s was measured after a broker
    /// outage), so only a consumer that will not rejoin is replaced.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "rejoin_timeout_ms")]
    pub rejoin_timeout: Duration,
    /// How long publishing a dead letter may take (librdkafka's
    /// `message.timeout.ms` of the dead-letter producer, and how long a send
    /// waits for room in its queue). A publish that fails fails the batch,
    /// which is retried, its offsets held, until the dead-letter topic
    /// takes the letter.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "dlq_timeout_ms")]
    pub dlq_timeout: Duration,
}

impl Default for WriterSettings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            group: coupon_domain::WRITER_GROUP.into(),
            batch_max_records: 100,
            batch_ceiling_records: 2_000,
            batch_max_wait: Duration::from_millis(500),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(10_000),
            max_poll_interval: Duration::from_millis(300_000),
            session_timeout: Duration::from_millis(10_000),
            stats_interval: Duration::from_millis(5_000),
            commit_interval: Duration::from_millis(1_000),
            fetch_queue_kbytes: 4_096,
            rejoin_timeout: Duration::from_millis(60_000),
            dlq_timeout: Duration::from_millis(30_000),
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
        require_nonzero("writer.batch_max_wait_ms", writer.batch_max_wait)?;
        require_nonzero("writer.retry_initial_ms", writer.retry_initial)?;
        require_nonzero("writer.stats_interval_ms", writer.stats_interval)?;
        require_nonzero("writer.commit_interval_ms", writer.commit_interval)?;
        require_positive("writer.fetch_queue_kbytes", writer.fetch_queue_kbytes)?;
        require_nonzero("writer.session_timeout_ms", writer.session_timeout)?;
        // librdkafka reads a `message.timeout.ms` of 0 as "never".
        require_nonzero("writer.dlq_timeout_ms", writer.dlq_timeout)?;
        if writer.rejoin_timeout < 2 * writer.stats_interval.max(writer.session_timeout) {
            return Err(InvalidSetting::new(
                "writer.rejoin_timeout_ms",
                "must be at least twice writer.stats_interval_ms and writer.session_timeout_ms",
            ));
        }
        if writer.group.is_empty() {
            return Err(InvalidSetting::new("writer.group", "must not be empty"));
        }
        if writer.retry_max < writer.retry_initial {
            return Err(InvalidSetting::new("writer.retry_max_ms", "must not be less than writer.retry_initial_ms"));
        }
        // A batch waits for its last record and then for one transaction (bounded
        // by the pool timeout) between two polls.
        if writer.max_poll_interval <= writer.batch_max_wait + self.database.timeout {
            return Err(InvalidSetting::new(
                "writer.max_poll_interval_ms",
                "must exceed writer.batch_max_wait_ms + database.timeout_ms",
            ));
        }
        if writer.session_timeout > writer.max_poll_interval {
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
        assert_eq!(s.writer.batch_max_wait, Duration::from_millis(50));
        assert_eq!(s.writer.retry_max, Duration::from_secs(2));
        assert_eq!(s.writer.http.addr.port(), 0);
    }

    #[test]
    fn durations_are_read_in_milliseconds_and_keep_their_defaults() {
        let s = load(&[
            ("COUPON__WRITER__RETRY_INITIAL_MS", "25"),
            ("COUPON__WRITER__MAX_POLL_INTERVAL_MS", "120000"),
            ("COUPON__WRITER__SESSION_TIMEOUT_MS", "6000"),
            ("COUPON__WRITER__STATS_INTERVAL_MS", "1000"),
            ("COUPON__WRITER__COMMIT_INTERVAL_MS", "250"),
            ("COUPON__WRITER__REJOIN_TIMEOUT_MS", "12000"),
        ])
        .unwrap();
        let ms = Duration::from_millis;
        let w = &s.writer;
        assert_eq!((w.retry_initial, w.max_poll_interval), (ms(25), ms(120_000)));
        assert_eq!((w.session_timeout, w.stats_interval), (ms(6_000), ms(1_000)));
        assert_eq!((w.commit_interval, w.rejoin_timeout), (ms(250), ms(12_000)));
        let w = load(&[]).unwrap().writer;
        assert_eq!((w.batch_max_wait, w.retry_initial, w.retry_max), (ms(500), ms(100), ms(10_000)));
        assert_eq!((w.max_poll_interval, w.session_timeout), (ms(300_000), ms(10_000)));
        assert_eq!((w.stats_interval, w.commit_interval, w.rejoin_timeout), (ms(5_000), ms(1_000), ms(60_000)));
        assert_eq!(w.dlq_timeout, ms(30_000));
    }

    #[test]
    fn environment_sets_the_dead_letter_timeout() {
        let w = load(&[("COUPON__WRITER__DLQ_TIMEOUT_MS", "1500")]).unwrap().writer;
        assert_eq!(w.dlq_timeout, Duration::from_millis(1_500));
    }

    #[test]
    fn a_zero_duration_is_refused() {
        for key in [
            "batch_max_wait_ms",
            "retry_initial_ms",
            "stats_interval_ms",
            "commit_interval_ms",
            "session_timeout_ms",
            "dlq_timeout_ms",
        ] {
            let var = format!("COUPON__WRITER__{}", key.to_uppercase());
            let err = load(&[(&var, "0")]).unwrap_err().to_string();
            assert_eq!(err, format!("invalid value for key `writer.{key}`: must be greater than 0"));
        }
    }

    #[test]
    fn cross_field_rules_keep_their_bounds() {
        // max_poll_interval must exceed batch_max_wait (500) + database.timeout (5000)
        // (and not be below session_timeout).
        let session = ("COUPON__WRITER__SESSION_TIMEOUT_MS", "5000");
        assert!(load(&[session, ("COUPON__WRITER__MAX_POLL_INTERVAL_MS", "5501")]).is_ok());
        let err = load(&[session, ("COUPON__WRITER__MAX_POLL_INTERVAL_MS", "5500")]).unwrap_err().to_string();
        assert!(err.contains("writer.max_poll_interval_ms"), "{err}");
        // rejoin_timeout must be at least twice max(stats_interval, session_timeout) = 2 * 10000.
        assert!(load(&[("COUPON__WRITER__REJOIN_TIMEOUT_MS", "20000")]).is_ok());
        let err = load(&[("COUPON__WRITER__REJOIN_TIMEOUT_MS", "19999")]).unwrap_err().to_string();
        assert!(err.contains("writer.rejoin_timeout_ms"), "{err}");
        let err =
            load(&[("COUPON__WRITER__SESSION_TIMEOUT_MS", "6000"), ("COUPON__WRITER__MAX_POLL_INTERVAL_MS", "5999")])
                .unwrap_err()
                .to_string();
        assert!(err.contains("`writer.session_timeout_ms`"), "{err}");
        assert!(load(&[("COUPON__WRITER__RETRY_MAX_MS", "100")]).is_ok());
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
