//! Cancellation at every await point of the request path: the request's
//! future dropped while it waits for the first list, for a not-ready inner
//! service, for the inner call, for a backoff, for a same-instance retry,
//! while its attempt is the half-open probe or goes to an instance in slow
//! start; the response or its body dropped part-way; timeouts around the
//! balancer; the balancer dropped; many callers cancelling at seeded random
//! points. After each: nothing in flight, the probe free, nothing recorded
//! against the instance for the caller's cancel, the retry budget not spent
//! by a retry that was never sent, no panic.
//!
//! The request's future is polled by hand ([`poll_once`]) where the await
//! point must be exact, so no timing decides where the drop lands.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::sync::{Notify, mpsc};
use tower::Service;
use tower_ribbon::discovery::{FetchFuture, InstanceSource, StaticSource};
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::{RetryBudgetConfig, RetryPolicy};
use tower_ribbon::rule::{PeakEwmaP2c, RoundRobin, SlowStart, SlowStartConfig};
use tower_ribbon::service::FailureStatuses;
use tower_ribbon::stats::BreakerState;
use tower_ribbon::{BoxError, DiscoveryError, Endpoint, Instance, LoadBalancer};

/// What the scripted inner service does with one call.
#[derive(Clone)]
enum Act {
    /// Answers at once with this status and a one-frame body.
    Status(u16),
    /// A refused connection (a connect failure).
    Refused,
    /// Never answers.
    Hang,
    /// Answers this status once the gate is notified.
    Gate(Arc<Notify>, u16),
    /// Answers 200 after this long (paused time).
    After(Duration, u16),
    /// Answers 200 at once with a body that streams until its sender
    /// (kept in [`Script::streams`]) sends or drops.
    Stream,
}

/// A response body: one frame, or frames from a channel.
#[derive(Debug)]
struct TestBody {
    first: Option<Bytes>,
    rx: Option<mpsc::UnboundedReceiver<Bytes>>,
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(None) => {
                self.rx = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rx.is_none()
    }
}

type Resp = Response<TestBody>;
type Fut = Pin<Box<dyn Future<Output = Result<Resp, BoxError>> + Send>>;

/// An inner service answering each port from its own script (200 once a
/// script is empty), logging the ports it was called on; not ready while
/// `blocked` is set.
#[derive(Clone, Default)]
struct Script {
    acts: Arc<Mutex<HashMap<u16, VecDeque<Act>>>>,
    seen: Arc<Mutex<Vec<u16>>>,
    blocked: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<mpsc::UnboundedSender<Bytes>>>>,
    waiting: Arc<Mutex<Option<Waker>>>,
}

impl Script {
    fn push(&self, port: u16, acts: impl IntoIterator<Item = Act>) {
        let mut all = self.acts.lock().unwrap();
        all.entry(port).or_default().extend(acts);
    }

    fn seen(&self) -> Vec<u16> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    fn block(&self, on: bool) {
        self.blocked.store(on, Ordering::SeqCst);
        if let Some(waker) = self.waiting.lock().unwrap().take() {
            waker.wake();
        }
    }
}

fn response(code: u16, body: TestBody) -> Result<Resp, BoxError> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(code).unwrap();
    Ok(response)
}

fn one_frame() -> TestBody {
    TestBody {
        first: Some(Bytes::from_static(b"body")),
        rx: None,
    }
}

impl Service<Request<Full<Bytes>>> for Script {
    type Response = Resp;
    type Error = BoxError;
    type Future = Fut;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.blocked.load(Ordering::SeqCst) {
            // Woken when unblocked.
            *self.waiting.lock().unwrap() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Fut {
        let port = req.uri().port_u16().unwrap();
        self.seen.lock().unwrap().push(port);
        let act = (self.acts.lock().unwrap().get_mut(&port))
            .and_then(VecDeque::pop_front)
            .unwrap_or(Act::Status(200));
        match act {
            Act::Status(code) => Box::pin(async move { response(code, one_frame()) }),
            Act::Refused => Box::pin(async {
                Err(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) as _)
            }),
            Act::Hang => Box::pin(std::future::pending()),
            Act::Gate(gate, code) => Box::pin(async move {
                gate.notified().await;
                response(code, one_frame())
            }),
            Act::After(wait, code) => Box::pin(async move {
                tokio::time::sleep(wait).await;
                response(code, one_frame())
            }),
            Act::Stream => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.streams.lock().unwrap().push(tx);
                let body = TestBody {
                    first: None,
                    rx: Some(rx),
                };
                Box::pin(async move { response(200, body) })
            }
        }
    }
}

/// Polls `fut` once, with a waker that does nothing: the test decides
/// when it is polled again, so the await point it stops at is exact.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(fut).poll(&mut cx)
}

