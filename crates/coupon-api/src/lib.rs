//! coupon-api: the HTTP service that decides issuance requests.

pub mod config;
pub mod routes;
pub mod startup;
