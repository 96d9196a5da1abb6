//! Poison records go to the dead-letter topic with their reason, the good
//! records around them are written, and a fixed record can be replayed. An
//! event beyond its coupon's stock is not poison: it is recorded as sold out.

use std::time::Duration;

use coupon_testkit::{wait_until, TestTopic};
use coupon_writer::statements::SoldOutReason;

use crate::harness::{event, RunningWriter, World, TIMEOUT};

#[tokio::test(flavor = "multi_thread")]
async fn poison_is_dead_lettered_the_partition_moves_on_and_replay_applies_the_fixed_record() {
    let world = World::new(1).await;
    let a = world.coupon(10).await;
    let scarce = world.coupon(1).await;
    let missing = coupon_domain::CouponId::new(9_000).unwrap();
    world.send(&[event(a, 1)]).await;
    world.send_raw_from_request("x", b"not json", "request-7").await;
    world.send(&[event(missing, 2), event(a, 3), event(scarce, 4), event(scarce, 5), event(a, 6)]).await;

    let writer = RunningWriter::start(world.settings()).await;
    world.wait_committed(7).await;
    assert_eq!(
        world.rows().await,
        [(a.get(), 1), (a.get(), 3), (a.get(), 6), (scarce.get(), 4)],
        "the good records are written"
    );
    assert_eq!((world.remaining(a).await, world.remaining(scarce).await), (7, 0));
    assert_eq!(world.sold_out().await, [(scarce.get(), 5, SoldOutReason::StockExhausted.as_str().to_string())]);
    assert_eq!(writer.metric("coupon_writer_dead_lettered_total").await, 2.0);
    assert_eq!(writer.metric("coupon_writer_sold_out_at_write_total").await, 1.0);

    let entries = world.dlq_entries().await;
    let reasons: Vec<(&str, &str)> =
        entries.iter().map(|e| (e.header("original-offset").unwrap(), e.header("reason").unwrap())).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "1");
    assert!(reasons[0].1.contains("undecodable"), "{reasons:?}");
    assert_eq!(reasons[1], ("2", "unknown coupon id 9000"));
    assert_eq!(entries[0].header("request-id"), Some("request-7"), "the issuing request is named");
    assert_eq!(entries[1].header("request-id"), None, "none was given");
    for entry in &entries {
        assert_eq!(entry.header("original-topic"), Some(&*world.topic));
        assert_eq!(entry.header("original-partition"), Some("0"));
        assert!(entry.header("attempts").unwrap().parse::<u32>().unwrap() >= 1);
        assert!(entry.header("failed-at").unwrap().ends_with('Z'));
    }
    let listed = world.run_command(&["dlq", "list"]);
    assert!(listed.contains("unknown coupon id 9000") && listed.contains("2 record(s)"), "{listed}");

    // Fix the cause, then replay that record (twice: replay is safe to repeat).
    world.coupon_with_id(missing.get(), 5).await;
    let offset = entries[1].offset.to_string();
    for replays in 1..=2 {
        let replayed = world.run_command(&["dlq", "replay", "--offset", &offset]);
        assert!(replayed.contains("replayed 1 record(s)"), "{replayed}");
        world.wait_committed(7 + replays).await;
    }
    assert!(world.rows().await.contains(&(missing.get(), 2)));
    assert_eq!(world.rows().await.len(), 5);
    assert_eq!(world.remaining(missing).await, 4);
    assert_eq!(world.dlq_entries().await.len(), 2, "nothing new was dead-lettered");
    writer.stop().await;
}

/// A dead letter Kafka does not take (here: its topic does not exist, and the
/// brokers create none on their own) fails the batch: the batch is retried,
/// its good records are written once, and its offsets are held, so the
/// poison record is neither lost nor passed until its dead letter is
/// published.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_that_cannot_be_published_holds_the_offsets_until_it_can() {
    let world = World::new(1).await;
    let a = world.coupon(10).await;
    let dlq_topic = TestTopic::reserve("writer.dlq.late");
    let mut settings = world.settings();
    settings.kafka.dlq_topic = dlq_topic.to_string();
    settings.writer.dlq_timeout = Duration::from_secs(1);
    // Offsets stored after a failed publish would be committed within a tenth
    // of an attempt.
    settings.writer.commit_interval = Duration::from_millis(100);
    let writer = RunningWriter::start(settings).await;
    world.send(&[event(a, 1)]).await;
    world.send_raw_from_request("x", b"not json", "request-9").await;
    let poison_offset = 1;

    world.wait_rows(1).await;
    // Every failed attempt waits writer.dlq_timeout_ms for the publish.
    for retries in 1..=3 {
        writer.wait_metric("coupon_writer_retries_total", f64::from(retries)).await;
        let committed = world.committed().await.expect("the committed offsets are readable");
        assert!(
            committed <= poison_offset,
            "committed {committed}, past the poison record at offset {poison_offset}, after {retries} failed publish(es)"
        );
    }
    assert_eq!(writer.metric("coupon_writer_dead_lettered_total").await, 0.0);
    assert!(world.dlq_entries_in(&dlq_topic).await.is_err(), "the dead-letter topic does not exist yet");

    dlq_topic.create_now(1).await;
    world.wait_committed(poison_offset + 1).await;
    let entries = wait_until("the dead letter in its topic", TIMEOUT, || async {
        world.dlq_entries_in(&dlq_topic).await.ok().filter(|entries| !entries.is_empty())
    })
    .await;
    // At least once: an attempt that timed out just as the topic appeared
    // may have been published too.
    for entry in &entries {
        assert_eq!(entry.header("original-offset"), Some(&*poison_offset.to_string()), "{entry}");
        assert!(entry.header("reason").is_some_and(|reason| reason.contains("undecodable")), "{entry}");
        assert_eq!(entry.header("request-id"), Some("request-9"), "{entry}");
        assert_eq!(entry.payload, b"not json");
    }
    let attempts: u32 = entries.last().unwrap().header("attempts").unwrap().parse().unwrap();
    assert!(attempts > 3, "published at attempt {attempts}, after the failed ones");
    assert_eq!(world.rows().await, [(a.get(), 1)], "the good record is written once");
    assert_eq!(world.remaining(a).await, 9, "and takes one coupon, however often its batch was retried");
    assert_eq!(writer.metric("coupon_writer_dead_lettered_total").await, 1.0);
    writer.stop().await;
    assert_eq!(world.committed().await, Some(poison_offset + 1));
}
