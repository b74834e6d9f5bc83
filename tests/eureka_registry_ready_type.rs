//! Before a first success `ready()` reports the latest failure of the
//! background loop, typed: a `refresh_now` that failed meanwhile (whose
//! caller got the error itself) left a text-only `DiscoveryError::Other`
//! there for every service read, `is_timeout()` false (helper 227, on my
//! first version of the latest-error fix).
#![cfg(feature = "eureka")]

use std::time::Duration;

use tower_ribbon::discovery::eureka::EurekaRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_keeps_a_typed_error_after_a_failed_refresh_now() {
    // A server that accepts and never answers: every fetch times out.
    let l = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = l.local_addr().unwrap().port();
    let _task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let registry = EurekaRegistry::builder()
        .server_urls(&format!("http://127.0.0.1:{port}/eureka"))
        .request_timeout(Duration::from_millis(300))
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let first = registry.ready().await.unwrap_err();
    eprintln!(
        "background fetch: {first} (is_timeout {})",
        first.is_timeout()
    );
    assert!(first.is_timeout());
    let own = registry.refresh_now().await.unwrap_err();
    eprintln!("refresh_now: {own} (is_timeout {})", own.is_timeout());
    let after = registry.ready().await.unwrap_err();
    let mut chain = 0;
    let mut source = std::error::Error::source(after.as_ref());
    while let Some(s) = source {
        chain += 1;
        source = s.source();
    }
    eprintln!(
        "ready() after it: {after} (is_timeout {}, {:?}, {chain} sources)",
        after.is_timeout(),
        std::mem::discriminant(after.as_ref())
    );
    assert!(
        after.is_timeout(),
        "ready() now reports {after:?}: the same timeout, untyped"
    );
}
