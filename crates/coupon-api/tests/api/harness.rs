//! Starts coupon-api in-process on a free port with settings of its own.

use std::sync::Arc;
use std::time::Duration;

use coupon_api::config::Settings;
use coupon_api::startup::Application;
use coupon_infra::auth::{Signer, SCOPE_REDEEM, SCOPE_RELEASE};
use coupon_infra::settings::RedisSettings;
use coupon_testkit::redis_node::{query, RedisNode};
use coupon_testkit::{kafka_settings, redis_settings, unique_name, wait_until, TestDatabase, TestPrefix, TestTopic};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use redis::AsyncCommands;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

pub const ADMIN_TOKEN: &str = "test-admin-token-of-at-least-32-bytes";
pub const JWT_SECRET: &str = "test-jwt-secret-of-at-least-32-bytes";
pub const AUDIENCE: &str = "coupon-api-tests";

/// What signs the tests' tokens, as the shop's identity provider would.
pub fn signer() -> Signer {
    Signer::new(JWT_SECRET.as_bytes(), Some(AUDIENCE))
}

/// A customer's bearer token, as the shop's login would issue it.
pub fn token(customer: i64) -> String {
    signer().customer(customer, Duration::from_secs(600)).unwrap()
}

/// The order service's bearer token: it redeems and releases.
pub fn service_token() -> String {
    signer().service("orders", &[SCOPE_REDEEM, SCOPE_RELEASE], Duration::from_secs(600)).unwrap()
}

/// Everything a test's coupon-api instance owns.
pub struct Isolation {
    pub db: TestDatabase,
    pub topic: TestTopic,
    pub key_prefix: TestPrefix,
    /// The writer's consumer group, whose progress the API's rebuilds wait for.
    pub group: String,
    /// Where uses and releases go, for tests that redeem (`with_usage_topics`).
    pub usage_topics: Option<(TestTopic, TestTopic)>,
    /// Where revocations go, for tests that revoke (`with_usage_topics`).
    pub revoked_topic: Option<TestTopic>,
}

impl Isolation {
    pub async fn new() -> Self {
        Self {
            db: TestDatabase::create().await,
            topic: TestTopic::create("api", 3).await,
            key_prefix: TestPrefix::new("api"),
            group: unique_name("api-writer"),
            usage_topics: None,
            revoked_topic: None,
        }
    }

    /// With topics of its own for use, release and revocation events.
    pub async fn with_usage_topics() -> Self {
        let (used, released, revoked) = tokio::join!(
            TestTopic::create("api-used", 1),
            TestTopic::create("api-released", 1),
            TestTopic::create("api-revoked", 1)
        );
        Self { usage_topics: Some((used, released)), revoked_topic: Some(revoked), ..Self::new().await }
    }

    /// coupon-writer on this isolation's topic, database and group, in this process.
    pub async fn start_writer(&self) -> TestWriter {
        let mut settings = coupon_writer::config::Settings::default();
        settings.writer.http.addr = "127.0.0.1:0".parse().unwrap();
        settings.writer.group = self.group.clone();
        settings.kafka = kafka_settings();
        settings.kafka.topic = self.topic.to_string();
        settings.kafka.dlq_topic = format!("{}.dlq", self.topic);
        settings.kafka.create_topics = false;
        settings.database = self.db.settings();
        let app = coupon_writer::startup::Application::build(settings).await.expect("building coupon-writer");
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        TestWriter { stop: Some(stop), serving: Some(serving) }
    }

    pub fn settings(&self) -> Settings {
        let mut settings = Settings::default();
        settings.http.addr = "127.0.0.1:0".parse().unwrap();
        settings.http.management_addr = "127.0.0.1:0".parse().unwrap();
        settings.http.workers = 2;
        settings.admin.token = Some(SecretString::from(ADMIN_TOKEN));
        settings.auth.jwt_secret = Some(SecretString::from(JWT_SECRET));
        settings.auth.jwt_audience = Some(AUDIENCE.into());
        // Tests race thousands of requests from one address and one customer;
        // the limits' own test turns them on.
        settings.limits.per_address_per_second = 0;
        settings.limits.per_customer_per_second = 0;
        settings.limits.failed_auth_per_minute = 0;
        settings.redis = RedisSettings { key_prefix: self.key_prefix.to_string(), ..redis_settings() };
        settings.kafka.client = kafka_settings();
        settings.kafka.client.topic = self.topic.to_string();
        settings.kafka.client.dlq_topic = format!("{}.dlq", self.topic);
        settings.kafka.client.create_topics = false;
        (settings.kafka.used_topic, settings.kafka.released_topic) = match &self.usage_topics {
            Some((used, released)) => (used.to_string(), released.to_string()),
            // Never published to: the test does not redeem.
            None => (format!("{}.used", self.topic), format!("{}.released", self.topic)),
        };
        settings.kafka.revoked_topic = match &self.revoked_topic {
            Some(revoked) => revoked.to_string(),
            None => format!("{}.revoked", self.topic),
        };
        settings.database = self.db.settings();
        settings.relay.interval = Duration::from_millis(100);
        settings.relay.min_age = Duration::from_millis(1_500);
        settings.relay.max_backoff = Duration::from_millis(500);
        settings.writer.group = self.group.clone();
        // A rebuild waits this long for requests still on their way to Kafka.
        settings.kafka.message_timeout = Duration::from_secs(2);
        settings.recovery.poll = Duration::from_millis(100);
        settings
    }
}

