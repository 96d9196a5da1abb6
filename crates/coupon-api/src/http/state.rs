//! What every request handler shares.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::Access;
use crate::catalog::cache::CouponCache;
use crate::catalog::Catalog;
use crate::delivery::outbox::Outbox;
use crate::http::limits::Limits;
use crate::issuance::Issuance;
use crate::metrics::Metrics;
use crate::promotion::stats::Stats;
use crate::promotion::Controls;
use crate::readiness::Readiness;
use crate::recovery::fence::Fences;
use crate::recovery::RecoveryRequests;
use crate::redemption::Redemptions;
use crate::store::CouponStore;

pub struct AppState {
    pub issuance: Issuance,
    /// Reads of the coupon state in Redis (stock, holders, liveness).
    pub store: Arc<CouponStore>,
    pub outbox: Arc<Outbox>,
    /// An operator's rebuild fences the coupon first.
    pub fences: Arc<Fences>,
    pub catalog: Catalog,
    /// Coupon definitions for the public read, briefly cached.
    pub coupons: Arc<CouponCache>,
    /// Redeems and releases held coupons.
    pub redemptions: Redemptions,
    /// Pause, resume, end and change a promotion.
    pub controls: Controls,
    /// Each promotion's live view, and this replica's issue answers for it.
    pub stats: Arc<Stats>,
    pub metrics: Metrics,
    /// Who a request acts for.
    pub access: Arc<Access>,
    /// How fast one customer and one address may ask.
    pub limits: Arc<Limits>,
    /// Asks for a rebuild (an operator's prime, a coupon Redis lacks).
    pub recovery: RecoveryRequests,
    /// How far the start has come (`/health/ready`).
    pub readiness: Readiness,
    /// Cancelled when the service starts to stop: long-lived answers (the
    /// live view's stream) end, so the server's graceful stop need not wait.
    pub stopping: CancellationToken,
}
