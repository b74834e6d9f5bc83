//! Every attempt path raises and lowers `in_flight` exactly once, the
//! half-open probe is released once, and a success that moves the breaker
//! tells the health view on every path (written as the adversarial review
//! of the per-request reference-count cuts).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;
use tower::Service;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::service::FailureStatuses;
use tower_ribbon::stats::BreakerState;
use tower_ribbon::{BoxError, Endpoint, LoadBalancer};

#[derive(Clone)]
enum Act {
    Status(u16),
    Refused,
    Hang,
    PanicInCall,
    PanicInFuture,
    Gate(Arc<Notify>, u16),
}

/// An inner service answering each port from its own script (200 once a
/// script is empty) and logging the ports it was called on.
#[derive(Clone, Default)]
struct Script {
    acts: Arc<Mutex<HashMap<u16, VecDeque<Act>>>>,
    seen: Arc<Mutex<Vec<u16>>>,
}

impl Script {
    fn push(&self, port: u16, acts: impl IntoIterator<Item = Act>) {
        self.acts
            .lock()
            .unwrap()
            .entry(port)
            .or_default()
            .extend(acts);
    }

    fn seen(&self) -> Vec<u16> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

type Fut = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send>>;

fn status(code: u16) -> Result<Response<Full<Bytes>>, BoxError> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"body")));
    *response.status_mut() = StatusCode::from_u16(code).unwrap();
    Ok(response)
}

impl Service<Request<Full<Bytes>>> for Script {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Fut {
        let port = req.uri().port_u16().unwrap();
        self.seen.lock().unwrap().push(port);
        let act = self
            .acts
            .lock()
            .unwrap()
            .get_mut(&port)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Act::Status(200));
        match act {
            Act::Status(code) => Box::pin(async move { status(code) }),
            Act::Refused => Box::pin(async {
                Err(
                    Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
                        as BoxError,
                )
            }),
            Act::Hang => Box::pin(std::future::pending()),
            Act::PanicInCall => panic!("inner call panicked"),
            Act::PanicInFuture => Box::pin(async { panic!("inner future panicked") }),
            Act::Gate(gate, code) => Box::pin(async move {
                gate.notified().await;
                status(code)
            }),
        }
    }
}

async fn balancer(script: &Script, list: &str, retry: RetryPolicy) -> LoadBalancer<Script> {
    let source = StaticSource::new().with_list("svc", list).unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .rule(|| RoundRobin::with_start(0))
        .retry(retry)
        .read_timeout(None)
        .failure_statuses(FailureStatuses::only([500]))
        .outlier_detection(OutlierDetection::disabled())
        .build(script.clone())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    lb
}

fn endpoint(lb: &LoadBalancer<Script>, port: u16) -> Endpoint {
    endpoint_in(lb, "svc", port)
}

/// The endpoint on `port` of `service`'s current list.
fn endpoint_in(lb: &LoadBalancer<Script>, service: &str, port: u16) -> Endpoint {
    lb.snapshot(service)
        .unwrap()
        .endpoints()
        .iter()
        .find(|e| e.instance().port() == port)
        .unwrap()
        .clone()
}

/// One instance, port 1, answering `acts` first (then 200s): its script,
/// balancer and endpoint.
async fn one_instance(
    acts: impl IntoIterator<Item = Act>,
    retry: RetryPolicy,
) -> (Script, LoadBalancer<Script>, Endpoint) {
    let script = Script::default();
    script.push(1, acts);
    let lb = balancer(&script, "127.0.0.1:1", retry).await;
    let e = endpoint(&lb, 1);
    (script, lb, e)
}

/// A builder discovering services on demand (idle after 60 s), `late`
/// listed at `list`, no retries, no read timeout.
fn on_demand(list: &str) -> tower_ribbon::Builder {
    let source = StaticSource::new().with_list("late", list).unwrap();
    LoadBalancer::builder()
        .source(source)
        .discover_on_demand(true)
        .on_demand_idle(Duration::from_secs(60))
        .retry(RetryPolicy::none())
        .read_timeout(None)
}

/// A refresh every second, without jitter.
fn every_second() -> tower_ribbon::discovery::RefreshConfig {
    let mut refresh = tower_ribbon::discovery::RefreshConfig::default();
    refresh.interval = Duration::from_secs(1);
    refresh.jitter = 0.0;
    refresh
}

