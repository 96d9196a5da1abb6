//! `rediss://` in sentinel and cluster mode, with passwords: the modes the
//! secure stack (one TLS server) does not cover. Each test starts its own
//! TLS-only `redis-server`s (and a `redis-sentinel`) on free ports with the
//! secure stack's certificates (`make up-secure` makes them), and removes
//! them again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coupon_infra::redis::SharedRedis;
use coupon_infra::settings::{RedisMode, RedisSettings};
use coupon_testkit::{free_port, poll_until, unique_name};
use secrecy::SecretString;

const DATA_PASSWORD: &str = "data-nodes-password";
const SENTINEL_PASSWORD: &str = "sentinels-password";

/// The secure stack's CA and certificates.
fn tls_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.stack/secure/tls");
    assert!(dir.join("ca.crt").exists(), "no certificates in {}: run make up-secure", dir.display());
    dir.canonicalize().expect("the certificates' folder")
}

/// Processes of one test, killed, and their folder removed, on drop.
struct Servers {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Servers {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("redis-tls"));
        std::fs::create_dir_all(&dir).expect("a folder of the test's own");
        Self { dir, children: Vec::new() }
    }

    /// The TLS arguments every server and sentinel here gets: TLS only, the
    /// stack's server certificate, clients' certificates optional.
    fn tls_args(port: u16) -> Vec<String> {
        let tls = tls_dir();
        let file = |name: &str| tls.join(name).to_string_lossy().into_owned();
        [
            ("--port", "0".to_string()),
            ("--tls-port", port.to_string()),
            ("--tls-cert-file", file("server.crt")),
            ("--tls-key-file", file("server.key")),
            ("--tls-ca-cert-file", file("ca.crt")),
            ("--tls-auth-clients", "optional".to_string()),
            ("--tls-replication", "yes".to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
    }

    fn start(&mut self, program: &str, args: &[String]) {
        let child = Command::new(program)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {program}: {err}"));
        self.children.push(child);
    }

    fn server(&mut self, port: u16, extra: &[&str]) {
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("a server's folder");
        let mut args = vec!["--bind".into(), "127.0.0.1".into(), "--dir".into(), dir.to_string_lossy().into_owned()];
        args.extend(Self::tls_args(port));
        args.extend(["--save", "", "--appendonly", "no"].map(String::from));
        args.extend(["--requirepass", DATA_PASSWORD, "--masterauth", DATA_PASSWORD].map(String::from));
        args.extend(extra.iter().map(|arg| arg.to_string()));
        self.start("redis-server", &args);
    }

    fn sentinel(&mut self, port: u16, primary: u16) {
        let conf = self.dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\n\
                 dir \"{dir}\"\n\
                 requirepass {SENTINEL_PASSWORD}\n\
                 sentinel monitor tls 127.0.0.1 {primary} 1\n\
                 sentinel auth-pass tls {DATA_PASSWORD}\n",
                dir = self.dir.display(),
            ),
        )
        .expect("writing the sentinel's configuration");
        let mut args = vec![conf.to_string_lossy().into_owned()];
        args.extend(Self::tls_args(port));
        self.start("redis-sentinel", &args);
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn settings(mode: RedisMode, url: String, tls: &Path) -> RedisSettings {
    RedisSettings {
        mode,
        url,
        master_name: "tls".into(),
        password: Some(SecretString::from(DATA_PASSWORD)),
        tls_ca_file: Some(tls.join("ca.crt")),
        tls_cert_file: Some(tls.join("client.crt")),
        tls_key_file: Some(tls.join("client.key")),
        ..Default::default()
    }
}

/// A write and a read through `redis`, once it answers.
async fn round_trip(redis: &SharedRedis, key: &str) -> anyhow::Result<String> {
    poll_until("Redis to answer over TLS", Duration::from_secs(30), || async {
        let _: () = redis.query(redis::cmd("SET").arg(key).arg("over tls")).await?;
        Ok(Some(redis.query::<String>(redis::cmd("GET").arg(key)).await?))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_mode_reaches_the_primary_over_tls_with_both_passwords() {
    let tls = tls_dir();
    let mut servers = Servers::new();
    let (primary, sentinel) = (free_port(), free_port());
    servers.server(primary, &[]);
    servers.sentinel(sentinel, primary);

    let mut redis = settings(RedisMode::Sentinel, format!("rediss://127.0.0.1:{sentinel}"), &tls);
    redis.sentinel_password = Some(SecretString::from(SENTINEL_PASSWORD));
    let shared = SharedRedis::new(&redis).expect("a sentinel client");
    assert_eq!(round_trip(&shared, "tls-sentinel").await.expect("a round trip"), "over tls");

    // Without the sentinels' password they refuse to name the primary.
    redis.sentinel_password = None;
    let refused = SharedRedis::new(&redis).expect("a sentinel client");
    let err = refused.query::<String>(&redis::cmd("PING")).await.expect_err("the sentinels want their password");
    assert!(err.to_string().to_lowercase().contains("auth"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_mode_follows_the_slots_over_tls_with_a_password() {
    let tls = tls_dir();
    let mut servers = Servers::new();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    for port in &ports {
        // The bus port is given: the default (port + 10000) may not exist.
        let bus = free_port().to_string();
        let cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--tls-cluster", "yes"];
        servers.server(*port, &[&cluster[..], &["--cluster-port", &bus]].concat());
    }
    let file = |name: &str| tls.join(name).to_string_lossy().into_owned();
    let nodes: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    let created = poll_until("the TLS cluster to form", Duration::from_secs(30), || async {
        let output = Command::new("redis-cli")
            .args(["--tls", "--cacert", &file("ca.crt"), "--cert", &file("client.crt"), "--key", &file("client.key")])
            .args(["-a", DATA_PASSWORD, "--no-auth-warning", "--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()?;
        Ok(output.status.success().then_some(()))
    })
    .await;
    created.expect("a three-master cluster");

    let urls: Vec<String> = ports.iter().map(|port| format!("rediss://127.0.0.1:{port}")).collect();
    let shared = SharedRedis::new(&settings(RedisMode::Cluster, urls.join(","), &tls)).expect("a cluster client");
    // Keys in slots of different masters.
    for key in ["tls-cluster-a", "tls-cluster-b", "tls-cluster-c"] {
        assert_eq!(round_trip(&shared, key).await.expect("a round trip"), "over tls");
    }
}
