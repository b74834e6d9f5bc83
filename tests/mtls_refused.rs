//! A server that refuses this client's certificate (mutual TLS) never saw
//! a request: under TLS 1.3 the client's handshake ends before the
//! server checks the certificate, so the refusal comes as a fatal alert
//! (`certificate_required` for no certificate, `decrypt_error` for one
//! from another CA with rustls' server) after hyper wrote the request
//! into a connection whose server never decrypted it.
//!
//! `tls::ConnectError::is_handshake` documents "a client certificate
//! refused" as a failed handshake (typed, a connect failure: even a POST
//! goes to the next instance). This checks that promise through the
//! balancer, with a healthy instance beside the refusing one, over
//! HTTP/1.1 and HTTP/2 (hyper keeps rustls' error over the one, h2 its
//! text over the other) and gRPC; and that under TLS 1.2, where the
//! refusal arrives during the connect, it still is. Found by an attack
//! (62c): before, the POST failed after one attempt as an `OtherError`
//! ("may have reached the server"), gRPC with `Unavailable`, and the
//! error carried no `ConnectError`.

#[path = "support/grpc.rs"]
mod grpc_support;
#[path = "support/tls.rs"]
mod tls_support;

use bytes::Bytes;
use http_body_util::Full;
use tls_support::{Mode, alpn_both, pki, start};
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::stats::Outcome;
use tower_ribbon::tls::{ConnectError, HttpsClient};
use tower_ribbon::{Instance, LoadBalancer};

const SVC: &str = "secure-service";

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

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(" <- ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test]
async fn a_post_refused_for_its_client_certificate_goes_to_the_next_instance() {
    let pki = pki();
    for http1_only in [false, true] {
        // The refusing instance requires a client certificate; the healthy
        // one does not. The client presents none.
        let refusing = start(
            "refusing",
            &pki,
            Mode::Tls {
                alpn: alpn_both(),
                require_client_cert: true,
            },
        )
        .await;
        let healthy = start(
            "healthy",
            &pki,
            Mode::Tls {
                alpn: alpn_both(),
                require_client_cert: false,
            },
        )
        .await;
        let instances = [refusing.port(), healthy.port()]
            .iter()
            .map(|&p| {
                Instance::new(SVC, "127.0.0.1", p)
                    .unwrap()
                    .with_secure(true)
            })
            .collect();
        let client = HttpsClient::builder()
            .webpki_roots(false)
            .add_root_pem(pki.ca_pem.as_bytes())
            .unwrap()
            .http2(!http1_only)
            .build::<Full<Bytes>>()
            .unwrap();
        let lb = LoadBalancer::builder()
            .source(StaticSource::new().with_instances(SVC, instances))
            .service(SVC)
            .rule(|| RoundRobin::with_start(0))
            .build(client)
            .unwrap();
        assert!(lb.ready_service(SVC).await);

        // Round robin from the refusing instance: the first POST's first
        // attempt goes there.
        let req = http::Request::post("http://secure-service/orders")
            .body(Full::new(Bytes::from_static(b"one order")))
            .unwrap();
        let answered = lb.clone().oneshot(req).await;
        let refusing_ep = lb.snapshot(SVC).unwrap().endpoints()[0].clone();
        let refusing_stats = refusing_ep.stats();
        match &answered {
            Ok(r) => println!("http1_only={http1_only}: answered {}", r.status()),
            Err(e) => println!(
                "http1_only={http1_only}: error attempts={:?}\n  chain: {}\n  typed ConnectError: {:?}",
                e.attempts().iter().map(|a| a.outcome).collect::<Vec<_>>(),
                chain(e),
                connect_error(e).map(ConnectError::is_handshake),
            ),
        }
        println!(
            "  refusing handshakes failed {}, healthy hits {}, refusing stats: requests {} failures {}",
            refusing.handshake_failures(),
            healthy.hits(),
            refusing_stats.requests(),
            refusing_stats.failures()
        );
        assert_eq!(refusing.hits(), 0, "the refusing server served nothing");
        assert!(refusing.handshake_failures() >= 1);
        // The promise: never sent, so the POST goes to the healthy one.
        let e = answered.as_ref().err();
        assert!(
            answered.as_ref().is_ok_and(|r| r.status() == 200),
            "http1_only={http1_only}: POST failed though it never reached a server and a healthy instance was there: {:?}",
            e.map(|e| (
                e.attempts()
                    .iter()
                    .map(|a| a.outcome)
                    .collect::<Vec<Outcome>>(),
                chain(e)
            ))
        );
        assert_eq!(healthy.hits(), 1);
    }
}

/// The refusing instance alone: the error is typed (`ConnectError`,
/// `is_handshake`), as its docs say for "a client certificate refused".
#[tokio::test]
async fn a_refused_client_certificate_is_a_typed_handshake_error() {
    let pki = pki();
    let refusing = start(
        "refusing",
        &pki,
        Mode::Tls {
            alpn: alpn_both(),
            require_client_cert: true,
        },
    )
    .await;
    let client = HttpsClient::builder()
        .webpki_roots(false)
        .add_root_pem(pki.ca_pem.as_bytes())
        .unwrap()
        .build::<Full<Bytes>>()
        .unwrap();
    let instance = Instance::new(SVC, "127.0.0.1", refusing.port())
        .unwrap()
        .with_secure(true);
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, vec![instance]))
        .service(SVC)
        .build(client)
        .unwrap();
    let req = http::Request::get("http://secure-service/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let e = lb.clone().oneshot(req).await.expect_err("refused");
    let outcomes: Vec<Outcome> = e.attempts().iter().map(|a| a.outcome).collect();
    println!("GET alone: attempts {outcomes:?}\n  chain: {}", chain(&e));
    assert!(
        connect_error(&e).is_some_and(ConnectError::is_handshake),
        "no typed ConnectError: {}",
        chain(&e)
    );
    assert_eq!(outcomes, [Outcome::ConnectFailure, Outcome::ConnectFailure]);
    assert_eq!(
        connect_error(&e).and_then(ConnectError::rustls_error),
        Some(&tokio_rustls::rustls::Error::AlertReceived(
            tokio_rustls::rustls::AlertDescription::CertificateRequired
        ))
    );
    assert_eq!(refusing.hits(), 0);
}

