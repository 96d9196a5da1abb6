//! Redis connections.
//!
//! coupon-api talks to Redis over one shared multiplexed connection
//! ([`SharedRedis`]): concurrent commands are pipelined on one socket, with no
//! per-use liveness PING. After a failure the connection is dropped and the
//! next command makes a new one, with a single attempt bounded by `timeout_ms`,
//! so requests fail fast while Redis is away instead of queueing behind
//! retries. In `sentinel` mode every new connection asks the sentinels for the
//! current primary, so a failover is followed on the next command. In
//! `cluster` mode the connection is redis-rs's cluster client: one multiplexed
//! connection per node, commands routed by slot, MOVED/ASK and failovers
//! followed; a command must then touch one slot (every coupon's keys share
//! the `{<id>}` hash tag, so callers send one command per coupon).
//!
//! A partition can leave a connection on a primary that the sentinels have
//! replaced, while it still answers: [`SharedRedis::follow_primary`] asks the
//! sentinels every second and drops a connection that leads elsewhere, and an
//! answer `NOREPLICAS` (the primary lost its replicas, `min-replicas-to-write`)
//! drops it too. The next command then connects to the primary the sentinels
//! name.
//!
//! Every connection made gets a new generation number. `WAIT` counts the
//! writes of its own connection only, so code that must know that a write and
//! its `WAIT` went over the same connection compares generations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use anyhow::Context;
use futures::future::try_join_all;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue,
    IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, ScriptInvocation, ServerErrorKind,
    TlsCertificates, TlsMode, Value,
};
use secrecy::ExposeSecret;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::settings::{RedisMode, RedisSettings};

/// Attempts of one cluster request (redirections, reconnections, retries).
const CLUSTER_ATTEMPTS: u32 = 5;

/// One connection to the primary (or the cluster) and the generation it belongs to.
#[derive(Clone)]
pub struct Link {
    pub generation: u64,
    pub conn: Connection,
    /// For a command that must not run twice: `conn` itself, which sends each
    /// command once, except in cluster mode, where the client retries after
    /// a timeout, a dropped connection or a redirection; there a cluster
    /// connection that never retries.
    pub once: Connection,
    /// In sentinel mode, the primary the sentinels named when it was made.
    primary: Option<ConnectionAddr>,
}

/// A multiplexed connection to one primary, or a cluster client's.
#[derive(Clone)]
pub enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

enum Target {
    Standalone(redis::Client),
    Sentinel(Sentinels),
    Cluster(Box<ClusterClients>),
}

struct Sentinels {
    /// Locked because resolving the primary needs `&mut`; only while connecting.
    client: Mutex<SentinelClient>,
    /// Each sentinel on its own, for questions the client cannot ask.
    each: Vec<redis::Client>,
    master_name: String,
}

struct ClusterClients {
    client: ClusterClient,
    /// The same cluster, never retrying a command.
    once: ClusterClient,
}

pub struct SharedRedis {
    target: Target,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    current: RwLock<Option<Link>>,
    /// Held while connecting, so a burst of failing requests makes one attempt.
    connecting: Mutex<()>,
    generations: AtomicU64,
    /// Replicas of the primary that the sentinels would not promote (see
    /// [`Self::unpromotable_replicas`]).
    unpromotable: AtomicU32,
}

