//! Local waits and refusals of tower middleware composed with the
//! balancer, charged to no instance (helper 211).
//!
//! - A concurrency limit inside the balancer waits in `poll_ready`, before
//!   the pick: nothing is charged.
//! - `LoadShed` inside refuses in `call` with `Overloaded`: before, the
//!   balancer counted that local refusal as an `OtherError` of the picked
//!   instance, retried it and, for a POST, said it "may have reached the
//!   server" (a POST and 20 GETs shed while one request held the limit:
//!   41 failures charged, one instance ejected, one call in all reached an
//!   instance). Now it is the caller's `RequestError`: charged to no one,
//!   not retried.
//! - `Buffer` and a limit belong outside the balancer (a buffer inside
//!   hides its queue's wait, which then counts as the instance's latency:
//!   18 of 20 requests timed out in such a queue as read timeouts of
//!   instances that answered every call in 100 ms, see `service::attempt`'s
//!   docs): outside, nothing is charged and every request is answered.
//!
//! Paused time; scripted instances (no server decides the outcome).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, Request, Response};
use tower::{ServiceBuilder, ServiceExt};
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::retry::{RetryBudgetConfig, RetryPolicy};
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::stats::Outcome;
use tower_ribbon::{BoxError, LoadBalancer};

/// Two instances answering 200 after 100 ms; counts the calls that
/// reached them.
fn slow_instances(
    reached: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<String>,
    Response = Response<String>,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<Response<String>, BoxError>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |req: Request<String>| {
        let reached = Arc::clone(&reached);
        async move {
            reached.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, BoxError>(Response::new(req.uri().to_string()))
        }
    })
}

fn source() -> StaticSource {
    StaticSource::new()
        .with_list("svc", "127.0.0.1:1,127.0.0.1:2")
        .unwrap()
}

fn get() -> Request<String> {
    Request::get("http://svc/x").body(String::new()).unwrap()
}

/// Totals over both instances: failures recorded, instances ejected or
/// tripped now.
fn charged<S>(lb: &LoadBalancer<S>) -> (u64, usize, usize) {
    let snapshot = lb.snapshot("svc").unwrap();
    let now = tokio::time::Instant::now();
    let failures = snapshot
        .endpoints()
        .iter()
        .map(|e| e.stats().failures())
        .sum();
    let ejected = snapshot
        .endpoints()
        .iter()
        .filter(|e| e.stats().is_ejected_at(now))
        .count();
    let tripped = snapshot
        .endpoints()
        .iter()
        .filter(|e| e.stats().is_tripped_at(now))
        .count();
    (failures, ejected, tripped)
}

/// 20 requests at once through `lb`; the outcomes of their last attempts.
async fn twenty<S>(lb: &LoadBalancer<S>) -> Vec<Result<(), Vec<Outcome>>>
where
    S: tower_ribbon::InnerService<String, Response = Response<String>>,
{
    let calls = (0..20).map(|_| {
        let lb = lb.clone();
        tokio::spawn(async move {
            match lb.request(get()).await {
                Ok(_) => Ok(()),
                Err(e) => Err(e.attempts().iter().map(|a| a.outcome).collect()),
            }
        })
    });
    let mut out = Vec::new();
    for c in calls.collect::<Vec<_>>() {
        out.push(c.await.unwrap());
    }
    out
}

fn policy() -> RetryPolicy {
    RetryPolicy::none().per_try_timeout(Duration::from_millis(250))
}

/// A concurrency limit alone inside: the waits that outlast the per-try
/// timeout fail as "not ready" and nothing is charged.
#[tokio::test(start_paused = true)]
async fn a_concurrency_limit_inside_charges_nothing() {
    let reached = Arc::new(AtomicUsize::new(0));
    let inner = ServiceBuilder::new()
        .concurrency_limit(1)
        .service(slow_instances(Arc::clone(&reached)));
    let lb = LoadBalancer::builder()
        .source(source())
        .service("svc")
        .rule(|| RoundRobin::with_start(0))
        .retry(policy())
        .build(inner)
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let results = twenty(&lb).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    // 250 ms per try, 100 ms per call, one at a time: 3 answered.
    assert_eq!((ok, reached.load(Ordering::SeqCst)), (3, 3));
    assert_eq!(charged(&lb), (0, 0, 0));
}

/// A buffer and a limit outside the balancer: requests queue before it,
/// so every one is answered and nothing is charged.
#[tokio::test(start_paused = true)]
async fn a_buffer_and_limit_outside_the_balancer_charge_nothing() {
    let reached = Arc::new(AtomicUsize::new(0));
    let layer = LoadBalancer::builder()
        .source(source())
        .service("svc")
        .rule(|| RoundRobin::with_start(0))
        .retry(policy())
        .layer()
        .unwrap();
    let svc = ServiceBuilder::new()
        .buffer(64)
        .concurrency_limit(1)
        .layer(layer)
        .service(slow_instances(Arc::clone(&reached)));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(get()).await.map(|_| ()) })
        })
        .collect();
    let mut ok = 0;
    for call in calls {
        if call.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!((ok, reached.load(Ordering::SeqCst)), (20, 20));
}