/// Failure statuses: only 500 (so a 503 is a retried success).
fn builder(list: &str, retry: RetryPolicy) -> tower_ribbon::Builder {
    let source = StaticSource::new().with_list("svc", list).unwrap();
    LoadBalancer::builder()
        .source(source)
        .service("svc")
        .rule(|| RoundRobin::with_start(0))
        .retry(retry)
        .read_timeout(None)
        .failure_statuses(FailureStatuses::only([500]))
}

async fn balancer(script: &Script, list: &str, retry: RetryPolicy) -> LoadBalancer<Script> {
    let lb = builder(list, retry).build(script.clone()).unwrap();
    assert!(lb.ready_service("svc").await);
    lb
}

fn endpoint(lb: &LoadBalancer<Script>, port: u16) -> Endpoint {
    let snapshot = lb.snapshot("svc").unwrap();
    let found = snapshot
        .endpoints()
        .iter()
        .find(|e| e.instance().port() == port);
    found.unwrap().clone()
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://svc/x")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Nothing of the caller's cancel on `e`: nothing in flight, no failure of
/// any kind, no ejection, the breaker closed, `requests` attempts started.
#[track_caller]
fn untouched(e: &Endpoint, requests: u64) {
    let s = e.stats();
    assert_eq!(s.in_flight(), 0, "in flight on {e}");
    assert_eq!(s.requests(), requests, "attempts on {e}");
    assert_eq!(s.failures(), 0, "failures on {e}");
    assert_eq!(s.successive_connection_failures(), 0);
    assert_eq!(s.consecutive_server_errors(), 0);
    assert_eq!(s.consecutive_gateway_errors(), 0);
    assert_eq!(s.times_ejected(), 0);
    assert_ne!(s.success_rate(), Some(0.0));
    assert_eq!(s.breaker_state(), BreakerState::Closed);
}

/// A source whose first fetch waits for `gate`.
struct GatedSource {
    gate: Arc<Notify>,
}

impl InstanceSource for GatedSource {
    fn fetch<'a>(&'a self, _service_id: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            self.gate.notified().await;
            Ok::<_, DiscoveryError>(vec![Instance::new("svc", "127.0.0.1", 1).unwrap()])
        })
    }
}

