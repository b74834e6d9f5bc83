//! Retries, outlier ejection and the panic threshold against real backends
//! on 127.0.0.1: chaos runs with killed and hanging backends, retries that
//! never repeat an instance, the retry budget, `Retry-After`, how each kind
//! of failure is classified, and streaming bodies.
//!
//! Figures are printed; run with `--nocapture` to see them. The two chaos
//! tests take 10 s each and run alone (the others wait for them), so the
//! timing checks of the others are not disturbed by 400 busy callers.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::backend::{Backend, Behavior, Blackhole, REQUEST_ID};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::instance::Endpoint;
use tower_ribbon::retry::{ReplayBody, RetryBudgetConfig, RetryPolicy};
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::stats::{BreakerState, Outcome};
use tower_ribbon::{BoxError, Error, LoadBalancer};

/// The chaos tests take it for writing, every other test for reading.
static HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

type HttpClient<B = Full<Bytes>> = Client<HttpConnector, B>;

fn http_client<B>(connect_timeout: Option<Duration>) -> HttpClient<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(connect_timeout);
    Client::builder(TokioExecutor::new()).build(connector)
}

// ---------------------------------------------------------------------------
// An inner service that logs every attempt the balancer makes.

/// What the inner client saw for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// A response with this status.
    Status(u16),
    /// The connection was refused.
    Refused,
    /// Another connect error (a connect timeout, ...).
    ConnectError,
    /// Any other error: the request may have reached the server.
    Error,
    /// Still running when the balancer dropped it (per-try timeout or
    /// deadline).
    CutOff,
}

/// One attempt as the inner client saw it.
#[derive(Debug, Clone)]
struct Logged {
    id: Option<String>,
    port: u16,
    started: Instant,
    seen: Seen,
}

#[derive(Clone, Default)]
struct AttemptLog(Arc<Mutex<Vec<Logged>>>);

impl AttemptLog {
    fn start(&self, id: Option<String>, port: u16) -> usize {
        let mut log = self.0.lock().unwrap();
        log.push(Logged {
            id,
            port,
            started: Instant::now(),
            seen: Seen::CutOff,
        });
        log.len() - 1
    }

    fn finish(&self, i: usize, seen: Seen) {
        self.0.lock().unwrap()[i].seen = seen;
    }

    /// The attempts of each request id, in order.
    fn by_id(&self) -> HashMap<String, Vec<Logged>> {
        let mut map: HashMap<String, Vec<Logged>> = HashMap::new();
        for a in self.0.lock().unwrap().iter() {
            if let Some(id) = &a.id {
                map.entry(id.clone()).or_default().push(a.clone());
            }
        }
        map
    }
}

fn seen_error(e: &hyper_util::client::legacy::Error) -> Seen {
    if !e.is_connect() {
        return Seen::Error;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return Seen::Refused;
            }
        }
        source = s.source();
    }
    Seen::ConnectError
}

/// The hyper-util client, logging each attempt (request id, port, result).
/// Errors pass through unchanged, so the balancer classifies them as it
/// would the bare client's.
struct Recorder<B> {
    client: HttpClient<B>,
    log: AttemptLog,
}

impl<B> Clone for Recorder<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            log: self.log.clone(),
        }
    }
}

impl<B> Service<Request<B>> for Recorder<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let id = request_id(&req);
        let i = self.log.start(id, req.uri().port_u16().unwrap_or(0));
        let (client, log) = (self.client.clone(), self.log.clone());
        Box::pin(async move {
            let result = client.request(req).await;
            log.finish(
                i,
                match &result {
                    Ok(r) => Seen::Status(r.status().as_u16()),
                    Err(e) => seen_error(e),
                },
            );
            result
        })
    }
}

fn recorder<B>(connect_timeout: Option<Duration>) -> (Recorder<B>, AttemptLog)
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let log = AttemptLog::default();
    (
        Recorder {
            client: http_client(connect_timeout),
            log: log.clone(),
        },
        log,
    )
}

// ---------------------------------------------------------------------------
// Balancer and request helpers.

fn list_of(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn ports(backends: &[Backend]) -> Vec<u16> {
    backends.iter().map(Backend::port).collect()
}

/// A balancer over `ports` for `service`, round robin from the first
/// endpoint.
fn balancer<S>(
    service: &str,
    ports: &[u16],
    policy: RetryPolicy,
    outliers: OutlierDetection,
    inner: S,
) -> LoadBalancer<S> {
    let source = StaticSource::new()
        .with_list(service, &list_of(ports))
        .expect("list");
    LoadBalancer::builder()
        .source(source)
        .service(service)
        .rule(|| RoundRobin::with_start(0))
        .retry(policy)
        .outlier_detection(outliers)
        .build(inner)
        .expect("balancer")
}

fn endpoints<S>(lb: &LoadBalancer<S>, service: &str) -> Vec<Endpoint> {
    lb.snapshot(service)
        .map(|s| s.endpoints().to_vec())
        .unwrap_or_default()
}

fn endpoint<S>(lb: &LoadBalancer<S>, service: &str, port: u16) -> Endpoint {
    endpoints(lb, service)
        .into_iter()
        .find(|e| e.instance().port() == port)
        .unwrap_or_else(|| panic!("no endpoint with port {port}"))
}

fn port_of(instance: &str) -> u16 {
    instance
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {instance}"))
}

fn request_id<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn request<B>(method: Method, service: &str, id: Option<&str>, body: B) -> Request<B> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{service}/work"));
    if let Some(id) = id {
        builder = builder.header(REQUEST_ID, id);
    }
    builder.body(body).expect("request")
}

