#![cfg(feature = "eureka")]
//! Attack 64a, finding 2: peers failing in turn restarted the hold.
//!
//! A failover ending by age inside the same fetch that starts the next one
//! (the server that answered last fails, the other answers: a rolling
//! restart's next step, or flapping peers) cleared the holds while the
//! app was still in the copy, so the new failover held it again from
//! scratch: a gone app was served 1.64 s after the first answer lacking
//! it with a hold of 800 ms, 2.94 s with 600 ms under flapping, against
//! the documented "at most `absence_hold`". An app still held when a
//! failover ends by age is now not held again until an answer lists it.
//!
//! Stubs `s0` (asked first, the server the copy follows) and `s1`. Every
//! step is one `refresh_now` (background interval an hour). The only waits
//! are of at least the hold, so the clock decides nothing: each assertion
//! holds at any speed.

#[path = "support/eureka_stub.rs"]
mod eureka_stub;
#[path = "support/failover_stub.rs"]
mod failover_stub;

use std::time::Duration;

use eureka_stub::{Answer, Stub};
use failover_stub::{down, ids, orders, registry_json, serve, users};
use tower_ribbon::discovery::eureka::EurekaRegistry;

const HOLD: Duration = Duration::from_millis(300);

fn build(s0: &Stub, s1: &Stub) -> EurekaRegistry {
    EurekaRegistry::builder()
        .server_urls(&format!("{},{}", s0.url(), s1.url()))
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_secs(3600))
        .absence_hold(HOLD)
        .build()
        .unwrap()
}

/// ORDERS is gone everywhere. s0 fails, s1 answers without it: held. One
/// hold later the next step of a rolling restart: s0 back (without
/// ORDERS), s1 down. That fetch ends the first failover by age and starts
/// another; ORDERS has had its hold and leaves (before: held again, for a
/// second `absence_hold`). Peers failing in turn after that do not hold it
/// either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_starting_as_the_last_ends_by_age_does_not_hold_again() {
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    serve(&s0, "UP_2_", &[orders(), users()]);
    serve(&s1, "UP_2_", &[orders(), users()]);
    let registry = build(&s0, &s1);
    registry.ready().await.unwrap();
    down(&s0);
    serve(&s1, "UP_1_", &[users()]);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001"], "held");
    tokio::time::sleep(HOLD + Duration::from_millis(100)).await;
    serve(&s0, "UP_1_", &[users()]);
    down(&s1);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), Vec::<String>::new(), "held again");
    assert_eq!(ids(&registry, "users"), ["users-1:9002"]);
    // Flapping on: each fetch, the server that answered last fails.
    for step in 0..4 {
        if step % 2 == 0 {
            down(&s0);
            serve(&s1, "UP_1_", &[users()]);
        } else {
            serve(&s0, "UP_1_", &[users()]);
            down(&s1);
        }
        registry.refresh_now().await.unwrap();
        assert_eq!(
            ids(&registry, "orders"),
            Vec::<String>::new(),
            "step {step}"
        );
    }
}

/// The hold is spent for the app only until an answer lists it: ORDERS
/// re-registered (a full answer lists it) and gone again in a later
/// failover is held for a fresh `absence_hold`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_listed_again_is_held_again() {
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    serve(&s0, "UP_2_", &[orders(), users()]);
    serve(&s1, "UP_2_", &[orders(), users()]);
    let registry = build(&s0, &s1);
    registry.ready().await.unwrap();
    down(&s0);
    serve(&s1, "UP_1_", &[users()]);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001"], "held");
    tokio::time::sleep(HOLD + Duration::from_millis(100)).await;
    serve(&s0, "UP_1_", &[users()]);
    down(&s1);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), Vec::<String>::new(), "spent");
    // ORDERS registers again at s0, which answers the full registry.
    serve(&s0, "UP_2_", &[orders(), users()]);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001"]);
    // s0 fails; s1 answers without ORDERS: a new hold.
    down(&s0);
    serve(&s1, "UP_1_", &[users()]);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001"], "held again");
}

/// Same, the app listed again by a delta (an `ADDED` entry) rather than a
/// full answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_a_delta_lists_again_is_held_again() {
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    serve(&s0, "UP_2_", &[orders(), users()]);
    serve(&s1, "UP_2_", &[orders(), users()]);
    let registry = build(&s0, &s1);
    registry.ready().await.unwrap();
    down(&s0);
    serve(&s1, "UP_1_", &[users()]);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001"], "held");
    tokio::time::sleep(HOLD + Duration::from_millis(100)).await;
    serve(&s0, "UP_1_", &[users()]);
    down(&s1);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), Vec::<String>::new(), "spent");
    // s0's delta adds ORDERS back; its hash matches the copy then.
    s0.set(
        "/eureka/apps/delta",
        vec![Answer::ok(registry_json("UP_2_", &[orders()]))],
    );
    s0.set("/eureka/apps", vec![Answer::status(500)]);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001"]);
    down(&s0);
    serve(&s1, "UP_1_", &[users()]);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001"], "held again");
}
