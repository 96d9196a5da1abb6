//! A test's own database, topics and consumer group, the writer run in-process
//! (or as its real binary), and probes of what it did.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use coupon_domain::{CouponId, CouponIssuedEvent, CustomerId, REQUEST_ID_HEADER};
use coupon_infra::db::schema::{coupon, customer_coupon, sold_out_at_write};
use coupon_testkit::{kafka_settings, unique_name, wait_until, TestDatabase, TestTopic};
use coupon_writer::config::Settings;
use coupon_writer::consumer::Writer;
use coupon_writer::dlq::{self, DlqEntry};
use coupon_writer::http::Readiness;
use coupon_writer::metrics::Metrics;
use coupon_writer::startup::Application;
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous: the stack is shared with other suites on a small machine.
pub const TIMEOUT: Duration = Duration::from_secs(60);

pub fn event(coupon: CouponId, customer: i64) -> CouponIssuedEvent {
    CouponIssuedEvent {
        coupon_id: coupon,
        customer_id: CustomerId::new(customer).unwrap(),
        issued_at: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
        issuance: 0,
    }
}

/// Everything one test's writer uses, of its own.
pub struct World {
    pub db: TestDatabase,
    pub topic: TestTopic,
    pub dlq_topic: TestTopic,
    pub group: String,
    partitions: i32,
    producer: FutureProducer,
    /// A member of no group: reads and sets the group's committed offsets.
    offsets: Arc<BaseConsumer>,
}

impl World {
    pub async fn new(partitions: i32) -> Self {
        let group = unique_name("writer-group");
        let kafka = kafka_settings();
        let producer = coupon_infra::kafka::client_config(&kafka, "writer-test")
            .set("enable.idempotence", "true")
            .create()
            .unwrap();
        let offsets = coupon_infra::kafka::client_config(&kafka, "writer-test-offsets")
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        Self {
            db: TestDatabase::create().await,
            topic: TestTopic::create("writer", partitions).await,
            dlq_topic: TestTopic::create("writer.dlq", 1).await,
            group,
            partitions,
            producer,
            offsets: Arc::new(offsets),
        }
    }

    pub fn settings(&self) -> Settings {
        let mut settings = Settings::default();
        settings.writer.http.addr = "127.0.0.1:0".parse().unwrap();
        settings.writer.group = self.group.clone();
        settings.writer.retry_initial = Duration::from_millis(50);
        settings.writer.retry_max = Duration::from_millis(500);
        settings.writer.stats_interval = Duration::from_secs(1);
        settings.kafka = kafka_settings();
        settings.kafka.topic = self.topic.to_string();
        settings.kafka.dlq_topic = self.dlq_topic.to_string();
        settings.kafka.create_topics = false;
        settings.database = self.db.settings();
        settings.database.timeout = Duration::from_secs(1);
        settings
    }