/// The client presents a certificate from a CA the refusing server does
/// not trust (a rotated client CA): `decrypt_error` from rustls' server
/// (others send `unknown_ca` or `bad_certificate`) after the client's
/// handshake ended. Same as above: the POST, never read, goes to the
/// healthy instance.
#[tokio::test]
async fn a_post_whose_client_certificate_is_from_an_untrusted_ca_goes_to_the_next_instance() {
    let other = pki(); // another CA
    let pki = tls_support::pki(); // the servers' CA: its client certificate is not trusted by `pki`'s servers
    let refusing = start(
        "refusing",
        &pki,
        Mode::Tls {
            alpn: alpn_both(),
            require_client_cert: true,
        },
    )
    .await;
    let healthy = start(
        "healthy",
        &pki,
        Mode::Tls {
            alpn: alpn_both(),
            require_client_cert: false,
        },
    )
    .await;
    let instances = [refusing.port(), healthy.port()]
        .iter()
        .map(|&p| {
            Instance::new(SVC, "127.0.0.1", p)
                .unwrap()
                .with_secure(true)
        })
        .collect();
    let client = HttpsClient::builder()
        .webpki_roots(false)
        .add_root_pem(pki.ca_pem.as_bytes())
        .unwrap()
        .client_auth_pem(
            other.client_cert_pem.as_bytes(),
            other.client_key_pem.as_bytes(),
        )
        .unwrap()
        .build::<Full<Bytes>>()
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .rule(|| RoundRobin::with_start(0))
        .build(client)
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    let req = http::Request::post("http://secure-service/orders")
        .body(Full::new(Bytes::from_static(b"one order")))
        .unwrap();
    let answered = lb.clone().oneshot(req).await;
    println!(
        "untrusted client CA: {:?} refusing hits {} handshake failures {} healthy hits {}",
        answered.as_ref().map(|r| r.status()).map_err(|e| chain(e)),
        refusing.hits(),
        refusing.handshake_failures(),
        healthy.hits()
    );
    assert_eq!(refusing.hits(), 0);
    assert!(
        answered.as_ref().is_ok_and(|r| r.status() == 200),
        "{:?}",
        answered.as_ref().map(|r| r.status()).map_err(|e| chain(e))
    );
}