/// `LoadShed` inside: a shed request is the caller's `RequestError`, one
/// attempt each, charged to no instance; a shed POST does not read as
/// maybe sent. Before: 41 `OtherError` failures charged, one instance
/// ejected, the POST "may have reached the server".
#[tokio::test(start_paused = true)]
async fn a_load_shed_refusal_is_charged_to_no_instance_and_not_retried() {
    let reached = Arc::new(AtomicUsize::new(0));
    let inner = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .service(slow_instances(Arc::clone(&reached)));
    let lb = LoadBalancer::builder()
        .source(source())
        .service("svc")
        .rule(|| RoundRobin::with_start(0))
        .retry(
            RetryPolicy::default()
                .backoff(Duration::ZERO, Duration::ZERO)
                .budget(RetryBudgetConfig::unlimited()),
        )
        .build(inner)
        .unwrap();
    assert!(lb.ready_service("svc").await);
    // Hold the limit with one request, then send a POST and 20 GETs.
    let held = {
        let lb = lb.clone();
        tokio::spawn(async move { lb.request(get()).await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let post = Request::builder()
        .method(Method::POST)
        .uri("http://svc/x")
        .body("order".to_owned())
        .unwrap();
    let post_err = lb.request(post).await.unwrap_err();
    let outcomes: Vec<Outcome> = post_err.attempts().iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Outcome::RequestError], "{post_err}");
    assert!(
        !post_err.to_string().contains("may have reached"),
        "{post_err}"
    );
    assert!(
        post_err.to_string().contains("service overloaded"),
        "{post_err}"
    );
    let results = twenty(&lb).await;
    held.await.unwrap().unwrap();
    for r in &results {
        assert_eq!(r.as_ref().unwrap_err(), &[Outcome::RequestError]);
    }
    assert_eq!(reached.load(Ordering::SeqCst), 1);
    assert_eq!(charged(&lb), (0, 0, 0));
}

/// Instances answering 503 with a body naming them and `Retry-After: 0`;
/// with `refuse`, instance 1 refuses the connection. Counts the calls.
fn first_fails(
    reached: Arc<AtomicUsize>,
    refuse: bool,
) -> impl tower::Service<
    Request<String>,
    Response = Response<String>,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<Response<String>, BoxError>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |req: Request<String>| {
        reached.fetch_add(1, Ordering::SeqCst);
        let first = req.uri().port_u16() == Some(1);
        async move {
            if first && refuse {
                return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into());
            }
            let response = Response::builder().status(503).header("retry-after", "0");
            Ok(response.body(format!("from {}", req.uri())).unwrap())
        }
    })
}

/// A balancer over `inner`: round robin from instance 1, one retry on 503
/// after 100 ms, and a retry budget of exactly one retry (its reserve).
fn retrying<S>(inner: S) -> LoadBalancer<S>
where
    S: tower_ribbon::InnerService<String, Response = Response<String>>,
{
    let budget = RetryBudgetConfig::default()
        .ttl(Duration::from_secs(1))
        .min_per_sec(1)
        .ratio(0.0);
    LoadBalancer::builder()
        .source(source())
        .service("svc")
        .rule(|| RoundRobin::with_start(0))
        .retry(
            RetryPolicy::default()
                .max_next(1)
                .retryable_statuses([503])
                .backoff(Duration::from_millis(100), Duration::from_millis(100))
                .budget(budget),
        )
        .build(inner)
        .unwrap()
}

/// Polls `request` once (its first attempt sent and ended: in the
/// backoff), then takes the permit of the shared limit `limited` as
/// another caller would.
async fn shed_after_backoff<F, L>(request: &mut F, limited: &mut L)
where
    F: std::future::Future + Unpin,
    L: tower::Service<Request<String>>,
    L::Error: std::fmt::Debug,
{
    let waker = std::task::Waker::noop();
    let polled = std::pin::Pin::new(&mut *request).poll(&mut std::task::Context::from_waker(waker));
    assert!(polled.is_pending(), "in the backoff");
    std::future::poll_fn(|cx| limited.poll_ready(cx))
        .await
        .unwrap();
}

