//! `Expect: 100-continue` requests through hyper-util's client and
//! reqwest, against a scripted HTTP/1 server: it answers a final status
//! (417, 401, 503, 200) before reading the body, with the connection kept
//! or closed; or it answers 100 Continue, then hangs, or reads the body
//! whole and resets the connection.
//!
//! hyper (under both clients) does not wait for the 100: it sends the body
//! with the head ([hyper#3833](https://github.com/hyperium/hyper/issues/3833),
//! [hyper PR #3472](https://github.com/hyperium/hyper/pull/3472)), so a
//! final status that comes first does not prove the body unsent, and the retry decision is the usual one: a POST answered
//! is never sent again, whatever the status; a PUT answered 503 goes to
//! the other instance with its whole body. The per-try timeout runs from
//! the send (a body in memory), so a server that answers 100 then hangs
//! is cut off one per-try timeout after the send, and the POST is not
//! sent again. The instance is charged once: the answered status (a
//! failure only for the 503), the timeout (a connection-class failure),
//! the reset (a failure, not a connection failure); nothing stays in
//! flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::error::TimeoutKind;
use tower_ribbon::instance::Instance;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::stats::Outcome;

const SVC: &str = "svc";
/// The request body: larger than the socket buffers, so a server that
/// does not read it holds the upload back.
const BODY: usize = 4 << 20;
const PER_TRY: Duration = Duration::from_millis(300);

/// What the scripted server does after a request's head.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// Answers this status (no content) without reading the body, and
    /// with `true` closes the connection (`Connection: close`), else
    /// keeps it open, idle.
    Final(u16, bool),
    /// Answers 100 Continue, then reads whatever comes and never answers.
    ContinueThenHang,
    /// Answers 100 Continue, reads the body whole, then resets the
    /// connection unanswered.
    ContinueThenReset,
}

/// The scripted server: its port, and how many request heads and whole
/// bodies it read.
async fn scripted(script: Script) -> (u16, Arc<[AtomicUsize; 2]>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let read: Arc<[AtomicUsize; 2]> = Arc::default();
    let seen = Arc::clone(&read);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match socket.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                seen[0].fetch_add(1, Ordering::SeqCst);
                match script {
                    Script::Final(status, close) => {
                        let field = if close { "connection: close\r\n" } else { "" };
                        let answer =
                            format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n{field}\r\n");
                        let _ = socket.write_all(answer.as_bytes()).await;
                        if !close {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                    }
                    Script::ContinueThenHang => {
                        let _ = socket.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                        let mut sink = vec![0u8; 1 << 16];
                        while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                    }
                    Script::ContinueThenReset => {
                        let _ = socket.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                        let mut body = vec![0u8; BODY];
                        if socket.read_exact(&mut body).await.is_ok() {
                            seen[1].fetch_add(1, Ordering::SeqCst);
                        }
                        socket.set_zero_linger().unwrap();
                    }
                }
            });
        }
    });
    (port, read)
}

/// A hyper HTTP/1 server answering 200 after reading each body whole: its
/// port and the length of each body it read.
async fn healthy() -> (u16, Arc<Mutex<Vec<usize>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies: Arc<Mutex<Vec<usize>>> = Arc::default();
    let seen = Arc::clone(&bodies);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let seen = Arc::clone(&seen);
                async move {
                    let body = req.into_body().collect().await?.to_bytes();
                    seen.lock().unwrap().push(body.len());
                    Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from("ok"))))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, svc));
        }
    });
    (port, bodies)
}

/// Round robin from `first` over `first` and `second`, per-try timeout
/// [`PER_TRY`], through `inner`.
async fn balancer<S: Clone>(first: u16, second: u16, inner: S) -> LoadBalancer<S> {
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(
            SVC,
            vec![
                Instance::new(SVC, "127.0.0.1", first).unwrap(),
                Instance::new(SVC, "127.0.0.1", second).unwrap(),
            ],
        ))
        .service(SVC)
        .rule(|| RoundRobin::with_start(0))
        .retry(RetryPolicy::default().per_try_timeout(PER_TRY))
        .build(inner)
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    lb
}

/// `[requests, failures, successive connection failures, in flight]` of
/// the first instance.
fn counts<S>(lb: &LoadBalancer<S>) -> [u64; 4] {
    let snapshot = lb.snapshot(SVC).unwrap();
    let stats = snapshot.endpoints()[0].stats();
    [
        stats.requests(),
        stats.failures(),
        u64::from(stats.successive_connection_failures()),
        stats.in_flight() as u64,
    ]
}

/// What one request ended with: the status, or the attempts' outcomes
/// and the timeout that fired (if one did); and how long it took.
type Ended = (Result<u16, (Vec<Outcome>, Option<TimeoutKind>)>, Duration);

