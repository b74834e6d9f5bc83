//! A probe sent to an instance before it left the list, answered after
//! the instance was listed again (same address, stats kept because a
//! request of its was still in flight), no longer decides the relisted
//! instance's first verdict: a late pass of the old process let a failing
//! restart in (10 of 20 requests to it, all 503), a late failure held a
//! healthy restart out until the next round (0 of 20; helper 222). Each
//! probe carries the instance's join count from when it was sent, and a
//! verdict needs the current one. Paused time, real loopback HTTP/1
//! servers; the controls show probes answered before the instance left
//! still count.

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

/// `b`: its old incarnation answers probes 200 after 2.5 s and holds
/// `/work` for ever; once `restarted`, probes get 503 after 1.5 s and
/// `/work` 503 at once (a new process not ready yet).
struct B {
    addr: SocketAddr,
    restarted: Arc<AtomicBool>,
    work: Arc<AtomicUsize>,
    probes: Arc<Mutex<Vec<(Instant, bool)>>>,
    _stop: oneshot::Sender<()>,
}

async fn start_b(old_probe_ms: u64, old_status: u16, new_probe_ms: u64, new_status: u16) -> B {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel();
    let restarted = Arc::new(AtomicBool::new(false));
    let work = Arc::new(AtomicUsize::new(0));
    let probes = Arc::new(Mutex::new(Vec::new()));
    let (r, w, p) = (
        Arc::clone(&restarted),
        Arc::clone(&work),
        Arc::clone(&probes),
    );
    tokio::spawn(serve::serve(
        listener,
        stopped,
        |_| {},
        move |req| {
            let (r, w, p) = (Arc::clone(&r), Arc::clone(&w), Arc::clone(&p));
            async move {
                let new = r.load(Ordering::SeqCst);
                let probe = req.uri().path() == "/health";
                let status = if probe {
                    p.lock().unwrap().push((Instant::now(), new));
                    let (ms, status) = if new {
                        (new_probe_ms, new_status)
                    } else {
                        (old_probe_ms, old_status)
                    };
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    status
                } else {
                    w.fetch_add(1, Ordering::SeqCst);
                    if new {
                        new_status
                    } else {
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                };
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                Ok::<_, Infallible>(response)
            }
        },
    ));
    B {
        addr,
        restarted,
        work,
        probes,
        _stop: stop,
    }
}

async fn start_a() -> (SocketAddr, Arc<AtomicUsize>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel();
    let work = Arc::new(AtomicUsize::new(0));
    let w = Arc::clone(&work);
    tokio::spawn(serve::serve(
        listener,
        stopped,
        |_| {},
        move |req| {
            let w = Arc::clone(&w);
            async move {
                if req.uri().path() != "/health" {
                    w.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            }
        },
    ));
    (addr, work, stop)
}

fn instance(addr: SocketAddr) -> Instance {
    Instance::new("svc", addr.ip().to_string(), addr.port()).expect("instance")
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

/// t = 0: first round, both pass. t ≈ 0: a `/work` request held by B's old
/// process (in flight: B's stats are kept when it leaves). t ≈ 10: second
/// round, B's probe answered 200 only at 12.5. B leaves the list at
/// t ≈ 11, comes back (restarted, failing its checks) at t ≈ 12: it waits
/// for its first probe, sent at once and failing at 13. The old probe's
/// pass (12.5) takes the first verdict: B is healthy, and its new probe's
/// failure is one of three needed.
#[tokio::test(start_paused = true)]
async fn a_probe_sent_before_an_instance_left_does_not_decide_its_first_verdict_when_relisted() {
    let (unhealthy, to_b, statuses) = run(2_500, 200, 1_500, 503).await;
    assert!(
        unhealthy && to_b == 0,
        "B relisted with a failing first probe (503): unhealthy = {unhealthy}, \
         {to_b} of 20 requests sent to it ({} answered 503); its verdict came from a probe \
         sent to it before it left the list",
        statuses.iter().filter(|s| **s == 503).count()
    );
}

/// Control: the old probe answered (200) before B left: the relisted B's
/// failing first probe holds it out.
#[tokio::test(start_paused = true)]
async fn control_an_old_probe_answered_before_the_instance_left() {
    let (unhealthy, to_b, _) = run(100, 200, 1_500, 503).await;
    assert_eq!((unhealthy, to_b), (true, 0));
}

async fn run(
    old_probe_ms: u64,
    old_status: u16,
    new_probe_ms: u64,
    new_status: u16,
) -> (bool, usize, Vec<u16>) {
    let (a_addr, a_work, _a_stop) = start_a().await;
    let b = start_b(old_probe_ms, old_status, new_probe_ms, new_status).await;
    let source =
        StaticSource::new().with_instances("svc", vec![instance(a_addr), instance(b.addr)]);
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_secs(1);
    refresh.jitter = 0.0;
    let mut check = ActiveHealthCheck::new("/health");
    check.interval = Duration::from_secs(10);
    check.interval_jitter = Duration::ZERO;
    check.timeout = Duration::from_secs(3);
    // Passive ejection off, so only the active verdict decides.
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
    // Round 1 (old B answers after `old_probe_ms`).
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    // One request to each: B's is held.
    let held = {
        let lb = lb.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                let lb = lb.clone();
                tokio::spawn(async move { get(&lb).await });
            }
        })
    };
    held.await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        (a_work.load(Ordering::SeqCst), b.work.load(Ordering::SeqCst)),
        (1, 1)
    );

    // Round 2 starts 10 s after round 1 ended.
    tokio::time::sleep_until(t0 + Duration::from_millis(10_200 + old_probe_ms.min(3_000))).await;
    assert_eq!(
        b.probes.lock().unwrap().len(),
        2,
        "round 2 sent B's second probe"
    );
    // B leaves (its /work request still in flight) ...
    source.set_instances("svc", vec![instance(a_addr)]);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(lb.snapshot("svc").unwrap().endpoints().len(), 1);
    // ... and comes back restarted (same address), failing its checks.
    b.restarted.store(true, Ordering::SeqCst);
    source.set_instances("svc", vec![instance(a_addr), instance(b.addr)]);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let snap = lb.snapshot("svc").unwrap();
    assert_eq!(snap.endpoints().len(), 2);
    // Let the old probe (answered at ~15 s) and the relisted B's first
    // probe (503 one second after it was sent) land.
    tokio::time::sleep_until(t0 + Duration::from_millis(18_500)).await;
    let probes = b.probes.lock().unwrap().clone();
    let new_probes = probes.iter().filter(|(_, new)| *new).count();
    assert!(new_probes >= 1, "the relisted B was probed: {probes:?}");
    let b_stats_unhealthy = lb
        .snapshot("svc")
        .unwrap()
        .endpoints()
        .iter()
        .find(|e| e.instance().port() == b.addr.port())
        .map(|e| e.stats().is_active_unhealthy())
        .unwrap();
    let before = b.work.load(Ordering::SeqCst);
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(&lb).await);
    }
    let to_b = b.work.load(Ordering::SeqCst) - before;
    eprintln!(
        "probes {:?} unhealthy {b_stats_unhealthy} to_b {to_b} statuses {statuses:?}",
        probes
            .iter()
            .map(|(t, n)| (t.duration_since(t0).as_millis(), *n))
            .collect::<Vec<_>>()
    );
    (b_stats_unhealthy, to_b, statuses)
}

/// The other way round: B's old process fails its last probe late (a
/// 503 answered 2.9 s after it was sent, just inside the 3 s timeout),
/// after B came back restarted and healthy (its probes pass, in 2 s).
/// The stale failure takes the relisted B's first verdict, and B's own
/// passing probe is then one of the two passes an unhealthy instance
/// needs: a healthy instance gets nothing until the next round, 10 s on.
#[tokio::test(start_paused = true)]
async fn a_late_failure_of_the_old_process_does_not_hold_out_the_relisted_one() {
    let (unhealthy, to_b, _) = run(2_900, 503, 2_000, 200).await;
    assert!(
        !unhealthy && to_b == 10,
        "B relisted, its first probe passed: unhealthy = {unhealthy}, {to_b} of 20 requests \
         sent to it; a failure of a probe sent before it left decided its first verdict"
    );
}

/// Control: the old process's failure answered before B left.
#[tokio::test(start_paused = true)]
async fn control_a_failure_answered_before_the_instance_left() {
    let (unhealthy, to_b, _) = run(100, 503, 2_000, 200).await;
    assert_eq!((unhealthy, to_b), (false, 10));
}
