//! The reliability report: one Markdown table row per scenario, appended to
//! `target/<profile>/e2e-logs/report.md` as the scenarios finish.

use std::io::Write;
use std::time::Duration;

use coupon_loadgen::spike::Spike;

use crate::invariants::Verdict;
use crate::process::log_dir;

/// What a fault cost the customers of the spike: the `503` answers, and the
/// time from the first to the last of them (`None` without any).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCost {
    pub unavailable: usize,
    pub fenced: Option<Duration>,
}

impl FaultCost {
    pub fn of(spike: &Spike) -> Self {
        let at: Vec<Duration> = spike.answers.iter().filter(|a| a.status == Some(503)).map(|a| a.at).collect();
        let fenced = at.iter().min().zip(at.iter().max()).map(|(first, last)| *last - *first);
        Self { unavailable: at.len(), fenced }
    }
}

/// `under_faults`: 201s answered while a fault was in effect, and after the
/// first fault began; `None` for a scenario without faults.
pub fn append(
    scenario: &str,
    verdicts: &[Verdict],
    reconciled: bool,
    under_faults: Option<(usize, usize)>,
    cost: FaultCost,
    spike: Duration,
    drain: Duration,
) {
    let path = log_dir().join("report.md");
    let new = !path.exists();
    let Ok(mut file) = std::fs::File::options().create(true).append(true).open(&path) else { return };
    if new {
        let _ = writeln!(
            file,
            "| scenario | requests | issued (201) | rows | duplicates | lost | unanswered | drift | 201s during fault | 201s after fault began | 503 answers | seconds fenced | spike | time to drain |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
    }
    let sum = |f: fn(&Verdict) -> i64| verdicts.iter().map(f).sum::<i64>();
    let _ = writeln!(
        file,
        "| {scenario} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {:.1} s |",
        sum(|v| v.requests as i64),
        sum(|v| v.issued as i64),
        sum(|v| v.rows),
        sum(|v| v.duplicates),
        sum(|v| v.lost as i64),
        sum(|v| v.unanswered as i64),
        if reconciled && verdicts.iter().all(|v| v.violations.is_empty()) { "none" } else { "DRIFT" },
        under_faults.map_or("–".to_string(), |(during, _)| during.to_string()),
        under_faults.map_or("–".to_string(), |(_, after)| after.to_string()),
        cost.unavailable,
        cost.fenced.map_or("–".to_string(), |fenced| format!("{:.1} s", fenced.as_secs_f64())),
        spike.as_secs_f64(),
        drain.as_secs_f64()
    );
}
