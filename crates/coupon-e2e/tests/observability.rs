//! The dashboard and the alert rules watch metrics the services really
//! export: every `coupon_*` name that deploy/observability uses is scraped
//! from a running coupon-api and coupon-writer after some traffic (or, for
//! the reconcile job, found in what it pushes). A renamed metric would leave
//! a panel empty or an alert silent while every linter passes. A real
//! Prometheus with the rules loaded then shows an alert raised by a fault and
//! cleared after it, and none by a normal promotion. And a service whose
//! essential task ends exits non-zero, for its orchestrator to restart it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coupon_domain::keys::CouponKeys;
use coupon_domain::CouponId;
use coupon_e2e::prometheus::{Prometheus, Target};
use coupon_e2e::stack::{self, Component};
use coupon_e2e::world::{reached, World};
use coupon_infra::redis::SharedRedis;
use coupon_loadgen::spike;

/// Metric names in a rules or dashboard file: `coupon_` and what follows.
fn names_used(file: &str) -> BTreeSet<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/observability").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("coupon_") {
        let preceded_by_word = rest[..at].chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        if !preceded_by_word {
            names.insert(name.clone());
        }
        rest = &rest[at + name.len()..];
    }
    names
}

/// The series names of a text-format scrape (labels dropped).
fn names_exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let world = World::new("observability").await;
    let (_writer, writer_metrics) = world.start_writer_watched(1).await;
    let _api = world.start_api().await;
    let coupons = world.create_coupons(1, 50).await;
    world.spike(&coupons, 100, Arc::default()).await;

    let used: BTreeSet<String> =
        names_used("coupon.rules.yml").into_iter().chain(names_used("coupon-dashboard.json")).collect();
    assert!(used.len() > 10, "found only {used:?}");
    let reconcile = names_exported(&coupon_reconcile::exposition(&coupon_reconcile::Report { coupons: Vec::new() }));
    let http = reqwest::Client::new();
    let api_metrics = format!("{}/metrics", world.management_urls());
    // The writer's lag appears with its first statistics report (every 5 s).
    coupon_testkit::poll_until("every metric the dashboard and the alerts use", Duration::from_secs(60), || async {
        let mut exported = reconcile.clone();
        for url in [&api_metrics, &writer_metrics] {
            let scrape = http.get(url).send().await?.error_for_status()?.text().await?;
            exported.extend(names_exported(&scrape));
        }
        let missing: Vec<&String> = used.iter().filter(|name| !exported.contains(*name)).collect();
        anyhow::ensure!(missing.is_empty(), "used but not exported: {missing:?}");
        Ok(Some(()))
    })
    .await
    .unwrap_or_else(|err| panic!("{err:#}"));
}

/// While a promotion runs, the last moments of issuance are always in flight
/// (outbox, Kafka, the writer's batch): coupon-reconcile must not call that
/// drift, or the periodic job pages during every promotion. Rows that stay
/// missing for the settle time are drift.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_passes_during_a_promotion_and_fails_once_rows_stay_missing() {
    const SETTLE: Duration = Duration::from_secs(3);
    let world = World::new("reconcile during issuance").await;
    let _api = world.start_api().await;
    let writer = world.start_writer(1).await;
    let coupons = world.create_coupons(1, 1_000_000).await;
    let progress = Arc::new(AtomicU64::new(0));
    let checks = async {
        reached(&progress, 2_000).await;
        let during = world.reconcile_settling(&coupons, SETTLE).await.expect("running coupon-reconcile");
        writer.kill();
        let answered = progress.load(Ordering::Relaxed);
        reached(&progress, answered + 2_000).await;
        let stalled = world.reconcile_settling(&coupons, SETTLE).await.expect("running coupon-reconcile");
        (during, stalled)
    };
    // Enough customers that issuance outlasts both checks; the rest of the
    // spike is not needed once they are done.
    let ((clean, during), (stalled_clean, stalled)) = tokio::select! {
        checks = checks => checks,
        _ = world.spike(&coupons, 40_000, progress.clone()) => panic!("the spike ended before both checks"),
    };
    assert!(during.contains("reading them again"), "the first read saw issuances in flight:\n{during}");
    assert!(clean, "in-flight issuances are not drift:\n{during}");
    assert!(!stalled_clean, "rows missing for the settle time are drift:\n{stalled}");
    assert!(stalled.contains("issued but not in PostgreSQL"), "{stalled}");
}

