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
    // Sharded, so that refills, the sold-out memory and the reconcile's
    // reading of every shard run under the services' narrowest ACL users too.
    let coupons = vec![world.create_sharded_coupon(200, 3).await];
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
async fn exits(world: &World, binary: &str, unset: &[&str], extra: &[(&str, &str)]) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut service = world.spawn_without(binary, unset, extra);
    let status = service.exited(MISCONFIGURED_EXIT).await.unwrap_or_else(|err| {
        panic!(
            "{binary} with {} still runs after {MISCONFIGURED_EXIT:?}: {err:#}\n{}",
            extra.iter().map(|(key, _)| *key).collect::<Vec<_>>().join(", "),
            service.output().unwrap_or_default()
        )
    });
    (status.success(), service.output().unwrap_or_default(), started.elapsed())
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
    let scratch = tempdir();
    let wrong_password = file_with(&scratch, "wrong-password", "not-the-password\n");
    let cases = misconfigurations(&world, &wrong_password);
    let world = &world;
    let runs = cases.iter().map(|case| async move {
        let extra: Vec<(&str, &str)> = case.extra.iter().map(|(key, value)| (*key, value.as_str())).collect();
        exits(world, case.binary, case.unset, &extra).await
    });
    let outcomes = futures::future::join_all(runs).await;
    for (case, (success, output, took)) in cases.iter().zip(outcomes) {
        let (binary, expected) = (case.binary, case.expected);
        let changed = case.extra.iter().map(|(key, _)| *key).collect::<Vec<_>>().join(", ");
        assert!(!success, "{binary} with {changed} exited 0:\n{output}");
        assert!(output.contains(expected), "{binary} with {changed} should say {expected:?}:\n{output}");
        eprintln!("{binary} with {changed}: stopped after {took:.1?}");
    }
    std::fs::remove_dir_all(&scratch).expect("removing the test's folder");
}

/// A service started with the world's variables, less `unset`, plus
/// `extra`, and what it must say as it stops.
struct Case {
    binary: &'static str,
    unset: &'static [&'static str],
    extra: Vec<(&'static str, String)>,
    expected: &'static str,
}

/// A TLS-only server reached in plaintext: no TLS setting at all.
const REDIS_TLS: [&str; 3] =
    ["COUPON__REDIS__TLS_CA_FILE", "COUPON__REDIS__TLS_CERT_FILE", "COUPON__REDIS__TLS_KEY_FILE"];
const KAFKA_TLS: [&str; 3] =
    ["COUPON__KAFKA__SSL_CA_LOCATION", "COUPON__KAFKA__SSL_CERTIFICATE_LOCATION", "COUPON__KAFKA__SSL_KEY_LOCATION"];

/// Each store misconfigured in each way, for the services that use it.
fn misconfigurations(world: &World, wrong_password: &str) -> Vec<Case> {
    let tls = secure::dir().join("tls");
    let other_ca = tls.join("other-ca.crt").to_string_lossy().into_owned();
    let database = world.db.url().to_string();
    let database_with = |change: &dyn Fn(&mut url::Url)| {
        let mut url = url_of(&database);
        change(&mut url);
        url.to_string()
    };
    let ca = tls.join("ca.crt").to_string_lossy().into_owned();
    let case = |binary, key: &'static str, value: &str, expected| Case {
        binary,
        unset: &[],
        extra: vec![(key, value.to_string())],
        expected,
    };
    vec![
        case("coupon-api", "COUPON__REDIS__PASWORD", "x", "unknown variable COUPON__REDIS__PASWORD"),
        case("coupon-writer", "COUPON__KAFKA__SASL_PASWORD", "x", "unknown variable COUPON__KAFKA__SASL_PASWORD"),
        case("coupon-reconcile", "COUPON__DATABSE__URL", "x", "unknown variable COUPON__DATABSE__URL"),
        case(
            "coupon-api",
            "COUPON__REDIS__TLS_CA_FILE",
            &other_ca,
            "cannot use Redis: TLS: invalid peer certificate: UnknownIssuer",
        ),
        case("coupon-api", "COUPON__REDIS__PASSWORD_FILE", wrong_password, "cannot use Redis: authentication refused"),
        case("coupon-api", "COUPON__KAFKA__SSL_CA_LOCATION", &other_ca, "certificate verify failed"),
        case(
            "coupon-writer",
            "COUPON__DATABASE__URL",
            &database.replace(&ca, &other_ca),
            "cannot use PostgreSQL: TLS: error performing TLS handshake: invalid peer certificate: UnknownIssuer",
        ),
        case(
            "coupon-writer",
            "COUPON__DATABASE__URL",
            &database_with(&|url| url.set_password(Some("not-the-password")).expect("a password")),
            "password authentication failed",
        ),
        case(
            "coupon-writer",
            "COUPON__KAFKA__SASL_PASSWORD_FILE",
            wrong_password,
            "cannot use Kafka: sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error",
        ),
        case("coupon-reconcile", "COUPON__REDIS__TLS_CA_FILE", &other_ca, "coupon-reconcile: cannot use Redis: TLS"),
        case(
            "coupon-reconcile",
            "COUPON__REDIS__PASSWORD_FILE",
            wrong_password,
            "coupon-reconcile: cannot use Redis: authentication refused",
        ),
        case("coupon-writer", "COUPON__KAFKA__SSL_CA_LOCATION", &other_ca, "certificate verify failed"),
    ]
    .into_iter()
    .chain(plaintext(database_with(&|url| url.set_query(Some("sslmode=disable")))))
    .collect()
}

/// TLS-only servers reached in plaintext (`database` asks for no TLS).
fn plaintext(database: String) -> [Case; 3] {
    [
        Case {
            binary: "coupon-writer",
            unset: &[],
            extra: vec![("COUPON__DATABASE__URL", database)],
            expected: "no encryption",
        },
        Case {
            binary: "coupon-api",
            unset: &REDIS_TLS,
            extra: vec![("COUPON__REDIS__URL", "redis://127.0.0.1:6380".into())],
            expected: "is it TLS-only (rediss://)?",
        },
        Case {
            binary: "coupon-writer",
            unset: &KAFKA_TLS,
            extra: vec![("COUPON__KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT".into())],
            expected: "is the listener TLS (security protocol SSL or SASL_SSL)?",
        },
    ]
}

fn url_of(database: &str) -> url::Url {
    url::Url::parse(database).expect("the test database's URL parses")
}

fn tempdir() -> std::path::PathBuf {
    let dir = coupon_e2e::process::log_dir().join(coupon_testkit::unique_name("secure"));
    std::fs::create_dir_all(&dir).expect("a folder of the test's own");
    dir
}
