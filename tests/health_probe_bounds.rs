//! Active health checks over many instances: a round keeps at most
//! `ActiveHealthCheck::max_concurrent_probes` probes (tasks and sockets) in
//! flight, so a large list neither opens a socket per instance at one
//! instant nor fails healthy instances for want of file descriptors.
//!
//! Real time, real sockets: a loopback management server behind 800
//! instances (each instance's `management.port` names it), in a process
//! whose descriptor limit is lowered to 400 (`setrlimit`, this binary
//! only), as a service under systemd's default soft limit of 1 024 with a
//! larger list would be.
//!
//! Peers: Envoy checks each host on its own timer, spread over the
//! interval, and keeps one connection per host
//! (<https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/health_checking>);
//! envoyproxy/envoy#10498 ("Burst of HealthChecking Probes",
//! <https://github.com/envoyproxy/envoy/issues/10498>) reports every
//! host of a service checked at one instant.

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
use tokio::net::TcpListener;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::{ActiveHealthCheck, MANAGEMENT_PORT};
use tower_ribbon::{Instance, LoadBalancer};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Instances in the list.
const INSTANCES: usize = 800;
/// The descriptor limit of this test process.
const FD_LIMIT: u64 = 400;

/// The tests of this binary share its descriptor limit: one at a time.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Lowers this process's soft descriptor limit to [`FD_LIMIT`].
fn lower_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit`.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_cur = FD_LIMIT.min(limit.rlim_max);
    // SAFETY: `limit` is a valid `rlimit` no larger than the hard limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

/// A loopback HTTP/1 server answering 200 to every request, counting
/// requests and the most connections it held open at once.
struct CountingServer {
    port: u16,
    requests: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
}

impl CountingServer {
    async fn start() -> Self {
        Self::start_slow(Duration::ZERO).await
    }

    /// [`start`](Self::start), each answer `delay` late.
    async fn start_slow(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let most_open = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (seen, most) = (Arc::clone(&requests), Arc::clone(&most_open));
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    // Out of descriptors: the connection waits in the
                    // backlog; try again shortly.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let (open, seen) = (Arc::clone(&open), Arc::clone(&seen));
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        seen.fetch_add(1, Ordering::SeqCst);
                        async move {
                            tokio::time::sleep(delay).await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            requests,
            most_open,
        }
    }
}

/// 800 instances on unused ports whose probes all go to `server`'s port.
fn instances(server: &CountingServer) -> Vec<Instance> {
    instances_from(server, 0)
}

/// [`instances`], on ports from `30_000 + first`.
fn instances_from(server: &CountingServer, first: usize) -> Vec<Instance> {
    (first..first + INSTANCES)
        .map(|i| {
            let port = u16::try_from(30_000 + i).expect("port");
            Instance::new("svc", "127.0.0.1", port)
                .expect("instance")
                .with_metadata(MANAGEMENT_PORT, server.port.to_string())
        })
        .collect()
}

fn unhealthy_count(lb: &LoadBalancer<HttpClient>) -> usize {
    lb.snapshot("svc")
        .expect("service")
        .endpoints()
        .iter()
        .filter(|e| e.stats().is_active_unhealthy())
        .count()
}

/// Three rounds over 800 instances under a 400-descriptor limit: every
/// probe is answered 200, so no instance may turn unhealthy, and the
/// server never holds more connections than the probes allowed in flight.
///
/// Before the bound, a round spawned all 800 probes at once: each opened
/// its own socket, the process ran out of descriptors (EMFILE), and
/// healthy instances failed their probes.
#[tokio::test]
async fn a_round_over_many_instances_keeps_its_probes_in_flight_bounded() {
    let _alone = ALONE.lock().await;
    lower_fd_limit();
    let server = CountingServer::start().await;
    let mut check = ActiveHealthCheck::new("/health");
    check.interval = Duration::from_millis(100);
    check.interval_jitter = Duration::ZERO;
    check.timeout = Duration::from_secs(2);
    check.unhealthy_threshold = 1;
    check.healthy_threshold = 1;
    assert_eq!(check.max_concurrent_probes, 64);
    let client = Client::builder(TokioExecutor::new()).build_http();
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances("svc", instances(&server)))
        .service("svc")
        .active_health_check(check)
        .build(client)
        .expect("balancer");
    assert!(lb.ready_service("svc").await);
    // Three full rounds answered (bounded: 30 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut most_unhealthy = 0;
    while server.requests.load(Ordering::SeqCst) < 3 * INSTANCES
        && tokio::time::Instant::now() < deadline
    {
        most_unhealthy = most_unhealthy.max(unhealthy_count(&lb));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    most_unhealthy = most_unhealthy.max(unhealthy_count(&lb));
    let answered = server.requests.load(Ordering::SeqCst);
    let most_open = server.most_open.load(Ordering::SeqCst);
    eprintln!(
        "{answered} probes answered, {most_unhealthy} unhealthy at most, {most_open} connections at once"
    );
    assert_eq!(
        (answered >= 3 * INSTANCES, most_unhealthy, most_open.min(64)),
        (true, 0, most_open),
        "{answered} probes answered in 30 s, {most_unhealthy} instances unhealthy at once, \
         {most_open} connections at once"
    );
}

/// 800 instances join while a scheduled round over 800 others runs (each
/// probe answered 50 ms late, so the round lasts about 13 × 50 ms): their
/// first probes run beside the round, each side with its own budget of
/// `max_concurrent_probes`, so the server holds more than 64 connections
/// at once (the two run together) and never more than 128 (the bound the
/// docs state), and no instance turns unhealthy under the 400-descriptor
/// limit.
#[tokio::test]
async fn first_probes_beside_a_round_stay_within_twice_the_bound() {
    let _alone = ALONE.lock().await;
    lower_fd_limit();
    let server = CountingServer::start_slow(Duration::from_millis(50)).await;
    let mut check = ActiveHealthCheck::new("/health");
    check.interval = Duration::from_secs(600);
    check.interval_jitter = Duration::ZERO;
    check.timeout = Duration::from_secs(5);
    let source = StaticSource::new().with_instances("svc", instances(&server));
    let mut refresh = tower_ribbon::discovery::RefreshConfig::default();
    refresh.interval = Duration::from_millis(50);
    refresh.jitter = 0.0;
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .service("svc")
        .refresh(refresh)
        .active_health_check(check)
        .build(Client::builder(TokioExecutor::new()).build_http())
        .expect("balancer");
    assert!(lb.ready_service("svc").await);
    // The round has begun (its first probes answered or under way).
    while server.requests.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut both = instances(&server);
    both.extend(instances_from(&server, INSTANCES));
    source.set_instances("svc", both);
    // Both sets probed once (bounded: 30 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut most_unhealthy = 0;
    while (server.requests.load(Ordering::SeqCst) < 2 * INSTANCES || unhealthy_count(&lb) > 0)
        && tokio::time::Instant::now() < deadline
    {
        let listed = lb.snapshot("svc").expect("svc").endpoints().len();
        if listed == 2 * INSTANCES {
            most_unhealthy = most_unhealthy.max(unhealthy_count(&lb));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let answered = server.requests.load(Ordering::SeqCst);
    let most_open = server.most_open.load(Ordering::SeqCst);
    eprintln!("{answered} probes answered, {most_open} connections at once");
    assert!(
        answered >= 2 * INSTANCES,
        "{answered} probes answered in 30 s"
    );
    assert!(
        (65..=128).contains(&most_open),
        "{most_open} connections at once"
    );
    // Joined instances wait unhealthy for their first probe (800 at
    // most); none is unhealthy once its probe is answered.
    assert_eq!(
        unhealthy_count(&lb),
        0,
        "{most_unhealthy} unhealthy at most"
    );
}
