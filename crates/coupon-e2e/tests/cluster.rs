//! The three promises on the cluster stack (`make up-cluster`): Redis Cluster
//! with three masters and a replica each, three Kafka brokers (replication
//! factor 3, `min.insync.replicas=2`), two coupon-api replicas sharing the
//! load and three writers. The coupons' slots land on all three masters. Each
//! fault strikes while coupons are still being issued; every scenario ends
//! with the same checks as the single-node suite (crate::invariants) and a
//! reconciliation run.
//!
//! The scenarios kill nodes of the shared cluster stack, so this binary runs
//! with `--test-threads=1` (see the Makefile). `E2E_CUSTOMERS` sets the spike
//! size as in `scenarios.rs` (split over the three coupons here).
//!
//! Four scenarios are the long profile, run by `make e2e-cluster` and not by
//! `make test` (marked `ignore`): the skewed clocks (c7, c10), the slow links
//! (c8) and the split brain (c9). The single-node suite runs each of these
//! faults in `make test` (s13, s20, s16, s17), on the same recovery and
//! fencing code. The cluster adds the cluster client's view of each fault,
//! for 3.5 minutes of a suite that should stay near 30.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coupon_domain::keys::CouponKeys;
use coupon_domain::shards::{home_shard, split_stock, CouponShard};
use coupon_domain::{CouponId, CustomerId};
use coupon_e2e::process::Service;
use coupon_e2e::stack::{self, ClusterNode};
use coupon_e2e::world::{reached, RedisTarget, Stack, World};
use coupon_loadgen::spike::{self, Attempt, Spike};
use coupon_testkit::netfault::{LinkCut, Side, SlowLink};
use coupon_testkit::redis_node::{
    cluster_bus_ports, query, replica_link_ports, replica_port_of, replication_offset, stall, wait_replica_of,
    RedisCluster,
};
use coupon_testkit::{cluster_kafka_proxied_ports, poll_until};

/// Masters of the cluster stack: one coupon lands on each.
const MASTERS: usize = 3;

/// The second wave's customers, after a Redis fault, start here: none of
/// the first spike's.
const SECOND_WAVE_FIRST_CUSTOMER: i64 = 1_000_000;

/// Customers served by a master between two failovers start here, and those
/// issued behind a cut replication link here: none of the others.
const BETWEEN_FAILOVERS_FIRST_CUSTOMER: i64 = 2_000_000;
const BEHIND_THE_CUT_FIRST_CUSTOMER: i64 = 3_000_000;
/// Customers who empty a shard before a spike start here.
const SHARD_ZERO_FIRST_CUSTOMER: i64 = 4_000_000;

