//! Harness for the end-to-end suite: runs coupon-api and coupon-writer as real
//! processes (the binaries `make test` built) against the stack of `make up`,
//! stops and starts stack components, and checks the promises afterwards.

pub mod invariants;
pub mod process;
pub mod prometheus;
pub mod redemption;
pub mod report;
pub mod secure;
pub mod stack;
pub mod walkthrough;
pub mod world;