#[tokio::test(start_paused = true)]
async fn dropped_while_waiting_for_the_first_list() {
    let gate = Arc::new(Notify::new());
    let script = Script::default();
    let lb = LoadBalancer::builder()
        .source(GatedSource {
            gate: Arc::clone(&gate),
        })
        .service("svc")
        .read_timeout(None)
        .build(script.clone())
        .unwrap();
    let mut fut = Box::pin(lb.request(get()));
    assert!(poll_once(&mut fut).is_pending());
    tokio::task::yield_now().await;
    assert!(poll_once(&mut fut).is_pending());
    drop(fut);
    // Also with the balancer gone: the future held the only reference.
    let mut orphan = Box::pin(lb.request(get()));
    assert!(poll_once(&mut orphan).is_pending());
    let lb2 = lb.clone();
    drop(lb);
    drop(orphan);
    gate.notify_one();
    assert!(lb2.ready_service("svc").await);
    assert!(script.seen().is_empty());
    let e = endpoint(&lb2, 1);
    untouched(&e, 0);
    let response = lb2.request(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    untouched(&e, 1);
}

/// The inner service not ready: the wait is charged to no instance, with
/// or without a per-try timeout around it.
#[tokio::test(start_paused = true)]
async fn dropped_while_the_inner_service_is_not_ready() {
    for per_try in [None, Some(Duration::from_secs(1))] {
        let script = Script::default();
        let mut policy = RetryPolicy::default();
        if let Some(t) = per_try {
            policy = policy.per_try_timeout(t);
        }
        let lb = balancer(&script, "127.0.0.1:1,127.0.0.1:2", policy).await;
        let (e1, e2) = (endpoint(&lb, 1), endpoint(&lb, 2));
        script.block(true);
        let mut fut = Box::pin(lb.request(get()));
        assert!(poll_once(&mut fut).is_pending());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(poll_once(&mut fut).is_pending());
        drop(fut);
        // tokio::time::timeout around it, firing in the wait.
        let cut = tokio::time::timeout(Duration::from_millis(900), lb.request(get())).await;
        assert!(cut.is_err());
        assert!(script.seen().is_empty());
        untouched(&e1, 0);
        untouched(&e2, 0);
        script.block(false);
        assert_eq!(lb.request(get()).await.unwrap().status(), 200);
        assert_eq!(script.seen(), [1]);
        untouched(&e1, 1);
    }
}

/// Dropped mid-call, by hand, by `tokio::time::timeout` and by tower's
/// `Timeout` around the balancer: in flight during the call, nothing after.
#[tokio::test(start_paused = true)]
async fn dropped_mid_call_by_hand_or_by_an_outer_timeout() {
    let script = Script::default();
    let lb = balancer(&script, "127.0.0.1:1", RetryPolicy::default()).await;
    let e = endpoint(&lb, 1);
    script.push(1, [Act::Hang, Act::Hang, Act::Hang]);
    let mut fut = Box::pin(lb.request(get()));
    assert!(poll_once(&mut fut).is_pending());
    assert_eq!(e.stats().in_flight(), 1);
    drop(fut);
    untouched(&e, 1);

    let cut = tokio::time::timeout(Duration::from_millis(10), lb.request(get())).await;
    assert!(cut.is_err());
    untouched(&e, 2);

    let mut outer = tower::timeout::Timeout::new(lb.clone(), Duration::from_millis(10));
    let err = tower::ServiceExt::ready(&mut outer)
        .await
        .unwrap()
        .call(get())
        .await
        .unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    untouched(&e, 3);
    assert_eq!(script.seen(), [1, 1, 1]);
}

/// Dropped during the backoff after a retried success (a 503) and after a
/// failure (refused): in flight nothing; the refused attempt is the
/// instance's own failure, recorded once.
#[tokio::test(start_paused = true)]
async fn dropped_during_a_backoff() {
    let policy = RetryPolicy::default()
        .max_same(1)
        .max_next(1)
        .retryable_statuses([503])
        .backoff(Duration::from_secs(1), Duration::from_secs(1));
    let script = Script::default();
    let lb = balancer(&script, "127.0.0.1:1,127.0.0.1:2", policy).await;
    let (e1, e2) = (endpoint(&lb, 1), endpoint(&lb, 2));
    script.push(1, [Act::Status(503)]);
    let mut fut = Box::pin(lb.request(get()));
    // The 503 came back and the request sleeps (or yields) before its retry.
    assert!(poll_once(&mut fut).is_pending());
    assert_eq!(script.seen(), [1]);
    drop(fut);
    untouched(&e1, 1);
    untouched(&e2, 0);

    script.push(2, [Act::Refused]);
    let mut fut = Box::pin(lb.request(get()));
    assert!(poll_once(&mut fut).is_pending());
    assert_eq!(script.seen(), [2]);
    drop(fut);
    assert_eq!(e2.stats().in_flight(), 0);
    assert_eq!(e2.stats().failures(), 1);
    assert_eq!(e2.stats().successive_connection_failures(), 1);
    untouched(&e1, 1);
}

/// Dropped during a same-instance retry's call: the first attempt (a 503,
/// a success status) recorded as a success, the retry as nothing.
#[tokio::test(start_paused = true)]
async fn dropped_during_a_same_instance_retry() {
    let policy = RetryPolicy::default()
        .max_same(1)
        .max_next(0)
        .retryable_statuses([503])
        .backoff(Duration::ZERO, Duration::ZERO);
    let script = Script::default();
    let lb = balancer(&script, "127.0.0.1:1,127.0.0.1:2", policy).await;
    let e1 = endpoint(&lb, 1);
    script.push(1, [Act::Status(503), Act::Hang]);
    let mut fut = Box::pin(lb.request(get()));
    assert!(poll_once(&mut fut).is_pending());
    assert!(poll_once(&mut fut).is_pending());
    assert_eq!(script.seen(), [1, 1]);
    assert_eq!(e1.stats().in_flight(), 1);
    drop(fut);
    untouched(&e1, 2);
    assert_eq!(e1.stats().success_rate(), Some(1.0));
    untouched(&endpoint(&lb, 2), 0);
}

/// A response dropped before its body, and a streaming body dropped
/// half-read: the attempt ends with the drop, as a success (the instance
/// answered), never as a failure.
#[tokio::test(start_paused = true)]
async fn a_response_or_a_body_dropped_part_way() {
    let script = Script::default();
    let lb = balancer(&script, "127.0.0.1:1", RetryPolicy::default()).await;
    let e = endpoint(&lb, 1);
    script.push(1, [Act::Stream, Act::Stream]);

    let response = lb.request(get()).await.unwrap();
    assert_eq!(e.stats().in_flight(), 1);
    drop(response);
    untouched(&e, 1);

    let mut body = lb.request(get()).await.unwrap().into_body();
    let tx = script.streams.lock().unwrap().pop().unwrap();
    tx.send(Bytes::from_static(b"half")).unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "half");
    assert_eq!(e.stats().in_flight(), 1);
    // A read cut off by the caller's own timeout, then the body dropped.
    let cut = tokio::time::timeout(Duration::from_millis(10), body.frame()).await;
    assert!(cut.is_err());
    assert_eq!(e.stats().in_flight(), 1);
    drop(body);
    untouched(&e, 2);
    assert_eq!(e.stats().success_rate(), Some(1.0));
    drop(tx);
}

