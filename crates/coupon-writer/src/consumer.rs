//! The consume → apply → commit loop of the writer.
//!
//! Delivery guarantee: at least once from Kafka, exactly once in PostgreSQL. A
//! batch is applied in one transaction (poison isolated and dead-lettered),
//! and only then are its offsets stored; librdkafka commits the stored
//! offsets every `writer.commit_interval_ms`, and synchronously when
//! partitions are revoked and when the consumer closes (see crate::offsets).
//! A crash anywhere before the commit redelivers the batch, which the
//! idempotent writes absorb.
//! Batches are applied one after another, so a partition's records are applied
//! in order; the next batch is received and decoded while one is applied, so
//! PostgreSQL does not wait for the writer between statements.
//!
//! Rebalances: rdkafka runs the rebalance callback inside `recv`, so also while
//! a batch's statement runs, but never while offsets are stored. Records of
//! revoked partitions that are held are dropped unstored, and so are the
//! offsets of a batch applied while its partitions were revoked; whoever owns
//! the partition next reads them again from the last commit.
//!
//! Pauses: a batch waiting for a retry pauses its member's partitions, and
//! resumes every partition it paused once it is settled, whether the member
//! still owns it or not: librdkafka keeps a partition paused through its
//! revocation and a later reassignment, so one lost during the wait would
//! otherwise come back paused and never be read again.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coupon_infra::backoff::Backoff;
use coupon_infra::db::PgPool;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::apply;
use crate::batch::{Batcher, Record};
use crate::config::Settings;
use crate::dlq::{DeadLetter, DlqProducer};
use crate::error::{Poison, WriteError};
use crate::http::Readiness;
use crate::metrics::Metrics;
use crate::offsets::{self, NextOffsets};

pub type WriterConsumer = StreamConsumer<WriterContext>;

/// The longest an idle writer waits in one `recv` before polling again.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// How long shutdown waits for the group to confirm that this member left.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Hears about rebalances and statistics (whether the member is in its
/// group), which librdkafka reports from within a poll.
pub struct WriterContext {
    topic: String,
    metrics: Metrics,
    /// Partitions revoked since the loop last looked.
    revoked: Mutex<Vec<i32>>,
    /// When the statistics last showed this member in the group (join state
    /// `steady`), or it was last assigned partitions; creation until then.
    in_group_at: Mutex<Instant>,
}

impl WriterContext {
    fn new(topic: String, metrics: Metrics) -> Self {
        Self { topic, metrics, revoked: Mutex::default(), in_group_at: Mutex::new(Instant::now()) }
    }

    fn take_revoked(&self) -> Vec<i32> {
        std::mem::take(&mut *self.revoked.lock().expect("the revoked list is never poisoned"))
    }

    fn in_group(&self) {
        *self.in_group_at.lock().expect("the group timestamp is never poisoned") = Instant::now();
    }

    /// How long this member has been outside its group (zero while in it).
    fn out_of_group_for(&self) -> Duration {
        self.in_group_at.lock().expect("the group timestamp is never poisoned").elapsed()
    }
}

impl ClientContext for WriterContext {
    fn stats(&self, statistics: Statistics) {
        if statistics.cgrp.as_ref().is_some_and(|group| group.join_state == "steady") {
            self.in_group();
        }
    }

    /// rdkafka hands every consumer error to this callback as well as to the
    /// poll. The end of a partition (`enable.partition.eof`) is no error: the
    /// loop takes it from the poll to close a batch, and logging it here
    /// would print an error each time the writer catches up.
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_partition_end(&error) {
            tracing::error!(error = %error, reason, "Kafka client error");
        }
    }
}

fn is_partition_end(error: &KafkaError) -> bool {
    matches!(error, KafkaError::PartitionEOF(_)) || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
}

