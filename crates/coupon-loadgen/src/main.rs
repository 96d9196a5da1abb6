use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use coupon_infra::auth::{Signer, DEV_ADMIN_TOKEN, DEV_AUDIENCE, DEV_JWT_SECRET, SCOPE_REDEEM, SCOPE_RELEASE};
use coupon_infra::db::PgPool;
use coupon_infra::settings::DatabaseSettings;
use coupon_loadgen::client::{ApiClient, CustomerAuth};
use coupon_loadgen::promises::Promises;
use coupon_loadgen::record::RunRecord;
use coupon_loadgen::{dbstats, durable, many, report, soak, soak_report, spike, trickle};
use indicatif::{ProgressBar, ProgressStyle};
use secrecy::SecretString;

#[derive(Parser)]
#[command(name = "coupon-loadgen", about = "Fire a spike of customers at coupon-api and check the promises")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// 10,000 customers against 1,000 coupons, with a progress bar and a summary.
    Demo(SpikeArgs),
    /// One spike with the given shape (defaults: 50,000 customers, 10,000 stock).
    Spike(SpikeArgs),
    /// Writes the benchmark report and plots from the runs' JSON records.
    Report(ReportArgs),
    /// Measures how fast the writer applies a backlog: rows/s from the first
    /// row of the coupon until the last.
    Drain(DrainArgs),
    /// Steady traffic at a fixed rate: how long until each issued coupon is in
    /// PostgreSQL, and the writer's transactions per 1,000 issued.
    Trickle(TrickleArgs),
    /// A sustained flood on one coupon after a spike for comparison: the
    /// writer's rows, lag, commits and membership and each service's memory
    /// every second, the drain, the promises (`make soak`).
    Soak(SoakArgs),
    /// Requests/s of an endpoint that does nothing, through the same client
    /// and server: the HTTP layer's own ceiling on this machine.
    Noop(NoopArgs),
    /// Idle cost and spike throughput with few coupons open, then with many;
    /// writes its section of the benchmark page.
    Many(ManyArgs),
    /// Prints a customer's bearer token signed with the HS256 secret
    /// (`make token CUSTOMER=7`).
    Token(TokenArgs),
}

#[derive(Args)]
struct ManyArgs {
    /// coupon-api A (keeps few coupons) and its database.
    #[command(flatten)]
    target: Target,
    /// coupon-api B (gets the many coupons), its database, and the two processes.
    #[arg(long)]
    api_many: String,
    #[arg(long)]
    management_many: String,
    #[arg(long)]
    database_url_many: String,
    #[arg(long)]
    pid: i32,
    #[arg(long)]
    pid_many: i32,
    /// The Redis both use; nothing else may use it during the run.
    #[arg(long, env = "COUPON__REDIS__URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Coupons created between the two halves.
    #[arg(long, default_value_t = 10_000)]
    coupons: usize,
    /// How long they stay open.
    #[arg(long, default_value_t = 900)]
    open_for_s: u64,
    #[arg(long, default_value_t = 30)]
    idle_s: u64,
    /// Pause after creating them, so the relay has seen the spikes'
    /// outboxes drained (relay.min_age_ms is 5 s by default).
    #[arg(long, default_value_t = 10)]
    settle_s: u64,
    /// Spikes on each process.
    #[arg(long, default_value_t = 5)]
    spikes: usize,
    #[arg(long, default_value_t = 50_000)]
    customers: u64,
    #[arg(long, default_value_t = 10_000)]
    stock: u64,
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    #[arg(long, default_value = "docs/BENCHMARK.md")]
    output: std::path::PathBuf,
    #[arg(long, default_value = "")]
    machine: String,
    #[arg(long, default_value = "make bench")]
    command: String,
}

