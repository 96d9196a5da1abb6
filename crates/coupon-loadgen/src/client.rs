//! The few coupon-api calls a load run needs.

use std::time::Duration;

use anyhow::{bail, Context};
use futures::future::join_all;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Clone)]
pub struct ApiClient {
    pub base: String,
    http: reqwest::Client,
    admin_token: String,
}

impl ApiClient {
    /// `connections` keep-alive connections at most, one per concurrent request.
    pub fn new(base: &str, admin_token: &str, connections: usize) -> anyhow::Result<Self> {
        let http =
            reqwest::Client::builder().pool_max_idle_per_host(connections).timeout(Duration::from_secs(30)).build()?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), http, admin_token: admin_token.to_string() })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Opens `connections` keep-alive connections (one per concurrent probe) so a
    /// spike measures the service, not TCP handshakes.
    pub async fn open_connections(&self, connections: usize) {
        let url = format!("{}/health/live", self.base);
        join_all((0..connections).map(|_| self.http.get(&url).send())).await;
    }

    /// Creates a coupon open from now for an hour; returns its id.
    pub async fn create_coupon(&self, name: &str, total: u64) -> anyhow::Result<i64> {
        let now = OffsetDateTime::now_utc();
        let response = self
            .http
            .post(format!("{}/api/v1/coupons", self.base))
            .bearer_auth(&self.admin_token)
            .json(&json!({
                "name": name,
                "totalQuantity": total,
                "startsAt": (now - time::Duration::seconds(5)).format(&Rfc3339)?,
                "endsAt": (now + time::Duration::hours(1)).format(&Rfc3339)?,
            }))
            .send()
            .await
            .context("creating a coupon")?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.as_u16() != 201 {
            bail!("creating a coupon answered {status}: {body}");
        }
        body["id"].as_i64().context("the created coupon has an id")
    }

    /// Redis's view of whether a customer holds the coupon.
    pub async fn attempt(&self, coupon: i64, customer: i64) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/api/v1/coupons/{coupon}/customers/{customer}", self.base))
            .send()
            .await?
            .json()
            .await?)
    }

    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ready = self.http.get(format!("{}/health/ready", self.base)).send().await;
            if matches!(ready, Ok(ref r) if r.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("coupon-api at {} not ready after {timeout:?}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
