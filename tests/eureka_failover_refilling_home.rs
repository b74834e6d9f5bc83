#![cfg(feature = "eureka")]
//! A home restarted empty starts a failover (5d6ba46), and the next fetch
//! asks that home to confirm an absence. Home, now partly refilled (USERS
//! renewed there first, ORDERS not yet: its heartbeat comes up to 30 s
//! later), listed something, so ORDERS was "confirmed gone" and left the
//! copy, `absence_hold` an hour away (helper 254, attack 65b): 1 instance
//! → 0. A home that listed nothing when the failover started proves no
//! absence while it refills: ORDERS stays held, takes home's records once
//! home lists it, and an app gone from both servers still leaves once its
//! hold has lasted `absence_hold`.
//!
//! Stubs `s0` (home) and `s1` (partial peer). Each step one `refresh_now`;
//! the clock decides nothing but the last step, after a wait past the hold.

#[path = "support/eureka_stub.rs"]
mod eureka_stub;
#[path = "support/failover_stub.rs"]
mod failover_stub;

use std::time::Duration;

use eureka_stub::Stub;
use failover_stub::{app, ids, orders, serve, users};
use tower_ribbon::discovery::eureka::EurekaRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refilling_home_proves_no_absence() {
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    serve(&s0, "UP_2_", &[orders(), users()]);
    serve(&s1, "UP_1_", &[users()]);
    let registry = EurekaRegistry::builder()
        .server_urls(&format!("{},{}", s0.url(), s1.url()))
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_secs(3600))
        .absence_hold(Duration::from_secs(3600))
        .build()
        .unwrap();
    registry.ready().await.unwrap();
    // Home restarts empty: held.
    serve(&s0, "", &[]);
    registry.refresh_now().await.unwrap();
    assert_eq!(
        ids(&registry, "orders"),
        ["orders-1:9001"],
        "held beside an empty home"
    );
    // Home refills in renewal order: USERS first.
    serve(&s0, "UP_1_", &[users()]);
    for _ in 0..3 {
        registry.refresh_now().await.unwrap();
        assert_eq!(
            ids(&registry, "orders"),
            ["orders-1:9001"],
            "held while home refills"
        );
    }
    // ORDERS renews at home, on another port: home's records.
    serve(&s0, "UP_2_", &[app("ORDERS", "orders-1", 9011), users()]);
    registry.refresh_now().await.unwrap();
    assert_eq!(
        ids(&registry, "orders"),
        ["orders-1:9011"],
        "home's records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_gone_while_home_refills_leaves_after_the_hold() {
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    serve(&s0, "UP_2_", &[orders(), users()]);
    serve(&s1, "UP_1_", &[users()]);
    let hold = Duration::from_millis(800);
    let registry = EurekaRegistry::builder()
        .server_urls(&format!("{},{}", s0.url(), s1.url()))
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_secs(3600))
        .absence_hold(hold)
        .build()
        .unwrap();
    registry.ready().await.unwrap();
    serve(&s0, "", &[]);
    registry.refresh_now().await.unwrap();
    serve(&s0, "UP_1_", &[users()]);
    registry.refresh_now().await.unwrap();
    assert_eq!(
        ids(&registry, "orders"),
        ["orders-1:9001"],
        "held while home refills"
    );
    // ORDERS never renews again: past the hold it leaves.
    tokio::time::sleep(hold + Duration::from_millis(200)).await;
    registry.refresh_now().await.unwrap();
    assert!(
        ids(&registry, "orders").is_empty(),
        "{:?}",
        ids(&registry, "orders")
    );
}
