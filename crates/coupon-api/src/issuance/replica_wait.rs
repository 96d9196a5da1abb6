//! Replica acknowledgement before the `201` (`redis.min_replicas`).
//!
//! `WAIT n timeout` blocks its connection until `n` replicas acknowledged every
//! earlier write of that connection. All issue scripts go over the one shared
//! connection, so one `WAIT` sent after a burst of scripts answers for all of
//! them (group commit): requests queue here after their script replied, and
//! each round's `WAIT` covers everyone queued before it was sent. A request
//! whose script ran on an earlier connection (Redis dropped it since) cannot be
//! vouched for and gets `false`, as does everyone when the replicas are late.
//! In sentinel mode the count includes the replicas the sentinels would not
//! promote ([`SharedRedis::unpromotable_replicas`]).

use std::sync::Arc;
use std::time::Duration;

use coupon_infra::redis::SharedRedis;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

struct Waiter {
    /// The generation of the connection its script ran on.
    generation: u64,
    answer: oneshot::Sender<bool>,
}

/// The most requests one `WAIT` answers; more wait for the next round.
const ROUND: usize = 4_096;

#[derive(Clone)]
pub struct ReplicaWait {
    queue: Option<mpsc::UnboundedSender<Waiter>>,
}

impl ReplicaWait {
    /// No waiting: `redis.min_replicas` is 0.
    pub fn disabled() -> Self {
        Self { queue: None }
    }

    /// Starts the task that sends the `WAIT`s; it ends when `stop` is cancelled.
    pub fn start(
        redis: Arc<SharedRedis>,
        replicas: u32,
        timeout: Duration,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(redis, replicas, timeout, metrics, rx, stop));
        (Self { queue: Some(tx) }, task)
    }

    /// Whether the writes of the script that ran on the connection of this
    /// `generation` reached the required replicas; true at once when none are required.
    pub async fn acknowledged(&self, generation: u64) -> bool {
        let Some(queue) = &self.queue else { return true };
        let (answer, answered) = oneshot::channel();
        if queue.send(Waiter { generation, answer }).is_err() {
            return false;
        }
        answered.await.unwrap_or(false)
    }
}

async fn run(
    redis: Arc<SharedRedis>,
    replicas: u32,
    timeout: Duration,
    metrics: Metrics,
    mut queue: mpsc::UnboundedReceiver<Waiter>,
    stop: CancellationToken,
) {
    let mut round = Vec::with_capacity(ROUND);
    loop {
        tokio::select! {
            received = queue.recv_many(&mut round, ROUND) => if received == 0 { break },
            _ = stop.cancelled() => break,
        }
        let acked = match redis.link().await {
            Ok(link) => {
                // A replica the sentinels would not promote may be among those
                // that acknowledge: ask for that many more, so that `replicas`
                // of those acknowledging can become the primary.
                let required = replicas.saturating_add(redis.unpromotable_replicas());
                let reply = redis::cmd("WAIT")
                    .arg(required)
                    .arg(timeout.as_millis() as u64)
                    .query_async::<u32>(&mut link.conn.clone())
                    .await;
                match redis.observe(&link, reply) {
                    Ok(count) if count >= required => Some(link.generation),
                    Ok(count) => {
                        tracing::warn!(replicas = count, required, "replicas did not acknowledge in time");
                        None
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "WAIT failed");
                        None
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "no Redis connection for WAIT");
                None
            }
        };
        for waiter in round.drain(..) {
            let ok = acked == Some(waiter.generation);
            if !ok {
                metrics.replica_ack_failures.inc();
            }
            let _ = waiter.answer.send(ok);
        }
    }
    queue.close();
    while let Ok(waiter) = queue.try_recv() {
        let _ = waiter.answer.send(false);
    }
}
