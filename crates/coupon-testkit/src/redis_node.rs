//! Redis deployments of a test's own, for the faults that hit Redis itself:
//! `redis-server` processes and a `redis-sentinel` on free loopback ports,
//! each server with a data folder of its own and persisting like the stack's
//! Redis (AOF with `appendfsync everysec`, `noeviction`, no automatic RDB
//! snapshots). Dropping a value SIGKILLs its process and removes its data
//! folder; the logs stay in [`log_dir`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netfault::Side;
use crate::{free_port, log_dir, poll_until, unique_name};
use anyhow::{anyhow, bail, Context};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, InfoDict};

/// The name the sentinel knows the primary by (`COUPON__REDIS__MASTER_NAME`'s default).
pub const MASTER_NAME: &str = "coupon";

/// How long a started server may take to answer PING: it loads its AOF or RDB first.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound of connecting and of one command, so a server that does not
/// answer is an error rather than a hung test.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a replica may take to connect to its primary and load its data.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// A file name made of the scenario's name: scenario names have spaces.
fn file_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

fn log_path(name: &str) -> PathBuf {
    log_dir().join(format!("{}.log", file_name(name)))
}

fn new_data_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = log_dir().join(unique_name(&format!("{}-data", file_name(name))));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A connection to `url` whose connecting and commands time out.
pub async fn connect(url: &str) -> anyhow::Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    let client = redis::Client::open(url)?;
    client.get_multiplexed_async_connection_with_config(&config).await.with_context(|| format!("connecting to {url}"))
}

/// One command to the server (or sentinel) at `url`, on a connection of its own.
pub async fn query<T: FromRedisValue>(url: &str, cmd: &redis::Cmd) -> anyhow::Result<T> {
    let mut conn = connect(url).await?;
    Ok(cmd.query_async(&mut conn).await?)
}

/// The address of the primary that the sentinel at `sentinel_url` names for `master_name`.
pub async fn master_addr(sentinel_url: &str, master_name: &str) -> anyhow::Result<(String, u16)> {
    let addr: Option<(String, u16)> =
        query(sentinel_url, redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(master_name)).await?;
    addr.ok_or_else(|| anyhow!("the sentinel at {sentinel_url} does not know {master_name}"))
}

/// Waits until the process answers PING; fails at once when it exited.
async fn wait_answering(child: &mut Child, url: &str, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{url} exited with {status} while starting; see {}", log.display());
        }
        // While it loads its data a server answers LOADING: not ready yet.
        if matches!(query::<String>(url, &redis::cmd("PING")).await, Ok(pong) if pong == "PONG") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{url} did not answer PING within {START_TIMEOUT:?}; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        // Child::kill is SIGKILL: no shutdown save, no final fsync, as a crash.
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One `redis-server`, a primary or a replica.
pub struct RedisNode {
    name: String,
    port: u16,
    dir: PathBuf,
    /// Off only from a restart from a snapshot until AOF is switched on again.
    appendonly: bool,
    replica_of: Option<u16>,
    /// A Redis Cluster node (`cluster-enabled`), see [`RedisCluster`].
    clustered: bool,
    child: Option<Child>,
    /// Its wall clock runs this far ahead of the real one (crate::clock::ahead).
    clock_ahead: Option<Duration>,
    /// The side of a partition it runs in. Its cgroup is removed when the
    /// field drops, which comes after `Drop::drop` ended the process.
    side: Option<Side>,
}

impl RedisNode {
    pub async fn primary(name: &str) -> anyhow::Result<Self> {
        Self::launch(name, None, None).await
    }

    /// A primary whose clock runs `ahead` of the real one, restarts included.
    pub async fn primary_with_clock_ahead(name: &str, ahead: Duration) -> anyhow::Result<Self> {
        Self::launch(name, None, Some(ahead)).await
    }

