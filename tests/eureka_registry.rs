//! The registry client (full fetch + deltas + hash reconcile) and
//! self-registration, against the real Eureka server.

mod support;

use std::time::{Duration, Instant};

use support::eureka::EurekaFixture;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::{EurekaRegistration, EurekaRegistry};

/// `(port, status)` of the registry's local copy of `app`, sorted.
fn local(registry: &EurekaRegistry, app: &str) -> Vec<(u16, InstanceStatus)> {
    let mut v: Vec<(u16, InstanceStatus)> = registry
        .instances(app)
        .iter()
        .map(|i| (i.port(), i.status()))
        .collect();
    v.sort_by_key(|(p, _)| *p);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_follow_changes_and_a_hash_mismatch_costs_one_full_fetch() {
    use InstanceStatus::*;
    let Some(mut eureka) = EurekaFixture::start() else {
        return;
    };
    // Long interval: this test drives every fetch itself.
    let registry = EurekaRegistry::builder()
        .server_urls(&eureka.url())
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    registry.ready().await.unwrap();
    assert_eq!(registry.stats().full_fetches, 1);
    assert!(local(&registry, "order-service").is_empty());

    // A wrong base path answers 404: an error, never an empty registry,
    // and the next server is tried.
    let wrong = format!("{}/wrong", eureka.url());
    let broken = EurekaRegistry::builder()
        .server_urls(&wrong)
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let err = broken.ready().await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    let failover = EurekaRegistry::builder()
        .server_urls(&format!("{wrong},{}", eureka.url()))
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    failover.ready().await.unwrap();

    let a = eureka.register("order-service", 20001).await;
    let b = eureka.register("order-service", 20002).await;
    registry.refresh_now().await.unwrap();
    assert_eq!(
        local(&registry, "order-service"),
        [(20001, Up), (20002, Up)]
    );

    eureka
        .set_status("order-service", &a, "OUT_OF_SERVICE")
        .await;
    registry.refresh_now().await.unwrap();
    assert_eq!(
        local(&registry, "order-service"),
        [(20001, OutOfService), (20002, Up)]
    );

    eureka.delete("order-service", &b).await;
    eureka.register("order-service", 20003).await;
    registry.refresh_now().await.unwrap();
    assert_eq!(
        local(&registry, "order-service"),
        [(20001, OutOfService), (20003, Up)]
    );
    assert_eq!(registry.local_hash(), "OUT_OF_SERVICE_1_UP_1_");

    // The same delta again changes nothing.
    registry.refresh_now().await.unwrap();
    assert_eq!(
        local(&registry, "order-service"),
        [(20001, OutOfService), (20003, Up)]
    );
    let stats = registry.stats();
    assert_eq!(
        (stats.full_fetches, stats.hash_mismatches),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(stats.delta_fetches, 4);

    // Provoke a mismatch: the restarted server has forgotten everything and
    // knows one new instance; its delta cannot reconcile the local copy.
    eureka.restart();
    eureka.register("order-service", 20004).await;
    registry.refresh_now().await.unwrap();
    assert_eq!(local(&registry, "order-service"), [(20004, Up)]);
    let stats = registry.stats();
    assert_eq!(
        (stats.full_fetches, stats.hash_mismatches),
        (2, 1),
        "{stats:?}"
    );
    // And the next delta reconciles again without a full fetch.
    registry.refresh_now().await.unwrap();
    assert_eq!(registry.stats().full_fetches, 2);
    println!("registry stats: {:?}", registry.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_renews_changes_status_survives_a_restart_and_cancels() {
    let Some(mut eureka) = EurekaFixture::start() else {
        return;
    };
    let renew = Duration::from_secs(1);
    let registration = EurekaRegistration::builder("user-api", "127.0.0.1", 18088)
        .server_urls(&eureka.url())
        .renew_interval(renew)
        .metadata("zone", "zone-a")
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let id = registration.instance_id().to_owned();
    assert_eq!(id, "127.0.0.1:user-api:18088");
    let handle = registration.start().await.unwrap();
    assert_eq!(
        eureka.statuses("user-api").await,
        [(id.clone(), "UP".to_owned())]
    );

    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .unwrap();
    assert_eq!(
        eureka.statuses("user-api").await,
        [(id.clone(), "OUT_OF_SERVICE".to_owned())]
    );
    handle.set_status(InstanceStatus::Up).await.unwrap();
    assert_eq!(
        eureka.statuses("user-api").await,
        [(id.clone(), "UP".to_owned())]
    );

    // Renewals keep it registered.
    tokio::time::sleep(renew * 3).await;
    assert!(handle.stats().renewals >= 2, "{:?}", handle.stats());

    // A restart loses the registry; the next renewal gets 404 and
    // registers again, within two renew intervals.
    eureka.restart();
    let back = Instant::now();
    let mut seen = None;
    while back.elapsed() < renew * 4 {
        if !eureka.statuses("user-api").await.is_empty() {
            seen = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.expect("registered again after the restart");
    println!("re-registered {seen:?} after the restart");
    assert!(seen <= renew * 2, "took {seen:?}");
    assert_eq!(handle.stats().registrations, 2);

    // Graceful shutdown cancels it.
    handle.shutdown().await.unwrap();
    assert!(eureka.statuses("user-api").await.is_empty());
}

/// A registry (fetch interval 1 h) built while `eureka` is down, whose
/// first fetch failed; `eureka` is up again on return.
async fn built_while_down(eureka: &mut EurekaFixture) -> EurekaRegistry {
    eureka.stop();
    let registry = EurekaRegistry::builder()
        .server_urls(&eureka.url())
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(registry.ready().await.is_err(), "the server is down");
    eureka.restart();
    registry
}

/// The registry's first fetch failed (Eureka not up yet, as when both
/// start together), then `refresh_now` succeeded once the server was up.
/// `ready()` kept answering the first fetch's error, so every service read
/// failed (0 instances, "connection refused") until the next background
/// fetch, one `fetch_interval` later (30 s by default), although the copy
/// was fresh. Now a successful `refresh_now` makes the registry ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_refresh_now_ends_a_failed_first_fetch() {
    use tower_ribbon::discovery::InstanceSource;
    let Some(mut eureka) = EurekaFixture::start() else {
        return;
    };
    let registry = built_while_down(&mut eureka).await;
    let id = eureka.register("late-service", 19_801).await;
    registry.refresh_now().await.expect("the server is up");
    let listed = registry
        .fetch("late-service")
        .await
        .map_err(|e| e.to_string());
    let ids: Result<Vec<String>, String> =
        listed.map(|list| list.iter().map(|i| i.id().to_owned()).collect());
    assert_eq!(ids, Ok(vec![id]));
    assert!(
        registry.ready().await.is_ok(),
        "ready after a successful fetch"
    );
}

/// Eureka is not up when the registry starts (both start together). Its
/// failed first fetch was tried again only one `fetch_interval` later (30 s
/// by default; an hour here), so every service read failed that long
/// although the server came up seconds later, where a service's own
/// refresh retries a first list after 1 s, 2 s, 4 s, ... Now the registry
/// does the same until its first success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_fetch_is_tried_again_sooner_than_the_interval() {
    let Some(mut eureka) = EurekaFixture::start() else {
        return;
    };
    let registry = built_while_down(&mut eureka).await;
    let back = Instant::now();
    // The JVM took seconds to start: the backoff has reached at most a few
    // seconds, so a try comes well within a minute (an hour before). The
    // test waits for the registry to be ready, not for a service registered
    // after the restart: the retry may fetch before that registration (it
    // did in CI), and then the copy lacks it for the hour.
    let mut ready = false;
    while back.elapsed() < Duration::from_secs(60) {
        if registry.ready().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("ready {:?} after the server was back", back.elapsed());
    assert!(
        ready,
        "no successful fetch within 60 s of the server's return"
    );
    assert_eq!(registry.stats().full_fetches, 1);
}
