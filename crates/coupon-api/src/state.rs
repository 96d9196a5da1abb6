//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::auth::Authenticator;
use crate::catalog::Catalog;
use crate::durability::ReplicaWait;
use crate::issuance::HandOff;
use crate::issuer::Issuer;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::outbox::{AckQueue, Outbox};
use crate::publisher::Publisher;
use crate::readiness::Readiness;
use crate::recovery::RecoveryRequests;
use crate::redemption::Redemptions;
use crate::watchlist::Watchlist;

pub struct AppState {
    pub issuer: Arc<Issuer>,
    pub outbox: Arc<Outbox>,
    /// The outboxes this replica's relay reads.
    pub watchlist: Arc<Watchlist>,
    /// Delivered outbox entries, removed in batches.
    pub acks: AckQueue,
    pub publisher: Arc<Publisher>,
    pub catalog: Catalog,
    /// Redeems and releases held coupons.
    pub redemptions: Redemptions,
    pub metrics: Metrics,
    pub admin_token: Option<SecretString>,
    /// Who a request acts for.
    pub authenticator: Authenticator,
    /// How fast one customer and one address may ask.
    pub limits: Arc<Limits>,
    /// How long a request waits for Kafka's acknowledgement; zero: not at all.
    pub ack_timeout: Duration,
    pub hand_off: HandOff,
    /// Waits for Redis replicas before a 201 (`redis.min_replicas`).
    pub replicas: ReplicaWait,
    /// Asks for a rebuild when a request finds Redis suspect.
    pub recovery: RecoveryRequests,
    /// How far the start has come (`/health/ready`).
    pub readiness: Readiness,
}
