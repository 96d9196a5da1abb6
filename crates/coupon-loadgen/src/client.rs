//! The few coupon-api calls a load run needs, spread over the API replicas
//! as a load balancer would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use coupon_infra::auth::{Signer, SCOPE_REDEEM, SCOPE_RELEASE};
use futures::future::join_all;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Clone)]
pub struct ApiClient {
    /// Base URLs of the replicas, tried in turn.
    bases: Arc<[String]>,
    next: Arc<AtomicUsize>,
    http: reqwest::Client,
    /// Each replica's management URL (`/health/*`), in the order of `bases`.
    management: Arc<[String]>,
    admin_token: String,
    customers: CustomerAuth,
}

/// How a request says which customer it acts for, as coupon-api is configured.
#[derive(Clone)]
pub enum CustomerAuth {
    /// A JWT signed with the API's HS256 secret, minted per request.
    Jwt(Arc<Signer>),
    /// The header a gateway in front of the API would set, with the
    /// gateway's proof.
    Gateway { header: String, secret: String },
}

/// What the coupons this tool creates take off an order.
pub const REDEEMED_DISCOUNT: i64 = 1_000;

/// How long the tokens this tool mints live.
const TOKEN_TTL: Duration = Duration::from_secs(3_600);

impl CustomerAuth {
    /// Adds the credential of `customer` to `request`.
    pub fn apply(&self, request: reqwest::RequestBuilder, customer: i64) -> reqwest::RequestBuilder {
        match self {
            CustomerAuth::Jwt(signer) => match signer.customer(customer, TOKEN_TTL) {
                Ok(token) => request.bearer_auth(token),
                // Sent without a credential: the answer (401) says what went wrong.
                Err(_) => request,
            },
            CustomerAuth::Gateway { header, secret } => {
                request.header(header.as_str(), customer).header(GATEWAY_TOKEN_HEADER, secret.as_str())
            }
        }
    }

    /// Adds the order service's credential: a service token in jwt mode;
    /// behind a gateway, support staff's `admin_token`.
    pub fn apply_service(&self, request: reqwest::RequestBuilder, admin_token: &str) -> reqwest::RequestBuilder {
        match self {
            CustomerAuth::Jwt(signer) => match signer.service(SERVICE, &[SCOPE_REDEEM, SCOPE_RELEASE], TOKEN_TTL) {
                Ok(token) => request.bearer_auth(token),
                Err(_) => request,
            },
            CustomerAuth::Gateway { .. } => request.bearer_auth(admin_token),
        }
    }
}

/// The name the order service's tokens minted here carry.
const SERVICE: &str = "coupon-loadgen";

/// The header a gateway proves itself with (coupon-api's `auth::GATEWAY_TOKEN_HEADER`).
const GATEWAY_TOKEN_HEADER: &str = "X-Gateway-Token";

impl ApiClient {
    /// `bases` is one base URL or several, comma-separated (one per replica);
    /// `connections` keep-alive connections per replica at most, one per
    /// concurrent request.
    /// `management`: each replica's management URL, comma-separated.
    pub fn new(
        bases: &str,
        management: &str,
        admin_token: &str,
        customers: CustomerAuth,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let (bases, management) = (urls(bases), urls(management));
        if bases.is_empty() {
            bail!("no coupon-api base URL given");
        }
        if management.len() != bases.len() {
            bail!("give one management URL per coupon-api base URL");
        }
        let http =
            reqwest::Client::builder().pool_max_idle_per_host(connections).timeout(Duration::from_secs(30)).build()?;
        Ok(Self { bases, management, next: Arc::default(), http, admin_token: admin_token.to_string(), customers })
    }

