//! An active-check verdict takes effect when it is reached, not when the
//! round of probes it belongs to ends (issue 10 item 6; helper 199).
//!
//! A round waits on its slowest probe: up to the probe `timeout` (2 s by
//! default), or `ceil(n / max_concurrent_probes)` of them over a large
//! list. Verdicts were applied (health recounted, the picker rebuilt) only
//! then, so an instance found unhealthy kept its share meanwhile (43 of
//! 173 requests over 1.5 s while one slow health endpoint held the round)
//! and one found healthy again got nothing. Envoy applies each host's
//! check result as it comes (each host has its own timer).
//!
//! Real time over loopback, but no timing decides: the third instance's
//! health endpoint answers its first probe at once and holds every later
//! one until the test ends, so the second round never ends; the second
//! instance's second probe is held until the test releases it, after the
//! balancer counted health once more with it held. Each test waits for
//! the verdict it needs, then 100 ms (a rebuild takes microseconds), then
//! counts requests.

#[path = "support/serve.rs"]
mod serve;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
use tower_ribbon::{Instance, LoadBalancer};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Answers `/work` with 200 (counted) and its n-th probe of `/health` with
/// `health[n]` (the last one after), holding probes from `hold_from` on
/// until `release` (or the test's end).
struct Server {
    addr: SocketAddr,
    traffic: Arc<AtomicUsize>,
    probes: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
    release: watch::Sender<bool>,
}

impl Server {
    async fn start(health: &[u16], hold_from: Option<usize>) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (traffic, probes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (stop, stopped) = oneshot::channel();
        let (release, held) = watch::channel(false);
        let (count, probed, health) = (Arc::clone(&traffic), Arc::clone(&probes), health.to_vec());
        tokio::spawn(serve::serve(
            listener,
            stopped,
            |_| {},
            move |req| {
                let (count, probed, health, mut held) = (
                    Arc::clone(&count),
                    Arc::clone(&probed),
                    health.clone(),
                    held.clone(),
                );
                async move {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    if req.uri().path() == "/health" {
                        let n = probed.fetch_add(1, Ordering::SeqCst);
                        if hold_from.is_some_and(|from| n >= from) {
                            let _ = held.wait_for(|released| *released).await;
                        }
                        let status = health.get(n).or(health.last()).copied().unwrap_or(200);
                        *response.status_mut() = StatusCode::from_u16(status).unwrap();
                    } else {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok::<_, Infallible>(response)
                }
            },
        ));
        Server {
            addr,
            traffic,
            probes,
            _stop: stop,
            release,
        }
    }

    fn instance(&self) -> Instance {
        Instance::new("svc", "127.0.0.1", self.addr.port()).expect("instance")
    }

    fn traffic(&self) -> usize {
        self.traffic.load(Ordering::SeqCst)
    }
}

/// A balancer over the three, round robin, checked every 50 ms from
/// 300 ms on, with thresholds of 1 and probes that may take 600 s.
async fn balancer(servers: [&Server; 3]) -> LoadBalancer<HttpClient> {
    let mut check = ActiveHealthCheck::new("/health");
    check.interval = Duration::from_millis(50);
    check.interval_jitter = Duration::ZERO;
    // After the list is published: every probe is a scheduled round's (a
    // list published after the checks began is probed at once by a round
    // of first probes of its own, which C's first answer ends).
    check.initial_delay = Duration::from_millis(300);
    check.timeout = Duration::from_secs(600);
    check.healthy_threshold = 1;
    check.unhealthy_threshold = 1;
    let instances = servers.iter().map(|s| s.instance()).collect();
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances("svc", instances))
        .service("svc")
        .active_health_check(check)
        .outlier_detection(OutlierDetection::disabled())
        .build(Client::builder(TokioExecutor::new()).build_http())
        .expect("balancer");
    assert!(lb.ready_service("svc").await);
    lb
}

async fn send(lb: &LoadBalancer<HttpClient>, n: usize) {
    for _ in 0..n {
        let req = http::Request::get("http://svc/work")
            .body(Empty::new())
            .unwrap();
        let _ = lb.request(req).await;
    }
}

/// Waits (real time, at most 10 s) until `done` holds, then 100 ms.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn unhealthy(lb: &LoadBalancer<HttpClient>) -> Vec<bool> {
    let snapshot = lb.snapshot("svc").expect("svc");
    snapshot
        .endpoints()
        .iter()
        .map(|e| e.stats().is_active_unhealthy())
        .collect()
}

/// Both B's and C's second probes are out: the second round is held.
async fn second_round_held(lb: &LoadBalancer<HttpClient>, b: &Server, c: &Server) {
    let held = || b.probes.load(Ordering::SeqCst) >= 2 && c.probes.load(Ordering::SeqCst) >= 2;
    until("the second round's probes of B and C are out", held).await;
    // The view counts health once more at this pick, before B's verdict.
    send(lb, 30).await;
}

/// B passes its first probe and fails its second while C holds that
/// round: B gets nothing from then on (before: 20 of 60, its full share,
/// until the round ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_found_unhealthy_mid_round_gets_nothing() {
    let a = Server::start(&[200], None).await;
    let b = Server::start(&[200, 503], Some(1)).await;
    let c = Server::start(&[200], Some(1)).await;
    let lb = balancer([&a, &b, &c]).await;
    second_round_held(&lb, &b, &c).await;
    assert_eq!((a.traffic(), b.traffic(), c.traffic()), (10, 10, 10));
    b.release.send_replace(true);
    until("B's failed second probe", || {
        unhealthy(&lb) == [false, true, false]
    })
    .await;
    send(&lb, 30).await;
    assert_eq!((a.traffic(), b.traffic(), c.traffic()), (25, 10, 25));
}

/// B fails its first probe and passes its second while C holds that round:
/// B takes its share from then on (before: 0 of 30 until the round ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_found_healthy_mid_round_takes_its_share() {
    let a = Server::start(&[200], None).await;
    let b = Server::start(&[503, 200], Some(1)).await;
    let c = Server::start(&[200], Some(1)).await;
    let lb = balancer([&a, &b, &c]).await;
    second_round_held(&lb, &b, &c).await;
    assert_eq!((a.traffic(), b.traffic(), c.traffic()), (15, 0, 15));
    b.release.send_replace(true);
    until("B's passed second probe", || {
        unhealthy(&lb) == [false, false, false]
    })
    .await;
    send(&lb, 30).await;
    assert_eq!((a.traffic(), b.traffic(), c.traffic()), (25, 10, 25));
}