impl SharedRedis {
    /// Connects lazily: building it does not need Redis up.
    pub fn new(settings: &RedisSettings) -> anyhow::Result<Self> {
        let timeout = settings.timeout;
        let access = Access::new(settings)?;
        let urls: Vec<&str> = settings.url.split(',').map(str::trim).collect();
        let target = match settings.mode {
            RedisMode::Standalone => Target::Standalone(access.client(urls[0]).context("redis.url")?),
            RedisMode::Sentinel => Target::Sentinel(Sentinels {
                client: Mutex::new(access.sentinel(&urls, settings)?),
                each: urls.iter().map(|url| access.sentinel_client(url, settings)).collect::<anyhow::Result<_>>()?,
                master_name: settings.master_name.clone(),
            }),
            RedisMode::Cluster => {
                // A request may need a slot refresh and a retry after a
                // failover: short waits between retries, and a bound on the
                // whole of it rather than on each attempt.
                let client = access
                    .cluster(&urls)
                    .overall_response_timeout(Some(timeout * CLUSTER_ATTEMPTS))
                    .retries(CLUSTER_ATTEMPTS)
                    .min_retry_wait(50)
                    .max_retry_wait(timeout.as_millis() as u64)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()
                    .context("redis.url (cluster seed nodes)")?;
                let once = access
                    .cluster(&urls)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(0)
                    .build()
                    .context("redis.url (cluster seed nodes)")?;
                Target::Cluster(Box::new(ClusterClients { client, once }))
            }
        };
        Ok(Self {
            target,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
            connect_timeout: timeout,
            current: RwLock::new(None),
            connecting: Mutex::new(()),
            generations: AtomicU64::new(0),
            unpromotable: AtomicU32::new(0),
        })
    }

