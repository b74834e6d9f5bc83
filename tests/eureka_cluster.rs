//! A real two-peer Eureka cluster (the Spring Cloud Netflix server of
//! tests/eureka-server, each peer's `defaultZone` pointing at the other).
//!
//! Register through peer 1, read through peer 2 (replication). Stop peer 1:
//! renewals and fetches fail over to peer 2, no instance is lost and there
//! is no registration storm. Restart peer 1: it catches up (its sync-up
//! from peer 2 at start, or the next renewal). The failover and catch-up
//! times are printed (`--nocapture`).

mod support;

use std::time::{Duration, Instant};

use support::eureka::EurekaFixture;
use tower_ribbon::discovery::InstanceSource;
use tower_ribbon::discovery::eureka::{EurekaRegistration, EurekaSource};

const APP: &str = "cluster-app";

/// Polls `check` every 50 ms for at most `bound`; returns the time it took.
async fn within<F, Fut>(what: &str, bound: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < bound {
        if check().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {bound:?}");
}

#[tokio::test]
async fn two_peers_replicate_fail_over_and_catch_up() {
    let Some([mut peer1, peer2]) = EurekaFixture::start_cluster() else {
        return;
    };
    let id = "127.0.0.1:cluster-app:19701".to_owned();
    let handle = EurekaRegistration::builder(APP, "127.0.0.1", 19_701)
        .server_url(peer1.url())
        .server_url(peer2.url())
        .request_timeout(Duration::from_secs(20))
        .renew_interval(Duration::from_secs(1))
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered through peer 1");
    // Read through peer 2 only: the registration reached it by replication.
    let via_peer2 = EurekaSource::builder()
        .server_url(peer2.url())
        .build()
        .expect("source");
    let replicated = within("replication to peer 2", Duration::from_secs(60), || async {
        via_peer2.fetch(APP).await.is_ok_and(|l| l.len() == 1)
    })
    .await;
    assert_eq!(peer2.statuses(APP).await, [(id.clone(), "UP".to_owned())]);

    // Peer 1 goes down.
    peer1.stop();
    let registrations = handle.stats().registrations;
    let renewals = handle.stats().renewals;
    let renew_failover = within(
        "a renewal through peer 2",
        Duration::from_secs(30),
        || async { handle.stats().renewals > renewals },
    )
    .await;
    let both = EurekaSource::builder()
        .server_url(peer1.url())
        .server_url(peer2.url())
        .build()
        .expect("source");
    let started = Instant::now();
    let listed = both.fetch(APP).await.expect("fetch fails over to peer 2");
    let fetch_failover = started.elapsed();
    assert_eq!(listed.len(), 1);
    // No instance lost, and no registration storm, over 5 renew intervals.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(both.fetch(APP).await.expect("fetch").len(), 1);
    }
    assert_eq!(
        handle.stats().registrations,
        registrations,
        "no re-registration while peer 1 is down"
    );

    // Peer 1 comes back and catches up.
    let started = Instant::now();
    peer1.restart();
    let restart = started.elapsed();
    let catch_up = within("peer 1 catching up", Duration::from_secs(60), || async {
        peer1.statuses(APP).await == [(id.clone(), "UP".to_owned())]
    })
    .await;
    let extra = handle.stats().registrations - registrations;
    assert!(
        extra <= 1,
        "at most one re-registration after the restart, got {extra}"
    );
    eprintln!(
        "replication {replicated:?}; renew failover {renew_failover:?} (renew interval 1 s); \
         fetch failover {fetch_failover:?}; peer 1 restart {restart:?}, caught up {catch_up:?} later, \
         re-registrations {extra}"
    );

    handle.shutdown().await.expect("cancelled");
    within("cancel replicated", Duration::from_secs(60), || async {
        peer1.statuses(APP).await.is_empty() && peer2.statuses(APP).await.is_empty()
    })
    .await;
}