    /// The same settings as environment variables, for the binary.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("COUPON__DATABASE__URL", self.db.url().to_string()),
            ("COUPON__DATABASE__TIMEOUT_MS", "1000".into()),
            ("COUPON__KAFKA__BROKERS", kafka_settings().brokers),
            ("COUPON__KAFKA__TOPIC", self.topic.to_string()),
            ("COUPON__KAFKA__DLQ_TOPIC", self.dlq_topic.to_string()),
            ("COUPON__KAFKA__CREATE_TOPICS", "false".into()),
            ("COUPON__WRITER__GROUP", self.group.clone()),
            ("COUPON__WRITER__HTTP__ADDR", "127.0.0.1:0".into()),
            ("COUPON__WRITER__RETRY_MAX_MS", "500".into()),
        ]
    }

    pub async fn coupon(&self, quantity: i32) -> CouponId {
        self.insert_coupon(None, quantity).await
    }

    pub async fn coupon_with_id(&self, id: i64, quantity: i32) -> CouponId {
        self.insert_coupon(Some(id), quantity).await
    }

    async fn insert_coupon(&self, id: Option<i64>, quantity: i32) -> CouponId {
        let now = OffsetDateTime::now_utc();
        let values = (
            coupon::name.eq("writer test"),
            coupon::total_quantity.eq(quantity),
            coupon::remaining_quantity.eq(quantity),
            coupon::starts_at.eq(now - time::Duration::hours(1)),
            coupon::ends_at.eq(now + time::Duration::days(1)),
        );
        let mut conn = self.db.connect().await;
        let id: i64 = match id {
            Some(id) => diesel::insert_into(coupon::table)
                .values((coupon::id.eq(id), values))
                .returning(coupon::id)
                .get_result(&mut conn)
                .await
                .unwrap(),
            None => diesel::insert_into(coupon::table)
                .values(values)
                .returning(coupon::id)
                .get_result(&mut conn)
                .await
                .unwrap(),
        };
        CouponId::new(id).unwrap()
    }

    pub async fn send(&self, events: &[CouponIssuedEvent]) {
        for event in events {
            self.send_raw(&event.coupon_id.to_string(), event.to_json().as_bytes()).await;
        }
    }

    /// Each event to the given partition, whatever its key.
    pub async fn send_to(&self, partition: i32, events: &[CouponIssuedEvent]) {
        for event in events {
            let (key, payload) = (event.coupon_id.to_string(), event.to_json());
            self.send_record(
                FutureRecord::to(&self.topic).partition(partition).key(key.as_str()).payload(payload.as_bytes()),
            )
            .await;
        }
    }

    pub async fn send_raw(&self, key: &str, payload: &[u8]) {
        self.send_record(FutureRecord::to(&self.topic).key(key).payload(payload)).await;
    }

    /// A record as coupon-api sends it from a request: with its request id.
    pub async fn send_raw_from_request(&self, key: &str, payload: &[u8], request_id: &str) {
        let headers = OwnedHeaders::new().insert(Header { key: REQUEST_ID_HEADER, value: Some(request_id) });
        self.send_record(FutureRecord::to(&self.topic).key(key).payload(payload).headers(headers)).await;
    }

    async fn send_record(&self, record: FutureRecord<'_, str, [u8]>) {
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(err, _)| err)
            .expect("Kafka acknowledges the test event");
    }

    /// `(coupon, customer)` of every row, sorted.
    pub async fn rows(&self) -> Vec<(i64, i64)> {
        let mut conn = self.db.connect().await;
        customer_coupon::table
            .select((customer_coupon::coupon_id, customer_coupon::customer_id))
            .order((customer_coupon::coupon_id, customer_coupon::customer_id))
            .load(&mut conn)
            .await
            .unwrap()
    }

    /// `(coupon, customer, reason)` of every `sold_out_at_write` record, sorted.
    pub async fn sold_out(&self) -> Vec<(i64, i64, String)> {
        let mut conn = self.db.connect().await;
        sold_out_at_write::table
            .select((sold_out_at_write::coupon_id, sold_out_at_write::customer_id, sold_out_at_write::reason))
            .order((sold_out_at_write::coupon_id, sold_out_at_write::customer_id))
            .load(&mut conn)
            .await
            .unwrap()
    }

    pub async fn remaining(&self, id: CouponId) -> i32 {
        let mut conn = self.db.connect().await;
        coupon::table.find(id.get()).select(coupon::remaining_quantity).first(&mut conn).await.unwrap()
    }

    /// The group's committed offsets, summed over the partitions.
    pub async fn committed(&self) -> Option<i64> {
        Some(self.committed_by_partition().await?.iter().sum())
    }

    /// The group's committed offset of each partition (0 where none is).
    pub async fn committed_by_partition(&self) -> Option<Vec<i64>> {
        let (consumer, list) = (self.offsets.clone(), self.partition_list(Offset::Invalid));
        let topic = self.topic.to_string();
        tokio::task::spawn_blocking(move || {
            let committed = consumer.committed_offsets(list, Duration::from_secs(10)).ok()?;
            let mut by_partition: Vec<(i32, i64)> = committed
                .elements_for_topic(&topic)
                .iter()
                .map(|e| (e.partition(), if let Offset::Offset(n) = e.offset() { n } else { 0 }))
                .collect();
            by_partition.sort();
            Some(by_partition.into_iter().map(|(_, offset)| offset).collect())
        })
        .await
        .unwrap()
    }

    /// Each partition's high watermark: the offset its next record will get.
    pub async fn end_offsets(&self) -> Vec<i64> {
        let (consumer, topic, partitions) = (self.offsets.clone(), self.topic.to_string(), self.partitions);
        tokio::task::spawn_blocking(move || {
            (0..partitions)
                .map(|partition| consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10)).unwrap().1)
                .collect()
        })
        .await
        .unwrap()
    }

    /// How many members the group has, if it is `Stable` (no rebalance under way).
    pub async fn stable_members(&self) -> Option<usize> {
        let (consumer, group) = (self.offsets.clone(), self.group.clone());
        tokio::task::spawn_blocking(move || {
            let list = consumer.fetch_group_list(Some(&group), Duration::from_secs(10)).ok()?;
            let described = list.groups().iter().find(|g| g.name() == group)?;
            (described.state() == "Stable").then(|| described.members().len())
        })
        .await
        .unwrap()
    }

    pub async fn wait_committed(&self, expected: i64) {
        wait_until(&format!("the group to commit {expected} records"), TIMEOUT, || async {
            (self.committed().await == Some(expected)).then_some(())
        })
        .await;
    }

    pub async fn wait_rows(&self, expected: usize) {
        wait_until(&format!("{expected} rows"), TIMEOUT, || async {
            (self.rows().await.len() == expected).then_some(())
        })
        .await;
    }

    /// Points the group back at the start of every partition, as
    /// `kafka-consumer-groups --reset-offsets --to-earliest` would.
    pub async fn reset_group_to_earliest(&self) {
        let (consumer, list) = (self.offsets.clone(), self.partition_list(Offset::Offset(0)));
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync)).await.unwrap().unwrap();
    }

    fn partition_list(&self, offset: Offset) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for partition in 0..self.partitions {
            list.add_partition_offset(&self.topic, partition, offset).unwrap();
        }
        list
    }

    pub async fn dlq_entries(&self) -> Vec<DlqEntry> {
        self.dlq_entries_in(&self.dlq_topic).await.unwrap()
    }

    /// Every record of the dead-letter topic `topic`; an error while it is missing.
    pub async fn dlq_entries_in(&self, topic: &str) -> anyhow::Result<Vec<DlqEntry>> {
        let mut kafka = self.settings().kafka;
        kafka.dlq_topic = topic.to_string();
        tokio::task::spawn_blocking(move || dlq::read_all(&kafka)).await.unwrap()
    }

    /// Runs the real binary with this world's environment and the given
    /// arguments; returns its standard output.
    pub fn run_command(&self, args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_coupon-writer")).args(args).envs(self.env()).output().unwrap();
        assert!(output.status.success(), "coupon-writer {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }

    /// Starts the real binary in the background; it is killed when dropped.
    pub fn spawn_process(&self, extra: &[(&str, &str)]) -> WriterProcess {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name("coupon-writer")));
        let child = Command::new(env!("CARGO_BIN_EXE_coupon-writer"))
            .envs(self.env())
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        WriterProcess { child, log }
    }
}

