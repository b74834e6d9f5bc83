#![cfg(feature = "eureka")]
//! Attack 64a, finding 1: a VIP source's fetch failing over moved the
//! registry's fetches without the registry seeing a failover.
//!
//! `EurekaRegistry::vip_source` shared the registry's starting server:
//! any answered fetch moves it, and a failover is told only from a failure
//! inside the registry's own fetch. So a VIP fetch that failed over first
//! made the registry's next fetch start at the other server with no
//! failure of its own, and that server's partial answer was the truth
//! (ORDERS dropped); a VIP fetch moving back to a restarted, partly
//! refilled home ended the failover the same way. The VIP source now keeps
//! its own starting server.
//!
//! Stubs `s0` (asked first, the server the copy follows) and `s1`. Every
//! step is one `refresh_now` or one VIP fetch (background interval an
//! hour); no assertion depends on timing.

#[path = "support/eureka_stub.rs"]
mod eureka_stub;
#[path = "support/failover_stub.rs"]
mod failover_stub;

use std::time::Duration;

use eureka_stub::{Answer, Stub};
use failover_stub::{app, down, ids, orders, registry_json, serve, users};
use tower_ribbon::discovery::InstanceSource;
use tower_ribbon::discovery::eureka::EurekaRegistry;

fn build(s0: &Stub, s1: &Stub) -> EurekaRegistry {
    EurekaRegistry::builder()
        .server_urls(&format!("{},{}", s0.url(), s1.url()))
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_secs(3600))
        .absence_hold(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// Control: s0 fails, s1 (restarted, partly refilled: USERS only) answers
/// the registry's own fetch: ORDERS is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_failing_over_itself_holds_the_app_the_peer_lacks() {
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    serve(&s0, "UP_2_", &[orders(), users()]);
    serve(&s1, "UP_1_", &[users()]);
    let registry = build(&s0, &s1);
    registry.ready().await.unwrap();
    down(&s0);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001"]);
}

/// The first request after s0 fails is the VIP source's: it fails over to
/// s1. The registry's next fetch still starts at s0, fails there, and its
/// answer from s1 is a failover one: ORDERS is held (before: s1's answer,
/// asked first with no failure, was the truth and ORDERS left the copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_fetch_failing_over_first_does_not_make_the_partial_peer_the_truth() {
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    serve(&s0, "UP_2_", &[orders(), users()]);
    serve(&s1, "UP_1_", &[users()]);
    let vip = registry_json("UP_1_", &[users()]);
    s0.set("/eureka/vips/users", vec![Answer::ok(vip.clone())]);
    s1.set("/eureka/vips/users", vec![Answer::ok(vip)]);
    let registry = build(&s0, &s1);
    registry.ready().await.unwrap();
    let vips = registry.vip_source();
    down(&s0);
    assert_eq!(vips.fetch("users").await.unwrap().len(), 1);
    let s0_before = s0.log().len();
    registry.refresh_now().await.unwrap();
    assert!(
        s0.log().len() > s0_before,
        "the registry's fetch started at s0"
    );
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001"]);
    // The VIP source stays at s1, where it was answered: s0 is not asked.
    let s0_before = s0.log().len();
    assert_eq!(vips.fetch("users").await.unwrap().len(), 1);
    assert_eq!(s0.log().len(), s0_before);
}

/// Other direction: s0 (home) fails; s1 (complete: ORDERS, USERS; GONE
/// cancelled) answers, GONE is held. s0 comes back restarted, partly
/// refilled (USERS only). One VIP query at s1 fails and s0 answers it.
/// The registry's next fetch stays at s1, which lists ORDERS: ORDERS stays
/// (before: the fetch went to s0 with no failure, ended the failover, and
/// s0's partial answer dropped ORDERS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_fetch_moving_back_to_a_partial_home_does_not_end_the_failover() {
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    let gone = app("GONE", "gone-1", 9003);
    serve(&s0, "UP_3_", &[orders(), users(), gone]);
    serve(&s1, "UP_2_", &[orders(), users()]);
    let vip = registry_json("UP_1_", &[users()]);
    s0.set("/eureka/vips/users", vec![Answer::ok(vip.clone())]);
    s1.set("/eureka/vips/users", vec![Answer::ok(vip.clone())]);
    let registry = build(&s0, &s1);
    registry.ready().await.unwrap();
    down(&s0);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001"]);
    assert_eq!(ids(&registry, "gone"), ["gone-1:9003"], "held");
    // Made now, the VIP source starts where the registry's fetches do: s1.
    let vips = registry.vip_source();
    // s0 back, restarted: USERS renewed there, ORDERS not yet.
    serve(&s0, "UP_1_", &[users()]);
    s0.set("/eureka/vips/users", vec![Answer::ok(vip.clone())]);
    // One VIP query at s1 fails; s0 answers it.
    s1.set(
        "/eureka/vips/users",
        vec![Answer::status(503), Answer::ok(vip)],
    );
    assert_eq!(vips.fetch("users").await.unwrap().len(), 1);
    registry.refresh_now().await.unwrap();
    assert_eq!(
        ids(&registry, "orders"),
        ["orders-1:9001"],
        "ORDERS (listed by the healthy s1) dropped after a VIP fetch answered by the partly refilled s0"
    );
}
