//! Redis goes away under a running coupon-api and comes back empty: while it
//! is away issuance answers 503 and grants nothing; once it is back the API
//! reconnects by itself, finds the issue script missing (a new incarnation),
//! fences the coupon, and rebuilds it from PostgreSQL once coupon-writer has
//! applied what was issued before. A Redis of the test's own, so the shared
//! one stays up.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coupon_testkit::{free_port, wait_until};
use reqwest::StatusCode;

use crate::harness::{Isolation, TestApp};

struct PrivateRedis {
    port: u16,
    process: Child,
}

impl PrivateRedis {
    async fn start(port: u16) -> Self {
        let process = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting redis-server (installed by `make setup`)");
        let url = format!("redis://127.0.0.1:{port}");
        wait_until("the private Redis to answer", Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let mut conn = redis::Client::open(url).ok()?.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
            }
        })
        .await;
        Self { port, process }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn issuance_answers_503_while_redis_is_away_and_recovers_by_itself() {
    let iso = Isolation::new().await;
    let redis = PrivateRedis::start(free_port()).await;
    let port = redis.port;
    let mut settings = iso.settings();
    settings.redis.url = redis.url();
    settings.relay.sync_interval_ms = 200;
    let app = TestApp::spawn(settings).await;
    let writer = iso.start_writer().await;
    let coupon = app.open_coupon(100).await;
    assert_eq!(app.issue(coupon, 1).await.0, StatusCode::CREATED);

    redis.stop();
    for customer in [2, 3] {
        let (status, body) = app.issue(coupon, customer).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE")));
    }

    let redis = PrivateRedis::start(port).await;
    let (status, _) = app.issue(coupon, 4).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "nothing is issued from a Redis that lost its data");
    let mut customer = 10;
    wait_until("issuance to work again", Duration::from_secs(30), || {
        customer += 1;
        let app = &app;
        async move { (app.issue(coupon, customer).await.0 == StatusCode::CREATED).then_some(()) }
    })
    .await;
    assert_eq!(app.issue(coupon, 1).await.1["code"], "ALREADY_ISSUED", "the holder comes back from PostgreSQL");
    writer.stop().await;
    app.stop().await;
    redis.stop();
}
