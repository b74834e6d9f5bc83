//! TLS handshake faults through the crate's HTTPS client
//! (`tls::HttpsClient`) and its Eureka transport: a server that accepts
//! the TCP connection and never sends a byte of the handshake, one that answers
//! the ClientHello with garbage (plain HTTP), one whose certificate names
//! another host. None of them ever saw a request, so each attempt is a
//! connect failure or a connect timeout: bounded by the connect timeout
//! whatever the per-try timeout, a POST goes to the healthy instance,
//! the faulty instance is counted (its breaker trips after 3) and holds
//! nothing in flight, its connections are closed, and the error is typed
//! (`tls::ConnectError`).
//!
//! A server that completes the handshake and then closes is not here: the
//! client has then written the request, and a server that read it and
//! closed looks the same (`post_reached_once.rs`): a POST is not sent
//! again.
//!
//! Before the fix, `HttpsClient`'s connect timeout bounded the TCP connect
//! only: against the silent server a POST failed after the per-try
//! timeout (5 s) as a `ReadTimeout`, "may have reached the server", not
//! retried, and without a per-try timeout it waited for ever.
//!
//! Peers: hyper-rustls' `HttpsConnector` has no handshake bound
//! (hyper-rustls#356 and tokio-rustls#178 proposed one; the rustls
//! maintainers left it to the caller, who wraps the connect in a timeout,
//! as `tls::HttpsConnect` does: <https://github.com/rustls/hyper-rustls/pull/356>,
//! <https://github.com/rustls/tokio-rustls/pull/178>, motivated by
//! <https://github.com/DataDog/saluki/issues/178>); Apache HttpClient
//! made its connect timeout bound the TLS handshake too
//! (<https://github.com/apache/httpcomponents-client/pull/118>), as
//! Envoy's upstream `connect_timeout` does (envoyproxy/envoy#15011: a
//! connect timeout firing after the TCP connect, during the handshake).
//!
//! reqwest is not run here: its TLS needs a reqwest feature that, turned
//! on for the tests, either builds aws-lc or makes `reqwest::Client::new()`
//! panic in every other test (`rustls-no-provider`). Its
//! `ClientBuilder::connect_timeout` wraps its whole connector, TLS
//! included (reqwest 0.13 `connect.rs`), and its connect errors are
//! hyper-util's, classified as here.

#[path = "support/eureka_stub.rs"]
mod eureka_stub;
#[path = "support/tls.rs"]
mod tls_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use eureka_stub::{Answer, Stub, record};
use http_body_util::Full;
use tls_support::{Mode, Pki, alpn_both, pki, pki_for, server_config, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::rustls;
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::discovery::eureka::EurekaSource;
use tower_ribbon::error::TimeoutKind;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::stats::{BreakerState, Outcome};
use tower_ribbon::tls::{ConnectError, HttpsClient};
use tower_ribbon::{Endpoint, Instance, LoadBalancer};

const SVC: &str = "secure-service";

/// The connect timeout of both clients (`HttpsClient`'s default).
const CONNECT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Accepts and reads, never writes.
    Silent,
    /// Answers the ClientHello with a plain HTTP response.
    Garbage,
    /// A certificate for `other.test` from a trusted CA.
    WrongName,
}

const FAULTS: [Fault; 3] = [Fault::Silent, Fault::Garbage, Fault::WrongName];

/// The certificates: the healthy server's (for 127.0.0.1) and the
/// wrong-name server's (for `other.test`), both trusted by the clients.
struct Certs {
    good: Pki,
    other: Pki,
}

fn certs() -> Certs {
    Certs {
        good: pki(),
        other: pki_for(&["other.test"]),
    }
}