    /// A replica of `primary`, returned once its link to the primary is up.
    pub async fn replica(name: &str, primary: &RedisNode) -> anyhow::Result<Self> {
        let node = Self::launch(name, Some(primary.port), None).await?;
        node.wait_replica_of(primary.port, SYNC_TIMEOUT).await?;
        Ok(node)
    }

    async fn launch(name: &str, replica_of: Option<u16>, clock_ahead: Option<Duration>) -> anyhow::Result<Self> {
        let mut node = Self {
            name: file_name(name),
            port: free_port(),
            dir: new_data_dir(name)?,
            appendonly: true,
            replica_of,
            clustered: false,
            child: None,
            clock_ahead,
            side: None,
        };
        node.spawn().await?;
        Ok(node)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its data folder, removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = log_path(&self.name);
        let mut command = Side::command_in(self.side.as_ref(), "redis-server");
        if let Some(ahead) = self.clock_ahead {
            crate::clock::ahead(&mut command, ahead)?;
        }
        command
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .arg("--appendonly")
            .arg(if self.appendonly { "yes" } else { "no" })
            .arg("--appendfsync")
            .arg("everysec")
            .arg("--maxmemory-policy")
            .arg("noeviction")
            .arg("--save")
            .arg("")
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(primary) = self.replica_of {
            command.arg("--replicaof").arg("127.0.0.1").arg(primary.to_string());
        }
        if self.clustered {
            // A short node timeout: a dead master's replica takes over in seconds.
            command.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
            command.args(["--cluster-node-timeout", "2000"]);
            // A replica always stands for election, however long its link was
            // down: the tests kill masters seconds after the cluster formed.
            command.args(["--cluster-replica-validity-factor", "0"]);
        }
        let child = command.spawn().context("starting redis-server; is it installed (make setup)?")?;
        let url = self.url();
        let child = self.child.insert(child);
        wait_answering(child, &url, &log).await
    }

