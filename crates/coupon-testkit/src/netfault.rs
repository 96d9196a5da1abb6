//! Network faults between processes on loopback.
//!
//! - [`LinkCut`]: one direction of one TCP connection cut with nftables
//!   (Debian's `nft`, installed by `make setup`; root only), as a partition
//!   drops it, while everything else on the machine keeps flowing. The kernel
//!   drops the packets, so neither end sees an error: the sender retransmits
//!   into the void and the receiver waits, which is what a lagging replica
//!   behind a broken link looks like. Each cut is a table of its own, removed
//!   when its value is dropped, so a test leaves no rule behind.
//! - [`Side`]: processes started in a cgroup of their own, cut from a
//!   server's port with nftables' `socket cgroupv2` match: every connection
//!   they make to it, new ones included, goes nowhere, while other processes
//!   still reach it. This is a partition on one machine: the sentinels and one
//!   API replica on one side, the primary on the other.
//! - [`SlowLink`]: a TCP proxy in front of one server that adds latency on
//!   demand. This machine's kernel has no `netem` qdisc (`tc` answers
//!   "Specified qdisc kind is unknown"), so latency cannot be added below TCP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::unique_name;

/// Drops every packet of one TCP direction on loopback while it lives.
pub struct LinkCut {
    table: String,
}

impl LinkCut {
    /// Cuts the direction from local port `from` to local port `to`: for a
    /// connection from an ephemeral port to a server, the server's replies
    /// (`from` = the server's port) or the client's requests (`to` = it).
    pub fn one_way(from: u16, to: u16) -> anyhow::Result<Self> {
        Self::dropping(&format!("tcp sport {from} tcp dport {to}"))
            .with_context(|| format!("cutting 127.0.0.1:{from} -> 127.0.0.1:{to}"))
    }

    /// Cuts every connection to local port `to`, from whichever process, new
    /// ones included: what is sent there is dropped.
    pub fn into(to: u16) -> anyhow::Result<Self> {
        Self::dropping(&format!("tcp dport {to}")).with_context(|| format!("cutting every link into 127.0.0.1:{to}"))
    }

    /// Drops every outgoing packet that `matches` (an nftables match).
    fn dropping(matches: &str) -> anyhow::Result<Self> {
        let table = unique_name("coupon_cut");
        let rules = format!(
            "table inet {table} {{\n\
             \tchain output {{\n\
             \t\ttype filter hook output priority 0; policy accept;\n\
             \t\t{matches} drop\n\
             \t}}\n\
             }}\n"
        );
        nft(&["-f", "-"], Some(&rules))?;
        Ok(Self { table })
    }

    /// Lets the packets through again.
    pub fn heal(self) {}
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        if let Err(err) = nft(&["delete", "table", "inet", &self.table], None) {
            eprintln!("could not remove nftables table {}: {err:#}", self.table);
        }
    }
}

/// One side of a partition: a cgroup (v2) of its own, which processes are
/// started in ([`Side::command`]) so that every socket they open carries it.
/// Removed on drop, which must come after its processes ended.
pub struct Side {
    /// The cgroup's folder.
    dir: PathBuf,
    /// Its path as nftables names it: relative to `/sys/fs/cgroup`.
    nft_path: String,
}

impl Side {
    pub fn new() -> anyhow::Result<Self> {
        let mount = cgroup2_mount()?;
        let name = unique_name("coupon_side");
        let dir = mount.join(&name);
        std::fs::create_dir(&dir).with_context(|| format!("making cgroup {}; is this root?", dir.display()))?;
        let relative = mount.strip_prefix("/sys/fs/cgroup").unwrap_or(Path::new(""));
        let nft_path = relative.join(&name).to_string_lossy().into_owned();
        Ok(Self { dir, nft_path })
    }