fn get(service: &str, id: Option<&str>) -> Request<Full<Bytes>> {
    request(Method::GET, service, id, Full::default())
}

fn post(service: &str, id: &str) -> Request<Full<Bytes>> {
    request(
        Method::POST,
        service,
        Some(id),
        Full::new(Bytes::from(format!("order {id}"))),
    )
}

/// Sends `req` and reads the whole response: status and body (a body that
/// fails to arrive reads as `<body error: ...>`).
async fn call<S, B>(lb: &LoadBalancer<S>, req: Request<B>) -> Result<(u16, String), Error>
where
    LoadBalancer<S>: Service<
            Request<B>,
            Response = Response<tower_ribbon::service::TrackedBody<Incoming>>,
            Error = Error,
        > + Clone,
{
    let response = lb.clone().oneshot(req).await?;
    let status = response.status().as_u16();
    let body = match response.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(e) => format!("<body error: {e}>"),
    };
    Ok((status, body))
}

async fn start_backends(prefix: &str, n: usize) -> Vec<Backend> {
    let mut backends = Vec::new();
    for i in 0..n {
        backends.push(
            Backend::start(&format!("{prefix}{i}"))
                .await
                .expect("backend"),
        );
    }
    backends
}

/// Every recorded request id and the backends that received it.
fn ids_by_backend(backends: &[Backend]) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for b in backends {
        for id in b.request_ids() {
            map.entry(id).or_default().push(b.name().to_owned());
        }
    }
    map
}

fn percentile(sorted: &[u32], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Duration::from_micros(u64::from(sorted[i]))
}

// ---------------------------------------------------------------------------
// The support backends themselves.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_backends_switch_stop_restart_and_blackhole() {
    let _light = HEAVY.read().await;
    // No pooled connections: each request connects, so a stopped backend
    // is seen as refused rather than as a closed keep-alive connection.
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(200)));
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let mut b = Backend::start("sb").await.expect("backend");
    let uri: http::Uri = format!("http://{}/x", b.addr()).parse().unwrap();
    let send = |id: &str| {
        let req = Request::get(uri.clone())
            .header(REQUEST_ID, id)
            .body(Full::default())
            .unwrap();
        client.request(req)
    };
    assert_eq!(send("1").await.expect("ok").status(), 200);
    b.set_behavior(Behavior::status(503, Some(2)));
    let r = send("2").await.expect("503");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()[http::header::RETRY_AFTER], "2");
    assert_eq!(
        b.requests(),
        [("1".to_owned(), Method::GET), ("2".to_owned(), Method::GET)]
    );

    // Stopped: connects are refused; restarted on the same port: served.
    b.shutdown().await;
    let refused = send("3").await.expect_err("stopped");
    assert_eq!(seen_error(&refused), Seen::Refused, "{refused:?}");
    b.restart().await.expect("restart on the same port");
    b.set_behavior(Behavior::Ok);
    assert_eq!(send("4").await.expect("restarted").status(), 200);
    assert_eq!(b.hits(), 3);
    assert_eq!(b.request_ids(), ["1", "2", "4"]);

    // The blackhole's connects time out (the connector's 200 ms).
    let hole = Blackhole::start().await.expect("blackhole");
    let uri: http::Uri = format!("http://{}/x", hole.addr()).parse().unwrap();
    let started = Instant::now();
    let e = client
        .request(Request::get(uri).body(Full::default()).unwrap())
        .await
        .expect_err("no answer");
    assert_eq!(seen_error(&e), Seen::ConnectError, "{e:?}");
    assert!(started.elapsed() >= Duration::from_millis(190));
    let mut timed_out = false;
    let mut source = e.source();
    while let Some(s) = source {
        timed_out |= s
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        source = s.source();
    }
    assert!(timed_out, "{e:?}");
}

// ---------------------------------------------------------------------------
// a. Chaos GET.

const CALLERS: usize = 200;
const CHAOS: Duration = Duration::from_secs(10);

/// When the monitor first saw a dead endpoint tripped and ejected, and its
/// attempt count then.
#[derive(Debug, Default, Clone, Copy)]
struct DeathWatch {
    tripped: Option<(Duration, u64)>,
    ejected: Option<(Duration, u64)>,
}

