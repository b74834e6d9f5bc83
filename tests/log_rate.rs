//! Events whose rate others choose are logged at INFO at most once a
//! second (`LogLimit`), the others at DEBUG and counted in the next INFO
//! line's `suppressed`:
//! - requests to unknown services: the host name is the caller's choice (a
//!   gateway forwards any), and one INFO line per request let callers flood
//!   the logs (before: 1 000 requests, 1 000 INFO lines);
//! - retries: while an instance fails, every request may retry (before:
//!   1 000 retried requests, 1 000 INFO lines).

#[path = "common/log_capture.rs"]
mod log_capture;

use std::convert::Infallible;
use std::time::Duration;

use http::Request;
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::{RetryBudgetConfig, RetryPolicy};
use tower_ribbon::rule::RoundRobin;

#[tokio::test(start_paused = true)]
async fn unknown_services_log_one_info_line_a_second() {
    let (_guard, captured) = log_capture::capture(tracing::Level::INFO);
    let inner = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    });
    let lb = LoadBalancer::builder()
        .source(
            StaticSource::new()
                .with_list("known", "127.0.0.1:1")
                .unwrap(),
        )
        .service("known")
        .build(inner)
        .unwrap();
    let send = |n: usize| {
        let lb = lb.clone();
        async move {
            for i in 0..n {
                let req = Request::get(format!("http://made-up-{i}/"))
                    .body(())
                    .unwrap();
                let err = lb.clone().oneshot(req).await.unwrap_err();
                assert!(err.is_unknown_service(), "{err}");
            }
        }
    };
    send(1_000).await;
    let lines = |text: &str| {
        text.lines()
            .filter(|l| l.contains("unknown service"))
            .count()
    };
    assert_eq!(lines(&captured.text()), 1, "{}", captured.text());
    assert!(
        captured.text().contains("suppressed=0"),
        "{}",
        captured.text()
    );

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    send(10).await;
    let text = captured.text();
    assert_eq!(lines(&text), 2, "{text}");
    assert!(text.contains("suppressed=999"), "{text}");
    assert!(text.contains("made-up-0"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn retries_log_one_info_line_a_second_per_service() {
    let (_guard, captured) = log_capture::capture(tracing::Level::INFO);
    // Port 1 answers 503 (retried on port 2), port 2 answers 200.
    let inner = tower::service_fn(|req: Request<()>| async move {
        let status = if req.uri().port_u16() == Some(1) {
            503
        } else {
            200
        };
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        Ok::<_, Infallible>(response)
    });
    let lb = LoadBalancer::builder()
        .source(
            StaticSource::new()
                .with_list("a", "127.0.0.1:1,127.0.0.1:2")
                .unwrap()
                .with_list("b", "127.0.0.1:1,127.0.0.1:2")
                .unwrap(),
        )
        .service("a")
        .service("b")
        .rule(|| RoundRobin::with_start(0))
        // Port 1 keeps failing: no ejection, so every other request retries.
        .outlier_detection(OutlierDetection::disabled())
        .retry(
            RetryPolicy::default()
                .backoff(Duration::ZERO, Duration::ZERO)
                .budget(RetryBudgetConfig::unlimited()),
        )
        .build(inner)
        .unwrap();
    // Every other request (round robin) meets port 1 first: 1 000 of 2 000
    // are retried.
    let send = |service: &'static str, n: usize| {
        let lb = lb.clone();
        async move {
            for _ in 0..n {
                let req = Request::get(format!("http://{service}/")).body(()).unwrap();
                let response = lb.clone().oneshot(req).await.unwrap();
                assert_eq!(response.status(), 200);
            }
        }
    };
    let lines = |text: &str, service: &str| {
        text.lines()
            .filter(|l| l.contains("retrying") && l.contains(&format!("service=\"{service}\"")))
            .count()
    };
    send("a", 2_000).await;
    send("b", 2).await;
    let text = captured.text();
    assert_eq!(lines(&text, "a"), 1, "{text}");
    assert_eq!(lines(&text, "b"), 1, "one limit per service: {text}");
    assert_eq!(text.matches("suppressed=0").count(), 2, "{text}");

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    send("a", 2).await;
    let text = captured.text();
    assert_eq!(lines(&text, "a"), 2, "{text}");
    assert!(text.contains("suppressed=999"), "{text}");
}