    /// SIGKILL, as a crash: whatever the last second wrote to the AOF may be lost.
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }

    /// Starts the server again on its port and data folder (killing it first
    /// if it runs) and waits until it has loaded its data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    /// SIGKILL, remove every persisted byte (AOF and RDB), start again: a
    /// Redis that lost all its data.
    pub async fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.remove_aof()?;
        let rdb = self.dir.join("dump.rdb");
        if rdb.exists() {
            std::fs::remove_file(&rdb).with_context(|| format!("removing {}", rdb.display()))?;
        }
        self.spawn().await
    }

    fn remove_aof(&self) -> anyhow::Result<()> {
        let aof = self.dir.join("appendonlydir");
        if aof.exists() {
            std::fs::remove_dir_all(&aof).with_context(|| format!("removing {}", aof.display()))?;
        }
        Ok(())
    }

    /// SIGKILL, remove the AOF, start again from the last `bgsave` snapshot:
    /// a Redis rolled back to that moment. Returns its key count right after
    /// the start; AOF is on again when this returns.
    ///
    /// Redis 7.0 started with `--appendonly yes` and no AOF files starts
    /// empty and ignores `dump.rdb`; so it starts with `--appendonly no`,
    /// which loads the RDB, and turns AOF on afterwards with `CONFIG SET`
    /// (which writes a new AOF from the loaded data).
    pub async fn restart_from_snapshot(&mut self) -> anyhow::Result<u64> {
        let rdb = self.dir.join("dump.rdb");
        if !rdb.exists() {
            bail!("no snapshot at {}: call bgsave first", rdb.display());
        }
        self.kill();
        self.remove_aof()?;
        self.appendonly = false;
        self.spawn().await?;
        let keys = self.dbsize().await?;
        self.enable_aof().await?;
        Ok(keys)
    }

    /// Turns AOF on at run time and waits until its first rewrite is written.
    async fn enable_aof(&mut self) -> anyhow::Result<()> {
        let _: String = query(&self.url(), redis::cmd("CONFIG").arg("SET").arg("appendonly").arg("yes")).await?;
        // From here on the rewrite is either running or scheduled.
        let this = &*self;
        poll_until("AOF rewritten after it was switched on", START_TIMEOUT, move || async move {
            let info = this.info("persistence").await?;
            if info.get::<String>("aof_last_bgrewrite_status").as_deref() == Some("err") {
                bail!("the AOF rewrite failed; see {}", log_path(&this.name).display());
            }
            let idle = info.get::<u8>("aof_rewrite_in_progress") == Some(0)
                && info.get::<u8>("aof_rewrite_scheduled") == Some(0);
            Ok((idle && info.get::<u8>("aof_enabled") == Some(1)).then_some(()))
        })
        .await?;
        self.appendonly = true;
        Ok(())
    }

    /// Writes an RDB snapshot (`BGSAVE`) and waits until it is on disk.
    pub async fn bgsave(&self, timeout: Duration) -> anyhow::Result<()> {
        let url = self.url();
        let saves = |info: &InfoDict| info.get::<u64>("rdb_saves").unwrap_or(0);
        // A save already running holds older data: let it finish first.
        let before = poll_until("no snapshot in progress", timeout, move || async move {
            let info = self.info("persistence").await?;
            Ok((info.get::<u8>("rdb_bgsave_in_progress") == Some(0)).then(|| saves(&info)))
        })
        .await?;
        // SCHEDULE: an AOF rewrite in progress postpones the save instead of refusing it.
        let _: String = query(&url, redis::cmd("BGSAVE").arg("SCHEDULE")).await?;
        poll_until("the snapshot written", timeout, move || async move {
            let info = self.info("persistence").await?;
            if saves(&info) <= before || info.get::<u8>("rdb_bgsave_in_progress") != Some(0) {
                return Ok(None);
            }
            match info.get::<String>("rdb_last_bgsave_status").as_deref() {
                Some("ok") => Ok(Some(())),
                _ => bail!("BGSAVE failed; see {}", log_path(&self.name).display()),
            }
        })
        .await
    }

    pub async fn dbsize(&self) -> anyhow::Result<u64> {
        query(&self.url(), &redis::cmd("DBSIZE")).await
    }

    pub async fn info(&self, section: &str) -> anyhow::Result<InfoDict> {
        query(&self.url(), redis::cmd("INFO").arg(section)).await
    }

    /// Waits until this server replicates the one on `primary` with its link up.
    pub async fn wait_replica_of(&self, primary: u16, timeout: Duration) -> anyhow::Result<()> {
        wait_replica_of(&self.url(), primary, timeout).await
    }

    /// `CONFIG SET name value`.
    pub async fn config_set(&self, name: &str, value: &str) -> anyhow::Result<()> {
        let _: String = query(&self.url(), redis::cmd("CONFIG").arg("SET").arg(name).arg(value)).await?;
        Ok(())
    }

    /// The local ports its replicas' replication links come from, as this
    /// primary lists its replica clients: what a [`crate::netfault::LinkCut`]
    /// from this server's port to one of them cuts.
    pub async fn replica_link_ports(&self) -> anyhow::Result<Vec<u16>> {
        replica_link_ports(&self.url()).await
    }

    /// Its replication offset: how much of the stream it has written (a
    /// primary) or received (a replica).
    pub async fn replication_offset(&self) -> anyhow::Result<u64> {
        replication_offset(&self.url()).await
    }
}

/// [`RedisNode::wait_replica_of`] for the server at `url`.
pub async fn wait_replica_of(url: &str, primary: u16, timeout: Duration) -> anyhow::Result<()> {
    poll_until(&format!("{url} a replica of port {primary} with its link up"), timeout, move || async move {
        let info: InfoDict = query(url, redis::cmd("INFO").arg("replication")).await?;
        Ok((info.get::<String>("role").as_deref() == Some("slave")
            && info.get::<u16>("master_port") == Some(primary)
            && info.get::<String>("master_link_status").as_deref() == Some("up"))
        .then_some(()))
    })
    .await
}