impl ConsumerContext for WriterContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.metrics.offset_commits.with_label_values(&["committed"]).inc(),
            Err(err) if offsets::is_nothing_to_commit(&err) => {}
            // The batch is applied: without the commit it is only redelivered,
            // which the idempotent writes absorb.
            Err(err) => {
                self.metrics.offset_commits.with_label_values(&["failed"]).inc();
                tracing::warn!(error = %err, "committing offsets failed; applied records may be redelivered");
            }
        }
    }

    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let partitions: Vec<i32> =
                    list.elements().iter().filter(|e| e.topic() == self.topic).map(|e| e.partition()).collect();
                tracing::info!(?partitions, "partitions revoked");
                self.metrics.rebalances.with_label_values(&["revoked"]).inc();
                self.revoked.lock().expect("the revoked list is never poisoned").extend(partitions);
            }
            Rebalance::Assign(list) => {
                let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(?partitions, "partitions assigned");
                self.metrics.rebalances.with_label_values(&["assigned"]).inc();
                self.in_group();
            }
            Rebalance::Error(err) => tracing::warn!(error = %err, "rebalance failed"),
        }
    }
}

/// Why `fill` returned.
enum Filled {
    /// The batch is ready (or empty and shutdown was not requested).
    Ready,
    /// Shutdown was requested; what is held stays in the batcher.
    Stopping,
    /// The member has been out of its group for `writer.rejoin_timeout_ms`.
    OutOfGroup,
}

/// What became of a closed batch.
enum Settled {
    /// Applied (and its poison dead-lettered); its offsets are stored.
    Applied,
    /// Every partition it came from was revoked while it waited for a retry.
    Revoked,
    /// Shutdown came while it could not be applied; it stays uncommitted.
    Abandoned,
}

pub struct Writer {
    consumer: Arc<WriterConsumer>,
    /// For building a new consumer when the old one cannot rejoin its group.
    settings: Settings,
    rejoin_timeout: Duration,
    pool: PgPool,
    dlq: DlqProducer,
    metrics: Metrics,
    readiness: Readiness,
    topic: String,
    batch_max_records: usize,
    batch_ceiling_records: usize,
    batch_max_wait: Duration,
    retry_initial: Duration,
    retry_max: Duration,
}

impl Writer {
    /// Creates the consumer and subscribes; nothing is fetched before `run`.
    pub fn new(settings: &Settings, pool: PgPool, metrics: Metrics, readiness: Readiness) -> Result<Self, KafkaError> {
        let writer = &settings.writer;
        Ok(Self {
            consumer: Arc::new(subscribed_consumer(settings, &metrics)?),
            settings: settings.clone(),
            rejoin_timeout: writer.rejoin_timeout,
            pool,
            dlq: DlqProducer::new(&settings.kafka, writer.dlq_timeout)?,
            metrics,
            readiness,
            topic: settings.kafka.topic.clone(),
            batch_max_records: writer.batch_max_records,
            batch_ceiling_records: writer.batch_ceiling_records,
            batch_max_wait: writer.batch_max_wait,
            retry_initial: writer.retry_initial,
            retry_max: writer.retry_max,
        })
    }