/// A real Prometheus with deploy/observability's rules, scraping coupon-api
/// and coupon-writer every second. A promotion fires no alert. Kafka stopped
/// while customers keep getting coupons raises `CouponOutboxGrowing`: pending
/// here, and firing after its `for: 5m` when `E2E_ALERTS_FIRE` is set (`make
/// e2e` sets it). With Kafka back the relay drains the outbox and the alert
/// clears.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_raises_the_outbox_alert_while_kafka_is_down_and_clears_it_after() {
    const ALERT: &str = "CouponOutboxGrowing";
    const STOCK: u64 = 1_000_000;
    let world = World::new("alerts").await;
    let (_writer, writer_metrics) = world.start_writer_watched(1).await;
    let _api = world.start_api().await;
    let api_metrics = format!("{}/metrics", world.management_urls());
    let targets = [
        Target { job: "coupon-api", metrics_url: &api_metrics },
        Target { job: "coupon-writer", metrics_url: &writer_metrics },
    ];
    let prometheus = Prometheus::start("alerts", &targets).await.expect("a Prometheus scraping both services");
    let coupons = world.create_coupons(1, STOCK).await;

    world.spike(&coupons, 2_000, Arc::default()).await;
    world.drain(coupons[0], STOCK as i64, Duration::from_secs(60)).await.expect("the promotion written");
    prometheus.evaluate_now().await.expect("rules evaluated after the promotion");
    let alerts = prometheus.alerts().await.expect("Prometheus's alerts");
    let firing: Vec<_> = alerts.iter().filter(|alert| alert.state == "firing").collect();
    assert!(firing.is_empty(), "a normal promotion fires no alert: {firing:?}");
    assert!(!alerts.iter().any(|alert| alert.name == ALERT), "{ALERT} before the outage: {alerts:?}");

    let (state, timeout) = match std::env::var_os("E2E_ALERTS_FIRE") {
        Some(_) => ("firing", Duration::from_secs(600)),
        None => ("pending", Duration::from_secs(120)),
    };
    let kafka = stack::stop(Component::Kafka).await.expect("stopping Kafka");
    // New customers every second: the outbox grows as long as Kafka is away.
    let issuing = async {
        for wave in 0_i64.. {
            spike::run(&world.api, spike::plan(&coupons, 50, 1_000_000 + wave * 50, 0.0), 8, Arc::default()).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let raised = tokio::select! {
        raised = prometheus.wait_for(ALERT, state, timeout) => raised,
        () = issuing => unreachable!("issues until the alert is raised"),
    };
    let raised = raised.unwrap_or_else(|err| panic!("{ALERT} not {state} while Kafka is down: {err:#}"));
    kafka.start().await.expect("starting Kafka");
    let cleared = prometheus.wait_resolved(ALERT, Duration::from_secs(180)).await;
    let cleared = cleared.unwrap_or_else(|err| panic!("{ALERT} still raised with Kafka back: {err:#}"));
    world.drain(coupons[0], STOCK as i64, Duration::from_secs(120)).await.expect("everything issued written");
    eprintln!("{ALERT} {state} {raised:?} after Kafka stopped; cleared {cleared:?} after it started again");
}

/// Issuances whose events never reached Kafka (here: the API could not reach
/// it, and its outbox was lost with it) are drift; `coupon-reconcile --repair`
/// publishes them again, the writer applies them, and the next run is clean.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_repair_republishes_issuances_missing_from_postgres() {
    const CUSTOMERS: u64 = 40;
    let mut world = World::new("reconcile repair").await;
    // A broker address where nothing listens, for coupon-api only.
    world.overrides.insert("COUPON__KAFKA__BROKERS".into(), "127.0.0.1:9".into());
    let api = world.start_api().await;
    world.overrides.remove("COUPON__KAFKA__BROKERS");
    let coupons = world.create_coupons(1, 100).await;
    let spike = world.spike(&coupons, CUSTOMERS, Arc::default()).await;
    assert_eq!(spike.issued().count() as u64, CUSTOMERS);
    api.kill();
    let outbox = CouponKeys::new(&world.key_prefix, CouponId::new(coupons[0]).expect("an id")).outbox;
    let redis = SharedRedis::new(&world.redis.settings()).expect("a Redis client");
    let removed: i64 = redis.query(redis::cmd("DEL").arg(&outbox)).await.expect("deleting the outbox");
    assert_eq!(removed, 1, "the events waited in the outbox");
    let _writer = world.start_writer(1).await;

    let (clean, printed) = world.reconcile_repair(&coupons).await.expect("running coupon-reconcile --repair");
    assert!(!clean, "issuances missing from PostgreSQL are drift:\n{printed}");
    assert!(printed.contains(&format!("{CUSTOMERS} issued but not in PostgreSQL")), "{printed}");
    coupon_testkit::poll_until(
        "a clean reconcile once the writer applied the republished events",
        Duration::from_secs(60),
        || async { Ok(world.reconcile(&coupons).await?.then_some(())) },
    )
    .await
    .unwrap_or_else(|err| panic!("{err:#}"));
}

/// A service whose essential task ends stops and exits non-zero, naming the
/// task, rather than living on without it (the orchestrator restarts it). No
/// task ends by itself: each retries every fault until the shutdown signal.
/// So a fail point panics it (the `failpoints` build of the tests).
#[tokio::test(flavor = "multi_thread")]
async fn a_service_whose_essential_task_ends_exits_non_zero() {
    let world = World::new("supervision").await;
    for (binary, fail_point, task) in
        [("coupon-api", "relay-pass", "the outbox relay"), ("coupon-writer", "consumer-poll", "the consumer")]
    {
        let mut service = world.spawn(binary, &[("FAILPOINTS", &format!("{fail_point}=panic"))]);
        let status = service.exited(Duration::from_secs(60)).await.unwrap_or_else(|err| panic!("{err:#}"));
        let output = service.output().expect("the service's log");
        assert!(!status.success(), "{binary} exited with {status} after {task} ended:\n{output}");
        assert!(output.contains("an essential task ended; stopping"), "{binary} did not report the task:\n{output}");
        assert!(output.contains(&format!("{task} ended unexpectedly")), "{binary} did not name {task}:\n{output}");
        eprintln!("{binary}: {task} panicked at its fail point; exited with {status}");
    }
}