    /// A command that runs `program` inside this side: a shell moves itself
    /// into the cgroup and then execs the program in place (same pid). Add
    /// arguments and environment as to `Command::new(program)`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(r#"echo $$ > "$0" && exec "$@""#).arg(self.dir.join("cgroup.procs")).arg(program);
        command
    }

    /// `program` inside `side` when one is given, else `Command::new(program)`.
    pub fn command_in(side: Option<&Side>, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match side {
            Some(side) => side.command(program),
            None => Command::new(program),
        }
    }

    /// Cuts this side off from the server on `port`: what its processes send
    /// there is dropped, on the connections they hold and on every new one.
    pub fn cut_from(&self, port: u16) -> anyhow::Result<LinkCut> {
        LinkCut::dropping(&format!("socket cgroupv2 level 1 \"{}\" tcp dport {port}", self.nft_path))
            .with_context(|| format!("cutting cgroup {} from port {port}", self.nft_path))
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir(&self.dir) {
            eprintln!("could not remove cgroup {} (a process still in it?): {err}", self.dir.display());
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` beside the v1 controllers).
fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(2) == Some(&"cgroup2"))
        .map(|fields| PathBuf::from(fields[1]))
        .context("no cgroup2 file system is mounted")
}

/// A TCP proxy on 127.0.0.1 in front of one server; clients connect to
/// [`SlowLink::port`] instead. Every byte is held back by the latency set when
/// it was read, in order, in both directions; none by default. Stops, with its
/// connections, when dropped.
pub struct SlowLink {
    port: u16,
    /// Added to each round trip, in microseconds: half on the way there, half back.
    latency_us: Arc<AtomicU64>,
    /// Bytes carried, either way, while the latency was above zero.
    slowed_bytes: Arc<AtomicU64>,
    connections: JoinSet<()>,
}

impl SlowLink {
    pub async fn start(upstream_port: u16) -> anyhow::Result<Self> {
        Self::start_at(0, upstream_port).await
    }

    /// [`Self::start`] listening on `port` (0: any free one), for a server
    /// that tells its clients where to find it, as a Kafka broker does.
    pub async fn start_at(port: u16, upstream_port: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("listening on 127.0.0.1:{port} before port {upstream_port}"))?;
        let port = listener.local_addr()?.port();
        let latency_us = Arc::new(AtomicU64::new(0));
        let slowed_bytes = Arc::new(AtomicU64::new(0));
        let mut connections = JoinSet::new();
        let link = Pace { latency_us: latency_us.clone(), slowed_bytes: slowed_bytes.clone() };
        connections.spawn(async move {
            let mut pumps = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else { continue };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                pumps.spawn(pump(client_read, server_write, link.clone()));
                pumps.spawn(pump(server_read, client_write, link.clone()));
            }
        });
        Ok(Self { port, latency_us, slowed_bytes, connections })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, each round trip through the link takes `latency` longer.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_us.store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Bytes the link carried, either way, while it was slowed: that the
    /// clients' traffic really went through it.
    pub fn slowed_bytes(&self) -> u64 {
        self.slowed_bytes.load(Ordering::Relaxed)
    }
}

/// What the pumps of one link share.
#[derive(Clone)]
struct Pace {
    latency_us: Arc<AtomicU64>,
    slowed_bytes: Arc<AtomicU64>,
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.connections.abort_all();
    }
}

/// Copies one direction, each chunk written half the round-trip latency
/// after it was read.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, pace: Pace) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(read @ 1..) = from.read(&mut buffer).await {
            let latency_us = pace.latency_us.load(Ordering::Relaxed);
            if latency_us > 0 {
                pace.slowed_bytes.fetch_add(read as u64, Ordering::Relaxed);
            }
            let half = Duration::from_micros(latency_us / 2);
            if chunks.send((Instant::now() + half, buffer[..read].to_vec())).is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}

fn nft(args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft; is nftables installed (make setup) and is this root?")?;
    if let Some(input) = stdin {
        child.stdin.take().expect("piped").write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("nft {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_cut_direction_delivers_nothing_until_healed_and_the_other_keeps_flowing() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let server_port = listener.local_addr().expect("an address").port();
        let mut client = TcpStream::connect(("127.0.0.1", server_port)).expect("connected");
        let (mut server, _) = listener.accept().expect("accepted");
        let client_port = client.local_addr().expect("an address").port();
        for stream in [&client, &server] {
            stream.set_read_timeout(Some(Duration::from_millis(500))).expect("a timeout");
        }
        let mut byte = [0u8; 1];

        let cut = LinkCut::one_way(server_port, client_port).expect("a cut");
        server.write_all(b"x").expect("written into the kernel's buffer");
        assert!(client.read_exact(&mut byte).is_err(), "the server's byte crossed the cut");
        client.write_all(b"y").expect("written");
        server.read_exact(&mut byte).expect("the other direction flows");
        assert_eq!(&byte, b"y");

        cut.heal();
        // TCP retransmits what was dropped: the byte arrives once the path is open.
        client.set_read_timeout(Some(Duration::from_secs(10))).expect("a timeout");
        client.read_exact(&mut byte).expect("delivered after the heal");
        assert_eq!(&byte, b"x");
    }

    #[test]
    fn a_side_cut_from_a_port_cannot_reach_it_while_other_processes_can() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let port = listener.local_addr().expect("an address").port();
        let side = Side::new().expect("a side");
        let connect = |command: &mut Command| {
            command.args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")]).status().expect("bash ran").success()
        };
        let _cut = side.cut_from(port).expect("a cut");
        let mut inside = side.command("timeout");
        inside.args(["2", "bash"]);
        assert!(!connect(&mut inside), "a process of the side reached the port");
        let mut outside = Command::new("timeout");
        outside.args(["2", "bash"]);
        assert!(connect(&mut outside), "a process outside the side could not reach the port");
    }

    #[tokio::test]
    async fn a_slow_link_holds_each_round_trip_back_by_its_latency_and_keeps_the_bytes() {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a listener");
        let echo_port = echo.local_addr().expect("an address").port();
        tokio::spawn(async move {
            let (mut socket, _) = echo.accept().await.expect("accepted");
            let (mut read, mut write) = socket.split();
            let _ = tokio::io::copy(&mut read, &mut write).await;
        });
        let link = SlowLink::start(echo_port).await.expect("a proxy");
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", link.port())).await.expect("connected");
        let mut echoed = [0u8; 3];

        let round_trip = async |client: &mut tokio::net::TcpStream, echoed: &mut [u8; 3], bytes: &[u8; 3]| {
            let sent = Instant::now();
            AsyncWriteExt::write_all(client, bytes).await.expect("written");
            AsyncReadExt::read_exact(client, echoed).await.expect("echoed");
            sent.elapsed()
        };
        round_trip(&mut client, &mut echoed, b"abc").await;
        assert_eq!(&echoed, b"abc");
        link.set_latency(Duration::from_millis(300));
        let slow = round_trip(&mut client, &mut echoed, b"def").await;
        assert_eq!(&echoed, b"def");
        assert!(slow >= Duration::from_millis(300), "a round trip took {slow:?} with 300 ms added");
    }
}
