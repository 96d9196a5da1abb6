//! Merged script calls: one issue-script call decides every request for a
//! coupon that arrived while the coupon's previous call was in flight (per
//! route: each shard of a sharded coupon has its own lane).
//!
//! A coupon's lane exists while a task is sending its calls. A request finds
//! the lane and joins its queue, or opens it and starts the task. The task
//! takes up to `max_batch` requests in arrival order, makes one call and
//! hands each request its own decision, and repeats until nothing waits. No
//! timer: a lone request goes out at once. A call's outbox entries,
//! replica wait, fence and lost reply stay per customer: the script writes
//! one entry per issuance, each request waits for the replicas itself, and
//! a fence or a lost reply answers every request of the call.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use coupon_domain::CustomerId;
use prometheus::{Histogram, IntGauge};
use tokio::sync::oneshot;

use super::issuer::{Decider, Decision, Route};
use crate::store::RedisUnavailable;

type Answer = oneshot::Sender<Result<Decision, RedisUnavailable>>;

pub(crate) struct Lanes {
    decider: Decider,
    max_batch: usize,
    /// The requests each coupon's task has not sent yet, in arrival order.
    waiting: Mutex<HashMap<Route, Vec<(CustomerId, Answer)>>>,
    batch_sizes: Histogram,
    /// Requests in `waiting`, over every coupon.
    queued: IntGauge,
}

impl Lanes {
    pub(crate) fn new(decider: Decider, max_batch: usize, (batch_sizes, queued): (Histogram, IntGauge)) -> Self {
        Self { decider, max_batch, waiting: Mutex::default(), batch_sizes, queued }
    }

    pub(crate) async fn issue(
        self: &Arc<Self>,
        coupon: Route,
        customer: CustomerId,
    ) -> Result<Decision, RedisUnavailable> {
        let (answer, answered) = oneshot::channel();
        self.queued.inc();
        let opened = match self.lanes().entry(coupon) {
            Entry::Occupied(mut lane) => {
                lane.get_mut().push((customer, answer));
                false
            }
            Entry::Vacant(lane) => {
                lane.insert(vec![(customer, answer)]);
                true
            }
        };
        if opened {
            // A task of its own: a request that goes away (its client
            // disconnected) must not strand the requests queued behind it.
            tokio::spawn(Arc::clone(self).send(coupon));
        }
        // The task dropped the request only by panicking.
        answered.await.unwrap_or(Err(RedisUnavailable::Reply(redis::Value::Nil)))
    }

    /// Sends the coupon's queued requests, a call at a time, until none wait;
    /// then closes the lane.
    async fn send(self: Arc<Self>, coupon: Route) {
        let _closed_on_panic = ClosedOnPanic { lanes: &self, coupon };
        loop {
            let batch: Vec<(CustomerId, Answer)> = {
                let mut lanes = self.lanes();
                let Some(lane) = lanes.get_mut(&coupon) else { return };
                if lane.is_empty() {
                    lanes.remove(&coupon);
                    return;
                }
                let take = lane.len().min(self.max_batch);
                self.queued.sub(take as i64);
                lane.drain(..take).collect()
            };
            self.batch_sizes.observe(batch.len() as f64);
            let customers: Vec<CustomerId> = batch.iter().map(|(customer, _)| *customer).collect();
            match self.decider.decide(coupon, &customers).await {
                Ok(decisions) => {
                    for ((_, answer), decision) in batch.into_iter().zip(decisions) {
                        // Its request may have gone away; the decision stands.
                        let _ = answer.send(Ok(decision));
                    }
                }
                Err(err) => {
                    for (_, answer) in batch {
                        let _ = answer.send(Err(err.clone()));
                    }
                }
            }
        }
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<Route, Vec<(CustomerId, Answer)>>> {
        // Nothing panics while holding it.
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Closes a coupon's lane if its task panics, so the next request opens a
/// new one; the requests still queued get an error (their senders drop).
struct ClosedOnPanic<'a> {
    lanes: &'a Lanes,
    coupon: Route,
}

impl Drop for ClosedOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(stranded) = self.lanes.lanes().remove(&self.coupon) {
                self.lanes.queued.sub(stranded.len() as i64);
            }
        }
    }
}