/// The service under load and the database its writer fills.
#[derive(Args, Clone)]
struct Target {
    /// coupon-api's base URL, or one per replica, comma-separated: requests
    /// take turns, and one a replica refuses goes to the next.
    #[arg(long, env = "COUPON_API", default_value = "http://127.0.0.1:8080")]
    api: String,
    /// coupon-api's management URL (`/health/*`), one per replica as `api`.
    #[arg(long, env = "COUPON_API_MANAGEMENT", default_value = "http://127.0.0.1:9090")]
    management: String,
    #[arg(long, env = "COUPON__ADMIN__TOKEN", default_value = DEV_ADMIN_TOKEN, hide_env_values = true)]
    admin_token: String,
    #[arg(long, env = "COUPON__DATABASE__URL", default_value = "postgres://coupon:coupon@127.0.0.1:5432/coupon")]
    database_url: String,
    #[command(flatten)]
    auth: AuthArgs,
}

/// How requests act for customers: read from the same variables as coupon-api's.
#[derive(Args, Clone)]
struct AuthArgs {
    #[arg(long, env = "COUPON__AUTH__MODE", value_enum, default_value_t = AuthMode::Jwt)]
    auth_mode: AuthMode,
    #[command(flatten)]
    jwt: JwtArgs,
    /// The header naming the customer (gateway mode).
    #[arg(long, env = "COUPON__AUTH__CUSTOMER_HEADER", default_value = "X-Customer-Id")]
    customer_header: String,
    /// What the gateway proves itself with (gateway mode).
    #[arg(long, env = "COUPON__AUTH__GATEWAY_SECRET", default_value = "", hide_env_values = true)]
    gateway_secret: String,
}

/// How tokens are signed: the defaults are those `make run` gives coupon-api
/// (scripts/lib/dev.env), so tokens minted here work against it.
#[derive(Args, Clone)]
struct JwtArgs {
    /// The HS256 secret tokens are signed with (jwt mode).
    #[arg(long, env = "COUPON__AUTH__JWT_SECRET", default_value = DEV_JWT_SECRET, hide_env_values = true)]
    jwt_secret: String,
    /// The audience tokens are minted for.
    #[arg(long, env = "COUPON__AUTH__JWT_AUDIENCE", default_value = DEV_AUDIENCE)]
    jwt_audience: String,
}

