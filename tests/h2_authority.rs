//! Over HTTP/2 an instance must not receive a `Host` field that differs
//! from the request's `:authority` (RFC 9113 §8.3.1: "Clients MUST NOT
//! generate a request with a Host header field that differs from the
//! `:authority` pseudo-header field"; a server "SHOULD treat a request as
//! malformed" when they differ). The balancer rewrites the authority to
//! the picked instance's, so a `Host` the caller set (a gateway forwarding
//! its incoming request's headers, a virtual host) would now disagree with
//! it. Over HTTP/1.1 it is kept (`tests/request_authority.rs`: the target
//! carries no authority, `Host` is the only one); over HTTP/2 it is
//! dropped wherever the balancer or the client knows the request goes
//! over HTTP/2: a request whose version is `HTTP/2` (tonic's, or a
//! caller's that sets it) and any request through an HTTP/2-only
//! `tls::HttpsClient` or a `ReqwestService` told `http2_only` (reqwest's
//! `http2_prior_knowledge()`). What an ALPN-negotiated connection of a client
//! offering both protocols does is said in the service module docs.
//!
//! Servers that reject the mismatch, so that the request failed on every
//! instance before: Go's `net/http`
//! ([golang/go#80065](https://github.com/golang/go/issues/80065)), Vert.x
//! ([eclipse-vertx/vert.x#4776](https://github.com/eclipse-vertx/vert.x/issues/4776)),
//! python-hyper's h2
//! ([python-hyper/h2#246](https://github.com/python-hyper/h2/issues/246));
//! HTTP/3 servers do the same (quic-go,
//! [quic-go/quic-go#5828](https://github.com/quic-go/quic-go/pull/5828)),
//! which is why a request whose version is HTTP/3 is checked too. The
//! client-side twin of this defect: nghttp's `-H host:` appended a `Host`
//! beside the `:authority` built from the URL
//! ([nghttp2/nghttp2#2896](https://github.com/nghttp2/nghttp2/issues/2896)).
//! The servers here are real hyper HTTP/2 servers (h2c with prior
//! knowledge, and TLS with ALPN `h2`) that answer what they received and,
//! as those servers do, 400 for a `Host` differing from `:authority`.

#[path = "support/tls.rs"]
mod tls_support;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::instance::Instance;
use tower_ribbon::tls::HttpsClient;

const SVC: &str = "svc";

/// Answers `version authority=<:authority> host=<Host fields>` with
/// `status`, or with 400 when a `Host` field differs from `:authority`.
async fn echo(
    req: Request<Incoming>,
    status: http::StatusCode,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    let hosts: Vec<String> = req
        .headers()
        .get_all(http::header::HOST)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let text = format!(
        "{:?} authority={} host={hosts:?}",
        req.version(),
        authority.as_deref().unwrap_or("-")
    );
    let mismatch = hosts
        .iter()
        .any(|h| Some(h.to_ascii_lowercase()) != authority.as_deref().map(str::to_ascii_lowercase));
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = if mismatch {
        http::StatusCode::BAD_REQUEST
    } else {
        status
    };
    Ok(response)
}

/// An HTTP/2 server on 127.0.0.1 answering [`echo`] with 200: h2c with
/// prior knowledge, or TLS with ALPN `h2` when `tls` is given.
async fn server(tls: Option<TlsAcceptor>) -> (u16, JoinHandle<()>) {
    server_answering(tls, http::StatusCode::OK).await
}

/// [`server`], answering with `status` where the `Host` agrees.
async fn server_answering(
    tls: Option<TlsAcceptor>,
    status: http::StatusCode,
) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new()).http2_only();
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = builder
                                .serve_connection(
                                    TokioIo::new(stream),
                                    service_fn(move |req| echo(req, status)),
                                )
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(
                                TokioIo::new(tcp),
                                service_fn(move |req| echo(req, status)),
                            )
                            .await;
                    }
                }
            });
        }
    });
    (port, task)
}

fn balancer<S>(instance: Instance, inner: S) -> LoadBalancer<S> {
    LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, vec![instance]))
        .service(SVC)
        .build(inner)
        .expect("balancer")
}

/// Sends `GET {uri}` with `version` and an optional `Host` through `lb`;
/// returns the status and what the instance saw.
async fn send<L, Q, B>(lb: &L, uri: &str, version: Version, host: Option<&str>) -> (u16, String)
where
    L: tower::Service<Request<Q>, Response = http::Response<B>> + Clone,
    Q: Default,
    L::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let mut request = Request::get(uri).version(version);
    if let Some(host) = host {
        request = request.header(http::header::HOST, host);
    }
    let request = request.body(Q::default()).expect("request");
    let response = lb.clone().oneshot(request).await.expect("answered");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn an_http2_request_carries_no_host_differing_from_its_authority() {
    let (port, task) = server(None).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    let lb = balancer(
        Instance::new(SVC, "127.0.0.1", port).expect("instance"),
        client,
    );
    let own = format!("127.0.0.1:{port}");
    // A caller's Host (what it would have meant over HTTP/1.1), the
    // service's name, and the same in another case: each differs from the
    // instance's authority, so each is dropped.
    for host in ["api.example.com", "svc", "SVC:8080"] {
        assert_eq!(
            send(&lb, "http://svc/a", Version::HTTP_2, Some(host)).await,
            (200, format!("HTTP/2.0 authority={own} host=[]")),
            "Host {host:?}"
        );
    }
    // A Host naming the instance itself agrees with `:authority` and stays.
    assert_eq!(
        send(&lb, "http://svc/a", Version::HTTP_2, Some(&own)).await,
        (200, format!("HTTP/2.0 authority={own} host=[{own:?}]"))
    );
    // Without one, nothing is added.
    assert_eq!(
        send(&lb, "http://svc/a", Version::HTTP_2, None).await,
        (200, format!("HTTP/2.0 authority={own} host=[]"))
    );
    task.abort();
}

