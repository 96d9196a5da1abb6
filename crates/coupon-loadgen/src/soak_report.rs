//! The soak's section of docs/BENCHMARK.md, side by side with a spike of the
//! same run, and its plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::chart::{self, DrawResult};
use crate::latency::Latency;
use crate::page::Section;
use crate::promises::Promises;
use crate::record::RunRecord;
use crate::soak::{Second, SoakRecord};
use crate::table;

pub const SECTION: Section = Section { begin: "<!-- soak: written by `make soak` -->", end: "<!-- /soak -->" };
const BEGIN: &str = SECTION.begin;
const END: &str = SECTION.end;

/// The soak's section, between its markers: what ran, the spike and the
/// soak side by side, the cross-check when there is one, and the plot.
pub fn markdown(soak: &SoakRecord, spike: &RunRecord, machine: &str, command: &str, cross_check: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{BEGIN}\n## A sustained flood (`make soak`)\n");
    let _ = writeln!(md, "Machine: {machine}  \nCommand: `{command}`\n");
    let _ = writeln!(md, "{}\n", what_ran(soak, spike));
    md.push_str(&table::markdown(["", "spike", "soak"], side_by_side(soak, spike)));
    if !cross_check.is_empty() {
        let _ = writeln!(md, "\nCross-check: {cross_check}.");
    }
    let _ = writeln!(md, "\n![soak](bench/soak.svg)\n{END}");
    md
}

/// The paragraph saying what the soak and its comparison spike did.
fn what_ran(soak: &SoakRecord, spike: &RunRecord) -> String {
    format!(
        "One coupon with stock for everyone, a new customer per request, {} requests in flight for {:.0} s; \
         a spike of {} customers for a coupon of {} on the same services just before, for comparison. \
         Every second: issuances, the writer's rows and lag, offset commits, each service's memory.",
        soak.concurrency, soak.flood_s, spike.customers, spike.stock
    )
}

/// Latency percentiles as `p50 / p90 / p99 / p99.9 / max`, in ms.
fn latencies(latency: &Latency) -> String {
    latency.points().map(|ms| format!("{ms:.1}")).join(" / ")
}

/// The soak's three promises and what broke them, as one cell.
fn promises(p: &Promises) -> String {
    format!(
        "never oversold: {}; lost: {}; rows without a 201: {}; twice: {}; sold out at write: {}",
        if p.never_oversold() { "held" } else { "**BROKEN**" },
        p.lost.len(),
        p.rows_without_201.len(),
        p.twice(),
        p.sold_out_at_write
    )
}

/// The comparison table's rows: what, the spike's value, the soak's value.
fn side_by_side(soak: &SoakRecord, spike: &RunRecord) -> [[String; 3]; 13] {
    let row = |what: &str, spike: String, soak: String| [what.to_string(), spike, soak];
    let only_soak = |what: &str, soak: String| row(what, "–".into(), soak);
    [
        row("duration", format!("{:.1} s", spike.elapsed_s), format!("{:.1} s", soak.flood_s)),
        row("requests", spike.requests.to_string(), soak.requests.to_string()),
        row("issued (201)", spike.issued.to_string(), soak.issued.to_string()),
        row(
            "requests/s",
            format!("{:.0}", spike.requests_per_s),
            format!("{:.0}", soak.requests as f64 / soak.flood_s),
        ),
        row("issued/s", format!("{:.0}", spike.issued_per_s), format!("{:.0}", soak.issued_per_s)),
        row("latency p50 / p90 / p99 / p99.9 / max, ms", latencies(&spike.latency), latencies(&soak.latency)),
        only_soak("writer rows/s, best second", soak.peak_rows_per_s.to_string()),
        only_soak("writer group rebalances", soak.rebalances.to_string()),
        only_soak("offset commits/s", format!("{:.2}", soak.commits_per_s)),
        only_soak(
            "max RSS, MiB",
            soak.max_rss_mib.iter().map(|(s, mib)| format!("{s} {mib:.0}")).collect::<Vec<_>>().join(", "),
        ),
        only_soak("Redis memory per issued customer", format!("{:.0} bytes", soak.redis_bytes_per_customer)),
        row(
            "all durable after the last answer",
            format!("{:.2} s", spike.durable_after_s),
            format!("{:.2} s", soak.drain_s),
        ),
        row("promises", "checked by the spike".into(), promises(&soak.promises)),
    ]
}

fn chart_error(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the soak chart: {err}")
}

/// Draws soak.svg into `dir`: issuances and the writer's rows per second
/// above, the writer's lag below.
pub fn plot(soak: &SoakRecord, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).context("creating the plot folder")?;
    soak_chart(soak, &dir.join("soak.svg")).map_err(chart_error)
}

/// The rates above, the lag below, over the same seconds.
fn soak_chart(soak: &SoakRecord, path: &Path) -> DrawResult<()> {
    let root = chart::canvas(path, (900, 700))?;
    let (upper, lower) = root.split_vertically(400);
    let span = soak.timeline.last().map_or(1.0, |s| s.at_s).max(1.0);
    rates_chart(soak, &upper, span)?;
    lag_chart(soak, &lower, span)?;
    root.present()
}

/// Reads one per-second count off a sample.
type PerSecond = fn(&Second) -> u64;

