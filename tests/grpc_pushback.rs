//! gRPC's server pushback (`grpc-retry-pushback-ms`, gRFC A6) on a
//! retryable gRPC failure, through the balancer with a scripted inner
//! service on paused time: a negative or unparsable pushback is not
//! retried, a pushback in milliseconds is waited for in place of the
//! backoff, one beyond `max_retry_after` is returned.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response};
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::{RetryBudgetConfig, RetryNonIdempotent, RetryPolicy};
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::{BoxError, LoadBalancer};

/// Calls per instance port, in order.
type Log = Arc<Mutex<Vec<u16>>>;

/// Instance 1 answers every call with a trailers-only UNAVAILABLE carrying
/// `pushback` (if any), instance 2 with OK. Opted-in calls (POST marked
/// `RetryNonIdempotent`, as `GrpcRetryLayer` marks them), one retry on the
/// next instance, a 10 ms backoff.
async fn call(pushback: Option<&'static str>) -> (Response<String>, Vec<u16>, Duration) {
    call_with(pushback.as_slice()).await
}

/// As [`call`], instance 1's answer carrying each of `pushbacks`.
async fn call_with(pushbacks: &[&'static str]) -> (Response<String>, Vec<u16>, Duration) {
    let pushbacks = pushbacks.to_vec();
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1,127.0.0.1:2")
        .unwrap();
    let log: Log = Arc::default();
    let inner_log = Arc::clone(&log);
    let inner = tower::service_fn(move |req: Request<String>| {
        let port = req.uri().port_u16().unwrap_or(0);
        inner_log.lock().unwrap().push(port);
        let mut response = Response::new(port.to_string());
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        let status = if port == 1 { "14" } else { "0" };
        headers.insert("grpc-status", HeaderValue::from_static(status));
        if port == 1 {
            for value in &pushbacks {
                headers.append("grpc-retry-pushback-ms", HeaderValue::from_static(value));
            }
        }
        async move { Ok::<_, BoxError>(response) }
    });
    let policy = RetryPolicy::default()
        .max_next(1)
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .budget(RetryBudgetConfig::unlimited());
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .rule(|| RoundRobin::with_start(0))
        .retry(policy)
        .outlier_detection(OutlierDetection::disabled())
        .build(inner)
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("http://svc/pkg.Svc/Method")
        .body(String::new())
        .unwrap();
    req.extensions_mut().insert(RetryNonIdempotent);
    let start = tokio::time::Instant::now();
    let response = lb.oneshot(req).await.unwrap();
    let elapsed = start.elapsed();
    let ports = log.lock().unwrap().clone();
    (response.map(|b| b.into_inner()), ports, elapsed)
}

/// A pushback asking for no retry (negative, unparsable) is not retried:
/// the caller gets the server's UNAVAILABLE at once. Before, it was
/// retried on the next instance (`[1, 2]`, OK) after the backoff, against
/// the server's word (gRFC A6: "no further attempts will be made").
#[tokio::test(start_paused = true)]
async fn a_pushback_asking_for_no_retry_is_not_retried() {
    for value in ["-1", "-2147483648", "soon", "1.5", "", "2147483648"] {
        let (response, ports, elapsed) = call(Some(value)).await;
        assert_eq!(ports, [1], "{value:?}");
        assert_eq!(response.headers()["grpc-status"], "14", "{value:?}");
        assert_eq!(elapsed, Duration::ZERO, "{value:?}");
    }
}

/// A pushback in milliseconds is the wait before the retry, in place of
/// the backoff (before: the 10 ms backoff); one beyond `max_retry_after`
/// (10 s) is returned, as a `Retry-After` beyond it is (before: retried
/// after the backoff). Without a pushback, the backoff.
#[tokio::test(start_paused = true)]
async fn a_pushback_in_milliseconds_is_the_wait_before_the_retry() {
    let (response, ports, elapsed) = call(Some("1500")).await;
    assert_eq!((ports, response.into_body()), (vec![1, 2], "2".to_owned()));
    assert_eq!(elapsed, Duration::from_millis(1500));

    let (response, ports, elapsed) = call(Some("0")).await;
    assert_eq!((ports, response.into_body()), (vec![1, 2], "2".to_owned()));
    assert_eq!(elapsed, Duration::ZERO);

    let (response, ports, elapsed) = call(Some("10001")).await;
    assert_eq!(ports, [1]);
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(elapsed, Duration::ZERO);

    // The backoff is uniform below its 10 ms cap, and tokio's timer
    // rounds a sleep up to a whole millisecond: a draw above 9 ms waits
    // 10 ms (about 1 run in 10 failed `< 10 ms`).
    let (response, ports, elapsed) = call(None).await;
    assert_eq!((ports, response.into_body()), (vec![1, 2], "2".to_owned()));
    assert!(elapsed <= Duration::from_millis(10), "{elapsed:?}");
}

/// Several pushback values ask for no retry, as grpc-go's client reads
/// them ("Server retry pushback specified multiple values; not
/// retrying"). Before, the first alone decided: `100` then `-1` retried
/// after 100 ms (helper 190).
#[tokio::test(start_paused = true)]
async fn several_pushback_values_ask_for_no_retry() {
    for values in [["100", "-1"], ["100", "200"], ["0", "0"], ["-1", "100"]] {
        let (response, ports, elapsed) = call_with(&values).await;
        assert_eq!(ports, [1], "{values:?}");
        assert_eq!(response.headers()["grpc-status"], "14", "{values:?}");
        assert_eq!(elapsed, Duration::ZERO, "{values:?}");
    }
}