/// Polls the stats of `dead` every millisecond until `until`.
fn watch(
    dead: Vec<Endpoint>,
    start: Instant,
    until: Instant,
) -> tokio::task::JoinHandle<Vec<DeathWatch>> {
    tokio::spawn(async move {
        let mut seen = vec![DeathWatch::default(); dead.len()];
        while Instant::now() < until {
            for (e, w) in dead.iter().zip(seen.iter_mut()) {
                let stats = e.stats();
                let at = || (start.elapsed(), stats.requests());
                if w.tripped.is_none() && matches!(stats.breaker_state(), BreakerState::Open { .. })
                {
                    w.tripped = Some(at());
                }
                if w.ejected.is_none() && stats.times_ejected() > 0 {
                    w.ejected = Some(at());
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seen
    })
}

/// After the breaker blackout (10 s) and the ejection (30 s) begin, a dead
/// instance gets no new picks until the test ends; only picks made just
/// before the monitor noticed (it polls every millisecond) can still start.
/// Measured: 0 on every run.
const MAX_AFTER_EJECTION: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaos_get_loses_no_request_when_two_backends_die() {
    let _heavy = HEAVY.write().await;
    const SVC: &str = "chaos-get";
    let mut backends = start_backends("g", 5).await;
    let lb = balancer(
        SVC,
        &ports(&backends),
        RetryPolicy::default().max_next(2),
        OutlierDetection::default(),
        http_client::<Full<Bytes>>(None),
    );
    assert!(lb.ready_service(SVC).await);
    let dead = [0, 1];
    let dead_endpoints: Vec<Endpoint> = dead
        .iter()
        .map(|&i| endpoint(&lb, SVC, backends[i].port()))
        .collect();

    let start = Instant::now();
    let end = start + CHAOS;
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut callers = JoinSet::new();
    for _ in 0..CALLERS {
        let (lb, failures) = (lb.clone(), Arc::clone(&failures));
        callers.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                match call(&lb, get(SVC, None)).await {
                    Ok((200, body)) if !body.starts_with('<') => {}
                    Ok((status, body)) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {status}: {body}")),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
                latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            latencies
        });
    }
    let monitor = watch(dead_endpoints.clone(), start, end);

    let mut at_kill = Vec::new();
    for (&i, secs) in dead.iter().zip([3, 5]) {
        tokio::time::sleep_until(start + Duration::from_secs(secs)).await;
        backends[i].stop();
        at_kill.push((
            start.elapsed(),
            dead_endpoints[at_kill.len()].stats().requests(),
        ));
    }

    let mut latencies = Vec::new();
    while let Some(done) = callers.join_next().await {
        latencies.extend(done.expect("caller"));
    }
    let watched = monitor.await.expect("monitor");
    latencies.sort_unstable();
    let failures = failures.lock().unwrap().clone();
    let total = latencies.len();

    println!(
        "chaos GET: {total} GETs by {CALLERS} callers in {:?}, {} failed, p50 {:?}, p99 {:?}, max {:?}",
        start.elapsed(),
        failures.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    for b in &backends {
        println!("  {} served {}", b.name(), b.hits());
    }
    let mut after_ejection = Vec::new();
    for (k, e) in dead_endpoints.iter().enumerate() {
        let stats = e.stats();
        let total_attempts = stats.requests();
        let (killed_at, n_kill) = at_kill[k];
        let w = watched[k];
        let after = |m: Option<(Duration, u64)>| m.map(|(t, n)| (t, total_attempts - n));
        println!(
            "  dead {} (killed at {killed_at:?}): {} attempts after the kill; tripped {:?} (at, attempts after); ejected {:?}; failures {}, times ejected {}",
            backends[dead[k]].name(),
            total_attempts - n_kill,
            after(w.tripped),
            after(w.ejected),
            stats.failures(),
            stats.times_ejected(),
        );
        after_ejection.push(after(w.ejected));
    }

    assert!(
        failures.is_empty(),
        "{} failed GETs: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(total > 10_000, "only {total} GETs");
    for (k, after) in after_ejection.into_iter().enumerate() {
        let name = backends[dead[k]].name();
        let (_, n) = after.unwrap_or_else(|| panic!("dead {name} was never ejected"));
        assert!(
            n <= MAX_AFTER_EJECTION,
            "dead {name}: {n} attempts after its ejection"
        );
    }
    assert_eq!(lb.in_panic(SVC), Some(false));
}

// ---------------------------------------------------------------------------
// b. Chaos POST.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_chaos_post_never_sends_a_post_twice() {
    let _heavy = HEAVY.write().await;
    const SVC: &str = "chaos-post";
    let mut backends = start_backends("p", 5).await;
    let (inner, log) = recorder::<Full<Bytes>>(None);
    let lb = balancer(
        SVC,
        &ports(&backends),
        // No budget: this test checks that every refused POST is retried
        // (and none sent twice); under a budget, a loaded host makes fewer
        // requests per second and a refused POST is rightly not retried.
        RetryPolicy::default()
            .max_next(2)
            .per_try_timeout(Duration::from_millis(200))
            .budget(RetryBudgetConfig::unlimited()),
        OutlierDetection::default(),
        inner,
    );
    assert!(lb.ready_service(SVC).await);
    let hung_port = backends[1].port();

    let start = Instant::now();
    let end = start + CHAOS;
    let mut callers = JoinSet::new();
    for c in 0..CALLERS {
        let lb = lb.clone();
        callers.spawn(async move {
            let mut results = Vec::new();
            let mut n = 0u32;
            while Instant::now() < end {
                let id = format!("post-{c}-{n}");
                n += 1;
                let result = call(&lb, post(SVC, &id)).await;
                results.push((id, result));
            }
            results
        });
    }
    // b0 goes away gracefully at 3 s (its listener closes, each connection
    // finishes the POST it serves and closes), so every later pick of it
    // is a refused connect until it is ejected: at least one refused POST,
    // whatever the timing (a hard stop cut tens of POSTs in flight, which
    // could eject it before any new connect). b1 hangs after reading each
    // request from 4 s and dies at 5 s (so at most two of five are ever
    // unhealthy: no panic).
    tokio::time::sleep_until(start + Duration::from_secs(3)).await;
    backends[0].drain();
    tokio::time::sleep_until(start + Duration::from_secs(4)).await;
    backends[1].set_behavior(Behavior::HangAfterRead);
    tokio::time::sleep_until(start + Duration::from_secs(5)).await;
    backends[1].stop();

    let mut results = Vec::new();
    while let Some(done) = callers.join_next().await {
        results.extend(done.expect("caller"));
    }
    let elapsed = start.elapsed();

    // No id reached two backends (nor one backend twice).
    let received = ids_by_backend(&backends);
    let twice: Vec<_> = received.iter().filter(|(_, b)| b.len() > 1).collect();
    assert!(twice.is_empty(), "POSTs received more than once: {twice:?}");

    // Every attempt but a request's last never reached a server.
    let attempts = log.by_id();
    let mut refused_then_retried = 0;
    for (id, tries) in &attempts {
        let (last, earlier) = tries.split_last().expect("one attempt");
        for a in earlier {
            assert!(
                matches!(a.seen, Seen::Refused | Seen::ConnectError),
                "{id}: retried after {a:?} (may have reached a server); all: {tries:?}"
            );
        }
        if matches!(last.seen, Seen::Refused) {
            let result = results.iter().find(|(i, _)| i == id).map(|(_, r)| match r {
                Ok(ok) => format!("{ok:?}"),
                Err(e) => e.to_string(),
            });
            assert_eq!(
                tries.len(),
                3,
                "{id}: refused and not retried: {tries:?}; result {result:?}"
            );
        }
        if earlier.iter().any(|a| a.seen == Seen::Refused) {
            refused_then_retried += 1;
        }
    }

    let name_of: HashMap<u16, &str> = backends.iter().map(|b| (b.port(), b.name())).collect();
    let mut ok = 0;
    let mut hung = 0;
    let mut timeouts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut other_errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad_status: BTreeMap<u16, usize> = BTreeMap::new();
    for (id, result) in &results {
        match result {
            Ok((200, _)) => ok += 1,
            Ok((status, _)) => *bad_status.entry(*status).or_default() += 1,
            // A POST cut off by the per-try timeout: an error, not retried,
            // received at most once, by the instance it timed out on.
            Err(e) if e.is_timeout() => {
                assert!(e.is_inner(), "{id}: {e}");
                let last = e.attempts().last().expect("attempts");
                assert_eq!(last.outcome, Outcome::ReadTimeout, "{id}: {e}");
                let port = port_of(&last.instance);
                let tries = &attempts[id];
                assert_eq!(
                    tries.last().map(|a| (a.port, &a.seen)),
                    Some((port, &Seen::CutOff)),
                    "{id}: {tries:?}"
                );
                let by = received.get(id).map(Vec::as_slice).unwrap_or_default();
                assert!(
                    by.len() <= 1 && by.iter().all(|b| b == name_of[&port]),
                    "{id}: {by:?}"
                );
                *timeouts.entry(name_of[&port]).or_default() += 1;
                // Hung after the hanging backend read it: received exactly once.
                if port == hung_port && by.len() == 1 {
                    hung += 1;
                }
            }
            Err(e) => {
                let kind = e
                    .attempts()
                    .last()
                    .map_or_else(|| e.to_string(), |a| format!("{:?}", a.outcome));
                *other_errors.entry(kind).or_default() += 1;
            }
        }
    }
    println!(
        "chaos POST: {} POSTs in {elapsed:?}: {ok} ok, {refused_then_retried} retried after a refused connect, {hung} hung after p1 read them (each received exactly once, returned as a timeout, not retried), timeouts per backend {timeouts:?}, other errors {other_errors:?}, statuses {bad_status:?}; {} ids received, none twice; in panic at the end: {:?}",
        results.len(),
        received.len(),
        lb.in_panic(SVC),
    );
    for b in &backends {
        println!("  {} received {}", b.name(), b.hits());
    }
    assert!(refused_then_retried > 0, "no POST met a refused connect");
    assert!(hung > 0, "no POST hung on the hanging backend");
    assert!(bad_status.is_empty(), "{bad_status:?}");
}

// ---------------------------------------------------------------------------
// c. Next-instance retries never repeat an instance.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_next_instance_retries_do_not_repeat_under_a_moving_cursor() {
    let _light = HEAVY.read().await;
    const SVC: &str = "no-repeats";
    const N: usize = 100;
    let mut backends = start_backends("r", 4).await;
    for b in &backends {
        b.set_behavior(Behavior::Status(503));
    }
    let lb = balancer(
        SVC,
        &ports(&backends),
        RetryPolicy::default()
            .max_next(3)
            .budget(RetryBudgetConfig::unlimited())
            .backoff(Duration::ZERO, Duration::ZERO),
        // Ejected instances are not eligible: keep all four eligible.
        OutlierDetection::disabled(),
        http_client::<Full<Bytes>>(None),
    );
    assert!(lb.ready_service(SVC).await);

    // Unrelated GETs from other tasks move the round-robin cursor.
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = |lb: &LoadBalancer<HttpClient>| {
        let mut tasks = JoinSet::new();
        for _ in 0..4 {
            let (lb, flooding) = (lb.clone(), Arc::clone(&flooding));
            tasks.spawn(async move {
                let mut n = 0usize;
                while flooding.load(Ordering::Relaxed) && n < 100_000 {
                    let _ = call(&lb, get(SVC, None)).await;
                    n += 1;
                }
                n
            });
        }
        tasks
    };

    // All 503: the final answer is the 4th 503; each id reached 4 instances.
    let mut tasks = flood(&lb);
    let mut requests = JoinSet::new();
    for t in 0..4 {
        let lb = lb.clone();
        requests.spawn(async move {
            for n in 0..N / 4 {
                let (status, _) = call(&lb, get(SVC, Some(&format!("rep-{t}-{n}"))))
                    .await
                    .expect("a 503 response");
                assert_eq!(status, 503);
            }
        });
    }
    while let Some(r) = requests.join_next().await {
        r.expect("requests");
    }
    flooding.store(false, Ordering::Relaxed);
    let mut flooded = 0;
    while let Some(n) = tasks.join_next().await {
        flooded += n.expect("flood");
    }
    let received = ids_by_backend(&backends);
    assert_eq!(received.len(), N);
    for (id, on) in &received {
        let distinct: BTreeSet<_> = on.iter().collect();
        assert_eq!((on.len(), distinct.len()), (4, 4), "{id}: {on:?}");
    }

    // All refused (every breaker tripped: panic mode, all eligible again):
    // `attempts()` lists four distinct instances.
    for b in &mut backends {
        b.shutdown().await;
    }
    let mut warmup = 0;
    while lb.in_panic(SVC) != Some(true) {
        warmup += 1;
        assert!(warmup <= 20, "never in panic");
        let _ = call(&lb, get(SVC, None)).await;
    }
    flooding.store(true, Ordering::Relaxed);
    let mut tasks = flood(&lb);
    for n in 0..N / 4 {
        let e = call(&lb, get(SVC, Some(&format!("ref-{n}"))))
            .await
            .expect_err("all refused");
        let instances: BTreeSet<&str> = e.attempts().iter().map(|a| a.instance.as_str()).collect();
        assert_eq!((e.attempts().len(), instances.len()), (4, 4), "{e}");
        assert!(
            e.attempts()
                .iter()
                .all(|a| a.outcome == Outcome::ConnectFailure),
            "{e}"
        );
    }
    flooding.store(false, Ordering::Relaxed);
    while let Some(n) = tasks.join_next().await {
        flooded += n.expect("flood");
    }
    println!(
        "no repeats: {N} all-503 requests on 4 distinct instances each, {} all-refused requests with 4 distinct attempts each, {flooded} flood GETs meanwhile",
        N / 4
    );
}

/// Retries step a rotation of their own, so a failing instance gets only
/// its share of first attempts. Before, each retry took the round-robin
/// step after the failing instance's, so with one of two failing every
/// request went to it first (200 of 200 first attempts, each a 503 and a
/// retry); with one of three, every other request. The retry rotation is
/// the sibling of spring-cloud-commons#1144's fix (sticky picks must not
/// move the round robin of the others). Peers' reports of the same:
/// [spring-cloud-netflix#3974](https://github.com/spring-cloud/spring-cloud-netflix/issues/3974)
/// (two instances answering 500, every call on one),
/// [conjure-java-runtime#942](https://github.com/palantir/conjure-java-runtime/issues/942)
/// (round robin advanced twice on a retry) and
/// [envoy#27200](https://github.com/envoyproxy/envoy/issues/27200)
/// (with retries on, requests that need none keep meeting the dead host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_a_failing_instance_gets_only_its_share_of_first_attempts() {
    let _light = HEAVY.read().await;
    for (n, requests) in [(2usize, 200usize), (3, 300)] {
        let svc = format!("first-share-{n}");
        let backends = start_backends(&format!("fs{n}-"), n).await;
        backends[0].set_behavior(Behavior::Status(503));
        let lb = balancer(
            &svc,
            &ports(&backends),
            RetryPolicy::default()
                .budget(RetryBudgetConfig::unlimited())
                .backoff(Duration::ZERO, Duration::ZERO),
            // The failing instance stays eligible.
            OutlierDetection::disabled(),
            http_client::<Full<Bytes>>(None),
        );
        assert!(lb.ready_service(&svc).await);
        for i in 0..requests {
            let (status, _) = call(&lb, get(&svc, Some(&format!("fs-{n}-{i}"))))
                .await
                .expect("a response");
            assert_eq!(status, 200, "request {i}");
        }
        let received: Vec<usize> = backends.iter().map(|b| b.request_ids().len()).collect();
        // First attempts: requests / n each; the failing one's retries
        // (requests / n) spread over the n - 1 others.
        let share = requests / n;
        let retried = share / (n - 1);
        let mut expected = vec![share + retried; n];
        expected[0] = share;
        assert_eq!(received, expected, "{n} instances, the first failing");
        println!("first-attempt share, {n} instances, one failing: {received:?}");
    }

    // spring-cloud-netflix#3974's setting: both answer 500, one retry on
    // the same instance and none on the next: 100 requests each.
    let svc = "first-share-same";
    let backends = start_backends("fss-", 2).await;
    for b in &backends {
        b.set_behavior(Behavior::Status(500));
    }
    let lb = balancer(
        svc,
        &ports(&backends),
        RetryPolicy::default()
            .max_same(1)
            .max_next(0)
            .retryable_statuses([500])
            .budget(RetryBudgetConfig::unlimited())
            .backoff(Duration::ZERO, Duration::ZERO),
        OutlierDetection::disabled(),
        http_client::<Full<Bytes>>(None),
    );
    assert!(lb.ready_service(svc).await);
    for i in 0..200 {
        let (status, _) = call(&lb, get(svc, Some(&format!("fss-{i}"))))
            .await
            .expect("a response");
        assert_eq!(status, 500, "request {i}");
    }
    let received: Vec<usize> = backends.iter().map(|b| b.request_ids().len()).collect();
    assert_eq!(received, [200, 200], "100 requests and their retries each");
}

// ---------------------------------------------------------------------------
// d. The retry budget and the deadline.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_the_budget_caps_retries_and_the_deadline_caps_time() {
    let _light = HEAVY.read().await;
    const SVC: &str = "budget";
    const N: usize = 500;
    let deadline = Duration::from_millis(300);
    let backends = start_backends("d", 4).await;
    for b in &backends {
        b.set_behavior(Behavior::Status(503));
    }
    let budget = RetryBudgetConfig::default();
    let lb = balancer(
        SVC,
        &ports(&backends),
        RetryPolicy::default()
            .max_next(3)
            .deadline(deadline)
            .budget(budget.clone())
            .backoff(Duration::from_millis(1), Duration::from_millis(2)),
        OutlierDetection::default(),
        http_client::<Full<Bytes>>(None),
    );
    assert!(lb.ready_service(SVC).await);

    let started = Instant::now();
    let mut max_elapsed = Duration::ZERO;
    for _ in 0..N {
        let t = Instant::now();
        let (status, _) = call(&lb, get(SVC, None)).await.expect("a 503");
        assert_eq!(status, 503);
        max_elapsed = max_elapsed.max(t.elapsed());
    }
    let took = started.elapsed();
    let attempts: usize = backends.iter().map(Backend::hits).sum();
    let counted: u64 = endpoints(&lb, SVC)
        .iter()
        .map(|e| e.stats().requests())
        .sum();
    assert_eq!(attempts as u64, counted);

    // tower's TpsBudget (ttl 10 s, 10/s, 20 %): a retry withdraws
    // w = (1 / 0.2) as isize = 5 units, a request deposits 1, the reserve
    // is 10/s × 10 s × w = 500 units; within the ttl nothing expires, so
    // retries ≤ (500 + N) / 5 = 100 + N / 5.
    let withdraw = (1.0f32 / 0.2f32) as usize;
    let reserve = 10 * 10 * withdraw;
    let bound = N + (reserve + N) / withdraw;
    println!(
        "budget: {N} requests in {took:?}: {attempts} attempts (bound {bound} = {N} + ({reserve} + {N}) / {withdraw}; without a budget {}), max elapsed {max_elapsed:?} (deadline {deadline:?})",
        N * 4
    );
    assert!(
        took < Duration::from_secs(9),
        "the window must not roll over"
    );
    assert!(attempts <= bound, "{attempts} attempts > {bound}");
    // The reserve was spent: the budget, not the policy, stopped retries.
    assert!(attempts >= N + reserve / withdraw, "{attempts}");
    assert!(max_elapsed <= deadline);

    // Slow 503s (120 ms): the third attempt is cut off by the deadline.
    for b in &backends {
        b.set_behavior(Behavior::SlowStatus(Duration::from_millis(120), 503));
    }
    let lb = balancer(
        "deadline",
        &ports(&backends),
        RetryPolicy::default()
            .max_next(3)
            .deadline(deadline)
            .backoff(Duration::from_millis(1), Duration::from_millis(2)),
        OutlierDetection::default(),
        http_client::<Full<Bytes>>(None),
    );
    let mut calls = JoinSet::new();
    for _ in 0..8 {
        let lb = lb.clone();
        calls.spawn(async move {
            let t = Instant::now();
            let result = call(&lb, get("deadline", None)).await;
            (t.elapsed(), result)
        });
    }
    let mut max_elapsed = Duration::ZERO;
    while let Some(done) = calls.join_next().await {
        let (elapsed, result) = done.expect("call");
        max_elapsed = max_elapsed.max(elapsed);
        let e = result.expect_err("cut off by the deadline");
        assert!(e.is_timeout(), "{e}");
        let outcomes: Vec<Outcome> = e.attempts().iter().map(|a| a.outcome).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::FailureStatus(503),
                Outcome::FailureStatus(503),
                Outcome::ReadTimeout
            ],
            "{e}"
        );
    }
    println!("deadline: slow 503s cut off after 3 attempts, max elapsed {max_elapsed:?}");
    // The deadline bounds the request; allow timer granularity.
    assert!(
        max_elapsed < deadline + Duration::from_millis(25),
        "{max_elapsed:?}"
    );
}

