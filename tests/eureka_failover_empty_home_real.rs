#![cfg(feature = "eureka")]
//! Attack 64a, finding 3 with two real Eureka servers: the server the copy
//! follows (`full`: ORDERS, USERS) restarts between two fetches and comes
//! back empty; the other peer (`partial`, restarted earlier, partly
//! refilled: USERS only) answers. The empty answer was not counted as a
//! failure, so the fetch was no failover: `partial`'s answer was the truth
//! and ORDERS (alive; it registers at `full` again on its next heartbeat,
//! up to 30 s) left the copy at once (0 instances). An earlier server's
//! empty registry now makes the answer a failover one: ORDERS is held.

mod support;

use std::time::Duration;

use support::backend::Backend;
use support::eureka::EurekaFixture;
use tower_ribbon::discovery::eureka::EurekaRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_restarted_empty_between_fetches_does_not_make_the_partial_peer_the_truth() {
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
    // `full` restarts between two fetches (its registry is lost).
    full.restart();
    registry.refresh_now().await.expect("fetch");
    assert_eq!(
        registry.instances("orders").len(),
        1,
        "ORDERS dropped: the partly refilled peer's answer was taken as the truth beside a home that lost its registry"
    );
}
