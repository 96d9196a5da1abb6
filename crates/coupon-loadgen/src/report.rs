//! The benchmark report: a Markdown page with the runs side by side, the
//! TO-BE/AS-IS ratios and the ceilings, and SVG plots drawn by plotters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::chart::{self, Chart, DrawResult, LineAxis};
use crate::cpu::COMPONENTS;
use crate::latency::Latency;
use crate::record::RunRecord;
use crate::table;
use crate::trickle::TrickleRecord;

/// Measurements of the stores alone, taken in the same benchmark run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ceilings {
    /// The issue script driven by redis-benchmark, calls/s.
    pub redis_lua_calls_per_s: Option<f64>,
    /// `GET /noop` (answered 404 at once) through the load generator and coupon-api, requests/s.
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

/// The Kafka-mode runs with stronger Redis durability or secured links, by
/// their mode label (scripts/bench.sh), and what each adds.
const KAFKA_VARIANTS: [(&str, &str); 3] = [
    ("kafka+wait1", "`COUPON__REDIS__MIN_REPLICAS=1`: WAIT for one replica before each 201 (group commit)"),
    ("kafka+fsync-always", "`appendfsync always` on the single Redis"),
    (
        "kafka+tls",
        "the secure stack (`make up-secure`): TLS to Redis, PostgreSQL and Kafka, an ACL user, SCRAM at PostgreSQL, SASL/SCRAM at Kafka",
    ),
];

/// The CPU all processes used per 1,000 issuances a second: the busy share
/// of all cores during the spike over the rate.
fn cpu_per_thousand(run: &RunRecord) -> f64 {
    let busy: f64 = run.cpu_share.iter().filter(|(component, _)| *component != "idle").map(|(_, share)| share).sum();
    busy / (run.issued_per_s / 1_000.0).max(1e-9)
}

/// One row of the ratio table: its name, how to read it off a run, and
/// whether a higher value is the better one.
type Measure = (&'static str, fn(&RunRecord) -> f64, bool);

fn mean(runs: &[&RunRecord], f: impl Fn(&RunRecord) -> f64) -> f64 {
    runs.iter().map(|r| f(r)).sum::<f64>() / runs.len().max(1) as f64
}

/// The runs of one mode, in report order.
fn of_mode<'a>(runs: &'a [RunRecord], mode: &str) -> Vec<&'a RunRecord> {
    runs.iter().filter(|r| r.mode == mode).collect()
}

/// A `## heading` and what follows it, after a blank line.
fn section(heading: &str, body: &str) -> String {
    format!("\n## {heading}\n\n{body}")
}