    /// Consumes until `stop` is cancelled; then applies what it holds (unless
    /// the database is failing) and leaves the group, committing what it stored.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut batcher = Batcher::new(self.batch_max_records, self.batch_ceiling_records, self.batch_max_wait);
        loop {
            fail::fail_point!("consumer-poll");
            let filled = self.fill(&mut batcher, &stop).await;
            if let Filled::OutOfGroup = filled {
                self.replace_consumer(&mut batcher, &stop).await;
                continue;
            }
            if !batcher.is_empty() {
                let batch = batcher.take(Instant::now());
                match self.settle(batch, &mut batcher, &stop).await {
                    Settled::Applied | Settled::Revoked => {}
                    Settled::Abandoned => break,
                }
            }
            if matches!(filled, Filled::Stopping) && batcher.is_empty() {
                break;
            }
        }
        close(self.consumer).await;
    }

    /// A fresh consumer in place of one that has not rejoined its group for
    /// `writer.rejoin_timeout_ms`. After a broker outage librdkafka has been
    /// seen to stay out of the group for good (a request to the coordinator
    /// left queued, no rebalance ever served); a new consumer joins as a
    /// restarted process would. What the old one held belongs to partitions
    /// it no longer owns: dropped unstored, read again by their next owner.
    async fn replace_consumer(&mut self, batcher: &mut Batcher<Record>, stop: &CancellationToken) {
        tracing::error!(
            out_of_group_s = self.consumer.context().out_of_group_for().as_secs(),
            "the consumer has not rejoined its group; replacing it"
        );
        self.metrics.rebalances.with_label_values(&["consumer_replaced"]).inc();
        drop(batcher.take(Instant::now()));
        let mut backoff = Backoff::new(self.retry_initial, self.retry_max);
        let fresh = loop {
            match subscribed_consumer(&self.settings, &self.metrics) {
                Ok(consumer) => break consumer,
                Err(err) => {
                    tracing::warn!(error = %err, "could not create a new consumer; trying again");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        };
        close(std::mem::replace(&mut self.consumer, Arc::new(fresh))).await;
    }

    /// Polls until the batch closes, shutdown is requested (with whatever is
    /// held left in the batcher), or the member has been out of its group
    /// too long.
    async fn fill(&self, batcher: &mut Batcher<Record>, stop: &CancellationToken) -> Filled {
        loop {
            if stop.is_cancelled() {
                return Filled::Stopping;
            }
            if batcher.is_ready(Instant::now()) {
                return Filled::Ready;
            }
            if self.consumer.context().out_of_group_for() > self.rejoin_timeout {
                return Filled::OutOfGroup;
            }
            let received = match batcher.deadline() {
                Some(deadline) => tokio::select! {
                    biased;
                    () = stop.cancelled() => return Filled::Stopping,
                    received = tokio::time::timeout_at(deadline.into(), self.consumer.recv()) => received.ok(),
                },
                // Re-armed every second: the consumer's queue is polled by
                // `recv`, and rebalance and commit events are served only
                // then; a waiting `recv` that missed the queue's wake-up
                // would never serve the assignment after a broker outage.
                None => tokio::select! {
                    biased;
                    () = stop.cancelled() => return Filled::Stopping,
                    received = tokio::time::timeout(IDLE_POLL, self.consumer.recv()) => received.ok(),
                },
            };
            // A revocation seen in this poll concerns records held before it,
            // not the one it returned.
            self.forget_revoked(batcher, None);
            if let Some(received) = received {
                take_in(received, batcher);
            }
        }
    }

    /// Applies the batch, retrying transient failures with backoff while the
    /// partitions are paused, then stores its offsets. The first attempt
    /// receives the next batch while it runs.
    async fn settle(&self, mut batch: Vec<Record>, batcher: &mut Batcher<Record>, stop: &CancellationToken) -> Settled {
        let mut backoff = Backoff::new(self.retry_initial, self.retry_max);
        let mut result = self.apply_while_receiving(&mut batch, batcher, stop).await;
        let mut attempt = 1;
        let mut paused = BTreeSet::new();
        let settled = loop {
            let err = match result {
                Ok(()) => break Settled::Applied,
                Err(err) => err,
            };
            self.metrics.retries.inc();
            self.readiness.set(false);
            if stop.is_cancelled() {
                tracing::warn!(error = %err, records = batch.len(), "stopping; the failing batch stays uncommitted");
                break Settled::Abandoned;
            }
            if !batch.is_empty() {
                let delay = backoff.next_delay();
                tracing::warn!(
                    error = %err,
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "batch failed with a transient error; retrying it"
                );
                self.pause(&mut paused);
                self.poll_while_waiting(delay, &mut batch, batcher, &mut paused, stop).await;
            }
            if batch.is_empty() {
                tracing::info!("every partition of the failing batch was revoked; its new owner applies it");
                break Settled::Revoked;
            }
            attempt += 1;
            result = self.process(&batch, attempt).await;
        };
        self.resume(&paused);
        // Ready again once nothing is being retried: the batch applied, or
        // its partitions went to another member (the next batch finds out
        // whether the fault is still there).
        if matches!(settled, Settled::Applied | Settled::Revoked) {
            self.readiness.set(true);
        }
        if let Settled::Applied = settled {
            self.store_offsets(&batch);
        }
        settled
    }

    /// The batch's first attempt, with the next batch received and decoded
    /// into `batcher` (up to its limit) while the statement runs, so a backlog
    /// keeps PostgreSQL busy instead of waiting for the writer between
    /// statements. Rebalances served meanwhile drop the held records of
    /// revoked partitions as `fill` does, and take them out of `batch` once
    /// the attempt is over: applied or not, they are their next owner's to
    /// read again from the last commit, so their offsets are not stored and
    /// they are not retried here.
    async fn apply_while_receiving(
        &self,
        batch: &mut Vec<Record>,
        batcher: &mut Batcher<Record>,
        stop: &CancellationToken,
    ) -> Result<(), WriteError> {
        let mut revoked = Vec::new();
        let result = {
            let applying = self.process(batch, 1);
            tokio::pin!(applying);
            // The statement goes out through the connection's own task, which
            // its wake-up queues behind this one: let it run before receiving.
            let mut sent = false;
            loop {
                if batcher.is_full() || stop.is_cancelled() {
                    break applying.await;
                }
                tokio::select! {
                    biased;
                    result = &mut applying => break result,
                    () = tokio::task::yield_now(), if !sent => sent = true,
                    received = self.consumer.recv(), if sent => {
                        revoked.extend(self.forget_revoked(batcher, None));
                        take_in(received, batcher);
                    }
                }
            }
        };
        if !revoked.is_empty() {
            batch.retain(|record| !revoked.contains(&record.partition));
        }
        result
    }

    /// Applies a batch: undecodable records and records the database rejects
    /// for good are dead-lettered, the rest written. Fails only transiently.
    async fn process(&self, batch: &[Record], attempt: u32) -> Result<(), WriteError> {
        let mut letters = Vec::new();
        let mut decoded = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        for record in batch {
            match &record.event {
                Ok(event) => {
                    decoded.push(record);
                    events.push(event);
                }
                Err(undecodable) => {
                    letters.push(DeadLetter { record, reason: Poison::Undecodable(undecodable), attempts: attempt })
                }
            }
        }
        let outcome = apply::apply(&self.pool, &self.metrics, &events).await?;
        letters.extend(outcome.rejected.into_iter().map(|rejected| DeadLetter {
            record: decoded[rejected.index],
            reason: rejected.reason,
            attempts: attempt - 1 + rejected.attempts,
        }));
        letters.sort_by_key(|letter| (letter.record.partition, letter.record.offset));
        self.dlq.send(&letters).await.map_err(WriteError::DeadLetter)?;
        for letter in &letters {
            tracing::warn!(
                partition = letter.record.partition,
                offset = letter.record.offset,
                request_id = letter.record.request_id.as_deref(),
                reason = %letter.reason,
                "record dead-lettered"
            );
        }
        self.metrics.batches_applied.inc();
        self.metrics.batch_size.observe(batch.len() as f64);
        self.metrics.rows_inserted.inc_by(outcome.applied.inserted);
        self.metrics.duplicates_skipped.inc_by(outcome.applied.duplicates);
        self.metrics.dead_lettered.inc_by(letters.len() as u64);
        tracing::debug!(
            records = batch.len(),
            inserted = outcome.applied.inserted,
            duplicates = outcome.applied.duplicates,
            dead_lettered = letters.len(),
            transactions = outcome.transactions,
            "batch applied"
        );
        Ok(())
    }

    fn store_offsets(&self, batch: &[Record]) {
        let mut next = NextOffsets::default();
        for record in batch {
            next.settled(record.partition, record.offset);
        }
        if next.is_empty() {
            return;
        }
        if let Err(err) = self.consumer.store_offsets(&next.to_list(&self.topic)) {
            tracing::warn!(error = %err, "storing offsets failed; applied records may be redelivered");
        }
    }

    /// Waits `delay` while polling, so the consumer stays in its group and
    /// rebalances are served. Records arriving meanwhile (fetched before the
    /// pause, or from a new assignment) are kept for the next batch.
    async fn poll_while_waiting(
        &self,
        delay: Duration,
        batch: &mut Vec<Record>,
        batcher: &mut Batcher<Record>,
        paused: &mut BTreeSet<i32>,
        stop: &CancellationToken,
    ) {
        let until = tokio::time::Instant::now() + delay;
        loop {
            let received = tokio::select! {
                biased;
                () = stop.cancelled() => None,
                () = tokio::time::sleep_until(until) => None,
                received = self.consumer.recv() => Some(received),
            };
            // Also when the wait ends without a record: a `recv` that served a
            // rebalance returns nothing, and the batch must not be attempted
            // again with the records of partitions revoked meanwhile.
            self.forget_revoked(batcher, Some(batch));
            match received {
                None => return,
                Some(received) => {
                    take_in(received, batcher);
                    // A rebalance may have brought partitions that are not paused.
                    self.pause(paused);
                }
            }
        }
    }

    /// Drops the records of the partitions revoked since the last look, held
    /// ones and those of the `batch` being retried, and names those partitions.
    fn forget_revoked(&self, batcher: &mut Batcher<Record>, batch: Option<&mut Vec<Record>>) -> Vec<i32> {
        let revoked = self.consumer.context().take_revoked();
        if !revoked.is_empty() {
            batcher.retain(|record| !revoked.contains(&record.partition));
            if let Some(batch) = batch {
                batch.retain(|record| !revoked.contains(&record.partition));
            }
        }
        revoked
    }

    /// Pauses the assigned partitions and adds them to `paused`.
    fn pause(&self, paused: &mut BTreeSet<i32>) {
        let result = self.consumer.assignment().and_then(|assigned| {
            paused.extend(assigned.elements_for_topic(&self.topic).iter().map(|e| e.partition()));
            self.consumer.pause(&assigned)
        });
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not pause the assigned partitions");
        }
    }

    /// Resumes every partition in `paused`, also those revoked since: see the
    /// module's note on pauses.
    fn resume(&self, paused: &BTreeSet<i32>) {
        if paused.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::with_capacity(paused.len());
        for &partition in paused {
            list.add_partition(&self.topic, partition);
        }
        if let Err(err) = self.consumer.resume(&list) {
            tracing::warn!(error = %err, "could not resume the paused partitions");
        }
    }
}

