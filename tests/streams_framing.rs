//! A stream whose framing headers disagree, against the in-flight count
//! that least-loaded rules read (helper 130, stop 49): a response with
//! both `Transfer-Encoding: chunked` and `Content-Length: 0` is read
//! chunked (the transfer coding overrides the length, RFC 9112 §6.3), but
//! the balancer took the zero length and ended the attempt at the
//! headers: 0 in flight while the caller read the stream. The server is a
//! raw socket, as no real server sends both headers on demand.
#![cfg(feature = "hyper-util")]

use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A loopback HTTP/1.1 server whose every response carries both
/// `Transfer-Encoding: chunked` and `Content-Length: 0` (the transfer
/// coding overrides the length, RFC 9112 §6.3: hyper reads the body as
/// chunked) and streams one chunk every 50 ms for as long as the client
/// reads.
async fn te_and_cl_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n";
                if sock.write_all(head).await.is_err() {
                    return;
                }
                loop {
                    if sock.write_all(b"6\r\ndata:x\r\n").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(ms(50)).await;
                }
            });
        }
    });
    addr
}

/// A server-sent-event stream answered with both headers, held open by
/// the caller, who reads from it: the instance should count it in flight
/// (1) until the body is dropped, as it does any other stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_stream_under_content_length_zero_counts_in_flight() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower_ribbon::LoadBalancer;
    use tower_ribbon::discovery::StaticSource;
    use tower_ribbon::health::OutlierDetection;
    use tower_ribbon::retry::RetryPolicy;
    use tower_ribbon::rule::BestAvailable;

    let addr = te_and_cl_server().await;
    let source = StaticSource::new()
        .with_list("svc", &addr.to_string())
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .rule(BestAvailable::new)
        .retry(RetryPolicy::none())
        .outlier_detection(OutlierDetection::disabled())
        .build(client)
        .unwrap();
    let in_flight = || {
        lb.snapshot("svc").unwrap().endpoints()[0]
            .stats()
            .in_flight()
    };
    let req = http::Request::get("http://svc/events")
        .body(Empty::new())
        .unwrap();
    let resp = lb.request(req).await.unwrap();
    let mut body = resp.into_body();
    // Three chunks arrive: the stream is open and flowing.
    let mut chunks = 0;
    while chunks < 3 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a chunk within 5 s")
            .expect("the stream goes on")
            .expect("no error");
        chunks += usize::from(frame.is_data());
    }
    let held = in_flight();
    drop(body);
    let after = in_flight();
    // Measured before the fix: 0 while held (the attempt ended at the
    // headers); after: 1, then 0.
    assert_eq!(
        (held, after),
        (1, 0),
        "in flight while the stream is held, after dropping it"
    );
}
