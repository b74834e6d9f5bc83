#![cfg(feature = "eureka")]
//! Attack 64a, finding 1 with two real Eureka servers (the fixture, as in
//! `eureka_partial_peer.rs`): `full` holds ORDERS and USERS, `partial`
//! (restarted, partly refilled) USERS only. `full` stops. The first
//! request after that is a VIP source's (`registry.vip_source()`), which
//! fails over to `partial`. It shared the registry's starting server, so
//! the registry's next fetch started at `partial` with no failure of its
//! own, was no failover, and took `partial`'s answer as the truth: ORDERS
//! left the copy (0 instances; 1 without the VIP fetch). The VIP source
//! now keeps its own starting server: the registry's fetch fails at
//! `full` itself and holds ORDERS.

mod support;

use std::time::Duration;

use support::backend::Backend;
use support::eureka::EurekaFixture;
use tower_ribbon::discovery::InstanceSource;
use tower_ribbon::discovery::eureka::EurekaRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_fetch_first_after_the_failure_keeps_an_app_the_partial_peer_lacks() {
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
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .expect("registry");
    registry.ready().await.expect("first fetch");
    assert_eq!(registry.instances("orders").len(), 1);
    let vips = registry.vip_source();
    assert_eq!(vips.fetch("users").await.expect("vip").len(), 1);

    full.stop();
    // A VIP source's refresh comes first after the failure.
    assert_eq!(vips.fetch("users").await.expect("vip").len(), 1);
    registry.refresh_now().await.expect("fetch");
    assert_eq!(
        registry.instances("orders").len(),
        1,
        "the copy dropped ORDERS (alive; absent only from the partly refilled peer)"
    );
}
