//! Which offsets to commit after a batch, and committing them.
//!
//! Delivery guarantee: at least once. Offsets are committed only for records
//! that are durably applied or dead-lettered, after the batch's transaction
//! committed; redelivery of anything later is harmless because the writes are
//! idempotent.
//!
//! Commits are asynchronous: a synchronous commit costs a round trip to the
//! group coordinator per batch, which measured as half of the writer's time per
//! 100-record batch. librdkafka sends a consumer's commits in order, reports
//! each outcome to the context's commit callback, and closing the consumer
//! waits for commits in flight; a lost commit only means redelivery.

use std::collections::BTreeMap;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// Per partition, the next offset the group should read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NextOffsets(BTreeMap<i32, i64>);

impl NextOffsets {
    /// Records that `offset` of `partition` is settled. A list passed to
    /// `commit` is taken as given, so it must hold the offset after it.
    pub fn settled(&mut self, partition: i32, offset: i64) {
        let next = self.0.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_list(&self, topic: &str) -> TopicPartitionList {
        let mut list = TopicPartitionList::with_capacity(self.0.len());
        for (&partition, &next) in &self.0 {
            list.add_partition_offset(topic, partition, Offset::Offset(next))
                .expect("a concrete offset is always accepted");
        }
        list
    }
}

/// Enqueues the commit and returns at once. "Nothing new to commit" is not a
/// failure.
pub fn commit<C, K>(consumer: &C, offsets: &TopicPartitionList) -> Result<(), KafkaError>
where
    C: Consumer<K>,
    K: ConsumerContext,
{
    match consumer.commit(offsets, CommitMode::Async) {
        Err(err) if is_nothing_to_commit(&err) => Ok(()),
        other => other,
    }
}

pub fn is_nothing_to_commit(err: &KafkaError) -> bool {
    matches!(err, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_the_offset_after_the_last_settled_record_per_partition() {
        let mut offsets = NextOffsets::default();
        for (partition, offset) in [(0, 7), (1, 3), (0, 9), (0, 8)] {
            offsets.settled(partition, offset);
        }
        let list = offsets.to_list("t");
        let committed: Vec<(i32, Offset)> = list.elements().iter().map(|e| (e.partition(), e.offset())).collect();
        assert_eq!(committed, [(0, Offset::Offset(10)), (1, Offset::Offset(4))]);
    }

    #[test]
    fn nothing_settled_commits_nothing() {
        let offsets = NextOffsets::default();
        assert!(offsets.is_empty());
        assert_eq!(offsets.to_list("t").count(), 0);
    }
}
