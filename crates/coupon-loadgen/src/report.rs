//! The benchmark report: a Markdown page with the runs side by side, the
//! TO-BE/AS-IS ratios and the ceilings, and SVG plots drawn by plotters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cpu::COMPONENTS;
use crate::record::RunRecord;
use crate::trickle::TrickleRecord;

/// Measurements of the stores alone, taken in the same benchmark run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ceilings {
    /// The issue script driven by redis-benchmark, calls/s.
    pub redis_lua_calls_per_s: Option<f64>,
    /// `GET /health/live` (does nothing) through the load generator and coupon-api, requests/s.
    #[serde(default)]
    pub http_noop_requests_per_s: Option<f64>,
    /// The writer's statements driven by pgbench, rows/s per batch size.
    pub pg_rows_per_s: BTreeMap<u32, f64>,
    /// The writer draining a backlog, rows/s per fixed batch size.
    pub writer_rows_per_s: BTreeMap<u32, f64>,
    /// The writer draining the same backlog with its default limits (batches
    /// growing to the ceiling), rows/s.
    #[serde(default)]
    pub writer_default_rows_per_s: Option<f64>,
    /// Steady traffic against the writer under several batch limits.
    #[serde(default)]
    pub writer_limits_sweep: Vec<LimitsPoint>,
    pub machine: String,
    pub command: String,
}

/// The writer's batch limits and what they gave under steady traffic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LimitsPoint {
    pub batch: u32,
    pub wait_ms: u64,
    #[serde(flatten)]
    pub trickle: TrickleRecord,
}

/// The Kafka-mode runs with stronger Redis durability, by their mode label
/// (scripts/bench.sh), and what each adds.
const DURABILITY_OPTIONS: [(&str, &str); 2] = [
    ("kafka+wait1", "`COUPON__REDIS__MIN_REPLICAS=1`: WAIT for one replica before each 201 (group commit)"),
    ("kafka+fsync-always", "`appendfsync always` on the single Redis"),
];

