//! A service first read from an `EurekaRegistry` during a registry outage
//! gets the registry's copy (the last good data there is, as the Java
//! client serves its cache); services read before get `RegistryStale` and
//! keep their own last list. Before the fix every read failed while the
//! last fetch had failed, so a new service had no list at all: 0 of 10
//! requests succeeded while the copy held its instance.
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

use std::time::Duration;

use eureka_stub::{Answer, Stub, apps, record};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::RefreshConfig;
use tower_ribbon::discovery::eureka::EurekaRegistry;

/// The copy holds the instance (fetched before the outage); the new
/// service's 10 requests all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_first_used_during_an_outage_gets_the_copy() {
    let stub = Stub::start().await;
    let a = record("GOOD", "a", 1001, "UP", "ADDED", "{}");
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps("UP_1_", "GOOD", &[a]))],
    );
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(apps("UP_1_", "GOOD", &[]))],
    );
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_millis(100))
        .build()
        .expect("build");
    registry.ready().await.expect("first fetch");
    assert_eq!(registry.instances("good").len(), 1);
    stub.set("/eureka/apps", vec![Answer::status(500)]);
    stub.set("/eureka/apps/delta", vec![Answer::status(500)]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    println!(
        "copy still holds {} instance(s)",
        registry.instances("good").len()
    );
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_millis(100);
    refresh.jitter = 0.0;
    let lb = LoadBalancer::builder()
        .source(registry.clone())
        .service("good")
        .refresh(refresh)
        .build(tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        }))
        .expect("balancer");
    let mut ok = 0;
    let mut last = String::new();
    for _ in 0..10 {
        let req = http::Request::builder()
            .uri("http://good/x")
            .body(())
            .unwrap();
        match lb.clone().oneshot(req).await {
            Ok(_) => ok += 1,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = lb.refresh_status("good");
    println!("ok {ok} of 10; last error: {last}; status {status:?}");
    assert_eq!(ok, 10, "copy has the instance; last error: {last}");
}
