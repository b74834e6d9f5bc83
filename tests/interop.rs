//! Interop with real Spring Cloud parts, all on 127.0.0.1:
//! - a Spring Cloud Gateway with a `lb://user-api` route reaches a Rust
//!   service that registered itself through `EurekaRegistration`, and stops
//!   routing to it when it goes OUT_OF_SERVICE or shuts down;
//! - the Rust balancer, over `EurekaRegistry`, finds and balances over two
//!   instances of a Spring Boot service registered by the Java Eureka
//!   client.

mod support;

use std::time::{Duration, Instant};

use support::backend::Backend;
use support::eureka::EurekaFixture;
use support::java::JavaFixture;
use support::{counts, http_client, tally};
use tower_ribbon::discovery::RefreshConfig;
use tower_ribbon::discovery::eureka::{EurekaRegistration, EurekaRegistry};
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::{InstanceStatus, LoadBalancer};

/// GET `url`: `(status, body)`, or status 0 on a transport error.
async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    match client.get(url).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// Polls `url` until its status is `want`, for at most `bound`; returns how
/// long it took.
async fn until_status(client: &reqwest::Client, url: &str, want: u16, bound: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (status, _) = get(client, url).await;
        if status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "{url} never answered {want} (last {status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spring_cloud_gateway_routes_to_a_rust_service_registered_through_the_crate() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let Some(gateway) = JavaFixture::start("gateway", &eureka.url()) else {
        return;
    };
    let backend = Backend::start("user-api (rust)").await.unwrap();
    let registration = EurekaRegistration::builder("user-api", "127.0.0.1", backend.port())
        .server_urls(&eureka.url())
        .renew_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = registration.start().await.unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("{}/user-api/whoami", gateway.url());
    let bound = Duration::from_secs(30);

    let routed = until_status(&client, &url, 200, bound).await;
    println!("gateway routes to the Rust service {routed:?} after registration");
    for _ in 0..20 {
        assert_eq!(
            get(&client, &url).await,
            (200, "user-api (rust)".to_owned())
        );
    }

    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .unwrap();
    let stopped = until_status(&client, &url, 503, bound).await;
    println!("gateway stops routing {stopped:?} after OUT_OF_SERVICE");
    let hits = backend.hits();
    for _ in 0..10 {
        assert_eq!(get(&client, &url).await.0, 503);
    }
    assert_eq!(backend.hits(), hits);

    handle.set_status(InstanceStatus::Up).await.unwrap();
    until_status(&client, &url, 200, bound).await;

    handle.shutdown().await.unwrap();
    let gone = until_status(&client, &url, 503, bound).await;
    println!("gateway stops routing {gone:?} after a graceful shutdown");
    let hits = backend.hits();
    for _ in 0..10 {
        assert_eq!(get(&client, &url).await.0, 503);
    }
    assert_eq!(backend.hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_balancer_finds_and_balances_over_java_eureka_clients() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let Some(auth1) = JavaFixture::start("auth-service", &eureka.url()) else {
        return;
    };
    let Some(auth2) = JavaFixture::start("auth-service", &eureka.url()) else {
        return;
    };
    let registry = EurekaRegistry::builder()
        .server_urls(&eureka.url())
        .fetch_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(registry.clone())
        .service("auth-service")
        .rule(|| RoundRobin::with_start(0))
        .refresh({
            let mut refresh = RefreshConfig::default();
            refresh.interval = Duration::from_millis(500);
            refresh.jitter = 0.0;
            refresh
        })
        .build(http_client())
        .unwrap();
    assert!(lb.ready_service("auth-service").await);
    let start = Instant::now();
    while lb.snapshot("auth-service").map_or(0, |s| s.len()) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            lb.snapshot("auth-service")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = tally(&lb, "http://auth-service/whoami", 100).await;
    let a = format!("auth-service:{}", auth1.port());
    let b = format!("auth-service:{}", auth2.port());
    assert_eq!(got, counts(&[(a.as_str(), 50), (b.as_str(), 50)]));
    let stats = registry.stats();
    println!("registry: {stats:?}");
    assert_eq!(stats.full_fetches, 1, "{stats:?}");
}