/// Three refused attempts trip `e` (threshold 3, blackout 10 s).
async fn trip(lb: &LoadBalancer<Script>, script: &Script, e: &Endpoint) {
    script.push(e.instance().port(), vec![Act::Refused; 3]);
    for _ in 0..3 {
        let mut fut = Box::pin(lb.request(get()));
        while poll_once(&mut fut).is_pending() {
            tokio::task::yield_now().await;
        }
    }
    assert!(matches!(
        e.stats().breaker_state(),
        BreakerState::Open { .. }
    ));
}

/// A half-open probe dropped mid-call frees the probe: the instance can
/// be probed again, and the cancel counts as no failure.
#[tokio::test(start_paused = true)]
async fn a_dropped_probe_leaves_the_instance_probable() {
    let script = Script::default();
    let lb = balancer(&script, "127.0.0.1:1", RetryPolicy::none()).await;
    let e = endpoint(&lb, 1);
    trip(&lb, &script, &e).await;
    script.seen();
    tokio::time::advance(Duration::from_secs(11)).await;
    let failures = e.stats().failures();
    script.push(1, [Act::Hang]);
    let mut fut = Box::pin(lb.request(get()));
    assert!(poll_once(&mut fut).is_pending());
    assert_eq!(
        e.stats().breaker_state(),
        BreakerState::HalfOpen { probing: true }
    );
    drop(fut);
    assert_eq!(
        e.stats().breaker_state(),
        BreakerState::HalfOpen { probing: false }
    );
    assert_eq!(e.stats().in_flight(), 0);
    assert_eq!(e.stats().failures(), failures);
    assert_eq!(e.stats().successive_connection_failures(), 3);
    // Probed again: the next request is the probe, and closes the breaker.
    let response = lb.request(get()).await.unwrap();
    assert_eq!(script.seen(), [1, 1]);
    assert_eq!(e.stats().breaker_state(), BreakerState::Closed);
    drop(response);
    assert_eq!(e.stats().in_flight(), 0);
}

/// An instance in slow start (its share ramping up): a cancel there ends
/// the attempt as anywhere else.
#[tokio::test(start_paused = true)]
async fn dropped_on_an_instance_in_slow_start() {
    let script = Script::default();
    let lb = builder("127.0.0.1:1", RetryPolicy::none())
        .rule(|| {
            SlowStart::new(
                RoundRobin::with_start(0),
                SlowStartConfig::new(Duration::from_secs(60)),
            )
        })
        .build(script.clone())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let e = endpoint(&lb, 1);
    script.push(1, [Act::Hang]);
    let mut fut = Box::pin(lb.request(get()));
    assert!(poll_once(&mut fut).is_pending());
    assert_eq!(e.stats().in_flight(), 1);
    drop(fut);
    untouched(&e, 1);
}

/// The balancer dropped while requests are in flight, then the requests
/// dropped or finished: nothing left in flight.
#[tokio::test(start_paused = true)]
async fn the_balancer_dropped_with_requests_in_flight() {
    let script = Script::default();
    let lb = balancer(&script, "127.0.0.1:1", RetryPolicy::none()).await;
    let e = endpoint(&lb, 1);
    let gate = Arc::new(Notify::new());
    script.push(
        1,
        [Act::Hang, Act::Gate(Arc::clone(&gate), 200), Act::Stream],
    );
    let mut hung = Box::pin(lb.request(get()));
    let gated = tokio::spawn(lb.request(get()));
    let streamed = lb.request(get());
    assert!(poll_once(&mut hung).is_pending());
    tokio::task::yield_now().await;
    drop(lb);
    let body = streamed.await.unwrap().into_body();
    assert_eq!(e.stats().in_flight(), 3);
    drop(hung);
    gate.notify_one();
    drop(gated.await.unwrap().unwrap());
    assert_eq!(e.stats().in_flight(), 1);
    drop(body);
    untouched(&e, 3);
}

