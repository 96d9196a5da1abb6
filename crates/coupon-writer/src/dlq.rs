//! The dead-letter topic: records that can never be applied are published to
//! it with why, when, after how many attempts and from where; `coupon-writer
//! dlq list|replay` reads them back and republishes chosen ones to the main
//! topic once the cause is fixed.
//!
//! Delivery guarantee: at least once. The writer commits past a poison record
//! only after the dead-letter topic acknowledged it, so a crash in between may
//! dead-letter it twice. Replaying twice is as safe as once: the writer's
//! writes are idempotent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use coupon_domain::REQUEST_ID_HEADER;
use coupon_infra::kafka::client_config;
use coupon_infra::settings::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::batch::Record;
use crate::error::Poison;

pub const REASON: &str = "reason";
pub const FAILED_AT: &str = "failed-at";
pub const ATTEMPTS: &str = "attempts";
pub const ORIGINAL_TOPIC: &str = "original-topic";
pub const ORIGINAL_PARTITION: &str = "original-partition";
pub const ORIGINAL_OFFSET: &str = "original-offset";

/// How long reading the topic back may take, and how long a replayed record
/// may wait in the producer queue or for the broker. (The writer's own
/// dead letters wait `writer.dlq_timeout_ms`.)
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// A record to dead-letter and why.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    pub record: &'a Record,
    pub reason: Poison<'a>,
    pub attempts: u32,
}

pub struct DlqProducer {
    producer: FutureProducer,
    source_topic: String,
    dlq_topic: String,
    /// How long a send may wait in the producer queue or for the broker.
    timeout: Duration,
}

impl DlqProducer {
    /// A producer whose sends fail after `timeout` (`writer.dlq_timeout_ms`).
    pub fn new(settings: &KafkaSettings, timeout: Duration) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: producer(settings, "coupon-writer-dlq", timeout)?,
            source_topic: settings.topic.clone(),
            dlq_topic: settings.dlq_topic.clone(),
            timeout,
        })
    }

    /// Publishes each letter, returning once Kafka acknowledged all of them;
    /// fails when one is not acknowledged within the timeout (the topic is
    /// missing, the brokers are unreachable).
    pub async fn send(&self, letters: &[DeadLetter<'_>]) -> Result<(), KafkaError> {
        let failed_at = OffsetDateTime::now_utc().format(&Rfc3339).expect("the current time formats as RFC 3339");
        for letter in letters {
            let (partition, offset, attempts) =
                (letter.record.partition.to_string(), letter.record.offset.to_string(), letter.attempts.to_string());
            let reason = letter.reason.to_string();
            let mut headers = OwnedHeaders::new()
                .insert(Header { key: REASON, value: Some(reason.as_str()) })
                .insert(Header { key: FAILED_AT, value: Some(failed_at.as_str()) })
                .insert(Header { key: ATTEMPTS, value: Some(attempts.as_str()) })
                .insert(Header { key: ORIGINAL_TOPIC, value: Some(self.source_topic.as_str()) })
                .insert(Header { key: ORIGINAL_PARTITION, value: Some(partition.as_str()) })
                .insert(Header { key: ORIGINAL_OFFSET, value: Some(offset.as_str()) });
            if let Some(request_id) = &letter.record.request_id {
                headers = headers.insert(Header { key: REQUEST_ID_HEADER, value: Some(request_id.as_str()) });
            }
            let mut record =
                FutureRecord::<[u8], [u8]>::to(&self.dlq_topic).payload(&letter.record.payload).headers(headers);
            if let Some(key) = &letter.record.key {
                record = record.key(key);
            }
            self.producer.send(record, self.timeout).await.map_err(|(err, _)| err)?;
        }
        Ok(())
    }
}

fn producer(settings: &KafkaSettings, client_id: &str, timeout: Duration) -> Result<FutureProducer, KafkaError> {
    client_config(settings, client_id)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", timeout.as_millis().to_string())
        .create()
}