/// Issuances and the writer's rows, per second, over `span` seconds.
fn rates_chart(soak: &SoakRecord, area: &DrawingArea<SVGBackend<'_>, Shift>, span: f64) -> DrawResult<()> {
    let peak = soak.timeline.iter().map(|s| s.issued.max(s.rows)).max().unwrap_or(1).max(1);
    let caption = "Per second during the flood and the drain";
    let mut rates = chart::frame(area, caption, 60, 0f64..span, 0u64..peak + peak / 10)?;
    rates.configure_mesh().x_desc("seconds").draw()?;
    let series: [(&str, PerSecond); 2] = [("issued (201)", |s| s.issued), ("rows written", |s| s.rows)];
    for (i, (label, value)) in series.into_iter().enumerate() {
        let points = soak.timeline.iter().map(|s| (s.at_s, value(s)));
        chart::labelled_line(&mut rates, points, Palette99::pick(i).to_rgba(), label)?;
    }
    chart::legend(&mut rates)
}

/// Issued but not yet in PostgreSQL, second by second, over `span` seconds.
fn lag_chart(soak: &SoakRecord, area: &DrawingArea<SVGBackend<'_>, Shift>, span: f64) -> DrawResult<()> {
    let most = soak.timeline.iter().map(|s| s.lag).max().unwrap_or(1).max(1);
    let caption = "Issued but not yet in PostgreSQL";
    let mut lag = chart::frame(area, caption, 60, 0f64..span, 0i64..most + most / 10)?;
    lag.configure_mesh().x_desc("seconds").draw()?;
    lag.draw_series(LineSeries::new(soak.timeline.iter().map(|s| (s.at_s, s.lag)), Palette99::pick(2).to_rgba()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spike() -> RunRecord {
        RunRecord {
            mode: "kafka".into(),
            round: 1,
            coupon: 1,
            customers: 50_000,
            stock: 10_000,
            concurrency: 256,
            requests: 55_000,
            issued: 10_000,
            elapsed_s: 3.71,
            requests_per_s: 14_742.2,
            issued_per_s: 8519.0,
            latency: Latency { p50_ms: 6.44, p90_ms: 12.6, p99_ms: 28.3, p999_ms: 59.0, max_ms: 64.2 },
            outcomes: Vec::new(),
            timeline: Vec::new(),
            durable_after_s: 0.001,
            lag: Vec::new(),
            db_transactions: 10,
            peak_db_connections: 1,
            cpu_share: BTreeMap::new(),
        }
    }

    fn soak() -> SoakRecord {
        let second =
            |at_s: f64, issued: u64, rows: u64, lag: i64| Second { at_s, issued, rows, lag, ..Second::default() };
        SoakRecord {
            concurrency: 128,
            flood_s: 180.0,
            requests: 1_800_000,
            issued: 1_800_000,
            issued_per_s: 10_000.0,
            latency: Latency { p50_ms: 10.14, max_ms: 118.46, ..Latency::default() },
            timeline: vec![second(0.0, 0, 0, 0), second(1.0, 9752, 7100, 2652), second(2.0, 8888, 10_000, 1540)],
            commits_per_s: 1.005,
            max_rss_mib: [("coupon-api".to_string(), 54.8), ("coupon-writer".to_string(), 15.7)].into(),
            redis_bytes_per_customer: 52.7,
            peak_rows_per_s: 14_000,
            promises: Promises {
                stock: 100,
                customers_201: 100,
                rows: 100,
                holders: 100,
                answers_201: 100,
                ..Promises::default()
            },
            ..SoakRecord::default()
        }
    }

    #[test]
    fn the_section_sets_the_soak_beside_the_spike_between_its_markers() {
        let md = markdown(&soak(), &spike(), "test", "make soak", "wrk said 10763 requests/s");
        assert!(md.starts_with(&format!("{BEGIN}\n## A sustained flood (`make soak`)\n")), "{md}");
        assert!(md.ends_with(&format!("![soak](bench/soak.svg)\n{END}\n")), "{md}");
        assert!(md.contains("128 requests in flight for 180 s; a spike of 50000 customers for a coupon of 10000"));
        assert!(md.contains("\nCross-check: wrk said 10763 requests/s.\n"), "{md}");
        let rows = table::rows(&md);
        assert_eq!(rows.len(), 14, "a header and thirteen rows: {md}");
        assert_eq!(rows[0], ["", "spike", "soak"]);
        let row = |what: &str| rows.iter().find(|row| row[0] == what).unwrap_or_else(|| panic!("{what}: {md}"));
        assert_eq!(row("duration"), &["duration", "3.7 s", "180.0 s"]);
        assert_eq!(row("requests/s"), &["requests/s", "14742", "10000"]);
        assert_eq!(
            row("latency p50 / p90 / p99 / p99.9 / max, ms")[1..],
            ["6.4 / 12.6 / 28.3 / 59.0 / 64.2", "10.1 / 0.0 / 0.0 / 0.0 / 118.5"]
        );
        assert_eq!(row("offset commits/s")[1..], ["–", "1.00"]);
        assert_eq!(row("max RSS, MiB")[2], "coupon-api 55, coupon-writer 16");
        assert_eq!(row("Redis memory per issued customer")[2], "53 bytes");
        assert_eq!(
            row("promises")[2],
            "never oversold: held; lost: 0; rows without a 201: 0; twice: 0; sold out at write: 0"
        );

        let broken = SoakRecord { promises: Promises { stock: 99, ..soak().promises }, ..soak() };
        let md = markdown(&broken, &spike(), "test", "make soak", "");
        assert!(md.contains("never oversold: **BROKEN**"), "{md}");
        assert!(!md.contains("Cross-check"), "{md}");
    }

    #[test]
    fn the_plot_is_one_svg_with_both_charts() {
        let dir = std::env::temp_dir().join(format!("coupon-loadgen-soak-{}", std::process::id()));
        plot(&soak(), &dir).unwrap();
        let svg = std::fs::read_to_string(dir.join("soak.svg")).unwrap();
        for text in ["Per second during the flood and the drain", "Issued but not yet in PostgreSQL", "rows written"] {
            assert!(svg.contains(text), "{text}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
