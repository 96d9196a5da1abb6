//! The services as child processes, each with its own port, logs and settings.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The folder of the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    coupon_testkit::target_dir()
}

pub fn log_dir() -> PathBuf {
    let dir = bin_dir().join("e2e-logs");
    std::fs::create_dir_all(&dir).expect("creating the e2e log folder");
    dir
}

/// A running service binary.
pub struct Service {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    /// Where this run's output starts in the log, which earlier runs share.
    log_start: u64,
}

impl Service {
    pub fn start(binary: &str, name: &str, env: &BTreeMap<String, String>) -> anyhow::Result<Self> {
        Self::start_with_clock(binary, name, env, None)
    }

    /// Like [`Self::start`], with the process's wall clock `offset` from the
    /// real one when given ([`coupon_testkit::clock::shift`]).
    pub fn start_with_clock(
        binary: &str,
        name: &str,
        env: &BTreeMap<String, String>,
        offset: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::start_in(binary, name, env, offset, None)
    }

    /// [`Self::start_with_clock`], inside `side` when one is given, so that
    /// a partition can cut it off.
    pub fn start_in(
        binary: &str,
        name: &str,
        env: &BTreeMap<String, String>,
        offset: Option<&str>,
        side: Option<&coupon_testkit::netfault::Side>,
    ) -> anyhow::Result<Self> {
        let mut command = coupon_testkit::netfault::Side::command_in(side, bin_dir().join(binary));
        if let Some(offset) = offset {
            coupon_testkit::clock::shift(&mut command, offset)?;
        }
        // The log goes to a file the tests read: plain text, no colour codes.
        command.envs(env).env("RUST_LOG", "info").env("NO_COLOR", "1");
        Self::spawn(command, name)
            .with_context(|| format!("starting {binary}; was it built (cargo build --workspace)?"))
    }

    /// Runs `command` with its output appended to `e2e-logs/<name>.log`.
    pub fn spawn(mut command: Command, name: &str) -> anyhow::Result<Self> {
        let log = log_dir().join(format!("{name}.log"));
        let out = File::options().create(true).append(true).open(&log)?;
        let log_start = out.metadata()?.len();
        let child = command.stdout(Stdio::from(out.try_clone()?)).stderr(Stdio::from(out)).spawn()?;
        Ok(Self { name: name.to_string(), child: Some(child), log, log_start })
    }

    /// What this run has written to its log so far.
    pub fn output(&self) -> anyhow::Result<String> {
        let log = std::fs::read(&self.log).with_context(|| format!("reading {}", self.log.display()))?;
        let start = (self.log_start as usize).min(log.len());
        Ok(String::from_utf8_lossy(&log[start..]).into_owned())
    }

    /// The lines this run logged at level ERROR: what an operator's log
    /// alert would page on. Lines read `<timestamp> <LEVEL> <target>: …`.
    pub fn error_lines(&self) -> anyhow::Result<Vec<String>> {
        let output = self.output()?;
        Ok(output.lines().filter(|line| line.split_whitespace().nth(1) == Some("ERROR")).map(str::to_owned).collect())
    }

    /// Waits for the process to exit; after `timeout` it is still running
    /// (and killed when the value is dropped).
    pub async fn exited(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let what = format!("{} to exit", self.name);
        let child = self.child.as_mut().expect("running");
        let status = coupon_testkit::poll_until(&what, timeout, || {
            let exited = child.try_wait().map_err(anyhow::Error::from);
            async move { exited }
        })
        .await?;
        self.child = None;
        Ok(status)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// Kills the process without warning, as a crash would.
    pub fn kill(mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.child.take().expect("running").wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(mut self, timeout: Duration) -> anyhow::Result<()> {
        let _ = kill(self.pid(), Signal::SIGTERM);
        let status = self.exited(timeout).await.context("after SIGTERM")?;
        if !status.success() {
            bail!("{} exited with {status} after SIGTERM", self.name);
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `url` answers 2xx.
pub async fn wait_healthy(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if matches!(http.get(url).send().await, Ok(r) if r.status().is_success()) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{url} not healthy after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
