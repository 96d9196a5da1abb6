//! A real Prometheus server (Debian's binary, unpacked by
//! `scripts/test-tools.sh`) with the project's alert rules loaded, scraping
//! the services as production does, only every second. What it says about
//! an alert comes from evaluating deploy/observability/coupon.rules.yml
//! against the series the services really export.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::process::{log_dir, Service};

/// How often the services are scraped and the rules evaluated.
const INTERVAL: &str = "1s";

/// The `namespace` label every scraped series gets, as Kubernetes service
/// discovery would add it; the rules aggregate by it.
pub const NAMESPACE: &str = "e2e";

/// A service to scrape: its name (the job) and the URL of its metrics.
pub struct Target<'a> {
    pub job: &'a str,
    pub metrics_url: &'a str,
}

pub struct Prometheus {
    /// Taken on drop: stopped before its storage is removed.
    server: Option<Service>,
    storage: PathBuf,
    url: String,
    http: reqwest::Client,
}

/// An alert Prometheus holds: pending (its expression holds, its `for` has
/// not yet passed) or firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub name: String,
    pub state: String,
}

fn binary() -> PathBuf {
    let tools = std::env::var_os("TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.stack/tools"));
    tools.join("bin/prometheus")
}

fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/observability/coupon.rules.yml")
}

/// The configuration, in JSON (which is YAML): one job per target.
fn config(targets: &[Target<'_>]) -> anyhow::Result<String> {
    let mut jobs = Vec::new();
    for target in targets {
        let url = reqwest::Url::parse(target.metrics_url).with_context(|| target.metrics_url.to_string())?;
        let (Some(host), Some(port)) = (url.host_str(), url.port()) else {
            bail!("no host and port in {}", target.metrics_url);
        };
        jobs.push(serde_json::json!({
            "job_name": target.job,
            "metrics_path": url.path(),
            "static_configs": [{"targets": [format!("{host}:{port}")], "labels": {"namespace": NAMESPACE}}],
        }));
    }
    let rules = std::fs::canonicalize(rules_file()).context("finding deploy/observability/coupon.rules.yml")?;
    Ok(serde_json::json!({
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [rules],
        "scrape_configs": jobs,
    })
    .to_string())
}

impl Prometheus {
    /// Starts a server on a free port and waits until it has scraped every
    /// target once.
    pub async fn start(name: &str, targets: &[Target<'_>]) -> anyhow::Result<Self> {
        let binary = binary();
        if !binary.exists() {
            bail!("{} is missing: run scripts/test-tools.sh (make test does)", binary.display());
        }
        let storage = log_dir().join(coupon_testkit::unique_name("prometheus"));
        std::fs::create_dir_all(&storage)?;
        let config_file = storage.join("prometheus.yml");
        std::fs::write(&config_file, config(targets)?)?;
        let port = coupon_testkit::free_port();
        let mut command = Command::new(&binary);
        command
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", storage.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let server = Service::spawn(command, &format!("{name}-prometheus"))?;
        let prometheus = Self {
            server: Some(server),
            storage,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let expected = targets.len();
        coupon_testkit::poll_until("Prometheus scraping every target", Duration::from_secs(60), || async {
            let targets = prometheus.api("targets").await?;
            let up =
                targets["activeTargets"].as_array().map_or(0, |all| all.iter().filter(|t| t["health"] == "up").count());
            Ok((up == expected).then_some(()))
        })
        .await?;
        Ok(prometheus)
    }

    /// `data` of a GET on `/api/v1/<path>`.
    async fn api(&self, path: &str) -> anyhow::Result<Value> {
        let body: Value =
            self.http.get(format!("{}/api/v1/{path}", self.url)).send().await?.error_for_status()?.json().await?;
        if body["status"] != "success" {
            bail!("Prometheus answered {body}");
        }
        Ok(body["data"].clone())
    }

    /// The alerts pending or firing now.
    pub async fn alerts(&self) -> anyhow::Result<Vec<Alert>> {
        let data = self.api("alerts").await?;
        let alerts = data["alerts"].as_array().context("no alerts array")?;
        Ok(alerts
            .iter()
            .map(|alert| Alert {
                name: alert["labels"]["alertname"].as_str().unwrap_or_default().to_string(),
                state: alert["state"].as_str().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// Waits until every rule has been evaluated on a scrape of every target
    /// taken after this call, so what [`Self::alerts`] says next covers what
    /// the services exported up to now.
    pub async fn evaluate_now(&self) -> anyhow::Result<()> {
        let now = OffsetDateTime::now_utc();
        coupon_testkit::poll_until("a rule evaluation after a fresh scrape", Duration::from_secs(30), || async {
            let targets = self.api("targets").await?;
            let scraped: Vec<OffsetDateTime> = timestamps(&targets["activeTargets"], "lastScrape")?;
            let Some(&oldest_scrape) = scraped.iter().min() else { bail!("no targets") };
            if oldest_scrape <= now {
                return Ok(None);
            }
            let rules = self.api("rules").await?;
            let evaluated = timestamps(&rules["groups"], "lastEvaluation")?;
            Ok(evaluated.iter().all(|at| *at > oldest_scrape).then_some(()))
        })
        .await
    }

    /// Waits until `alert` is in `state` (`pending` or `firing`); returns how long that took.
    pub async fn wait_for(&self, alert: &str, state: &str, timeout: Duration) -> anyhow::Result<Duration> {
        self.wait_alerts(&format!("{alert} {state}"), timeout, |alerts| {
            alerts.iter().any(|a| a.name == alert && a.state == state)
        })
        .await
    }

    /// Waits until `alert` is neither pending nor firing; returns how long that took.
    pub async fn wait_resolved(&self, alert: &str, timeout: Duration) -> anyhow::Result<Duration> {
        self.wait_alerts(&format!("{alert} resolved"), timeout, |alerts| alerts.iter().all(|a| a.name != alert)).await
    }

    async fn wait_alerts(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Alert]) -> bool,
    ) -> anyhow::Result<Duration> {
        let started = std::time::Instant::now();
        coupon_testkit::poll_until(what, timeout, || async { Ok(done(&self.alerts().await?).then_some(())) }).await?;
        Ok(started.elapsed())
    }
}

/// The RFC 3339 field `field` of every element of `items`.
fn timestamps(items: &Value, field: &str) -> anyhow::Result<Vec<OffsetDateTime>> {
    items
        .as_array()
        .context("not an array")?
        .iter()
        .map(|item| {
            let text = item[field].as_str().with_context(|| format!("no {field} in {item}"))?;
            OffsetDateTime::parse(text, &Rfc3339).with_context(|| format!("{field} {text}"))
        })
        .collect()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill();
        }
        let _ = std::fs::remove_dir_all(&self.storage);
    }
}
