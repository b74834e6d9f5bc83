//! Failover across a real two-peer Eureka cluster (`scripts/eureka-cluster`:
//! two Spring Cloud Netflix Eureka servers replicating to each other, peer 1
//! on 127.0.0.1, peer 2 on 127.0.0.2).
//!
//! Two Rust services register through peer 1 (`server_urls` = peer 1, peer
//! 2) and are read through peer 2 by a balancer over real loopback
//! backends. Peer 1 crashes (KILL): fetches (`EurekaRegistry` and `EurekaSource`
//! over peer 1, peer 2) and renewals fail over to peer 2, both balancers
//! answer every request, no instance is evicted although peer 1 stays down
//! longer than the lease would last unrenewed, and nothing re-registers.
//! Peer 1 comes back: it lists both instances again (from its peer) within
//! a stated time. The test prints the measured failover times.
#![cfg(all(feature = "eureka", feature = "reqwest"))]

#[path = "support/eureka_cluster.rs"]
mod eureka_cluster;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eureka_cluster::EurekaCluster;
use support::backend::Backend;
use support::{HttpClient, counts, http_client, tally};
use tokio::task::JoinHandle;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::eureka::{
    EurekaRegistration, EurekaRegistry, EurekaSource, RegistrationHandle, RegistryStats,
};
use tower_ribbon::discovery::{InstanceSource, RefreshConfig};
use tower_ribbon::rule::RoundRobin;

const APP: &str = "cluster-api";
const RENEW: Duration = Duration::from_secs(1);
const LEASE: Duration = Duration::from_secs(2);
/// How long Eureka keeps a lease that is no longer renewed: it adds the
/// lease duration once when renewing and once when checking (2 × 2 s), and
/// the fixture's eviction timer runs every second.
const LEASE_EXPIRY: Duration = Duration::from_secs(5);
/// Peer 1 stays down at least this long (more than `LEASE_EXPIRY`).
const MIN_OUTAGE: Duration = Duration::from_secs(6);
/// A fetch or a renewal that meets a stopped peer 1 (connection refused on
/// loopback) and goes on to peer 2 takes less than this.
const FAILOVER_BOUND: Duration = Duration::from_secs(1);
/// Replication to peer 2 and catch-up of a restarted peer 1.
const REPLICATION_BOUND: Duration = Duration::from_secs(10);
const CATCH_UP_BOUND: Duration = Duration::from_secs(10);