/// gRPC over TLS (`HttpsClient::http2_only`): a call not opted in to
/// retries, round robin from an instance that requires a client
/// certificate the client does not have, beside a healthy one. The call
/// never reached the refusing server (a connect failure, retried even
/// for calls not opted in, as the `grpc` docs say), so the healthy one
/// should answer it.
#[tokio::test]
async fn a_grpc_call_refused_for_its_client_certificate_goes_to_the_next_instance() {
    use std::sync::Arc;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tower_ribbon::grpc::{self, GrpcBody, GrpcRetryLayer};

    use grpc_support::GrpcBackend;

    let pki = pki();
    let acceptor = |mtls: bool| {
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            tls_support::server_config(&pki, vec![b"h2".to_vec()], mtls),
        )))
    };
    let refusing = GrpcBackend::start_with("refusing", acceptor(true))
        .await
        .unwrap();
    let healthy = GrpcBackend::start_with("healthy", acceptor(false))
        .await
        .unwrap();
    let instances = [refusing.port(), healthy.port()]
        .iter()
        .map(|&p| {
            Instance::new("my-grpc-service", "127.0.0.1", p)
                .unwrap()
                .with_secure(true)
        })
        .collect();
    let https = HttpsClient::builder()
        .webpki_roots(false)
        .add_root_pem(pki.ca_pem.as_bytes())
        .unwrap()
        .http2_only(true)
        .build::<GrpcBody>()
        .unwrap();
    let channel = grpc::balance(
        LoadBalancer::builder()
            .source(StaticSource::new().with_instances("my-grpc-service", instances))
            .service("my-grpc-service")
            .rule(|| RoundRobin::with_start(0)),
        https,
        GrpcRetryLayer::new(),
    )
    .unwrap();
    let mut client =
        HealthClient::with_origin(channel, http::Uri::from_static("http://my-grpc-service"));
    let reply = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    println!(
        "gRPC: {:?}; checks refusing {} healthy {}",
        reply
            .as_ref()
            .map(|r| r.metadata().get("x-backend").cloned())
            .map_err(|s| (s.code(), s.message().to_owned())),
        refusing.checks(),
        healthy.checks()
    );
    assert_eq!(refusing.checks(), 0);
    assert!(reply.is_ok(), "{:?}", reply.err());
    assert_eq!(healthy.checks(), 1);
}