/// A GET to the on-demand service `late`.
fn late() -> Request<Full<Bytes>> {
    Request::get("http://late/x")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://svc/x")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// 503 counts as a success (failure statuses: only 500) but is retried
/// once on the same instance.
fn retry_503_same() -> RetryPolicy {
    RetryPolicy::default()
        .max_same(1)
        .max_next(0)
        .retryable_statuses([503])
}

#[tokio::test(start_paused = true)]
async fn a_body_read_to_its_end_ends_the_attempt_once() {
    let (_, lb, e) = one_instance([], RetryPolicy::none()).await;
    let response = lb.request(get()).await.unwrap();
    assert_eq!(e.stats().in_flight(), 1);
    let mut body = response.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"body"));
    // Ended with its last frame, the body still held.
    assert_eq!(e.stats().in_flight(), 0);
    drop(body);
    assert_eq!(e.stats().in_flight(), 0);
    assert_eq!(e.stats().requests(), 1);
    assert_eq!(e.stats().failures(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_early_ends_the_attempt_once() {
    let (_, lb, e) = one_instance([], RetryPolicy::none()).await;
    let response = lb.request(get()).await.unwrap();
    assert_eq!(e.stats().in_flight(), 1);
    drop(response);
    assert_eq!(e.stats().in_flight(), 0);
    assert_eq!(e.stats().requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failure_ends_the_attempt_once() {
    let (_, lb, e) = one_instance([Act::Refused], RetryPolicy::none()).await;
    let err = lb.request(get()).await.unwrap_err();
    assert!(!err.is_no_instances());
    assert_eq!(e.stats().in_flight(), 0);
    assert_eq!(e.stats().requests(), 1);
    assert_eq!(e.stats().failures(), 1);
    assert_eq!(e.stats().successive_connection_failures(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_future_dropped_mid_call_ends_the_attempt_once() {
    let (_, lb, e) = one_instance([Act::Hang], RetryPolicy::none()).await;
    let cut = tokio::time::timeout(Duration::from_millis(100), lb.request(get())).await;
    assert!(cut.is_err());
    assert_eq!(e.stats().in_flight(), 0);
    assert_eq!(e.stats().requests(), 1);
    assert_eq!(e.stats().failures(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_retried_success_status_ends_its_attempt_before_the_retry() {
    let (script, lb, e) =
        one_instance([Act::Status(503), Act::Status(200)], retry_503_same()).await;
    let response = lb.request(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(script.seen(), [1, 1]);
    // The 503 attempt ended; only the answered one is in flight.
    assert_eq!(e.stats().in_flight(), 1);
    assert_eq!(e.stats().requests(), 2);
    drop(response);
    assert_eq!(e.stats().in_flight(), 0);
    assert_eq!(e.stats().failures(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_retried_success_then_a_failure_leaves_nothing_in_flight() {
    let (_, lb, e) = one_instance([Act::Status(503), Act::Refused], retry_503_same()).await;
    assert!(lb.request(get()).await.is_err());
    assert_eq!(e.stats().in_flight(), 0);
    assert_eq!(e.stats().requests(), 2);
    assert_eq!(e.stats().failures(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_inner_call_or_future_ends_the_attempt_once() {
    for act in [Act::PanicInCall, Act::PanicInFuture] {
        let (_, lb, e) = one_instance([act], RetryPolicy::none()).await;
        let joined = tokio::spawn(lb.request(get())).await;
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(e.stats().in_flight(), 0);
        assert_eq!(e.stats().requests(), 1);
    }
}

/// Three refused attempts trip port 1 (default threshold 3, blackout 10 s).
async fn trip(lb: &LoadBalancer<Script>, script: &Script, e: &Endpoint) {
    script.push(1, [Act::Refused, Act::Refused, Act::Refused]);
    for _ in 0..3 {
        assert!(lb.request(get()).await.is_err());
    }
    assert!(matches!(
        e.stats().breaker_state(),
        BreakerState::Open { .. }
    ));
    assert_eq!(e.stats().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_half_open_probe_is_released_once_on_every_path() {
    let (script, lb, e) = one_instance([], RetryPolicy::none()).await;
    trip(&lb, &script, &e).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(
        e.stats().breaker_state(),
        BreakerState::HalfOpen { probing: false }
    );

    // A probe cancelled mid-call frees the probe.
    script.push(1, [Act::Hang]);
    let cut = tokio::time::timeout(Duration::from_millis(10), lb.request(get())).await;
    assert!(cut.is_err());
    assert_eq!(
        e.stats().breaker_state(),
        BreakerState::HalfOpen { probing: false }
    );
    assert_eq!(e.stats().in_flight(), 0);

    // A successful probe closes the breaker at its headers (any response
    // does, as Ribbon), and stays in flight while its body is held.
    let response = lb.request(get()).await.unwrap();
    assert_eq!(e.stats().breaker_state(), BreakerState::Closed);
    assert_eq!(e.stats().in_flight(), 1);
    drop(response);
    assert_eq!(e.stats().breaker_state(), BreakerState::Closed);
    assert_eq!(e.stats().in_flight(), 0);
    assert_eq!(lb.in_panic("svc"), Some(false));
    // The probe was freed: after the next trip a new probe can go.
    trip(&lb, &script, &e).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(
        e.stats().breaker_state(),
        BreakerState::HalfOpen { probing: false }
    );
}

/// Trips `e`'s breaker under a policy that retries once on the same
/// instance: two requests make four refused attempts.
async fn trip_retried(lb: &LoadBalancer<Script>, script: &Script, e: &Endpoint) {
    script.push(1, [Act::Refused, Act::Refused, Act::Refused, Act::Refused]);
    for _ in 0..2 {
        assert!(lb.request(get()).await.is_err());
    }
    assert!(matches!(
        e.stats().breaker_state(),
        BreakerState::Open { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_retried_success_probe_closes_the_breaker_and_frees_the_probe() {
    let (script, lb, e) = one_instance([], retry_503_same()).await;
    // Refused attempts are retried once on the same instance: two requests
    // make four failures, the third trips.
    trip_retried(&lb, &script, &e).await;
    tokio::time::advance(Duration::from_secs(21)).await;
    script.seen();
    script.push(1, [Act::Status(503), Act::Status(200)]);
    let response = lb.request(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(script.seen(), [1, 1]);
    assert_eq!(e.stats().breaker_state(), BreakerState::Closed);
    assert_eq!(e.stats().in_flight(), 1);
    drop(response);
    assert_eq!(e.stats().in_flight(), 0);
    assert_eq!(e.stats().successive_connection_failures(), 0);
    // The retried probe was freed: after the next trip a new probe can go.
    trip_retried(&lb, &script, &e).await;
    tokio::time::advance(Duration::from_secs(21)).await;
    assert_eq!(
        e.stats().breaker_state(),
        BreakerState::HalfOpen { probing: false }
    );
}

/// Both instances tripped: fewer than half healthy, so the service is in
/// panic (health ignored). An attempt to port 1 started before the trips
/// answers during the blackout: the success closes port 1's breaker
/// (Recovered), and the health view must recount at once: one of two
/// healthy is no panic, so picks skip port 2 (still open). `retried`: the
/// answer is a 503 counted as success and retried on port 1 (the
/// `into_endpoint` path); otherwise a 200 handed to the caller (`track`).
async fn recovery_reaches_the_health_view(retried: bool) {
    let script = Script::default();
    let policy = if retried {
        retry_503_same()
    } else {
        RetryPolicy::none()
    };
    let lb = balancer(&script, "127.0.0.1:1,127.0.0.1:2", policy).await;
    let (e1, e2) = (endpoint(&lb, 1), endpoint(&lb, 2));
    let gate = Arc::new(Notify::new());
    script.push(
        1,
        [Act::Gate(
            Arc::clone(&gate),
            if retried { 503 } else { 200 },
        )],
    );
    let slow = tokio::spawn(lb.request(get()));
    tokio::task::yield_now().await;
    assert_eq!(script.seen(), [1]);
    assert_eq!(e1.stats().in_flight(), 1);

    let open = |e: &Endpoint| matches!(e.stats().breaker_state(), BreakerState::Open { .. });
    script.push(1, std::iter::repeat_n(Act::Refused, 8));
    script.push(2, std::iter::repeat_n(Act::Refused, 8));
    while !(open(&e1) && open(&e2)) {
        assert!(lb.request(get()).await.is_err());
    }
    script.acts.lock().unwrap().clear();
    // One more pick recounts (in panic); its attempt is cancelled, so it
    // records nothing that would invalidate the view again.
    script.push(1, [Act::Hang]);
    script.push(2, [Act::Hang]);
    let cut = tokio::time::timeout(Duration::from_millis(1), lb.request(get())).await;
    assert!(cut.is_err());
    assert_eq!(lb.in_panic("svc"), Some(true));
    script.acts.lock().unwrap().clear();
    script.seen();

    // The slow attempt answers: port 1 Recovered.
    gate.notify_one();
    let response = slow.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    assert_eq!(e1.stats().breaker_state(), BreakerState::Closed);
    assert!(open(&e2));
    assert_eq!(e1.stats().in_flight(), 0);
    script.seen();
    for _ in 0..2 {
        drop(lb.request(get()).await.unwrap());
    }
    assert_eq!(lb.in_panic("svc"), Some(false), "stale health view");
    assert_eq!(script.seen(), [1, 1], "a tripped instance got traffic");
    assert!(open(&e2));
}

#[tokio::test(start_paused = true)]
async fn a_recovery_by_a_returned_response_reaches_the_health_view() {
    recovery_reaches_the_health_view(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_recovery_by_a_retried_success_reaches_the_health_view() {
    recovery_reaches_the_health_view(true).await;
}

/// `lb.request` on a cold balancer dropped right after the call: the
/// request keeps the balancer until the first list arrives.
#[tokio::test(start_paused = true)]
async fn a_request_on_a_cold_dropped_balancer_completes() {
    let script = Script::default();
    let source = StaticSource::new().with_list("svc", "127.0.0.1:1").unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .read_timeout(None)
        .build(script.clone())
        .unwrap();
    let future = lb.request(get());
    drop(lb);
    let response = future.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(script.seen(), [1]);
}

/// The balancer dropped while a request waits out a backoff between a
/// retried success and its retry: the retry still runs, and nothing stays
/// in flight.
#[tokio::test(start_paused = true)]
async fn a_balancer_dropped_mid_retry_leaves_nothing_in_flight() {
    let script = Script::default();
    let policy = retry_503_same().backoff(Duration::from_secs(1), Duration::from_secs(1));
    let lb = balancer(&script, "127.0.0.1:1", policy).await;
    let e = endpoint(&lb, 1);
    script.push(1, [Act::Status(503), Act::Status(200)]);
    let call = tokio::spawn(lb.request(get()));
    tokio::task::yield_now().await;
    assert_eq!(script.seen(), [1]);
    assert_eq!(e.stats().in_flight(), 0);
    drop(lb);
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(script.seen(), [1]);
    assert_eq!(e.stats().in_flight(), 1);
    drop(response);
    assert_eq!(e.stats().in_flight(), 0);
    assert_eq!(e.stats().requests(), 2);
}

/// An on-demand service idle (no request started) for `on_demand_idle`
/// while its request is in flight is kept until the request ends: its
/// attempt ends once on the instance, then the next sweep evicts it, and
/// the next request starts a new service. (It was evicted mid-request.)
#[tokio::test(start_paused = true)]
async fn an_on_demand_service_is_evicted_only_once_its_request_ends() {
    let script = Script::default();
    let lb = on_demand("127.0.0.1:2").build(script.clone()).unwrap();
    drop(lb.request(late()).await.unwrap());
    let old = lb.snapshot("late").unwrap().endpoints()[0].clone();
    assert_eq!(old.stats().requests(), 1);
    let gate = Arc::new(Notify::new());
    script.push(2, [Act::Gate(Arc::clone(&gate), 200)]);
    let slow = tokio::spawn(lb.request(late()));
    tokio::task::yield_now().await;
    assert_eq!(old.stats().in_flight(), 1);
    // Idle 60 s plus one 30 s sweep: kept while the call runs.
    tokio::time::sleep(Duration::from_secs(91)).await;
    assert_eq!(lb.services(), ["late"]);
    gate.notify_one();
    let response = slow.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(old.stats().in_flight(), 1);
    drop(response);
    assert_eq!(old.stats().in_flight(), 0);
    assert_eq!(old.stats().requests(), 2);
    // Ended: the next sweep evicts it.
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(lb.services().is_empty());
    // The next request discovers the service again, with fresh stats.
    drop(lb.request(late()).await.unwrap());
    assert_eq!(lb.services(), ["late"]);
    let new = lb.snapshot("late").unwrap().endpoints()[0].clone();
    assert_eq!(new.stats().requests(), 1);
    assert_eq!(new.stats().in_flight(), 0);
    assert_eq!(old.stats().requests(), 2);
    assert_eq!(script.seen(), [2, 2, 2]);
}

/// The conditional resets keep the stale rule: a success older than the
/// latest failure neither resets the count nor closes the breaker; an
/// in-order one does both, once (a second success reports no transition).
#[tokio::test(start_paused = true)]
async fn stale_successes_still_reset_nothing_and_fresh_ones_reset_once() {
    use tower_ribbon::stats::{BreakerTransition, EndpointStats, Outcome};
    let stats = EndpointStats::new();
    let t0 = tokio::time::Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    // A success started at 0 and recorded at 50: before the failures.
    let early = stats.start_at(at(0));
    for ms in [100, 101] {
        stats
            .start_at(at(ms))
            .finish_at(Outcome::ConnectFailure, at(ms));
    }
    assert_eq!(
        early.finish_at(Outcome::Success, at(50)),
        BreakerTransition::None
    );
    assert_eq!(stats.successive_connection_failures(), 2);
    let third = stats
        .start_at(at(102))
        .finish_at(Outcome::ConnectFailure, at(102));
    assert_eq!(third, BreakerTransition::Tripped);
    // Stale (recorded at 90, before the trip at 102): the breaker stays open.
    let stale = stats.start_at(at(0)).finish_at(Outcome::Success, at(90));
    assert_eq!(stale, BreakerTransition::None);
    assert_eq!(stats.successive_connection_failures(), 3);
    assert!(matches!(
        stats.breaker_state_at(at(200)),
        BreakerState::Open { .. }
    ));
    // In order: closes once.
    let fresh = stats.start_at(at(0)).finish_at(Outcome::Success, at(200));
    assert_eq!(fresh, BreakerTransition::Recovered);
    assert_eq!(stats.successive_connection_failures(), 0);
    assert_eq!(stats.breaker_state_at(at(200)), BreakerState::Closed);
    let again = stats.start_at(at(0)).finish_at(Outcome::Success, at(201));
    assert_eq!(again, BreakerTransition::None);
    assert_eq!(stats.in_flight(), 0);
    assert_eq!(stats.requests(), 7);
}

// ---------------------------------------------------------------------------
// Retry targets: a retry never goes to an instance that left the list, was
// ejected, or tripped its breaker since the last attempt (found by an
// attack: same-instance retries followed a removed instance 3 times and an
// ejected one 10 times in one request; a next-instance retry with nothing
// left to pick went back to the instance that had left).

/// A balancer over `source`, refreshed every 10 ms, with `outliers`.
async fn balancer_over(
    script: &Script,
    source: &StaticSource,
    retry: RetryPolicy,
    outliers: OutlierDetection,
) -> LoadBalancer<Script> {
    let mut refresh = tower_ribbon::discovery::RefreshConfig::default();
    refresh.interval = Duration::from_millis(10);
    refresh.jitter = 0.0;
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .service("svc")
        .rule(|| RoundRobin::with_start(0))
        .retry(
            retry
                .backoff(Duration::ZERO, Duration::ZERO)
                .retryable_statuses([500]),
        )
        .refresh(refresh)
        .read_timeout(None)
        .failure_statuses(FailureStatuses::only([500]))
        .outlier_detection(outliers)
        .build(script.clone())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    lb
}

/// Sends one GET in a task; returns its handle once the script has seen
/// its first attempt.
async fn sent_once(
    lb: &LoadBalancer<Script>,
    script: &Script,
) -> tokio::task::JoinHandle<
    Result<Response<tower_ribbon::service::TrackedBody<Full<Bytes>>>, tower_ribbon::Error>,
> {
    let call = tokio::spawn(tower::ServiceExt::oneshot(lb.clone(), get()));
    while script.seen.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    call
}

/// Waits (real time, at most 5 s) until the balancer lists `n` instances.
async fn until_listed(lb: &LoadBalancer<Script>, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while lb.snapshot("svc").unwrap().len() != n {
        assert!(
            std::time::Instant::now() < deadline,
            "the list never had {n} instances"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_same_instance_retry_leaves_an_instance_removed_meanwhile() {
    let script = Script::default();
    let gate = Arc::new(Notify::new());
    script.push(1, [Act::Gate(Arc::clone(&gate), 500)]);
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1,127.0.0.1:2")
        .unwrap();
    let retry = RetryPolicy::default().max_same(3).max_next(0);
    let lb = balancer_over(&script, &source, retry, OutlierDetection::disabled()).await;
    let call = sent_once(&lb, &script).await;
    // Port 1 leaves the list while its attempt is on the wire.
    source.set_list("svc", "127.0.0.1:2").unwrap();
    until_listed(&lb, 1).await;
    gate.notify_one();
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        script.seen(),
        [1, 2],
        "the retry went to the instance still listed"
    );
}

#[tokio::test]
async fn a_same_instance_retry_leaves_an_ejected_instance() {
    let script = Script::default();
    script.push(1, std::iter::repeat_n(Act::Status(500), 10));
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1,127.0.0.1:2")
        .unwrap();
    let retry = RetryPolicy::default().max_same(9).max_next(0);
    let lb = balancer_over(&script, &source, retry, OutlierDetection::default()).await;
    let response = tower::ServiceExt::oneshot(lb.clone(), get()).await.unwrap();
    assert_eq!(response.status(), 200);
    // Ejected at its 5th consecutive 500 (Envoy's consecutive_5xx): the
    // 6th attempt goes to port 2.
    assert_eq!(script.seen(), [1, 1, 1, 1, 1, 2]);
    assert!(
        endpoint(&lb, 1)
            .stats()
            .is_ejected_at(tokio::time::Instant::now())
    );
}

#[tokio::test]
async fn a_same_instance_retry_leaves_an_instance_whose_breaker_tripped() {
    let script = Script::default();
    script.push(1, [Act::Refused, Act::Refused, Act::Refused, Act::Refused]);
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1,127.0.0.1:2")
        .unwrap();
    let retry = RetryPolicy::default().max_same(5).max_next(0);
    let lb = balancer_over(&script, &source, retry, OutlierDetection::disabled()).await;
    let response = tower::ServiceExt::oneshot(lb.clone(), get()).await.unwrap();
    assert_eq!(response.status(), 200);
    // Ribbon's breaker trips at the 3rd connection failure in a row.
    assert_eq!(script.seen(), [1, 1, 1, 2]);
}

#[tokio::test]
async fn a_next_instance_retry_never_goes_to_an_instance_that_left() {
    let script = Script::default();
    let gate = Arc::new(Notify::new());
    script.push(1, [Act::Gate(Arc::clone(&gate), 500)]);
    let source = StaticSource::new().with_list("svc", "127.0.0.1:1").unwrap();
    let retry = RetryPolicy::default().max_same(0).max_next(1);
    let lb = balancer_over(&script, &source, retry, OutlierDetection::disabled()).await;
    let call = sent_once(&lb, &script).await;
    source.set_list("svc", "").unwrap();
    until_listed(&lb, 0).await;
    gate.notify_one();
    let err = call.await.unwrap().unwrap_err();
    assert!(err.is_no_instances(), "{err}");
    assert_eq!(script.seen(), [1], "nothing went to the instance that left");
}

/// A next-instance retry goes only where a first attempt could go: when
/// the rule and the health view refuse every instance (a panic threshold
/// of 0, Envoy's "never send to unhealthy hosts"), it fails as a first
/// attempt would, with "no instances", instead of falling back to the
/// last instance, unhealthy as it is. One instance failing every request,
/// nine next-instance retries: ejected at its 5th 500 in a row (Envoy's
/// `consecutive_5xx`), or its breaker tripped at the 3rd refused connect
/// (Ribbon's threshold). Before, every retry went back to it: 10 attempts
/// of 10 in both cases, the last 5 and 7 to an instance a fresh request
/// could not reach; now 5 and 3.
#[tokio::test]
async fn a_next_instance_retry_never_falls_back_to_an_unhealthy_instance() {
    for (act, healthy_attempts) in [(Act::Status(500), 5), (Act::Refused, 3)] {
        let script = Script::default();
        script.push(1, std::iter::repeat_n(act, 10));
        let source = StaticSource::new().with_list("svc", "127.0.0.1:1").unwrap();
        let mut outliers = OutlierDetection::default();
        outliers.panic_threshold_percent = 0;
        let retry = RetryPolicy::default().max_same(0).max_next(9);
        let lb = balancer_over(&script, &source, retry, outliers).await;
        let err = tower::ServiceExt::oneshot(lb.clone(), get())
            .await
            .unwrap_err();
        assert_eq!(script.seen(), vec![1; healthy_attempts], "{err}");
        assert!(err.is_no_instances(), "{err}");
        assert_eq!(err.attempts().len(), healthy_attempts, "{err}");
        // A fresh request cannot reach the instance either.
        let fresh = tower::ServiceExt::oneshot(lb.clone(), get())
            .await
            .unwrap_err();
        assert!(fresh.is_no_instances(), "{fresh}");
        assert!(script.seen().is_empty());
    }
}

/// A same-instance retry whose instance became unusable (its breaker
/// tripped by that attempt) is picked elsewhere, and that pick avoids every
/// instance the request already tried, not only the unusable one. Over 3
/// instances: 503 twice on the first (a same-instance retry), refused on
/// the second (threshold 1 trips it), so the fourth attempt, away from the
/// second, has one untried instance left. It went back to the first one
/// in 17 of 40 seeded runs.
#[tokio::test(start_paused = true)]
async fn a_same_instance_retry_moved_elsewhere_avoids_every_tried_instance() {
    let mut back_to_first = 0;
    for seed in 0..40u64 {
        let calls = Arc::new(Mutex::new(Vec::<u16>::new()));
        let log = Arc::clone(&calls);
        let inner = tower::service_fn(move |req: Request<Full<Bytes>>| {
            let mut log = log.lock().unwrap();
            log.push(req.uri().port_u16().unwrap());
            let result = match log.len() {
                1 | 2 => status(503),
                3 => Err(
                    Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
                        as BoxError,
                ),
                _ => status(200),
            };
            std::future::ready(result)
        });
        let mut stats = tower_ribbon::stats::StatsConfig::default();
        stats.breaker_threshold = 1;
        let source = StaticSource::new()
            .with_list("svc", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
            .unwrap();
        let retry = RetryPolicy::default()
            .max_same(1)
            .max_next(2)
            .retryable_statuses([503]);
        let lb = LoadBalancer::builder()
            .source(source)
            .service("svc")
            .rule(move || tower_ribbon::rule::Random::with_seed(seed))
            .retry(retry)
            .read_timeout(None)
            .stats(stats)
            .failure_statuses(FailureStatuses::only([500]))
            .outlier_detection(OutlierDetection::disabled())
            .build(inner)
            .unwrap();
        assert!(lb.ready_service("svc").await);
        let response = tower::ServiceExt::oneshot(lb, get()).await.unwrap();
        assert_eq!(response.status(), 200);
        let seen = calls.lock().unwrap().clone();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(seen[1], seen[0], "{seen:?}");
        assert_ne!(seen[2], seen[0], "{seen:?}");
        back_to_first += usize::from(seen[3] == seen[0]);
        assert_ne!(seen[3], seen[2], "{seen:?}");
    }
    assert_eq!(back_to_first, 0, "of 40 runs");
}

/// An on-demand service whose only traffic is a long stream (its response
/// held open past `on_demand_idle`) is not idle: it is not evicted, so the
/// stream stays in flight on its instance for the requests that follow.
/// Before, the sweeper evicted it (idle counted from the last request's
/// start), the next request discovered it again with fresh stats, and
/// best available saw the streaming instance as empty: 10 of the next 20
/// requests went to it (0 now, all to the other instance).
#[tokio::test(start_paused = true)]
async fn an_on_demand_service_with_a_stream_open_is_not_idle() {
    let script = Script::default();
    let lb = on_demand("127.0.0.1:2,127.0.0.1:3")
        .rule(tower_ribbon::rule::BestAvailable::new)
        .build(script.clone())
        .unwrap();
    // A stream: its response held, its body not read to the end.
    let stream = lb.request(late()).await.unwrap();
    let port = script.seen()[0];
    let open = endpoint_in(&lb, "late", port);
    assert_eq!(open.stats().in_flight(), 1);
    // Idle 60 s plus the 30 s sweeps, with the stream still open.
    tokio::time::sleep(Duration::from_secs(91)).await;
    assert_eq!(lb.services(), ["late"]);
    for _ in 0..20 {
        drop(lb.request(late()).await.unwrap());
    }
    let seen = script.seen();
    let to_open = seen.iter().filter(|&&p| p == port).count();
    assert_eq!((to_open, seen.len()), (0, 20), "{seen:?}");
    let now = endpoint_in(&lb, "late", port);
    assert_eq!(now.stats().in_flight(), 1);
    drop(stream);
    assert_eq!(now.stats().in_flight(), 0);
}

/// An instance that leaves the list while a stream on it is open, and
/// comes back before it ends, gets its stats back: the stream stays in
/// flight on it for the rules. Before, it came back with fresh stats, and
/// best available sent 10 of the next 20 requests to the instance with
/// the open stream (0 now).
#[tokio::test(start_paused = true)]
async fn an_instance_back_in_the_list_keeps_its_open_streams_in_flight() {
    let script = Script::default();
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:2,127.0.0.1:3")
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .service("svc")
        .refresh(every_second())
        .rule(tower_ribbon::rule::BestAvailable::new)
        .retry(RetryPolicy::none())
        .read_timeout(None)
        .build(script.clone())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    // A stream on port 2: its response held, its body not read.
    let stream = loop {
        let response = lb.request(get()).await.unwrap();
        if script.seen() == [2] {
            break response;
        }
    };
    assert_eq!(endpoint(&lb, 2).stats().in_flight(), 1);
    // Port 2 leaves the list for one refresh, then comes back.
    source.set_list("svc", "127.0.0.1:3").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lb.snapshot("svc").unwrap().len(), 1);
    source.set_list("svc", "127.0.0.1:2,127.0.0.1:3").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lb.snapshot("svc").unwrap().len(), 2);
    assert_eq!(endpoint(&lb, 2).stats().in_flight(), 1);
    for _ in 0..20 {
        drop(lb.request(get()).await.unwrap());
    }
    let seen = script.seen();
    let to_open = seen.iter().filter(|&&p| p == 2).count();
    assert_eq!((to_open, seen.len()), (0, 20), "{seen:?}");
    drop(stream);
    assert_eq!(endpoint(&lb, 2).stats().in_flight(), 0);
}

/// An on-demand service whose only open stream is on an instance that left
/// its list is still in use: that instance may come back with its stats.
/// Before, the sweeper counted only the listed instances' requests, evicted
/// the service, the next request discovered it again with fresh stats, and
/// best available sent 10 of 20 requests to the instance with the open
/// stream once it was listed again (0 now).
#[tokio::test(start_paused = true)]
async fn an_on_demand_service_with_a_stream_on_a_departed_instance_is_not_idle() {
    let script = Script::default();
    let source = StaticSource::new()
        .with_list("late", "127.0.0.1:2,127.0.0.1:3")
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .discover_on_demand(true)
        .on_demand_idle(Duration::from_secs(60))
        .refresh(every_second())
        .rule(tower_ribbon::rule::BestAvailable::new)
        .retry(RetryPolicy::none())
        .read_timeout(None)
        .build(script.clone())
        .unwrap();
    // A stream on port 2: its response held, its body not read.
    let stream = loop {
        let response = lb.request(late()).await.unwrap();
        if script.seen() == [2] {
            break response;
        }
    };
    // Port 2 leaves the list; idle 60 s plus the 30 s sweeps.
    source.set_list("late", "127.0.0.1:3").unwrap();
    tokio::time::sleep(Duration::from_secs(91)).await;
    assert_eq!(lb.services(), ["late"]);
    assert_eq!(lb.snapshot("late").unwrap().len(), 1);
    // Port 2 is back, its stream still open.
    source.set_list("late", "127.0.0.1:2,127.0.0.1:3").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lb.snapshot("late").unwrap().len(), 2);
    for _ in 0..20 {
        drop(lb.request(late()).await.unwrap());
    }
    let seen = script.seen();
    let to_open = seen.iter().filter(|&&p| p == 2).count();
    assert_eq!((to_open, seen.len()), (0, 20), "{seen:?}");
    assert_eq!(endpoint_in(&lb, "late", 2).stats().in_flight(), 1);
    drop(stream);
    assert_eq!(endpoint_in(&lb, "late", 2).stats().in_flight(), 0);
}
