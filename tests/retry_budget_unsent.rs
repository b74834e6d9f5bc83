//! A retry budget counts only requests that reached an instance: one that
//! never did (the inner service not ready, its readiness failing, the
//! caller dropping the request while it waited) added no load, so it adds
//! no retry allowance. Before, every request deposited once its service had
//! a list: 20 such requests let 10 of 10 failing requests retry where the
//! budget allows 5 (helper 188).
//!
//! The budget is Finagle's `RetryBudget` (its retry filter deposits for
//! each request it sends on); Envoy's retry budget is likewise a share of
//! the *active* upstream requests
//! (<https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/circuit_breaker.proto#config-cluster-v3-circuitbreakers-thresholds-retrybudget>).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::retry::{RetryBudgetConfig, RetryPolicy};
use tower_ribbon::{BoxError, LoadBalancer};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ready {
    Yes,
    Never,
    Fails,
}

/// An inner service that answers 503 to every call, with readiness as set.
#[derive(Clone)]
struct Inner {
    ready: Arc<Mutex<Ready>>,
    calls: Arc<AtomicUsize>,
}

impl tower::Service<Request<String>> for Inner {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match *self.ready.lock().unwrap() {
            Ready::Yes => Poll::Ready(Ok(())),
            Ready::Never => Poll::Pending,
            Ready::Fails => Poll::Ready(Err("not ready".into())),
        }
    }

    fn call(&mut self, _req: Request<String>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(Response::builder().status(503).body(String::new()).unwrap()) })
    }
}

/// Ratio 0.5, no reserve: two requests sent allow one retry.
async fn balancer(inner: &Inner) -> LoadBalancer<Inner> {
    let budget = RetryBudgetConfig::default()
        .ttl(Duration::from_secs(10))
        .min_per_sec(0)
        .ratio(0.5);
    let policy = RetryPolicy::default()
        .max_next(1)
        .retryable_statuses([503])
        .backoff(Duration::ZERO, Duration::ZERO)
        .budget(budget);
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1,127.0.0.1:2")
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .retry(policy)
        .read_timeout(None)
        .build(inner.clone())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    lb
}

fn get() -> Request<String> {
    Request::get("http://svc/x").body(String::new()).unwrap()
}

/// `unsent` requests that never reach an instance (as `how` says), then
/// 10 requests answered 503: how many of the 10 were retried.
async fn retried_after(unsent: usize, how: Ready) -> usize {
    let inner = Inner {
        ready: Arc::new(Mutex::new(Ready::Yes)),
        calls: Arc::default(),
    };
    let lb = balancer(&inner).await;
    *inner.ready.lock().unwrap() = how;
    for _ in 0..unsent {
        let mut request = Box::pin(lb.request(get()));
        let polled = request
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        match how {
            // Dropped while it waits for the inner service.
            Ready::Never => assert!(polled.is_pending()),
            Ready::Fails => assert!(matches!(polled, Poll::Ready(Err(_)))),
            Ready::Yes => unreachable!("every request here is sent"),
        }
    }
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0, "none was sent");
    *inner.ready.lock().unwrap() = Ready::Yes;
    let mut retried = 0;
    for _ in 0..10 {
        let before = inner.calls.load(Ordering::SeqCst);
        let response = lb.request(get()).await.unwrap();
        assert_eq!(response.status(), 503);
        retried += inner.calls.load(Ordering::SeqCst) - before - 1;
    }
    retried
}

#[tokio::test(start_paused = true)]
async fn requests_that_reached_no_instance_add_no_retry_allowance() {
    // Ten requests sent deposit 10 × 0.5: five retries (each request
    // deposits before its own retry is decided).
    assert_eq!(retried_after(0, Ready::Yes).await, 5, "the control");
    assert_eq!(
        retried_after(20, Ready::Fails).await,
        5,
        "requests whose inner service failed its readiness"
    );
    assert_eq!(
        retried_after(20, Ready::Never).await,
        5,
        "requests dropped while the inner service was not ready"
    );
}

/// Answers 503 at once, except `/hang`, which never answers; counts calls.
#[derive(Clone, Default)]
struct Hanging {
    calls: Arc<AtomicUsize>,
}

impl tower::Service<Request<String>> for Hanging {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<String>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let hang = req.uri().path() == "/hang";
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok(Response::builder().status(503).body(String::new()).unwrap())
        })
    }
}

/// Through tower's `LoadShed` and a concurrency limit of 1 (inside the
/// balancer): `shed` requests refused in `call` while a hanging request
/// holds the limit, or (`shed` 0) `cancelled` requests dropped while their
/// hanging attempt is in flight; then 10 requests answered 503: how many
/// of the 10 were retried.
async fn retried_after_local(shed: usize, cancelled: usize) -> usize {
    let inner = Hanging::default();
    let stack = tower::ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .service(inner.clone());
    let budget = RetryBudgetConfig::default()
        .ttl(Duration::from_secs(10))
        .min_per_sec(0)
        .ratio(0.5);
    let policy = RetryPolicy::default()
        .max_next(1)
        .retryable_statuses([503])
        .backoff(Duration::ZERO, Duration::ZERO)
        .budget(budget);
    let lb = LoadBalancer::builder()
        .source(
            StaticSource::new()
                .with_list("svc", "127.0.0.1:1,127.0.0.1:2")
                .unwrap(),
        )
        .service("svc")
        .retry(policy)
        .read_timeout(None)
        .build(stack)
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let hang = || Request::get("http://svc/hang").body(String::new()).unwrap();
    let poll = |r: &mut Pin<Box<_>>| {
        let r: &mut Pin<Box<dyn Future<Output = _> + Send>> = r;
        r.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    };
    // One request in flight holds the limit; the shed ones are refused.
    let mut holder: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(lb.request(hang()));
    assert!(poll(&mut holder).is_pending());
    for _ in 0..shed {
        let err = lb.request(get()).await.unwrap_err();
        assert!(err.to_string().contains("service overloaded"), "{err}");
    }
    drop(holder);
    for _ in 0..cancelled {
        let mut request: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(lb.request(hang()));
        assert!(poll(&mut request).is_pending());
    }
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1 + cancelled);
    let mut retried = 0;
    for _ in 0..10 {
        let before = inner.calls.load(Ordering::SeqCst);
        let response = lb.request(get()).await.unwrap();
        assert_eq!(response.status(), 503);
        retried += inner.calls.load(Ordering::SeqCst) - before - 1;
    }
    retried
}

/// A request refused in `call` by a layer of the inner service (tower's
/// `LoadShed`) reached no instance either: its deposit is taken back. One
/// cancelled while its attempt was in flight was handed over and keeps
/// its deposit. The holder's own deposit is in every run (ratio 0.5: half
/// a retry, which the control's fifth deposit completes).
#[tokio::test(start_paused = true)]
async fn requests_refused_in_call_add_no_retry_allowance() {
    assert_eq!(retried_after_local(0, 0).await, 5, "the control");
    // Before: 10 (attack 62a), the 20 shed requests' deposits.
    assert_eq!(retried_after_local(20, 0).await, 5, "shed in call");
    assert_eq!(retried_after_local(0, 20).await, 10, "cancelled in flight");
}
