//! A server's HTTP/2 `GOAWAY` with `ENHANCE_YOUR_CALM` (RFC 9113, section
//! 7) is a complaint about this client's traffic, not a sign the instance
//! is unwell: h2's server (hyper's, tonic's, axum's) sends it when one
//! stream's header list is over four times its `SETTINGS_MAX_HEADER_LIST_SIZE`,
//! and every stream above its last stream id fails with it, the caller's
//! and any other caller's sharing the connection. Such a stream was not
//! processed, so it is retried (even a POST), as
//! [`Outcome::Declined`], and it counts in no stats, circuit breaker or
//! outlier ejection. Before, it was a connect failure: five requests with
//! one oversized header opened the breakers of two healthy instances for
//! 30 s (found by this crate's adversarial review, stop 43). A `GOAWAY`
//! with any other code on an unprocessed stream stays a connect failure.
//!
//! gRPC clients read the code the same way, as the server throttling this
//! client: grpc-java's `NettyClientHandler` doubles its keepalive time on
//! `GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings")`, and
//! [grpc/grpc-go#2602](https://github.com/grpc/grpc-go/pull/2602) and
//! [dragonflyoss/client#670](https://github.com/dragonflyoss/client/pull/670)
//! (an h2 client) are reports of it under concurrent calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower_ribbon::stats::{BreakerState, Outcome};

#[path = "common/broken_upload.rs"]
mod broken_upload;
#[path = "common/goaway_server.rs"]
mod goaway_server;
#[path = "common/never_reached.rs"]
mod never_reached;
use broken_upload::expect_untouched;
use never_reached::{SVC, balancer, ok_server, post};

/// hyper's HTTP/2 server (h2c) on 127.0.0.1 with
/// `SETTINGS_MAX_HEADER_LIST_SIZE` = `limit`, answering `ok`: h2 answers a
/// header list over `limit` with 431 and one over 4 × `limit` with
/// `GOAWAY(ENHANCE_YOUR_CALM)`. Its port and the requests it answered.
async fn strict_server(limit: u32) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let _ = req.into_body().collect().await;
                        seen.fetch_add(1, Ordering::SeqCst);
                        let ok = Full::new(Bytes::from_static(b"ok"));
                        Ok::<_, std::io::Error>(http::Response::new(ok))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_header_list_size(limit)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, requests)
}

/// `request` with a header `x-big` of `len` bytes.
fn with_big_header(mut request: Request<Full<Bytes>>, len: usize) -> Request<Full<Bytes>> {
    let value = http::HeaderValue::try_from("v".repeat(len)).unwrap();
    request.headers_mut().insert("x-big", value);
    request
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://svc/x")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Against two real h2 servers with a 4 KiB header list limit: a caller's
/// 20 000-byte header (over the 16 KiB abuse limit) makes each server
/// close its connection with `ENHANCE_YOUR_CALM`; six GETs and six POSTs
/// each fail after two attempts, both `Declined` (the POST too: the stream
/// was never processed), no server runs one, and both instances keep a
/// closed breaker and no failure, so the next four GETs are served two
/// and two. A 10 000-byte header (over the limit, under the abuse limit)
/// gets the server's 431, which is the caller's to read.
#[tokio::test]
async fn a_callers_oversized_header_opens_no_breaker() {
    let (first, served_first) = strict_server(4096).await;
    let (second, served_second) = strict_server(4096).await;
    let lb = balancer(first, second, true).await;
    for _ in 0..2 {
        assert_eq!(lb.request(get()).await.unwrap().status(), 200);
    }
    let served = || {
        [
            served_first.load(Ordering::SeqCst),
            served_second.load(Ordering::SeqCst),
        ]
    };
    assert_eq!(served(), [1, 1]);

    for i in 0..12 {
        let request = if i % 2 == 0 { get() } else { post() };
        let err = lb
            .request(with_big_header(request, 20_000))
            .await
            .expect_err("every server declines it");
        let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
        assert_eq!(
            outcomes,
            [Outcome::Declined, Outcome::Declined],
            "request {i}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("(GOAWAY ENHANCE_YOUR_CALM: it refuses this client's traffic, often one request's header list over its limit; not counted against the instance)"),
            "{text}"
        );
    }
    assert_eq!(served(), [1, 1]);
    let snapshot = lb.snapshot(SVC).unwrap();
    expect_untouched(&snapshot);
    for e in snapshot.endpoints() {
        let stats = e.stats();
        assert_eq!(stats.successive_connection_failures(), 0, "{e}");
        assert_eq!(stats.breaker_state(), BreakerState::Closed, "{e}");
    }

    let response = lb.request(with_big_header(get(), 10_000)).await.unwrap();
    assert_eq!(response.status(), 431);
    for _ in 0..4 {
        assert_eq!(lb.request(get()).await.unwrap().status(), 200);
    }
    // The 431 went to the first instance (round robin), so the four GETs
    // started at the second.
    assert_eq!(served(), [3, 3]);
    expect_untouched(&lb.snapshot(SVC).unwrap());
}

/// A POST whose stream a scripted server leaves above the last stream id
/// of its `GOAWAY`: with `ENHANCE_YOUR_CALM` it goes on to the healthy
/// instance and counts nothing on the declining one; with `NO_ERROR` or
/// `INTERNAL_ERROR` it also goes on, but as a connect failure of the
/// instance (the breaker's count).
#[tokio::test]
async fn only_enhance_your_calm_is_not_the_instances() {
    for (reason, outcome) in [
        (11, Outcome::Declined),
        (0, Outcome::ConnectFailure),
        (2, Outcome::ConnectFailure),
    ] {
        let (declining, got) = goaway_server::goaway_server(0, reason, true).await;
        let (healthy, served) = ok_server(true).await;
        let lb = balancer(declining, healthy, true).await;
        let response = lb.request(post()).await.unwrap();
        assert_eq!(response.status(), 200, "reason {reason}");
        assert_eq!(
            (got.load(Ordering::SeqCst), served.load(Ordering::SeqCst)),
            (1, 1),
            "reason {reason}"
        );
        let snapshot = lb.snapshot(SVC).unwrap();
        let stats = snapshot.endpoints()[0].stats();
        let counted = outcome.counts_against_instance();
        assert_eq!(
            (stats.failures(), stats.successive_connection_failures()),
            (u64::from(counted), u32::from(counted)),
            "reason {reason}"
        );
    }
}