#[tokio::test]
async fn an_http2_only_tls_client_sends_no_host_differing_from_the_authority() {
    let pki = tls_support::pki();
    let acceptor = TlsAcceptor::from(Arc::new(tls_support::server_config(
        &pki,
        vec![b"h2".to_vec()],
        false,
    )));
    let (port, task) = server(Some(acceptor)).await;
    let own = format!("127.0.0.1:{port}");
    // HTTP/2 only, and ALPN offering `h2` alone: both speak only HTTP/2 to
    // an https instance.
    for http2_only in [true, false] {
        let client = HttpsClient::builder()
            .webpki_roots(false)
            .add_root_pem(pki.ca_pem.as_bytes())
            .expect("root");
        let client = if http2_only {
            client.http2_only(true)
        } else {
            client.http1(false)
        };
        let client = client.build::<Empty<Bytes>>().expect("client");
        let instance = Instance::new(SVC, "127.0.0.1", port)
            .expect("instance")
            .with_secure(true);
        let lb = balancer(instance, client);
        // The caller's request says HTTP/1.1 (the default); the client
        // speaks only HTTP/2, so it drops the Host the balancer left.
        assert_eq!(
            send(
                &lb,
                "http://svc/a",
                Version::HTTP_11,
                Some("api.example.com")
            )
            .await,
            (200, format!("HTTP/2.0 authority={own} host=[]")),
            "http2_only {http2_only}"
        );
        assert_eq!(
            send(&lb, "https://svc/a", Version::HTTP_11, Some(&own)).await,
            (200, format!("HTTP/2.0 authority={own} host=[{own:?}]")),
            "http2_only {http2_only}"
        );
    }
    task.abort();
}

/// A retry onto another instance compares the caller's `Host` with that
/// instance's authority, not the first one's: a `Host` naming the first
/// instance agrees there and stays (its 503 sends the GET on), and is
/// dropped on the second, which would otherwise answer 400.
#[tokio::test]
async fn a_retry_drops_a_host_naming_the_instance_it_left() {
    let (first, first_task) = server_answering(None, http::StatusCode::SERVICE_UNAVAILABLE).await;
    let (second, second_task) = server(None).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    let instances = vec![
        Instance::new(SVC, "127.0.0.1", first).expect("first"),
        Instance::new(SVC, "127.0.0.1", second).expect("second"),
    ];
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .rule(|| tower_ribbon::rule::RoundRobin::with_start(0))
        .build(client)
        .expect("balancer");
    let host = format!("127.0.0.1:{first}");
    assert_eq!(
        send(&lb, "http://svc/a", Version::HTTP_2, Some(&host)).await,
        (
            200,
            format!("HTTP/2.0 authority=127.0.0.1:{second} host=[]")
        )
    );
    first_task.abort();
    second_task.abort();
}

/// reqwest with `http2_prior_knowledge()` sends every request over h2c,
/// whatever version the request says; the balancer cannot know, so the
/// adapter is told (`ReqwestService::http2_only`). Without it the caller's
/// `Host` reaches the instance beside `:authority` and the request is
/// refused (400), which is what the first assertion pins.
#[tokio::test]
async fn reqwest_with_prior_knowledge_told_http2_only_drops_a_differing_host() {
    let (port, task) = server(None).await;
    let own = format!("127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let instance = || Instance::new(SVC, "127.0.0.1", port).expect("instance");
    let plain = balancer(
        instance(),
        tower_ribbon::ReqwestService::new(client.clone()),
    );
    let told = balancer(
        instance(),
        tower_ribbon::ReqwestService::new(client).http2_only(true),
    );
    let host = Some("api.example.com");
    let (status, _) = send::<_, String, _>(&plain, "http://svc/a", Version::HTTP_11, host).await;
    assert_eq!(status, 400, "the adapter not told: the Host goes through");
    for _ in 0..2 {
        assert_eq!(
            send::<_, String, _>(&told, "http://svc/a", Version::HTTP_11, host).await,
            (200, format!("HTTP/2.0 authority={own} host=[]"))
        );
    }
    // A Host naming the instance agrees with `:authority` and stays.
    assert_eq!(
        send::<_, String, _>(&told, "http://svc/a", Version::HTTP_11, Some(&own)).await,
        (200, format!("HTTP/2.0 authority={own} host=[{own:?}]"))
    );
    task.abort();
}