/// Sends one `Expect: 100-continue` request with a [`BODY`]-byte body to
/// the scripted instance (the first), through hyper-util's client or
/// reqwest; reads the response whole. Returns how it ended and the first
/// instance's counts after.
async fn send(
    method: http::Method,
    script: Script,
    reqwest: bool,
) -> (Ended, Arc<[AtomicUsize; 2]>, Vec<usize>, [u64; 4]) {
    let (first, read) = scripted(script).await;
    let (second, bodies) = healthy().await;
    let request = || {
        Request::builder()
            .method(method.clone())
            .uri("http://svc/orders")
            .header(http::header::EXPECT, "100-continue")
    };
    let started = tokio::time::Instant::now();
    let (ended, counted) = if reqwest {
        let inner = tower_ribbon::ReqwestService::new(reqwest::Client::new());
        let lb = balancer(first, second, inner).await;
        let request = request()
            .body(reqwest::Body::from(vec![b'x'; BODY]))
            .unwrap();
        let ended = match lb.clone().oneshot(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                response.into_body().collect().await.expect("a body");
                Ok(status)
            }
            Err(err) => Err((
                err.attempts().iter().map(|a| a.outcome).collect(),
                err.timeout(),
            )),
        };
        (ended, counts(&lb))
    } else {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let lb = balancer(first, second, client).await;
        let request = request().body(Full::from(vec![b'x'; BODY])).unwrap();
        let ended = match lb.clone().oneshot(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                response.into_body().collect().await.expect("a body");
                Ok(status)
            }
            Err(err) => Err((
                err.attempts().iter().map(|a| a.outcome).collect(),
                err.timeout(),
            )),
        };
        (ended, counts(&lb))
    };
    let elapsed = started.elapsed();
    let bodies = bodies.lock().unwrap().clone();
    ((ended, elapsed), read, bodies, counted)
}

/// A final status before the body was read: the caller gets it, the POST
/// is never sent again (also after a 503), the instance counts it once (a
/// failure for the 503 only, never a connection failure) and has nothing
/// in flight, whether the connection was kept or closed.
#[tokio::test]
async fn a_final_status_before_the_body_is_read_ends_a_post_once() {
    for reqwest in [false, true] {
        for status in [417, 401, 503, 200] {
            for close in [false, true] {
                let case = format!("{status}, close {close}, reqwest {reqwest}");
                let script = Script::Final(status, close);
                let ((ended, _), read, bodies, counted) =
                    send(http::Method::POST, script, reqwest).await;
                assert_eq!(ended, Ok(status), "{case}");
                assert_eq!(read[0].load(Ordering::SeqCst), 1, "{case}");
                assert_eq!(bodies, [] as [usize; 0], "{case}: never sent again");
                let failure = u64::from(status == 503);
                assert_eq!(counted, [1, failure, 0, 0], "{case}");
            }
        }
    }
}

/// A PUT answered 503 before its body was read goes to the other
/// instance with its whole body.
#[tokio::test]
async fn a_put_answered_503_before_its_body_is_read_is_sent_whole_elsewhere() {
    for reqwest in [false, true] {
        let ((ended, _), read, bodies, counted) =
            send(http::Method::PUT, Script::Final(503, false), reqwest).await;
        let case = format!("reqwest {reqwest}");
        assert_eq!(ended, Ok(200), "{case}");
        assert_eq!(read[0].load(Ordering::SeqCst), 1, "{case}");
        assert_eq!(bodies, [BODY], "{case}");
        assert_eq!(counted, [1, 1, 0, 0], "{case}");
    }
}

/// 100 Continue then nothing (Envoy took a forwarded 100 for the response
/// started and then neither reported nor counted the timeout,
/// [envoy#12131](https://github.com/envoyproxy/envoy/issues/12131)): the
/// balancer's per-try timeout fires (not
/// before a per-try timeout after the send), the POST is not sent again (its body went out after
/// the 100), the instance is charged one read timeout.
#[tokio::test]
async fn a_post_answered_100_then_left_hanging_times_out_once() {
    for reqwest in [false, true] {
        let ((ended, elapsed), read, bodies, counted) =
            send(http::Method::POST, Script::ContinueThenHang, reqwest).await;
        let case = format!("reqwest {reqwest}");
        let per_try = Some(TimeoutKind::PerTry(PER_TRY));
        assert_eq!(ended, Err((vec![Outcome::ReadTimeout], per_try)), "{case}");
        assert!(elapsed >= PER_TRY, "{case}: {elapsed:?}");
        assert_eq!(read[0].load(Ordering::SeqCst), 1, "{case}");
        assert_eq!(bodies, [] as [usize; 0], "{case}: never sent again");
        assert_eq!(counted, [1, 1, 1, 0], "{case}");
    }
}

/// 100 Continue, the body read whole, then a reset: the POST reached the
/// server, so it fails once (`OtherError`, not a connection failure) and
/// is never sent again.
#[tokio::test]
async fn a_post_answered_100_then_reset_is_never_sent_again() {
    for reqwest in [false, true] {
        let ((ended, _), read, bodies, counted) =
            send(http::Method::POST, Script::ContinueThenReset, reqwest).await;
        let case = format!("reqwest {reqwest}");
        assert_eq!(ended, Err((vec![Outcome::OtherError], None)), "{case}");
        assert_eq!(read[0].load(Ordering::SeqCst), 1, "{case}");
        assert_eq!(read[1].load(Ordering::SeqCst), 1, "{case}: read whole");
        assert_eq!(bodies, [] as [usize; 0], "{case}: never sent again");
        assert_eq!(counted, [1, 1, 0, 0], "{case}");
    }
}
