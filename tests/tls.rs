//! HTTPS instances through the balancer with `tls::HttpsClient` (rustls):
//! certificates made at test time, a secure instance rewritten to https,
//! custom roots, and mutual TLS.

#[path = "support/tls.rs"]
mod tls_support;

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tls_support::{Backend, Mode, Pki, alpn_both, pki, start};
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::tls::{HttpsClient, HttpsClientBuilder, TlsError};
use tower_ribbon::{Instance, LoadBalancer};

fn secure(backends: &[&Backend]) -> StaticSource {
    let instances = backends
        .iter()
        .map(|b| {
            Instance::new("secure-service", "127.0.0.1", b.port())
                .expect("instance")
                .with_secure(true)
        })
        .collect();
    StaticSource::new().with_instances("secure-service", instances)
}

/// An error and its sources, joined.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn trusting(pki: &Pki) -> HttpsClientBuilder {
    HttpsClient::builder()
        .webpki_roots(false)
        .add_root_pem(pki.ca_pem.as_bytes())
        .expect("ca pem")
}

async fn get(lb: &LoadBalancer<HttpsClient<Empty<Bytes>>>, uri: &str) -> Result<String, String> {
    let request = http::Request::get(uri).body(Empty::new()).expect("request");
    let response = lb.clone().oneshot(request).await.map_err(|e| chain(&e))?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

#[tokio::test]
async fn https_instance_through_the_balancer() {
    let pki = pki();
    let tls = || Mode::Tls {
        alpn: alpn_both(),
        require_client_cert: false,
    };
    let a = start("a", &pki, tls()).await;
    let b = start("b", &pki, tls()).await;
    let client = trusting(&pki).build::<Empty<Bytes>>().expect("client");
    let lb = LoadBalancer::builder()
        .source(secure(&[&a, &b]))
        .service("secure-service")
        .build(client)
        .expect("lb");

    let mut counts = BTreeMap::new();
    for _ in 0..10 {
        // The caller writes http://; the secure instance makes it https.
        let body = get(&lb, "http://secure-service/hello")
            .await
            .expect("https call");
        *counts.entry(body).or_insert(0) += 1;
    }
    let expected: BTreeMap<String, usize> = [
        ("a HTTP/2.0 client-certs=0".to_owned(), 5),
        ("b HTTP/2.0 client-certs=0".to_owned(), 5),
    ]
    .into();
    assert_eq!(counts, expected);
    assert_eq!((a.hits(), b.hits()), (5, 5));
    assert_eq!((a.handshake_failures(), b.handshake_failures()), (0, 0));
}

#[tokio::test]
async fn http1_only_client_negotiates_http1() {
    let pki = pki();
    let a = start(
        "a",
        &pki,
        Mode::Tls {
            alpn: alpn_both(),
            require_client_cert: false,
        },
    )
    .await;
    let client = trusting(&pki)
        .http2(false)
        .build::<Empty<Bytes>>()
        .expect("client");
    let lb = LoadBalancer::builder()
        .source(secure(&[&a]))
        .service("secure-service")
        .build(client)
        .expect("lb");
    assert_eq!(
        get(&lb, "http://secure-service/").await.as_deref(),
        Ok("a HTTP/1.1 client-certs=0")
    );
}

#[tokio::test]
async fn untrusted_certificate_is_refused() {
    let pki = pki();
    let other = tls_support::pki();
    let a = start(
        "a",
        &pki,
        Mode::Tls {
            alpn: alpn_both(),
            require_client_cert: false,
        },
    )
    .await;
    // Trusts another CA (and not the webpki roots' either).
    let client = trusting(&other).build::<Empty<Bytes>>().expect("client");
    let lb = LoadBalancer::builder()
        .source(secure(&[&a]))
        .service("secure-service")
        .build(client)
        .expect("lb");
    let err = get(&lb, "http://secure-service/")
        .await
        .expect_err("must fail");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn client_certificate_required_by_the_server() {
    let pki = pki();
    let mtls = || Mode::Tls {
        alpn: alpn_both(),
        require_client_cert: true,
    };
    let a = start("a", &pki, mtls()).await;
    let b = start("b", &pki, mtls()).await;

    // With the client certificate: every call succeeds, on both instances.
    let client = trusting(&pki)
        .client_auth_pem(
            pki.client_cert_pem.as_bytes(),
            pki.client_key_pem.as_bytes(),
        )
        .expect("client auth")
        .build::<Empty<Bytes>>()
        .expect("client");
    let lb = LoadBalancer::builder()
        .source(secure(&[&a, &b]))
        .service("secure-service")
        .build(client)
        .expect("lb");
    for _ in 0..4 {
        let body = get(&lb, "http://secure-service/").await.expect("mtls call");
        assert!(body.ends_with("HTTP/2.0 client-certs=1"), "{body}");
    }
    assert_eq!((a.hits(), b.hits()), (2, 2));
    assert_eq!((a.handshake_failures(), b.handshake_failures()), (0, 0));

    // Without it: the handshake is refused and no request is served.
    let anonymous = trusting(&pki).build::<Empty<Bytes>>().expect("client");
    let lb = LoadBalancer::builder()
        .source(secure(&[&a, &b]))
        .service("secure-service")
        .build(anonymous)
        .expect("lb");
    let err = get(&lb, "http://secure-service/")
        .await
        .expect_err("must fail");
    assert!(!err.is_empty());
    assert_eq!((a.hits(), b.hits()), (2, 2));
    assert!(a.handshake_failures() + b.handshake_failures() >= 1);
}

#[test]
fn bad_pem_inputs_are_typed_errors() {
    let pki = pki();
    assert!(matches!(
        HttpsClient::builder().add_root_pem(b"not pem at all"),
        Err(TlsError::Missing {
            what: "certificate"
        })
    ));
    // A certificate where the key should be.
    let err = HttpsClient::builder()
        .client_auth_pem(
            pki.client_cert_pem.as_bytes(),
            pki.client_cert_pem.as_bytes(),
        )
        .err();
    assert!(
        matches!(
            err,
            Some(TlsError::Missing {
                what: "private key"
            })
        ),
        "{err:?}"
    );
    // A key that does not match the certificate.
    let other = tls_support::pki();
    let err = trusting(&pki)
        .client_auth_pem(
            pki.client_cert_pem.as_bytes(),
            other.client_key_pem.as_bytes(),
        )
        .expect("parses")
        .client_config()
        .err();
    assert!(
        matches!(
            err,
            Some(TlsError::Rustls {
                what: "client certificate or key",
                ..
            })
        ),
        "{err:?}"
    );
}