/// A retry that `LoadShed` refuses in `call` (another caller took the
/// shared limit's permit during the backoff) ends the call with the 503
/// the first attempt had, body and `Retry-After` included, and gives its
/// budget token back: the next request's retry is sent with it. Before:
/// an `Overloaded` error naming instance 2, which received nothing (2
/// attempts listed, the second a `RequestError`), the 503 lost, the token
/// spent (attack 62a).
#[tokio::test(start_paused = true)]
async fn a_retry_shed_in_call_ends_with_the_response_before_it() {
    let reached = Arc::new(AtomicUsize::new(0));
    let mut limited = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .service(first_fails(Arc::clone(&reached), false));
    let lb = retrying(limited.clone());
    assert!(lb.ready_service("svc").await);
    let mut request = Box::pin(lb.request(get()));
    shed_after_backoff(&mut request, &mut limited).await;
    let response = request.await.unwrap();
    assert_eq!(
        reached.load(Ordering::SeqCst),
        1,
        "the retry reached no one"
    );
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "0");
    let body = http_body_util::BodyExt::collect(response.into_body());
    let body = body.await.unwrap().to_bytes();
    assert_eq!(body, "from http://127.0.0.1:1/x");
    drop(limited);
    // The token came back: the next 503 is retried, and then the budget is
    // empty (a 503 returned after one attempt).
    let response = lb.request(get()).await.unwrap();
    assert_eq!(
        (response.status().as_u16(), reached.load(Ordering::SeqCst)),
        (503, 3)
    );
    let response = lb.request(get()).await.unwrap();
    assert_eq!(
        (response.status().as_u16(), reached.load(Ordering::SeqCst)),
        (503, 4)
    );
    // The four 503s; the shed retry is charged to no one.
    assert_eq!(charged(&lb), (4, 0, 0));
}

/// The same when the first attempt failed: its error stays the call's,
/// listing the one attempt sent, and says the retry was not sent.
#[tokio::test(start_paused = true)]
async fn a_retry_shed_in_call_keeps_the_error_before_it() {
    let reached = Arc::new(AtomicUsize::new(0));
    let mut limited = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .service(first_fails(Arc::clone(&reached), true));
    let lb = retrying(limited.clone());
    assert!(lb.ready_service("svc").await);
    let mut request = Box::pin(lb.request(get()));
    shed_after_backoff(&mut request, &mut limited).await;
    let err = request.await.unwrap_err();
    assert_eq!(reached.load(Ordering::SeqCst), 1);
    let attempts: Vec<_> = (err.attempts().iter())
        .map(|a| (a.instance.as_str(), a.outcome))
        .collect();
    assert_eq!(attempts, [("http://127.0.0.1:1", Outcome::ConnectFailure)]);
    assert_eq!(err.instance(), Some("http://127.0.0.1:1"));
    let text = err.to_string();
    assert!(
        text.contains("a retry was not sent: the inner service refused it"),
        "{text}"
    );
    assert!(!text.contains("127.0.0.1:2"), "{text}");
}

/// `inner` whose readiness, once `fail` is set to `Some`, fails (`true`) or
/// stays pending (`false`).
#[derive(Clone)]
struct Gated<S> {
    inner: S,
    fail: Arc<std::sync::Mutex<Option<bool>>>,
}

impl<S: tower::Service<Request<String>>> tower::Service<Request<String>> for Gated<S>
where
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        match *self.fail.lock().unwrap() {
            Some(true) => std::task::Poll::Ready(Err("closed".into())),
            Some(false) => std::task::Poll::Pending,
            None => self.inner.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, req: Request<String>) -> Self::Future {
        let call = self.inner.call(req);
        Box::pin(async move { call.await.map_err(Into::into) })
    }
}

/// A retry whose inner service fails its readiness, or is not ready
/// within the per-try timeout, ends the call with the 503 before it (and
/// gives its token back: the next 503 is retried, the one after is not).
/// Before: a "not ready"
/// error listing the first attempt, the 503 lost (attack 62a).
#[tokio::test(start_paused = true)]
async fn a_retry_not_ready_ends_with_the_response_before_it() {
    for fails in [true, false] {
        let reached = Arc::new(AtomicUsize::new(0));
        let fail = Arc::default();
        let gated = Gated {
            inner: first_fails(Arc::clone(&reached), false),
            fail: Arc::clone(&fail),
        };
        let lb = retrying(gated);
        assert!(lb.ready_service("svc").await);
        let mut request = Box::pin(lb.request(get()));
        let waker = std::task::Waker::noop();
        let polled = request
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        assert!(polled.is_pending(), "in the backoff");
        *fail.lock().unwrap() = Some(fails);
        let response = request.await.unwrap();
        assert_eq!(response.status(), 503, "readiness fails: {fails}");
        let body = http_body_util::BodyExt::collect(response.into_body());
        assert_eq!(body.await.unwrap().to_bytes(), "from http://127.0.0.1:1/x");
        *fail.lock().unwrap() = None;
        let response = lb.request(get()).await.unwrap();
        assert_eq!(
            (response.status().as_u16(), reached.load(Ordering::SeqCst)),
            (503, 3)
        );
        let response = lb.request(get()).await.unwrap();
        assert_eq!(
            (response.status().as_u16(), reached.load(Ordering::SeqCst)),
            (503, 4)
        );
    }
}