fn registration(cluster: &EurekaCluster, port: u16) -> EurekaRegistration {
    EurekaRegistration::builder(APP, "127.0.0.1", port)
        .server_urls(&cluster.server_urls())
        .renew_interval(RENEW)
        .lease_duration(LEASE)
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

fn balancer(source: impl InstanceSource) -> LoadBalancer<HttpClient> {
    LoadBalancer::builder()
        .source(source)
        .service(APP)
        .rule(|| RoundRobin::with_start(0))
        .refresh({
            let mut c = RefreshConfig::default();
            c.interval = Duration::from_millis(250);
            c.jitter = 0.0;
            c
        })
        .build(http_client())
        .unwrap()
}

/// Waits until `lb` balances over `n` instances of [`APP`]; how long.
async fn until_balanced(lb: &LoadBalancer<HttpClient>, n: usize, bound: Duration) -> Duration {
    let start = Instant::now();
    while lb.snapshot(APP).map_or(0, |s| s.len()) != n {
        assert!(start.elapsed() < bound, "{:?}", lb.snapshot(APP));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Requests through `lb`, one every 20 ms until `stop`; the answers by
/// body (backend name, or `error: ...`).
fn traffic(
    lb: LoadBalancer<HttpClient>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<BTreeMap<String, usize>> {
    tokio::spawn(async move {
        let mut all = BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            for (k, v) in tally(&lb, &format!("http://{APP}/whoami"), 1).await {
                *all.entry(k).or_insert(0) += v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        all
    })
}

/// Samples `count` every 10 ms until `stop`; the longest time between two
/// increments (background successes: renewals, refreshes).
fn longest_gap(
    count: impl Fn() -> u64 + Send + 'static,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Duration> {
    tokio::spawn(async move {
        let (mut last, mut at, mut longest) = (count(), Instant::now(), Duration::ZERO);
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = count();
            if now != last {
                longest = longest.max(at.elapsed());
                (last, at) = (now, Instant::now());
            }
        }
        longest
    })
}

fn renewals_and_registrations(handles: &[&RegistrationHandle]) -> Vec<(u64, u64, u64)> {
    handles
        .iter()
        .map(|h| {
            let s = h.stats();
            (s.registrations, s.renewals, s.failures)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_peer_cluster_fails_over_without_losing_instances_and_catches_up() {
    let began = Instant::now();
    let Some(mut cluster) = EurekaCluster::start() else {
        return;
    };
    println!(
        "cluster started in {:?}: {}",
        cluster.started_in(),
        cluster.server_urls()
    );
    let a = Backend::start("cluster-api a").await.unwrap();
    let b = Backend::start("cluster-api b").await.unwrap();

    // Register both through peer 1 (first in the list).
    let reg_a = registration(&cluster, a.port());
    let reg_b = registration(&cluster, b.port());
    let want: Vec<(String, String)> = {
        let mut v = vec![
            (reg_a.instance_id().to_owned(), "UP".to_owned()),
            (reg_b.instance_id().to_owned(), "UP".to_owned()),
        ];
        v.sort();
        v
    };
    let handle_a = reg_a.start().await.unwrap();
    // Renewed only by its background task: its renewals time the failover.
    let handle_b = Arc::new(reg_b.start().await.unwrap());
    assert_eq!(cluster.statuses(1, APP).await.as_deref(), Some(&want[..]));

    // Read through peer 2 only: it learnt them by replication.
    let replicated = cluster
        .until_listed(2, APP, &want, REPLICATION_BOUND)
        .await
        .expect("peer 2 lists the instances registered through peer 1");
    println!("peer 2 lists both instances {replicated:?} after registration on peer 1");
    let via_peer2 = EurekaSource::builder()
        .server_urls(cluster.url(2))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let lb_peer2 = balancer(via_peer2);
    until_balanced(&lb_peer2, 2, REPLICATION_BOUND).await;
    assert_eq!(
        tally(&lb_peer2, &format!("http://{APP}/whoami"), 20).await,
        counts(&[("cluster-api a", 10), ("cluster-api b", 10)])
    );

    // The clients under test: a registry and a plain source over both peers.
    let registry = EurekaRegistry::builder()
        .server_urls(&cluster.server_urls())
        .fetch_interval(Duration::from_millis(500))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let source = EurekaSource::builder()
        .server_urls(&cluster.server_urls())
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let lb_registry = balancer(registry.clone());
    let lb_source = balancer(source.clone());
    until_balanced(&lb_registry, 2, REPLICATION_BOUND).await;
    until_balanced(&lb_source, 2, REPLICATION_BOUND).await;
    let t = Instant::now();
    registry.refresh_now().await.unwrap();
    let fetch_both_up = t.elapsed();
    let t = Instant::now();
    handle_a.renew_now().await.unwrap();
    let renew_both_up = t.elapsed();

    let stop = Arc::new(AtomicBool::new(false));
    let traffic_registry = traffic(lb_registry.clone(), stop.clone());
    let traffic_source = traffic(lb_source.clone(), stop.clone());
    let renew_gap = {
        let handle = handle_b.clone();
        longest_gap(move || handle.stats().renewals, stop.clone())
    };
    let refresh_gap = {
        let lb = lb_source.clone();
        longest_gap(
            move || lb.refresh_status(APP).map_or(0, |s| s.successes),
            stop.clone(),
        )
    };
    let before = renewals_and_registrations(&[&handle_a, &handle_b]);
    let fetches_before = registry.stats();
    assert_eq!(fetches_before.failures, 0, "{fetches_before:?}");
    assert_eq!(before.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 1]);

    // Peer 1 crashes (KILL).
    let t = Instant::now();
    cluster.kill_peer(1).await;
    let stopped_in = t.elapsed();
    let down_since = Instant::now();
    assert_eq!(cluster.statuses(1, APP).await, None, "peer 1 is down");
    // Start it again in the background, so that its startup overlaps the
    // outage, but late enough that it stays down for MIN_OUTAGE (a peer
    // starts again in at least about a third of the first start's time).
    let delay = MIN_OUTAGE.saturating_sub(cluster.started_in().mul_f64(0.3));
    let restart = cluster.start_peer_later(1, delay);

    // One fetch and one renewal right after the stop: each meets the
    // refused peer 1 and is answered by peer 2.
    let t = Instant::now();
    registry.refresh_now().await.unwrap();
    let fetch_failover = t.elapsed();
    let t = Instant::now();
    let app = source.fetch_application(APP).await.unwrap();
    let source_failover = t.elapsed();
    assert_eq!(app.instances.len(), 2);
    let t = Instant::now();
    handle_a.renew_now().await.unwrap();
    let renew_failover = t.elapsed();
    println!(
        "failover: registry fetch {fetch_failover:?} (both up: {fetch_both_up:?}), \
         source fetch {source_failover:?}, renewal {renew_failover:?} (both up: {renew_both_up:?})"
    );
    assert!(fetch_failover < FAILOVER_BOUND, "{fetch_failover:?}");
    assert!(source_failover < FAILOVER_BOUND, "{source_failover:?}");
    assert!(renew_failover < FAILOVER_BOUND, "{renew_failover:?}");

    // While peer 1 is down: peer 2 keeps listing both instances (renewed
    // there, or they would be evicted after LEASE_EXPIRY), and the
    // registry's copy stays fresh.
    let mut polls = 0;
    let mut max_stale = Duration::ZERO;
    while down_since.elapsed() < MIN_OUTAGE || !restart.is_finished() {
        assert_eq!(
            cluster.statuses(2, APP).await.as_deref(),
            Some(&want[..]),
            "peer 2 lost an instance {:?} into the outage",
            down_since.elapsed()
        );
        max_stale = max_stale.max(registry.since_last_success().unwrap_or(Duration::MAX));
        polls += 1;
        assert!(
            down_since.elapsed() < Duration::from_secs(180),
            "peer 1 did not come back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let back_at = restart.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    let outage = back_at.duration_since(down_since);
    let during = renewals_and_registrations(&[&handle_a, &handle_b]);
    let fetches_during = registry.stats();
    println!(
        "peer 1 down {outage:?} (stop took {stopped_in:?}); {polls} polls of peer 2 all \
         listed both; registry staleness at most {max_stale:?}; \
         (registrations, renewals, failures) {before:?} -> {during:?}"
    );
    assert!(
        outage >= LEASE_EXPIRY,
        "outage {outage:?} too short to prove renewals reached peer 2"
    );
    // Every background fetch of the registry succeeded (on peer 2), at
    // least one a second (nominally two: a 500 ms interval), so its copy
    // was never older than a few intervals.
    let fetched = |s: &RegistryStats| s.full_fetches + s.delta_fetches;
    println!(
        "registry fetches while peer 1 was down: {} ({fetches_before:?} -> {fetches_during:?})",
        fetched(&fetches_during) - fetched(&fetches_before)
    );
    assert_eq!(fetches_during.failures, 0, "{fetches_during:?}");
    assert!(
        fetched(&fetches_during) - fetched(&fetches_before) >= outage.as_secs(),
        "{fetches_before:?} -> {fetches_during:?} in {outage:?}"
    );
    assert!(max_stale < Duration::from_secs(3), "{max_stale:?}");
    for (b, d) in before.iter().zip(&during) {
        // No registration while peer 1 was down, no failed renewal, and
        // renewals went on (at least one per interval but the last).
        assert_eq!(d.0, b.0, "re-registered during the outage");
        assert_eq!(d.2, 0, "a renewal failed");
        let floor = outage.as_secs().saturating_sub(2);
        assert!(d.1 - b.1 >= floor, "{} renewals in {outage:?}", d.1 - b.1);
    }

    // Peer 1 catches up from peer 2 (syncUp at startup, or replicated
    // renewals that it answers 404, or our own renewal re-registering).
    let Some(caught_up) = cluster.until_listed(1, APP, &want, CATCH_UP_BOUND).await else {
        let listed = cluster.statuses(1, APP).await;
        panic!("peer 1 lists {listed:?} {CATCH_UP_BOUND:?} after its restart");
    };
    let synced = cluster.log(1);
    let synced = synced
        .lines()
        .filter(|l| l.contains("instances from neighboring DS node"))
        .map(|l| l.rsplit(" : ").next().unwrap_or(l))
        .collect::<Vec<_>>();
    println!(
        "restarted peer 1 lists both instances {caught_up:?} after answering again \
         (its syncUp at each start: {synced:?})"
    );
    registry.refresh_now().await.unwrap();

    stop.store(true, Ordering::Relaxed);
    let served_registry = traffic_registry.await.unwrap();
    let served_source = traffic_source.await.unwrap();
    let (renew_gap, refresh_gap) = (renew_gap.await.unwrap(), refresh_gap.await.unwrap());
    println!(
        "longest time between background successes over the crash and the outage: \
         renewals {renew_gap:?} (interval {RENEW:?}), source refreshes {refresh_gap:?} \
         (interval 250ms)"
    );
    // Exact: no failure counted (above, below). Bounds: renewals never
    // missed two intervals in a row, refreshes never stalled for 8 (under a
    // load average of 16 on 2 cores these reached 1.52 s and 825 ms).
    assert!(renew_gap < RENEW * 3, "{renew_gap:?}");
    assert!(refresh_gap < Duration::from_secs(2), "{refresh_gap:?}");
    for lb in [&lb_registry, &lb_source] {
        let status = lb.refresh_status(APP).unwrap();
        assert_eq!((status.failures, status.instances), (0, 2), "{status:?}");
    }
    println!(
        "served through the registry: {served_registry:?}; through the source: {served_source:?}"
    );
    for served in [&served_registry, &served_source] {
        assert!(
            served.keys().all(|k| k.starts_with("cluster-api ")),
            "{served:?}"
        );
        let (na, nb) = (served["cluster-api a"], served["cluster-api b"]);
        assert!(na + nb >= 100 && na.abs_diff(nb) <= 1, "{served:?}");
    }

    // No registration storm: at most one re-registration each over the whole
    // run (when the restarted peer 1 did not know the instance yet).
    let after = renewals_and_registrations(&[&handle_a, &handle_b]);
    println!("(registrations, renewals, failures) at the end: {after:?}");
    for s in &after {
        assert!(s.0 <= 2, "{after:?}");
        assert_eq!(s.2, 0, "{after:?}");
    }

    // Shutdown cancels through peer 1; the cancel replicates to peer 2.
    handle_a.shutdown().await.unwrap();
    let handle_b = Arc::try_unwrap(handle_b).expect("sampler ended");
    handle_b.shutdown().await.unwrap();
    cluster
        .until_listed(2, APP, &[], REPLICATION_BOUND)
        .await
        .expect("cancel replicated to peer 2");
    println!("test wall time {:?}", began.elapsed());
}
