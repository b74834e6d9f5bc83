//! A passing active health probe ends an outlier ejection, as Envoy's
//! `successful_active_health_check_uneject_host` (default true) does
//! (helper 199): before, an instance ejected for a burst of 5xx stayed out
//! for its whole ejection time (3.03 s of a 3 s ejection) while it passed
//! 58 probes. With the option off it stays out.
//!
//! Real time over loopback; no timing decides: the ejection lasts 600 s,
//! so only a probe can end it within the test.

#[path = "support/serve.rs"]
mod serve;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper::{Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::{ActiveHealthCheck, OutlierDetection};
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::{Instance, LoadBalancer};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Answers `/health` with 200 (503 while `sick`; counted; the n-th probe
/// only once `answered` exceeds n) and `/work` with 500 while `failing`,
/// else 200 (counted).
struct Server {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    sick: Arc<AtomicBool>,
    answered: watch::Sender<usize>,
    traffic: Arc<AtomicUsize>,
    probes: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel();
        let (failing, sick) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let k = Arc::clone(&sick);
        let (answered, gate) = watch::channel(usize::MAX);
        let (traffic, probes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (f, t, p) = (
            Arc::clone(&failing),
            Arc::clone(&traffic),
            Arc::clone(&probes),
        );
        tokio::spawn(serve::serve(
            listener,
            stopped,
            |_| {},
            move |req| {
                let (f, t, p) = (Arc::clone(&f), Arc::clone(&t), Arc::clone(&p));
                let (k, mut gate) = (Arc::clone(&k), gate.clone());
                async move {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    if req.uri().path() == "/health" {
                        let n = p.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|answered| *answered > n).await;
                        if k.load(Ordering::SeqCst) {
                            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        }
                    } else if f.load(Ordering::SeqCst) {
                        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    } else {
                        t.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok::<_, Infallible>(response)
                }
            },
        ));
        Server {
            addr,
            failing,
            sick,
            answered,
            traffic,
            probes,
            _stop: stop,
        }
    }

    fn instance(&self) -> Instance {
        Instance::new("svc", "127.0.0.1", self.addr.port()).expect("instance")
    }
}

async fn send(lb: &LoadBalancer<HttpClient>, n: usize) {
    for _ in 0..n {
        let req = http::Request::get("http://svc/work")
            .body(Empty::new())
            .unwrap();
        let _ = lb.request(req).await;
    }
}

fn ejected(lb: &LoadBalancer<HttpClient>) -> bool {
    let snapshot = lb.snapshot("svc").expect("svc");
    snapshot.endpoints()[0]
        .stats()
        .is_ejected_at(tokio::time::Instant::now())
}

/// Round robin over A and B, probed every 20 ms; three 5xx eject for
/// 600 s, so only a probe can end an ejection within a test.
async fn balancer(a: &Server, b: &Server, uneject: bool) -> LoadBalancer<HttpClient> {
    let mut check = ActiveHealthCheck::new("/health");
    check.interval = Duration::from_millis(20);
    check.interval_jitter = Duration::ZERO;
    let mut detection = OutlierDetection::default();
    detection.consecutive_5xx = 3;
    detection.base_ejection_time = Duration::from_secs(600);
    detection.max_ejection_time = Duration::from_secs(600);
    detection.successful_active_health_check_uneject_host = uneject;
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances("svc", vec![a.instance(), b.instance()]))
        .service("svc")
        .rule(|| tower_ribbon::rule::RoundRobin::with_start(0))
        .active_health_check(check)
        .outlier_detection(detection)
        .retry(RetryPolicy::none())
        .build(Client::builder(TokioExecutor::new()).build_http())
        .expect("balancer");
    assert!(lb.ready_service("svc").await);
    lb
}

/// A is ejected by three 500s (for 600 s), then passes its probes (fails
/// them when `sick`).
async fn ejected_then_probed(
    uneject: bool,
    sick: bool,
) -> (LoadBalancer<HttpClient>, Server, Server) {
    let (a, b) = (Server::start().await, Server::start().await);
    let lb = balancer(&a, &b, uneject).await;
    a.failing.store(true, Ordering::SeqCst);
    a.sick.store(sick, Ordering::SeqCst);
    send(&lb, 6).await;
    assert!(ejected(&lb) || !uneject, "ejected by three 500s");
    a.failing.store(false, Ordering::SeqCst);
    (lb, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_probe_ends_an_ejection() {
    let (lb, a, _b) = ejected_then_probed(true, false).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ejected(&lb) {
        assert!(std::time::Instant::now() < deadline, "still ejected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = a.traffic.load(Ordering::SeqCst);
    send(&lb, 20).await;
    assert_eq!(a.traffic.load(Ordering::SeqCst) - before, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_option_off_an_ejection_outlasts_passing_probes() {
    let (lb, a, _b) = ejected_then_probed(false, false).await;
    stays_ejected_through_five_probes(&lb, &a).await;
}

/// A failing probe ends no ejection: Envoy unejected on any check before
/// its unhealthy threshold was reached, whatever its result
/// ([envoy#32442](https://github.com/envoyproxy/envoy/issues/32442),
/// [envoy#28303](https://github.com/envoyproxy/envoy/issues/28303); fixed
/// by passing the check's result to the detector,
/// [envoy PR #32977](https://github.com/envoyproxy/envoy/pull/32977)).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_probe_ends_no_ejection() {
    let (lb, a, _b) = ejected_then_probed(true, true).await;
    stays_ejected_through_five_probes(&lb, &a).await;
}

/// A passing probe sent before the ejection began ends nothing: it is
/// older news than the 5xx that ejected (helper 202: with a 300 ms health
/// endpoint every ejection ended within 170 ms, by the probe in flight);
/// the next probe, sent after, does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_sent_before_the_ejection_ends_nothing() {
    let (a, b) = (Server::start().await, Server::start().await);
    a.answered.send_replace(0);
    let lb = balancer(&a, &b, true).await;
    let probed = &a.probes;
    let probes = |n: usize| move || probed.load(Ordering::SeqCst) >= n;
    wait("A's first probe held", probes(1)).await;
    a.failing.store(true, Ordering::SeqCst);
    send(&lb, 6).await;
    assert!(ejected(&lb), "ejected by three 500s");
    a.failing.store(false, Ordering::SeqCst);
    // The probe sent before the ejection passes; its round ends, and the
    // next round's probe of A (held) shows it was recorded.
    a.answered.send_replace(1);
    wait("the next round's probe of A", probes(2)).await;
    assert!(ejected(&lb), "ended by a probe sent before the ejection");
    a.answered.send_replace(2);
    wait("the ejection ended by the probe sent after it", || {
        !ejected(&lb)
    })
    .await;
}

/// A, ejected, stays so through its next five probes and gets none of 20
/// requests.
async fn stays_ejected_through_five_probes(lb: &LoadBalancer<HttpClient>, a: &Server) {
    assert!(ejected(lb));
    let probes = a.probes.load(Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.probes.load(Ordering::SeqCst) < probes + 5 {
        assert!(std::time::Instant::now() < deadline, "no probes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(ejected(lb));
    let before = a.traffic.load(Ordering::SeqCst);
    send(lb, 20).await;
    assert_eq!(a.traffic.load(Ordering::SeqCst) - before, 0);
}

/// Waits (real time, at most 10 s) until `done` holds.
async fn wait(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