/// A record read back from the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DlqEntry {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl DlqEntry {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.get(key).map(String::as_str)
    }
}

impl fmt::Display for DlqEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = |key| self.header(key).unwrap_or("?");
        write!(
            f,
            "{}:{} reason={:?} failed-at={} attempts={} from={}/{}@{} key={:?} payload={:?}",
            self.partition,
            self.offset,
            header(REASON),
            header(FAILED_AT),
            header(ATTEMPTS),
            header(ORIGINAL_TOPIC),
            header(ORIGINAL_PARTITION),
            header(ORIGINAL_OFFSET),
            self.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default(),
            String::from_utf8_lossy(&self.payload),
        )
    }
}

/// Reads every record the dead-letter topic holds now, committing nothing.
/// Blocks; call it off the async threads.
pub fn read_all(settings: &KafkaSettings) -> anyhow::Result<Vec<DlqEntry>> {
    let topic = settings.dlq_topic.as_str();
    // librdkafka wants a group even for assigned partitions; this one never
    // joins and never commits.
    let consumer: BaseConsumer = client_config(settings, "coupon-writer-dlq-reader")
        .set("group.id", "coupon-writer-dlq-reader")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the DLQ reader")?;
    let metadata = consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT).context("reading the DLQ topic's metadata")?;
    let Some(described) = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()) else {
        bail!("the dead-letter topic {topic} does not exist");
    };
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for partition in described.partitions().iter().map(|p| p.id()) {
        let (low, high) = consumer.fetch_watermarks(topic, partition, KAFKA_TIMEOUT)?;
        if high > low {
            assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
            ends.insert(partition, high);
        }
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + KAFKA_TIMEOUT;
    let mut entries = Vec::new();
    while !ends.is_empty() {
        if Instant::now() > deadline {
            bail!("timed out reading the dead-letter topic {topic}");
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.context("reading the dead-letter topic")?;
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let partition = message.partition();
        if ends.get(&partition).is_some_and(|&end| message.offset() + 1 >= end) {
            ends.remove(&partition);
        }
        entries.push(DlqEntry {
            partition,
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    entries.sort_by_key(|entry| (entry.partition, entry.offset));
    Ok(entries)
}

/// Which dead-lettered records to replay.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    Offsets { partition: i32, offsets: BTreeSet<i64> },
}

/// Republishes the selected records to the main topic with their key and
/// payload; returns how many. Fails before sending anything if a chosen
/// offset is not in the dead-letter topic.
pub async fn replay(settings: &KafkaSettings, selection: &Selection) -> anyhow::Result<usize> {
    let kafka = settings.clone();
    let entries = tokio::task::spawn_blocking(move || read_all(&kafka)).await??;
    let chosen: Vec<&DlqEntry> = match selection {
        Selection::All => entries.iter().collect(),
        Selection::Offsets { partition, offsets } => {
            let chosen: Vec<&DlqEntry> =
                entries.iter().filter(|e| e.partition == *partition && offsets.contains(&e.offset)).collect();
            if chosen.len() != offsets.len() {
                let found: BTreeSet<i64> = chosen.iter().map(|e| e.offset).collect();
                let missing: Vec<&i64> = offsets.difference(&found).collect();
                bail!("no record at offset(s) {missing:?} of partition {partition} of {}", settings.dlq_topic);
            }
            chosen
        }
    };
    let producer =
        producer(settings, "coupon-writer-dlq-replay", KAFKA_TIMEOUT).context("creating the replay producer")?;
    for entry in &chosen {
        let mut record = FutureRecord::<[u8], [u8]>::to(&settings.topic).payload(&entry.payload);
        if let Some(key) = &entry.key {
            record = record.key(key);
        }
        producer
            .send(record, KAFKA_TIMEOUT)
            .await
            .map_err(|(err, _)| err)
            .with_context(|| format!("replaying {}:{}", entry.partition, entry.offset))?;
    }
    Ok(chosen.len())
}
