//! A Eureka peer restarted on its own refills as instances renew (Spring
//! Cloud's `registry-sync-retries` is 0 by default, and the test fixture's
//! server does not fetch from peers): for up to one renewal interval it
//! lists some apps and not others. While the other peer cannot be asked
//! (the next step of a rolling restart), `EurekaRegistry` took that
//! partial registry as the truth: an app missing from it left the copy,
//! and every request to that app failed with "not in the registry" (10 of
//! 10) although its instance was alive (helper 219). `EurekaSource`, over
//! the same two servers, kept its list (its 404 beside a failed server is
//! `AbsenceUnconfirmed`, held for `absence_hold`), and so did the registry
//! when the restarted peer listed nothing at all. Now the registry holds
//! an app the answer lacks after a failed server for `absence_hold` too,
//! and takes the absence once it lasted the hold.
//!
//! [eureka#1490](https://github.com/Netflix/eureka/issues/1490) (open):
//! clients get only part of the registered instances from a cluster peer
//! that has just started.
//!
//! Two real Eureka servers (the fixture): `full` holds ORDERS and USERS,
//! `partial` holds USERS only (a peer restarted, which USERS' heartbeat has
//! reached and ORDERS' has not yet). `full` is then stopped.

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

/// The registry's absence hold (the source keeps the default, 90 s).
const HOLD: Duration = Duration::from_secs(8);

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
        .absence_hold(HOLD)
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
    tokio::time::sleep(Duration::from_secs(4)).await;

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
    // The copy kept it; USERS, which the answer lists, stays as answered.
    assert_eq!(registry.instances("orders").len(), 1);
    assert_eq!(registry.instances("users").len(), 1);

    // An absence that lasts the hold is taken: a removed app is not kept
    // for as long as a dead peer stays in the list.
    tokio::time::sleep(HOLD).await;
    assert_eq!(
        registry.instances("orders").len(),
        0,
        "ORDERS still held {HOLD:?} after the hold began"
    );
    assert_eq!(registry.instances("users").len(), 1);
}
