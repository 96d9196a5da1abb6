//! Many coupons at once: what open coupons cost one idle coupon-api and its
//! Redis, and whether they slow issuance down (`make bench`'s many-coupons
//! section).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::client::ApiClient;
use crate::page::Section;
use crate::table;

pub const SECTION: Section =
    Section { begin: "<!-- many-coupons: written by `make bench` -->", end: "<!-- /many-coupons -->" };

/// One window with no traffic, over both coupon-api processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleCost {
    /// Coupons open in each process's PostgreSQL (and so in its Redis keys).
    pub open_coupons: [i64; 2],
    pub seconds: f64,
    /// Each process's CPU time over the window, in percent of one core.
    pub api_cpu_percent: [f64; 2],
    /// Commands Redis processed per second for both (this tool's own two
    /// left out).
    pub redis_commands_per_s: f64,
}

/// Measures one idle window of `window`: the coupon-api processes `pids` and
/// the Redis at `redis_url`, which nothing else may use meanwhile.
pub async fn idle(
    pids: [i32; 2],
    redis_url: &str,
    open_coupons: [i64; 2],
    window: Duration,
) -> anyhow::Result<IdleCost> {
    let mut redis = redis::Client::open(redis_url)?.get_multiplexed_async_connection().await?;
    let cpu_before = [process_ticks(pids[0])?, process_ticks(pids[1])?];
    let commands_before = commands_processed(&mut redis).await?;
    let started = std::time::Instant::now();
    tokio::time::sleep(window).await;
    let commands_after = commands_processed(&mut redis).await?;
    let cpu_after = [process_ticks(pids[0])?, process_ticks(pids[1])?];
    let seconds = started.elapsed().as_secs_f64();
    let percent =
        |i: usize| (cpu_after[i] - cpu_before[i]) as f64 / procfs::ticks_per_second() as f64 / seconds * 100.0;
    Ok(IdleCost {
        open_coupons,
        seconds,
        api_cpu_percent: [percent(0), percent(1)],
        // The first INFO is counted in the second's figure.
        redis_commands_per_s: commands_after.saturating_sub(commands_before + 1) as f64 / seconds,
    })
}

fn process_ticks(pid: i32) -> anyhow::Result<u64> {
    let stat = procfs::process::Process::new(pid)?.stat().with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(stat.utime + stat.stime)
}

async fn commands_processed(redis: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("stats").query_async(redis).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .context("INFO stats has no total_commands_processed")
}

/// Creates `count` coupons of one unit each, open from now for `lasting`.
pub async fn create_coupons(
    client: &ApiClient,
    count: usize,
    concurrency: usize,
    lasting: Duration,
) -> anyhow::Result<Vec<i64>> {
    stream::iter(0..count)
        .map(|_| client.create_coupon_for("loadgen many coupons", 1, lasting))
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

/// The many-coupons run: two coupon-api processes alike but for their
/// database, topic and key prefix, A and B. An idle window; then B gets many
/// coupons and another idle window; then spikes taking turns, A then B, so
/// whatever drifts over the run (a warming broker, a growing Redis) weighs on
/// both alike.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManyRecord {
    pub idle_before: IdleCost,
    pub idle_after: IdleCost,
    /// Requests/s of each spike on A (few coupons open), in order.
    pub spikes_few: Vec<f64>,
    /// The same on B (many coupons open).
    pub spikes_many: Vec<f64>,
    pub created: usize,
    pub create_s: f64,
    pub settle_s: u64,
    pub customers: u64,
    pub stock: u64,
    pub concurrency: usize,
    pub machine: String,
    pub command: String,
}

/// The median: one spike disturbed by something else on the machine (the
/// broker rolling a segment, say) moves it less than the mean.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

impl ManyRecord {
    /// Median spike throughput with many coupons open, relative to few (1.0: the same).
    pub fn throughput_ratio(&self) -> f64 {
        median(&self.spikes_many) / median(&self.spikes_few).max(f64::MIN_POSITIVE)
    }
}

