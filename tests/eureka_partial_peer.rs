#![cfg(feature = "eureka")]
//! A Eureka peer restarted on its own refills as instances renew (Spring
//! Cloud's `registry-sync-retries` is 0 by default, and the test fixture's
//! server does not fetch from peers): for up to one renewal interval it
//! lists some apps and not others. While the other peer cannot be asked
//! (the next step of a rolling restart), `EurekaRegistry` took that
//! partial registry as the truth: an app missing from it left the copy,
//! and every request to it failed with "not in the registry" (10 of 10)
//! although its instance was alive, while `EurekaSource` over the same
//! servers kept its list. The registry now holds such an app for
//! `absence_hold` (see `eureka_failover_absence.rs` for the hold's ends).
//!
//! Two real Eureka servers (the fixture): `full` holds ORDERS and USERS,
//! `partial` holds USERS only (a peer restarted, which USERS' heartbeat has
//! reached and ORDERS' has not yet). `full` is then stopped. Helper 219's
//! finding (attack 60b).

mod support;

use std::time::Duration;

use support::backend::Backend;
use support::eureka::EurekaFixture;
use support::{HttpClient, counts, http_client, tally};
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::InstanceSource;
use tower_ribbon::discovery::RefreshConfig;
use tower_ribbon::discovery::eureka::{EurekaRegistry, EurekaSource};

fn refresh() -> RefreshConfig {
    let mut r = RefreshConfig::default();
    r.interval = Duration::from_millis(200);
    r.jitter = 0.0;
    r
}

fn balancer<S: InstanceSource + 'static>(source: S) -> LoadBalancer<HttpClient> {
    LoadBalancer::builder()
        .source(source)
        .services(["orders", "users"])
        .refresh(refresh())
        .build(http_client())
        .expect("balancer")
}

async fn wait_listed(lb: &LoadBalancer<HttpClient>, service: &str) {
    for _ in 0..100 {
        if lb.snapshot(service).is_some_and(|s| s.len() == 1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{service} never listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_missing_from_a_partially_refilled_peer_is_kept_while_the_other_peer_is_down() {
    let Some(mut full) = EurekaFixture::start() else {
        return;
    };
    let Some(partial) = EurekaFixture::start() else {
        return;
    };
    let orders = Backend::start("orders-1").await.expect("backend");
    let users = Backend::start("users-1").await.expect("backend");
    full.register("orders", orders.port()).await;
    full.register("users", users.port()).await;
    partial.register("users", users.port()).await;

    let urls = format!("{},{}", full.url(), partial.url());
    let registry = EurekaRegistry::builder()
        .server_urls(&urls)
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_millis(300))
        .build()
        .expect("registry");
    registry.ready().await.expect("first fetch");
    let source = EurekaSource::builder()
        .server_urls(&urls)
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("source");
    let over_registry = balancer(registry.clone());
    let over_source = balancer(source);
    for lb in [&over_registry, &over_source] {
        wait_listed(lb, "orders").await;
        wait_listed(lb, "users").await;
        assert_eq!(
            tally(lb, "http://orders/", 3).await,
            counts(&[("orders-1", 3)])
        );
    }

    // The peer holding everything goes down (rolling restart, its turn).
    full.stop();
    // One fetch fails over to `partial` (its delta's hash does not match,
    // its full registry lacks ORDERS); the copy keeps ORDERS (before: []).
    registry.refresh_now().await.expect("failover fetch");
    assert_eq!(
        registry.instances("orders").len(),
        1,
        "the copy dropped ORDERS"
    );
    // The balancers read their sources twice after it.
    for lb in [&over_registry, &over_source] {
        let read = |lb: &LoadBalancer<HttpClient>| {
            lb.refresh_status("orders")
                .map_or(0, |s| s.successes + s.failures)
        };
        let start = read(lb);
        for _ in 0..100 {
            if read(lb) >= start + 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            read(lb) >= start + 2,
            "the balancer never read its source again"
        );
    }

    let from_source = tally(&over_source, "http://orders/", 10).await;
    let from_registry = tally(&over_registry, "http://orders/", 10).await;
    let stats = registry.stats();
    eprintln!("EurekaSource: {from_source:?}");
    eprintln!("EurekaRegistry: {from_registry:?}");
    eprintln!(
        "registry copy ORDERS: {:?}; stats {stats:?}",
        registry.instances("orders")
    );
    eprintln!(
        "refresh_status orders (registry): {:?}",
        over_registry.refresh_status("orders")
    );
    // The instance is alive and still registered at the peer that is down.
    assert_eq!(
        from_source,
        counts(&[("orders-1", 10)]),
        "EurekaSource kept its list"
    );
    assert_eq!(
        from_registry,
        counts(&[("orders-1", 10)]),
        "EurekaRegistry dropped ORDERS on a partial peer's answer"
    );
}