/// TLS 1.2: the client waits for the server's Finished, which a server
/// refusing the client certificate never sends, so the refusal arrives
/// during the connect: the connector's `ConnectError` (unchanged by the
/// fix), a connect failure, and the POST goes to the healthy instance.
#[tokio::test]
async fn under_tls_1_2_the_refusal_comes_during_the_connect() {
    use tokio_rustls::rustls;

    let pki = pki();
    let tls12 = |mtls: bool| {
        tls_support::server_config_versions(&pki, alpn_both(), mtls, &[&rustls::version::TLS12])
    };
    let refusing = tls_support::start_with_config("refusing", tls12(true)).await;
    let healthy = tls_support::start_with_config("healthy", tls12(false)).await;
    let instances = [refusing.port(), healthy.port()]
        .iter()
        .map(|&p| {
            Instance::new(SVC, "127.0.0.1", p)
                .unwrap()
                .with_secure(true)
        })
        .collect();
    let client = HttpsClient::builder()
        .webpki_roots(false)
        .add_root_pem(pki.ca_pem.as_bytes())
        .unwrap()
        .build::<Full<Bytes>>()
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .rule(|| RoundRobin::with_start(0))
        .build(client.clone())
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    let req = http::Request::post("http://secure-service/orders")
        .body(Full::new(Bytes::from_static(b"one order")))
        .unwrap();
    let answered = lb.clone().oneshot(req).await;
    assert!(
        answered.as_ref().is_ok_and(|r| r.status() == 200),
        "{:?}",
        answered.as_ref().map(|r| r.status()).map_err(|e| chain(e))
    );
    assert_eq!(
        (
            refusing.hits(),
            refusing.handshake_failures(),
            healthy.hits()
        ),
        (0, 1, 1)
    );

    // Alone: a typed handshake error from the connect, two connect failures.
    let alone = Instance::new(SVC, "127.0.0.1", refusing.port())
        .unwrap()
        .with_secure(true);
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, vec![alone]))
        .service(SVC)
        .build(client)
        .unwrap();
    let req = http::Request::get("http://secure-service/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let e = lb.clone().oneshot(req).await.expect_err("refused");
    let typed = connect_error(&e).expect("typed ConnectError");
    assert!(typed.is_handshake(), "{}", chain(&e));
    assert!(
        matches!(typed.rustls_error(), Some(rustls::Error::AlertReceived(_))),
        "{typed:?}"
    );
    let outcomes: Vec<Outcome> = e.attempts().iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Outcome::ConnectFailure, Outcome::ConnectFailure]);
    assert_eq!(refusing.hits(), 0);
}

/// hyper-util's client itself (`HttpsClient::inner`, as a caller wiring
/// its own client over the same connector does) reports the refusal as
/// hyper's I/O error, untyped: the balancer reads the alert in it all the
/// same, so the POST goes to the healthy instance over HTTP/1.1 (rustls'
/// error kept) and HTTP/2 (its text kept).
#[tokio::test]
async fn through_hyper_utils_own_client_the_post_goes_to_the_next_instance() {
    let pki = pki();
    for http1_only in [false, true] {
        let mode = |mtls: bool| Mode::Tls {
            alpn: alpn_both(),
            require_client_cert: mtls,
        };
        let refusing = start("refusing", &pki, mode(true)).await;
        let healthy = start("healthy", &pki, mode(false)).await;
        let instances = [refusing.port(), healthy.port()]
            .iter()
            .map(|&p| {
                Instance::new(SVC, "127.0.0.1", p)
                    .unwrap()
                    .with_secure(true)
            })
            .collect();
        let https = HttpsClient::builder()
            .webpki_roots(false)
            .add_root_pem(pki.ca_pem.as_bytes())
            .unwrap()
            .http2(!http1_only)
            .build::<Full<Bytes>>()
            .unwrap();
        let lb = LoadBalancer::builder()
            .source(StaticSource::new().with_instances(SVC, instances))
            .service(SVC)
            .rule(|| RoundRobin::with_start(0))
            .build(https.inner().clone())
            .unwrap();
        assert!(lb.ready_service(SVC).await);
        let req = http::Request::post("http://secure-service/orders")
            .body(Full::new(Bytes::from_static(b"one order")))
            .unwrap();
        let answered = lb.clone().oneshot(req).await;
        assert!(
            answered.as_ref().is_ok_and(|r| r.status() == 200),
            "http1_only={http1_only}: {:?}",
            answered.as_ref().map(|r| r.status()).map_err(|e| chain(e))
        );
        assert_eq!(
            (
                refusing.hits(),
                refusing.handshake_failures(),
                healthy.hits()
            ),
            (0, 1, 1)
        );
        let refusing_ep = lb.snapshot(SVC).unwrap().endpoints()[0].clone();
        assert_eq!(refusing_ep.instance().port(), refusing.port());
        let stats = refusing_ep.stats();
        assert_eq!((stats.requests(), stats.failures()), (1, 1));
    }
}
