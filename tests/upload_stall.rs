//! Whose failure is a streamed upload the per-try timeout cuts
//! (`retry::Upload`, "Whose stall")? A caller whose body pauses (a gRPC
//! client stream sending records as they occur) leaves the server waiting
//! for more after it read everything it was sent: the stall is the
//! caller's. Before, it was the instance's read timeout: ten calls whose
//! bodies paused 600 ms under a 300 ms per-try timeout, round robin over
//! two healthy h2c servers, charged each five failures and ejected one
//! (found by this crate's adversarial review, attack 62c). Now such a cut
//! is an `Outcome::RequestError` (in no stats, not retried) whose error
//! says the request body stalled, while a server that stops reading (HTTP/2
//! flow control holds the body back, and the client stops polling it)
//! stays the instance's `ReadTimeout`. Paused time against real loopback
//! h2c servers: the elapsed times below are exact in virtual time.

#[allow(dead_code)]
#[path = "common/never_reached.rs"]
mod never_reached;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use never_reached::{SVC, round_robin};
use tokio::time::{Instant, Sleep};
use tower_ribbon::LoadBalancer;
use tower_ribbon::error::TimeoutKind;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::{ReplayBody, RetryPolicy};
use tower_ribbon::stats::Outcome;

/// The per-try timeout of these tests.
const PER_TRY: Duration = Duration::from_millis(300);
/// The caller's pause between its two records: over the per-try timeout.
const PAUSE: Duration = Duration::from_millis(600);

/// A caller's stream: one record, a pause of [`PAUSE`], one more record,
/// the end; or (`flood`) 16 KiB frames for ever, each ready at once.
struct Caller {
    sent: u32,
    pause: Pin<Box<Sleep>>,
    flood: bool,
}

impl Caller {
    fn paused() -> Self {
        Self {
            sent: 0,
            pause: Box::pin(tokio::time::sleep(Duration::MAX / 4)),
            flood: false,
        }
    }

    fn flood() -> Self {
        Self {
            flood: true,
            ..Self::paused()
        }
    }
}

impl Body for Caller {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        static CHUNK: [u8; 16 * 1024] = [0; 16 * 1024];
        if self.flood {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK)))));
        }
        match self.sent {
            0 => {
                self.sent = 1;
                let at = Instant::now() + PAUSE;
                self.pause.as_mut().reset(at);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"record 1")))))
            }
            1 => {
                std::task::ready!(self.pause.as_mut().poll(cx));
                self.sent = 2;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"record 2")))))
            }
            _ => Poll::Ready(None),
        }
    }
}

/// A real h2c server that reads each request body to its end and answers
/// 200 `ok`; or (`reading: false`) reads none of it and never answers,
/// with a 64 KiB stream window (the client stops sending once it is full).
async fn server(reading: bool) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    if !reading {
                        // Hold the request unread, for ever.
                        let _unread = req;
                        return std::future::pending().await;
                    }
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                builder.initial_stream_window_size(65_535);
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    port
}

type Lb = LoadBalancer<tower_ribbon::service::HttpClient<ReplayBody<Caller>>>;

/// Round robin over `ports` through an h2c client, no retries, a per-try
/// timeout of [`PER_TRY`] and outlier ejection on (its defaults: five
/// failures in a row).
async fn balancer(ports: &[u16]) -> Lb {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<ReplayBody<Caller>>();
    round_robin(ports, client, |b| {
        b.retry(RetryPolicy::none().per_try_timeout(PER_TRY))
            .outlier_detection(OutlierDetection::default())
    })
    .await
}

fn post(body: Caller) -> Request<ReplayBody<Caller>> {
    Request::post("http://svc/ingest")
        .body(ReplayBody::streaming(body))
        .unwrap()
}

/// Each instance's (requests, failures, ejected), in list order.
fn counted(lb: &Lb) -> Vec<(u64, u64, bool)> {
    let now = Instant::now();
    let snapshot = lb.snapshot(SVC).unwrap();
    snapshot
        .endpoints()
        .iter()
        .map(|e| {
            let s = e.stats();
            (s.requests(), s.failures(), s.is_ejected_at(now))
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_callers_paused_upload_is_the_callers_failure() {
    let lb = balancer(&[server(true).await, server(true).await]).await;
    for i in 0..10 {
        let start = Instant::now();
        let err = lb.request(post(Caller::paused())).await.unwrap_err();
        // Cut one per-try timeout after the first record, the caller's
        // body pending: the caller's, not retried, and still the per-try
        // timeout for `timeout()`.
        assert_eq!(start.elapsed(), PER_TRY, "call {i}");
        let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
        assert_eq!(outcomes, [Outcome::RequestError], "call {i}: {err}");
        assert_eq!(err.timeout(), Some(TimeoutKind::PerTry(PER_TRY)), "{err}");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            source
                .as_deref()
                .is_some_and(|s| s.starts_with("the request body stalled")),
            "{source:?}"
        );
    }
    // Before: [(5, 5, true), (5, 5, false)].
    assert_eq!(counted(&lb), [(5, 0, false), (5, 0, false)]);
}

/// A server that stops reading: HTTP/2 flow control holds the body back
/// once the stream window is full, the client stops polling it, and the
/// cut is the instance's read timeout, as before.
#[tokio::test(start_paused = true)]
async fn a_server_that_stops_reading_is_the_instances_read_timeout() {
    let lb = balancer(&[server(false).await, server(true).await]).await;
    let start = Instant::now();
    let err = lb.request(post(Caller::flood())).await.unwrap_err();
    assert_eq!(start.elapsed(), PER_TRY);
    let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Outcome::ReadTimeout], "{err}");
    assert_eq!(err.timeout(), Some(TimeoutKind::PerTry(PER_TRY)), "{err}");
    assert_eq!(counted(&lb), [(1, 1, false), (0, 0, false)]);
}
