//! Stopping and starting components of the local stack, through the same
//! script as `make up`/`make down`.

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

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/stack.sh")
}

async fn stack(action: String) -> anyhow::Result<()> {
    let status = tokio::task::spawn_blocking(move || Command::new(script()).arg(&action).status())
        .await?
        .context("running scripts/stack.sh")?;
    if !status.success() {
        bail!("scripts/stack.sh failed: {status}");
    }
    Ok(())
}

pub async fn stop(component: Component) -> anyhow::Result<()> {
    stack(format!("{}-down", component.name())).await
}

/// Starts the component and waits until it answers.
pub async fn start(component: Component) -> anyhow::Result<()> {
    stack(format!("{}-up", component.name())).await
}
