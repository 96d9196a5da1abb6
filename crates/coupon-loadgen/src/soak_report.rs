//! The soak's section of docs/BENCHMARK.md, side by side with a spike of the
//! same run, and its plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::page::Section;
use crate::record::RunRecord;
use crate::soak::{Second, SoakRecord};

pub const SECTION: Section = Section { begin: "<!-- soak: written by `make soak` -->", end: "<!-- /soak -->" };
const BEGIN: &str = SECTION.begin;
const END: &str = SECTION.end;

pub fn markdown(soak: &SoakRecord, spike: &RunRecord, machine: &str, command: &str, cross_check: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{BEGIN}\n## A sustained flood (`make soak`)\n");
    let _ = writeln!(md, "Machine: {machine}  \nCommand: `{command}`\n");
    let _ = writeln!(
        md,
        "One coupon with stock for everyone, a new customer per request, {} requests in flight for {:.0} s; \
         a spike of {} customers for a coupon of {} on the same services just before, for comparison. \
         Every second: issuances, the writer's rows and lag, offset commits, each service's memory.\n",
        soak.concurrency, soak.flood_s, spike.customers, spike.stock
    );
    let verdict = |ok: bool| if ok { "held" } else { "**BROKEN**" };
    let p = &soak.promises;
    let rows: [(&str, String, String); 13] = [
        ("duration", format!("{:.1} s", spike.elapsed_s), format!("{:.1} s", soak.flood_s)),
        ("requests", spike.requests.to_string(), soak.requests.to_string()),
        ("issued (201)", spike.issued.to_string(), soak.issued.to_string()),
        ("requests/s", format!("{:.0}", spike.requests_per_s), format!("{:.0}", soak.requests as f64 / soak.flood_s)),
        ("issued/s", format!("{:.0}", spike.issued_per_s), format!("{:.0}", soak.issued_per_s)),
        (
            "latency p50 / p90 / p99 / p99.9 / max, ms",
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} / {:.1}",
                spike.p50_ms, spike.p90_ms, spike.p99_ms, spike.p999_ms, spike.max_ms
            ),
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} / {:.1}",
                soak.p50_ms, soak.p90_ms, soak.p99_ms, soak.p999_ms, soak.max_ms
            ),
        ),
        ("writer rows/s, best second", "–".into(), soak.peak_rows_per_s.to_string()),
        ("writer group rebalances", "–".into(), soak.rebalances.to_string()),
        ("offset commits/s", "–".into(), format!("{:.2}", soak.commits_per_s)),
        (
            "max RSS, MiB",
            "–".into(),
            soak.max_rss_mib.iter().map(|(s, mib)| format!("{s} {mib:.0}")).collect::<Vec<_>>().join(", "),
        ),
        ("Redis memory per issued customer", "–".into(), format!("{:.0} bytes", soak.redis_bytes_per_customer)),
        (
            "all durable after the last answer",
            format!("{:.2} s", spike.durable_after_s),
            format!("{:.2} s", soak.drain_s),
        ),
        (
            "promises",
            "checked by the spike".into(),
            format!(
                "never oversold: {}; lost: {}; rows without a 201: {}; twice: {}; sold out at write: {}",
                verdict(p.never_oversold()),
                p.lost.len(),
                p.rows_without_201.len(),
                p.twice(),
                p.sold_out_at_write
            ),
        ),
    ];
    let _ = writeln!(md, "| | spike | soak |\n|---|---|---|");
    for (what, spike, soak) in rows {
        let _ = writeln!(md, "| {what} | {spike} | {soak} |");
    }
    if !cross_check.is_empty() {
        let _ = writeln!(md, "\nCross-check: {cross_check}.");
    }
    let _ = writeln!(md, "\n![soak](bench/soak.svg)\n{END}");
    md
}

/// Reads one per-second count off a sample.
type PerSecond = fn(&Second) -> u64;

fn chart_error(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the soak chart: {err}")
}

/// Draws soak.svg into `dir`: issuances and the writer's rows per second
/// above, the writer's lag below.
pub fn plot(soak: &SoakRecord, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).context("creating the plot folder")?;
    let path = dir.join("soak.svg");
    let root = SVGBackend::new(&path, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let (upper, lower) = root.split_vertically(400);
    let span = soak.timeline.last().map_or(1.0, |s| s.at_s).max(1.0);
    let peak = soak.timeline.iter().map(|s| s.issued.max(s.rows)).max().unwrap_or(1).max(1);

    let mut rates = ChartBuilder::on(&upper)
        .caption("Per second during the flood and the drain", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..span, 0u64..peak + peak / 10)
        .map_err(chart_error)?;
    rates.configure_mesh().x_desc("seconds").draw().map_err(chart_error)?;
    let series: [(&str, PerSecond); 2] = [("issued (201)", |s| s.issued), ("rows written", |s| s.rows)];
    for (i, (label, value)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        rates
            .draw_series(LineSeries::new(soak.timeline.iter().map(|s| (s.at_s, value(s))), color))
            .map_err(chart_error)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], color));
    }
    rates.configure_series_labels().border_style(BLACK).draw().map_err(chart_error)?;

    let most = soak.timeline.iter().map(|s| s.lag).max().unwrap_or(1).max(1);
    let mut lag = ChartBuilder::on(&lower)
        .caption("Issued but not yet in PostgreSQL", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..span, 0i64..most + most / 10)
        .map_err(chart_error)?;
    lag.configure_mesh().x_desc("seconds").draw().map_err(chart_error)?;
    lag.draw_series(LineSeries::new(soak.timeline.iter().map(|s| (s.at_s, s.lag)), Palette99::pick(2).to_rgba()))
        .map_err(chart_error)?;
    root.present().map_err(chart_error)?;
    Ok(())
}
