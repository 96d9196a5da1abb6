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

/// A stack component stopped by the test. It is started again when the test
/// says so, or when the value is dropped (a failing test must not leave the
/// stack without it for the next one).
#[must_use = "the component starts again when this is dropped"]
pub struct Stopped {
    component: Option<Component>,
}

impl Stopped {
    /// Starts the component again and waits until it answers.
    pub async fn start(mut self) -> anyhow::Result<()> {
        let component = self.component.take().expect("not started yet");
        run_script_async("stack.sh", vec![format!("{}-up", component.name())]).await
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(component) = self.component.take() {
            if let Err(err) = run_script("stack.sh", &[format!("{}-up", component.name())]) {
                eprintln!("starting {component:?} again after the test: {err:#}");
            }
        }
    }
}

pub async fn stop(component: Component) -> anyhow::Result<Stopped> {
    run_script_async("stack.sh", vec![format!("{}-down", component.name())]).await?;
    Ok(Stopped { component: Some(component) })
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

/// A cluster node SIGKILLed by the test. It is started again when the test
/// says so, or when the value is dropped (a failing test must not leave the
/// cluster stack short of a node for the next one).
pub struct KilledNode {
    node: Option<ClusterNode>,
}

impl KilledNode {
    /// Starts the node again and waits until it answers.
    pub async fn start(mut self) -> anyhow::Result<()> {
        let node = self.node.take().expect("not started yet");
        run_script_async("stack-cluster.sh", node.args("start")).await
    }
}

impl Drop for KilledNode {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            if let Err(err) = run_script("stack-cluster.sh", &node.args("start")) {
                eprintln!("starting {node:?} again after the test: {err:#}");
            }
        }
    }
}

/// SIGKILLs one node of the cluster stack, as a crash would.
pub async fn kill(node: ClusterNode) -> anyhow::Result<KilledNode> {
    run_script_async("stack-cluster.sh", node.args("kill")).await?;
    Ok(KilledNode { node: Some(node) })
}
