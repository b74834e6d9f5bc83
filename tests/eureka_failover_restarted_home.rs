#![cfg(feature = "eureka")]
//! Attack 63a, finding 1 with two real Eureka servers (the fixture).
//!
//! `home` (asked first) lists ORDERS, USERS and GONE (GONE's instance died
//! with `home`'s host; it never reached `other`); `other` lists ORDERS and
//! USERS. A rolling restart takes `home` down: the failover answer lacks
//! GONE, `home` is asked to confirm (refused) and GONE is held. `home`
//! comes back restarted, empty, and USERS re-registers there first. The
//! next fetch's confirmation at `home` (it lists USERS: "answered") ends
//! the failover and points fetches at `home`; the fetch after that takes
//! `home`'s partial registry as the truth and ORDERS (alive, registered at
//! `other`) leaves the copy: every request to it fails. Before 83fe462 the
//! registry stayed at `other` (the server that last answered).

mod support;

use std::time::Duration;

use support::backend::Backend;
use support::eureka::EurekaFixture;
use support::{HttpClient, counts, http_client, tally};
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::RefreshConfig;
use tower_ribbon::discovery::eureka::EurekaRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirming_at_a_restarted_home_moves_fetches_onto_its_partial_registry() {
    let Some(mut home) = EurekaFixture::start() else {
        return;
    };
    let Some(other) = EurekaFixture::start() else {
        return;
    };
    let orders = Backend::start("orders-1").await.expect("backend");
    let users = Backend::start("users-1").await.expect("backend");
    home.register("orders", orders.port()).await;
    home.register("users", users.port()).await;
    home.register("gone", 1).await;
    other.register("orders", orders.port()).await;
    other.register("users", users.port()).await;

    let registry = EurekaRegistry::builder()
        .server_urls(&format!("{},{}", home.url(), other.url()))
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .expect("registry");
    registry.ready().await.expect("first fetch");
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_millis(100);
    refresh.jitter = 0.0;
    let lb: LoadBalancer<HttpClient> = LoadBalancer::builder()
        .source(registry.clone())
        .services(["orders"])
        .refresh(refresh)
        .build(http_client())
        .expect("balancer");
    assert_eq!(
        tally(&lb, "http://orders/", 3).await,
        counts(&[("orders-1", 3)])
    );

    home.stop();
    registry.refresh_now().await.expect("failover fetch");
    assert_eq!(registry.instances("gone").len(), 1, "GONE held");
    assert_eq!(registry.instances("orders").len(), 1);

    home.restart();
    home.register("users", users.port()).await;
    registry
        .refresh_now()
        .await
        .expect("fetch confirmed at home");
    eprintln!(
        "after the confirmation: gone {} orders {}",
        registry.instances("gone").len(),
        registry.instances("orders").len()
    );
    registry.refresh_now().await.expect("next fetch");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = registry.stats();
    let got = tally(&lb, "http://orders/", 10).await;
    eprintln!("stats {stats:?}; orders: {got:?}");
    assert_eq!(
        registry.instances("orders").len(),
        1,
        "ORDERS (alive, registered at `other`, which answers) left the copy"
    );
    assert_eq!(got, counts(&[("orders-1", 10)]));
}
