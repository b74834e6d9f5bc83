//! Informational (1xx) responses and responses with odd framing through
//! the body-tracking wrapper (`TrackedBody`), against scripted servers:
//! HTTP/1 through hyper-util's client and reqwest, HTTP/2 (h2c) through
//! hyper-util's. A 103 Early Hints or a 100 Continue the request did not
//! ask for comes before the final response; a 204 or 304 carries bytes
//! after its head; a HEAD's response names a `Content-Length`; an HTTP/2
//! response ends its stream with its HEADERS without a `Content-Length`.
//! For each: the status and body the caller gets, whether the response
//! counts in flight while the caller holds it unread (only while its
//! content may still come), and what its instance is charged, once.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::retry::RetryPolicy;

#[path = "common/raw_h2.rs"]
mod raw_h2;
use raw_h2::{data, headers, response_head};

const SVC: &str = "svc";

/// A one-instance balancer over `inner` (no retries).
async fn balancer<S: Clone>(port: u16, inner: S) -> LoadBalancer<S> {
    let lb = LoadBalancer::builder()
        .source(
            StaticSource::new()
                .with_list(SVC, &format!("127.0.0.1:{port}"))
                .unwrap(),
        )
        .service(SVC)
        .retry(RetryPolicy::none())
        .build(inner)
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    lb
}

/// `[requests, failures, in flight]` of the one instance.
fn counts<S>(lb: &LoadBalancer<S>) -> [u64; 3] {
    let snapshot = lb.snapshot(SVC).unwrap();
    let stats = snapshot.endpoints()[0].stats();
    [stats.requests(), stats.failures(), stats.in_flight() as u64]
}