/// A tiny seeded generator (xorshift), so the random runs repeat.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// 200 callers on paused time, each cancelling at a seeded random moment
/// (during the call, a backoff, a retry, or with the body half-read), over
/// instances answering after random delays with random statuses, under a
/// per-try timeout and a deadline: nothing is left in flight, and no probe
/// stays taken. With `failing` off the instances never fail, so whatever
/// the cancels did, no failure of any kind is recorded.
async fn random_cancels(seed: u64, failing: bool) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut policy = RetryPolicy::default()
        .max_same(1)
        .max_next(1)
        .retryable_statuses([503])
        .budget(RetryBudgetConfig::unlimited())
        .backoff(Duration::from_millis(5), Duration::from_millis(20));
    if failing {
        policy = policy
            .per_try_timeout(Duration::from_millis(25))
            .deadline(Duration::from_millis(70));
    }
    let script = Script::default();
    let list = "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3";
    let lb = builder(list, policy)
        .outlier_detection(OutlierDetection::default())
        .build(script.clone())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    for port in 1..=3 {
        let acts: Vec<Act> = (0..300)
            .map(|_| match rng.below(if failing { 6 } else { 3 }) {
                0 => Act::After(Duration::from_millis(rng.below(30)), 503),
                1 => Act::Stream,
                2 => Act::After(Duration::from_millis(rng.below(30)), 200),
                3 => Act::Refused,
                4 => Act::Status(500),
                _ => Act::Hang,
            })
            .collect();
        script.push(port, acts);
    }
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let fut = lb.request(get());
        let cancel_at = Duration::from_millis(rng.below(60));
        let hold_body = Duration::from_millis(rng.below(20));
        let start = Duration::from_millis(rng.below(50));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(start).await;
            let Ok(Ok(response)) = tokio::time::timeout(cancel_at, fut).await else {
                return;
            };
            let mut body = response.into_body();
            let _ = tokio::time::timeout(hold_body, body.frame()).await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Unanswered streams end when their senders drop.
    script.streams.lock().unwrap().clear();
    let mut attempts = 0;
    for port in 1..=3 {
        let e = endpoint(&lb, port);
        let s = e.stats();
        assert_eq!(s.in_flight(), 0, "seed {seed}, {e}");
        assert!(
            !matches!(s.breaker_state(), BreakerState::HalfOpen { probing: true }),
            "seed {seed}, {e}"
        );
        if !failing {
            untouched(&e, s.requests());
        }
        attempts += s.requests();
    }
    assert!(attempts > 100, "seed {seed}: {attempts} attempts");
}

#[tokio::test(start_paused = true)]
async fn many_callers_cancelling_at_random_points() {
    for seed in [1_u64, 7, 42, 1234] {
        random_cancels(seed, true).await;
    }
}

#[tokio::test(start_paused = true)]
async fn cancels_alone_never_count_as_failures() {
    for seed in [3_u64, 11, 99, 2024] {
        random_cancels(seed, false).await;
    }
}

/// A retry the caller cancels before it is sent gives its token back to
/// the budget. The budget holds one retry (`min_per_sec` 1 over 1 s, no
/// share of requests), so a second request's retry goes only if the first
/// one's cancelled retry did not spend it.
#[tokio::test(start_paused = true)]
async fn a_cancelled_retry_that_never_sent_spends_no_budget() {
    let script = Script::default();
    let lb = budget_of_one(&script).await;

    // Control: a retry that was sent spends the one token, so the next
    // request's retry is refused (the caller gets the 503).
    script.push(1, [Act::Status(503), Act::Status(200), Act::Status(503)]);
    assert_eq!(lb.request(get()).await.unwrap().status(), 200);
    assert_eq!(lb.request(get()).await.unwrap().status(), 503);
    assert_eq!(script.seen(), [1, 1, 1]);
    // The token comes back after the budget's ttl.
    tokio::time::advance(Duration::from_secs(2)).await;

    // Cancelled during its backoff: the retry was never sent.
    script.push(1, [Act::Status(503)]);
    let mut fut = Box::pin(lb.request(get()));
    assert!(poll_once(&mut fut).is_pending());
    drop(fut);
    assert_eq!(script.seen(), [1]);
    script.push(1, [Act::Status(503), Act::Status(200)]);
    let response = lb.request(get()).await.unwrap();
    assert_eq!(script.seen(), [1, 1]);
    assert_eq!(response.status(), 200);
    drop(response);
    tokio::time::advance(Duration::from_secs(2)).await;

    // Cancelled while the retry waits for a not-ready inner service.
    script.push(1, [Act::Status(503)]);
    let mut fut = Box::pin(lb.request(get()));
    assert!(poll_once(&mut fut).is_pending());
    script.block(true);
    tokio::time::advance(Duration::from_millis(150)).await;
    assert!(poll_once(&mut fut).is_pending());
    drop(fut);
    script.block(false);
    assert_eq!(script.seen(), [1]);
    script.push(1, [Act::Status(503), Act::Status(200)]);
    assert_eq!(lb.request(get()).await.unwrap().status(), 200);
    assert_eq!(script.seen(), [1, 1]);
    untouched(&endpoint(&lb, 1), 9);
}

