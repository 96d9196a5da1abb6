//! The Kafka producer for issuance events.
//!
//! Delivery guarantee: at least once, together with the outbox. The producer is
//! idempotent with `acks=all`, so a retry inside librdkafka never duplicates a
//! record; a record is removed from the outbox only after Kafka acknowledged it,
//! and the relay re-sends whatever was not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use coupon_domain::CouponIssuedEvent;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::config::{KafkaProducerSettings, PartitionKey};
use crate::metrics::Metrics;

pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    partition_key: PartitionKey,
    /// False after a failed or late acknowledgement, true again after the next
    /// success. While false, requests do not wait for acknowledgements.
    healthy: AtomicBool,
    metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("Kafka refused the record: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the producer dropped the record before delivery")]
    Canceled,
}

impl Publisher {
    pub fn new(settings: &KafkaProducerSettings, metrics: Metrics) -> anyhow::Result<Self> {
        let producer: FutureProducer = coupon_infra::kafka::client_config(&settings.client, "coupon-api")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", settings.linger_ms.to_string())
            .set("message.timeout.ms", settings.message_timeout_ms.to_string())
            .create()?;
        Ok(Self {
            producer,
            topic: settings.client.topic.clone(),
            partition_key: settings.partition_key,
            healthy: AtomicBool::new(true),
            metrics,
        })
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sends one event and waits for Kafka's acknowledgement (bounded by the
    /// producer's `message.timeout.ms`).
    pub async fn publish(&self, event: &CouponIssuedEvent) -> Result<(), PublishError> {
        let key = match self.partition_key {
            PartitionKey::Coupon => event.coupon_id.get(),
            PartitionKey::Customer => event.customer_id.get(),
        }
        .to_string();
        let payload = event.to_json();
        let started = Instant::now();
        let delivery = self
            .producer
            .send_result(FutureRecord::to(&self.topic).key(&key).payload(&payload))
            .map_err(|(err, _)| err);
        let result = match delivery {
            Ok(ack) => match ack.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((err, _))) => Err(PublishError::Kafka(err)),
                Err(_) => Err(PublishError::Canceled),
            },
            Err(err) => Err(PublishError::Kafka(err)),
        };
        self.metrics.kafka_publish_seconds.observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => self.healthy.store(true, Ordering::Relaxed),
            Err(_) => self.mark_unhealthy(),
        }
        result
    }

    pub fn mark_unhealthy(&self) {
        self.healthy.store(false, Ordering::Relaxed);
        self.metrics.kafka_publish_failures.inc();
    }

    /// Waits for queued records to be delivered. Blocks: call it off the async workers.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}
