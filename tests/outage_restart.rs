//! A real backend killed under steady traffic and restarted on the same
//! port: three hyper servers on 127.0.0.1 (HTTP/1 with keep-alive, or
//! HTTP/2; plain, h2c by prior knowledge, or TLS with ALPN), eight callers
//! sending GETs and POSTs in turn through hyper-util's pooled client
//! (`tls::HttpsClient`, which is that client over rustls), round robin. One server is
//! killed mid-traffic (listener dropped, every open connection reset or
//! closed with a FIN) and started again on its port a while later.
//!
//! Checked, by counts (the breaker and ejection times are cut to a few
//! hundred ms so a run takes about 3 s of real time):
//! - during the outage the dead instance gets at most the attempts in
//!   flight at the kill, the breaker's threshold and one probe per
//!   blackout;
//! - every GET is answered (a refused connect, a reset or a closed pooled
//!   connection goes to another instance); a POST fails only when it was
//!   in flight on the killed connection (one `OtherError` attempt: it may
//!   have been read), and no POST is served twice;
//! - after the restart the instance gets traffic again within the longest
//!   blackout or ejection, no request fails once it is back (no stale
//!   pooled connection to the dead process), and its stats end clean:
//!   nothing in flight, breaker closed, not ejected.
//!
//! Peers: gRPC's `round_robin` never reconnected a failed subchannel, so a
//! long-lived client lost backends one by one
//! (<https://github.com/grpc/grpc/issues/11643>); Finagle left a node whose
//! probe failed in `ProbeOpen`, taking request after request
//! (<https://github.com/twitter/finagle/issues/524>); Ribbon retried on
//! the dead server instead of failing over
//! (<https://github.com/Netflix/ribbon/issues/52>). `peer_bugs.rs` has
//! each with a scripted inner service; this file runs them against a real
//! process-like server and its pooled keep-alive connections.
//!
//! No defect found: 3 to 7 attempts reach the dead instance while about
//! 1 600 requests go elsewhere; it serves again 20 to 360 ms after the
//! restart. Power checks: with the breaker and ejection off
//! (`breaker_threshold` 100 000, `OutlierDetection::disabled()`) 120 to
//! 411 attempts reach the dead instance and the outage bound fails; with
//! 3 s blackouts the instance is back after 1.8 s and the restart bound
//! fails.

#[path = "support/tls.rs"]
mod tls_support;

#[path = "common/closed_port.rs"]
mod closed_port;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::instance::Instance;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::stats::{BreakerState, Outcome, StatsConfig};
use tower_ribbon::tls::HttpsClient;

use closed_port::ClosedPort;

const SVC: &str = "svc";
const CALLERS: usize = 8;
const BREAKER_BASE: Duration = Duration::from_millis(200);
const BREAKER_MAX: Duration = Duration::from_millis(400);
const EJECTION_BASE: Duration = Duration::from_millis(300);
const EJECTION_MAX: Duration = Duration::from_millis(600);
const OUTAGE: Duration = Duration::from_millis(1200);

/// The certificates of the TLS servers (for 127.0.0.1), made once.
static PKI: LazyLock<tls_support::Pki> = LazyLock::new(tls_support::pki);

/// How the servers speak.
#[derive(Clone, Copy, Debug)]
struct Wire {
    /// HTTP/2 (h2c by prior knowledge, or ALPN `h2` over TLS).
    h2: bool,
    /// TLS.
    tls: bool,
    /// A kill resets the connections (else a FIN closes them).
    reset: bool,
}

/// A backend that can be killed and started again on its port; counts
/// the GETs and POSTs it read whole.
struct Backend {
    port: u16,
    wire: Wire,
    gets: Arc<AtomicUsize>,
    posts: Arc<AtomicUsize>,
    /// The accept loop and, inside it, every connection's task.
    running: Mutex<Option<JoinSet<()>>>,
    /// Holds the port while the server is down (see `Backend::kill`).
    reserved: Mutex<Option<ClosedPort>>,
}

