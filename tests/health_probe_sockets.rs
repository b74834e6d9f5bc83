//! Active health checks over many instances, each on its own address (as
//! real instances are): `max_concurrent_probes` bounds the sockets a round
//! holds, not only its tasks. Before, the probe client was a hyper-util
//! `Client` with the default pool (idle connections kept 90 s, no limit
//! per host), so every probed instance kept its idle connection: 100
//! instances with `max_concurrent_probes` = 4 held 100 probe connections
//! open at once and after the round, and with the default 10 s interval
//! each round reused them, so they stayed open for good (helper 157; the
//! 800 instances of `health_probe_bounds.rs` share one management port, so
//! one pool, and missed it). Now a probe's connection closes with its
//! answer. Real time, real HTTP/1 servers on 127.0.0.1 (plain and TLS)
//! counting the connections open at once.
//!
//! Peers: Kubernetes' prober turned keep-alive off for the same reasons
//! (kubernetes/kubernetes#15643, "Liveness checks against a pod that
//! supports keep-alive are broken", <https://github.com/kubernetes/kubernetes/issues/15643>,
//! fixed by PR #15733, <https://github.com/kubernetes/kubernetes/pull/15733>:
//! "kubelet checks many pods with different addresses and ports"), and
//! later cut the probes' TIME-WAIT (PR #115143,
//! <https://github.com/kubernetes/kubernetes/pull/115143>); with
//! `Connection: close` the instance closes first and holds the TIME-WAIT.

#[path = "support/tls.rs"]
mod tls_support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper::Response;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tls_support::{Pki, pki, server_config};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::ActiveHealthCheck;
use tower_ribbon::tls::HttpsClient;
use tower_ribbon::{Instance, LoadBalancer};

const INSTANCES: usize = 100;
const BOUND: usize = 4;

#[derive(Default)]
struct Counters {
    open: AtomicUsize,
    most_open: AtomicUsize,
    requests: AtomicUsize,
}

impl Counters {
    fn read(&self) -> (usize, usize, usize) {
        (
            self.requests.load(Ordering::SeqCst),
            self.most_open.load(Ordering::SeqCst),
            self.open.load(Ordering::SeqCst),
        )
    }
}

async fn serve<S>(stream: S, counters: Arc<Counters>, body: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let c = Arc::clone(&counters);
    let service = service_fn(move |_req| {
        c.requests.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// A keep-alive HTTP/1 server answering 200 with `body` (over TLS when
/// `tls` is given), counting its connections open at once.
async fn server(counters: Arc<Counters>, body: &'static str, tls: Option<TlsAcceptor>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let now = counters.open.fetch_add(1, Ordering::SeqCst) + 1;
            counters.most_open.fetch_max(now, Ordering::SeqCst);
            let (counters, tls) = (Arc::clone(&counters), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => serve(stream, Arc::clone(&counters), body).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve(stream, Arc::clone(&counters), body).await;
                        }
                    }
                }
                counters.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    port
}

fn check() -> ActiveHealthCheck {
    let mut check = ActiveHealthCheck::new("/health");
    check.interval = Duration::from_secs(600);
    check.interval_jitter = Duration::ZERO;
    check.max_concurrent_probes = BOUND;
    check
}

/// One round over `instances`; the counters 200 ms after every instance
/// was probed.
async fn round(
    counters: &Counters,
    instances: Vec<Instance>,
    check: ActiveHealthCheck,
) -> (usize, usize, usize) {
    let n = instances.len();
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances("svc", instances))
        .service("svc")
        .active_health_check(check)
        .build(Client::builder(TokioExecutor::new()).build_http::<String>())
        .expect("balancer");
    assert!(lb.ready_service("svc").await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while counters.requests.load(Ordering::SeqCst) < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    counters.read()
}

async fn plain_round(body: &'static str) -> (usize, usize, usize) {
    let counters = Arc::new(Counters::default());
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        let port = server(Arc::clone(&counters), body, None).await;
        instances.push(Instance::new("svc", "127.0.0.1", port).expect("instance"));
    }
    round(&counters, instances, check()).await
}