// ---------------------------------------------------------------------------
// e. Retry-After.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_retry_after_is_honoured_only_when_it_fits_the_deadline() {
    let _light = HEAVY.read().await;
    let backends = start_backends("e", 2).await;
    let ports = ports(&backends);
    let build = |svc: &str, deadline: Duration| {
        let (inner, log) = recorder::<Full<Bytes>>(None);
        let lb = balancer(
            svc,
            &ports,
            RetryPolicy::default().deadline(deadline),
            OutlierDetection::default(),
            inner,
        );
        (lb, log)
    };

    // Round robin from 0: the first endpoint answers 503, Retry-After: 1.
    let (short, short_log) = build("ra-short", Duration::from_millis(500));
    assert!(short.ready_service("ra-short").await);
    let first = endpoints(&short, "ra-short")[0].instance().port();
    let (busy, good) = if first == backends[0].port() {
        (&backends[0], &backends[1])
    } else {
        (&backends[1], &backends[0])
    };
    busy.set_behavior(Behavior::status(503, Some(1)));

    let t = Instant::now();
    let (status, _) = call(&short, get("ra-short", None)).await.expect("503");
    let short_elapsed = t.elapsed();
    assert_eq!(
        status, 503,
        "the 503 comes back: waiting 1 s would pass 500 ms"
    );
    assert_eq!((busy.hits(), good.hits()), (1, 0));
    assert_eq!(short_log.0.lock().unwrap().len(), 1);
    assert!(short_elapsed < Duration::from_millis(500));

    let (long, long_log) = build("ra-long", Duration::from_secs(3));
    assert!(long.ready_service("ra-long").await);
    assert_eq!(
        endpoints(&long, "ra-long")[0].instance().port(),
        busy.port()
    );
    let t = Instant::now();
    let (status, body) = call(&long, get("ra-long", None)).await.expect("200");
    let long_elapsed = t.elapsed();
    assert_eq!((status, body.as_str()), (200, good.name()));
    assert_eq!((busy.hits(), good.hits()), (2, 1));
    let log = long_log.0.lock().unwrap().clone();
    assert_eq!(log.len(), 2);
    let gap = log[1].started - log[0].started;
    println!(
        "Retry-After: 1 → deadline 500 ms: one attempt, 503 after {short_elapsed:?}; deadline 3 s: retry {gap:?} after the first attempt, 200 after {long_elapsed:?}"
    );
    assert!(gap >= Duration::from_secs(1), "{gap:?}");
    assert!(long_elapsed < Duration::from_secs(3));
}