/// One row of the ratio table: its name, how to read it off a run, and
/// whether a higher value is the better one.
type Measure = (&'static str, fn(&RunRecord) -> f64, bool);

fn mean(runs: &[&RunRecord], f: impl Fn(&RunRecord) -> f64) -> f64 {
    runs.iter().map(|r| f(r)).sum::<f64>() / runs.len().max(1) as f64
}

pub fn markdown(runs: &[RunRecord], ceilings: &Ceilings) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Spike benchmark: Kafka design (TO-BE) against synchronous database writes (AS-IS)\n");
    let _ = writeln!(md, "Machine: {}  \nCommand: `{}`\n", ceilings.machine, ceilings.command);
    let _ = writeln!(md, "What the numbers mean and what bounds them: [PERFORMANCE.md](PERFORMANCE.md).\n");
    let _ = writeln!(md, "![latency](bench/latency.svg) ![throughput](bench/throughput.svg) ![lag](bench/lag.svg)\n");
    let _ = writeln!(md, "## Runs (alternating modes)\n");
    let _ = writeln!(
        md,
        "| mode | round | requests | issued | issued/s | requests/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | DB write tx per 10k issued | peak DB conns | durable after s |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {:.2} |",
            r.mode,
            r.round,
            r.requests,
            r.issued,
            r.issued_per_s,
            r.requests_per_s,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            r.transactions_per_10k(),
            r.peak_db_connections,
            r.durable_after_s
        );
    }

    let by_mode = |mode: &str| runs.iter().filter(|r| r.mode == mode).collect::<Vec<_>>();
    let (to_be, as_is) = (by_mode("kafka"), by_mode("sync-db"));
    if !to_be.is_empty() && !as_is.is_empty() {
        let _ = writeln!(md, "\n## TO-BE / AS-IS (means over rounds)\n");
        let _ = writeln!(md, "| measure | TO-BE (kafka) | AS-IS (sync-db) | ratio |\n|---|---|---|---|");
        let rows: [Measure; 5] = [
            ("issued/s", |r| r.issued_per_s, true),
            ("requests/s", |r| r.requests_per_s, true),
            ("p99 latency ms", |r| r.p99_ms, false),
            ("DB write transactions per 10,000 issued", |r| r.transactions_per_10k(), false),
            ("peak DB connections", |r| r.peak_db_connections as f64, false),
        ];
        for (name, f, higher_is_better) in rows {
            let (a, b) = (mean(&to_be, f), mean(&as_is, f));
            let ratio = if higher_is_better { a / b.max(1e-9) } else { b / a.max(1e-9) };
            let better = if higher_is_better { "TO-BE/AS-IS" } else { "AS-IS/TO-BE" };
            let _ = writeln!(md, "| {name} | {a:.2} | {b:.2} | {ratio:.1}× ({better}) |");
        }
    }

    let options: Vec<(&str, &str)> =
        DURABILITY_OPTIONS.iter().copied().filter(|(mode, _)| !by_mode(mode).is_empty()).collect();
    if !to_be.is_empty() && !options.is_empty() {
        let _ = writeln!(md, "\n## What stronger Redis durability costs (means over rounds, against `kafka`)\n");
        let _ = writeln!(md, "| mode | what it adds | issued/s | p50 ms | p99 ms | issued/s vs kafka | p99 vs kafka |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        let base = (mean(&to_be, |r| r.issued_per_s), mean(&to_be, |r| r.p99_ms));
        let _ = writeln!(
            md,
            "| kafka | `appendfsync everysec`, no WAIT (the default) | {:.0} | {:.2} | {:.2} | 1.00× | 1.00× |",
            base.0,
            mean(&to_be, |r| r.p50_ms),
            base.1
        );
        for (mode, what) in options {
            let runs = by_mode(mode);
            let (issued, p99) = (mean(&runs, |r| r.issued_per_s), mean(&runs, |r| r.p99_ms));
            let _ = writeln!(
                md,
                "| {mode} | {what} | {issued:.0} | {:.2} | {p99:.2} | {:.2}× | {:.2}× |",
                mean(&runs, |r| r.p50_ms),
                issued / base.0.max(1e-9),
                p99 / base.1.max(1e-9)
            );
        }
    }

    if runs.iter().any(|r| !r.cpu_share.is_empty()) {
        let _ = writeln!(md, "\n## Where the CPU went during each spike (% of all cores)\n");
        let _ = writeln!(md, "| mode | round | {} |", COMPONENTS.join(" | "));
        let _ = writeln!(md, "|---|---|{}", "---|".repeat(COMPONENTS.len()));
        for r in runs.iter().filter(|r| !r.cpu_share.is_empty()) {
            let shares: Vec<String> =
                COMPONENTS.iter().map(|c| format!("{:.0}", r.cpu_share.get(*c).copied().unwrap_or(0.0))).collect();
            let _ = writeln!(md, "| {} | {} | {} |", r.mode, r.round, shares.join(" | "));
        }
    }

    let _ = writeln!(md, "\n## Ceilings measured in the same run\n");
    if let Some(lua) = ceilings.redis_lua_calls_per_s {
        let http = mean(&to_be, |r| r.issued_per_s);
        let _ = writeln!(
            md,
            "- Issue script via `redis-benchmark -c 50` (unpipelined): {lua:.0} calls/s; the HTTP path's successful issuances reach {:.0}/s = {:.0}% of it.",
            http,
            100.0 * http / lua
        );
    }
    if let Some(noop) = ceilings.http_noop_requests_per_s {
        let http = mean(&to_be, |r| r.issued_per_s);
        let lua = ceilings
            .redis_lua_calls_per_s
            .map_or(String::new(), |lua| format!(" = {:.0}% of the issue script's", 100.0 * noop / lua));
        let _ = writeln!(
            md,
            "- An endpoint that does nothing (`GET /health/live`) through the same load generator and coupon-api: {noop:.0} requests/s{lua}; successful issuances reach {:.0}% of it.",
            100.0 * http / noop
        );
    }
    for (batch, pg) in &ceilings.pg_rows_per_s {
        let writer = ceilings.writer_rows_per_s.get(batch).copied();
        let _ = writeln!(
            md,
            "- Batch {batch}: pgbench {pg:.0} rows/s; writer draining a backlog {} ",
            writer.map_or("not measured".to_string(), |w| format!("{w:.0} rows/s = {:.0}% of it", 100.0 * w / pg))
        );
    }
    if let (Some(writer), Some((ceiling, pg))) =
        (ceilings.writer_default_rows_per_s, ceilings.pg_rows_per_s.last_key_value())
    {
        let _ = writeln!(
            md,
            "- Default limits (batches of 100 growing to {ceiling} while the backlog lasts): writer {writer:.0} rows/s = {:.0}% of pgbench at batch {ceiling}",
            100.0 * writer / pg
        );
    }
    if let Some(first) = ceilings.writer_limits_sweep.first() {
        let _ = writeln!(
            md,
            "\n## The writer's batch limits under steady traffic ({} issuances/s for {} s)\n",
            first.trickle.rate, first.trickle.seconds
        );
        let _ = writeln!(
            md,
            "| max records | max wait ms | durable after: mean ms | p99 ms | max ms | write transactions per 1,000 issued |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for p in &ceilings.writer_limits_sweep {
            let t = &p.trickle;
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.1} |",
                p.batch, p.wait_ms, t.durable_mean_ms, t.durable_p99_ms, t.durable_max_ms, t.transactions_per_1k
            );
        }
    }
    md
}

