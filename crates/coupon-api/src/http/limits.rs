//! Abuse limits: how fast one customer, and one client address, may ask,
//! and how often one address may fail to authenticate. A request over a
//! limit answers `429 TOO_MANY_REQUESTS` with `Retry-After` and changes
//! nothing. GCRA rate limiters (governor), keyed by customer and by address;
//! keys that are back to a full burst are dropped every few seconds, so
//! memory follows the clients of the last moments, not every client ever seen.
//!
//! An IPv6 client is keyed by its /64: one subscriber usually holds a whole
//! /64, so a /128 key would give it unlimited keys.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;
use coupon_domain::CustomerId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use crate::config::LimitSettings;
use crate::error::ApiError;

pub struct Limits {
    per_customer: Option<DefaultKeyedRateLimiter<i64>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    failed_auth: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trust_forwarded_for: bool,
    /// Proxies whose `X-Forwarded-For` entries are skipped from the right.
    trusted_proxies: Vec<IpNet>,
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
            failed_auth: NonZeroU32::new(settings.failed_auth_per_minute)
                .map(|per_minute| RateLimiter::keyed(Quota::per_minute(per_minute))),
            trust_forwarded_for: settings.trust_forwarded_for,
            trusted_proxies: settings.trusted_proxies.clone(),
        }
    }

    /// Takes one request of `customer` (when the caller is one) from `req`'s
    /// client address off both limits.
    pub fn check(&self, req: &HttpRequest, customer: Option<CustomerId>) -> Result<(), ApiError> {
        if let (Some(limiter), Some(address)) = (&self.per_address, self.client_address(req)) {
            take(limiter, &address)?;
        }
        self.check_customer(customer)
    }

    /// Takes one request of `customer` off its limit only: for a service
    /// acting for it, whose few addresses carry every customer's requests.
    pub fn check_customer(&self, customer: Option<CustomerId>) -> Result<(), ApiError> {
        match (&self.per_customer, customer) {
            (Some(limiter), Some(customer)) => take(limiter, &customer.get()),
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication from `req`'s address: an error once
    /// the address has failed more than its allowance this minute.
    pub fn failed_auth(&self, req: &HttpRequest) -> Result<(), ApiError> {
        match (&self.failed_auth, self.client_address(req)) {
            (Some(limiter), Some(address)) => take(limiter, &address),
            _ => Ok(()),
        }
    }

    /// The client's address, as a limiter key: the socket's peer; behind
    /// trusted proxies, the right-most `X-Forwarded-For` address (over every
    /// line of the header) that is not one of them, since the entries left of
    /// it are whatever the client claimed.
    fn client_address(&self, req: &HttpRequest) -> Option<IpAddr> {
        let forwarded = self.trust_forwarded_for.then(|| self.forwarded_client(req)).flatten();
        forwarded.or_else(|| req.peer_addr().map(|peer| peer.ip())).map(key)
    }

    fn forwarded_client(&self, req: &HttpRequest) -> Option<IpAddr> {
        let lines: Vec<&str> =
            req.headers().get_all("X-Forwarded-For").filter_map(|value| value.to_str().ok()).collect();
        let entries = lines.iter().flat_map(|line| line.split(',')).map(str::trim);
        let addresses: Vec<IpAddr> = entries.filter_map(|entry| entry.parse().ok()).collect();
        addresses.into_iter().rev().find(|address| !self.trusted_proxies.iter().any(|proxy| proxy.contains(address)))
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
            for limiter in [&self.per_address, &self.failed_auth].into_iter().flatten() {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }
}

/// An IPv6 address keyed by its /64; IPv4 as it is.
fn key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked above")),
        v4 => v4,
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
            failed_auth_per_minute: 0,
            trust_forwarded_for: true,
            trusted_proxies: vec!["192.168.0.0/16".parse().unwrap()],
        }
    }

    fn from(address: &str) -> HttpRequest {
        TestRequest::default().insert_header(("X-Forwarded-For", format!("6.6.6.6, {address}"))).to_http_request()
    }

    #[test]
    fn a_customer_over_its_burst_is_told_when_to_retry_and_others_are_not() {
        let limits = Limits::new(&settings(2, 0));
        let (seven, eight) = (CustomerId::new(7).unwrap(), CustomerId::new(8).unwrap());
        assert!(limits.check(&from("10.0.0.1"), Some(seven)).is_ok());
        assert!(limits.check(&from("10.0.0.1"), Some(seven)).is_ok());
        let err = limits.check(&from("10.0.0.1"), Some(seven)).unwrap_err();
        assert!(matches!(err, ApiError::TooManyRequests { retry_after_secs: 1 }), "{err:?}");
        assert!(limits.check(&from("10.0.0.1"), Some(eight)).is_ok(), "another customer has its own limit");
    }

    #[test]
    fn the_address_is_the_one_the_trusted_proxy_appended() {
        let limits = Limits::new(&settings(0, 1));
        let customer = CustomerId::new(7).unwrap();
        assert!(limits.check(&from("10.0.0.1"), Some(customer)).is_ok());
        assert!(limits.check(&from("10.0.0.1"), Some(customer)).is_err());
        assert!(
            limits.check(&from("10.0.0.2"), Some(customer)).is_ok(),
            "a different client behind the same spoofed first hop"
        );
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = Limits::new(&settings(0, 0));
        for _ in 0..100 {
            assert!(limits.check(&from("10.0.0.1"), CustomerId::new(7).ok()).is_ok());
        }
    }

    fn forwarded(lines: &[&str]) -> HttpRequest {
        let mut req = TestRequest::default();
        for line in lines {
            req = req.append_header(("X-Forwarded-For", *line));
        }
        req.to_http_request()
    }

    #[test]
    fn the_client_is_the_right_most_forwarded_address_that_is_no_trusted_proxy_over_every_line() {
        let limits = Limits::new(&settings(0, 1));
        // A proxy that adds a line of its own after the client's spoofed one.
        let spoofing = ["1.2.3.4", "10.0.0.9, 192.168.1.1"];
        assert!(limits.check(&forwarded(&spoofing), None).is_ok());
        let again = ["5.6.7.8", "10.0.0.9, 192.168.1.2"];
        assert!(limits.check(&forwarded(&again), None).is_err(), "10.0.0.9 is the client, whatever it claims");
        assert!(limits.check(&forwarded(&["10.0.0.10"]), None).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_keyed_by_its_64() {
        let limits = Limits::new(&settings(0, 1));
        assert!(limits.check(&from("2001:db8:1:2::1"), None).is_ok());
        assert!(limits.check(&from("2001:db8:1:2:ffff::9"), None).is_err(), "the same /64");
        assert!(limits.check(&from("2001:db8:1:3::1"), None).is_ok(), "another /64");
    }

    #[test]
    fn failed_authentication_is_limited_per_address() {
        let limits = Limits::new(&LimitSettings { failed_auth_per_minute: 3, ..settings(0, 0) });
        for _ in 0..3 {
            assert!(limits.failed_auth(&from("10.0.0.1")).is_ok());
        }
        assert!(matches!(limits.failed_auth(&from("10.0.0.1")), Err(ApiError::TooManyRequests { .. })));
        assert!(limits.failed_auth(&from("10.0.0.2")).is_ok());
    }
}