fn assert_bounded((requests, most_open, open_after): (usize, usize, usize), n: usize) {
    assert_eq!(requests, n, "every instance probed once");
    assert!(
        most_open <= 2 * BOUND && open_after == 0,
        "max_concurrent_probes = {BOUND}, {n} instances: {most_open} probe connections open at \
         once, {open_after} still open 200 ms after the round (at most {} at once, none after)",
        2 * BOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_with_empty_answers_keeps_at_most_the_bound_of_sockets_open() {
    assert_bounded(plain_round("").await, INSTANCES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_with_actuator_answers_keeps_at_most_the_bound_of_sockets_open() {
    assert_bounded(plain_round("{\"status\":\"UP\"}").await, INSTANCES);
}

/// `https` probes through a client given with `https_client` keep that
/// client's pool: built with `pool_max_idle_per_host(0)` (as the default
/// `https` probe client is) a round keeps the bound; with hyper-util's
/// default pool (the control) every instance keeps its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_probes_keep_the_bound_with_a_client_that_keeps_no_idle_connection() {
    const TLS_INSTANCES: usize = 24;
    let pki: Pki = pki();
    let acceptor = TlsAcceptor::from(Arc::new(server_config(
        &pki,
        vec![b"http/1.1".to_vec()],
        false,
    )));
    let mut results = Vec::new();
    for max_idle in [0, usize::MAX] {
        let counters = Arc::new(Counters::default());
        let mut instances = Vec::new();
        for _ in 0..TLS_INSTANCES {
            let port = server(Arc::clone(&counters), "", Some(acceptor.clone())).await;
            let instance = Instance::new("svc", "localhost", port).expect("instance");
            instances.push(instance.with_secure(true));
        }
        let client: HttpsClient<Empty<Bytes>> = HttpsClient::builder()
            .webpki_roots(false)
            .add_root_pem(pki.ca_pem.as_bytes())
            .expect("root")
            .http2(false)
            .pool_max_idle_per_host(max_idle)
            .build()
            .expect("client");
        results.push(round(&counters, instances, check().https_client(client)).await);
    }
    assert_bounded(results[0], TLS_INSTANCES);
    let (requests, most_open, open_after) = results[1];
    assert_eq!(requests, TLS_INSTANCES);
    assert_eq!(
        (most_open, open_after),
        (TLS_INSTANCES, TLS_INSTANCES),
        "control: hyper-util's default pool keeps one idle connection per instance"
    );
}

/// 20 hung instances, probe timeout 100 ms, a round every 50 ms: a
/// timed-out probe's socket is closed (this held before the fix too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_probes_leave_no_socket_behind() {
    use tokio::io::AsyncReadExt;
    const HUNG: usize = 20;
    let counters = Arc::new(Counters::default());
    let mut instances = Vec::new();
    for _ in 0..HUNG {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let now = counters.open.fetch_add(1, Ordering::SeqCst) + 1;
                counters.most_open.fetch_max(now, Ordering::SeqCst);
                counters.requests.fetch_add(1, Ordering::SeqCst);
                let counters = Arc::clone(&counters);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                    counters.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        instances.push(Instance::new("svc", "127.0.0.1", port).expect("instance"));
    }
    let mut check = check();
    check.interval = Duration::from_millis(50);
    check.timeout = Duration::from_millis(100);
    let _lb: LoadBalancer<Client<HttpConnector, String>> = LoadBalancer::builder()
        .source(StaticSource::new().with_instances("svc", instances))
        .service("svc")
        .active_health_check(check)
        .build(Client::builder(TokioExecutor::new()).build_http::<String>())
        .expect("balancer");
    // Three rounds, each 5 probe times (20 / 4) of 100 ms.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while counters.requests.load(Ordering::SeqCst) < 3 * HUNG
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (connections, most_open, open) = counters.read();
    assert!(connections >= 3 * HUNG, "{connections} probe connections");
    assert!(
        most_open <= 2 * BOUND,
        "{connections} probe connections made, {most_open} open at once, {open} open now; at \
         most {} promised",
        2 * BOUND
    );
}
