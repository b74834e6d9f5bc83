//! A probe of a scheduled round is spawned only when the round reaches it,
//! possibly long after the round took its list (`max_concurrent_probes`:
//! each earlier probe may hold it up to `timeout`). An instance that left
//! and rejoined meanwhile (stats kept: a request of its in flight) got a
//! probe built from the OLD listing (its old `management.port`) carrying
//! the NEW join count, and its failure took the relisted instance's first
//! verdict: B, healthy on its new port, was held out (0 of 20 requests)
//! until the next round (helper 229). The join count is now read when the
//! round takes its list. Paused time, real loopback HTTP/1 servers; the
//! control keeps the management port.

#[path = "support/serve.rs"]
mod serve;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper::{Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::health::{ActiveHealthCheck, OutlierDetection};
use tower_ribbon::{Instance, LoadBalancer};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Probes seen: when, which server, which port.
type ProbeLog = Arc<Mutex<Vec<(Instant, &'static str, u16)>>>;

/// A server: `/health` answers `health()` after `delay()` ms; `/work`
/// answers 200, or hangs when `hang_work`.
async fn server(
    health: Arc<dyn Fn() -> (u64, u16) + Send + Sync>,
    hang_work: Arc<AtomicBool>,
    log: ProbeLog,
    name: &'static str,
) -> (SocketAddr, Arc<AtomicUsize>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    let work = Arc::new(AtomicUsize::new(0));
    let w = Arc::clone(&work);
    tokio::spawn(serve::serve(
        listener,
        stopped,
        |_| {},
        move |req| {
            let (health, hang, w, log) =
                (health.clone(), hang_work.clone(), w.clone(), log.clone());
            async move {
                let status = if req.uri().path() == "/health" {
                    let (ms, status) = health();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    log.lock().unwrap().push((Instant::now(), name, status));
                    status
                } else {
                    w.fetch_add(1, Ordering::SeqCst);
                    if hang.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    200
                };
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::from_u16(status).unwrap();
                Ok::<_, Infallible>(r)
            }
        },
    ));
    (addr, work, stop)
}

async fn get(lb: &LoadBalancer<HttpClient>) -> u16 {
    let req = http::Request::get("http://svc/work")
        .body(Empty::new())
        .unwrap();
    match tower::ServiceExt::oneshot(lb.clone(), req).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn run(new_management_port: bool) -> (bool, usize) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let restarted = Arc::new(AtomicBool::new(false));
    // H: its probes hang (timeout 5 s), its /work answers.
    let (h_addr, _h_work, _h) = server(
        Arc::new(|| (60_000, 200)),
        Arc::new(AtomicBool::new(false)),
        Arc::clone(&log),
        "H",
    )
    .await;
    // B's main port: /work held for ever by the old process, answered by the new.
    let b_hang = Arc::new(AtomicBool::new(true));
    let (b_addr, b_work, _b) = server(
        Arc::new(|| (0, 200)),
        Arc::clone(&b_hang),
        Arc::clone(&log),
        "B-main",
    )
    .await;
    // B's old management port: 200 while the old process runs, 503 after.
    let r = Arc::clone(&restarted);
    let (m1, _, _m1) = server(
        Arc::new(move || {
            (
                0,
                if new_management_port && r.load(Ordering::SeqCst) {
                    503
                } else {
                    200
                },
            )
        }),
        Arc::new(AtomicBool::new(false)),
        Arc::clone(&log),
        "B-mgmt-old",
    )
    .await;
    // B's new management port: the restarted process, healthy (answers in 4 s).
    let (m2, _, _m2) = server(
        Arc::new(|| (4_000, 200)),
        Arc::new(AtomicBool::new(false)),
        Arc::clone(&log),
        "B-mgmt-new",
    )
    .await;
    let h = Instance::new("svc", "127.0.0.1", h_addr.port()).unwrap();
    let b_old = Instance::new("svc", "127.0.0.1", b_addr.port())
        .unwrap()
        .with_metadata("management.port", m1.port().to_string());
    let b_new = Instance::new("svc", "127.0.0.1", b_addr.port())
        .unwrap()
        .with_metadata(
            "management.port",
            if new_management_port {
                m2.port()
            } else {
                m1.port()
            }
            .to_string(),
        );
    let source = StaticSource::new().with_instances("svc", vec![h.clone(), b_old]);
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_millis(500);
    refresh.jitter = 0.0;
    let mut check = ActiveHealthCheck::new("/health");
    check.interval = Duration::from_secs(10);
    check.interval_jitter = Duration::ZERO;
    check.initial_delay = Duration::ZERO;
    check.timeout = Duration::from_secs(5);
    check.max_concurrent_probes = 1;
    let mut detection = OutlierDetection::default();
    detection.enabled = false;
    detection.panic_threshold_percent = 0;
    let lb: LoadBalancer<HttpClient> = LoadBalancer::builder()
        .source(source.clone())
        .service("svc")
        .refresh(refresh)
        .active_health_check(check)
        .outlier_detection(detection)
        .read_timeout(None)
        .retry(tower_ribbon::retry::RetryPolicy::none())
        .build(Client::builder(TokioExecutor::new()).build_http())
        .expect("balancer");
    assert!(lb.ready_service("svc").await);
    let t0 = Instant::now();
    // Round 1: H hangs 5 s, then B passes: ends at ~5 s.
    tokio::time::sleep(Duration::from_millis(6_000)).await;
    // Two requests: B's is held (its stats are kept when it leaves).
    for _ in 0..2 {
        let lb = lb.clone();
        tokio::spawn(async move { get(&lb).await });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b_work.load(Ordering::SeqCst), 1, "B holds one request");
    // Round 2 starts at ~15 s: H's probe holds it to ~20 s, B's waits.
    tokio::time::sleep_until(t0 + Duration::from_millis(15_500)).await;
    // B leaves ...
    source.set_instances("svc", vec![h.clone()]);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(lb.snapshot("svc").unwrap().endpoints().len(), 1);
    // ... and comes back restarted, healthy, its management port moved.
    restarted.store(true, Ordering::SeqCst);
    b_hang.store(false, Ordering::SeqCst);
    source.set_instances("svc", vec![h.clone(), b_new]);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(lb.snapshot("svc").unwrap().endpoints().len(), 2);
    // Round 2 reaches B at ~20 s (stale URL); B's own first probe (4 s) lands ~20.5 s.
    tokio::time::sleep_until(t0 + Duration::from_millis(23_000)).await;
    let unhealthy = lb
        .snapshot("svc")
        .unwrap()
        .endpoints()
        .iter()
        .find(|e| e.instance().port() == b_addr.port())
        .map(|e| e.stats().is_active_unhealthy())
        .unwrap();
    let before = b_work.load(Ordering::SeqCst);
    for _ in 0..20 {
        get(&lb).await;
    }
    let to_b = b_work.load(Ordering::SeqCst) - before;
    eprintln!(
        "new port {new_management_port}: probes {:?}; B unhealthy {unhealthy}, {to_b} of 20 to B",
        log.lock()
            .unwrap()
            .iter()
            .map(|(t, n, s)| (t.duration_since(t0).as_millis(), *n, *s))
            .collect::<Vec<_>>()
    );
    (unhealthy, to_b)
}

/// B relisted healthy (its new management port passes) is held out by a
/// probe the round built from its old listing.
#[tokio::test(start_paused = true)]
async fn a_probe_built_from_the_old_listing_does_not_decide_the_relisted_instance() {
    let (unhealthy, to_b) = run(true).await;
    assert!(
        !unhealthy && to_b == 10,
        "relisted B healthy on its new management port: unhealthy = {unhealthy}, {to_b} of 20 \
         requests to it; the verdict came from a probe of its old management port"
    );
}

/// Control: same management port: the late-spawned probe reaches the new
/// process, and B is in.
#[tokio::test(start_paused = true)]
async fn control_same_management_port() {
    let (unhealthy, to_b) = run(false).await;
    assert_eq!((unhealthy, to_b), (false, 10));
}
