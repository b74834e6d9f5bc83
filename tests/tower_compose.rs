//! The balancer composed with tower's own middleware, on both sides, over
//! two real HTTP/1 servers on 127.0.0.1 that count how many requests they
//! hold at once: what a gateway author builds.
//!
//! - Inside (the inner service the balancer sends attempts through):
//!   `ConcurrencyLimit`, `Buffer` and `Timeout`, whose error type is
//!   `BoxError`. The balancer waits for the inner to be ready before it
//!   picks (issue 10), so a limit of `n` holds: no server ever holds more
//!   than `n` requests of this client together, and every request is
//!   answered. (A `Buffer` inside hides its queue's wait from the
//!   balancer, which then counts it as the instance's latency: it works,
//!   as shown here, but the docs of `service::attempt` say to put
//!   queueing layers outside; `tests/local_refusals.rs` shows the cost.)
//! - Outside (around the balancer, as `ServiceBuilder` layers):
//!   `Buffer`, `ConcurrencyLimit` and `Timeout` over `LoadBalancerLayer`,
//!   sent with `oneshot` from spawned tasks.
//!
//! Every request is spread over both servers (round robin), and once all
//! are done no instance counts a request in flight.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::{InnerService, LoadBalancer};

/// A server answering 200 with its port after 20 ms, counting the
/// requests it holds at once (now and at most).
struct Server {
    addr: SocketAddr,
    held: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

async fn server(shared_most: Arc<AtomicUsize>, shared_held: Arc<AtomicUsize>) -> Server {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (h, m) = (Arc::clone(&held), Arc::clone(&most));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (h, m) = (Arc::clone(&h), Arc::clone(&m));
            let (sh, sm) = (Arc::clone(&shared_held), Arc::clone(&shared_most));
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let (h, m) = (Arc::clone(&h), Arc::clone(&m));
                    let (sh, sm) = (Arc::clone(&sh), Arc::clone(&sm));
                    async move {
                        m.fetch_max(h.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                        sm.fetch_max(sh.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        h.fetch_sub(1, Ordering::SeqCst);
                        sh.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                            addr.port().to_string(),
                        ))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Server { addr, held, most }
}

/// Two servers, the static source listing both, and the most requests
/// held at once over both.
async fn two_servers() -> (Server, Server, StaticSource, Arc<AtomicUsize>) {
    let (most, held) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = server(Arc::clone(&most), Arc::clone(&held)).await;
    let b = server(Arc::clone(&most), held).await;
    let source = StaticSource::new()
        .with_list("svc", &format!("{},{}", a.addr, b.addr))
        .unwrap();
    (a, b, source, most)
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get() -> Request<Empty<Bytes>> {
    Request::get("http://svc/x").body(Empty::new()).unwrap()
}

/// Sends `n` requests at once, each from a task of its own, through
/// `lb.request`; returns the answering ports.
async fn spawn_requests<S>(lb: &LoadBalancer<S>, n: usize) -> Vec<String>
where
    S: InnerService<Empty<Bytes>>,
    S::Output: Into<Response<tower_ribbon::service::TrackedBody<hyper::body::Incoming>>>,
{
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let lb = lb.clone();
            tokio::spawn(async move {
                let resp = lb.request(get()).await.expect("answered");
                let body = resp.into().into_body().collect().await.expect("body");
                String::from_utf8(body.to_bytes().to_vec()).unwrap()
            })
        })
        .collect();
    let mut ports = Vec::new();
    for task in tasks {
        ports.push(task.await.unwrap());
    }
    ports
}

fn assert_spread(ports: &[String], a: &Server, b: &Server, n: usize) {
    let on = |s: &Server| {
        ports
            .iter()
            .filter(|p| **p == s.addr.port().to_string())
            .count()
    };
    assert_eq!(on(a) + on(b), n, "{ports:?}");
    assert!(on(a) > 0 && on(b) > 0, "{ports:?}");
}

fn assert_nothing_in_flight<S>(lb: &LoadBalancer<S>) {
    let snapshot = lb.snapshot("svc").unwrap();
    for e in snapshot.endpoints() {
        assert_eq!(e.stats().in_flight(), 0, "{}", e.authority());
    }
}

/// A round-robin balancer for `svc` over `inner`.
fn round_robin<S>(source: StaticSource, inner: S) -> LoadBalancer<S> {
    LoadBalancer::builder()
        .source(source)
        .service("svc")
        .rule(RoundRobin::new)
        .build(inner)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inner_concurrency_limit_holds_across_instances() {
    let (a, b, source, most) = two_servers().await;
    let inner = ServiceBuilder::new()
        .concurrency_limit(2)
        .timeout(Duration::from_secs(10))
        .service(client());
    let lb = round_robin(source, inner);
    let ports = spawn_requests(&lb, 12).await;
    assert_spread(&ports, &a, &b, 12);
    let most = most.load(Ordering::SeqCst);
    eprintln!("{most} held at once (limit 2)");
    assert!((1..=2).contains(&most), "{most} held at once");
    assert_eq!(
        a.held.load(Ordering::SeqCst) + b.held.load(Ordering::SeqCst),
        0
    );
    assert_nothing_in_flight(&lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_inner_with_a_limit_of_one_answers_every_request() {
    let (a, b, source, most) = two_servers().await;
    let inner = ServiceBuilder::new()
        .buffer(16)
        .concurrency_limit(1)
        .timeout(Duration::from_secs(10))
        .service(client());
    let lb = round_robin(source, inner);
    let ports = spawn_requests(&lb, 6).await;
    assert_spread(&ports, &a, &b, 6);
    assert_eq!(most.load(Ordering::SeqCst), 1);
    assert!(a.most.load(Ordering::SeqCst) <= 1 && b.most.load(Ordering::SeqCst) <= 1);
    assert_nothing_in_flight(&lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_layers_around_the_balancer_compose_and_send() {
    let (a, b, source, most) = two_servers().await;
    let layer = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .rule(RoundRobin::new)
        .layer()
        .unwrap();
    let svc = ServiceBuilder::new()
        .buffer(32)
        .concurrency_limit(3)
        .timeout(Duration::from_secs(10))
        .layer(layer)
        .service(client());
    let tasks: Vec<_> = (0..9)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let resp = svc.oneshot(get()).await.expect("answered");
                let body = resp.into_body().collect().await.expect("body");
                String::from_utf8(body.to_bytes().to_vec()).unwrap()
            })
        })
        .collect();
    let mut ports = Vec::new();
    for task in tasks {
        ports.push(task.await.unwrap());
    }
    assert_spread(&ports, &a, &b, 9);
    let most = most.load(Ordering::SeqCst);
    eprintln!("{most} held at once (limit 3)");
    assert!((1..=3).contains(&most), "{most} held at once");
}
