//! Reports a run to a Prometheus Pushgateway: a periodic job has no endpoint
//! to scrape, and the drift alert needs the number, not only the exit code.

use anyhow::Context;

use crate::Report;

/// The job label the alert rules select (deploy/observability/coupon.rules.yml).
const JOB: &str = "coupon-reconcile";

/// The run in Prometheus' text format; the Pushgateway adds `push_time_seconds`.
pub fn exposition(report: &Report) -> String {
    let drifting = report.coupons.iter().filter(|coupon| !coupon.is_clean()).count();
    format!(
        "# HELP coupon_reconcile_drift Coupons whose Redis and PostgreSQL state differed in the last run\n\
         # TYPE coupon_reconcile_drift gauge\n\
         coupon_reconcile_drift {drifting}\n\
         # HELP coupon_reconcile_coupons_checked Coupons compared in the last run\n\
         # TYPE coupon_reconcile_coupons_checked gauge\n\
         coupon_reconcile_coupons_checked {}\n",
        report.coupons.len()
    )
}

/// Replaces the job's metrics on the gateway (in `namespace`'s group, if
/// given) with this run's.
pub async fn push(gateway: &str, namespace: Option<&str>, report: &Report) -> anyhow::Result<()> {
    let url = push_url(gateway, namespace);
    reqwest::Client::new()
        .put(&url)
        .body(exposition(report))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("pushing the outcome to {url}"))?;
    Ok(())
}

/// The Pushgateway's URL for this job's group: `job`, then `namespace`.
fn push_url(gateway: &str, namespace: Option<&str>) -> String {
    let mut url = format!("{}/metrics/job/{JOB}", gateway.trim_end_matches('/'));
    if let Some(namespace) = namespace.filter(|namespace| !namespace.is_empty()) {
        url.push_str("/namespace/");
        url.push_str(namespace);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare;
    use crate::CouponDrift;

    fn report(clean: usize, drifting: usize) -> Report {
        let mut coupons: Vec<CouponDrift> = (0..clean).map(|_| compare::tests::clean_drift()).collect();
        coupons.extend((0..drifting).map(|_| compare::tests::drifting()));
        Report { coupons }
    }

    #[test]
    fn counts_the_coupons_with_drift() {
        let text = exposition(&report(3, 2));
        assert!(text.contains("\ncoupon_reconcile_drift 2\n"), "{text}");
        assert!(text.contains("\ncoupon_reconcile_coupons_checked 5\n"), "{text}");
    }

    #[test]
    fn each_namespace_pushes_to_a_group_of_its_own() {
        assert_eq!(push_url("http://gw:9091/", None), "http://gw:9091/metrics/job/coupon-reconcile");
        assert_eq!(
            push_url("http://gw:9091", Some("coupon-staging")),
            "http://gw:9091/metrics/job/coupon-reconcile/namespace/coupon-staging"
        );
    }

    #[test]
    fn a_clean_run_reports_zero() {
        assert!(exposition(&report(1, 0)).contains("\ncoupon_reconcile_drift 0\n"));
    }
}