// ---------------------------------------------------------------------------
// f. Classification.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_each_failure_is_classified_on_the_instance_that_produced_it() {
    let _light = HEAVY.read().await;
    const SVC: &str = "classify";
    let mut refused = Backend::start("refused").await.expect("backend");
    refused.shutdown().await;
    let hole = Blackhole::start().await.expect("blackhole");
    let hang = Backend::start_with("hang", Behavior::HangAfterRead)
        .await
        .expect("backend");
    let unavailable = Backend::start_with("503", Behavior::Status(503))
        .await
        .expect("backend");
    let connect_timeout = Duration::from_millis(200);
    // The per-try timeout must exceed the connect timeout: it bounds the
    // whole attempt, connect included, and cutting a connect off classifies
    // it as a read timeout (see `per_try_timeout_pre_empting_a_connect...`).
    let per_try = Duration::from_millis(400);
    let lb = balancer(
        SVC,
        &[refused.port(), hole.port(), hang.port(), unavailable.port()],
        RetryPolicy::none().per_try_timeout(per_try),
        OutlierDetection::default(),
        http_client::<Full<Bytes>>(Some(connect_timeout)),
    );
    assert!(lb.ready_service(SVC).await);

    let mut by_port: BTreeMap<u16, (Outcome, bool, Duration)> = BTreeMap::new();
    let mut status_503 = 0;
    for _ in 0..4 {
        let t = Instant::now();
        match call(&lb, get(SVC, None)).await {
            Ok((status, body)) => {
                assert_eq!((status, body.as_str()), (503, "503"));
                status_503 += 1;
            }
            Err(e) => {
                assert!(e.is_inner(), "{e}");
                assert_eq!(e.attempts().len(), 1, "{e}");
                let a = &e.attempts()[0];
                let previous = by_port.insert(
                    port_of(&a.instance),
                    (a.outcome, e.is_timeout(), t.elapsed()),
                );
                assert!(previous.is_none(), "{e}");
            }
        }
    }
    println!("classification (port → outcome, is_timeout, elapsed): {by_port:?}");
    assert_eq!(status_503, 1);
    assert_eq!(by_port[&refused.port()].0, Outcome::ConnectFailure);
    assert_eq!(by_port[&hole.port()].0, Outcome::ConnectTimeout);
    assert_eq!(by_port[&hang.port()].0, Outcome::ReadTimeout);
    assert!(!by_port[&refused.port()].1);
    assert!(by_port[&hang.port()].1, "a per-try timeout is a timeout");
    assert!(by_port[&hole.port()].2 >= connect_timeout);
    assert!(by_port[&hang.port()].2 >= per_try);
    assert_eq!((hang.hits(), unavailable.hits()), (1, 1));

    // Each instance counted exactly its own attempt and failure.
    for (port, connection_failure) in [
        (refused.port(), true),
        (hole.port(), true),
        (hang.port(), true),
        (unavailable.port(), false),
    ] {
        let e = endpoint(&lb, SVC, port);
        let stats = e.stats();
        assert_eq!((stats.requests(), stats.failures()), (1, 1), "port {port}");
        assert_eq!(
            stats.successive_connection_failures(),
            u32::from(connection_failure),
            "port {port}"
        );
        assert_eq!(stats.consecutive_server_errors(), 1, "port {port}");
    }
}

