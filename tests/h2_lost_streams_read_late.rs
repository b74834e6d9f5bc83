//! Response streams cut by their HTTP/2 connection's end, read by their
//! caller late. A connection's end counts once against its instance
//! (`h2_connection_lost_streams.rs`); the body's error is seen only when
//! the caller reads it, and lost streams were told apart by time: a stream
//! sent before the last counted lost stream was *read* failed was taken
//! for the same connection. Five GET streams, each on a connection of its
//! own (a server closing every connection 20 ms after its first chunk,
//! streams opened 100 ms apart), read at once: five failures, ejected;
//! each read only after all five connections ended: one failure, not
//! ejected (helper 248, 3 of 3 runs). Now a stream's connection is the
//! one its response named (hyper-util's `HttpInfo`, which its legacy
//! client and reqwest put in every response): five either way.

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

const HOUR: Duration = Duration::from_secs(3600);

async fn closing_server(close_after: Duration) -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let (seen, conns2) = (Arc::clone(&started), Arc::clone(&conns));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            conns2.fetch_add(1, Ordering::SeqCst);
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
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = &mut conn => {}
                    () = answered.notified() => {
                        let _ = tokio::time::timeout(close_after, &mut conn).await;
                    }
                }
            });
        }
    });
    (port, started, conns)
}

/// Five GETs through `$lb` (`$get()` each), each on its own connection,
/// each cut 20 ms after its first chunk, read at once or (`$late`) after
/// all five ended: the instance's failures, whether it is ejected, its
/// count in flight.
macro_rules! five_streams {
    ($lb:expr, $get:expr, $served:expr, $late:expr) => {{
        let (lb, (started, conns)) = ($lb, $served);
        let snapshot = lb.snapshot(SVC).unwrap();
        let inst = &snapshot.endpoints()[0];
        let mut bodies = Vec::new();
        for _ in 0..5 {
            let resp = lb.request($get()).await.expect("stream opens");
            let mut body = resp.into_body();
            let first = body.frame().await.expect("frame").ok().expect("data");
            assert_eq!(
                first.into_data().ok().unwrap(),
                Bytes::from_static(b"event 1\n")
            );
            if $late {
                bodies.push(body);
            } else {
                let end = body.frame().await;
                assert!(matches!(end, Some(Err(_))), "cut");
            }
            // The connection is closed 20 ms after: the next stream opens a new one.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for mut body in bodies {
            let end = body.frame().await;
            assert!(matches!(end, Some(Err(_))), "cut");
        }
        assert_eq!(started.load(Ordering::SeqCst), 5);
        assert_eq!(conns.load(Ordering::SeqCst), 5, "one connection per stream");
        let now = tokio::time::Instant::now();
        (
            inst.stats().failures(),
            inst.stats().is_ejected_at(now),
            inst.stats().in_flight(),
        )
    }};
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://svc/watch")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn through_hyper_util(read_late: bool) -> (u64, bool, usize) {
    let (port, started, conns) = closing_server(Duration::from_millis(20)).await;
    let lb = never_reached::h2_round_robin(&[port], RetryPolicy::none(), HOUR).await;
    five_streams!(lb, get, (started, conns), read_late)
}

/// hyper-util's legacy client over its `HttpConnector`: five connection
/// ends counted five times whenever the streams are read (before: one
/// when read late).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_connection_ends_read_late_count_five_times() {
    assert_eq!(
        through_hyper_util(false).await,
        (5, true, 0),
        "read at once"
    );
    assert_eq!(through_hyper_util(true).await, (5, true, 0), "read late");
}

#[cfg(feature = "reqwest")]
async fn through_reqwest(read_late: bool) -> (u64, bool, usize) {
    let (port, started, conns) = closing_server(Duration::from_millis(20)).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .retry(reqwest::retry::never())
        .build()
        .unwrap();
    let inner = tower_ribbon::ReqwestService::new(client).http2_only(true);
    let mut stats = tower_ribbon::stats::StatsConfig::default();
    stats.declined_counted_every = HOUR;
    let policy = RetryPolicy::none();
    let lb = never_reached::round_robin(&[port], inner, |b| b.retry(policy).stats(stats)).await;
    let get = || {
        Request::get("http://svc/watch")
            .body(reqwest::Body::from(""))
            .unwrap()
    };
    five_streams!(lb, get, (started, conns), read_late)
}

/// reqwest (hyper-util's legacy client inside, `HttpInfo` kept in its
/// responses): the same.
#[cfg(feature = "reqwest")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_reqwest_too() {
    assert_eq!(through_reqwest(false).await, (5, true, 0), "read at once");
    assert_eq!(through_reqwest(true).await, (5, true, 0), "read late");
}