/// The many-coupons section, between its markers: what ran, the idle cost
/// before and after, and the spikes.
pub fn markdown(record: &ManyRecord) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{}\n## Many coupons at once\n", SECTION.begin);
    let _ = writeln!(md, "Machine: {}  \nCommand: `{}`\n", record.machine, record.command);
    let _ = writeln!(md, "{}\n", what_ran(record));
    md.push_str(&idle_table(record));
    let _ = writeln!(md, "\n{}\n{}", spikes(record), SECTION.end);
    md
}

/// The paragraph saying how the two processes were measured.
fn what_ran(record: &ManyRecord) -> String {
    format!(
        "Two coupon-api processes, A and B, alike but for their database, topic and key prefix, on one Redis. \
         Idle: no requests for {:.0} s; each process's CPU time from /proc, Redis's \
         `total_commands_processed`. Then {} coupons created on B through the admin API ({:.1} s), a pause \
         of {} s, and another idle window. Then spikes taking turns, A then B: {} customers for a coupon of \
         {}, {} requests in flight, the writer not awaited.",
        record.idle_before.seconds,
        record.created,
        record.create_s,
        record.settle_s,
        record.customers,
        record.stock,
        record.concurrency
    )
}

/// The idle cost before and after B got its coupons, one row each.
fn idle_table(record: &ManyRecord) -> String {
    let after = format!("after B got {}", record.created);
    let rows = [("before", &record.idle_before), (after.as_str(), &record.idle_after)].map(|(label, idle)| {
        [
            label.to_string(),
            format!("{} / {}", idle.open_coupons[0], idle.open_coupons[1]),
            format!("{:.2} / {:.2}", idle.api_cpu_percent[0], idle.api_cpu_percent[1]),
            format!("{:.1}", idle.redis_commands_per_s),
        ]
    });
    let header = ["idle window", "open coupons A / B", "CPU A / B, % of a core", "Redis commands/s, both"];
    table::markdown(header, rows)
}

/// The spikes' rates on A and on B, their medians, and B's against A's.
fn spikes(record: &ManyRecord) -> String {
    let rates = |rates: &[f64]| rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
    let open = &record.idle_after.open_coupons;
    format!(
        "Spikes, requests/s: A ({} open coupons) {} (median {:.0}); B ({} open coupons) {} (median {:.0}). \
         B's throughput is {:.1} % of A's.",
        open[0],
        rates(&record.spikes_few),
        median(&record.spikes_few),
        open[1],
        rates(&record.spikes_many),
        median(&record.spikes_many),
        record.throughput_ratio() * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(open_coupons: [i64; 2], cpu: f64, commands: f64) -> IdleCost {
        IdleCost { open_coupons, seconds: 30.0, api_cpu_percent: [cpu, cpu], redis_commands_per_s: commands }
    }

    #[test]
    fn the_section_compares_few_and_many_coupons() {
        let record = ManyRecord {
            idle_before: idle([0, 0], 0.1, 1.5),
            idle_after: idle([1, 10_001], 0.2, 2.0),
            spikes_few: vec![10_000.0, 12_000.0, 30_000.0],
            spikes_many: vec![10_500.0, 11_000.0, 12_000.0],
            created: 10_000,
            create_s: 8.0,
            settle_s: 10,
            customers: 50_000,
            stock: 10_000,
            concurrency: 256,
            machine: "test".into(),
            command: "make bench".into(),
        };
        assert!((record.throughput_ratio() - 11_000.0 / 12_000.0).abs() < 1e-9, "medians, not means");
        let md = markdown(&record);
        assert!(md.starts_with(SECTION.begin) && md.trim_end().ends_with(SECTION.end), "{md}");
        assert!(
            table::rows(&md).contains(&vec![
                "after B got 10000".to_string(),
                "1 / 10001".into(),
                "0.20 / 0.20".into(),
                "2.0".into()
            ]),
            "{md}"
        );
        assert!(md.contains("B (10001 open coupons) 10500, 11000, 12000 (median 11000)"), "{md}");
        assert!(md.contains("B's throughput is 91.7 % of A's"), "{md}");
    }
}
