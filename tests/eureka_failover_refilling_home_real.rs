#![cfg(feature = "eureka")]
//! `eureka_failover_refilling_home.rs` with two real Eureka servers (helper
//! 254, attack 65b): the home `full` restarts (empty); ORDERS is held
//! (5d6ba46). USERS renews at `full` first (a refill goes in heartbeat
//! order); the next fetch asked `full` to confirm the absence: it listed
//! USERS and not yet ORDERS, so ORDERS (alive, its heartbeat to `full` due
//! within 30 s) left the copy: 0 instances. Now 1: a home that listed
//! nothing when the failover started proves no absence while it refills.

mod support;

use std::time::Duration;

use support::backend::Backend;
use support::eureka::EurekaFixture;
use tower_ribbon::discovery::eureka::EurekaRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_refilled_restarted_home_keeps_a_live_app_held() {
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
    let registry = EurekaRegistry::builder()
        .server_urls(&format!("{},{}", full.url(), partial.url()))
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .expect("registry");
    registry.ready().await.expect("first fetch");
    assert_eq!(registry.instances("orders").len(), 1);
    full.restart();
    registry.refresh_now().await.expect("fetch");
    assert_eq!(
        registry.instances("orders").len(),
        1,
        "held beside the empty home"
    );
    // USERS' heartbeat reaches the restarted home first (404, re-register).
    full.register("users", users.port()).await;
    registry.refresh_now().await.expect("fetch");
    assert_eq!(
        registry.instances("orders").len(),
        1,
        "ORDERS dropped within absence_hold (90 s): the restarted home, partly refilled, confirmed its absence"
    );
}
