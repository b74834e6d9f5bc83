//! `RibbonConfig::apply` over a retry policy set in code: each retry key
//! changes its one setting. Before, a retry key that names neither count
//! (a global `OkToRetryOnAllOperations`, a backoff switch, status codes, a
//! written-out `retry.enabled=true`) replaced the code's
//! `RetryPolicy::none()` with the default policy, so a client built to
//! never retry sent a POST answered 503 to a second server, and the code's
//! deadline was dropped (a 1.5 s answer under a 300 ms deadline came back
//! as a 200; helper 210).
#![cfg(feature = "config")]
mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use support::backend::{Backend, Behavior};
use support::{HttpClient, http_client};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::config::RibbonConfig;
use tower_ribbon::retry::RetryPolicy;

async fn backends(n: usize) -> Vec<Backend> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(
            Backend::start_with(&format!("b{i}"), Behavior::Status(503))
                .await
                .unwrap(),
        );
    }
    v
}

fn list(bs: &[Backend]) -> String {
    bs.iter()
        .map(|b| format!("127.0.0.1:{}", b.port()))
        .collect::<Vec<_>>()
        .join(",")
}

async fn send(lb: &LoadBalancer<HttpClient>, method: http::Method) {
    let req = http::Request::builder()
        .method(method)
        .uri("http://svc/x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    if let Ok(r) = lb.clone().oneshot(req).await {
        let _ = r.into_body().collect().await;
    }
}

async fn hits_with(extra: &str, method: http::Method) -> usize {
    let bs = backends(3).await;
    let config = RibbonConfig::from_properties_str(&format!(
        "svc.ribbon.listOfServers={}\n{extra}",
        list(&bs)
    ))
    .unwrap();
    let builder = config
        .apply("svc", LoadBalancer::builder().retry(RetryPolicy::none()))
        .unwrap();
    let lb = builder.build(http_client()).unwrap();
    assert!(lb.ready_service("svc").await);
    send(&lb, method).await;
    let n = bs.iter().map(Backend::hits).sum();
    println!("{extra:?}: {n} servers");
    n
}

/// A shared file's global `ribbon.OkToRetryOnAllOperations=true` (no
/// count named) keeps the code's "never retry" (before: one retry on the
/// next server, for POST too).
#[tokio::test]
async fn global_all_operations_key_makes_a_no_retry_client_retry_a_post() {
    let n = hits_with("ribbon.OkToRetryOnAllOperations=true\n", http::Method::POST).await;
    assert_eq!(
        n, 1,
        "POST sent to {n} servers; the code set RetryPolicy::none()"
    );
}

/// A backoff switch alone (`spring.cloud.loadbalancer.retry.backoff.enabled`)
/// leaves the counts of a client the code set to never retry (before:
/// retries on).
#[tokio::test]
async fn backoff_switch_alone_turns_retries_on() {
    let n = hits_with(
        "spring.cloud.loadbalancer.retry.backoff.enabled=true\n",
        http::Method::GET,
    )
    .await;
    assert_eq!(
        n, 1,
        "GET sent to {n} servers; the code set RetryPolicy::none()"
    );
}

/// A retryable status code list alone.
#[tokio::test]
async fn status_codes_alone_turn_retries_on() {
    let n = hits_with("ribbon.retryableStatusCodes=503\n", http::Method::GET).await;
    assert_eq!(
        n, 1,
        "GET sent to {n} servers; the code set RetryPolicy::none()"
    );
}

/// `spring.cloud.loadbalancer.retry.enabled=true` (Spring's default, often
/// written out) names no count, and leaves a code `RetryPolicy::none()`
/// (before: one retry on the next server).
#[tokio::test]
async fn retry_enabled_true_alone_turns_retries_on() {
    let n = hits_with(
        "spring.cloud.loadbalancer.retry.enabled=true\n",
        http::Method::GET,
    )
    .await;
    assert_eq!(
        n, 1,
        "GET sent to {n} servers; the code set RetryPolicy::none()"
    );
}

/// A code deadline of 300 ms is kept under a retry key naming no deadline:
/// a backend answering after 1.5 s times out (before: 200 after 1.5 s).
#[tokio::test]
async fn a_retry_key_drops_the_code_deadline() {
    use std::time::Duration;
    let slow = Backend::start_with("slow", Behavior::Slow(Duration::from_millis(1500)))
        .await
        .unwrap();
    let config = RibbonConfig::from_properties_str(&format!(
        "svc.ribbon.listOfServers=127.0.0.1:{}\nspring.cloud.loadbalancer.retry.enabled=true\n",
        slow.port()
    ))
    .unwrap();
    let builder =
        LoadBalancer::builder().retry(RetryPolicy::none().deadline(Duration::from_millis(300)));
    let lb = config
        .apply("svc", builder)
        .unwrap()
        .build(http_client())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let started = std::time::Instant::now();
    let req = http::Request::get("http://svc/x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answer = match lb.clone().oneshot(req).await {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => format!("error: {e}"),
    };
    let took = started.elapsed();
    assert!(
        answer.starts_with("error"),
        "{answer} after {took:?}; the code's 300 ms deadline was dropped"
    );
}

/// Keys that name a setting change it, over the code's policy: counts from
/// `MaxAutoRetriesNextServer`, `retry.enabled=false` zeroing the Spring
/// counts, and the code's per-try timeout kept throughout.
#[test]
fn each_retry_key_changes_its_own_setting() {
    use std::time::Duration;
    let code = || {
        RetryPolicy::none()
            .per_try_timeout(Duration::from_millis(700))
            .deadline(Duration::from_secs(3))
    };
    let applied = |text: &str| {
        let config = RibbonConfig::from_properties_str(&format!(
            "svc.ribbon.listOfServers=127.0.0.1:1\n{text}"
        ))
        .unwrap();
        config
            .apply("svc", LoadBalancer::builder().retry(code()))
            .unwrap()
    };
    let p = applied("svc.ribbon.MaxAutoRetriesNextServer=2\n")
        .get_retry_policy()
        .clone();
    assert_eq!((p.get_max_same(), p.get_max_next()), (0, 2));
    assert_eq!(
        (p.get_per_try_timeout(), p.get_deadline()),
        (
            Some(Duration::from_millis(700)),
            Some(Duration::from_secs(3))
        )
    );
    let p = applied("spring.cloud.loadbalancer.retry.max-retries-on-same-service-instance=1\nspring.cloud.loadbalancer.retry.enabled=false\n").get_retry_policy().clone();
    assert_eq!((p.get_max_same(), p.get_max_next()), (0, 0));
    let p = applied("ribbon.OkToRetryOnAllOperations=true\nribbon.retryableStatusCodes=500\n")
        .get_retry_policy()
        .clone();
    assert_eq!(
        (
            p.get_max_same(),
            p.get_max_next(),
            p.is_idempotent(&http::Method::POST)
        ),
        (0, 0, true)
    );
    assert_eq!(
        (p.is_retryable_status(500), p.is_retryable_status(503)),
        (true, false)
    );
}
