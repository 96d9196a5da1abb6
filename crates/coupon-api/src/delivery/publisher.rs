//! The Kafka producer for issuance events.
//!
//! Delivery guarantee: at least once, together with the outbox. The producer is
//! idempotent with `acks=all`, so a retry inside librdkafka never duplicates a
//! record. An outbox entry is removed only after Kafka acknowledged its event,
//! and by the delivery callback itself: whoever still waits for the answer (or
//! no one, after a request stopped waiting or its worker stopped), an
//! acknowledged event leaves the outbox and an unacknowledged one stays for the
//! relay.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coupon_domain::{CouponIssuedEvent, CouponUsageEvent, REQUEST_ID_HEADER};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use tokio::sync::{oneshot, Notify};

use crate::config::{KafkaProducerSettings, PartitionKey};
use crate::delivery::outbox::{AckQueue, Delivered};
use crate::metrics::Metrics;

pub struct Publisher {
    producer: Arc<BaseProducer<Deliveries>>,
    /// Serves delivery reports until `stop_polling`.
    polling: Option<JoinHandle<()>>,
    stop_polling: Arc<AtomicBool>,
    topic: String,
    partition_key: PartitionKey,
}

/// How long one poll of the producer's event queue may wait. A poll returns
/// as soon as a delivery report arrives, so this bounds only how soon the
/// polling thread notices it should stop. rdkafka's `ThreadedProducer` polls
/// every 100 ms and spins through the last millisecond of each poll (its
/// timeout is rounded down to whole milliseconds): about 1% of a core while
/// idle, which a second-long poll cuts tenfold.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How often librdkafka reports its statistics, from which `warm_up` learns
/// that the producer has its id. A start waits at most this long beyond that.
const STATISTICS_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("Kafka refused the record: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the producer dropped the record before delivery")]
    Canceled,
}

/// What travels with a record until Kafka answers for it.
struct Pending {
    /// The outbox entry to remove once acknowledged; `None` when the sender
    /// removes it itself.
    remove: Option<Delivered>,
    sent: Instant,
    answer: oneshot::Sender<Result<(), PublishError>>,
}

/// Hears every record's outcome, on librdkafka's polling thread.
struct Deliveries {
    acks: AckQueue,
    metrics: Metrics,
    /// False after a failed or late acknowledgement, true again after the next
    /// success. While false, requests do not wait for acknowledgements.
    healthy: AtomicBool,
    /// Whether librdkafka holds an idempotent producer id, as its statistics
    /// last said: until it does, no record can be sent.
    producer_id: AtomicBool,
    producer_id_changed: Notify,
}

impl Deliveries {
    fn mark_unhealthy(&self) {
        self.healthy.store(false, Ordering::Relaxed);
        self.metrics.kafka_publish_failures.inc();
    }
}

/// The one part of librdkafka's statistics read here.
#[derive(serde::Deserialize)]
struct IdempotenceStats {
    eos: Option<Idempotence>,
}

#[derive(serde::Deserialize)]
struct Idempotence {
    idemp_state: String,
}

impl ClientContext for Deliveries {
    fn stats_raw(&self, statistics: &[u8]) {
        let assigned = match serde_json::from_slice::<IdempotenceStats>(statistics) {
            Ok(stats) => stats.eos.is_some_and(|eos| eos.idemp_state == "Assigned"),
            Err(err) => return tracing::warn!(error = %err, "unreadable librdkafka statistics"),
        };
        if self.producer_id.swap(assigned, Ordering::Relaxed) != assigned {
            self.producer_id_changed.notify_waiters();
        }
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        self.metrics.kafka_publish_seconds.observe(pending.sent.elapsed().as_secs_f64());
        let outcome = match result {
            Ok(_) => {
                self.healthy.store(true, Ordering::Relaxed);
                if let Some(delivered) = pending.remove {
                    self.acks.push(delivered);
                }
                Ok(())
            }
            Err((err, _)) => {
                self.mark_unhealthy();
                Err(PublishError::Kafka(err.clone()))
            }
        };
        // The sender may have stopped waiting; the outcome is handled above.
        let _ = pending.answer.send(outcome);
    }
}

