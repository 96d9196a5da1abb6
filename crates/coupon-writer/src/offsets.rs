//! Which offsets to store after a batch.
//!
//! Delivery guarantee: at least once. Offsets are stored only for records
//! that are durably applied or dead-lettered, after the batch's transaction
//! committed; librdkafka commits what is stored (crate::consumer), and
//! redelivery of anything later is harmless because the writes are idempotent.

use std::collections::BTreeMap;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// Per partition, the next offset the group should read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NextOffsets(BTreeMap<i32, i64>);

impl NextOffsets {
    /// Records that `offset` of `partition` is settled. A stored list is taken
    /// as given, so it must hold the offset after it.
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

/// "Nothing new to commit", which an interval commit with nothing stored
/// since the last one reports, is not a failure.
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
