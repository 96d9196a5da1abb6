//! The outbox and relay: with Kafka unreachable, issuance goes on, the events
//! wait in the outbox, and a relay delivers every one of them later.

use std::time::Duration;

use coupon_testkit::wait_until;
use reqwest::StatusCode;

use crate::harness::{consume_events, outbox_len, Isolation, TestApp};

#[tokio::test(flavor = "multi_thread")]
async fn events_issued_while_kafka_is_unreachable_are_relayed_later() {
    let iso = Isolation::new().await;

    // A broker address where nothing listens: Kafka is down for this instance.
    let mut kafka_down = iso.settings();
    kafka_down.kafka.client.brokers = "127.0.0.1:9".into();
    kafka_down.kafka.message_timeout_ms = 1_000;
    let app = TestApp::spawn(kafka_down).await;
    let coupon = app.open_coupon(100).await;
    for customer in 1..=30 {
        assert_eq!(app.issue(coupon, customer).await.0, StatusCode::CREATED, "issuance does not need Kafka");
    }
    let (_, ready) = app.get("/health/ready").await;
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
