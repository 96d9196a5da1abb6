//! Answer latencies: recorded in microseconds, reported in milliseconds as
//! the percentiles every report shows.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// An empty histogram of latencies in microseconds: 1 µs to 60 s, three
/// significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// The percentiles of a run's latencies and its slowest, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// The names of [`Latency::points`], in their order.
    pub const NAMES: [&'static str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

    /// Of a histogram of microseconds (see [`histogram`]).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let at = |quantile: f64| ms(histogram.value_at_quantile(quantile));
        Self { p50_ms: at(0.5), p90_ms: at(0.9), p99_ms: at(0.99), p999_ms: at(0.999), max_ms: ms(histogram.max()) }
    }

    /// p50, p90, p99, p99.9 and max, in milliseconds.
    pub fn points(&self) -> [f64; 5] {
        [self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_read_in_milliseconds() {
        let mut h = histogram();
        for micros in 1..=1000 {
            h.record(micros * 100).unwrap();
        }
        let latency = Latency::of(&h);
        assert_eq!(latency.p50_ms, h.value_at_quantile(0.5) as f64 / 1000.0);
        assert!((latency.p50_ms - 50.0).abs() < 0.1, "{latency:?}");
        assert!((latency.p999_ms - 99.9).abs() < 0.1, "{latency:?}");
        assert!((latency.max_ms - 100.0).abs() < 0.1, "{latency:?}");
        assert_eq!(latency.points(), [latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.p999_ms, latency.max_ms]);
    }

    #[test]
    fn a_record_holding_it_keeps_the_flat_json_fields() {
        #[derive(Serialize, Deserialize)]
        struct Holder {
            before: u8,
            #[serde(flatten)]
            latency: Latency,
            after: u8,
        }
        let latency = Latency { p50_ms: 1.5, p90_ms: 2.0, p99_ms: 3.0, p999_ms: 4.0, max_ms: 5.25 };
        let json = serde_json::to_string(&Holder { before: 1, latency, after: 2 }).unwrap();
        assert_eq!(
            json,
            r#"{"before":1,"p50_ms":1.5,"p90_ms":2.0,"p99_ms":3.0,"p999_ms":4.0,"max_ms":5.25,"after":2}"#
        );
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap().latency, latency);
    }
}