/// The benchmark page: its sections in order, the optional ones only when
/// their runs or measurements exist.
pub fn markdown(runs: &[RunRecord], ceilings: &Ceilings) -> String {
    let (to_be, as_is) = (of_mode(runs, "kafka"), of_mode(runs, "sync-db"));
    [
        Some(title(ceilings)),
        Some(runs_section(runs)),
        ratio_section(&to_be, &as_is),
        variants_section(runs, &to_be),
        cpu_section(runs),
        Some(ceilings_section(ceilings, &to_be)),
        writer_limits_section(&ceilings.writer_limits_sweep),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The page's title, where and how it was measured, and the plots.
fn title(ceilings: &Ceilings) -> String {
    format!(
        "# Spike benchmark: Kafka design (TO-BE) against synchronous database writes (AS-IS)\n\n\
         Machine: {}  \nCommand: `{}`\n\n\
         What the numbers mean and what bounds them: [PERFORMANCE.md](PERFORMANCE.md).\n\n\
         ![latency](bench/latency.svg) ![throughput](bench/throughput.svg) ![lag](bench/lag.svg)\n",
        ceilings.machine, ceilings.command
    )
}

/// Every run, one row each, in the order they ran.
fn runs_section(runs: &[RunRecord]) -> String {
    let header = [
        "mode",
        "round",
        "requests",
        "issued",
        "issued/s",
        "requests/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "DB write tx per 10k issued",
        "peak DB conns",
        "durable after s",
    ];
    let rows = runs.iter().map(|r| {
        [
            r.mode.clone(),
            r.round.to_string(),
            r.requests.to_string(),
            r.issued.to_string(),
            format!("{:.0}", r.issued_per_s),
            format!("{:.0}", r.requests_per_s),
            format!("{:.2}", r.latency.p50_ms),
            format!("{:.2}", r.latency.p90_ms),
            format!("{:.2}", r.latency.p99_ms),
            format!("{:.2}", r.latency.p999_ms),
            format!("{:.2}", r.latency.max_ms),
            format!("{:.0}", r.transactions_per_10k()),
            r.peak_db_connections.to_string(),
            format!("{:.2}", r.durable_after_s),
        ]
    });
    section("Runs (alternating modes)", &table::markdown(header, rows))
}

/// TO-BE against AS-IS, means over rounds; only when both modes ran.
fn ratio_section(to_be: &[&RunRecord], as_is: &[&RunRecord]) -> Option<String> {
    if to_be.is_empty() || as_is.is_empty() {
        return None;
    }
    let measures: [Measure; 5] = [
        ("issued/s", |r| r.issued_per_s, true),
        ("requests/s", |r| r.requests_per_s, true),
        ("p99 latency ms", |r| r.latency.p99_ms, false),
        ("DB write transactions per 10,000 issued", |r| r.transactions_per_10k(), false),
        ("peak DB connections", |r| r.peak_db_connections as f64, false),
    ];
    let rows = measures.into_iter().map(|(name, f, higher_is_better)| {
        let (a, b) = (mean(to_be, f), mean(as_is, f));
        let ratio = if higher_is_better { a / b.max(1e-9) } else { b / a.max(1e-9) };
        let better = if higher_is_better { "TO-BE/AS-IS" } else { "AS-IS/TO-BE" };
        [name.to_string(), format!("{a:.2}"), format!("{b:.2}"), format!("{ratio:.1}× ({better})")]
    });
    let header = ["measure", "TO-BE (kafka)", "AS-IS (sync-db)", "ratio"];
    Some(section("TO-BE / AS-IS (means over rounds)", &table::markdown(header, rows)))
}

/// The stronger-durability and secured Kafka modes against plain `kafka`,
/// means over rounds; only when `kafka` and at least one of them ran.
fn variants_section(runs: &[RunRecord], to_be: &[&RunRecord]) -> Option<String> {
    let options: Vec<(&str, &str)> =
        KAFKA_VARIANTS.iter().copied().filter(|(mode, _)| !of_mode(runs, mode).is_empty()).collect();
    if to_be.is_empty() || options.is_empty() {
        return None;
    }
    let base = (mean(to_be, |r| r.issued_per_s), mean(to_be, |r| r.latency.p99_ms), mean(to_be, cpu_per_thousand));
    let row = |mode: &str, what: &str, runs: &[&RunRecord]| {
        let (issued, p99, cpu) =
            (mean(runs, |r| r.issued_per_s), mean(runs, |r| r.latency.p99_ms), mean(runs, cpu_per_thousand));
        [
            mode.to_string(),
            what.to_string(),
            format!("{issued:.0}"),
            format!("{:.2}", mean(runs, |r| r.latency.p50_ms)),
            format!("{p99:.2}"),
            format!("{cpu:.1}"),
            format!("{:.2}×", issued / base.0.max(1e-9)),
            format!("{:.2}×", p99 / base.1.max(1e-9)),
            // Runs without a CPU measure have none to compare.
            if base.2 > 0.0 { format!("{:.2}×", cpu / base.2) } else { "—".to_string() },
        ]
    };
    let kafka = row("kafka", "plaintext, `appendfsync everysec`, no WAIT (the default)", to_be);
    let variants = options.into_iter().map(|(mode, what)| row(mode, what, &of_mode(runs, mode)));
    let header = [
        "mode",
        "what it adds",
        "issued/s",
        "p50 ms",
        "p99 ms",
        "CPU % per 1,000 issued/s",
        "issued/s vs kafka",
        "p99 vs kafka",
        "CPU per issuance vs kafka",
    ];
    let table = table::markdown(header, std::iter::once(kafka).chain(variants));
    Some(section("What stronger Redis durability and secured links cost (means over rounds, against `kafka`)", &table))
}

/// Each component's share of the CPU per run; only the runs that measured it.
fn cpu_section(runs: &[RunRecord]) -> Option<String> {
    let measured: Vec<&RunRecord> = runs.iter().filter(|r| !r.cpu_share.is_empty()).collect();
    if measured.is_empty() {
        return None;
    }
    let header = ["mode", "round"].into_iter().chain(COMPONENTS);
    let rows = measured.into_iter().map(|r| {
        let shares = COMPONENTS.iter().map(|c| format!("{:.0}", r.cpu_share.get(*c).copied().unwrap_or(0.0)));
        [r.mode.clone(), r.round.to_string()].into_iter().chain(shares)
    });
    Some(section("Where the CPU went during each spike (% of all cores)", &table::markdown(header, rows)))
}

/// The stores' and the writer's ceilings, against what the HTTP path and
/// the writer reached; one bullet per ceiling measured.
fn ceilings_section(ceilings: &Ceilings, to_be: &[&RunRecord]) -> String {
    let http = mean(to_be, |r| r.issued_per_s);
    let mut bullets = String::new();
    if let Some(lua) = ceilings.redis_lua_calls_per_s {
        let _ = writeln!(
            bullets,
            "- Issue script via `redis-benchmark -c 50` (unpipelined): {lua:.0} calls/s; the HTTP path's successful issuances reach {http:.0}/s = {:.0}% of it.",
            100.0 * http / lua
        );
    }
    if let Some(noop) = ceilings.http_noop_requests_per_s {
        let lua = ceilings
            .redis_lua_calls_per_s
            .map_or(String::new(), |lua| format!(" = {:.0}% of the issue script's", 100.0 * noop / lua));
        let _ = writeln!(
            bullets,
            "- A request answered at once (`GET /noop`, a 404) through the same load generator and coupon-api: {noop:.0} requests/s{lua}; successful issuances reach {:.0}% of it.",
            100.0 * http / noop
        );
    }
    for (batch, pg) in &ceilings.pg_rows_per_s {
        let writer = ceilings.writer_rows_per_s.get(batch).copied();
        let _ = writeln!(
            bullets,
            "- Batch {batch}: pgbench {pg:.0} rows/s; writer draining a backlog {} ",
            writer.map_or("not measured".to_string(), |w| format!("{w:.0} rows/s = {:.0}% of it", 100.0 * w / pg))
        );
    }
    if let (Some(writer), Some((ceiling, pg))) =
        (ceilings.writer_default_rows_per_s, ceilings.pg_rows_per_s.last_key_value())
    {
        let _ = writeln!(
            bullets,
            "- Default limits (batches of 100 growing to {ceiling} while the backlog lasts): writer {writer:.0} rows/s = {:.0}% of pgbench at batch {ceiling}",
            100.0 * writer / pg
        );
    }
    section("Ceilings measured in the same run", &bullets)
}

/// The writer's latency and transactions under steady traffic, per batch
/// limits; only when the sweep ran.
fn writer_limits_section(sweep: &[LimitsPoint]) -> Option<String> {
    let first = sweep.first()?;
    let heading = format!(
        "The writer's batch limits under steady traffic ({} issuances/s for {} s)",
        first.trickle.rate, first.trickle.seconds
    );
    let header = [
        "max records",
        "max wait ms",
        "durable after: mean ms",
        "p99 ms",
        "max ms",
        "write transactions per 1,000 issued",
    ];
    let rows = sweep.iter().map(|p| {
        let t = &p.trickle;
        [
            p.batch.to_string(),
            p.wait_ms.to_string(),
            format!("{:.0}", t.durable_mean_ms),
            format!("{:.0}", t.durable_p99_ms),
            format!("{:.0}", t.durable_max_ms),
            format!("{:.1}", t.transactions_per_1k),
        ]
    });
    Some(section(&heading, &table::markdown(header, rows)))
}

fn chart_error(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {err}")
}

/// The size of each chart, in pixels.
const CHART_SIZE: (u32, u32) = (800, 450);

/// Draws latency.svg, throughput.svg and lag.svg into `dir`.
pub fn plots(runs: &[RunRecord], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).context("creating the plot folder")?;
    latency_chart(runs, &dir.join("latency.svg")).map_err(chart_error)?;
    throughput_chart(runs, &dir.join("throughput.svg")).map_err(chart_error)?;
    lag_chart(runs, &dir.join("lag.svg")).map_err(chart_error)?;
    Ok(())
}

/// One line per run, in its own color and named by mode and round, and the legend.
fn run_lines<'r, X: LineAxis, Y: LineAxis, P>(
    chart: &mut Chart<'_, X, Y>,
    runs: &'r [RunRecord],
    points: impl Fn(&'r RunRecord) -> P,
) -> DrawResult<()>
where
    P: IntoIterator<Item = (X::ValueType, Y::ValueType)>,
{
    for (i, r) in runs.iter().enumerate() {
        chart::labelled_line(chart, points(r), Palette99::pick(i).to_rgba(), format!("{} #{}", r.mode, r.round))?;
    }
    chart::legend(chart)
}

/// Each run's latency percentiles, on a log scale.
fn latency_chart(runs: &[RunRecord], path: &Path) -> DrawResult<()> {
    let root = chart::canvas(path, CHART_SIZE)?;
    let max = runs.iter().map(|r| r.latency.max_ms).fold(1.0, f64::max);
    let mut chart =
        chart::frame(&root, "Latency percentiles (ms, log scale)", 50, 0..4usize, (0.01f64..max * 1.5).log_scale())?;
    chart.configure_mesh().x_label_formatter(&|i| Latency::NAMES.get(*i).copied().unwrap_or("").to_string()).draw()?;
    run_lines(&mut chart, runs, |r| r.latency.points().into_iter().enumerate().map(|(x, y)| (x, y.max(0.01))))?;
    root.present()
}

/// Each run's answers per second, second by second.
fn throughput_chart(runs: &[RunRecord], path: &Path) -> DrawResult<()> {
    let root = chart::canvas(path, CHART_SIZE)?;
    let seconds = runs.iter().map(|r| r.timeline.len()).max().unwrap_or(1);
    let peak = runs.iter().flat_map(|r| r.timeline.iter().copied()).max().unwrap_or(1);
    let mut chart = chart::frame(&root, "Answers per second during the spike", 60, 0..seconds, 0..peak + peak / 10)?;
    chart.configure_mesh().x_desc("second").draw()?;
    run_lines(&mut chart, runs, |r| r.timeline.iter().copied().enumerate())?;
    root.present()
}

/// Each run's issuances not yet in PostgreSQL, after the spike.
fn lag_chart(runs: &[RunRecord], path: &Path) -> DrawResult<()> {
    let root = chart::canvas(path, CHART_SIZE)?;
    let span = runs.iter().flat_map(|r| r.lag.iter().map(|(t, _)| *t)).fold(1.0, f64::max);
    let most = runs.iter().flat_map(|r| r.lag.iter().map(|(_, n)| *n)).max().unwrap_or(1).max(1);
    let mut chart = chart::frame(
        &root,
        "Issued but not yet in PostgreSQL, after the spike",
        60,
        0f64..span,
        0i64..most + most / 10,
    )?;
    chart.configure_mesh().x_desc("seconds after the spike").draw()?;
    run_lines(&mut chart, runs, |r| r.lag.iter().copied())?;
    root.present()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: &str, round: u32, issued_per_s: f64, p99_ms: f64) -> RunRecord {
        RunRecord {
            mode: mode.into(),
            round,
            coupon: 1,
            customers: 500,
            stock: 100,
            concurrency: 8,
            requests: 500,
            issued: 100,
            elapsed_s: 0.5,
            requests_per_s: 1000.4,
            issued_per_s,
            latency: Latency { p50_ms: 1.234, p90_ms: 2.0, p99_ms, p999_ms: 9.999, max_ms: 12.5 },
            outcomes: vec![("ISSUED".into(), 100)],
            timeline: vec![400, 100],
            durable_after_s: 0.126,
            lag: vec![(0.0, 50), (0.5, 0)],
            db_transactions: 2,
            peak_db_connections: 3,
            cpu_share: BTreeMap::new(),
        }
    }

    fn ceilings() -> Ceilings {
        Ceilings { machine: "test".into(), command: "make bench".into(), ..Ceilings::default() }
    }

    fn headings(md: &str) -> Vec<&str> {
        md.lines().filter(|line| line.starts_with('#')).collect()
    }

    /// The table right under `heading`, as trimmed cells, header first.
    fn table_under(md: &str, heading: &str) -> Vec<Vec<String>> {
        let start = md.find(heading).unwrap_or_else(|| panic!("no {heading:?} in {md}"));
        let after = &md[start + heading.len()..];
        let end = after.find("\n## ").unwrap_or(after.len());
        table::rows(&after[..end])
    }

    #[test]
    fn the_runs_table_has_one_row_per_run_with_its_numbers() {
        let runs = [run("kafka", 1, 2000.0, 4.0), run("sync-db", 1, 499.5, 40.0)];
        let md = markdown(&runs, &ceilings());
        assert!(md.starts_with("# Spike benchmark: Kafka design (TO-BE)"), "{md}");
        assert!(md.contains("Machine: test  \nCommand: `make bench`\n"), "{md}");
        let table = table_under(&md, "## Runs (alternating modes)");
        assert_eq!(
            table[0],
            [
                "mode",
                "round",
                "requests",
                "issued",
                "issued/s",
                "requests/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "DB write tx per 10k issued",
                "peak DB conns",
                "durable after s",
            ]
        );
        assert_eq!(table.len(), 3, "a header and one row per run: {md}");
        assert_eq!(
            table[1],
            ["kafka", "1", "500", "100", "2000", "1000", "1.23", "2.00", "4.00", "10.00", "12.50", "200", "3", "0.13"]
        );
        assert_eq!(table[2][..5], ["sync-db", "1", "500", "100", "500"]);
        assert_eq!(table[2][8], "40.00");
    }

    #[test]
    fn the_ratio_table_appears_only_when_both_modes_ran() {
        let both = [run("kafka", 1, 2000.0, 4.0), run("sync-db", 1, 500.0, 40.0), run("kafka", 2, 4000.0, 8.0)];
        let md = markdown(&both, &ceilings());
        let table = table_under(&md, "## TO-BE / AS-IS (means over rounds)");
        assert_eq!(table[0], ["measure", "TO-BE (kafka)", "AS-IS (sync-db)", "ratio"]);
        assert_eq!(table[1], ["issued/s", "3000.00", "500.00", "6.0× (TO-BE/AS-IS)"]);
        assert_eq!(table[3], ["p99 latency ms", "6.00", "40.00", "6.7× (AS-IS/TO-BE)"]);
        assert_eq!(table.len(), 6, "a header and five measures: {md}");

        for one_mode in [&both[..1], &both[1..2]] {
            let md = markdown(one_mode, &ceilings());
            assert!(!md.contains("TO-BE / AS-IS"), "{md}");
        }
    }

    #[test]
    fn the_sections_come_in_order_and_only_when_measured() {
        let mut runs = vec![run("kafka", 1, 2000.0, 4.0), run("kafka+wait1", 1, 1000.0, 8.0)];
        runs[1].cpu_share = COMPONENTS.iter().map(|c| (c.to_string(), 12.6)).collect();
        let trickle = TrickleRecord {
            rate: 200,
            seconds: 10,
            issued: 2000,
            durable_mean_ms: 48.4,
            durable_p99_ms: 101.5,
            durable_max_ms: 284.5,
            transactions_per_1k: 77.55,
        };
        let ceilings = Ceilings {
            redis_lua_calls_per_s: Some(10_000.0),
            writer_limits_sweep: vec![LimitsPoint { batch: 100, wait_ms: 50, trickle }],
            ..ceilings()
        };
        let md = markdown(&runs, &ceilings);
        assert_eq!(
            headings(&md),
            [
                "# Spike benchmark: Kafka design (TO-BE) against synchronous database writes (AS-IS)",
                "## Runs (alternating modes)",
                "## What stronger Redis durability and secured links cost (means over rounds, against `kafka`)",
                "## Where the CPU went during each spike (% of all cores)",
                "## Ceilings measured in the same run",
                "## The writer's batch limits under steady traffic (200 issuances/s for 10 s)",
            ]
        );
        let durability = table_under(&md, "against `kafka`)");
        assert_eq!(durability.len(), 3, "{md}");
        assert_eq!(durability[1][0], "kafka");
        assert_eq!(durability[2][..3], ["kafka+wait1", KAFKA_VARIANTS[0].1, "1000"]);
        assert_eq!(durability[2][5..], ["88.2", "0.50×", "2.00×", "—"]);
        let cpu = table_under(&md, "(% of all cores)");
        assert_eq!(cpu[0][..3], ["mode", "round", COMPONENTS[0]]);
        assert_eq!(cpu.len(), 2, "only the run that measured its CPU: {md}");
        assert_eq!(cpu[1][..3], ["kafka+wait1", "1", "13"]);
        assert!(md.contains(
            "(unpipelined): 10000 calls/s; the HTTP path's successful issuances reach 2000/s = 20% of it.\n"
        ));
        let sweep = table_under(&md, "(200 issuances/s for 10 s)");
        assert_eq!(sweep[1], ["100", "50", "48", "102", "284", "77.5"]);

        let md = markdown(&runs[..1], &Ceilings::default());
        assert_eq!(headings(&md)[1..], ["## Runs (alternating modes)", "## Ceilings measured in the same run"], "{md}");
    }

    #[test]
    fn the_plots_are_three_svg_files_with_a_line_per_run() {
        let dir = std::env::temp_dir().join(format!("coupon-loadgen-report-{}", std::process::id()));
        let runs = [run("kafka", 1, 2000.0, 4.0), run("sync-db", 2, 500.0, 40.0)];
        plots(&runs, &dir).unwrap();
        for chart in ["latency.svg", "throughput.svg", "lag.svg"] {
            let svg = std::fs::read_to_string(dir.join(chart)).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("kafka #1") && svg.contains("sync-db #2"), "{chart}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