/// A faulty server on 127.0.0.1: its port, the connections it accepted
/// and those that ended (closed by the client, or by the server itself).
struct Faulty {
    port: u16,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

async fn faulty(fault: Fault, certs: &Certs) -> Faulty {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&certs.other, alpn_both(), false)));
    let (accepted, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (seen, gone) = (Arc::clone(&accepted), Arc::clone(&ended));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let (acceptor, gone) = (acceptor.clone(), Arc::clone(&gone));
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                match fault {
                    Fault::Silent => {}
                    Fault::Garbage => {
                        let _ = socket.read(&mut buf).await;
                        let _ = socket
                            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                    Fault::WrongName => {
                        assert!(
                            acceptor.accept(socket).await.is_err(),
                            "refused by the client"
                        );
                        gone.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                // Until the client closes the connection.
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                gone.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Faulty {
        port,
        accepted,
        ended,
    }
}

type Lb = LoadBalancer<HttpsClient<Full<Bytes>>>;

/// Round robin from the first of `ports` (secure instances on 127.0.0.1)
/// through `HttpsClient` trusting both CAs, with `configure` applied to
/// the builder; ready.
async fn balancer(
    certs: &Certs,
    ports: &[u16],
    configure: impl FnOnce(tower_ribbon::Builder) -> tower_ribbon::Builder,
) -> Lb {
    let instances = ports
        .iter()
        .map(|&p| {
            Instance::new(SVC, "127.0.0.1", p)
                .unwrap()
                .with_secure(true)
        })
        .collect();
    let client = HttpsClient::builder()
        .webpki_roots(false)
        .add_root_pem(certs.good.ca_pem.as_bytes())
        .unwrap()
        .add_root_pem(certs.other.ca_pem.as_bytes())
        .unwrap()
        .connect_timeout(Some(CONNECT))
        .build()
        .unwrap();
    let lb = configure(
        LoadBalancer::builder()
            .source(StaticSource::new().with_instances(SVC, instances))
            .service(SVC)
            .rule(|| RoundRobin::with_start(0)),
    )
    .build(client)
    .unwrap();
    assert!(lb.ready_service(SVC).await);
    lb
}

/// One POST: its status, or the balancer's error.
async fn post(lb: &Lb) -> Result<u16, tower_ribbon::Error> {
    let body = Full::new(Bytes::from_static(b"one order"));
    let req = http::Request::post("http://secure-service/orders")
        .body(body)
        .unwrap();
    lb.clone().oneshot(req).await.map(|r| r.status().as_u16())
}

fn endpoint(lb: &Lb, i: usize) -> Endpoint {
    lb.snapshot(SVC).unwrap().endpoints()[i].clone()
}

/// The `tls::ConnectError` in `e`'s chain.
fn connect_error(e: &tower_ribbon::Error) -> Option<&ConnectError> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<ConnectError>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}

/// The outcome each fault's attempt is counted as.
fn expected(fault: Fault) -> Outcome {
    match fault {
        Fault::Silent => Outcome::ConnectTimeout,
        Fault::Garbage | Fault::WrongName => Outcome::ConnectFailure,
    }
}

/// Six POSTs over the faulty instance and a healthy one, round robin from
/// the faulty one, default timeouts and retry policy: all six answered
/// by the healthy instance; the faulty one got three attempts (its
/// breaker then tripped), each failed and counted, none left in flight
/// or open; the silent server costs one connect timeout per attempt.
#[tokio::test(start_paused = true)]
async fn a_post_whose_handshake_fails_goes_to_the_next_instance() {
    let certs = certs();
    for fault in FAULTS {
        let healthy = start(
            "healthy",
            &certs.good,
            Mode::Tls {
                alpn: alpn_both(),
                require_client_cert: false,
            },
        )
        .await;
        let bad = faulty(fault, &certs).await;
        let lb = balancer(&certs, &[bad.port, healthy.port()], |b| b).await;
        let started = Instant::now();
        for _ in 0..6 {
            let answered = post(&lb).await;
            assert_eq!(
                answered.as_ref().ok(),
                Some(&200),
                "{fault:?}: {answered:?}"
            );
        }
        let took = started.elapsed();
        assert_eq!(healthy.hits(), 6, "{fault:?}");
        let faulty = endpoint(&lb, 0);
        let stats = faulty.stats();
        assert_eq!(
            (stats.requests(), stats.failures(), stats.in_flight()),
            (3, 3, 0),
            "{fault:?}"
        );
        assert!(
            matches!(stats.breaker_state(), BreakerState::Open { .. }),
            "{fault:?}: {:?}",
            stats.breaker_state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(bad.accepted.load(Ordering::SeqCst), 3, "{fault:?}");
        assert_eq!(
            bad.ended.load(Ordering::SeqCst),
            3,
            "{fault:?}: a connection left open"
        );
        let bound = match fault {
            Fault::Silent => 3 * CONNECT,
            _ => Duration::ZERO,
        };
        assert!(
            took >= bound && took < bound + Duration::from_millis(500),
            "{fault:?}: took {took:?}"
        );
    }
}

/// One POST to the faulty instance alone, no retry and no per-try
/// timeout: it fails within the connect timeout (the silent server
/// exactly then) with one attempt counted as a connect timeout or
/// failure, and the error's chain holds a typed `tls::ConnectError` with
/// rustls' error or the timeout.
#[tokio::test(start_paused = true)]
async fn a_failed_handshake_is_a_typed_connect_error_bounded_by_the_connect_timeout() {
    let certs = certs();
    for fault in FAULTS {
        let bad = faulty(fault, &certs).await;
        let lb = balancer(&certs, &[bad.port], |b| {
            b.retry(RetryPolicy::none()).read_timeout(None)
        })
        .await;
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(60), post(&lb)).await;
        let took = started.elapsed();
        let Ok(answer) = answer else {
            panic!("{fault:?}: still waiting after 60 s");
        };
        let err = answer.expect_err("no server to answer");
        let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
        assert_eq!(outcomes, [expected(fault)], "{fault:?}: {err}");
        let faulty = endpoint(&lb, 0);
        assert_eq!(
            (faulty.stats().failures(), faulty.stats().in_flight()),
            (1, 0),
            "{fault:?}"
        );
        let typed = connect_error(&err).unwrap_or_else(|| panic!("{fault:?}: {err:?}"));
        match fault {
            Fault::Silent => {
                assert_eq!(took, CONNECT, "{fault:?}");
                assert_eq!(
                    err.timeout(),
                    Some(TimeoutKind::Connect(Some(CONNECT))),
                    "{err}"
                );
                assert!(typed.is_timeout(), "{typed}");
                assert_eq!(typed.timeout(), Some(CONNECT));
                assert!(typed.to_string().contains("never sent"), "{typed}");
            }
            Fault::Garbage => assert!(
                matches!(typed.rustls_error(), Some(rustls::Error::InvalidMessage(_))),
                "{typed:?}"
            ),
            Fault::WrongName => assert!(
                matches!(
                    typed.rustls_error(),
                    Some(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName
                            | rustls::CertificateError::NotValidForNameContext { .. }
                    ))
                ),
                "{typed:?}"
            ),
        }
        if fault != Fault::Silent {
            assert!(
                took < Duration::from_millis(500),
                "{fault:?}: took {took:?}"
            );
            assert!(
                !err.is_timeout() && typed.is_handshake(),
                "{fault:?}: {err}"
            );
        }
    }
}

/// A Eureka registry that accepts and never answers the handshake, listed
/// before a working one: the fetch moves on after the connect timeout
/// (1 s here), the connection closed, and the error it met there is a
/// connect error (never sent). Before, `https` registry URLs bounded the
/// TCP connect only: the silent one held the fetch for the whole
/// `request_timeout` (8 s) and then counted as a timeout, a write that
/// might land late.
#[tokio::test(start_paused = true)]
async fn a_registry_silent_in_the_handshake_costs_the_connect_timeout_only() {
    let certs = certs();
    let silent = faulty(Fault::Silent, &certs).await;
    let stub = Stub::start().await;
    let instance = record("SVC", "svc-1", 8080, "UP", "ADDED", "{}");
    stub.set(
        "/eureka/apps/SVC",
        vec![Answer::ok(format!(
            r#"{{"application":{{"name":"SVC","instance":[{instance}]}}}}"#
        ))],
    );
    let source = EurekaSource::builder()
        .server_url(format!("https://127.0.0.1:{}/eureka", silent.port))
        .server_url(stub.url())
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(8))
        .tls(
            HttpsClient::builder()
                .webpki_roots(false)
                .add_root_pem(certs.good.ca_pem.as_bytes())
                .unwrap(),
        )
        .build()
        .unwrap();
    let started = Instant::now();
    let app = source
        .fetch_application("svc")
        .await
        .expect("the second registry answers");
    let took = started.elapsed();
    assert_eq!(app.instances.len(), 1);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "took {took:?}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        (
            silent.accepted.load(Ordering::SeqCst),
            silent.ended.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
}
