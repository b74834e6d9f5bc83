//! Response streams (a gRPC server stream, a download, SSE) open when
//! their HTTP/2 connection ends. `h2_connection_lost.rs` made a
//! connection's end count once for attempts failing before their response
//! headers; a response *body* the same end cut still counted once per
//! stream, as an `OtherError`: one caller's oversized header, which each
//! of two healthy servers answered `GOAWAY(ENHANCE_YOUR_CALM)` before
//! closing its connection, cut the ten streams open on each, charged each
//! instance eleven failures (the decline and ten streams) and ejected one
//! (only the 50 % cap kept the other). Now a body cut by its connection's
//! end is [`Outcome::ConnectionLost`] as an attempt would be: counted once
//! per connection's end, and not within `declined_counted_every` after a
//! decline. A server that closes every connection is still charged for
//! each (found by this crate's adversarial review, attack 62c).
//!
//! [`Outcome::ConnectionLost`]: tower_ribbon::stats::Outcome::ConnectionLost

#[allow(dead_code)]
#[path = "common/never_reached.rs"]
mod never_reached;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use never_reached::SVC;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::stats::BreakerState;

/// One burst is one window whatever the machine's speed.
const HOUR: Duration = Duration::from_secs(3600);

/// A real h2c server (header list limit 4 KiB) answering every request
/// 200 with one chunk, then holding the body open; with `close_after`,
/// each connection is closed (the TCP connection dropped with the stream
/// open) that long after its first response. Its port and the streams it
/// started.
async fn streaming_server(close_after: Option<Duration>) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&started);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let answered = Arc::new(tokio::sync::Notify::new());
                let notify = Arc::clone(&answered);
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    notify.notify_one();
                    use tokio_stream::StreamExt as _;
                    let first = tokio_stream::iter([Ok::<_, Infallible>(Frame::data(
                        Bytes::from_static(b"event 1\n"),
                    ))]);
                    let body = StreamBody::new(first.chain(tokio_stream::pending()));
                    async move { Ok::<_, Infallible>(http::Response::new(body)) }
                });
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                builder.max_header_list_size(4096);
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                let Some(after) = close_after else {
                    let _ = conn.await;
                    return;
                };
                tokio::select! {
                    _ = &mut conn => {}
                    () = answered.notified() => {
                        // Let the response and its chunk go out, then drop
                        // the connection.
                        let _ = tokio::time::timeout(after, &mut conn).await;
                    }
                }
            });
        }
    });
    (port, started)
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://svc/watch")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Reads a response's first chunk, then reads on in a task, as a watcher
/// does, until the body ends: `Err` with its error if it failed.
async fn watch(
    response: http::Response<
        impl http_body::Body<Data = Bytes, Error: std::fmt::Display> + Send + Unpin + 'static,
    >,
) -> tokio::task::JoinHandle<Result<(), String>> {
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let chunk = body.frame().await.expect("a frame").ok().expect("data");
    assert_eq!(
        chunk.into_data().ok().unwrap(),
        Bytes::from_static(b"event 1\n")
    );
    tokio::spawn(async move {
        loop {
            match body.frame().await {
                None => return Ok(()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(_)) => {}
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_callers_oversized_header_cutting_open_streams_ejects_no_instance() {
    let (first, started_first) = streaming_server(None).await;
    let (second, started_second) = streaming_server(None).await;
    let lb = never_reached::h2_round_robin(&[first, second], RetryPolicy::default(), HOUR).await;
    let mut readers = Vec::new();
    for _ in 0..20 {
        readers.push(watch(lb.request(get()).await.expect("stream opens")).await);
    }
    let started = [&started_first, &started_second].map(|s| s.load(Ordering::SeqCst));
    assert_eq!(started, [10, 10]);
    let snapshot = lb.snapshot(SVC).unwrap();
    let in_flight: Vec<usize> = snapshot
        .endpoints()
        .iter()
        .map(|e| e.stats().in_flight())
        .collect();
    assert_eq!(in_flight, [10, 10]);

    // One caller's request with a header over four times the limit: each
    // server declines it (GOAWAY ENHANCE_YOUR_CALM) and closes.
    let mut big = get();
    big.headers_mut().insert(
        "x-big",
        http::HeaderValue::try_from("v".repeat(20_000)).unwrap(),
    );
    let err = lb.request(big).await.expect_err("both servers decline it");
    assert_eq!(err.attempts().len(), 2, "{err}");

    let mut cut = 0;
    for reader in readers {
        if let Err(e) = reader.await.unwrap() {
            assert_eq!(e, "error reading a body from connection");
            cut += 1;
        }
    }
    assert_eq!(cut, 20, "every stream was cut by its connection's end");
    let now = tokio::time::Instant::now();
    let state: Vec<(u64, bool, BreakerState, usize)> = snapshot
        .endpoints()
        .iter()
        .map(|e| {
            let s = e.stats();
            (
                s.failures(),
                s.is_ejected_at(now),
                s.breaker_state(),
                s.in_flight(),
            )
        })
        .collect();
    // Per instance: its decline (the first of the window, a connect
    // failure), and its connection's end once if the first stream it cut
    // was recorded before the decline was (a race of two tasks), not
    // after. Before: 11 failures each, the first instance ejected.
    for &(failures, ejected, breaker, in_flight) in &state {
        assert!((1..=2).contains(&failures), "{state:?}");
        assert!(
            !ejected && breaker == BreakerState::Closed && in_flight == 0,
            "{state:?}"
        );
    }
}

/// A server that closes each connection after its first response's first
/// chunk: every stream is on a connection of its own, and each
/// connection's end counts; five in a row eject the instance, as they did
/// before (and as lost attempts do, `h2_connection_lost.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_closing_every_connection_is_charged_for_each() {
    let (closing, started) = streaming_server(Some(Duration::from_millis(20))).await;
    let (healthy, _) = streaming_server(None).await;
    let lb = never_reached::h2_round_robin(&[closing, healthy], RetryPolicy::none(), HOUR).await;
    let snapshot = lb.snapshot(SVC).unwrap();
    let closing_instance = &snapshot.endpoints()[0];
    let mut held = Vec::new();
    for i in 0..5 {
        // Round robin: even requests go to the closing server.
        let reader = watch(lb.request(get()).await.expect("stream opens")).await;
        let cut = reader.await.unwrap();
        assert_eq!(
            cut,
            Err("error reading a body from connection".to_owned()),
            "stream {i}"
        );
        held.push(watch(lb.request(get()).await.expect("stream opens")).await);
        assert_eq!(closing_instance.stats().failures(), i + 1);
    }
    assert_eq!(started.load(Ordering::SeqCst), 5);
    assert!(
        closing_instance
            .stats()
            .is_ejected_at(tokio::time::Instant::now())
    );
    assert_eq!(snapshot.endpoints()[1].stats().failures(), 0);
}
