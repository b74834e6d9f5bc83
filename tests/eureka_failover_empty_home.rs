#![cfg(feature = "eureka")]
//! Attack 64a, finding 3: a home that restarted empty between two fetches.
//!
//! The server the copy follows answers an empty registry (restarted, its
//! registry lost); the fetch moves on to the other peer, restarted earlier
//! and partly refilled. The empty answer was not a failure, so the fetch
//! was no failover and the peer's answer was the truth: ORDERS, alive,
//! left the copy at once. An earlier server's empty registry now counts as
//! a failure for telling a failover: ORDERS is held (home, asked to
//! confirm, lists nothing, which confirms nothing).
//!
//! Stubs `s0` (asked first, the server the copy follows) and `s1`. Every
//! step is one `refresh_now`; no assertion depends on timing.

#[path = "support/eureka_stub.rs"]
mod eureka_stub;
#[path = "support/failover_stub.rs"]
mod failover_stub;

use std::time::Duration;

use eureka_stub::Stub;
use failover_stub::{ids, orders, serve, users};
use tower_ribbon::discovery::eureka::EurekaRegistry;

fn build(s0: &Stub, s1: &Stub, hold: Duration) -> EurekaRegistry {
    EurekaRegistry::builder()
        .server_urls(&format!("{},{}", s0.url(), s1.url()))
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_secs(3600))
        .absence_hold(hold)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_answering_empty_does_not_make_the_partial_peer_the_truth() {
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    serve(&s0, "UP_2_", &[orders(), users()]);
    serve(&s1, "UP_1_", &[users()]);
    let registry = build(&s0, &s1, Duration::from_secs(3600));
    registry.ready().await.unwrap();
    serve(&s0, "", &[]);
    registry.refresh_now().await.unwrap();
    assert_eq!(
        ids(&registry, "orders"),
        ["orders-1:9001"],
        "ORDERS dropped on the partial peer's answer beside an empty home"
    );
    assert_eq!(ids(&registry, "users"), ["users-1:9002"]);
    // Home refilled (ORDERS renewed there): asked to confirm, it lists
    // ORDERS, which keeps home's record.
    serve(&s0, "UP_2_", &[orders(), users()]);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001"]);
}

/// The hold still ends: home empty for longer than `absence_hold`, and
/// ORDERS gone from the peer too, ORDERS leaves (waits of at least the
/// hold only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_held_beside_an_empty_home_leaves_after_the_hold() {
    let hold = Duration::from_millis(300);
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    serve(&s0, "UP_2_", &[orders(), users()]);
    serve(&s1, "UP_1_", &[users()]);
    let registry = build(&s0, &s1, hold);
    registry.ready().await.unwrap();
    serve(&s0, "", &[]);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001"], "held");
    tokio::time::sleep(hold + Duration::from_millis(100)).await;
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), Vec::<String>::new());
    assert_eq!(ids(&registry, "users"), ["users-1:9002"]);
}
