//! Every issued event reaches Kafka: the Redis `outbox` keeps it from the
//! issue script on until Kafka acknowledged it, the `publisher` sends it, the
//! `relay` re-sends what was not acknowledged, and the `watchlist` tells each
//! replica's relay which outboxes to read. Delivery is at least once; the
//! writer's idempotent insert makes it exactly one row.

pub mod outbox;
pub mod publisher;
pub mod relay;
pub mod watchlist;