/// Not one of the issue's acceptance tests: a per-try timeout shorter than
/// the connect timeout cuts a connect that never reached the server, and
/// the attempt is classified as a read timeout, so a POST is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known limitation (documented on RetryPolicy::per_try_timeout): a per-try timeout that fires during connect cannot tell the connection was never made, so it counts as a read timeout and a POST is not retried; keep per_try_timeout above the connect timeout"]
async fn per_try_timeout_pre_empting_a_connect_is_still_a_connect_timeout() {
    let _light = HEAVY.read().await;
    const SVC: &str = "pre-empted";
    let hole = Blackhole::start().await.expect("blackhole");
    let good = Backend::start("good").await.expect("backend");
    let lb = balancer(
        SVC,
        &[hole.port(), good.port()],
        RetryPolicy::default().per_try_timeout(Duration::from_millis(200)),
        OutlierDetection::default(),
        http_client::<Full<Bytes>>(Some(Duration::from_secs(1))),
    );
    assert!(lb.ready_service(SVC).await);
    let result = call(&lb, post(SVC, "pre-1")).await;
    // The POST never reached the blackhole: it may go to `good`.
    assert_eq!(result.expect("retried").0, 200);
    assert_eq!(good.request_ids(), ["pre-1"]);
    assert_eq!(endpoint(&lb, SVC, hole.port()).stats().failures(), 1);
}