/// coupon-writer running in the test process.
pub struct TestWriter {
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestWriter {
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.serving.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for TestWriter {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Issue requests one test app's client sends at once (`TestApp::in_flight`).
const MAX_ISSUES_IN_FLIGHT: usize = 256;

pub struct TestApp {
    pub base: String,
    /// Where `/metrics` and `/health/*` are served.
    pub management: String,
    pub http: reqwest::Client,
    /// Bounds the issue requests this client has open at once: one task
    /// polling thousands of fresh connections on a starved machine wrote
    /// some request heads only seconds after connecting. Hundreds at a time
    /// still race.
    in_flight: Arc<Semaphore>,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts coupon-api and waits until it is ready, as a load balancer would.
    pub async fn spawn(settings: Settings) -> Self {
        let app = Self::spawn_starting(settings).await;
        let ready = format!("{}/health/ready", app.management);
        wait_until("coupon-api to be ready", Duration::from_secs(60), || async {
            let response = app.http.get(&ready).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        app
    }

    /// Starts coupon-api without waiting for it to be ready.
    pub async fn spawn_starting(settings: Settings) -> Self {
        let app = Application::build(settings).await.expect("building coupon-api");
        let base = format!("http://{}", app.local_addr());
        let management = format!("http://{}", app.management_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            base,
            management,
            http: client(),
            in_flight: Arc::new(Semaphore::new(MAX_ISSUES_IN_FLIGHT)),
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    /// Stops the service the way SIGTERM would and waits until it has.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.serving.take().unwrap().await.unwrap().unwrap();
    }

    pub async fn create_coupon(&self, total: i64, starts_at: OffsetDateTime, ends_at: OffsetDateTime) -> i64 {
        self.create_coupon_with(json!({
            "name": "test coupon",
            "totalQuantity": total,
            "startsAt": starts_at.format(&Rfc3339).unwrap(),
            "endsAt": ends_at.format(&Rfc3339).unwrap(),
        }))
        .await
    }

    /// Creates the coupon `body` describes (as support staff); returns its id.
    pub async fn create_coupon_with(&self, body: Value) -> i64 {
        let (status, created) = self.post_admin("/api/v1/coupons", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"].as_i64().unwrap()
    }

    /// A request with the admin token and a JSON body.
    async fn admin(&self, method: reqwest::Method, path: &str, body: &Value) -> (StatusCode, Value) {
        let request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(ADMIN_TOKEN).json(body);
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A POST with the admin token.
    pub async fn post_admin(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.admin(reqwest::Method::POST, path, body).await
    }

    /// A PATCH with the admin token.
    pub async fn patch_admin(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.admin(reqwest::Method::PATCH, path, body).await
    }

    /// A DELETE with the admin token and a JSON body.
    pub async fn delete_admin(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.admin(reqwest::Method::DELETE, path, body).await
    }

    /// A POST as `customer` (their bearer token).
    pub async fn post_as(&self, customer: i64, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token(customer))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A POST as the order service (its bearer token).
    pub async fn post_as_service(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let request = self.http.post(format!("{}{path}", self.base)).bearer_auth(service_token()).json(body);
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A coupon open from an hour ago until an hour from now.
    pub async fn open_coupon(&self, total: i64) -> i64 {
        let now = OffsetDateTime::now_utc();
        self.create_coupon(total, now - time::Duration::hours(1), now + time::Duration::hours(1)).await
    }

    pub async fn issue(&self, coupon: i64, customer: i64) -> (StatusCode, Value) {
        issue_request(&self.http, &self.in_flight, &self.base, coupon, customer).await
    }

    /// An issue request sent from a task of its own, answered when it ends.
    pub fn issuing(&self, coupon: i64, customer: i64) -> JoinHandle<(StatusCode, Value)> {
        let (http, in_flight, base) = (self.http.clone(), self.in_flight.clone(), self.base.clone());
        tokio::spawn(async move { issue_request(&http, &in_flight, &base, coupon, customer).await })
    }

    /// Waits until coupon-writer has written the customer's issuance (the
    /// attempt view says `persisted`); returns that view.
    pub async fn persisted(&self, coupon: i64, customer: i64) -> Value {
        wait_until("the issuance to reach PostgreSQL", Duration::from_secs(60), || async {
            let (_, attempt) = self.get(&format!("/api/v1/coupons/{coupon}/customers/{customer}")).await;
            (attempt["persisted"] == true).then_some(attempt)
        })
        .await
    }

    /// Waits until the unlabelled sample `name` of `/metrics` reads `value`.
    pub async fn wait_metric(&self, name: &str, value: f64) {
        wait_until(&format!("{name} to read {value}"), Duration::from_secs(30), || async {
            (self.metric(name).await == value).then_some(())
        })
        .await;
    }

    /// One unlabelled sample of `/metrics`, e.g. `coupon_rebuilds_total`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.http.get(format!("{}/metrics", self.management)).send().await.unwrap().text().await.unwrap();
        coupon_infra::metrics::sample(&text, name).unwrap_or_else(|| panic!("no sample {name} in /metrics"))
    }

    /// A GET on the management port (probes, metrics).
    pub async fn manage(&self, path: &str) -> (StatusCode, Value) {
        let response = self.http.get(format!("{}{path}", self.management)).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A GET as support staff (with the admin token).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.http.get(format!("{}{path}", self.base)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// A client that opens a connection per request. A starved test process
/// reused pooled connections the server had meanwhile closed after its
/// keep-alive (`IncompleteMessage`, `ConnectionReset`); a POST that failed so
/// may not be sent again, as it cannot tell whether it was read.
fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("a client")
}

async fn issue_request(
    http: &reqwest::Client,
    in_flight: &Semaphore,
    base: &str,
    coupon: i64,
    customer: i64,
) -> (StatusCode, Value) {
    let _permit = in_flight.acquire().await.expect("never closed");
    let response = http
        .post(format!("{base}/api/v1/coupons/{coupon}/issue"))
        .bearer_auth(token(customer))
        .json(&json!({ "customerId": customer }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("issue answered {status} with a body that is not JSON ({err}): {text:?}"));
    (status, body)
}

/// coupon-api on a Redis of the test's own (to stall or restart), its
/// commands timing out after `timeout`.
pub async fn app_on_own_redis(iso: &Isolation, name: &str, timeout: Duration) -> (RedisNode, TestApp) {
    let redis = RedisNode::primary(name).await.expect("a Redis of the test's own");
    let mut settings = iso.settings();
    settings.redis.url = redis.url();
    settings.redis.timeout = timeout;
    (redis, TestApp::spawn(settings).await)
}

pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_settings().url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

pub async fn redis_stock(prefix: &str, coupon: i64) -> i64 {
    redis_stock_at(&redis_settings().url, prefix, coupon).await
}

/// The coupon's stock in the Redis at `url`.
pub async fn redis_stock_at(url: &str, prefix: &str, coupon: i64) -> i64 {
    query(url, redis::cmd("GET").arg(format!("{prefix}coupon:{{{coupon}}}:stock"))).await.unwrap()
}

pub async fn outbox_len(prefix: &str, coupon: i64) -> usize {
    redis().await.xlen(format!("{prefix}coupon:{{{coupon}}}:outbox")).await.unwrap()
}

/// A consumer of a group of its own, subscribed to `topic` from its beginning.
pub fn topic_reader(topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = coupon_infra::kafka::client_config(&kafka_settings(), "api-test")
        .set("group.id", unique_name("api-test"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// Reads the topic from the beginning until `expected` distinct events arrived;
/// returns (key, coupon id, customer id) per distinct event.
pub async fn consume_events(topic: &str, expected: usize) -> Vec<(String, i64, i64)> {
    let consumer = topic_reader(topic);
    let mut seen = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < expected {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {expected} events arrived in 60 s", seen.len()))
            .unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let event = coupon_domain::CouponIssuedEvent::from_json(message.payload().unwrap()).unwrap();
        seen.insert((event.coupon_id.get(), event.customer_id.get()), key);
    }
    seen.into_iter().map(|((coupon, customer), key)| (key, coupon, customer)).collect()
}

/// Asks for `customer`'s coupon while the Redis at `redis_url` stalls for
/// 3 s, past the API's timeout: the answer is `503 UNCONFIRMED` (the reply
/// was lost, and the script runs after the stall). Then asks what became of
/// it until the answer is persisted, or 60 s pass; returns that answer.
pub async fn issue_while_redis_stalls(app: &TestApp, coupon: i64, customer: i64, redis_url: &str) -> Value {
    let stall = coupon_testkit::redis_node::stall(redis_url, Duration::from_secs(3)).await;
    let (status, body) = app.issue(coupon, customer).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("UNCONFIRMED")));
    stall.await.expect("the stall ends");
    app.persisted(coupon, customer).await
}