impl Backend {
    async fn start(wire: Wire) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = Self {
            port: listener.local_addr().unwrap().port(),
            wire,
            gets: Arc::default(),
            posts: Arc::default(),
            running: Mutex::new(None),
            reserved: Mutex::new(None),
        };
        backend.serve(listener);
        backend
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (gets, posts) = (Arc::clone(&self.gets), Arc::clone(&self.posts));
        let wire = self.wire;
        let alpn = if wire.h2 {
            tls_support::alpn_both()
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_support::server_config(
            &PKI, alpn, false,
        )));
        let mut running = JoinSet::new();
        running.spawn(async move {
            // Dropped with the accept loop: every connection ends with it.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                if wire.reset {
                    stream.set_zero_linger().unwrap();
                }
                let (gets, posts) = (Arc::clone(&gets), Arc::clone(&posts));
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (gets, posts) = (Arc::clone(&gets), Arc::clone(&posts));
                        async move {
                            let post = req.method() == http::Method::POST;
                            let _ = req.into_body().collect().await;
                            let count = if post { &posts } else { &gets };
                            count.fetch_add(1, Ordering::SeqCst);
                            // A little work, so that requests are in
                            // flight when the server is killed.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            let ok = Full::new(Bytes::from_static(b"ok"));
                            Ok::<_, std::io::Error>(http::Response::new(ok))
                        }
                    });
                    // HTTP/1 or HTTP/2, as the client speaks.
                    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if wire.tls {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        let _ = server.serve_connection(TokioIo::new(stream), svc).await;
                    } else {
                        let _ = server.serve_connection(TokioIo::new(stream), svc).await;
                    }
                });
            }
        });
        *self.running.lock().unwrap() = Some(running);
    }

    /// Drops the listener and every connection, as a killed process, and
    /// holds the port (bound, never listening) until the restart: connects
    /// are refused, and no server of a parallel test is given the port
    /// meanwhile (the restart would then fail, or that server would take
    /// this one's traffic).
    async fn kill(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some(mut running) = running {
            running.shutdown().await;
        }
        let port = ClosedPort::at(std::net::SocketAddr::from(([127, 0, 0, 1], self.port)));
        *self.reserved.lock().unwrap() = port.ok();
    }

    /// Listens on its port again.
    async fn restart(&self) {
        drop(self.reserved.lock().unwrap().take());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.serve(listener);
    }

    /// Requests read whole so far (GETs and POSTs).
    fn served(&self) -> usize {
        self.gets.load(Ordering::SeqCst) + self.posts.load(Ordering::SeqCst)
    }
}

/// A failed request: its method, when, its attempts' (instance, outcome).
type Failure = (http::Method, Instant, Vec<(String, Outcome)>);

/// What the callers saw.
#[derive(Default)]
struct Seen {
    ok_gets: usize,
    ok_posts: usize,
    failed: Vec<Failure>,
}

