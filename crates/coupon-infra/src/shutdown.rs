//! The shutdown signal: the first SIGTERM or SIGINT. Servers take any future as
//! their stop condition, so tests stop them without signals. And the watch
//! over a service's essential tasks: one that ends before the signal stops
//! the service, which then exits non-zero so its orchestrator restarts it.

use std::future::Future;

use futures::future::{select_all, BoxFuture, FutureExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

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

/// A task the service cannot do without, as [`until_shutdown_or_ended`] watches it.
pub struct Essential<'a> {
    name: &'static str,
    ended: BoxFuture<'a, anyhow::Result<()>>,
}

impl<'a> Essential<'a> {
    /// Watches a spawned task without taking it: once the watch is over the
    /// caller still joins the tasks that did not end.
    pub fn task<T: TaskOutcome + Send>(name: &'static str, task: &'a mut JoinHandle<T>) -> Self {
        let ended = async move {
            match task.await {
                Ok(outcome) => outcome.into_result(),
                Err(join) => Err(join.into()),
            }
        };
        Self { name, ended: ended.boxed() }
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

/// Waits for `shutdown` (`None`) or for the first of `essential` to end, a
/// panic included (`Some`), whichever comes first. The tasks are not
/// cancelled either way.
pub async fn until_shutdown_or_ended(
    shutdown: impl Future<Output = ()>,
    essential: Vec<Essential<'_>>,
) -> Option<Ended> {
    if essential.is_empty() {
        shutdown.await;
        return None;
    }
    let first_to_end =
        select_all(essential.into_iter().map(|Essential { name, ended }| ended.map(move |outcome| (name, outcome))));
    tokio::select! {
        () = shutdown => None,
        ((task, outcome), _, _) = first_to_end => {
            tracing::error!(task, outcome = ?outcome, "an essential task ended; stopping");
            Some(Ended { task, outcome })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn forever() -> JoinHandle<anyhow::Result<()>> {
        tokio::spawn(futures::future::pending())
    }

    #[tokio::test]
    async fn a_task_that_returns_ends_the_watch_at_once_with_its_name() {
        let mut serving = forever();
        let mut relay = tokio::spawn(async { anyhow::Ok(()) });
        let watch = until_shutdown_or_ended(
            futures::future::pending(),
            vec![Essential::task("the server", &mut serving), Essential::task("the relay", &mut relay)],
        );
        let ended = tokio::time::timeout(Duration::from_secs(1), watch).await.expect("within a second");
        let ended = ended.expect("a task ended");
        assert_eq!(ended.task, "the relay");
        assert!(ended.outcome.is_ok());
        assert!(!serving.is_finished(), "the other tasks are left running");
    }

    #[tokio::test]
    async fn a_task_that_panics_or_fails_ends_the_watch_with_the_cause() {
        let mut panicking = tokio::spawn(async { panic!("relay bug") as anyhow::Result<()> });
        let mut serving = forever();
        let ended = until_shutdown_or_ended(
            futures::future::pending(),
            vec![Essential::task("the relay", &mut panicking), Essential::task("the server", &mut serving)],
        );
        let ended = tokio::time::timeout(Duration::from_secs(1), ended).await.expect("within a second").expect("ended");
        assert_eq!(ended.task, "the relay");
        let err = ended.outcome.expect_err("a panic is a failure");
        assert!(err.downcast_ref::<tokio::task::JoinError>().is_some_and(|join| join.is_panic()), "{err:#}");

        let mut failing = tokio::spawn(async { Err::<(), _>(std::io::Error::other("listener closed")) });
        let ended =
            until_shutdown_or_ended(futures::future::pending(), vec![Essential::task("the server", &mut failing)]);
        let ended = tokio::time::timeout(Duration::from_secs(1), ended).await.expect("within a second").expect("ended");
        assert_eq!(ended.outcome.expect_err("failed").to_string(), "listener closed");
    }

    #[tokio::test]
    async fn the_shutdown_signal_ends_the_watch_without_a_culprit() {
        let mut serving = forever();
        let ended = until_shutdown_or_ended(async {}, vec![Essential::task("the server", &mut serving)]).await;
        assert!(ended.is_none());
        assert!(until_shutdown_or_ended(async {}, Vec::new()).await.is_none());
    }
}
