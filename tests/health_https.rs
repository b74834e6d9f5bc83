//! Active health checks of `https` instances through the crate's rustls
//! client (feature `tls`), against real TLS servers on 127.0.0.1 with a
//! certificate authority made at test time, on paused time: a failing
//! health path makes an instance unhealthy after `unhealthy_threshold`
//! probes, a passing one healthy again after `healthy_threshold`; the
//! check's custom roots are honoured (without them the handshake fails and
//! so does every probe).

#[path = "support/tls.rs"]
mod tls_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tls_support::{Pki, alpn_both, pki, server_config};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::ActiveHealthCheck;
use tower_ribbon::tls::HttpsClient;
use tower_ribbon::{Instance, LoadBalancer};

type Lb = LoadBalancer<Client<HttpConnector, Empty<Bytes>>>;

/// A TLS server answering every request with `status` and
/// `Connection: close`, recording paths, counting failed handshakes.
///
/// Each probe gets its own connection (and handshake): with the clock
/// paused, a second request on a kept-alive TLS connection never reached
/// this server (in real time it does, and the same rounds pass), so the
/// server closes after each answer and the probe client speaks HTTP/1.1.
struct TlsProbeServer {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    paths: Arc<Mutex<Vec<String>>>,
    handshake_failures: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsProbeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsProbeServer {
    async fn start(pki: &Pki, status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = TlsAcceptor::from(Arc::new(server_config(pki, alpn_both(), false)));
        let status = Arc::new(AtomicU16::new(status));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let handshake_failures = Arc::new(AtomicUsize::new(0));
        let (st, log, failures) = (
            Arc::clone(&status),
            Arc::clone(&paths),
            Arc::clone(&handshake_failures),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, st, log, failures) = (
                    acceptor.clone(),
                    Arc::clone(&st),
                    Arc::clone(&log),
                    Arc::clone(&failures),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        failures.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let answer = service_fn(move |req: http::Request<Incoming>| {
                        log.lock().unwrap().push(req.uri().path().to_owned());
                        let mut response = http::Response::new(Full::new(Bytes::new()));
                        *response.status_mut() =
                            http::StatusCode::from_u16(st.load(Ordering::SeqCst)).unwrap();
                        response.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), answer)
                        .await;
                });
            }
        });
        TlsProbeServer {
            addr,
            status,
            paths,
            handshake_failures,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.paths.lock().unwrap().len()
    }
}

fn secure(server: &TlsProbeServer) -> Instance {
    Instance::new("svc", "127.0.0.1", server.addr.port())
        .expect("instance")
        .with_secure(true)
}

/// Rounds at 100 ms + k s; probes bounded by 5 s.
fn check() -> ActiveHealthCheck {
    let mut check = ActiveHealthCheck::new("/actuator/health");
    check.interval = Duration::from_secs(1);
    check.interval_jitter = Duration::ZERO;
    check.initial_delay = Duration::from_millis(100);
    check.timeout = Duration::from_secs(5);
    check
}

fn trusting(pki: &Pki) -> HttpsClient<Empty<Bytes>> {
    HttpsClient::builder()
        .http2(false) // `Connection: close` is HTTP/1.1's (see TlsProbeServer)
        .webpki_roots(false)
        .add_root_pem(pki.ca_pem.as_bytes())
        .expect("ca pem")
        .build()
        .expect("client")
}

async fn balancer(instances: Vec<Instance>, check: ActiveHealthCheck) -> Lb {
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances("svc", instances))
        .service("svc")
        .active_health_check(check)
        .build(Client::builder(TokioExecutor::new()).build_http())
        .expect("balancer");
    assert!(lb.ready_service("svc").await);
    lb
}

fn unhealthy(lb: &Lb) -> Vec<bool> {
    lb.snapshot("svc")
        .expect("service")
        .endpoints()
        .iter()
        .map(|e| e.stats().is_active_unhealthy())
        .collect()
}

/// Verdicts half a second after each of `rounds` rounds.
async fn verdicts(lb: &Lb, rounds: usize) -> Vec<Vec<bool>> {
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut seen = Vec::new();
    for k in 0..rounds {
        if k > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        seen.push(unhealthy(lb));
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn https_probes_mark_a_failing_path_unhealthy_and_a_passing_one_healthy() {
    let pki = pki();
    let passing = TlsProbeServer::start(&pki, 200).await;
    let failing = TlsProbeServer::start(&pki, 503).await;
    let lb = balancer(
        vec![secure(&passing), secure(&failing)],
        check().https_client(trusting(&pki)),
    )
    .await;

    // Three failures in a row (the default threshold) make it unhealthy.
    let seen = verdicts(&lb, 4).await;
    let (ok, bad) = (false, true);
    assert_eq!(
        seen,
        [[ok, ok], [ok, ok], [ok, bad], [ok, bad]],
        "[passing, failing] after rounds 1..4"
    );
    assert_eq!((passing.hits(), failing.hits()), (4, 4));
    assert_eq!(failing.paths.lock().unwrap()[0], "/actuator/health");

    // The path passes again: healthy after two passes in a row.
    failing.status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(unhealthy(&lb), [ok, bad]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(unhealthy(&lb), [ok, ok]);
    assert_eq!((passing.hits(), failing.hits()), (6, 6));
    assert_eq!(
        (
            passing.handshake_failures.load(Ordering::SeqCst),
            failing.handshake_failures.load(Ordering::SeqCst)
        ),
        (0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn probes_use_the_checks_roots() {
    let pki = pki();
    let server = TlsProbeServer::start(&pki, 200).await;
    // Default probe client: webpki roots, which do not include the test
    // CA: every handshake fails, so every probe does.
    let lb = balancer(vec![secure(&server)], check()).await;
    let seen = verdicts(&lb, 3).await;
    assert_eq!(seen, [[false], [false], [true]]);
    assert_eq!(server.hits(), 0);
    assert_eq!(server.handshake_failures.load(Ordering::SeqCst), 3);
}