impl Publisher {
    pub fn new(settings: &KafkaProducerSettings, metrics: Metrics, acks: AckQueue) -> anyhow::Result<Self> {
        let deliveries = Deliveries {
            acks,
            metrics,
            healthy: AtomicBool::new(true),
            producer_id: AtomicBool::new(false),
            producer_id_changed: Notify::new(),
        };
        let producer = coupon_infra::kafka::client_config(&settings.client, "coupon-api")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", settings.linger.as_millis().to_string())
            .set("message.timeout.ms", settings.message_timeout.as_millis().to_string())
            .set("statistics.interval.ms", STATISTICS_INTERVAL.as_millis().to_string())
            .create_with_context(deliveries)?;
        let producer: Arc<BaseProducer<Deliveries>> = Arc::new(producer);
        let stop_polling = Arc::new(AtomicBool::new(false));
        let polling = {
            let (producer, stop) = (producer.clone(), stop_polling.clone());
            std::thread::Builder::new().name("kafka-deliveries".into()).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    producer.poll(POLL_INTERVAL);
                }
            })?
        };
        Ok(Self {
            producer,
            polling: Some(polling),
            stop_polling,
            topic: settings.client.topic.clone(),
            partition_key: settings.partition_key,
        })
    }

    fn deliveries(&self) -> &Deliveries {
        self.producer.context()
    }

    pub fn is_healthy(&self) -> bool {
        self.deliveries().healthy.load(Ordering::Relaxed)
    }

    pub fn mark_unhealthy(&self) {
        self.deliveries().mark_unhealthy();
    }

    /// Waits up to `timeout` until a record sent now would go out at once:
    /// the topic's metadata is known and the idempotent producer has its id.
    /// Returns whether it got there; the first requests of a cold producer
    /// wait for both, and a spike right after the start would see it.
    pub async fn warm_up(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let (producer, topic) = (self.producer.clone(), self.topic.clone());
        let metadata =
            tokio::task::spawn_blocking(move || producer.client().fetch_metadata(Some(&topic), timeout).map(drop))
                .await;
        if !matches!(metadata, Ok(Ok(()))) {
            return false;
        }
        let deliveries = self.deliveries();
        loop {
            let changed = deliveries.producer_id_changed.notified();
            if deliveries.producer_id.load(Ordering::Relaxed) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    /// Queues one event. The returned future tells when Kafka acknowledged it
    /// or gave up (bounded by the producer's `message.timeout.ms`); `remove`,
    /// if given, leaves the outbox on acknowledgement whether or not the
    /// future is awaited. `request_id`, the HTTP request's that issued it,
    /// goes in the `request-id` header (none when the relay re-sends).
    pub fn send(
        &self,
        event: &CouponIssuedEvent,
        remove: Option<Delivered>,
        request_id: Option<&str>,
    ) -> impl Future<Output = Result<(), PublishError>> + use<> {
        let key = match self.partition_key {
            PartitionKey::Coupon => event.coupon_id.get(),
            PartitionKey::Customer => event.customer_id.get(),
        };
        let headers =
            request_id.map(|id| OwnedHeaders::new().insert(Header { key: REQUEST_ID_HEADER, value: Some(id) }));
        self.queue(&self.topic, &key.to_string(), &event.to_json(), remove, headers)
    }

    /// Queues a use or a release of a held coupon (key = coupon id), on the
    /// same idempotent producer; the future tells when Kafka acknowledged it.
    pub fn send_usage(
        &self,
        topic: &str,
        event: &CouponUsageEvent,
    ) -> impl Future<Output = Result<(), PublishError>> + use<> {
        let payload = serde_json::to_string(event).expect("a usage event always serializes");
        self.queue(topic, &event.coupon_id.to_string(), &payload, None, None)
    }

    fn queue(
        &self,
        topic: &str,
        key: &str,
        payload: &str,
        remove: Option<Delivered>,
        headers: Option<OwnedHeaders>,
    ) -> impl Future<Output = Result<(), PublishError>> + use<> {
        let (answer, answered) = oneshot::channel();
        let pending = Box::new(Pending { remove, sent: Instant::now(), answer });
        let mut record = BaseRecord::with_opaque_to(topic, pending).key(key).payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        let refused = self.producer.send(record).err().map(|(err, _)| err);
        if refused.is_some() {
            self.mark_unhealthy();
        }
        async move {
            match refused {
                Some(err) => Err(PublishError::Kafka(err)),
                None => answered.await.unwrap_or(Err(PublishError::Canceled)),
            }
        }
    }

    /// Waits for queued records to be delivered. Blocks: call it off the async workers.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop_polling.store(true, Ordering::Relaxed);
        if let Some(polling) = self.polling.take() {
            let _ = polling.join();
        }
    }
}
