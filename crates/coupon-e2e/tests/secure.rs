//! The services against the secure stack (`make up-secure`): TLS with
//! certificates toward Redis, PostgreSQL and Kafka, ACL users, a SCRAM
//! password at PostgreSQL and SASL/SCRAM at Kafka, with the variables
//! `.stack/secure/env` exports. And the misconfigurations a user meets there,
//! each stopping the service within 30 s with the reason.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coupon_e2e::process::Service;
use coupon_e2e::secure;
use coupon_e2e::world::World;

/// The secure stack's ports: Redis, PostgreSQL, Kafka.
const SECURE_PORTS: [u16; 3] = [6380, 5433, 9093];

/// What a misconfigured service is given to say so and exit.
const MISCONFIGURED_EXIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_spike_is_written_redeemed_and_reconciled_over_tls_and_passwords_only() {
    let world = World::secure("secure stack").await.expect("the secure stack (make up-secure)");
    let api = world.start_api().await;
    let writer = world.start_writer(1).await;
    let coupons = world.create_coupons(1, 200).await;
    let spike = world.spike(&coupons, 1_000, Arc::default()).await;
    world.verify(&coupons, 200, &spike).await;

    let holder = spike.issued().map(|answer| answer.attempt.customer).next().expect("a holder");
    let (status, body) = world.api.redeem(coupons[0], holder, "secure-order-1", 10_000).await.expect("redeeming");
    assert_eq!(status, 200, "{body}");
    let used = world.used_events(1, Duration::from_secs(30)).await.expect("the use event over SASL_SSL");
    assert_eq!((used.len(), used[0].customer_id.get(), used[0].coupon_id.get()), (1, holder, coupons[0]));
    assert_eq!(used[0].order_id.as_deref(), Some("secure-order-1"));

    for (name, service) in [("coupon-api", &api), ("coupon-writer", &writer)] {
        let peers = remote_ports(service);
        assert!(!peers.is_empty(), "{name} holds connections to the stores");
        assert!(peers.iter().all(|port| SECURE_PORTS.contains(port)), "{name} connected to {peers:?}");
    }
}

/// The remote ports of a process's established connections that it opened
/// (its own listening ports excluded: those are its clients').
fn remote_ports(service: &Service) -> BTreeSet<u16> {
    let output = std::process::Command::new("ss").args(["-tnpH", "state", "established"]).output().expect("ss");
    let pid = format!("pid={},", service.pid());
    let listening = listening_ports(service);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(&pid))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |field: &str| field.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok());
            let (local, peer) = (port(fields.get(2)?)?, port(fields.get(3)?)?);
            (!listening.contains(&local)).then_some(peer)
        })
        .collect()
}

fn listening_ports(service: &Service) -> BTreeSet<u16> {
    let output = std::process::Command::new("ss").args(["-tlnpH"]).output().expect("ss");
    let pid = format!("pid={},", service.pid());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(&pid))
        .filter_map(|line| line.split_whitespace().nth(3)?.rsplit_once(':')?.1.parse().ok())
        .collect()
}

/// Starts `binary` with the world's variables changed by `extra`, and
/// returns its exit status and output once it has exited (at most 30 s).
async fn exits(world: &World, binary: &str, extra: &[(&str, &str)]) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut service = world.spawn(binary, extra);
    let status = service.exited(MISCONFIGURED_EXIT).await.unwrap_or_else(|err| {
        panic!(
            "{binary} with {} still runs after {MISCONFIGURED_EXIT:?}: {err:#}\n{}",
            names(extra),
            service.output().unwrap_or_default()
        )
    });
    (status.success(), service.output().unwrap_or_default(), started.elapsed())
}

/// The variables changed, without their values (some are secrets).
fn names(extra: &[(&str, &str)]) -> String {
    extra.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

/// A file holding `text`, removed when the test's folder is.
fn file_with(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a test file");
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_a_wrong_password_or_an_unknown_key_stops_each_service_with_the_reason() {
    let world = World::secure("secure misconfigured").await.expect("the secure stack (make up-secure)");
    let tls = secure::dir().join("tls");
    let other_ca = tls.join("other-ca.crt").to_string_lossy().into_owned();
    let scratch = tempdir();
    let wrong_password = file_with(&scratch, "wrong-password", "not-the-password\n");
    let database = world.db.url().to_string();
    let database_other_ca = database.replace(&tls.join("ca.crt").to_string_lossy().into_owned(), &other_ca);
    let database_wrong_password = {
        let mut url = url_of(&database);
        url.set_password(Some("not-the-password")).expect("a password");
        url.to_string()
    };

    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("coupon-api", vec![("COUPON__REDIS__PASWORD", "x")], "unknown variable COUPON__REDIS__PASWORD"),
        ("coupon-writer", vec![("COUPON__KAFKA__SASL_PASWORD", "x")], "unknown variable COUPON__KAFKA__SASL_PASWORD"),
        (
            "coupon-api",
            vec![("COUPON__REDIS__TLS_CA_FILE", &other_ca)],
            "cannot use Redis: TLS: invalid peer certificate: UnknownIssuer",
        ),
        (
            "coupon-api",
            vec![("COUPON__REDIS__PASSWORD_FILE", &wrong_password)],
            "cannot use Redis: authentication refused",
        ),
        ("coupon-api", vec![("COUPON__KAFKA__SSL_CA_LOCATION", &other_ca)], "certificate verify failed"),
        (
            "coupon-writer",
            vec![("COUPON__DATABASE__URL", &database_other_ca)],
            "cannot use PostgreSQL: TLS: error performing TLS handshake: invalid peer certificate: UnknownIssuer",
        ),
        ("coupon-writer", vec![("COUPON__DATABASE__URL", &database_wrong_password)], "password authentication failed"),
        (
            "coupon-writer",
            vec![("COUPON__KAFKA__SASL_PASSWORD_FILE", &wrong_password)],
            "cannot use Kafka: sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error",
        ),
        (
            "coupon-reconcile",
            vec![("COUPON__REDIS__TLS_CA_FILE", &other_ca)],
            "coupon-reconcile: cannot use Redis: TLS",
        ),
        ("coupon-reconcile", vec![("COUPON__DATABSE__URL", "x")], "unknown variable COUPON__DATABSE__URL"),
    ];
    let runs = cases.iter().map(|(binary, extra, _)| exits(&world, binary, extra));
    let outcomes = futures::future::join_all(runs).await;
    for ((binary, extra, expected), (success, output, took)) in cases.iter().zip(outcomes) {
        let changed = names(extra);
        assert!(!success, "{binary} with {changed} exited 0:\n{output}");
        assert!(output.contains(expected), "{binary} with {changed} should say {expected:?}:\n{output}");
        eprintln!("{binary} with {changed}: stopped after {took:.1?}");
    }
    std::fs::remove_dir_all(&scratch).expect("removing the test's folder");
}

fn url_of(database: &str) -> url::Url {
    url::Url::parse(database).expect("the test database's URL parses")
}

fn tempdir() -> std::path::PathBuf {
    let dir = coupon_e2e::process::log_dir().join(coupon_testkit::unique_name("secure"));
    std::fs::create_dir_all(&dir).expect("a folder of the test's own");
    dir
}