pub struct WriterProcess {
    child: Child,
    /// Its standard error, shown when the test fails.
    log: PathBuf,
}

impl WriterProcess {
    /// SIGKILL: no batch is finished, nothing is committed on the way out.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for WriterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- coupon-writer log {}:\n{log}", self.log.display());
        }
    }
}

/// The writer's consume loop alone in this process: no migrations, lag
/// reporter or HTTP listener. Unlike `RunningWriter` (whose start migrates
/// the database), it can join its group while the database is unreachable.
pub struct ConsumerOnly {
    metrics: Metrics,
    stop: CancellationToken,
    running: Option<JoinHandle<()>>,
}

impl ConsumerOnly {
    pub fn start(settings: &Settings) -> Self {
        let pool = coupon_infra::db::pool(&settings.database).unwrap();
        let metrics = Metrics::new();
        let writer = Writer::new(settings, pool, metrics.clone(), Readiness::new(true)).unwrap();
        let stop = CancellationToken::new();
        let running = tokio::spawn(writer.run(stop.clone()));
        Self { metrics, stop, running: Some(running) }
    }

    /// One sample of its metrics, as `RunningWriter::metric`.
    pub fn metric(&self, series: &str) -> f64 {
        coupon_infra::metrics::sample(&self.metrics.render(), series).unwrap_or(0.0)
    }

    /// Stops the loop the way SIGTERM would and waits until it left its group.
    pub async fn stop(mut self) {
        self.stop.cancel();
        self.running.take().unwrap().await.unwrap();
    }
}

impl Drop for ConsumerOnly {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The writer running in this process.
pub struct RunningWriter {
    base: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningWriter {
    pub async fn start(settings: Settings) -> Self {
        let app = Application::build(settings).await.expect("building coupon-writer");
        let base = format!("http://{}", app.http_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self { base, http: reqwest::Client::new(), stop: Some(stop), serving: Some(serving) }
    }

    /// One sample of `/metrics`, e.g. `coupon_writer_batch_size_bucket{le="50"}`; 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        self.sample(series).await.unwrap_or(0.0)
    }

    pub async fn sample(&self, series: &str) -> Option<f64> {
        let text = self.http.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        coupon_infra::metrics::sample(&text, series)
    }

    /// `coupon_writer_consumer_lag` summed over the partitions.
    pub async fn lag(&self) -> f64 {
        let text = self.http.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|line| line.starts_with("coupon_writer_consumer_lag{"))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    pub async fn wait_metric(&self, series: &str, at_least: f64) -> f64 {
        wait_until(&format!("{series} >= {at_least}"), TIMEOUT, || async {
            let value = self.metric(series).await;
            (value >= at_least).then_some(value)
        })
        .await
    }

    pub async fn ready_status(&self) -> u16 {
        self.http.get(format!("{}/health/ready", self.base)).send().await.unwrap().status().as_u16()
    }

    /// Stops the writer the way SIGTERM would and waits until it left its group.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.serving.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for RunningWriter {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
