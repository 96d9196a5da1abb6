//! Kafka client setup shared by the producer and the consumer, and topic creation.

use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use secrecy::ExposeSecret;

use crate::settings::KafkaSettings;

/// Every client of the project (producer, consumer, admin) starts from this:
/// the brokers, TLS and SASL, then the pass-through properties.
pub fn client_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", client_id)
        .set("security.protocol", settings.security_protocol.as_str());
    if let Some(mechanism) = settings.sasl_mechanism {
        config.set("sasl.mechanism", mechanism.as_str());
    }
    if let Some(username) = &settings.sasl_username {
        config.set("sasl.username", username);
    }
    let files = [
        ("ssl.ca.location", &settings.ssl_ca_location),
        ("ssl.certificate.location", &settings.ssl_certificate_location),
        ("ssl.key.location", &settings.ssl_key_location),
    ];
    for (property, file) in files {
        if let Some(file) = file {
            config.set(property, file.to_string_lossy());
        }
    }
    let secrets = [("sasl.password", &settings.sasl_password), ("ssl.key.password", &settings.ssl_key_password)];
    for (property, secret) in secrets {
        if let Some(secret) = secret {
            config.set(property, secret.expose_secret());
        }
    }
    for (property, value) in settings.librdkafka_properties() {
        config.set(property, value.expose_secret());
    }
    config
}

/// Creates the topics that do not exist yet, with the settings' replication
/// factor and `min.insync.replicas`; existing ones are left as they are.
pub async fn ensure_topics(settings: &KafkaSettings, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(settings, "coupon-admin").create().context("creating the Kafka admin client")?;
    let min_insync = settings.min_insync_replicas.map(|replicas| replicas.to_string());
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| {
            let topic = NewTopic::new(name, *partitions, TopicReplication::Fixed(settings.replication_factor));
            match &min_insync {
                Some(replicas) => topic.set("min.insync.replicas", replicas),
                None => topic,
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new_topics, &options).await.context("asking Kafka to create topics")?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("creating Kafka topic {name}: {code}"),
        }
    }
    Ok(())
}

/// How far a consumer group has come on a topic, read without joining the
/// group: the offsets it committed against the topic's high watermarks.
/// Blocking calls; use them off the async workers.
pub struct GroupProgress {
    consumer: BaseConsumer,
    topic: String,
}

/// One partition's high watermark: the offset the next record will get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

impl GroupProgress {
    pub fn new(settings: &KafkaSettings, group: &str) -> anyhow::Result<Self> {
        // Never subscribes or commits: it only asks the coordinator what the
        // group committed, which leaves the group's members alone.
        let consumer = client_config(settings, "coupon-group-progress")
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .context("creating the group-progress consumer")?;
        Ok(Self { consumer, topic: settings.topic.clone() })
    }

    /// Every partition's watermarks now.
    pub fn marks(&self, timeout: Duration) -> anyhow::Result<Vec<Mark>> {
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), timeout).context("reading topic metadata")?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic && t.error().is_none())
            .with_context(|| format!("topic {} not found", self.topic))?;
        topic
            .partitions()
            .iter()
            .map(|p| {
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(&self.topic, p.id(), timeout)
                    .with_context(|| format!("reading the watermarks of {}/{}", self.topic, p.id()))?;
                Ok(Mark { partition: p.id(), low, high })
            })
            .collect()
    }

    /// Records the group has yet to commit before it reaches `marks` (0 once
    /// it has). An error where the group committed below a partition's log
    /// start: Kafka deleted records the group never applied (it lagged past
    /// retention), so PostgreSQL lacks them however long one waits.
    pub fn behind(&self, marks: &[Mark], timeout: Duration) -> anyhow::Result<i64> {
        let committed = self.committed(marks, timeout)?;
        for (mark, at) in marks.iter().zip(&committed) {
            if let Some(at) = at.filter(|at| *at < mark.low) {
                bail!(
                    "{} partition {}: the group committed offset {at}, below the log start {}; records it never applied were deleted",
                    self.topic,
                    mark.partition,
                    mark.low
                );
            }
        }
        Ok(lag(marks, &committed).iter().map(|(_, lag)| lag).sum())
    }

    /// Per partition of `marks`, the records between the group's committed
    /// offset and the high watermark: its lag as the broker sees it, whether
    /// or not a member is fetching.
    pub fn lag(&self, marks: &[Mark], timeout: Duration) -> anyhow::Result<Vec<(i32, i64)>> {
        Ok(lag(marks, &self.committed(marks, timeout)?))
    }

    /// The group's committed offset per partition of `marks`; `None` where
    /// it committed none.
    fn committed(&self, marks: &[Mark], timeout: Duration) -> anyhow::Result<Vec<Option<i64>>> {
        let mut partitions = TopicPartitionList::new();
        for mark in marks {
            partitions.add_partition(&self.topic, mark.partition);
        }
        let committed =
            self.consumer.committed_offsets(partitions, timeout).context("reading the group's committed offsets")?;
        Ok(marks
            .iter()
            .map(|mark| match committed.find_partition(&self.topic, mark.partition).map(|p| p.offset()) {
                Some(Offset::Offset(offset)) => Some(offset),
                _ => None,
            })
            .collect())
    }
}

fn lag(marks: &[Mark], committed: &[Option<i64>]) -> Vec<(i32, i64)> {
    marks
        .iter()
        .zip(committed)
        // Nothing committed yet: the group starts at the oldest record kept.
        .map(|(mark, at)| (mark.partition, (mark.high - at.unwrap_or(mark.low).max(mark.low)).max(0)))
        .collect()
}