/// An HTTP/1 server writing `reply` after each request head it reads
/// (keep-alive; request bodies are not read: these requests have none
/// beyond a few bytes the head's buffer takes).
async fn h1_server(reply: &'static [u8]) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    while !head.ends_with(b"\r\n\r\n") {
                        match socket.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    head.clear();
                    if socket.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// One HTTP/1 case: what the server writes, the request's method, and
/// what the caller must see.
struct Case {
    name: &'static str,
    method: http::Method,
    reply: &'static [u8],
    status: u16,
    body: &'static str,
    /// Whether the response counts in flight while held unread.
    held: bool,
    failure: bool,
}

fn h1_cases() -> Vec<Case> {
    let case = |name, method, reply, status, body, held, failure| Case {
        name,
        method,
        reply,
        status,
        body,
        held,
        failure,
    };
    use http::Method;
    vec![
        case(
            "103 Early Hints, then 200",
            Method::GET,
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            200,
            "ok",
            true,
            false,
        ),
        case(
            "103 Early Hints, then 503",
            Method::GET,
            b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\nno",
            503,
            "no",
            true,
            true,
        ),
        case(
            "100 Continue unasked, then 200",
            Method::POST,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            200,
            "ok",
            true,
            false,
        ),
        case(
            "204 with a body",
            Method::GET,
            b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello",
            204,
            "",
            false,
            false,
        ),
        case(
            "304 with a body",
            Method::GET,
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\nhello",
            304,
            "",
            false,
            false,
        ),
        case(
            "HEAD with a Content-Length",
            Method::HEAD,
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n",
            200,
            "",
            false,
            false,
        ),
    ]
}

/// Sends two requests made by `request` through `lb`, reading each
/// response whole: for each, its status, the in-flight count while it
/// was held unread, its body, and the counts once it was read.
async fn twice<S, B, R>(
    lb: &LoadBalancer<S>,
    request: impl Fn() -> http::Request<B>,
) -> Vec<(u16, u64, Bytes, [u64; 3])>
where
    S: tower_ribbon::InnerService<B, Output = http::Response<R>>,
    B: tower_ribbon::retry::TryCloneBody + Send + 'static,
    R: http_body::Body,
    R::Error: std::fmt::Debug,
{
    let mut seen = Vec::new();
    for _ in 0..2 {
        let response = lb.clone().send(request()).await.expect("a response");
        let held = counts(lb)[2];
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.expect("a body");
        seen.push((status, held, body.to_bytes(), counts(lb)));
    }
    seen
}

/// Two requests per case through hyper-util's client and reqwest, on one
/// balancer (the second on the connection the first left, if the client
/// keeps it): each gets the final status and only the final response's
/// content; a response without content (whatever bytes follow its head)
/// is not in flight while held, any other is until read; each request is
/// counted once, a failure only for the 503.
#[tokio::test]
async fn informational_and_odd_framing_over_http1() {
    for reqwest in [false, true] {
        for case in h1_cases() {
            let port = h1_server(case.reply).await;
            let what = format!("{} (reqwest {reqwest})", case.name);
            let request = || {
                http::Request::builder()
                    .method(case.method.clone())
                    .uri("http://svc/")
            };
            let seen = if reqwest {
                let inner = tower_ribbon::ReqwestService::new(reqwest::Client::new());
                let lb = balancer(port, inner).await;
                twice(&lb, || request().body(reqwest::Body::from("x")).unwrap()).await
            } else {
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<Full<Bytes>>();
                let lb = balancer(port, client).await;
                twice(&lb, || request().body(Full::from("x")).unwrap()).await
            };
            for (n, (status, held, body, counted)) in (1..).zip(seen) {
                assert_eq!(status, case.status, "{what}");
                assert_eq!(held, u64::from(case.held), "{what}: in flight while held");
                assert_eq!(body, case.body, "{what}");
                let failures = n * u64::from(case.failure);
                assert_eq!(counted, [n, failures, 0], "{what}");
            }
        }
    }
}

/// Over HTTP/2, a response whose HEADERS end the stream has ended though
/// it names no `Content-Length` (HTTP/2 servers need not: a gRPC
/// trailers-only response, an empty 200 or 503): held unread, it is not in
/// flight, and its latency stops at its headers. Before, such responses
/// counted in flight until the caller dropped them (**3 held responses:
/// 3 in flight → 0**). Informational HEADERS (103, an unasked 100) before
/// the final ones change nothing: the response is load until its DATA
/// ends. A HEAD's response ending its stream with a `Content-Length` is
/// not load either. Each is counted once, as the failure the 503 and the
/// gRPC UNAVAILABLE are.
#[tokio::test]
async fn informational_and_ended_streams_over_http2() {
    use http::Method;
    /// HEADERS blocks (status and fields; the last one final, ending the
    /// stream unless a body follows).
    type Heads = Vec<(u16, &'static [(&'static str, &'static str)])>;
    /// One case: HEADERS blocks, the body after them, whether the response
    /// counts in flight while held, whether it is a failure.
    struct H2Case {
        name: &'static str,
        method: Method,
        heads: Heads,
        body: Option<&'static [u8]>,
        held: bool,
        failure: bool,
    }
    let case = |name, method, heads, body, held, failure| H2Case {
        name,
        method,
        heads,
        body,
        held,
        failure,
    };
    const GRPC: &[(&str, &str)] = &[("content-type", "application/grpc"), ("grpc-status", "14")];
    let cases = [
        case(
            "103, then 200 with a body",
            Method::GET,
            vec![(103, &[("link", "</a.css>")]), (200, &[])],
            Some(b"ok"),
            true,
            false,
        ),
        case(
            "100 unasked, then 200 with a body",
            Method::POST,
            vec![(100, &[]), (200, &[])],
            Some(b"ok"),
            true,
            false,
        ),
        case(
            "200 ending its stream",
            Method::GET,
            vec![(200, &[])],
            None,
            false,
            false,
        ),
        case(
            "503 ending its stream",
            Method::GET,
            vec![(503, &[])],
            None,
            false,
            true,
        ),
        case(
            "gRPC trailers-only UNAVAILABLE",
            Method::POST,
            vec![(200, GRPC)],
            None,
            false,
            true,
        ),
        case(
            "HEAD ending its stream",
            Method::HEAD,
            vec![(200, &[("content-length", "100")])],
            None,
            false,
            false,
        ),
    ];
    let mut held_ended = Vec::new();
    for H2Case {
        name,
        method,
        heads,
        body,
        held,
        failure,
    } in cases
    {
        let (port, mut conns) = raw_h2::listen(None).await;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http::<Full<Bytes>>();
        let lb = balancer(port, client).await;
        let request = http::Request::builder()
            .method(method)
            .uri("http://svc/")
            .body(Full::from("x"))
            .unwrap();
        let response = tokio::spawn(lb.clone().oneshot(request));
        let mut conn = conns.recv().await.unwrap();
        let stream = conn.next_request().await;
        let last = heads.len() - 1;
        for (n, (status, fields)) in heads.into_iter().enumerate() {
            let end = n == last && body.is_none();
            conn.send(headers(stream, &response_head(status, fields), end));
        }
        let response = response.await.unwrap().expect(name);
        let in_flight = counts(&lb)[2];
        assert_eq!(in_flight, u64::from(held), "{name}: in flight while held");
        if let Some(body) = body {
            conn.send(data(stream, body, true));
        } else {
            held_ended.push(in_flight);
        }
        let read = response.into_body().collect().await.expect(name).to_bytes();
        assert_eq!(read, body.unwrap_or_default(), "{name}");
        assert_eq!(counts(&lb), [1, u64::from(failure), 0], "{name}");
    }
    assert_eq!(held_ended, [0, 0, 0, 0]);
}
