//! Instances waiting for their first active probe do not tip the service
//! into panic mode (issue 10 items 2 and 6; helper 187).
//!
//! An instance that joins after the checks began is held unhealthy until
//! its first probe (Envoy's `PENDING_ACTIVE_HC`; Spring Cloud
//! LoadBalancer's `HealthCheckServiceInstanceListSupplier` lists it only
//! once a check passed). Counted as unhealthy in the panic threshold, a
//! scale-up of three instances whose health endpoint is slow to answer (a
//! warming JVM) beside two healthy instances and one failing its checks
//! put the service in panic for as long as the first probes took, and
//! panic mode sent 20 of 120 requests to the failing instance and 60 to
//! the unprobed ones. They are now out of the count, as Envoy's
//! `ignore_new_hosts_until_first_hc` leaves them out of "the total count
//! used for spillover and panic mode" ([envoy#12331]).
//! [envoy#6653]: panic routing on every cluster membership change, with
//! every health check passing (new hosts counted unhealthy until their
//! first check).
//!
//! [envoy#12331]: https://github.com/envoyproxy/envoy/issues/12331
//! [envoy#6653]: https://github.com/envoyproxy/envoy/issues/6653
//!
//! Real time over loopback, but no timing decides: the new instances'
//! health endpoints answer only when the test opens their gate.

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
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::health::ActiveHealthCheck;
use tower_ribbon::{Instance, LoadBalancer};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Answers `/work` with 200 (counted) and `/actuator/health` with `health`
/// once `gate` is open.
struct Server {
    addr: SocketAddr,
    traffic: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl Server {
    async fn start(health: u16, gate: watch::Receiver<bool>) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let traffic = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = oneshot::channel();
        let count = Arc::clone(&traffic);
        tokio::spawn(serve::serve(
            listener,
            stopped,
            |_| {},
            move |req| {
                let (count, mut gate) = (Arc::clone(&count), gate.clone());
                async move {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    if req.uri().path() == "/actuator/health" {
                        let _ = gate.wait_for(|open| *open).await;
                        *response.status_mut() = StatusCode::from_u16(health).unwrap();
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
            _stop: stop,
        }
    }

    fn instance(&self) -> Instance {
        Instance::new("svc", "127.0.0.1", self.addr.port()).expect("instance")
    }

    fn traffic(&self) -> usize {
        self.traffic.load(Ordering::SeqCst)
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

/// Waits (real time, at most 10 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn unhealthy(lb: &LoadBalancer<HttpClient>) -> Vec<bool> {
    let snapshot = lb.snapshot("svc").expect("svc");
    snapshot
        .endpoints()
        .iter()
        .map(|e| e.stats().is_active_unhealthy())
        .collect()
}

/// A balancer over `source`'s `svc` (refreshed every 20 ms), checked every
/// 600 s with thresholds of 1 and probes that may take 600 s, once its
/// first round holds the third instance (failing its checks) unhealthy.
async fn checked(source: &StaticSource) -> LoadBalancer<HttpClient> {
    let mut check = ActiveHealthCheck::new("/actuator/health");
    check.interval = Duration::from_secs(600);
    check.interval_jitter = Duration::ZERO;
    check.timeout = Duration::from_secs(600);
    check.unhealthy_threshold = 1;
    check.healthy_threshold = 1;
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_millis(20);
    refresh.jitter = 0.0;
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .service("svc")
        .refresh(refresh)
        .active_health_check(check)
        .build(Client::builder(TokioExecutor::new()).build_http())
        .expect("balancer");
    assert!(lb.ready_service("svc").await);
    until(
        "the first round holds the failing instance unhealthy",
        || unhealthy(&lb) == [false, false, true],
    )
    .await;
    lb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_up_waiting_for_its_first_probes_sends_nothing_to_a_failing_instance() {
    let (_open, open_now) = watch::channel(true);
    let (open_new, closed) = watch::channel(false);
    let a = Server::start(200, open_now.clone()).await;
    let b = Server::start(200, open_now.clone()).await;
    let failing = Server::start(503, open_now).await;
    let joining = [
        Server::start(200, closed.clone()).await,
        Server::start(200, closed.clone()).await,
        Server::start(200, closed).await,
    ];
    let source = StaticSource::new()
        .with_instances("svc", vec![a.instance(), b.instance(), failing.instance()]);
    let lb = checked(&source).await;
    send(&lb, 60).await;
    assert_eq!((a.traffic(), b.traffic(), failing.traffic()), (30, 30, 0));

    let mut listed = vec![a.instance(), b.instance(), failing.instance()];
    listed.extend(joining.iter().map(Server::instance));
    source.set_instances("svc", listed);
    until("the scale-up is listed", || {
        lb.snapshot("svc").expect("svc").endpoints().len() == 6
    })
    .await;
    // Their first probes are out and unanswered: 2 of the 3 probed
    // instances are healthy, no panic.
    assert_eq!(unhealthy(&lb), [false, false, true, true, true, true]);
    send(&lb, 120).await;
    assert_eq!(lb.in_panic("svc"), Some(false));
    let new: Vec<usize> = joining.iter().map(Server::traffic).collect();
    assert_eq!(
        (a.traffic(), b.traffic(), failing.traffic(), new),
        (90, 90, 0, vec![0, 0, 0]),
        "the failing and the unprobed instances get nothing"
    );

    // The first probes pass: the new instances take their shares.
    open_new.send_replace(true);
    until("the first probes pass", || {
        unhealthy(&lb) == [false, false, true, false, false, false]
    })
    .await;
    send(&lb, 100).await;
    assert_eq!(failing.traffic(), 0);
    let new: Vec<usize> = joining.iter().map(Server::traffic).collect();
    assert!(
        new.iter().all(|&n| (15..=25).contains(&n)),
        "each new instance about a fifth of 100: {new:?}"
    );
}

/// Joining instances whose first probes fail count as unhealthy from
/// then on: the failed first probes make the service recount, and 2
/// healthy of 6 probed is panic. Before, a failed first probe left the
/// verdict as it was (unhealthy while it waited) and nothing recounted:
/// the service stayed out of panic with 2 of 6 healthy until an unrelated
/// change, 120 requests going `[60, 60, 0, 0, 0, 0]` (helper 189).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_instances_failing_their_first_probes_count_at_once() {
    let (_open, open_now) = watch::channel(true);
    let (open_new, closed) = watch::channel(false);
    let a = Server::start(200, open_now.clone()).await;
    let b = Server::start(200, open_now.clone()).await;
    let failing = Server::start(503, open_now).await;
    let joining = [
        Server::start(503, closed.clone()).await,
        Server::start(503, closed.clone()).await,
        Server::start(503, closed).await,
    ];
    let source = StaticSource::new()
        .with_instances("svc", vec![a.instance(), b.instance(), failing.instance()]);
    let lb = checked(&source).await;
    let mut listed = vec![a.instance(), b.instance(), failing.instance()];
    listed.extend(joining.iter().map(Server::instance));
    source.set_instances("svc", listed);
    until("the scale-up is listed", || {
        lb.snapshot("svc").expect("svc").endpoints().len() == 6
    })
    .await;
    send(&lb, 6).await;
    assert_eq!(lb.in_panic("svc"), Some(false), "waiting: 2 of 3 probed");

    // The first probes fail; no list change follows.
    open_new.send_replace(true);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lb.in_panic("svc") != Some(true) {
        assert!(
            std::time::Instant::now() < deadline,
            "never in panic with 2 of 6 healthy"
        );
        send(&lb, 1).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before: Vec<usize> = joining.iter().map(Server::traffic).collect();
    send(&lb, 120).await;
    let after: Vec<usize> = joining.iter().map(Server::traffic).collect();
    assert!(
        before.iter().zip(&after).all(|(b, a)| a - b == 20),
        "panic spreads over all six: {before:?} → {after:?}"
    );
}
