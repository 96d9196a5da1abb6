//! An event's round trip through the real Kafka broker, with a consumer group
//! that commits manually and resumes after its committed offset; and how far
//! a group has come, as the recovery reads it.

use std::time::Duration;

use coupon_domain::{CouponId, CouponIssuedEvent, CustomerId};
use coupon_infra::kafka::GroupProgress;
use coupon_infra::settings::KafkaSettings;
use coupon_testkit::{kafka_settings, unique_name, TestTopic};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use time::OffsetDateTime;

fn event(customer: i64) -> CouponIssuedEvent {
    CouponIssuedEvent {
        coupon_id: CouponId::new(42).unwrap(),
        customer_id: CustomerId::new(customer).unwrap(),
        issued_at: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
        issuance: 0,
    }
}

fn consumer(group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = coupon_infra::kafka::client_config(&kafka_settings(), "roundtrip-test")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

async fn next_event(consumer: &StreamConsumer) -> (i64, CouponIssuedEvent) {
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a record within 30 s")
        .expect("a record, not an error");
    let event = CouponIssuedEvent::from_json(message.payload().unwrap()).unwrap();
    (message.offset(), event)
}

#[tokio::test]
async fn events_round_trip_and_a_restarted_consumer_resumes_after_its_commit() {
    let topic = TestTopic::create("roundtrip", 1).await;
    let group = unique_name("roundtrip-group");
    let producer: FutureProducer = coupon_infra::kafka::client_config(&kafka_settings(), "roundtrip-test")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let sent: Vec<CouponIssuedEvent> = (1..=3).map(event).collect();
    for e in &sent {
        let key = e.coupon_id.to_string();
        let payload = e.to_json();
        producer.send(FutureRecord::to(&topic).key(&key).payload(&payload), Duration::from_secs(10)).await.unwrap();
    }

    let first = consumer(&group, &topic);
    let (offset, received) = next_event(&first).await;
    assert_eq!(received, sent[0]);
    // Commit "the next record to read": last processed offset + 1.
    let mut commit = TopicPartitionList::new();
    commit.add_partition_offset(&topic, 0, Offset::Offset(offset + 1)).unwrap();
    first.commit(&commit, CommitMode::Sync).unwrap();
    let (_, uncommitted) = next_event(&first).await;
    assert_eq!(uncommitted, sent[1], "read but never committed");
    drop(first);

    let second = consumer(&group, &topic);
    let (offset, resumed) = next_event(&second).await;
    assert_eq!(offset, 1);
    assert_eq!(resumed, sent[1], "the group resumes at the committed offset, not after what was only read");
}

/// A group that lagged past retention (it committed below the log start) is
/// not caught up however long one waits: `behind` says so instead of
/// counting from the records Kafka still keeps, so a rebuild from
/// PostgreSQL never goes ahead without the deleted ones.
#[tokio::test]
async fn a_group_that_committed_below_the_log_start_is_not_taken_for_caught_up() {
    let topic = TestTopic::create("log-start", 1).await;
    let group = unique_name("log-start-group");
    let producer: FutureProducer = coupon_infra::kafka::client_config(&kafka_settings(), "log-start-test")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for customer in 1..=5 {
        let payload = event(customer).to_json();
        producer.send(FutureRecord::to(&topic).key("42").payload(&payload), Duration::from_secs(10)).await.unwrap();
    }
    let committer = consumer(&group, &topic);
    let commit = |offset: i64| {
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition_offset(&topic, 0, Offset::Offset(offset)).unwrap();
        committer.commit(&partitions, CommitMode::Sync).unwrap();
    };
    next_event(&committer).await;
    commit(1);
    let admin: AdminClient<DefaultClientContext> =
        coupon_infra::kafka::client_config(&kafka_settings(), "log-start-test").create().unwrap();
    let mut before = TopicPartitionList::new();
    before.add_partition_offset(&topic, 0, Offset::Offset(3)).unwrap();
    admin.delete_records(&before, &AdminOptions::new()).await.unwrap();

    let progress = GroupProgress::new(&KafkaSettings { topic: topic.to_string(), ..kafka_settings() }, &group).unwrap();
    let marks = progress.marks(Duration::from_secs(10)).unwrap();
    assert_eq!((marks[0].low, marks[0].high), (3, 5));
    let err = progress.behind(&marks, Duration::from_secs(10)).unwrap_err();
    assert!(err.to_string().contains("below the log start"), "{err}");

    commit(5);
    assert_eq!(progress.behind(&marks, Duration::from_secs(10)).unwrap(), 0);
}
