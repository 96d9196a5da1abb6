//! coupon-api against the real stack: one test binary, each test with its own
//! database, topic and Redis key prefix.

mod acknowledger;
mod admin;
mod architecture;
mod auth;
mod cluster;
mod console;
mod contract;
mod harness;
mod issue;
mod memory;
mod outbox;
mod promotion;
mod queries;
mod recovery;
mod redemption;
mod redis_restart;
mod relay;
mod shards;
mod startup;
