//! Concurrent `EurekaRegistry::refresh_now` calls join one fetch: before,
//! each sent its own, so sixteen callers at a start after a failed first
//! fetch cost sixteen full `/apps` downloads held at once (a 577 KiB
//! registry: 17 fetches, +23.6 MiB at the peak against +1.8 MiB for one
//! call; helper 219). Now a call made while a fetch runs waits for it and
//! shares the one fetch sent after it: at most two for the callers, and
//! the background loop's retry (1 s after the failed first fetch) joins
//! them too.
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;
#[path = "common/peak_alloc.rs"]
mod peak_alloc;

#[global_allocator]
static GLOBAL: peak_alloc::Peak = peak_alloc::Peak;

use eureka_stub::{Answer, Stub, apps, record};
use std::time::Duration;
use tower_ribbon::discovery::eureka::EurekaRegistry;

const CALLERS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refresh_now_calls_share_one_fetch() {
    let stub = Stub::start().await;
    // 2 000 instances with some metadata: about 1 MiB of JSON.
    let meta = r#"{"zone":"zone-a","version":"1.2.3","management.port":"9000"}"#;
    let records: Vec<String> = (0..2_000)
        .map(|i| {
            record(
                "SVC",
                &format!("svc-{i}"),
                1000 + (i % 60_000) as u16,
                "UP",
                "ADDED",
                meta,
            )
        })
        .collect();
    let full = apps("UP_2000_", "SVC", &records);
    let body_len = full.len();
    // The delta misses a change: its hash never matches, so every delta is
    // followed by a full fetch (as after any lost change, or a peer
    // failover).
    let delta = apps("UP_2001_", "SVC", &[]);
    // The first (background) fetch fails, as at a start during a registry
    // hiccup; every later one answers after 300 ms.
    let slow = Answer {
        status: 200,
        body: full.clone().into_bytes(),
        delay_ms: 300,
    };
    stub.set("/eureka/apps", vec![Answer::status(503), slow]);
    stub.set("/eureka/apps/delta", vec![Answer::ok(delta)]);
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    assert!(registry.ready().await.is_err());
    // One call alone on a second registry in the same state, for the baseline.
    let alone = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let _ = alone.ready().await;
    let before = stub.log().len();
    let base = peak_alloc::start();
    alone.refresh_now().await.unwrap();
    let one = peak_alloc::grown(base);
    let one_requests = stub.log().len() - before;

    let before = stub.log().len();
    let base = peak_alloc::start();
    let calls: Vec<_> = (0..CALLERS)
        .map(|_| {
            let r = registry.clone();
            tokio::spawn(async move { r.refresh_now().await })
        })
        .collect();
    for c in calls {
        let _ = c.await.unwrap();
    }
    let many = peak_alloc::grown(base);
    let requests = stub.log().len() - before;
    let full_gets = stub.log()[before..]
        .iter()
        .filter(|(_, p, _)| p == "/eureka/apps")
        .count();
    eprintln!(
        "body {body_len} B; one refresh_now: {one_requests} requests, peak +{} KiB; \
         {CALLERS} at once: {requests} requests ({full_gets} full /apps), peak +{} KiB",
        one >> 10,
        many >> 10
    );
    // The callers' fetches: the one the first caller started and one after
    // it for every caller that asked meanwhile (a full fetch, then a delta
    // whose hash mismatches and its full fetch), and the background loop's
    // retry, due 1 s after its failed first fetch, which may come after
    // them: 3 at most, not 17.
    assert!(
        full_gets <= 3,
        "{CALLERS} concurrent refresh_now calls sent {full_gets} full registry fetches \
         (peak heap +{} KiB vs +{} KiB for one call)",
        many >> 10,
        one >> 10
    );
    // Two answers' worth at most, not sixteen.
    assert!(
        many <= 3 * one.max(body_len),
        "peak heap +{} KiB for {CALLERS} callers, +{} KiB for one",
        many >> 10,
        one >> 10
    );
    // Every caller got the fetch's result: the registry is ready.
    assert!(registry.ready().await.is_ok());
    assert_eq!(registry.stats().instances, 2_000);
}
