//! What a starting coupon-api waits for before it calls itself ready, in
//! order: the database schema, a first recovery pass that has made Redis safe
//! to issue from, and a Kafka producer that can deliver at once. The HTTP
//! server listens from the start (liveness), and `/health/ready` names the
//! stage it is in until the last one is passed.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    MigratingSchema,
    FirstRecoveryPass,
    WarmingProducer,
    Ready,
}

impl Stage {
    /// What the service waits for in this stage, for the log and the probe.
    pub fn waiting_for(self) -> &'static str {
        match self {
            Stage::MigratingSchema => "the database schema to be migrated",
            Stage::FirstRecoveryPass => "a first recovery pass to make Redis safe to issue from",
            Stage::WarmingProducer => "the Kafka producer's topic metadata and producer id",
            Stage::Ready => "nothing",
        }
    }
}

/// The start-up stage, shared by the tasks that pass each one and the probe.
#[derive(Clone)]
pub struct Readiness(Arc<watch::Sender<Stage>>);

impl Default for Readiness {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(Stage::MigratingSchema)))
    }
}

impl Readiness {
    pub fn stage(&self) -> Stage {
        *self.0.borrow()
    }

    pub fn is_ready(&self) -> bool {
        self.stage() == Stage::Ready
    }

    /// Moves on to `next` unless already there or further; logs what comes next.
    pub fn advance(&self, next: Stage) {
        let moved = self.0.send_if_modified(|stage| {
            let moves = *stage < next;
            if moves {
                *stage = next;
            }
            moves
        });
        if moved && next != Stage::Ready {
            tracing::info!("starting: waiting for {}", next.waiting_for());
        }
    }

    /// Returns once the stage is `stage` or further.
    pub async fn reached(&self, stage: Stage) {
        let mut stages = self.0.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = stages.wait_for(|now| *now >= stage).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stages_only_move_forward() {
        let readiness = Readiness::default();
        readiness.advance(Stage::WarmingProducer);
        readiness.advance(Stage::FirstRecoveryPass);
        assert_eq!(readiness.stage(), Stage::WarmingProducer);
        readiness.reached(Stage::FirstRecoveryPass).await;
        assert!(!readiness.is_ready());
        readiness.advance(Stage::Ready);
        assert!(readiness.is_ready());
    }
}
