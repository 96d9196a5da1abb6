//! The private Redis deployments of the Redis scenarios, on their own: a
//! sentinel failover with the old primary rejoining as a replica, a rollback
//! to a snapshot, a restart with nothing on disk. They start their own
//! processes on free ports and need no stack.

use std::time::{Duration, Instant};

use coupon_testkit::redis_node::{master_addr, query, RedisNode, Sentinel, MASTER_NAME};

async fn set_keys(node: &RedisNode, prefix: &str, count: usize) {
    let mut mset = redis::cmd("MSET");
    for i in 0..count {
        mset.arg(format!("{prefix}{i}")).arg(i);
    }
    let _: String = query(&node.url(), &mset).await.expect("MSET");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sentinel_promotes_the_replica_and_the_old_primary_rejoins_as_its_replica() {
    let mut primary = RedisNode::primary("redis-test primary").await.expect("primary");
    let replica = RedisNode::replica("redis-test replica", &primary).await.expect("replica");
    let sentinel = Sentinel::start("redis-test sentinel", &primary, 1).await.expect("sentinel");
    assert_eq!(sentinel.master_port().await.unwrap(), primary.port());
    set_keys(&primary, "k", 100).await;
    let acked: i64 = query(&primary.url(), redis::cmd("WAIT").arg(1).arg(5_000)).await.unwrap();
    assert_eq!(acked, 1, "the replica acknowledged the writes");

    primary.kill();
    let killed = Instant::now();
    let new = sentinel.wait_new_master(primary.port(), Duration::from_secs(30)).await.expect("a promotion");
    eprintln!("promotion took {:.1} s", killed.elapsed().as_secs_f64());
    assert_eq!(new, replica.port());
    let (_, port) = master_addr(&sentinel.url(), MASTER_NAME).await.unwrap();
    assert_eq!(port, replica.port(), "the sentinel names the new primary");
    assert_eq!(replica.dbsize().await.unwrap(), 100, "the promoted replica has what was acknowledged");
    let role: redis::InfoDict = query(&replica.url(), redis::cmd("INFO").arg("replication")).await.unwrap();
    assert_eq!(role.get::<String>("role").as_deref(), Some("master"));

    primary.restart().await.expect("restarting the old primary");
    let restarted = Instant::now();
    primary.wait_replica_of(new, Duration::from_secs(60)).await.expect("the old primary rejoins as a replica");
    eprintln!("the old primary was a replica {:.1} s after its restart", restarted.elapsed().as_secs_f64());
    sentinel.wait_replicas(1, Duration::from_secs(30)).await.expect("the sentinel sees it as a healthy replica");
    let acked: i64 = query(&replica.url(), redis::cmd("WAIT").arg(1).arg(5_000)).await.unwrap();
    assert_eq!(acked, 1, "the new primary has a replica again");

    let dirs = [primary.dir().to_path_buf(), replica.dir().to_path_buf()];
    let url = primary.url();
    drop((sentinel, replica, primary));
    assert!(dirs.iter().all(|dir| !dir.exists()), "data folders removed");
    assert!(query::<String>(&url, &redis::cmd("PING")).await.is_err(), "the process is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_restarts_from_the_snapshot_and_a_wipe_from_nothing() {
    let mut node = RedisNode::primary("redis-test rollback").await.expect("primary");
    set_keys(&node, "before", 100).await;
    node.bgsave(Duration::from_secs(30)).await.expect("a snapshot");
    set_keys(&node, "after", 50).await;

    // A SIGKILLed Redis with its AOF keeps everything.
    node.restart().await.expect("restart");
    assert_eq!(node.dbsize().await.unwrap(), 150);

    assert_eq!(node.restart_from_snapshot().await.expect("rollback"), 100, "only what the snapshot held");
    let persistence = node.info("persistence").await.unwrap();
    assert_eq!(persistence.get::<u8>("aof_enabled"), Some(1), "AOF is on again after the rollback");
    set_keys(&node, "later", 10).await;
    node.restart().await.expect("restart after the rollback");
    assert_eq!(node.dbsize().await.unwrap(), 110, "the new AOF has the snapshot and what came after");

    node.restart_empty().await.expect("wipe");
    assert_eq!(node.dbsize().await.unwrap(), 0);

    let dir = node.dir().to_path_buf();
    drop(node);
    assert!(!dir.exists(), "data folder removed");
}

/// A node started with its clock ahead answers `TIME` that far ahead of
/// this process's clock, and still after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_its_clock_ahead_keeps_it_ahead_across_a_restart() {
    const AHEAD: Duration = Duration::from_secs(30);
    let mut node = RedisNode::primary_with_clock_ahead("clock ahead", AHEAD).await.expect("a Redis ahead");
    for when in ["at start", "after a restart"] {
        let (seconds, _): (u64, u64) = query(&node.url(), &redis::cmd("TIME")).await.expect("TIME");
        let ours = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
        let ahead = seconds.saturating_sub(ours);
        assert!((29..=31).contains(&ahead), "Redis is {ahead} s ahead {when}, not 30");
        node.restart().await.expect("a restart");
    }
}