    /// The current connection, made now if there is none.
    pub async fn link(&self) -> RedisResult<Link> {
        if let Some(link) = self.current.read().expect("not poisoned").clone() {
            return Ok(link);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(link) = self.current.read().expect("not poisoned").clone() {
            return Ok(link);
        }
        let (conn, once, primary) = tokio::time::timeout(self.connect_timeout * 2, self.connect())
            .await
            .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
        let link = Link { generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1, conn, once, primary };
        *self.current.write().expect("not poisoned") = Some(link.clone());
        Ok(link)
    }

    /// The connection, its never-retrying twin (see [`Link::once`]) and, in
    /// sentinel mode, the primary's address.
    async fn connect(&self) -> RedisResult<(Connection, Connection, Option<ConnectionAddr>)> {
        let (single, primary) = match &self.target {
            Target::Standalone(client) => {
                (client.get_multiplexed_async_connection_with_config(&self.config).await?, None)
            }
            Target::Sentinel(sentinels) => {
                let primary = sentinels.client.lock().await.async_get_client().await?;
                let addr = primary.get_connection_info().addr().clone();
                (primary.get_multiplexed_async_connection_with_config(&self.config).await?, Some(addr))
            }
            Target::Cluster(clients) => {
                let (conn, once) =
                    tokio::try_join!(clients.client.get_async_connection(), clients.once.get_async_connection())?;
                return Ok((Connection::Cluster(conn), Connection::Cluster(once), None));
            }
        };
        Ok((Connection::Single(single.clone()), Connection::Single(single), primary))
    }

    /// In sentinel mode, asks the sentinels every `every` which node is the
    /// primary and drops the connection when it leads to another one, until
    /// `stop`. A partition may cut the sentinels off from the old primary and
    /// not this process: the connection never fails, and without this it
    /// would go on writing to a primary the sentinels replaced. Each round
    /// also counts the replicas they would not promote, and tells `counted`.
    /// Returns at once in the other modes.
    pub async fn follow_primary(&self, every: Duration, counted: impl Fn(u32), stop: CancellationToken) {
        let Target::Sentinel(sentinels) = &self.target else { return };
        loop {
            self.count_unpromotable(sentinels).await;
            counted(self.unpromotable_replicas());
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let current = self.current.read().expect("not poisoned").clone();
            let Some(link) = current else { continue };
            let named = tokio::time::timeout(self.connect_timeout, async {
                sentinels.client.lock().await.async_get_client().await.map(|c| c.get_connection_info().addr().clone())
            })
            .await;
            match named {
                Ok(Ok(primary)) if link.primary.as_ref() != Some(&primary) => {
                    tracing::warn!(%primary, "the sentinels name another primary: reconnecting");
                    self.forget(&link);
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::debug!(error = %err, "the sentinels could not name the primary"),
                Err(_) => tracing::debug!("the sentinels did not name the primary in time"),
            }
        }
    }

    /// How many of the primary's replicas the sentinels would not promote:
    /// those with `replica-priority 0`, and those they see as down or cannot
    /// reach (a replica may still take the primary's stream while cut off
    /// from them). Such a replica can acknowledge a write in `WAIT` and still
    /// never become the primary, so a `WAIT` that must reach promotable
    /// replicas asks for this many more. 0 outside sentinel mode; as of the
    /// last answer when no sentinel answers.
    pub fn unpromotable_replicas(&self) -> u32 {
        self.unpromotable.load(Ordering::Relaxed)
    }

    async fn count_unpromotable(&self, sentinels: &Sentinels) {
        for sentinel in &sentinels.each {
            let asked = tokio::time::timeout(self.connect_timeout, async {
                let mut conn = sentinel.get_multiplexed_async_connection_with_config(&self.config).await?;
                redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(&sentinels.master_name)
                    .query_async::<Vec<HashMap<String, String>>>(&mut conn)
                    .await
            })
            .await;
            match asked {
                Ok(Ok(replicas)) => {
                    let count = replicas.iter().filter(|replica| !promotable(replica)).count();
                    let count = u32::try_from(count).unwrap_or(u32::MAX);
                    if self.unpromotable.swap(count, Ordering::Relaxed) != count {
                        tracing::info!(unpromotable = count, "replicas the sentinels would not promote");
                    }
                    return;
                }
                Ok(Err(err)) => tracing::debug!(error = %err, "a sentinel did not list the replicas"),
                Err(_) => tracing::debug!("a sentinel did not list the replicas in time"),
            }
        }
    }

    /// Drops `link`, unless a newer connection replaced it already.
    fn forget(&self, link: &Link) {
        let mut current = self.current.write().expect("not poisoned");
        if current.as_ref().is_some_and(|c| c.generation == link.generation) {
            *current = None;
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Looks at the outcome of a command sent over `link`: after an error that
    /// may have broken the connection, or one saying it no longer leads to the
    /// primary, the next command connects anew.
    pub fn observe<T>(&self, link: &Link, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(err) = &result {
            if needs_new_connection(err) {
                self.forget(link);
            }
        }
        result
    }

    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        let link = self.link().await?;
        let result = cmd.query_async(&mut link.conn.clone()).await;
        self.observe(&link, result)
    }

    /// Runs a script (loading it on NOSCRIPT), like [`Self::query`] a command.
    pub async fn invoke<T: FromRedisValue>(&self, invocation: &ScriptInvocation<'_>) -> RedisResult<T> {
        let link = self.link().await?;
        let result = invocation.invoke_async(&mut link.conn.clone()).await;
        self.observe(&link, result)
    }

    /// The server's clock in milliseconds (`TIME`).
    pub async fn server_time_ms(&self) -> RedisResult<i64> {
        let (secs, micros): (i64, i64) = self.query(&redis::cmd("TIME")).await?;
        Ok(secs * 1_000 + micros / 1_000)
    }

    /// Sends `cmd` to the primary, or in cluster mode to every primary and to
    /// no replica (the client's own routing of e.g. `SCRIPT LOAD` includes
    /// the replicas).
    pub async fn query_primaries<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        let link = self.link().await?;
        let result = match link.conn.clone() {
            Connection::Single(mut conn) => cmd.query_async(&mut conn).await,
            Connection::Cluster(mut conn) => {
                let routing =
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::AllSucceeded)));
                conn.route_command(cmd.clone(), routing)
                    .await
                    .and_then(|value| T::from_redis_value(value).map_err(Into::into))
            }
        };
        self.observe(&link, result)
    }

    /// In cluster mode, empties the script cache of every replica that holds
    /// the script `sha`; returns their addresses. A master demoted in place
    /// (a manual failover, or one that rejoins as its successor's replica)
    /// keeps its scripts, and a replica holding the incarnation marker would,
    /// once promoted again, pass for the master it replaced. A replica runs
    /// no script of ours, so flushing its cache costs nothing. Returns at once
    /// in the other modes, where the recorded incarnation covers this.
    pub async fn flush_script_from_replicas(&self, sha: &str) -> RedisResult<Vec<String>> {
        if !self.is_cluster() {
            return Ok(Vec::new());
        }
        let link = self.link().await?;
        let Connection::Cluster(mut conn) = link.conn.clone() else { return Ok(Vec::new()) };
        // The cluster's own view, asked anew each time: the client's map of
        // nodes is refreshed only when a command meets a redirection.
        let slots = conn
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").to_owned(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await;
        let slots = self.observe(&link, slots)?;
        let mut flushed = Vec::new();
        for (host, port) in replicas_in_slots(&slots) {
            let at = || RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port });
            let role = conn.route_command(redis::cmd("ROLE").to_owned(), at()).await?;
            let exists = conn.route_command(redis::cmd("SCRIPT").arg("EXISTS").arg(sha).to_owned(), at()).await?;
            let is_replica = matches!(&role, Value::Array(fields) if fields.first().is_some_and(is_replica_role));
            let holds = matches!(&exists, Value::Array(answers) if answers.first() == Some(&Value::Int(1)));
            if is_replica && holds {
                conn.route_command(redis::cmd("SCRIPT").arg("FLUSH").to_owned(), at()).await?;
                flushed.push(format!("{host}:{port}"));
            }
        }
        Ok(flushed)
    }

    /// Sends the commands concurrently, each on its own: the multiplexed
    /// connection pipelines them, and in cluster mode each goes to its slot's
    /// node (a pipeline must stay within one slot there). Answers in order.
    pub async fn query_each<T: FromRedisValue>(&self, cmds: &[Cmd]) -> RedisResult<Vec<T>> {
        let link = self.link().await?;
        let answers = try_join_all(cmds.iter().map(|cmd| {
            let mut conn = link.conn.clone();
            async move { cmd.query_async::<T>(&mut conn).await }
        }))
        .await;
        self.observe(&link, answers)
    }

    /// A pipeline: in cluster mode all its commands must touch one slot.
    pub async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> RedisResult<T> {
        let link = self.link().await?;
        let result = pipe.query_async(&mut link.conn.clone()).await;
        self.observe(&link, result)
    }
}

