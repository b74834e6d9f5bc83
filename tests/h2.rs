//! HTTP/2 through the balancer: h2 over TLS by ALPN and h2c with prior
//! knowledge, and per-request balancing over multiplexed connections (one
//! connection per instance carries every request, yet round robin still
//! splits requests evenly).

#[path = "support/tls.rs"]
mod tls_support;

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tls_support::{Backend, Mode, pki, start};
use tokio::task::JoinSet;
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::tls::HttpsClient;
use tower_ribbon::{Instance, LoadBalancer};

type Lb = LoadBalancer<HttpsClient<Empty<Bytes>>>;

fn source(backends: &[&Backend], secure: bool) -> StaticSource {
    let instances = backends
        .iter()
        .map(|b| {
            Instance::new("h2-service", "127.0.0.1", b.port())
                .expect("instance")
                .with_secure(secure)
        })
        .collect();
    StaticSource::new().with_instances("h2-service", instances)
}

/// Sends `n` GETs, `concurrency` at a time, and counts response bodies.
async fn tally(lb: &Lb, n: usize, concurrency: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut sent = 0;
    while sent < n {
        let mut wave = JoinSet::new();
        for _ in 0..concurrency.min(n - sent) {
            let lb = lb.clone();
            wave.spawn(async move {
                let request = http::Request::get("http://h2-service/")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                match lb.oneshot(request).await {
                    Ok(response) => match response.into_body().collect().await {
                        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                        Err(e) => format!("error: body: {e}"),
                    },
                    Err(e) => format!("error: {e}"),
                }
            });
            sent += 1;
        }
        while let Some(body) = wave.join_next().await {
            *counts.entry(body.expect("task")).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test]
async fn h2_over_tls_by_alpn() {
    let pki = pki();
    // The servers offer only h2; the client offers h2 and http/1.1.
    let h2_only = || Mode::Tls {
        alpn: vec![b"h2".to_vec()],
        require_client_cert: false,
    };
    let a = start("a", &pki, h2_only()).await;
    let b = start("b", &pki, h2_only()).await;
    let client = HttpsClient::builder()
        .webpki_roots(false)
        .add_root_pem(pki.ca_pem.as_bytes())
        .expect("ca")
        .build::<Empty<Bytes>>()
        .expect("client");
    let lb = LoadBalancer::builder()
        .source(source(&[&a, &b], true))
        .service("h2-service")
        .build(client)
        .expect("lb");
    // With ALPN the client learns the protocol only once connected, so
    // calls racing on a cold pool may each dial; one call per instance
    // first, then 40 calls, 10 at a time, share the two connections.
    let warm = tally(&lb, 2, 1).await;
    assert_eq!(warm.values().sum::<usize>(), 2);
    let counts = tally(&lb, 40, 10).await;
    let expected: BTreeMap<String, usize> = [
        ("a HTTP/2.0 client-certs=0".to_owned(), 20),
        ("b HTTP/2.0 client-certs=0".to_owned(), 20),
    ]
    .into();
    assert_eq!(counts, expected);
    assert_eq!((a.connections(), b.connections()), (1, 1));
}

#[tokio::test]
async fn h2c_round_robin_splits_requests_not_connections() {
    let pki = pki();
    let a = start("a", &pki, Mode::H2c).await;
    let b = start("b", &pki, Mode::H2c).await;
    let c = start("c", &pki, Mode::H2c).await;
    // Plain http instances, HTTP/2 with prior knowledge.
    let client = HttpsClient::builder()
        .http2_only(true)
        .build::<Empty<Bytes>>()
        .expect("client");
    let lb = LoadBalancer::builder()
        .source(source(&[&a, &b, &c], false))
        .service("h2-service")
        .build(client)
        .expect("lb");

    let counts = tally(&lb, 300, 30).await;
    let expected: BTreeMap<String, usize> = [
        ("a HTTP/2.0 client-certs=0".to_owned(), 100),
        ("b HTTP/2.0 client-certs=0".to_owned(), 100),
        ("c HTTP/2.0 client-certs=0".to_owned(), 100),
    ]
    .into();
    assert_eq!(counts, expected);
    assert_eq!((a.hits(), b.hits(), c.hits()), (100, 100, 100));
    // One multiplexed connection per instance carried all of its requests.
    assert_eq!(
        (a.connections(), b.connections(), c.connections()),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn h2c_server_refuses_http1_client() {
    // Without http2_only the client speaks HTTP/1.1 on plain http, which
    // an h2c-only server cannot answer: the failure is the balancer's error,
    // not a hang.
    let pki = pki();
    let a = start("a", &pki, Mode::H2c).await;
    let client = HttpsClient::builder()
        .build::<Empty<Bytes>>()
        .expect("client");
    let lb = LoadBalancer::builder()
        .source(source(&[&a], false))
        .service("h2-service")
        .build(client)
        .expect("lb");
    let counts = tally(&lb, 1, 1).await;
    assert_eq!(counts.len(), 1);
    let (body, n) = counts.into_iter().next().expect("one");
    assert_eq!(n, 1);
    assert!(body.starts_with("error:"), "{body}");
    assert_eq!(a.hits(), 0);
}
