//! Where the machine's CPU went during a spike, per component, read from
//! `/proc` (Linux only; elsewhere nothing is recorded). The benchmark runs
//! the load generator and every service on the same cores, so this tells
//! what bounds a run.

use std::collections::BTreeMap;

use procfs::CurrentSI;

/// The components in report order; `other` is the busy time no listed
/// process accounts for (kernel threads, processes that came and went).
pub const COMPONENTS: [&str; 8] =
    ["load generator", "coupon-api", "Redis", "Kafka", "PostgreSQL", "coupon-writer", "other", "idle"];

fn component(comm: &str) -> Option<&'static str> {
    Some(match comm {
        "coupon-loadgen" => "load generator",
        "coupon-api" => "coupon-api",
        "redis-server" => "Redis",
        "java" => "Kafka",
        "postgres" => "PostgreSQL",
        "coupon-writer" => "coupon-writer",
        _ => return None,
    })
}

/// CPU ticks per process of a listed component, and the machine's busy and idle ticks.
pub struct CpuSnapshot {
    processes: BTreeMap<i32, (&'static str, u64)>,
    busy: u64,
    idle: u64,
}

impl CpuSnapshot {
    pub fn take() -> Option<Self> {
        let total = procfs::KernelStats::current().ok()?.total;
        let idle = total.idle + total.iowait.unwrap_or(0);
        let busy = total.user
            + total.nice
            + total.system
            + total.irq.unwrap_or(0)
            + total.softirq.unwrap_or(0)
            + total.steal.unwrap_or(0);
        let processes = procfs::process::all_processes()
            .ok()?
            .filter_map(|process| process.ok()?.stat().ok())
            .filter_map(|stat| Some((stat.pid, (component(&stat.comm)?, stat.utime + stat.stime))))
            .collect();
        Some(Self { processes, busy, idle })
    }

    /// Percent of all cores per component since `earlier` (see [`COMPONENTS`]).
    pub fn shares_since(&self, earlier: &Self) -> BTreeMap<String, f64> {
        let elapsed = (self.busy + self.idle).saturating_sub(earlier.busy + earlier.idle).max(1) as f64;
        let mut ticks: BTreeMap<&str, u64> = BTreeMap::new();
        for (pid, (name, now)) in &self.processes {
            let before = earlier.processes.get(pid).map_or(0, |(_, ticks)| *ticks);
            *ticks.entry(name).or_default() += now.saturating_sub(before);
        }
        let listed: u64 = ticks.values().sum();
        ticks.insert("other", self.busy.saturating_sub(earlier.busy).saturating_sub(listed));
        ticks.insert("idle", self.idle.saturating_sub(earlier.idle));
        ticks.into_iter().map(|(name, t)| (name.to_string(), 100.0 * t as f64 / elapsed)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_divide_the_elapsed_ticks_and_the_unlisted_busy_time_is_other() {
        let before = CpuSnapshot {
            processes: [(1, ("coupon-api", 100)), (2, ("Redis", 50)), (9, ("Kafka", 70))].into(),
            busy: 1_000,
            idle: 1_000,
        };
        // Kafka's process ended; PostgreSQL's started within the window.
        let after = CpuSnapshot {
            processes: [(1, ("coupon-api", 160)), (2, ("Redis", 70)), (3, ("PostgreSQL", 10))].into(),
            busy: 1_100,
            idle: 1_100,
        };
        let shares = after.shares_since(&before);
        let expected: BTreeMap<String, f64> =
            [("coupon-api", 30.0), ("Redis", 10.0), ("PostgreSQL", 5.0), ("other", 5.0), ("idle", 50.0)]
                .into_iter()
                .map(|(name, share)| (name.to_string(), share))
                .collect();
        assert_eq!(shares, expected);
        assert_eq!(shares.values().sum::<f64>(), 100.0);
    }
}