/// Who the clients are toward Redis: credentials and TLS certificates, the
/// same for every node (and, for the sentinels, their own credentials).
struct Access {
    username: Option<String>,
    password: Option<String>,
    certificates: Option<TlsCertificates>,
}

impl Access {
    fn new(settings: &RedisSettings) -> anyhow::Result<Self> {
        let read = |key: &str, file: &Option<std::path::PathBuf>| {
            file.as_ref()
                .map(|file| std::fs::read(file).with_context(|| format!("{key}: reading {}", file.display())))
                .transpose()
        };
        let root_cert = read("redis.tls_ca_file", &settings.tls_ca_file)?;
        let client_tls = match (
            read("redis.tls_cert_file", &settings.tls_cert_file)?,
            read("redis.tls_key_file", &settings.tls_key_file)?,
        ) {
            (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig { client_cert, client_key }),
            _ => None,
        };
        Ok(Self {
            username: settings.username.clone(),
            password: settings.password.as_ref().map(|password| password.expose_secret().to_string()),
            certificates: settings.tls().then_some(TlsCertificates { client_tls, root_cert }),
        })
    }

    /// One node's connection info: the URL's, with the settings' credentials.
    fn info(&self, url: &str) -> RedisResult<ConnectionInfo> {
        let info = url.into_connection_info()?;
        let mut redis = info.redis_settings().clone();
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        Ok(info.set_redis_settings(redis))
    }

    fn client(&self, url: &str) -> RedisResult<redis::Client> {
        self.open(self.info(url)?)
    }

    /// A client of the node `info` names, over TLS when the settings say so.
    fn open(&self, info: ConnectionInfo) -> RedisResult<redis::Client> {
        match &self.certificates {
            Some(certificates) => redis::Client::build_with_tls(info, certificates.clone()),
            None => redis::Client::open(info),
        }
    }