    /// The first replica's base URL.
    pub fn base(&self) -> &str {
        &self.bases[0]
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn customers(&self) -> &CustomerAuth {
        &self.customers
    }

    /// Sends `request` (built for a replica's base URL) to the replicas in
    /// turn. A replica that refuses the connection never saw the request, so
    /// the next one gets it, as behind a load balancer; any other failure is
    /// the caller's, since the request may have been served.
    pub async fn send(
        &self,
        request: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> reqwest::Result<reqwest::Response> {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut outcome = request(&self.http, &self.bases[first % self.bases.len()]).send().await;
        for i in 1..self.bases.len() {
            match outcome {
                Err(err) if err.is_connect() => {
                    outcome = request(&self.http, &self.bases[(first + i) % self.bases.len()]).send().await;
                }
                done => return done,
            }
        }
        outcome
    }

    /// Opens `connections` keep-alive connections to each replica (one per
    /// concurrent probe) so a spike measures the service, not TCP handshakes.
    pub async fn open_connections(&self, connections: usize) {
        for base in self.bases.iter() {
            let url = format!("{base}{NOOP_PATH}");
            join_all((0..connections).map(|_| self.http.get(&url).send())).await;
        }
    }

    /// Creates a coupon open from now for an hour; returns its id.
    pub async fn create_coupon(&self, name: &str, total: u64) -> anyhow::Result<i64> {
        self.create_coupon_for(name, total, Duration::from_secs(3_600)).await
    }

    /// Creates a coupon open from now for `lasting`, worth `REDEEMED_DISCOUNT`
    /// off an order; returns its id.
    pub async fn create_coupon_for(&self, name: &str, total: u64, lasting: Duration) -> anyhow::Result<i64> {
        self.create(name, total, lasting, 1).await
    }

    /// Creates a coupon as `create_coupon` does, its stock spread over
    /// `shards` Redis shards; returns its id.
    pub async fn create_sharded_coupon(&self, name: &str, total: u64, shards: u16) -> anyhow::Result<i64> {
        self.create(name, total, Duration::from_secs(3_600), shards).await
    }

    async fn create(&self, name: &str, total: u64, lasting: Duration, shards: u16) -> anyhow::Result<i64> {
        let now = OffsetDateTime::now_utc();
        let body = json!({
            "name": name,
            "totalQuantity": total,
            "startsAt": (now - time::Duration::seconds(5)).format(&Rfc3339)?,
            "endsAt": (now + lasting).format(&Rfc3339)?,
            "discount": { "type": "FIXED", "amount": REDEEMED_DISCOUNT },
            "shards": shards,
        });
        let response = self
            .send(|http, base| http.post(format!("{base}/api/v1/coupons")).bearer_auth(&self.admin_token).json(&body))
            .await
            .context("creating a coupon")?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.as_u16() != 201 {
            bail!("creating a coupon answered {status}: {body}");
        }
        body["id"].as_i64().context("the created coupon has an id")
    }

    /// Redeems `customer`'s coupon for an order; the status and the body.
    pub async fn redeem(
        &self,
        coupon: i64,
        customer: i64,
        order_id: &str,
        amount: i64,
    ) -> reqwest::Result<(u16, Value)> {
        let body = json!({ "orderId": order_id, "orderAmount": amount });
        let response = self
            .send(|http, base| {
                let url = format!("{base}/api/v1/customers/{customer}/coupons/{coupon}/redeem");
                self.customers.apply_service(http.post(url), &self.admin_token).json(&body)
            })
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// An operator's request (the admin token) to the next replica, with a
    /// JSON body when one is given; the status and the body (`null` if none).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Result<(u16, Value)> {
        let response = self
            .send(|http, base| {
                let request = http.request(method.clone(), format!("{base}{path}")).bearer_auth(&self.admin_token);
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Waits until every replica is ready.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        for base in self.management.iter() {
            loop {
                let ready = self.http.get(format!("{base}/health/ready")).send().await;
                if matches!(ready, Ok(ref r) if r.status().is_success()) {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    bail!("coupon-api at {base} not ready after {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

/// A path the API answers at once (404, with no work behind it): what keeps
/// connections open and measures the HTTP path on its own.
pub const NOOP_PATH: &str = "/noop";

fn urls(list: &str) -> Arc<[String]> {
    list.split(',').map(|url| url.trim().trim_end_matches('/').to_string()).filter(|url| !url.is_empty()).collect()
}