/// With other instances to go to (3, so one out is not panic mode), a
/// dropped probe's instance is probed again within [`PROBE_RECHECK`] (the
/// documented bound: the health view is told when a probe's result
/// arrives, not when its request is dropped, and looks again after it).
///
/// [`PROBE_RECHECK`]: tower_ribbon::stats::breaker::PROBE_RECHECK
#[tokio::test(start_paused = true)]
async fn a_dropped_probe_is_probed_again_within_the_recheck() {
    use tower_ribbon::stats::breaker::PROBE_RECHECK;
    let script = Script::default();
    let lb = builder("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", RetryPolicy::none())
        .outlier_detection(OutlierDetection::disabled())
        .build(script.clone())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let e1 = endpoint(&lb, 1);
    script.push(1, vec![Act::Refused; 3]);
    while e1.stats().failures() < 3 {
        drop(lb.request(get()).await);
    }
    assert!(matches!(
        e1.stats().breaker_state(),
        BreakerState::Open { .. }
    ));
    tokio::time::advance(Duration::from_secs(11)).await;
    script.seen();
    script.push(1, [Act::Hang]);
    // Requests until one is the probe (the one left pending).
    let mut probe = None;
    for _ in 0..3 {
        let mut fut = Box::pin(lb.request(get()));
        if poll_once(&mut fut).is_pending() {
            probe = Some(fut);
        }
    }
    assert!(probe.is_some());
    assert_eq!(script.seen().iter().filter(|p| **p == 1).count(), 1);
    drop(probe);
    assert_eq!(
        e1.stats().breaker_state(),
        BreakerState::HalfOpen { probing: false }
    );
    // Probed again within the recheck: rounds of 3 requests, 100 ms apart.
    let dropped = tokio::time::Instant::now();
    loop {
        for _ in 0..3 {
            drop(lb.request(get()).await.unwrap());
        }
        if script.seen().contains(&1) {
            break;
        }
        assert!(dropped.elapsed() < PROBE_RECHECK, "not probed again");
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    assert_eq!(e1.stats().breaker_state(), BreakerState::Closed);
    assert_eq!(e1.stats().in_flight(), 0);
}

/// The runtime shut down with requests mid-call (under a per-try timeout),
/// mid-backoff (under a budget) and with a body half-read: their futures
/// are dropped by the shutdown, without a panic, leaving nothing in flight.
#[test]
fn a_runtime_shut_down_under_requests_leaves_nothing_in_flight() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let script = Script::default();
    let policy = RetryPolicy::default()
        .max_same(1)
        .retryable_statuses([503])
        .per_try_timeout(Duration::from_secs(60))
        .backoff(Duration::from_secs(30), Duration::from_secs(30));
    let (lb, e, held) = rt.block_on(async {
        let lb = balancer(&script, "127.0.0.1:1", policy).await;
        let e = endpoint(&lb, 1);
        script.push(1, [Act::Stream, Act::Hang, Act::Status(503)]);
        let body = lb.request(get()).await;
        let hung = tokio::spawn(lb.request(get()));
        let backoff = tokio::spawn(lb.request(get()));
        tokio::task::yield_now().await;
        (lb, e, (body, hung, backoff))
    });
    let (body, hung, backoff) = held;
    assert_eq!(script.seen(), [1, 1, 1]);
    assert_eq!(e.stats().in_flight(), 2);
    drop(rt);
    drop((hung, backoff));
    // The half-read body only.
    assert_eq!(e.stats().in_flight(), 1);
    drop(body);
    drop(lb);
    assert_eq!(e.stats().in_flight(), 0);
    assert_eq!(e.stats().failures(), 0);
}

/// Drops its future after it has been polled `left` times.
struct CutAfter<F> {
    fut: Option<Pin<Box<F>>>,
    left: u32,
}