    fn cluster(&self, seeds: &[&str]) -> ClusterClientBuilder {
        let mut builder = ClusterClient::builder(seeds.iter().copied());
        if let Some(username) = &self.username {
            builder = builder.username(username);
        }
        if let Some(password) = &self.password {
            builder = builder.password(password);
        }
        if let Some(certificates) = &self.certificates {
            builder = builder.certs(certificates.clone());
        }
        builder
    }

    /// A client of one sentinel, with the sentinels' credentials.
    fn sentinel_client(&self, url: &str, settings: &RedisSettings) -> anyhow::Result<redis::Client> {
        let info = url.into_connection_info().context("redis.url (sentinel URLs)")?;
        let mut redis = info.redis_settings().clone();
        if let Some(username) = &settings.sentinel_username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &settings.sentinel_password {
            redis = redis.set_password(password.expose_secret());
        }
        self.open(info.set_redis_settings(redis)).context("redis.url (sentinel URLs)")
    }

    /// Sentinels and the data nodes they name share the scheme (TLS or not)
    /// and the certificates; each has its own credentials.
    fn sentinel(&self, urls: &[&str], settings: &RedisSettings) -> anyhow::Result<SentinelClient> {
        let sentinels: Vec<ConnectionInfo> = urls
            .iter()
            .map(|url| url.into_connection_info())
            .collect::<RedisResult<_>>()
            .context("redis.url (sentinel URLs)")?;
        let mut builder = SentinelClientBuilder::new(
            sentinels.iter().map(|info| info.addr().clone()),
            settings.master_name.clone(),
            SentinelServerType::Master,
        )?;
        let url_credentials = sentinels.first().map(|info| info.redis_settings());
        let sentinel_username =
            settings.sentinel_username.clone().or_else(|| url_credentials.and_then(|r| r.username().map(String::from)));
        let sentinel_password = settings
            .sentinel_password
            .as_ref()
            .map(|password| password.expose_secret().to_string())
            .or_else(|| url_credentials.and_then(|r| r.password().map(String::from)));
        if let Some(username) = sentinel_username {
            builder = builder.set_client_to_sentinel_username(username);
        }
        if let Some(password) = sentinel_password {
            builder = builder.set_client_to_sentinel_password(password);
        }
        if let Some(username) = &self.username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = &self.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(certificates) = &self.certificates {
            builder = builder
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_certificates(certificates.clone())
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_redis_certificates(certificates.clone());
        }
        builder.build().context("redis.url (sentinel URLs)")
    }
}

/// The replicas `CLUSTER SLOTS` lists (each range: start, end, the master,
/// then its replicas, each `[host, port, id, …]`), once each.
fn replicas_in_slots(slots: &Value) -> Vec<(String, u16)> {
    let Value::Array(ranges) = slots else { return Vec::new() };
    let mut replicas = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else { continue };
        for node in fields.iter().skip(3) {
            let Value::Array(node) = node else { continue };
            if let [Value::BulkString(host), Value::Int(port), ..] = node.as_slice() {
                let host = String::from_utf8_lossy(host).into_owned();
                if let Ok(port) = u16::try_from(*port) {
                    if !replicas.contains(&(host.clone(), port)) {
                        replicas.push((host, port));
                    }
                }
            }
        }
    }
    replicas
}

fn is_replica_role(role: &Value) -> bool {
    matches!(role, Value::BulkString(role) if role.as_slice() == b"slave")
}

/// Whether the sentinels would promote this replica (an entry of `SENTINEL
/// REPLICAS`), as far as its priority and their view of it tell.
fn promotable(replica: &HashMap<String, String>) -> bool {
    let priority = replica.get("slave-priority").or_else(|| replica.get("replica-priority"));
    let flags = replica.get("flags").map(String::as_str).unwrap_or_default();
    priority.is_none_or(|priority| priority != "0")
        && !flags.split(',').any(|flag| matches!(flag, "s_down" | "o_down" | "disconnected"))
}

fn needs_new_connection(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_unrecoverable_error()
        || err.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
        || err.code() == Some("NOREPLICAS")
}