/// [`RedisNode::replica_link_ports`] of the server at `url`.
pub async fn replica_link_ports(url: &str) -> anyhow::Result<Vec<u16>> {
    let clients: String = query(url, redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("replica")).await?;
    clients
        .lines()
        .filter_map(|line| line.split(' ').find_map(|field| field.strip_prefix("addr=")))
        .map(|addr| {
            let port = addr.rsplit_once(':').map(|(_, port)| port).unwrap_or_default();
            port.parse().with_context(|| format!("a replica client's address {addr}"))
        })
        .collect()
}

/// [`RedisNode::replication_offset`] of the server at `url`.
pub async fn replication_offset(url: &str) -> anyhow::Result<u64> {
    let info: InfoDict = query(url, redis::cmd("INFO").arg("replication")).await?;
    info.get::<u64>("master_repl_offset").context("INFO replication without master_repl_offset")
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Keeps the Redis server at `url` busy for `how_long` (a script that runs
/// that long holds every other command back) and returns once it is, with
/// the task that ends with the stall: a command sent now gets its reply only
/// after the stall, past any shorter timeout. It stays below the server's
/// `busy-reply-threshold` (5 s), after which others would get BUSY errors.
pub async fn stall(url: &str, how_long: Duration) -> tokio::task::JoinHandle<()> {
    const BUSY: &str = "local s = redis.call('TIME'); local t0 = s[1] * 1000000 + s[2]
while true do
    local now = redis.call('TIME')
    if now[1] * 1000000 + now[2] - t0 > tonumber(ARGV[1]) * 1000 then return 1 end
end";
    let stalling = {
        let (url, ms) = (url.to_string(), how_long.as_millis() as u64);
        tokio::spawn(async move {
            let _: i64 = query(&url, redis::cmd("EVAL").arg(BUSY).arg(0).arg(ms)).await.expect("stalling Redis");
        })
    };
    poll_until("Redis to be stalled", Duration::from_secs(10), || async {
        let ping = redis::cmd("PING");
        // Far beyond a PING's time on loopback, even on a loaded machine.
        let answered = tokio::time::timeout(Duration::from_millis(250), query::<String>(url, &ping)).await;
        Ok(answered.is_err().then_some(()))
    })
    .await
    .expect("Redis stalled");
    stalling
}

/// One `redis-sentinel` monitoring a primary as `MASTER_NAME`, with a quorum
/// of 1, so it alone decides a failover.
pub struct Sentinel {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Sentinel {
    /// Starts it and waits until it knows the primary and `replicas` healthy
    /// replicas of it: without a known replica there is nothing to promote.
    pub async fn start(name: &str, primary: &RedisNode, replicas: usize) -> anyhow::Result<Self> {
        Self::start_in(name, primary, replicas, None).await
    }

    /// [`Self::start`], the process started inside `side` when one is given,
    /// so that a partition can cut it from the primary.
    pub async fn start_in(
        name: &str,
        primary: &RedisNode,
        replicas: usize,
        side: Option<&crate::netfault::Side>,
    ) -> anyhow::Result<Self> {
        let name = file_name(name);
        let dir = new_data_dir(&name)?;
        let port = free_port();
        let log = log_path(&name);
        // The sentinel rewrites this file as it learns; it must be its own and writable.
        // `down-after-milliseconds` is 3 s, not less: right after a failover the
        // sentinel opens new links to the promoted replica and counts from that
        // moment; on two busy cores 1 s was sometimes too short for the first
        // PING's answer, so it failed over a second time, back to the restarted
        // old primary.
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\n\
                 bind 127.0.0.1\n\
                 dir \"{dir}\"\n\
                 logfile \"{log}\"\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 3000\n\
                 sentinel failover-timeout {MASTER_NAME} 5000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.display(),
                log = log.display(),
                primary = primary.port,
            ),
        )
        .with_context(|| format!("writing {}", conf.display()))?;
        let mut command = crate::netfault::Side::command_in(side, "redis-sentinel");
        let child = command
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-sentinel; is it installed (make setup)?")?;
        let mut sentinel = Self { port, dir, child: Some(child) };
        let url = sentinel.url();
        wait_answering(sentinel.child.as_mut().expect("just started"), &url, &log).await?;
        sentinel.wait_replicas(replicas, SYNC_TIMEOUT).await?;
        Ok(sentinel)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port of the primary it names now.
    pub async fn master_port(&self) -> anyhow::Result<u16> {
        Ok(master_addr(&self.url(), MASTER_NAME).await?.1)
    }

    /// Waits until it knows `count` replicas that are up and linked to the primary.
    pub async fn wait_replicas(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let url = &self.url();
        poll_until(&format!("{count} healthy replicas known to the sentinel"), timeout, move || async move {
            let replicas: Vec<Vec<String>> =
                query(url, redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME)).await?;
            let healthy = replicas
                .iter()
                .filter(|fields| {
                    let field = |key: &str| fields.chunks(2).find(|kv| kv[0] == key).and_then(|kv| kv.get(1));
                    field("flags").is_some_and(|flags| flags == "slave")
                        && field("master-link-status").is_some_and(|status| status == "ok")
                })
                .count();
            Ok((healthy >= count).then_some(()))
        })
        .await
    }

    /// Starts a failover now (`SENTINEL FAILOVER`), as an operator's switchover
    /// does: the primary is demoted in place, keeping its process and its
    /// script cache, and becomes the promoted replica's replica.
    pub async fn failover(&self) -> anyhow::Result<()> {
        let _: String = query(&self.url(), redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER_NAME)).await?;
        Ok(())
    }

    /// Waits until it names a primary other than the one on `old`: the
    /// failover is over. Returns the new primary's port.
    pub async fn wait_new_master(&self, old: u16, timeout: Duration) -> anyhow::Result<u16> {
        poll_until(&format!("a primary other than port {old}"), timeout, move || async move {
            let port = self.master_port().await?;
            Ok((port != old).then_some(port))
        })
        .await
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of a test's own: `masters` masters with `replicas` replicas
/// each, made by `redis-cli --cluster create`; every node persists like the
/// stack's Redis and is SIGKILLed and removed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisNode>,
}

impl RedisCluster {
    pub async fn start(name: &str, masters: usize, replicas: usize) -> anyhow::Result<Self> {
        Self::start_with(name, masters, replicas, None, None).await
    }

    /// [`Self::start`], its first node (a master) in `side`, which a test
    /// cuts off as one side of a partition ([`Self::side`]).
    pub async fn start_with_side(name: &str, masters: usize, replicas: usize) -> anyhow::Result<Self> {
        Self::start_with(name, masters, replicas, Some(Side::new()?), None).await
    }

    /// [`Self::start`], every node's clock `ahead` of the real one.
    pub async fn start_with_clock_ahead(
        name: &str,
        masters: usize,
        replicas: usize,
        ahead: Duration,
    ) -> anyhow::Result<Self> {
        Self::start_with(name, masters, replicas, None, Some(ahead)).await
    }

    async fn start_with(
        name: &str,
        masters: usize,
        replicas: usize,
        side: Option<Side>,
        clock_ahead: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        let mut side = side;
        for i in 0..masters * (1 + replicas) {
            let mut node = RedisNode {
                name: file_name(&format!("{name} node{i}")),
                port: free_port(),
                dir: new_data_dir(&format!("{name} node{i}"))?,
                appendonly: true,
                replica_of: None,
                clustered: true,
                child: None,
                clock_ahead,
                side: side.take(),
            };
            node.spawn().await?;
            nodes.push(node);
        }
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .context("running redis-cli --cluster create")?;
        if !created.status.success() {
            bail!("redis-cli --cluster create failed: {}", String::from_utf8_lossy(&created.stdout));
        }
        let cluster = Self { nodes };
        cluster.wait_ok(START_TIMEOUT).await?;
        // Clients learn the replicas from CLUSTER SLOTS: wait until it lists
        // them for every slot range, as in a cluster that has been up a while.
        let url = cluster.nodes[0].url();
        poll_until("the replicas in CLUSTER SLOTS", START_TIMEOUT, || async {
            let ranges: Vec<Vec<redis::Value>> = query(&url, redis::cmd("CLUSTER").arg("SLOTS")).await?;
            Ok((ranges.len() == masters && ranges.iter().all(|range| range.len() == 3 + replicas)).then_some(()))
        })
        .await?;
        Ok(cluster)
    }

    /// The URLs of the running nodes that are replicas now.
    pub async fn replica_urls(&self) -> anyhow::Result<Vec<String>> {
        let mut replicas = Vec::new();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let role: Vec<redis::Value> = query(&node.url(), &redis::cmd("ROLE")).await?;
            if matches!(role.first(), Some(redis::Value::BulkString(kind)) if kind == b"slave") {
                replicas.push(node.url());
            }
        }
        Ok(replicas)
    }

    /// The first node's port and its side, when started with one.
    pub fn side(&self) -> Option<(u16, &Side)> {
        let first = self.nodes.first()?;
        Some((first.port, first.side.as_ref()?))
    }

    /// SIGKILLs the node on `port`, as a crash.
    pub fn kill(&mut self, port: u16) -> anyhow::Result<()> {
        self.nodes.iter_mut().find(|n| n.port == port).context("not a node of this cluster")?.kill();
        Ok(())
    }

    /// Every node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisNode::port).collect()
    }

    /// Has each node announce `announced[its port]` as its client port
    /// (`cluster-announce-port`; a proxy there, say), so CLUSTER SLOTS and
    /// redirects send clients there, and waits until every node lists the
    /// others by those ports alone.
    pub async fn announce(&self, announced: &BTreeMap<u16, u16>) -> anyhow::Result<()> {
        for node in &self.nodes {
            let port = announced.get(&node.port).with_context(|| format!("no port to announce for {}", node.port))?;
            node.config_set("cluster-announce-port", &port.to_string()).await?;
        }
        poll_until("every node to list the announced ports", START_TIMEOUT, || async {
            for node in &self.nodes {
                let nodes: String = query(&node.url(), redis::cmd("CLUSTER").arg("NODES")).await?;
                let listed: Vec<Option<u16>> = nodes.lines().map(|line| ClusterNode::parse(line).port()).collect();
                if !listed.iter().all(|port| port.is_some_and(|p| announced.values().any(|a| *a == p))) {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        })
        .await
    }

    /// Seed nodes for a client: every node, comma-separated.
    pub fn seeds(&self) -> String {
        self.nodes.iter().map(RedisNode::url).collect::<Vec<_>>().join(",")
    }

    /// Waits until every running node reports `cluster_state:ok` and agrees
    /// on one master per slot range.
    pub async fn wait_ok(&self, timeout: Duration) -> anyhow::Result<()> {
        poll_until("the cluster to be ok on every node", timeout, || async {
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                let info: String = query(&node.url(), redis::cmd("CLUSTER").arg("INFO")).await?;
                if !info.lines().any(|line| line.trim() == "cluster_state:ok") {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        })
        .await
    }

    /// The running node that is master of `key`'s slot.
    pub async fn master_of(&mut self, key: &str) -> anyhow::Result<&mut RedisNode> {
        let port = self.master_port_of(key).await?;
        self.nodes.iter_mut().find(|n| n.port == port).context("the master is not one of this cluster's nodes")
    }

    /// The port of the master of `key`'s slot, as a running node sees it.
    pub async fn master_port_of(&self, key: &str) -> anyhow::Result<u16> {
        let running = self.nodes.iter().find(|n| n.child.is_some()).context("no node runs")?;
        master_port_of(&running.url(), key).await
    }
}

/// One line of `CLUSTER NODES`:
/// `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <state> <slot ranges...>`.
struct ClusterNode<'a> {
    fields: Vec<&'a str>,
}

impl<'a> ClusterNode<'a> {
    fn parse(line: &'a str) -> Self {
        Self { fields: line.split_whitespace().collect() }
    }

    fn is_live_master(&self) -> bool {
        self.fields.get(2).is_some_and(|flags| flags.contains("master") && !flags.contains("fail"))
    }

    fn serves(&self, slot: i64) -> bool {
        self.fields.iter().skip(8).any(|range| match range.split_once('-') {
            Some((from, to)) => {
                from.parse::<i64>().is_ok_and(|f| f <= slot) && to.parse::<i64>().is_ok_and(|t| slot <= t)
            }
            None => range.parse::<i64>() == Ok(slot),
        })
    }

    /// `ip:port`.
    fn address(&self) -> Option<&'a str> {
        self.fields.get(1)?.split('@').next()
    }

    fn port(&self) -> Option<u16> {
        self.address()?.rsplit_once(':')?.1.parse().ok()
    }

    /// The cluster bus port: `cport` of `ip:port@cport`.
    fn bus_port(&self) -> Option<u16> {
        self.fields.get(1)?.split('@').nth(1)?.split(',').next()?.parse().ok()
    }
}