impl<F: Future> Future for CutAfter<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.left == 0 {
            self.fut = None;
            return Poll::Ready(None);
        }
        self.left -= 1;
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Ready(None);
        };
        match fut.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => {
                // Polled again soon, whatever it waits for.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

/// On two worker threads (real time, no timer involved in where a drop
/// lands): 2 000 requests each dropped after a seeded number of polls, or
/// their body after a seeded number of frames, over instances answering
/// after a seeded number of yields: nothing left in flight, no probe held.
#[test]
fn many_callers_on_threads_cancelling_after_seeded_poll_counts() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let policy = RetryPolicy::default()
            .max_same(1)
            .max_next(1)
            .retryable_statuses([503])
            .backoff(Duration::ZERO, Duration::ZERO);
        let script = Script::default();
        let lb = builder("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", policy)
            .build(script.clone())
            .unwrap();
        assert!(lb.ready_service("svc").await);
        for port in 1..=3 {
            let acts: Vec<Act> = (0..2_000)
                .map(|_| match rng.below(5) {
                    0 => Act::Refused,
                    1 => Act::Status(503),
                    2 => Act::Status(500),
                    3 => Act::Stream,
                    _ => Act::Status(200),
                })
                .collect();
            script.push(port, acts);
        }
        let mut tasks = Vec::new();
        for _ in 0..2_000 {
            let cut = CutAfter {
                fut: Some(Box::pin(lb.request(get()))),
                left: u32::try_from(rng.below(6)).unwrap(),
            };
            let frames = rng.below(2);
            let script = script.clone();
            tasks.push(tokio::spawn(async move {
                if let Some(Ok(response)) = cut.await {
                    let mut body = response.into_body();
                    if frames > 0 {
                        // A stream: one frame sent, read, then dropped.
                        if let Some(tx) = script.streams.lock().unwrap().pop() {
                            let _ = tx.send(Bytes::from_static(b"x"));
                        }
                        let _ = tokio::time::timeout(Duration::from_millis(1), body.frame()).await;
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        script.streams.lock().unwrap().clear();
        for port in 1..=3 {
            let e = endpoint(&lb, port);
            assert_eq!(e.stats().in_flight(), 0, "{e}");
            assert!(!matches!(
                e.stats().breaker_state(),
                BreakerState::HalfOpen { probing: true }
            ));
        }
    });
}

/// An instance that hangs until every caller gives up (its own timeout
/// around the balancer, shorter than any per-try timeout) records no
/// result, but its wait is a lower bound of its latency: peak EWMA P2C
/// turns away from it as tower's `PeakEwma` does, which records the
/// elapsed time of a dropped request. Before, the cancel recorded nothing,
/// so the instance kept the 10 ms it had answered in: 40 of 40 requests
/// went to it after it began to hang, every one a 100 ms timeout; now 1,
/// the first. Nothing counts as a failure: the cancel is the caller's act.
#[tokio::test(start_paused = true)]
async fn an_instance_that_hangs_until_callers_give_up_is_avoided_by_latency() {
    let script = Script::default();
    // Both answer in 10 ms for the first 20 requests, then the first
    // hangs.
    let fast = Act::After(Duration::from_millis(10), 200);
    script.push(1, std::iter::repeat_n(fast.clone(), 20));
    script.push(2, std::iter::repeat_n(fast.clone(), 60));
    let lb = builder("127.0.0.1:1,127.0.0.1:2", RetryPolicy::none())
        .rule(|| PeakEwmaP2c::with_seed(7))
        .build(script.clone())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    for _ in 0..20 {
        drop(lb.request(get()).await.unwrap());
    }
    let warm = script.seen().iter().filter(|&&p| p == 1).count() as u64;
    assert!(warm >= 1, "{warm} of 20 to the first");
    script
        .acts
        .lock()
        .unwrap()
        .insert(1, std::iter::repeat_n(Act::Hang, 40).collect());
    let mut timed_out = 0;
    for _ in 0..40 {
        match tokio::time::timeout(Duration::from_millis(100), lb.request(get())).await {
            Ok(response) => drop(response.unwrap()),
            Err(_) => timed_out += 1,
        }
    }
    let seen = script.seen();
    let hung = seen.iter().filter(|&&p| p == 1).count();
    assert_eq!((hung, timed_out), (1, 1), "{seen:?}");
    let e1 = endpoint(&lb, 1);
    untouched(&e1, warm + 1);
    let peak = e1
        .stats()
        .peak_ewma_at(tokio::time::Instant::now())
        .unwrap();
    assert!(peak >= Duration::from_millis(90), "{peak:?}");
}

/// A refund cancels its withdrawal and no more: it expires with it. The
/// budget holds 5 retries (`min_per_sec` 5 over 1 s, no share of
/// requests); 5 requests take them and are cancelled in their backoffs
/// 800 ms later (refunded, the withdrawals still counting), and 400 ms on,
/// when the withdrawals have expired with their window, the budget holds
/// its 5 again, not 10: 10 requests find 5 retries.
#[tokio::test(start_paused = true)]
async fn a_refund_expires_with_its_withdrawal() {
    let script = Script::default();
    let lb = budgeted(&script, Duration::from_secs(1), 5, Duration::from_secs(5)).await;

    // In backoff: polled once, the first attempt answered 503 and retried.
    let in_backoff = |n: usize| {
        script.push(1, vec![Act::Status(503); n]);
        let mut futs: Vec<_> = (0..n).map(|_| Box::pin(lb.request(get()))).collect();
        let retried = futs
            .iter_mut()
            .map(poll_once)
            .filter(Poll::is_pending)
            .count();
        (futs, retried)
    };
    let (cancelled, retried) = in_backoff(5);
    assert_eq!(retried, 5);
    tokio::time::advance(Duration::from_millis(800)).await;
    drop(cancelled);
    tokio::time::advance(Duration::from_millis(400)).await;
    let (later, retried) = in_backoff(10);
    assert_eq!(retried, 5, "retries the budget allows after the refunds");
    drop(later);
    assert_eq!(script.seen(), [1; 15]);
    untouched(&endpoint(&lb, 1), 15);
}

/// Callers on four threads cancel their requests at seeded random polls:
/// never polled, after the first attempt (a retry decided, its token
/// taken, in its zero backoff), or after the retry was sent. Each unsent
/// retry gives its token back once and each sent one keeps it spent: the
/// budget (300 retries over a 60 s ttl, no share of requests) then allows
/// exactly 300 minus the retries sent, for every seed.
#[test]
fn concurrent_cancels_give_back_each_unsent_token_once() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    for seed in [3_u64, 11, 99] {
        rt.block_on(async {
            let script = Script::default();
            let lb = budgeted(&script, Duration::from_secs(60), 5, Duration::ZERO).await;
            script.push(1, vec![Act::Status(503); 2_000]);
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let callers: Vec<_> = (0..400)
                .map(|_| {
                    let polls = rng.below(3);
                    let mut fut = Box::pin(lb.request(get()));
                    tokio::spawn(async move {
                        for _ in 0..polls {
                            if poll_once(&mut fut).is_ready() {
                                break;
                            }
                            tokio::task::yield_now().await;
                        }
                        polls > 0
                    })
                })
                .collect();
            let mut first_attempts = 0;
            for caller in callers {
                first_attempts += usize::from(caller.await.unwrap());
            }
            let sent = script.seen().len() - first_attempts;
            assert!(sent > 50 && sent < 250, "seed {seed}: {sent} retries sent");
            for _ in 0..400 {
                assert_eq!(lb.request(get()).await.unwrap().status(), 503);
            }
            let later = script.seen().len() - 400;
            assert_eq!(later, 300 - sent, "seed {seed}: retries allowed after");
            untouched(
                &endpoint(&lb, 1),
                (first_attempts + sent + 400 + later) as u64,
            );
        });
    }
}

/// A retry that was sent and then cancelled (its attempt hangs, the
/// caller drops the request) keeps its token spent: it reached the
/// instance. A same-instance retry under a budget of one: the next
/// request's retry is refused.
#[tokio::test(start_paused = true)]
async fn a_retry_sent_then_cancelled_keeps_its_token_spent() {
    let script = Script::default();
    let lb = budget_of_one(&script).await;
    script.push(1, [Act::Status(503), Act::Hang]);
    let mut fut = Box::pin(lb.request(get()));
    assert!(poll_once(&mut fut).is_pending());
    tokio::time::advance(Duration::from_millis(150)).await;
    assert!(poll_once(&mut fut).is_pending());
    assert_eq!(script.seen(), [1, 1], "the retry was sent");
    drop(fut);
    script.push(1, [Act::Status(503), Act::Status(200)]);
    assert_eq!(lb.request(get()).await.unwrap().status(), 503);
    assert_eq!(script.seen(), [1], "the next request's retry refused");
    untouched(&endpoint(&lb, 1), 3);
}

/// [`budgeted`] with a budget of one retry (1 a second over 1 s) and a
/// 100 ms backoff.
async fn budget_of_one(script: &Script) -> LoadBalancer<Script> {
    budgeted(
        script,
        Duration::from_secs(1),
        1,
        Duration::from_millis(100),
    )
    .await
}

/// A balancer on one instance (port 1) of `script` whose policy retries a
/// 503 once on the same instance after `backoff`, under a retry budget of
/// `min_per_sec` retries per second over `ttl` and no share of requests.
async fn budgeted(
    script: &Script,
    ttl: Duration,
    min_per_sec: u32,
    backoff: Duration,
) -> LoadBalancer<Script> {
    let budget = RetryBudgetConfig::default()
        .ttl(ttl)
        .min_per_sec(min_per_sec)
        .ratio(0.0);
    let policy = RetryPolicy::default()
        .max_same(1)
        .max_next(0)
        .retryable_statuses([503])
        .budget(budget)
        .backoff(backoff, backoff);
    balancer(script, "127.0.0.1:1", policy).await
}
