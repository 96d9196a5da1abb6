//! Stopping and starting components of the local stacks, through the same
//! scripts as `make up`/`make down` and `make up-cluster`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

#[derive(Debug, Clone, Copy)]
pub enum Component {
    Kafka,
    Postgres,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Kafka => "kafka",
            Component::Postgres => "postgres",
        }
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts").join(name)
}

fn run_script(name: &'static str, args: &[String]) -> anyhow::Result<()> {
    let status = Command::new(script(name)).args(args).status().with_context(|| format!("running scripts/{name}"))?;
    if !status.success() {
        bail!("scripts/{name} {} failed: {status}", args.join(" "));
    }
    Ok(())
}

async fn run_script_async(name: &'static str, args: Vec<String>) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_script(name, &args)).await?
}

/// A stack component or cluster node the test stopped or killed. It is
/// started again when the test says so, or when the value is dropped (a
/// failing test must not leave the stack short of it for the next one).
#[must_use = "it starts again when this is dropped"]
pub struct Down {
    /// The script and the arguments that start it again.
    restart: Option<(&'static str, Vec<String>)>,
}

impl Down {
    /// Starts it again and waits until it answers.
    pub async fn start(mut self) -> anyhow::Result<()> {
        let (script, args) = self.restart.take().expect("not started yet");
        run_script_async(script, args).await
    }
}

impl Drop for Down {
    fn drop(&mut self) {
        if let Some((script, args)) = self.restart.take() {
            if let Err(err) = run_script(script, &args) {
                eprintln!("scripts/{script} {} after the test: {err:#}", args.join(" "));
            }
        }
    }
}

pub async fn stop(component: Component) -> anyhow::Result<Down> {
    run_script_async("stack.sh", vec![format!("{}-down", component.name())]).await?;
    Ok(Down { restart: Some(("stack.sh", vec![format!("{}-up", component.name())])) })
}

/// A node of the local cluster stack.
#[derive(Debug, Clone, Copy)]
pub enum ClusterNode {
    /// The Redis Cluster node on this port (7001-7006).
    Redis(u16),
    /// Kafka node 1, 2 or 3 (clients on 9N92).
    Kafka(u8),
}

impl ClusterNode {
    fn args(self, action: &str) -> Vec<String> {
        match self {
            ClusterNode::Redis(port) => vec![format!("{action}-redis"), port.to_string()],
            ClusterNode::Kafka(n) => vec![format!("{action}-kafka"), n.to_string()],
        }
    }
}

/// SIGKILLs one node of the cluster stack, as a crash would.
pub async fn kill(node: ClusterNode) -> anyhow::Result<Down> {
    run_script_async("stack-cluster.sh", node.args("kill")).await?;
    Ok(Down { restart: Some(("stack-cluster.sh", node.args("start"))) })
}
