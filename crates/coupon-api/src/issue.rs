//! One issuance: the Redis decision, then the hand-off of the event to Kafka.
//!
//! The 201 waits for Kafka's acknowledgement (up to `kafka.ack_timeout_ms`) while
//! Kafka is healthy: then an issued coupon survives even a Redis crash inside
//! its AOF fsync window, because its event is already replicated in Kafka.
//! While Kafka is failing the request does not wait; the outbox entry written
//! by the script keeps the event, and the relay delivers it later.
//!
//! In the `sync-db` baseline mode the request instead writes its own database
//! transaction and answers after the commit; a failed transaction leaves the
//! outbox entry to the relay, so even the baseline loses nothing.

use coupon_domain::{CouponId, CouponIssuedEvent, CustomerId};

use crate::config::IssueMode;
use crate::issuer::{Decision, Issued, RedisUnavailable};
use crate::outbox::Delivered;
use crate::state::AppState;

pub async fn issue(state: &AppState, coupon: CouponId, customer: CustomerId) -> Result<Decision, RedisUnavailable> {
    let decision = state.issuer.issue(coupon, customer).await?;
    if let Decision::Issued(issued) = &decision {
        match state.mode {
            IssueMode::Kafka => hand_off(state, coupon, customer, issued).await,
            IssueMode::SyncDb => write_through(state, coupon, customer, issued).await,
        }
    }
    Ok(decision)
}

async fn write_through(state: &AppState, coupon: CouponId, customer: CustomerId, issued: &Issued) {
    match state.catalog.record_issue(coupon, customer, issued.issued_at).await {
        Ok(()) => state.acks.push(Delivered { coupon, entry: issued.outbox_entry.clone() }),
        Err(err) => {
            tracing::warn!(error = %err, coupon = %coupon, "database write failed; event left in the outbox for the relay")
        }
    }
}

async fn hand_off(state: &AppState, coupon: CouponId, customer: CustomerId, issued: &Issued) {
    let event = CouponIssuedEvent { coupon_id: coupon, customer_id: customer, issued_at: issued.issued_at };
    // The delivery callback removes the outbox entry, whether or not this
    // request is still waiting by then.
    let delivery = state.publisher.send(&event, Some(Delivered { coupon, entry: issued.outbox_entry.clone() }));
    if state.ack_timeout.is_zero() || !state.publisher.is_healthy() {
        return;
    }
    match tokio::time::timeout(state.ack_timeout, delivery).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, coupon = %coupon, "event left in the outbox for the relay"),
        Err(_) => state.publisher.mark_unhealthy(),
    }
}
