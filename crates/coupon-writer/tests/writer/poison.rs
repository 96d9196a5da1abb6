//! Poison records go to the dead-letter topic with their reason, the good
//! records around them are written, and a fixed record can be replayed. An
//! event beyond its coupon's stock is not poison: it is recorded as sold out.

use coupon_writer::statements::SoldOutReason;

use crate::harness::{event, RunningWriter, World};

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
