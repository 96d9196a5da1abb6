//! Abuse limits on issuance: how fast one customer, and one client address,
//! may ask. A request over a limit answers `429 TOO_MANY_REQUESTS` with
//! `Retry-After` and changes nothing. GCRA rate limiters (governor), keyed by
//! customer and by address; keys that are back to a full burst are dropped
//! every few seconds, so memory follows the clients of the last moments, not
//! every client ever seen.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;
use coupon_domain::CustomerId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::config::LimitSettings;
use crate::error::ApiError;

pub struct Limits {
    per_customer: Option<DefaultKeyedRateLimiter<i64>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trust_forwarded_for: bool,
}

/// How often limiter keys back at a full burst are dropped.
const CLEANUP_EVERY: Duration = Duration::from_secs(5);

/// A limit of `per_second` (0: none) with bursts of `burst` (at least one second's worth).
fn limiter<K: std::hash::Hash + Eq + Clone>(per_second: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
    Some(RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
}

impl Limits {
    pub fn new(settings: &LimitSettings) -> Self {
        Self {
            per_customer: limiter(settings.per_customer_per_second, settings.per_customer_burst),
            per_address: limiter(settings.per_address_per_second, settings.per_address_burst),
            trust_forwarded_for: settings.trust_forwarded_for,
        }
    }

    /// Takes one request of `customer` from `req`'s client address off both limits.
    pub fn check(&self, req: &HttpRequest, customer: CustomerId) -> Result<(), ApiError> {
        if let (Some(limiter), Some(address)) = (&self.per_address, self.client_address(req)) {
            take(limiter, &address)?;
        }
        if let Some(limiter) = &self.per_customer {
            take(limiter, &customer.get())?;
        }
        Ok(())
    }

    /// The socket's peer; behind a trusted proxy, the address that proxy
    /// appended to `X-Forwarded-For` (the last one: those before it are
    /// whatever the client claimed).
    fn client_address(&self, req: &HttpRequest) -> Option<IpAddr> {
        let forwarded = self
            .trust_forwarded_for
            .then(|| req.headers().get("X-Forwarded-For")?.to_str().ok()?.rsplit(',').next()?.trim().parse().ok())
            .flatten();
        forwarded.or_else(|| req.peer_addr().map(|peer| peer.ip()))
    }

    /// Drops keys back at a full burst every few seconds, until `stop`.
    pub async fn clean_up(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CLEANUP_EVERY) => {}
            }
            if let Some(limiter) = &self.per_customer {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
            if let Some(limiter) = &self.per_address {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }
}

/// Takes one request off `key`'s allowance, or says when the next one fits.
fn take<K: std::hash::Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), ApiError> {
    limiter.check_key(key).map_err(|until| {
        let wait = until.wait_time_from(DefaultClock::default().now());
        ApiError::TooManyRequests { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
    })
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn settings(per_customer: u32, per_address: u32) -> LimitSettings {
        LimitSettings {
            per_customer_per_second: per_customer,
            per_customer_burst: per_customer,
            per_address_per_second: per_address,
            per_address_burst: per_address,
            trust_forwarded_for: true,
        }
    }

    fn from(address: &str) -> HttpRequest {
        TestRequest::default().insert_header(("X-Forwarded-For", format!("6.6.6.6, {address}"))).to_http_request()
    }

    #[test]
    fn a_customer_over_its_burst_is_told_when_to_retry_and_others_are_not() {
        let limits = Limits::new(&settings(2, 0));
        let (seven, eight) = (CustomerId::new(7).unwrap(), CustomerId::new(8).unwrap());
        assert!(limits.check(&from("10.0.0.1"), seven).is_ok());
        assert!(limits.check(&from("10.0.0.1"), seven).is_ok());
        let err = limits.check(&from("10.0.0.1"), seven).unwrap_err();
        assert!(matches!(err, ApiError::TooManyRequests { retry_after_secs: 1 }), "{err:?}");
        assert!(limits.check(&from("10.0.0.1"), eight).is_ok(), "another customer has its own limit");
    }

    #[test]
    fn the_address_is_the_one_the_trusted_proxy_appended() {
        let limits = Limits::new(&settings(0, 1));
        let customer = CustomerId::new(7).unwrap();
        assert!(limits.check(&from("10.0.0.1"), customer).is_ok());
        assert!(limits.check(&from("10.0.0.1"), customer).is_err());
        assert!(
            limits.check(&from("10.0.0.2"), customer).is_ok(),
            "a different client behind the same spoofed first hop"
        );
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = Limits::new(&settings(0, 0));
        for _ in 0..100 {
            assert!(limits.check(&from("10.0.0.1"), CustomerId::new(7).unwrap()).is_ok());
        }
    }
}
