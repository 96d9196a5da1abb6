//! The shutdown signal: the first SIGTERM or SIGINT. Servers take any future as
//! their stop condition, so tests stop them without signals. And the watch
//! over a service's essential tasks: one that ends before the signal stops
//! the service, which then exits non-zero so its orchestrator restarts it.

use std::collections::HashMap;
use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};
use tokio::task::{Id, JoinError, JoinSet};

pub async fn signal_received() {
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the service");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    let name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
}

/// The tasks a service cannot do without, spawned together. The first that
/// ends before the shutdown signal, a panic included, stops the service.
#[derive(Default)]
pub struct Essential {
    tasks: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, &'static str>,
}

impl Essential {
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future + Send + 'static,
        F::Output: TaskOutcome,
    {
        let handle = self.tasks.spawn(async move { task.await.into_result() });
        self.names.insert(handle.id(), name);
    }

    /// Waits for `shutdown` (`None`) or for the first task to end (`Some`),
    /// whichever comes first. The other tasks go on either way.
    pub async fn until_shutdown_or_ended(&mut self, shutdown: impl Future<Output = ()>) -> Option<Ended> {
        if self.tasks.is_empty() {
            shutdown.await;
            return None;
        }
        tokio::select! {
            () = shutdown => None,
            Some(joined) = self.tasks.join_next_with_id() => {
                let ended = self.ended(joined);
                tracing::error!(task = ended.task, outcome = ?ended.outcome, "an essential task ended; stopping");
                Some(ended)
            }
        }
    }

    /// Waits for the remaining tasks, once the caller told them to stop;
    /// returns the first failure or panic among them.
    pub async fn join(mut self) -> anyhow::Result<()> {
        let mut first_failure = None;
        while let Some(joined) = self.tasks.join_next_with_id().await {
            let Ended { task, outcome } = self.ended(joined);
            if let Err(err) = outcome {
                first_failure.get_or_insert(err.context(format!("{task} failed")));
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    fn ended(&self, joined: Result<(Id, anyhow::Result<()>), JoinError>) -> Ended {
        let (id, outcome) = match joined {
            Ok((id, outcome)) => (id, outcome),
            Err(err) => (err.id(), Err(err.into())),
        };
        Ended { task: self.names.get(&id).copied().unwrap_or("an unnamed task"), outcome }
    }
}

/// What a task returns, as success or failure.
pub trait TaskOutcome {
    fn into_result(self) -> anyhow::Result<()>;
}

impl TaskOutcome for () {
    fn into_result(self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl<T, E: Into<anyhow::Error>> TaskOutcome for Result<T, E> {
    fn into_result(self) -> anyhow::Result<()> {
        self.map(drop).map_err(Into::into)
    }
}

/// An essential task that ended before the shutdown signal, and how.
#[derive(Debug)]
pub struct Ended {
    pub task: &'static str,
    pub outcome: anyhow::Result<()>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_task_that_returns_ends_the_watch_at_once_with_its_name() {
        let mut essential = Essential::default();
        essential.spawn("the server", futures::future::pending::<()>());
        essential.spawn("the relay", async {});
        let watch = essential.until_shutdown_or_ended(futures::future::pending());
        let ended = tokio::time::timeout(Duration::from_secs(1), watch).await.expect("within a second");
        let ended = ended.expect("a task ended");
        assert_eq!(ended.task, "the relay");
        assert!(ended.outcome.is_ok());
        assert_eq!(essential.tasks.len(), 1, "the other tasks are left running");
    }

    #[tokio::test]
    async fn a_task_that_panics_or_fails_ends_the_watch_with_the_cause() {
        let mut essential = Essential::default();
        essential.spawn("the relay", async { panic!("relay bug") as anyhow::Result<()> });
        essential.spawn("the server", futures::future::pending::<()>());
        let watch = essential.until_shutdown_or_ended(futures::future::pending());
        let ended = tokio::time::timeout(Duration::from_secs(1), watch).await.expect("within a second").expect("ended");
        assert_eq!(ended.task, "the relay");
        let err = ended.outcome.expect_err("a panic is a failure");
        assert!(err.downcast_ref::<JoinError>().is_some_and(JoinError::is_panic), "{err:#}");

        let mut essential = Essential::default();
        essential.spawn("the server", async { Err::<(), _>(std::io::Error::other("listener closed")) });
        let watch = essential.until_shutdown_or_ended(futures::future::pending());
        let ended = tokio::time::timeout(Duration::from_secs(1), watch).await.expect("within a second").expect("ended");
        assert_eq!(
            (ended.task, ended.outcome.expect_err("failed").to_string().as_str()),
            ("the server", "listener closed")
        );
    }

    #[tokio::test]
    async fn the_shutdown_signal_ends_the_watch_and_join_waits_for_the_rest() {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut essential = Essential::default();
        essential.spawn("the relay", async {
            let _ = stopped.await;
        });
        essential.spawn("the server", async { Err::<(), _>(anyhow::anyhow!("flush failed")) });
        assert!(Essential::default().until_shutdown_or_ended(async {}).await.is_none());
        let mut quiet = Essential::default();
        quiet.spawn("the relay", futures::future::pending::<()>());
        assert!(quiet.until_shutdown_or_ended(async {}).await.is_none(), "the signal came first");

        stop.send(()).expect("the relay waits");
        let err = essential.join().await.expect_err("the server failed");
        assert_eq!(format!("{err:#}"), "the server failed: flush failed");
    }
}