fn chart_error(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {err}")
}

/// Draws latency.svg, throughput.svg and lag.svg into `dir`.
pub fn plots(runs: &[RunRecord], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).context("creating the plot folder")?;
    let palette = |i: usize| Palette99::pick(i).to_rgba();
    let label = |r: &RunRecord| format!("{} #{}", r.mode, r.round);

    let path = dir.join("latency.svg");
    let root = SVGBackend::new(&path, (800, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let max = runs.iter().map(|r| r.max_ms).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency percentiles (ms, log scale)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0..4usize, (0.01f64..max * 1.5).log_scale())
        .map_err(chart_error)?;
    let names = ["p50", "p90", "p99", "p99.9", "max"];
    chart
        .configure_mesh()
        .x_label_formatter(&|i| names.get(*i).copied().unwrap_or("").to_string())
        .draw()
        .map_err(chart_error)?;
    for (i, r) in runs.iter().enumerate() {
        let points = [r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms];
        chart
            .draw_series(LineSeries::new(points.iter().enumerate().map(|(x, y)| (x, y.max(0.01))), palette(i)))
            .map_err(chart_error)?
            .label(label(r))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], palette(i)));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(chart_error)?;
    root.present().map_err(chart_error)?;

    let path = dir.join("throughput.svg");
    let root = SVGBackend::new(&path, (800, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let seconds = runs.iter().map(|r| r.timeline.len()).max().unwrap_or(1);
    let peak = runs.iter().flat_map(|r| r.timeline.iter().copied()).max().unwrap_or(1);
    let mut chart = ChartBuilder::on(&root)
        .caption("Answers per second during the spike", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0..seconds, 0..peak + peak / 10)
        .map_err(chart_error)?;
    chart.configure_mesh().x_desc("second").draw().map_err(chart_error)?;
    for (i, r) in runs.iter().enumerate() {
        chart
            .draw_series(LineSeries::new(r.timeline.iter().copied().enumerate(), palette(i)))
            .map_err(chart_error)?
            .label(label(r))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], palette(i)));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(chart_error)?;
    root.present().map_err(chart_error)?;

    let path = dir.join("lag.svg");
    let root = SVGBackend::new(&path, (800, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let span = runs.iter().flat_map(|r| r.lag.iter().map(|(t, _)| *t)).fold(1.0, f64::max);
    let most = runs.iter().flat_map(|r| r.lag.iter().map(|(_, n)| *n)).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption("Issued but not yet in PostgreSQL, after the spike", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..span, 0i64..most + most / 10)
        .map_err(chart_error)?;
    chart.configure_mesh().x_desc("seconds after the spike").draw().map_err(chart_error)?;
    for (i, r) in runs.iter().enumerate() {
        chart
            .draw_series(LineSeries::new(r.lag.iter().copied(), palette(i)))
            .map_err(chart_error)?
            .label(label(r))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], palette(i)));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(chart_error)?;
    root.present().map_err(chart_error)?;
    Ok(())
}