/// Distinct customers per coupon.
fn customers() -> u64 {
    std::env::var("E2E_CUSTOMERS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000) / MASTERS as u64
}

/// Stock per coupon: the coupons are still being issued when a fault strikes.
fn stock() -> u64 {
    customers() * 3 / 4
}

/// A world on the cluster stack with two API replicas and three writers running.
struct Cluster {
    world: World,
    apis: Vec<Service>,
    _writers: Vec<Service>,
    /// One per master, in the order the masters were first hit.
    coupons: Vec<i64>,
}

impl Cluster {
    async fn start(name: &str) -> Self {
        let world = World::on(name, Stack::Cluster { api_replicas: 2 }).await;
        let apis = world.start_apis().await;
        let mut writers = Vec::new();
        for n in 1..=3 {
            writers.push(world.start_writer(n).await);
        }
        let coupons = coupons_on_every_master(&world).await;
        Self { world, apis, _writers: writers, coupons }
    }

    /// As `start`, with one coupon whose stock is spread over three shards,
    /// and the API replicas given `api_env` too.
    async fn start_sharded(name: &str, api_env: &[(&str, &str)]) -> Self {
        let mut world = World::on(name, Stack::Cluster { api_replicas: 2 }).await;
        world.overrides.extend(api_env.iter().map(|(key, value)| (key.to_string(), value.to_string())));
        let apis = world.start_apis().await;
        let mut writers = Vec::new();
        for n in 1..=3 {
            writers.push(world.start_writer(n).await);
        }
        let coupons = vec![world.create_sharded_coupon(stock(), 3).await];
        Self { world, apis, _writers: writers, coupons }
    }

    /// Requests of the whole spike: every customer of every coupon once, a
    /// tenth twice (three coupons, or the one sharded coupon).
    fn requests(&self) -> u64 {
        (customers() + customers() / 10) * self.coupons.len() as u64
    }

    async fn spike(&self, progress: Arc<AtomicU64>) -> Spike {
        self.world.spike(&self.coupons, customers(), progress).await
    }

    /// The spike, with `fault` started (and timed as the fault) once a fifth
    /// of it is answered; `fault` gets the spike's progress counter.
    async fn spike_with_fault<T, F>(&self, fault: impl FnOnce(Arc<AtomicU64>) -> F) -> (Spike, T)
    where
        F: Future<Output = T>,
    {
        self.world.spike_with_fault(&self.coupons, customers(), self.requests() / 5, fault).await
    }

    /// After a fault: a second wave of new customers, retried while fenced,
    /// sells every coupon out; every `503 UNCONFIRMED` must resolve; then
    /// [`Self::verify`].
    async fn sell_out_and_verify(&self, mut spike: Spike) {
        let wave = self
            .world
            .wave_until_served(&self.coupons, SECOND_WAVE_FIRST_CUSTOMER, customers(), Duration::from_secs(180))
            .await
            .expect("issuance resumes after the fault");
        spike.answers.extend(wave.answers);
        self.world.resolve_unconfirmed(&spike, Duration::from_secs(60)).await.expect("every unconfirmed resolves");
        self.verify(&spike).await;
    }

    /// Checks the promises for every coupon; each sells out exactly (the
    /// spike, or a second wave, asks more than the stock).
    async fn verify(&self, spike: &Spike) {
        let verdicts = self.world.verify(&self.coupons, stock() as i64, spike).await;
        for (coupon, verdict) in self.coupons.iter().zip(&verdicts) {
            assert_eq!(verdict.rows, stock() as i64, "coupon {coupon} sells out exactly");
        }
    }
}

/// The URL of the cluster stack's node on `port`.
fn node_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// Waits until the node on `port` is the master of `coupon`'s slot.
async fn wait_master(world: &World, coupon: i64, port: u16) {
    poll_until(&format!("port {port} to hold coupon {coupon}'s slot"), Duration::from_secs(60), || async {
        Ok(world.master_port(coupon).await.ok().filter(|master| *master == port))
    })
    .await
    .expect("the promotion");
}

/// Half of `coupon`'s `stock` issued on its master `a` and on its replica
/// `b`, then `b` cut from `a`'s stream and the other half issued on `a`
/// alone: the answers, and the cut.
async fn half_on_both_then_half_on_the_master(
    world: &World,
    coupon: i64,
    stock: u64,
    a: u16,
    b: u16,
) -> (Spike, LinkCut) {
    let wave = |first: i64, customers: u64| {
        spike::run(&world.api, spike::plan(&[coupon], customers, first, 0.0), 64, Arc::default())
    };
    let mut answers = wave(1, stock / 2).await;
    poll_until("the replica to have the master's whole stream", Duration::from_secs(30), || async {
        let (on_a, on_b) = (replication_offset(&node_url(a)).await?, replication_offset(&node_url(b)).await?);
        Ok((on_a == on_b).then_some(()))
    })
    .await
    .expect("the replica caught up");
    let links = replica_link_ports(&node_url(a)).await.expect("the master's replica links");
    assert_eq!(links.len(), 1, "the master has one replica: {links:?}");
    let cut = LinkCut::one_way(a, links[0]).expect("cutting the master's stream to its replica");
    answers.answers.extend(wave(stock as i64 / 2 + 1, stock / 2).await.answers);
    assert_eq!(answers.issued().count() as u64, stock, "sold out before the rollback");
    (answers, cut)
}

/// `CLUSTER FAILOVER FORCE` on the replica on `port` (its master is gone),
/// and waits until it holds `coupon`'s slot.
async fn force_failover(world: &World, coupon: i64, port: u16) {
    let force = redis::cmd("CLUSTER").arg("FAILOVER").arg("FORCE").clone();
    let _: String = query(&node_url(port), &force).await.expect("CLUSTER FAILOVER FORCE");
    wait_master(world, coupon, port).await;
}

/// Creates coupons until each master holds one; the others stay unused.
async fn coupons_on_every_master(world: &World) -> Vec<i64> {
    let mut masters = BTreeSet::new();
    let mut coupons = Vec::new();
    for _ in 0..64 {
        let coupon = world.create_coupons(1, stock()).await[0];
        let master = world.master_port(coupon).await.expect("the coupon's master");
        if masters.insert(master) {
            coupons.push(coupon);
            if coupons.len() == MASTERS {
                return coupons;
            }
        }
    }
    panic!("64 coupons landed on only {masters:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn c1_spike_across_every_master() {
    let cluster = Cluster::start("c1 cluster spike").await;
    let spike = cluster.spike(Arc::default()).await;
    cluster.verify(&spike).await;
}

/// The master of the first coupon's slot SIGKILLed once a fifth of the spike
/// is answered; its replica takes over the slots. The services must fence the
/// coupons (every open one: a new incarnation on any shard fences them all)
/// until the writers caught up and rebuild them from PostgreSQL (an
/// asynchronous replica may lack the last issuances). The old
/// master is started again and rejoins as a replica; then a second wave of
/// new customers, retried while fenced, sells every coupon out.
#[tokio::test(flavor = "multi_thread")]
async fn c2_redis_master_killed_replica_takes_over() {
    let cluster = Cluster::start("c2 cluster Redis master SIGKILL").await;
    let world = &cluster.world;
    let victim = world.master_port(cluster.coupons[0]).await.expect("the first coupon's master");
    let (spike, ()) = cluster
        .spike_with_fault(|_| async {
            let killed_at = Instant::now();
            let killed = stack::kill(ClusterNode::Redis(victim)).await.expect("killing the master");
            let promoted =
                coupon_testkit::poll_until("a replica to take the slots over", Duration::from_secs(60), || async {
                    Ok(world.master_port(cluster.coupons[0]).await.ok().filter(|port| *port != victim))
                })
                .await
                .expect("the replica is promoted");
            eprintln!("port {promoted} took over {:.1} s after the kill", killed_at.elapsed().as_secs_f64());
            killed.start().await.expect("starting the old master again");
            eprintln!("port {victim} is a replica again {:.1} s after the kill", killed_at.elapsed().as_secs_f64());
        })
        .await;
    cluster.sell_out_and_verify(spike).await;
}

/// A coupon sharded three ways, whose API replicas hold every transfer
/// between shards for a second after its take (a fail point). Shard 0 is
/// sold to its own customers before the spike, so its customers in the spike
/// are served by transfers from the start; once a fifth of the spike is
/// answered, the master of a shard that units were taken from, for a
/// transfer not yet given, is SIGKILLed. The whole coupon is fenced and
/// rebuilt (transfers in flight are voided and their units counted again
/// from PostgreSQL), and it still sells out exactly.
#[tokio::test(flavor = "multi_thread")]
async fn c11_a_sharded_coupons_master_killed_during_a_transfer() {
    let held = [("FAILPOINTS", "refill-transfer-taken=return(1000)")];
    let cluster = Cluster::start_sharded("c11 cluster sharded coupon, master SIGKILL", &held).await;
    let world = &cluster.world;
    let coupon = cluster.coupons[0];
    // Without it the three shards may all run out within one round of
    // merged calls, and the spike sell out with no transfer to strike.
    let emptied = sell_shard_zero(world, coupon).await;
    let (mut spike, ()) = cluster
        .spike_with_fault(|progress| async move {
            let answered = |progress: &AtomicU64| progress.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!("looking for an open transfer from {} answers on", answered(&progress));
            let (donor, victim) =
                poll_until("a transfer to be open", Duration::from_secs(60), || open_transfer(world, coupon))
                    .await
                    .unwrap_or_else(|err| panic!("{err:#}, with {} answers", answered(&progress)));
            let killed = stack::kill(ClusterNode::Redis(victim)).await.expect("killing the master");
            eprintln!(
                "killed {victim}, the master of shard {donor}, with a transfer open there, at {} answers",
                answered(&progress)
            );
            poll_until("a replica to take the slots over", Duration::from_secs(60), || async {
                Ok(world.shard_master_port(coupon, donor).await.ok().filter(|port| *port != victim))
            })
            .await
            .expect("the replica is promoted");
            killed.start().await.expect("starting the old master again");
        })
        .await;
    spike.answers.extend(emptied.answers);
    cluster.sell_out_and_verify(spike).await;
}

/// Sells shard 0 of a three-way coupon of `stock()` out to customers whose
/// home it is (from their own range of ids).
async fn sell_shard_zero(world: &World, coupon: i64) -> Spike {
    let units = split_stock(stock() as i64, 3)[0];
    let customers = (SHARD_ZERO_FIRST_CUSTOMER..)
        .filter(|&id| CustomerId::new(id).is_ok_and(|customer| home_shard(customer, 3) == 0))
        .take(usize::try_from(units).expect("a small stock"));
    let plan = customers.map(|customer| Attempt { coupon, customer }).collect();
    let sold = spike::run(&world.api, plan, 64, Arc::default()).await;
    assert_eq!(sold.issued().count() as i64, units, "shard 0 sold to its own customers");
    sold
}

/// A shard of `coupon` (of three) with a transfer it recorded and has not
/// settled, and its master's port.
async fn open_transfer(world: &World, coupon: i64) -> anyhow::Result<Option<(u16, u16)>> {
    for shard in 0..3 {
        let port = world.shard_master_port(coupon, shard).await?;
        let keys = CouponKeys::of_shard(&world.key_prefix, CouponShard { coupon: CouponId::new(coupon)?, shard });
        let open: u64 = query(&format!("redis://127.0.0.1:{port}"), redis::cmd("HLEN").arg(&keys.transfers)).await?;
        if open > 0 {
            return Ok(Some((shard, port)));
        }
    }
    Ok(None)
}

/// The master of the first coupon's slot stalls for 1.6 s (a script that
/// keeps it busy; below `cluster-node-timeout`, so it is not failed over)
/// once a fifth of the spike is answered: the requests in flight there
/// outlive the services' 1 s Redis timeout and are answered `503
/// UNCONFIRMED`, never retried by the cluster client. Each resolves, as the
/// status endpoint tells the customer, to issued with a row or not issued.
#[tokio::test(flavor = "multi_thread")]
async fn c5_redis_master_stalls_past_the_timeout() {
    let cluster = Cluster::start("c5 cluster Redis master stalls (lost replies)").await;
    let world = &cluster.world;
    let victim = world.master_port(cluster.coupons[0]).await.expect("the first coupon's master");
    let (spike, ()) = cluster
        .spike_with_fault(|_| async {
            let url = format!("redis://127.0.0.1:{victim}");
            stall(&url, Duration::from_millis(1_600)).await.await.expect("the stall ends");
        })
        .await;
    let unconfirmed = spike.answers.iter().filter(|a| a.code.as_deref() == Some("UNCONFIRMED")).count();
    assert!(unconfirmed > 0, "the stall left requests without their reply");
    let issued = world.resolve_unconfirmed(&spike, Duration::from_secs(60)).await.expect("every unconfirmed resolves");
    eprintln!("{unconfirmed} answers unconfirmed, {issued} of those customers issued");
    cluster.verify(&spike).await;
}

/// One of the three brokers SIGKILLed once a fifth of the spike is answered
/// and kept down until every promise is checked: partition leaders move to
/// the other two, which still make `min.insync.replicas=2`.
#[tokio::test(flavor = "multi_thread")]
async fn c3_kafka_broker_killed() {
    let cluster = Cluster::start("c3 cluster Kafka broker SIGKILL").await;
    let requests = cluster.requests();
    let (spike, killed) = cluster
        .spike_with_fault(|progress| async move {
            let killed = stack::kill(ClusterNode::Kafka(1)).await.expect("killing a broker");
            // Down for the rest of the spike.
            reached(&progress, requests).await;
            killed
        })
        .await;
    cluster.verify(&spike).await;
    killed.start().await.expect("starting the broker again");
}

/// One of the two API replicas SIGKILLed once a fifth of the spike is
/// answered, then started again; the other serves meanwhile, and the relay
/// delivers what the killed one left in the outboxes.
#[tokio::test(flavor = "multi_thread")]
async fn c4_api_replica_killed() {
    let mut cluster = Cluster::start("c4 cluster API replica SIGKILL").await;
    let victim = cluster.apis.pop().expect("two replicas");
    let world = &cluster.world;
    let (spike, _restarted) = cluster
        .spike_with_fault(|_| async {
            victim.kill();
            world.start_api_replica(1).await
        })
        .await;
    cluster.verify(&spike).await;
}

/// Failback to a former master that lagged (issue 32, P2). Once a tenth of
/// a half-size spike is answered, a coupon's master A hands its slots
/// to its replica B (`CLUSTER FAILOVER`) and rejoins as B's replica; a
/// demoted master keeps its script cache. B serves new customers; then B's
/// stream to A is cut (nftables drops B's packets on A's link, so neither
/// side notices) while more are issued on B: those units exist only on B and
/// in Kafka. B is SIGKILLed and the cluster promotes A, which never received
/// them. A is not the master of the system's keys, where coupon-api records
/// the incarnation it trusted, so only the issue script tells: coupon-api
/// takes it off every replica, A answers NOSCRIPT once promoted, every open
/// coupon is fenced and rebuilt from PostgreSQL, and B's units are never sold
/// again.
#[tokio::test(flavor = "multi_thread")]
async fn c6_failback_to_a_former_master_that_lagged() {
    let cluster = Cluster::start("c6 cluster failback to a former master that lagged").await;
    let world = &cluster.world;
    let system = world.system_master_port().await.expect("the system keys' master");
    let mut coupon = None;
    for candidate in &cluster.coupons {
        let master = world.master_port(*candidate).await.expect("a coupon's master");
        if master != system {
            coupon = Some((*candidate, master));
        }
    }
    let (coupon, a) = coupon.expect("a coupon on another master than the system's");
    let b = replica_port_of(&node_url(a), a).await.expect("A's replica");
    let switchover = |_| async move {
        let _: String = query(&node_url(b), redis::cmd("CLUSTER").arg("FAILOVER")).await.expect("CLUSTER FAILOVER");
        wait_master(world, coupon, b).await;
        wait_replica_of(&node_url(a), b, Duration::from_secs(60)).await.expect("A becomes B's replica");
    };
    // Half the customers: stock is left for B to issue behind the cut.
    let (mut spike, ()) =
        world.spike_with_fault(&cluster.coupons, customers() / 2, cluster.requests() / 10, switchover).await;
    let served = world
        .wave_until_served(&cluster.coupons, BETWEEN_FAILOVERS_FIRST_CUSTOMER, 50, Duration::from_secs(180))
        .await
        .expect("B serves after the switchover");
    spike.answers.extend(served.answers);

    let (behind_the_cut, killed) = world
        .fault(async {
            let links = replica_link_ports(&node_url(b)).await.expect("B's replica links");
            assert_eq!(links.len(), 1, "A is B's one replica: {links:?}");
            let cut = LinkCut::one_way(b, links[0]).expect("cutting B's stream to A");
            let plan = spike::plan(&cluster.coupons, customers() / 10, BEHIND_THE_CUT_FIRST_CUSTOMER, 0.0);
            let wave = spike::run(&world.api, plan, 128, Arc::default()).await;
            let offset_a = replication_offset(&node_url(a)).await.expect("A's offset");
            let offset_b = replication_offset(&node_url(b)).await.expect("B's offset");
            eprintln!("while cut: {:?}; A at offset {offset_a}, B at {offset_b}", wave.by_outcome());
            assert!(offset_a < offset_b, "A lags behind B ({offset_a} < {offset_b})");
            let killed = stack::kill(ClusterNode::Redis(b)).await.expect("killing B");
            wait_master(world, coupon, a).await;
            cut.heal();
            (wave, killed)
        })
        .await;
    let issued_on_b = behind_the_cut.issued().filter(|answer| answer.attempt.coupon == coupon).count();
    eprintln!("B issued {issued_on_b} units that A never received");
    assert!(issued_on_b > 0, "B issued while its stream to A was cut");
    spike.answers.extend(behind_the_cut.answers);
    killed.start().await.expect("B rejoins as A's replica");
    cluster.sell_out_and_verify(spike).await;
}

/// Clock skew on the cluster (issue 32, P4): both coupon-api replicas run 5 s
/// ahead of Redis (under `faketime`). A coupon's master A issues half its
/// stock, then its stream to its replica B is cut and A issues the other
/// half: B lacks it. 2.5 s before the coupon's end, by Redis's clock, A is
/// SIGKILLed and B forced to take over (`CLUSTER FAILOVER FORCE`): a rollback.
/// By the API's clock the coupon has ended, by Redis's, which the issue
/// script judges by, it is open. The recovery picks the coupons to fence by
/// Redis's clock, so the coupon is fenced and rebuilt and nothing is sold
/// again from the rolled-back state; by the API's clock it would be left
/// unfenced and sell the forgotten half until its end. After the end a new
/// customer is told `EXPIRED`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "long profile: make e2e-cluster"]
async fn c7_api_clocks_ahead_and_a_master_rolled_back_near_a_coupons_end() {
    const STOCK: u64 = 200;
    const SKEW: Duration = Duration::from_secs(5);
    /// The recovery's allowance between the clocks of a cluster's nodes.
    const CLOCK_MARGIN: Duration = Duration::from_secs(2);
    let name = "c7 cluster API clocks 5 s ahead, a master rolled back near the end";
    let mut world = World::on(name, Stack::Cluster { api_replicas: 2 }).await;
    world.api_clock_offset = Some(format!("+{}", SKEW.as_secs()));
    let _apis = world.start_apis().await;
    let _writer = world.start_writer(1).await;
    let lasting = Duration::from_secs(14);
    let ends = Instant::now() + lasting;
    let coupon = world.api.create_coupon_for(&world.name, STOCK, lasting).await.expect("a coupon");
    let a = world.master_port(coupon).await.expect("the coupon's master");
    let b = replica_port_of(&node_url(a), a).await.expect("A's replica");
    let (mut answers, cut) = half_on_both_then_half_on_the_master(&world, coupon, STOCK, a, b).await;

    // The API's clock passed the end by more than the 2 s the recovery
    // allows between the clocks of a cluster's nodes; Redis's has 2.5 s to go.
    tokio::time::sleep_until((ends - SKEW + CLOCK_MARGIN + Duration::from_millis(500)).into()).await;
    let killed = stack::kill(ClusterNode::Redis(a)).await.expect("killing A");
    force_failover(&world, coupon, b).await;
    let left = ends.saturating_duration_since(Instant::now());
    eprintln!("B took over with {:.1} s left before the end by Redis's clock", left.as_secs_f64());
    assert!(left > Duration::from_millis(500), "B took over in time to sell again from the rolled-back state");
    cut.heal();
    world.nothing_sold_again_then_expired(coupon, SECOND_WAVE_FIRST_CUSTOMER, STOCK, ends, &mut answers).await;
    world.resolve_unconfirmed(&answers, Duration::from_secs(60)).await.expect("every unconfirmed resolves");
    killed.start().await.expect("A rejoins as B's replica");
    world.verify(&[coupon], STOCK as i64, &answers).await;
}

/// coupon-api's clock 5 s behind Redis's on a cluster (issue 32, P4): a
/// cluster of the test's own whose every node runs 5 s ahead (datefudge).
/// A coupon that lasts 14 s by the API's clock ends 5 s earlier by Redis's.
/// Its master A issues half the stock, its stream to its replica B is cut
/// and A issues the other half; 2.5 s before the end by Redis's clock A is
/// SIGKILLed and B forced to take over (a rollback). The coupon is fenced and
/// rebuilt, nothing is sold again, and once Redis's clock passed the end a
/// new customer is told `EXPIRED`, though by the API's clock the coupon is
/// open for 4 s more.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "long profile: make e2e-cluster"]
async fn c10_api_clocks_behind_and_a_master_rolled_back_near_a_coupons_end() {
    const STOCK: u64 = 200;
    const SKEW: Duration = Duration::from_secs(5);
    let name = "c10 cluster API clocks 5 s behind, a master rolled back near the end";
    let mut world = World::on(name, Stack::Cluster { api_replicas: 2 }).await;
    let mut redis =
        RedisCluster::start_with_clock_ahead("c10 cluster", MASTERS, 1, SKEW).await.expect("a cluster 5 s ahead");
    world.redis = RedisTarget::Cluster { seeds: redis.ports().into_iter().map(node_url).collect() };
    let _apis = world.start_apis().await;
    let _writer = world.start_writer(1).await;
    let lasting = Duration::from_secs(14);
    let ends_by_redis = Instant::now() + lasting - SKEW;
    let coupon = world.api.create_coupon_for(&world.name, STOCK, lasting).await.expect("a coupon");
    let a = world.master_port(coupon).await.expect("the coupon's master");
    let b = replica_port_of(&node_url(a), a).await.expect("A's replica");
    let (mut answers, cut) = half_on_both_then_half_on_the_master(&world, coupon, STOCK, a, b).await;

    tokio::time::sleep_until((ends_by_redis - Duration::from_millis(2_500)).into()).await;
    redis.kill(a).expect("killing A");
    force_failover(&world, coupon, b).await;
    cut.heal();
    world.nothing_sold_again_then_expired(coupon, SECOND_WAVE_FIRST_CUSTOMER, STOCK, ends_by_redis, &mut answers).await;
    world.resolve_unconfirmed(&answers, Duration::from_secs(60)).await.expect("every unconfirmed resolves");
    world.verify(&[coupon], STOCK as i64, &answers).await;
}

/// Slow dependencies on the cluster (issue 32, P5): the services reach every
/// Redis node (a cluster of the test's own, whose nodes announce the
/// proxies' ports), PostgreSQL and every broker (each advertises a proxy on a
/// listener of its own) through delaying proxies
/// (coupon_testkit::netfault::SlowLink). Once a fifth of the spike is
/// answered every round trip through them takes 200 ms longer for 30 s.
/// Requests get slower and nothing else may change.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "long profile: make e2e-cluster"]
async fn c8_slow_redis_postgres_and_kafka_links_mid_spike() {
    const SLOW: Duration = Duration::from_secs(30);
    let name = "c8 cluster Redis, PostgreSQL and Kafka 200 ms slower for 30 s";
    let mut world = World::on(name, Stack::Cluster { api_replicas: 2 }).await;
    let redis = RedisCluster::start("c8 cluster", MASTERS, 1).await.expect("a Redis Cluster of its own");
    let mut links = Vec::new();
    let mut announced = BTreeMap::new();
    for port in redis.ports() {
        let link = SlowLink::start(port).await.expect("a proxy before a Redis node");
        announced.insert(port, link.port());
        links.push(("Redis", link));
    }
    redis.announce(&announced).await.expect("the nodes announce their proxies");
    let seeds = announced.values().map(|port| format!("redis://127.0.0.1:{port}")).collect();
    world.redis = RedisTarget::Cluster { seeds };

    let mut database = url::Url::parse(world.db.url()).expect("the database URL");
    let to_postgres = SlowLink::start(database.port().expect("a port in the database URL")).await.expect("a proxy");
    database.set_port(Some(to_postgres.port())).expect("a URL with a port");
    world.overrides.insert("COUPON__DATABASE__URL".into(), database.to_string());
    links.push(("PostgreSQL", to_postgres));

    let mut brokers = Vec::new();
    for (proxied, at) in cluster_kafka_proxied_ports() {
        std::net::TcpStream::connect(("127.0.0.1", proxied)).unwrap_or_else(|err| {
            panic!("no broker listener on {proxied} ({err}): restart the stack (make down-cluster up-cluster)")
        });
        links.push(("Kafka", SlowLink::start_at(at, proxied).await.expect("a proxy before a broker")));
        brokers.push(format!("127.0.0.1:{at}"));
    }
    world.overrides.insert("COUPON__KAFKA__BROKERS".into(), brokers.join(","));

    let apis = world.start_apis().await;
    let mut writers = Vec::new();
    for n in 1..=3 {
        writers.push(world.start_writer(n).await);
    }
    let coupons = coupons_on_every_master(&world).await;
    let cluster = Cluster { world, apis, _writers: writers, coupons };
    let slow = |_| async {
        for (_, link) in &links {
            link.set_latency(Duration::from_millis(200));
        }
        tokio::time::sleep(SLOW).await;
        for (_, link) in &links {
            link.set_latency(Duration::ZERO);
        }
    };
    let (spike, ()) = cluster.spike_with_fault(slow).await;
    for (name, link) in &links {
        eprintln!("{name} on port {}: {} bytes through the slowed link", link.port(), link.slowed_bytes());
        assert!(link.slowed_bytes() > 0, "the services' traffic to {name} went around the slowed link");
    }
    cluster.verify(&spike).await;
}

/// Cuts cluster node `m`, which runs in `side`, from every other node's
/// cluster bus (`bus`: each node's bus port by its port), both ways, and
/// its replicas from its stream.
async fn cut_off(m: u16, side: &Side, bus: &BTreeMap<u16, u16>) -> Vec<LinkCut> {
    let mut cuts = Vec::new();
    for (port, bus_port) in bus.iter().filter(|(port, _)| **port != m) {
        cuts.push(side.cut_from(*bus_port).unwrap_or_else(|err| panic!("cutting {m} from {port}'s bus: {err:#}")));
    }
    cuts.push(LinkCut::into(bus[&m]).expect("cutting the other nodes' bus links into the node"));
    for link in replica_link_ports(&node_url(m)).await.expect("the node's replica links") {
        cuts.push(LinkCut::one_way(m, link).expect("cutting the node's stream to a replica"));
    }
    cuts
}

/// Split brain on the cluster (issue 32, P1). A Redis Cluster of the test's
/// own whose master M runs on one side of a partition (a cgroup), and
/// coupon-api replicas A and B, B in a side of its own. Once a tenth of a
/// half-size spike is answered, M is cut from every other node (the cluster
/// bus both ways, and its stream to its replica R) and from B, while A still
/// reaches it. The majority promotes R, and B fences the open coupons and
/// rebuilds them from PostgreSQL. M, alone in its minority, refuses commands
/// once the node timeout passed (`CLUSTERDOWN`), so what A could still issue
/// there it issued before R was promoted, and handed to Kafka. With the
/// partition still in place, B serves new customers from R, and then new
/// customers ask A. After the heal M rejoins as R's replica, and every
/// promise must hold.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "long profile: make e2e-cluster"]
async fn c9_split_brain_a_master_cut_from_the_cluster_and_one_api_replica() {
    let side_b = Side::new().expect("a side of the partition for API replica B");
    let name = "c9 cluster split brain (a master cut from the cluster and one API replica)";
    let mut world = World::on(name, Stack::Cluster { api_replicas: 2 }).await;
    let redis = RedisCluster::start_with_side("c9 cluster", MASTERS, 1).await.expect("a Redis Cluster of its own");
    let (m, side_m) = redis.side().expect("a node on a side of its own");
    let r = replica_port_of(&node_url(m), m).await.expect("M is a master with a replica");
    let bus = cluster_bus_ports(&node_url(m)).await.expect("the nodes' bus ports");
    world.redis = RedisTarget::Cluster { seeds: redis.ports().into_iter().map(node_url).collect() };
    let apis = vec![world.start_api_replica(0).await, world.start_api_replica_in(1, Some(&side_b)).await];
    let mut writers = Vec::new();
    for n in 1..=3 {
        writers.push(world.start_writer(n).await);
    }
    let coupons = coupons_on_every_master(&world).await;
    let cluster = Cluster { world, apis, _writers: writers, coupons };
    let world = &cluster.world;

    let partition = |_| async {
        let mut cuts = cut_off(m, side_m, &bus).await;
        cuts.push(side_b.cut_from(m).expect("cutting B from M"));
        poll_until("R to take M's slots over", Duration::from_secs(60), || async {
            let role: Vec<redis::Value> = query(&node_url(r), &redis::cmd("ROLE")).await?;
            Ok(matches!(role.first(), Some(redis::Value::BulkString(kind)) if kind == b"master").then_some(()))
        })
        .await
        .expect("R promoted");
        eprintln!("port {r} took M's slots over; replica A still reaches M");
        cuts
    };
    let (mut spike, cuts) =
        world.spike_with_fault(&cluster.coupons, customers() / 2, cluster.requests() / 10, partition).await;
    let during = world
        .fault(async {
            let on_b = world
                .wave_until_served_by(
                    &world.replica_api(1),
                    &cluster.coupons,
                    BETWEEN_FAILOVERS_FIRST_CUSTOMER,
                    50,
                    Duration::from_secs(180),
                )
                .await
                .expect("B serves from R");
            let plan = spike::plan(&cluster.coupons, customers() / 10, BEHIND_THE_CUT_FIRST_CUSTOMER, 0.0);
            let on_a = spike::run(&world.replica_api(0), plan, 128, Arc::default()).await;
            eprintln!("A answered during the partition: {:?}", on_a.by_outcome());
            drop(cuts);
            wait_replica_of(&node_url(m), r, Duration::from_secs(120)).await.expect("M becomes R's replica");
            [on_b, on_a]
        })
        .await;
    for wave in during {
        spike.answers.extend(wave.answers);
    }
    cluster.sell_out_and_verify(spike).await;
}
