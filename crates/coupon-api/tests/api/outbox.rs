//! The outbox and relay: with Kafka unreachable, issuance goes on, the events
//! wait in the outbox, and a relay delivers every one of them later.

use std::time::Duration;

use coupon_api::config::Settings;
use coupon_testkit::wait_until;
use redis::streams::StreamRangeReply;
use redis::AsyncCommands;
use reqwest::StatusCode;

use crate::harness::{consume_events, outbox_len, redis, Isolation, TestApp};

/// This isolation's settings with a broker address where nothing listens:
/// Kafka is down for the instance.
pub fn kafka_down(iso: &Isolation) -> Settings {
    let mut settings = iso.settings();
    settings.kafka.client.brokers = "127.0.0.1:9".into();
    settings.kafka.message_timeout = Duration::from_secs(1);
    settings
}

#[tokio::test(flavor = "multi_thread")]
async fn events_issued_while_kafka_is_unreachable_are_relayed_later() {
    let iso = Isolation::new().await;

    let app = TestApp::spawn(kafka_down(&iso)).await;
    let coupon = app.open_coupon(100).await;
    for customer in 1..=30 {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED, "issuance does not need Kafka");
    }
    let (_, ready) = app.manage("/health/ready").await;
    assert_eq!(ready["kafka"], "DEGRADED");
    assert_eq!(ready["status"], "UP", "a Kafka outage does not make the API unready");
    app.stop().await;
    assert_eq!(outbox_len(&iso.key_prefix, coupon).await, 30, "every event is kept");

    // Kafka is back (a fresh instance, as after a crash): the relay drains the outbox.
    let app = TestApp::spawn(iso.settings()).await;
    let events = consume_events(&iso.topic, 30).await;
    let customers: Vec<i64> = events.iter().map(|(_, _, customer)| *customer).collect();
    assert_eq!(customers, (1..=30).collect::<Vec<_>>());
    wait_until("the outbox to drain", Duration::from_secs(30), || async {
        (outbox_len(&iso.key_prefix, coupon).await == 0).then_some(())
    })
    .await;
    app.stop().await;
}

/// An entry that is not an issuance (here written by hand) is moved to the
/// coupon's `outbox:malformed` stream and counted, and the entries behind it
/// are relayed: with one entry per page, the page it made empty is not taken
/// for the end of the outbox.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_outbox_entry_is_moved_aside_and_the_entries_behind_it_are_relayed() {
    let iso = Isolation::new().await;
    let mut kafka_down = kafka_down(&iso);
    kafka_down.relay.batch_size = 1;
    let app = TestApp::spawn(kafka_down).await;
    let coupon = app.open_coupon(100).await;
    let outbox = format!("{}coupon:{{{coupon}}}:outbox", iso.key_prefix);
    // Customer 1's entry comes first and cannot be delivered while Kafka is
    // down, so this instance's relay never reaches the malformed one.
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);
    let malformed: String =
        redis().await.xadd(&outbox, "*", &[("customer", "not-a-number"), ("issued_at", "1")]).await.unwrap();
    for customer in 2..=3 {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED);
    }
    app.stop().await;
    assert_eq!(outbox_len(&iso.key_prefix, coupon).await, 4);

    let mut kafka_up = iso.settings();
    kafka_up.relay.batch_size = 1;
    let app = TestApp::spawn(kafka_up).await;
    let events = consume_events(&iso.topic, 3).await;
    let customers: Vec<i64> = events.iter().map(|(_, _, customer)| *customer).collect();
    assert_eq!(customers, vec![1, 2, 3]);
    wait_until("the outbox to drain", Duration::from_secs(30), || async {
        (outbox_len(&iso.key_prefix, coupon).await == 0).then_some(())
    })
    .await;
    let moved: StreamRangeReply = redis().await.xrange_all(format!("{outbox}:malformed")).await.unwrap();
    assert_eq!(moved.ids.len(), 1);
    assert_eq!(moved.ids[0].get::<String>("entry"), Some(malformed));
    let fields: String = moved.ids[0].get("fields").unwrap();
    assert!(fields.contains("not-a-number"), "{fields}");
    assert_eq!(app.metric("coupon_outbox_malformed_total").await, 1.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_events_leave_the_outbox() {
    let iso = Isolation::new().await;
    let app = TestApp::spawn(iso.settings()).await;
    let coupon = app.open_coupon(10).await;
    for customer in 1..=5 {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED);
    }
    wait_until("acknowledged entries to be removed", Duration::from_secs(30), || async {
        (outbox_len(&iso.key_prefix, coupon).await == 0).then_some(())
    })
    .await;
    assert_eq!(consume_events(&iso.topic, 5).await.len(), 5);
    app.stop().await;
}
