//! Before its first successful fetch, `EurekaRegistry` answers service
//! reads and `ready` with its *latest* fetch's error: it gave the first
//! one's however many later fetches failed, so `refresh_status().last_error`
//! (and the request errors) kept naming a cause that was gone (a 503 from
//! the first fetch, while every later fetch got 401 because the password
//! was wrong; helper 219).
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

use std::time::Duration;

use eureka_stub::{Answer, Stub};
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::RefreshConfig;
use tower_ribbon::discovery::eureka::EurekaRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_error_names_the_registrys_latest_failure() {
    let stub = Stub::start().await;
    // First fetch: 503; every later one: 401.
    stub.set(
        "/eureka/apps",
        vec![Answer::status(503), Answer::status(401)],
    );
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_millis(100);
    refresh.jitter = 0.0;
    let lb = LoadBalancer::builder()
        .source(registry.clone())
        .service("users")
        .refresh(refresh)
        .build(tower::service_fn(|_req: http::Request<String>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        }))
        .unwrap();
    // Background retries before the first success: 1 s, 2 s (capped at the
    // 200 ms interval here), so several fetches fail with 401.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fetches = stub
        .log()
        .iter()
        .filter(|(_, p, _)| p == "/eureka/apps")
        .count();
    let status = lb.refresh_status("users").unwrap();
    let last = status
        .last_error
        .as_deref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let direct = registry.refresh_now().await.unwrap_err().to_string();
    eprintln!("{fetches} registry fetches (1 x 503, then 401s); registry.refresh_now: {direct}");
    eprintln!("service last_error: {last}");
    assert!(fetches >= 3, "{fetches}");
    assert!(direct.contains("401"), "{direct}");
    assert!(
        last.contains("401"),
        "the service still reports the first fetch's error after {fetches} fetches: {last}"
    );
}