impl JwtArgs {
    fn signer(&self) -> Signer {
        Signer::new(
            self.jwt_secret.as_bytes(),
            Some(self.jwt_audience.as_str()).filter(|audience| !audience.is_empty()),
        )
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AuthMode {
    Jwt,
    Gateway,
}

impl AuthArgs {
    fn customers(&self) -> CustomerAuth {
        match self.auth_mode {
            AuthMode::Jwt => CustomerAuth::Jwt(Arc::new(self.jwt.signer())),
            AuthMode::Gateway => {
                CustomerAuth::Gateway { header: self.customer_header.clone(), secret: self.gateway_secret.clone() }
            }
        }
    }
}

#[derive(Args)]
struct TokenArgs {
    /// A customer's token, acting for itself.
    #[arg(long, required_unless_present = "service", conflicts_with = "service")]
    customer: Option<i64>,
    /// A service's token (e.g. `orders`), with the scopes to redeem and release.
    #[arg(long)]
    service: Option<String>,
    #[command(flatten)]
    jwt: JwtArgs,
    /// How long the token is valid.
    #[arg(long, default_value_t = 86_400)]
    ttl_s: u64,
}

impl Target {
    /// A client with `connections` keep-alive connections once the API is
    /// ready, and a pool on the database.
    async fn connect(&self, connections: usize) -> anyhow::Result<(ApiClient, PgPool)> {
        let client =
            ApiClient::new(&self.api, &self.management, &self.admin_token, self.auth.customers(), connections)?;
        client.wait_ready(Duration::from_secs(30)).await?;
        Ok((client, db_pool(&self.database_url)?))
    }
}

fn db_pool(url: &str) -> anyhow::Result<PgPool> {
    coupon_infra::db::pool(&DatabaseSettings { url: SecretString::from(url.to_string()), ..Default::default() })
}

#[derive(Args)]
struct NoopArgs {
    #[arg(long, env = "COUPON_API", default_value = "http://127.0.0.1:8080")]
    api: String,
    #[arg(long, env = "COUPON_API_MANAGEMENT", default_value = "http://127.0.0.1:9090")]
    management: String,
    #[arg(long, default_value_t = 200_000)]
    requests: usize,
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

#[derive(Args)]
struct TrickleArgs {
    #[command(flatten)]
    target: Target,
    /// Issuance requests per second (one new customer each).
    #[arg(long, default_value_t = 200)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Write the result here (JSON).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct SoakArgs {
    #[command(flatten)]
    target: Target,
    /// How long the flood lasts.
    #[arg(long, default_value_t = 180)]
    seconds: u64,
    /// Requests in flight (keep-alive connections).
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// The comparison spike's customers and stock.
    #[arg(long, default_value_t = 50_000)]
    spike_customers: u64,
    #[arg(long, default_value_t = 10_000)]
    spike_stock: u64,
    /// coupon-writer's metrics endpoint.
    #[arg(long, default_value = "http://127.0.0.1:9091/metrics")]
    writer_metrics: String,
    /// The Redis coupon-api uses (its memory is sampled).
    #[arg(long, env = "COUPON__REDIS__URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// How long after the flood the writer may take to catch up.
    #[arg(long, default_value_t = 300)]
    drain_timeout_s: u64,
    /// Write the soak's record here (JSON).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// The page whose soak section is rewritten.
    #[arg(long, default_value = "docs/BENCHMARK.md")]
    output: std::path::PathBuf,
    #[arg(long, default_value = "docs/bench")]
    plots: std::path::PathBuf,
    /// Named in the report.
    #[arg(long, default_value = "")]
    machine: String,
    #[arg(long, default_value = "make soak")]
    command: String,
    /// What an independent load generator measured on the same services, for the report.
    #[arg(long, default_value = "")]
    cross_check: String,
}

#[derive(Args)]
struct DrainArgs {
    #[arg(long, env = "COUPON__DATABASE__URL", default_value = "postgres://coupon:coupon@127.0.0.1:5432/coupon")]
    database_url: String,
    #[arg(long)]
    coupon: i64,
    #[arg(long)]
    expected: i64,
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
}

#[derive(Args)]
struct ReportArgs {
    /// Folder of `*.json` run records written by `spike --json`.
    #[arg(long)]
    runs: std::path::PathBuf,
    /// The ceilings measured in the same benchmark (JSON).
    #[arg(long)]
    ceilings: std::path::PathBuf,
    #[arg(long, default_value = "docs/BENCHMARK.md")]
    output: std::path::PathBuf,
    #[arg(long, default_value = "docs/bench")]
    plots: std::path::PathBuf,
}

#[derive(Args, Clone)]
struct SpikeArgs {
    #[command(flatten)]
    target: Target,
    /// Distinct customers.
    #[arg(long)]
    customers: Option<u64>,
    /// The coupon's stock.
    #[arg(long)]
    stock: Option<u64>,
    /// Requests in flight (keep-alive connections).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Share of customers who press the button twice.
    #[arg(long, default_value_t = 0.1)]
    repeat_share: f64,
    /// How long to wait for the writer to make every issuance durable.
    #[arg(long, default_value_t = 120)]
    drain_timeout_s: u64,
    /// Label of the API's issuance mode, for the record.
    #[arg(long, default_value = "kafka")]
    mode: String,
    #[arg(long, default_value_t = 1)]
    round: u32,
    /// Write the run's record (latencies, throughput, database load) here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Do not wait for the writer (to build a backlog for `drain`).
    #[arg(long)]
    no_writer: bool,
    /// Redis shards the coupon's stock is spread over (1 to 64).
    #[arg(long, default_value_t = 1)]
    shards: u16,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => spike_run(args, 10_000, 1_000).await,
        Command::Spike(args) => spike_run(args, 50_000, 10_000).await,
        Command::Soak(args) => soak(args).await,
        Command::Report(args) => report(args).map(|()| true),
        Command::Drain(args) => drain(args).await.map(|()| true),
        Command::Trickle(args) => trickle(args).await.map(|()| true),
        Command::Noop(args) => noop(args).await.map(|()| true),
        Command::Many(args) => many_coupons(args).await.map(|()| true),
        Command::Token(args) => token(&args).map(|token| println!("{token}")).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("coupon-loadgen: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// A spike, its record written where `--json` says; whether the promises held.
async fn spike_run(args: SpikeArgs, default_customers: u64, default_stock: u64) -> anyhow::Result<bool> {
    let (held, record) = run(&args, default_customers, default_stock).await?;
    write_json(args.json.as_deref(), &record)?;
    Ok(held)
}

/// Returns whether the three promises held, and the run's record.
async fn run(args: &SpikeArgs, default_customers: u64, default_stock: u64) -> anyhow::Result<(bool, RunRecord)> {
    let customers = args.customers.unwrap_or(default_customers);
    let stock = args.stock.unwrap_or(default_stock);
    let (client, db) = args.target.connect(args.concurrency).await?;
    let load = DbLoad::start(&db).await?;
    let coupon = client.create_sharded_coupon("loadgen spike", stock, args.shards).await?;
    let attempts = spike::plan(&[coupon], customers, 1, args.repeat_share);
    println!(
        "coupon {coupon}: stock {stock} over {} shards, {customers} customers (+{:.0}% repeats), {} connections",
        args.shards,
        args.repeat_share * 100.0,
        args.concurrency
    );
    let result = spike_with_progress_bar(&client, attempts, args.concurrency).await;
    print_answers(&result);

    let mut record = RunRecord::from_spike(&args.mode, args.round, coupon, stock, customers, args.concurrency, &result);
    let granted = result.issued().count();
    if args.no_writer {
        load.sampler.stop();
        println!("coupon {coupon}: {granted} issued; not waiting for the writer");
        return Ok((true, record));
    }
    let timeout = Duration::from_secs(args.drain_timeout_s);
    let rows = wait_for_writer(&db, coupon, granted, timeout, &load, &mut record).await?;
    let promises = judge_promises(&db, coupon, stock, &result, rows).await?;
    Ok((promises.held(), record))
}

/// What a spike costs the database: the transaction id it started at, and the
/// peak of busy connections, sampled every 20 ms.
struct DbLoad {
    transactions_before: i64,
    sampler: dbstats::ConnectionSampler,
}

impl DbLoad {
    async fn start(db: &PgPool) -> anyhow::Result<Self> {
        let transactions_before = dbstats::next_transaction_id(db).await?;
        Ok(Self {
            transactions_before,
            sampler: dbstats::ConnectionSampler::start(db.clone(), Duration::from_millis(20)),
        })
    }
}

/// Runs the spike with a progress bar of the answers, cleared at the end.
async fn spike_with_progress_bar(
    client: &ApiClient,
    attempts: Vec<spike::Attempt>,
    concurrency: usize,
) -> spike::Spike {
    let progress = Arc::new(AtomicU64::new(0));
    let bar = ProgressBar::new(attempts.len() as u64)
        .with_style(ProgressStyle::with_template("{bar:40} {pos}/{len} requests {per_sec}").expect("valid template"));
    let ticker = {
        let (bar, progress) = (bar.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(progress.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let result = spike::run(client, attempts, concurrency, progress.clone()).await;
    ticker.abort();
    bar.finish_and_clear();
    result
}

/// The spike's throughput, answers by outcome and latency.
fn print_answers(result: &spike::Spike) {
    println!("answers in {:.2} s: {:.0} requests/s", result.elapsed.as_secs_f64(), result.requests_per_second());
    if let Some(last) = result.last_issued_at() {
        println!("last 201 after {:.2} s", last.as_secs_f64());
        println!("SOLD_OUT while stock remained: {}", result.sold_out_while_stock_remained());
    }
    for (outcome, count) in result.by_outcome() {
        println!("  {outcome:<16} {count}");
    }
    println!("latency: {}", result.latency_summary());
    for (answers, summary) in result.latency_by_answer() {
        println!("  {answers:<8} {summary}");
    }
}

/// Waits until PostgreSQL holds the `granted` rows of `coupon`, then notes in
/// `record` how long that took and what the run cost the database. Returns
/// the rows.
async fn wait_for_writer(
    db: &PgPool,
    coupon: i64,
    granted: usize,
    timeout: Duration,
    load: &DbLoad,
    record: &mut RunRecord,
) -> anyhow::Result<i64> {
    let samples = durable::wait_for_rows(db, coupon, granted as i64, timeout).await?;
    let (drained_after, rows) = samples.last().copied().unwrap_or_default();
    println!("PostgreSQL: {rows} rows, all durable {:.2} s after the spike", drained_after.as_secs_f64());

    let peak_connections = load.sampler.stop();
    // Includes the one that created the coupon; this tool's own queries only read.
    let db_transactions = dbstats::next_transaction_id(db).await? - load.transactions_before;
    println!("database: {db_transactions} write transactions, peak {peak_connections} busy connections");
    record.durable_after_s = drained_after.as_secs_f64();
    record.lag = samples.iter().map(|(t, n)| (t.as_secs_f64(), granted as i64 - n)).collect();
    record.db_transactions = db_transactions;
    record.peak_db_connections = peak_connections;
    Ok(rows)
}

/// The three promises, judged from the spike's 201s and `coupon`'s `rows`,
/// each printed with its verdict.
async fn judge_promises(
    db: &PgPool,
    coupon: i64,
    stock: u64,
    result: &spike::Spike,
    rows: i64,
) -> anyhow::Result<Promises> {
    let issued: Vec<i64> = result.issued().map(|a| a.attempt.customer).collect();
    let granted = issued.len();
    let holders = durable::holders(db, coupon).await?;
    let sold_out_at_write = durable::sold_out_at_write(db, coupon).await?;
    let promises = Promises::judge(&issued, &holders, rows, stock as i64, sold_out_at_write, |_| false);
    let verdict = |ok: bool| if ok { "held" } else { "BROKEN" };
    println!(
        "never oversell:               {} ({granted} issued, stock {stock})",
        verdict(promises.never_oversold() && sold_out_at_write == 0)
    );
    println!("never lose an issued coupon:  {} (every 201 has its row)", verdict(promises.never_lost()));
    println!("never grant one twice:        {} (no customer twice)", verdict(promises.twice() == 0));
    Ok(promises)
}

/// A spike for comparison, then the flood; writes the soak's section of the
/// benchmark page. Whether the promises held and the writer kept its group.
async fn soak(args: SoakArgs) -> anyhow::Result<bool> {
    println!("== a spike for comparison");
    let (spike_held, spike) = run(&comparison_spike(&args), args.spike_customers, args.spike_stock).await?;

    let (client, db) = args.target.connect(args.concurrency).await?;
    let stock = coupon_loadgen::soak::FLOOD_STOCK;
    let coupon = client.create_coupon("loadgen soak", stock as u64).await?;
    println!("== coupon {coupon}: flooding for {} s with {} requests in flight", args.seconds, args.concurrency);
    let watch = soak::Watch { writer_metrics: args.writer_metrics.clone(), redis_url: args.redis.clone() };
    let record = soak::run(
        &client,
        &db,
        &watch,
        (coupon, stock),
        Duration::from_secs(args.seconds),
        args.concurrency,
        Duration::from_secs(args.drain_timeout_s),
    )
    .await?;
    print_soak(&record);
    write_soak(&args, &record, &spike)?;
    Ok(spike_held && record.promises.held() && record.rebalances == 0)
}

/// The spike the soak is compared with: same target and concurrency.
fn comparison_spike(args: &SoakArgs) -> SpikeArgs {
    SpikeArgs {
        target: args.target.clone(),
        customers: Some(args.spike_customers),
        stock: Some(args.spike_stock),
        concurrency: args.concurrency,
        repeat_share: 0.1,
        drain_timeout_s: args.drain_timeout_s,
        mode: "kafka".into(),
        round: 1,
        json: None,
        no_writer: false,
        shards: 1,
    }
}

/// The flood's issuances, latency and drain, then what it did to the services.
fn print_soak(record: &soak::SoakRecord) {
    println!(
        "{} issued in {:.0} s ({:.0}/s), latency p50 {:.1} ms p99 {:.1} ms; drained {:.2} s after the flood",
        record.issued,
        record.flood_s,
        record.issued_per_s,
        record.latency.p50_ms,
        record.latency.p99_ms,
        record.drain_s
    );
    println!(
        "writer: {} rebalances, {:.2} commits/s, best second {} rows; max RSS {:?} MiB; Redis {:.0} bytes per customer",
        record.rebalances,
        record.commits_per_s,
        record.peak_rows_per_s,
        record.max_rss_mib,
        record.redis_bytes_per_customer
    );
    println!("promises: {:?}", record.promises);
}

/// The soak's record where `--json` says, its section of the page and its plot.
fn write_soak(args: &SoakArgs, record: &soak::SoakRecord, spike: &RunRecord) -> anyhow::Result<()> {
    write_json(args.json.as_deref(), record)?;
    let section = soak_report::markdown(record, spike, &args.machine, &args.command, &args.cross_check);
    soak_report::SECTION.write(&args.output, &section)?;
    soak_report::plot(record, &args.plots)?;
    println!("wrote the soak section of {} and {}/soak.svg", args.output.display(), args.plots.display());
    Ok(())
}

/// Two coupon-api processes, A and B: an idle window, many coupons on B,
/// another idle window, then spikes taking turns.
async fn many_coupons(args: ManyArgs) -> anyhow::Result<()> {
    let few = args.target.clone();
    let many = Target {
        api: args.api_many.clone(),
        management: args.management_many.clone(),
        database_url: args.database_url_many.clone(),
        ..few.clone()
    };
    let (_, db_few) = few.connect(1).await?;
    let (client_many, db_many) = many.connect(32).await?;
    let idle_before = idle_window(&args, [&db_few, &db_many]).await?;
    let (created, create_s) = create_many_coupons(&args, &client_many).await?;
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    let idle_after = idle_window(&args, [&db_few, &db_many]).await?;
    let (spikes_few, spikes_many) = spikes_taking_turns(&args, &few, &many).await?;

    let record = many::ManyRecord {
        idle_before,
        idle_after,
        spikes_few,
        spikes_many,
        created,
        create_s,
        settle_s: args.settle_s,
        customers: args.customers,
        stock: args.stock,
        concurrency: args.concurrency,
        machine: args.machine,
        command: args.command,
    };
    println!("throughput on B (many coupons): {:.1} % of A's", record.throughput_ratio() * 100.0);
    write_json(args.json.as_deref(), &record)?;
    many::SECTION.write(&args.output, &many::markdown(&record))?;
    println!("wrote the many-coupons section of {}", args.output.display());
    Ok(())
}

/// One idle window over A and B, whose databases are `dbs`, printed.
async fn idle_window(args: &ManyArgs, dbs: [&PgPool; 2]) -> anyhow::Result<many::IdleCost> {
    println!("== idle for {} s", args.idle_s);
    let open = [dbstats::open_coupons(dbs[0]).await?, dbstats::open_coupons(dbs[1]).await?];
    let pids = [args.pid, args.pid_many];
    let idle = many::idle(pids, &args.redis, open, Duration::from_secs(args.idle_s)).await?;
    println!("{idle:?}");
    Ok(idle)
}

/// Creates the many coupons on B; how many, and in how many seconds.
async fn create_many_coupons(args: &ManyArgs, client_many: &ApiClient) -> anyhow::Result<(usize, f64)> {
    println!("== creating {} coupons on B", args.coupons);
    let started = std::time::Instant::now();
    let created =
        many::create_coupons(client_many, args.coupons, 32, Duration::from_secs(args.open_for_s)).await?.len();
    Ok((created, started.elapsed().as_secs_f64()))
}

/// `--spikes` spikes on each of A (`few`) and B (`many`), A then B in turn;
/// the requests/s of each, per process.
async fn spikes_taking_turns(args: &ManyArgs, few: &Target, many: &Target) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut spikes_few, mut spikes_many) = (Vec::new(), Vec::new());
    for _ in 0..args.spikes {
        for (target, rates) in [(few, &mut spikes_few), (many, &mut spikes_many)] {
            let spike = SpikeArgs {
                target: target.clone(),
                customers: Some(args.customers),
                stock: Some(args.stock),
                concurrency: args.concurrency,
                repeat_share: 0.1,
                drain_timeout_s: 0,
                mode: "many".into(),
                round: 1,
                json: None,
                no_writer: true,
                shards: 1,
            };
            rates.push(run(&spike, args.customers, args.stock).await?.1.requests_per_s);
        }
    }
    Ok((spikes_few, spikes_many))
}

/// `value` as pretty JSON at `path`, if there is one.
fn write_json(path: Option<&std::path::Path>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    }
    Ok(())
}

async fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let db = db_pool(&args.database_url)?;
    let samples = durable::wait_for_rows(&db, args.coupon, args.expected, Duration::from_secs(args.timeout_s)).await?;
    // From the first sample past a tenth of the backlog: the steady rate, as
    // pgbench's is, without the consumer's start (its first fetches, and the
    // batches growing from 100), which would favour large first batches.
    let first = samples.iter().find(|(_, n)| *n * 10 >= args.expected).copied().unwrap_or_default();
    let last = samples.last().copied().unwrap_or_default();
    let rate = (last.1 - first.1) as f64 / (last.0 - first.0).as_secs_f64().max(1e-3);
    println!("{rate:.0}");
    Ok(())
}

fn token(args: &TokenArgs) -> anyhow::Result<String> {
    let (signer, ttl) = (args.jwt.signer(), Duration::from_secs(args.ttl_s));
    match (&args.service, args.customer) {
        (Some(service), _) => signer.service(service, &[SCOPE_REDEEM, SCOPE_RELEASE], ttl),
        (None, Some(customer)) => signer.customer(customer, ttl),
        (None, None) => anyhow::bail!("give --customer or --service"),
    }
}

async fn noop(args: NoopArgs) -> anyhow::Result<()> {
    let nobody = CustomerAuth::Gateway { header: "X-Customer-Id".into(), secret: String::new() };
    let client = ApiClient::new(&args.api, &args.management, "", nobody, args.concurrency)?;
    client.wait_ready(Duration::from_secs(30)).await?;
    println!("{:.0}", spike::noop_rate(&client, args.requests, args.concurrency).await);
    Ok(())
}

async fn trickle(args: TrickleArgs) -> anyhow::Result<()> {
    let (client, db) = args.target.connect(64).await?;
    let record = trickle::run(&client, &db, args.rate, args.seconds).await?;
    println!(
        "{} issued at {}/s: durable after mean {:.0} ms, p99 {:.0} ms, max {:.0} ms; {:.1} write transactions per 1,000",
        record.issued,
        record.rate,
        record.durable_mean_ms,
        record.durable_p99_ms,
        record.durable_max_ms,
        record.transactions_per_1k
    );
    write_json(args.json.as_deref(), &record)?;
    Ok(())
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(&args.runs)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            runs.push(serde_json::from_slice::<RunRecord>(&std::fs::read(&path)?)?);
        }
    }
    runs.sort_by(|a, b| (a.round, &a.mode).cmp(&(b.round, &b.mode)));
    let ceilings: report::Ceilings = serde_json::from_slice(&std::fs::read(&args.ceilings)?)?;
    report::plots(&runs, &args.plots)?;
    let mut page = report::markdown(&runs, &ceilings);
    // The sections other tools wrote stay as they were.
    let old = std::fs::read_to_string(&args.output).unwrap_or_default();
    for section in [soak_report::SECTION, many::SECTION] {
        if let Some(kept) = section.find(&old) {
            page = section.splice(&page, kept);
        }
    }
    std::fs::write(&args.output, page)?;
    println!("wrote {} and plots in {}", args.output.display(), args.plots.display());
    Ok(())
}