async fn kill_and_restart(wire: Wire) {
    let case = format!("{wire:?}");
    let backends = [
        Backend::start(wire).await,
        Backend::start(wire).await,
        Backend::start(wire).await,
    ];
    // Plain: HTTP/1, or h2c by prior knowledge; TLS: ALPN offers h2 or
    // http/1.1 alone.
    let client = HttpsClient::builder()
        .webpki_roots(false)
        .add_root_pem(PKI.ca_pem.as_bytes())
        .unwrap()
        .http2(wire.h2)
        .http2_only(wire.h2 && !wire.tls)
        .build::<Full<Bytes>>()
        .unwrap();
    let mut stats = StatsConfig::default();
    stats.breaker_base = BREAKER_BASE;
    stats.breaker_max = BREAKER_MAX;
    let mut outlier = OutlierDetection::default();
    outlier.base_ejection_time = EJECTION_BASE;
    outlier.max_ejection_time = EJECTION_MAX;
    outlier.interval = Duration::from_millis(100);
    let lb = LoadBalancer::builder()
        .source(
            StaticSource::new().with_instances(
                SVC,
                backends
                    .iter()
                    .map(|b| {
                        Instance::new(SVC, "127.0.0.1", b.port)
                            .unwrap()
                            .with_secure(wire.tls)
                    })
                    .collect(),
            ),
        )
        .service(SVC)
        .rule(|| RoundRobin::with_start(0))
        .stats(stats)
        .outlier_detection(outlier)
        .build(client)
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    let victim = &backends[1];
    let dead = lb.snapshot(SVC).unwrap().endpoints()[1].clone();
    assert_eq!(dead.instance().port(), victim.port);

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut callers = JoinSet::new();
    for caller in 0..CALLERS {
        let (lb, stop, seen) = (lb.clone(), Arc::clone(&stop), Arc::clone(&seen));
        callers.spawn(async move {
            let mut n = caller;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let req = if n % 2 == 0 {
                    Request::post("http://svc/orders").body(Full::new(Bytes::from_static(b"one")))
                } else {
                    Request::get("http://svc/").body(Full::default())
                };
                let req = req.unwrap();
                let method = req.method().clone();
                let answer = lb.clone().oneshot(req).await;
                {
                    let mut seen = seen.lock().unwrap();
                    match answer {
                        Ok(r) if r.status() == 200 && method == http::Method::POST => {
                            seen.ok_posts += 1;
                        }
                        Ok(r) if r.status() == 200 => seen.ok_gets += 1,
                        Ok(r) => panic!("status {}", r.status()),
                        Err(e) => {
                            let attempts = e
                                .attempts()
                                .iter()
                                .map(|a| (a.instance.clone(), a.outcome))
                                .collect();
                            seen.failed.push((method, Instant::now(), attempts));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }

    // Warm: pooled connections to every server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(victim.served() > 0, "{case}");
    let attempts_at_kill = dead.stats().requests();
    let served_elsewhere = backends[0].served() + backends[2].served();
    victim.kill().await;
    tokio::time::sleep(OUTAGE).await;
    let outage_attempts = dead.stats().requests() - attempts_at_kill;
    let outage_requests = backends[0].served() + backends[2].served() - served_elsewhere;

    victim.restart().await;
    let restarted = Instant::now();
    let served_at_restart = victim.served();
    while victim.served() == served_at_restart && restarted.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let back_after = restarted.elapsed();
    // Its share once back: round robin gives it a third.
    let (mine, all) = (
        victim.served(),
        backends.iter().map(Backend::served).sum::<usize>(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mine, all) = (
        victim.served() - mine,
        backends.iter().map(Backend::served).sum::<usize>() - all,
    );
    stop.store(true, Ordering::SeqCst);
    while let Some(done) = callers.join_next().await {
        done.unwrap();
    }

    let seen = seen.lock().unwrap();
    eprintln!(
        "{case}: {outage_attempts} attempts to the dead instance during the outage ({outage_requests} served elsewhere), {} POSTs failed, back after {back_after:?}, then {mine} of {all}",
        seen.failed.len()
    );
    let scheme = if wire.tls { "https" } else { "http" };
    let victim_uri = format!("{scheme}://127.0.0.1:{}", victim.port);
    // The dead instance: the attempts in flight at the kill, the 3 that
    // trip its breaker, one probe per blackout (at least 200 ms each).
    let probes = (OUTAGE.as_millis() / BREAKER_BASE.as_millis()) as u64;
    assert!(
        outage_attempts <= CALLERS as u64 + 3 + probes,
        "{case}: {outage_attempts} attempts to the dead instance while {outage_requests} requests were served"
    );
    assert!(
        outage_requests > 100,
        "{case}: traffic went on ({outage_requests})"
    );
    // Failures: only POSTs, each one attempt on the killed instance that
    // may have been read (in flight at the kill), none after the restart.
    // Over h2c the kill ends the connection with the stream open: a
    // `ConnectionLost`, or an `OtherError` for the first stream of the
    // connection to end (the one its end counts as). Over TLS likewise
    // when the dying server's TLS layer sent its `close_notify` (a clean
    // end: seen once in seven local runs under load), else an `OtherError`
    // (an unexpected end of the TLS stream).
    let lost: &[Outcome] = if wire.h2 {
        &[Outcome::OtherError, Outcome::ConnectionLost]
    } else {
        &[Outcome::OtherError]
    };
    for (method, at, attempts) in &seen.failed {
        assert_eq!(method, http::Method::POST, "{case}: {attempts:?}");
        assert_eq!(attempts.len(), 1, "{case}: {attempts:?}");
        assert_eq!(attempts[0].0, victim_uri, "{case}");
        assert!(lost.contains(&attempts[0].1), "{case}: {attempts:?}");
        assert!(
            *at < restarted,
            "{case}: a request failed after the restart"
        );
    }
    assert!(seen.failed.len() <= CALLERS, "{case}: {:?}", seen.failed);
    // No POST served twice: those answered, plus at most the failed ones.
    let served_posts: usize = backends
        .iter()
        .map(|b| b.posts.load(Ordering::SeqCst))
        .sum();
    assert!(
        served_posts >= seen.ok_posts && served_posts <= seen.ok_posts + seen.failed.len(),
        "{case}: {served_posts} POSTs served, {} answered, {} failed",
        seen.ok_posts,
        seen.failed.len()
    );
    // Back within the longest blackout or ejection (plus scheduling).
    let bound = BREAKER_MAX.max(EJECTION_MAX) + Duration::from_millis(500);
    assert!(back_after <= bound, "{case}: back after {back_after:?}");
    assert!(
        mine * 5 >= all,
        "{case}: {mine} of {all} requests once back (round robin: a third)"
    );
    let stats = dead.stats();
    let now = Instant::now();
    assert_eq!(
        (
            stats.in_flight(),
            stats.breaker_state(),
            stats.is_ejected_at(now),
            stats.successive_connection_failures()
        ),
        (0, BreakerState::Closed, false, 0),
        "{case}"
    );
    for endpoint in lb.snapshot(SVC).unwrap().endpoints() {
        assert_eq!(endpoint.stats().in_flight(), 0, "{case}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_killed_with_resets_and_restarted() {
    kill_and_restart(Wire {
        h2: false,
        tls: false,
        reset: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_killed_with_fins_and_restarted() {
    kill_and_restart(Wire {
        h2: false,
        tls: false,
        reset: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_killed_with_resets_and_restarted() {
    kill_and_restart(Wire {
        h2: true,
        tls: false,
        reset: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_killed_with_fins_and_restarted() {
    kill_and_restart(Wire {
        h2: true,
        tls: false,
        reset: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https1_killed_with_resets_and_restarted() {
    kill_and_restart(Wire {
        h2: false,
        tls: true,
        reset: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https2_killed_with_fins_and_restarted() {
    kill_and_restart(Wire {
        h2: true,
        tls: true,
        reset: false,
    })
    .await;
}
