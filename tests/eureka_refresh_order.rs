#![cfg(feature = "eureka")]
//! `EurekaRegistry::refresh_now` racing the background fetch (helper 200):
//! the background delta (asked first, holding the older state) lands while
//! `refresh_now`'s delta (asked later, carrying a drain) is on its way.
//! The copy applied an answer only if no other was applied since it was
//! sent (the Java client's `fetchRegistryGeneration`), so `refresh_now`'s
//! newer answer was dropped, it returned `Ok`, and the copy served the
//! drained instance UP until the next background fetch (4.4 s here, up to
//! the 30 s interval by default). Answers now apply in send order: an
//! older one arriving late is still dropped.
//!
//! The stub answers the two deltas 1 s and 1.5 s after they were asked,
//! the second asked 100 ms after the first: they arrive 600 ms apart.

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

use std::time::Duration;

use eureka_stub::{Answer, Stub, apps, record};
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::EurekaRegistry;

fn held(body: String, ms: u64) -> Answer {
    Answer {
        status: 200,
        body: body.into_bytes(),
        delay_ms: ms,
    }
}

#[tokio::test]
async fn a_newer_answer_arriving_after_an_older_one_is_applied() {
    let stub = Stub::start().await;
    let up = |id: &str, port| record("A", id, port, "UP", "ADDED", "{}");
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps(
            "UP_2_",
            "A",
            &[up("a1", 9001), up("a2", 9002)],
        ))],
    );
    // 1st delta (the background's): nothing changed, answered after 1 s.
    // 2nd delta (refresh_now's, asked after a1 drained): a1 OUT_OF_SERVICE,
    // answered after 1.5 s. Later deltas: the drain again, at once.
    let drained = apps(
        "OUT_OF_SERVICE_1_UP_1_",
        "A",
        &[record("A", "a1", 9001, "OUT_OF_SERVICE", "MODIFIED", "{}")],
    );
    stub.set(
        "/eureka/apps/delta",
        vec![
            held(apps("UP_2_", "A", &[]), 1000),
            held(drained.clone(), 1500),
            Answer::ok(drained),
        ],
    );
    let interval = Duration::from_secs(5);
    let registry = EurekaRegistry::builder()
        .server_url(stub.url())
        .fetch_interval(interval)
        .build()
        .unwrap();
    registry.ready().await.unwrap();
    // Wait for the background's first delta request to be on its way.
    while !stub
        .log()
        .iter()
        .any(|(_, p, _)| p.starts_with("/eureka/apps/delta"))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // a1 drained meanwhile; the caller asks for a fresh copy.
    let result = registry.refresh_now().await;
    let status = |reg: &EurekaRegistry| {
        reg.instances("A")
            .into_iter()
            .find(|i| i.id() == "a1")
            .map(|i| i.status())
    };
    let after = status(&registry);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        after,
        Some(InstanceStatus::OutOfService),
        "refresh_now returned Ok, but its answer (a1 drained) was dropped: the copy still serves a1 UP"
    );
    // Both deltas were applied, in the order they were sent.
    assert_eq!(registry.stats().delta_fetches, 2, "{:?}", registry.stats());
}
