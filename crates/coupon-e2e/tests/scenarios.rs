//! The three promises — never oversell, never lose an issued coupon, never
//! grant one twice — under a spike, with crashes and outages injected while
//! the spike runs. Every scenario ends with the same checks (crate::invariants)
//! and a reconciliation run.
//!
//! Scenarios stop and start shared stack components, so this binary runs with
//! `--test-threads=1` (see the Makefile). `E2E_CUSTOMERS` sets the spike size
//! (default 5,000 distinct customers per coupon; `make e2e` uses 20,000).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use coupon_e2e::stack::{self, Component};
use coupon_e2e::world::{reached, World};

/// Stock of the spike scenarios: far below the number of customers.
const SPIKE_STOCK: u64 = 1_000;

/// How long an injected outage lasts while the spike keeps running.
const OUTAGE: Duration = Duration::from_secs(5);

fn customers() -> u64 {
    std::env::var("E2E_CUSTOMERS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000)
}

/// Stock of the fault scenarios: large enough that coupons are still being
/// issued when the fault strikes, so it hits events in flight, not an idle
/// system that sold out in the first second.
fn fault_stock() -> u64 {
    customers() * 3 / 4
}

/// Requests in one coupon's spike: every customer once, a tenth of them twice.
fn requests() -> u64 {
    customers() + customers() / 10
}

#[tokio::test(flavor = "multi_thread")]
async fn s1_spike_on_one_coupon() {
    let world = World::new("1 spike").await;
    let _api = world.start_api().await;
    let _writer = world.start_writer(1).await;
    let coupons = world.create_coupons(1, SPIKE_STOCK).await;
    let spike = world.spike(&coupons, customers(), Arc::default()).await;
    let verdicts = world.verify(&coupons, SPIKE_STOCK as i64, &spike).await;
    assert_eq!(verdicts[0].issued as u64, SPIKE_STOCK, "a spike far above stock sells out exactly");
}

#[tokio::test(flavor = "multi_thread")]
async fn s2_several_coupons_at_once() {
    let world = World::new("2 several coupons").await;
    let _api = world.start_api().await;
    let _writer = world.start_writer(1).await;
    let coupons = world.create_coupons(3, SPIKE_STOCK).await;
    let spike = world.spike(&coupons, customers() / 3, Arc::default()).await;
    world.verify(&coupons, SPIKE_STOCK as i64, &spike).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_writer_killed_repeatedly() {
    let world = World::new("3 writer SIGKILL x3").await;
    let _api = world.start_api().await;
    let coupons = world.create_coupons(1, fault_stock()).await;
    let progress = Arc::new(AtomicU64::new(0));
    let faults = async {
        let mut writer = world.start_writer(1).await;
        for round in 1..=3u64 {
            reached(&progress, requests() * round / 5).await;
            writer = world
                .fault(async {
                    writer.kill();
                    world.start_writer(round as usize + 1).await
                })
                .await;
        }
        writer
    };
    let (spike, _writer) = tokio::join!(world.spike(&coupons, customers(), progress.clone()), faults);
    world.verify(&coupons, fault_stock() as i64, &spike).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s4_three_writers_one_killed_mid_stream() {
    let mut world = World::new("4 3 writers, 1 killed (rebalance)").await;
    // Spread one coupon over every partition so every writer has work.
    world.overrides.insert("COUPON__KAFKA__PARTITION_KEY".into(), "customer".into());
    let _api = world.start_api().await;
    let _w1 = world.start_writer(1).await;
    let _w2 = world.start_writer(2).await;
    let w3 = world.start_writer(3).await;
    let coupons = world.create_coupons(1, fault_stock()).await;
    let progress = Arc::new(AtomicU64::new(0));
    let faults = async {
        reached(&progress, requests() / 3).await;
        world.fault(async { w3.kill() }).await;
    };
    let (spike, ()) = tokio::join!(world.spike(&coupons, customers(), progress.clone()), faults);
    world.verify(&coupons, fault_stock() as i64, &spike).await;
}

/// Stops `component` once a tenth of the spike is answered, keeps it down for
/// `OUTAGE` while the spike goes on, starts it again, and checks the promises.
async fn spike_through_outage(name: &str, component: Component) {
    let world = World::new(name).await;
    let _api = world.start_api().await;
    let _writer = world.start_writer(1).await;
    let coupons = world.create_coupons(1, fault_stock()).await;
    let progress = Arc::new(AtomicU64::new(0));
    let faults = async {
        reached(&progress, requests() / 10).await;
        world
            .fault(async {
                stack::stop(component).await.unwrap_or_else(|err| panic!("stopping {component:?}: {err:#}"));
                // The outage itself: issuance goes on meanwhile.
                tokio::time::sleep(OUTAGE).await;
                stack::start(component).await.unwrap_or_else(|err| panic!("starting {component:?}: {err:#}"));
            })
            .await;
    };
    let (spike, ()) = tokio::join!(world.spike(&coupons, customers(), progress.clone()), faults);
    world.verify(&coupons, fault_stock() as i64, &spike).await;
}

/// Issued events wait in the Redis outbox; the relay delivers them.
#[tokio::test(flavor = "multi_thread")]
async fn s5_kafka_down_during_the_spike() {
    spike_through_outage("5 Kafka stopped", Component::Kafka).await;
}

/// The writer retries its batch until the database is back.
#[tokio::test(flavor = "multi_thread")]
async fn s6_postgres_down_during_the_spike() {
    spike_through_outage("6 PostgreSQL stopped", Component::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s7_api_killed_mid_spike() {
    let world = World::new("7 API SIGKILL").await;
    let api = world.start_api().await;
    let _writer = world.start_writer(1).await;
    let coupons = world.create_coupons(1, fault_stock()).await;
    let progress = Arc::new(AtomicU64::new(0));
    let faults = async {
        reached(&progress, requests() / 5).await;
        world
            .fault(async {
                api.kill();
                world.start_api().await
            })
            .await
    };
    let (spike, _api) = tokio::join!(world.spike(&coupons, customers(), progress.clone()), faults);
    let verdicts = world.verify(&coupons, fault_stock() as i64, &spike).await;
    eprintln!("answers lost with the killed API: {}", verdicts[0].unanswered);
}