// ---------------------------------------------------------------------------
// g. Streaming bodies.

type Streaming = ReplayBody<Full<Bytes>>;

fn streaming_post(service: &str, id: &str) -> Request<Streaming> {
    request(
        Method::POST,
        service,
        Some(id),
        ReplayBody::streaming(Full::new(Bytes::from_static(b"streamed order"))),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_a_streaming_body_is_retried_only_while_unsent() {
    let _light = HEAVY.read().await;

    // Refused first: the stream never started, so it goes to the next one.
    const REFUSED: &str = "stream-refused";
    let mut backends = start_backends("s", 2).await;
    let (inner, log) = recorder::<Streaming>(None);
    let lb = balancer(
        REFUSED,
        &ports(&backends),
        RetryPolicy::default(),
        OutlierDetection::default(),
        inner,
    );
    assert!(lb.ready_service(REFUSED).await);
    let first = endpoints(&lb, REFUSED)[0].instance().port();
    let (dead, good) = if first == backends[0].port() {
        (0, 1)
    } else {
        (1, 0)
    };
    backends[dead].shutdown().await;
    let (status, body) = call(&lb, streaming_post(REFUSED, "s-1"))
        .await
        .expect("retried");
    assert_eq!((status, body.as_str()), (200, backends[good].name()));
    let seen: Vec<Seen> = log
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.seen.clone())
        .collect();
    assert_eq!(seen, [Seen::Refused, Seen::Status(200)]);
    assert_eq!(backends[good].request_ids(), ["s-1"]);

    // 503 first, every method retryable: the body was sent, so no retry.
    const SENT: &str = "stream-sent";
    let backends = start_backends("t", 2).await;
    let (inner, log) = recorder::<Streaming>(None);
    let lb = balancer(
        SENT,
        &ports(&backends),
        RetryPolicy::default().retry_on_all_operations(true),
        OutlierDetection::default(),
        inner,
    );
    assert!(lb.ready_service(SENT).await);
    let first = endpoints(&lb, SENT)[0].instance().port();
    let (busy, other) = if first == backends[0].port() {
        (0, 1)
    } else {
        (1, 0)
    };
    backends[busy].set_behavior(Behavior::Status(503));
    let result = call(&lb, streaming_post(SENT, "t-1")).await;
    let seen: Vec<(u16, Seen)> = log
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|a| (a.port, a.seen.clone()))
        .collect();
    println!(
        "streaming body after a 503: result {:?}, attempts {seen:?}, received by {:?} / {:?}",
        result.as_ref().map(|r| r.0).map_err(ToString::to_string),
        backends[busy].request_ids(),
        backends[other].request_ids(),
    );
    assert_eq!(
        backends[other].hits(),
        0,
        "the sent stream was replayed to the other instance"
    );
    assert_eq!(seen.len(), 1, "attempts: {seen:?}");
    assert_eq!(result.expect("the 503").0, 503);
}