/// Holds a received record for the next batch; the end of a partition may
/// close a backlog's last batch.
fn take_in(received: KafkaResult<BorrowedMessage<'_>>, batcher: &mut Batcher<Record>) {
    match received {
        Ok(message) => batcher.push(Record::from_message(&message), Instant::now()),
        Err(KafkaError::PartitionEOF(_)) => batcher.caught_up(),
        Err(err) => tracing::warn!(error = %err, "Kafka consumer error"),
    }
}

/// A consumer of the writer's group, subscribed to the topic.
fn subscribed_consumer(settings: &Settings, metrics: &Metrics) -> Result<WriterConsumer, KafkaError> {
    let writer = &settings.writer;
    let context = WriterContext::new(settings.kafka.topic.clone(), metrics.clone());
    let consumer: WriterConsumer = coupon_infra::kafka::client_config(&settings.kafka, "coupon-writer")
        .set("group.id", &writer.group)
        // The at-least-once pattern: offsets stored by hand after the
        // transaction, committed by librdkafka on an interval, on revoke
        // and on close.
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", writer.commit_interval.as_millis().to_string())
        .set("enable.auto.offset.store", "false")
        // A group without a committed offset must not skip any event.
        .set("auto.offset.reset", "earliest")
        // Reaching a partition's end closes a backlog's last batch at once.
        .set("enable.partition.eof", "true")
        .set("max.poll.interval.ms", writer.max_poll_interval.as_millis().to_string())
        .set("session.timeout.ms", writer.session_timeout.as_millis().to_string())
        .set("statistics.interval.ms", writer.stats_interval.as_millis().to_string())
        .set("queued.max.messages.kbytes", writer.fetch_queue_kbytes.to_string())
        .create_with_context(context)?;
    consumer.subscribe(&[&settings.kafka.topic])?;
    Ok(consumer)
}

/// Leaves the group, committing what was stored. Closing waits for the group
/// to acknowledge that this member left, which never comes while Kafka is
/// unreachable. It runs on a thread of its own (the runtime would wait for a
/// blocking task forever at exit) and is given up after a while: nothing is
/// lost, the group evicts the member after its session timeout and
/// uncommitted records are delivered again.
async fn close(consumer: Arc<WriterConsumer>) {
    let (closed, close_done) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        drop(consumer);
        let _ = closed.send(());
    });
    match tokio::time::timeout(CLOSE_TIMEOUT, close_done).await {
        Ok(_) => tracing::info!("left the consumer group"),
        Err(_) => tracing::warn!(
            timeout_s = CLOSE_TIMEOUT.as_secs(),
            "Kafka did not confirm that this member left the group; stopping without it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_partition_is_told_apart_from_client_errors() {
        assert!(is_partition_end(&KafkaError::Global(RDKafkaErrorCode::PartitionEOF)));
        assert!(is_partition_end(&KafkaError::PartitionEOF(3)));
        assert!(!is_partition_end(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)));
        assert!(!is_partition_end(&KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition)));
    }
}