/// Each node's cluster bus port by its client port, as the cluster node at
/// `url` lists them.
pub async fn cluster_bus_ports(url: &str) -> anyhow::Result<BTreeMap<u16, u16>> {
    let nodes: String = query(url, redis::cmd("CLUSTER").arg("NODES")).await?;
    let nodes = nodes.lines().map(ClusterNode::parse);
    Ok(nodes.filter_map(|node| Some((node.port()?, node.bus_port()?))).collect())
}

/// The port of the master of `key`'s slot, as the cluster node at `url` sees it.
pub async fn master_port_of(url: &str, key: &str) -> anyhow::Result<u16> {
    let slot: i64 = query(url, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).await?;
    let nodes: String = query(url, redis::cmd("CLUSTER").arg("NODES")).await?;
    nodes
        .lines()
        .map(ClusterNode::parse)
        .find(|node| node.is_live_master() && node.serves(slot))
        .and_then(|node| node.port())
        .with_context(|| format!("no master serves slot {slot}"))
}

/// The port of a live replica of the master on `master_port`, as the cluster
/// node at `url` sees it.
pub async fn replica_port_of(url: &str, master_port: u16) -> anyhow::Result<u16> {
    let nodes: String = query(url, redis::cmd("CLUSTER").arg("NODES")).await?;
    let nodes: Vec<ClusterNode> = nodes.lines().map(ClusterNode::parse).collect();
    let master = nodes.iter().find(|node| node.port() == Some(master_port)).context("no such node")?;
    let id = master.fields.first().context("a node without an id")?;
    nodes
        .iter()
        .filter(|node| node.fields.get(2).is_some_and(|flags| flags.contains("slave") && !flags.contains("fail")))
        .find(|node| node.fields.get(3) == Some(id))
        .and_then(ClusterNode::port)
        .with_context(|| format!("port {master_port} has no live replica"))
}

/// The URLs of the masters that hold slots, as the cluster node at `url` sees it.
pub async fn cluster_masters(url: &str) -> anyhow::Result<Vec<String>> {
    let nodes: String = query(url, redis::cmd("CLUSTER").arg("NODES")).await?;
    Ok(nodes
        .lines()
        .map(ClusterNode::parse)
        .filter(|node| node.is_live_master() && node.fields.len() > 8)
        .filter_map(|node| node.address())
        .map(|address| format!("redis://{address}"))
        .collect())
}