// ---------------------------------------------------------------------------
// Max ejection share and the panic threshold.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_half_are_ejected_and_panic_needs_fewer_than_half_healthy() {
    let _light = HEAVY.read().await;

    // 3 of 4 answer 500: only 2 may be ejected (50 %); 2 of 4 healthy is
    // not below the panic threshold.
    const EJECT: &str = "eject-share";
    let backends = start_backends("x", 4).await;
    for b in &backends[..3] {
        b.set_behavior(Behavior::Status(500));
    }
    let lb = balancer(
        EJECT,
        &ports(&backends),
        RetryPolicy::none(),
        OutlierDetection::default(),
        http_client::<Full<Bytes>>(None),
    );
    assert!(lb.ready_service(EJECT).await);
    for _ in 0..80 {
        call(&lb, get(EJECT, None)).await.expect("a response");
    }
    let now = Instant::now();
    let eps = endpoints(&lb, EJECT);
    let ejected = eps.iter().filter(|e| e.stats().is_ejected_at(now)).count();
    let times: u32 = eps.iter().map(|e| e.stats().times_ejected()).sum();
    let third = eps
        .iter()
        .find(|e| e.instance().port() != backends[3].port() && !e.stats().is_ejected_at(now))
        .expect("a 500 backend not ejected");
    println!(
        "ejection share: {ejected} of 4 ejected (times ejected {times}); the third 500 backend has {} consecutive 5xx",
        third.stats().consecutive_server_errors()
    );
    assert_eq!((ejected, times), (2, 2));
    assert!(third.stats().consecutive_server_errors() >= 5);
    assert_eq!(lb.in_panic(EJECT), Some(false));

    // 3 of 4 refused, outlier detection off: breakers trip one by one;
    // panic exactly when fewer than 2 of 4 are healthy at the pick.
    const PANIC: &str = "panic";
    let mut backends = start_backends("y", 4).await;
    for b in &mut backends[..3] {
        b.shutdown().await;
    }
    let lb = balancer(
        PANIC,
        &ports(&backends),
        RetryPolicy::none(),
        OutlierDetection::disabled(),
        http_client::<Full<Bytes>>(None),
    );
    assert!(lb.ready_service(PANIC).await);
    let tripped = || {
        endpoints(&lb, PANIC)
            .iter()
            .filter(|e| matches!(e.stats().breaker_state(), BreakerState::Open { .. }))
            .count()
    };
    let mut trace = Vec::new();
    for _ in 0..60 {
        let before = tripped();
        let _ = call(&lb, get(PANIC, None)).await;
        let panic = lb.in_panic(PANIC) == Some(true);
        trace.push((before, panic));
        assert_eq!(
            panic,
            before >= 3,
            "tripped before the pick {before}; trace {trace:?}"
        );
        if panic {
            break;
        }
    }
    println!("panic: (tripped before the pick, in panic after) per request: {trace:?}");
    assert_eq!(trace.last(), Some(&(3, true)));
    // The live instance was never tripped.
    assert_eq!(
        endpoint(&lb, PANIC, backends[3].port())
            .stats()
            .breaker_state(),
        BreakerState::Closed
    );
    assert_eq!(tripped(), 3);
}
