//! The per-try (read) timeout and a streamed request body: for a body that
//! reports its upload ([`ReplayBody::streaming`], the gRPC bodies), the
//! timer starts when the upload ends, as Envoy's timeouts start once the
//! request is sent; before, an upload longer than the per-try timeout (5 s
//! by default) was cut off as a read timeout while it was still sending, so
//! such a request could never succeed. The deadline still bounds the whole
//! request. Paused time against a real loopback HTTP/1 server: every
//! elapsed time below is exact in virtual time.

#[path = "support/serve.rs"]
mod serve;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::error::TimeoutKind;
use tower_ribbon::retry::{ReplayBody, RetryPolicy, TryCloneBody};

/// Between two chunks of the upload.
const GAP: Duration = Duration::from_millis(200);
/// The per-try timeout of these tests.
const PER_TRY: Duration = Duration::from_millis(300);

/// `left` chunks, one every [`GAP`]: a slowly produced upload.
struct SlowBody {
    left: u32,
    sleep: Pin<Box<Sleep>>,
    /// After the last chunk, never end (a body that stops producing).
    stall: bool,
}

impl SlowBody {
    fn new(chunks: u32) -> Self {
        Self {
            left: chunks,
            sleep: Box::pin(tokio::time::sleep(GAP)),
            stall: false,
        }
    }
}

impl Body for SlowBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return if self.stall {
                Poll::Pending
            } else {
                Poll::Ready(None)
            };
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.left -= 1;
        self.sleep.as_mut().reset(Instant::now() + GAP);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"chunk")))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0 && !self.stall
    }
}

/// A server that reads each request's whole body, then answers 200 with
/// the bytes it read, or never answers (`silent`).
async fn server(silent: bool) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(serve::serve(
        listener,
        stopped,
        |_| {},
        move |req: Request<hyper::body::Incoming>| async move {
            let read = req.into_body().collect().await.map(|b| b.to_bytes());
            if silent {
                std::future::pending::<()>().await;
            }
            let len = read.map_or(0, |b| b.len());
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(len.to_string()))))
        },
    ));
    (addr, stop)
}

type Lb = LoadBalancer<tower_ribbon::service::HttpClient<ReplayBody<SlowBody>>>;

fn balancer(addr: SocketAddr, policy: RetryPolicy) -> Lb {
    let source = StaticSource::new()
        .with_list("svc", &addr.to_string())
        .unwrap();
    LoadBalancer::builder()
        .source(source)
        .service("svc")
        .read_timeout(Some(PER_TRY))
        .retry(policy)
        .build_http::<ReplayBody<SlowBody>>()
        .unwrap()
}

fn upload(chunks: u32) -> Request<ReplayBody<SlowBody>> {
    Request::post("http://svc/upload")
        .body(ReplayBody::streaming(SlowBody::new(chunks)))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_upload_longer_than_the_per_try_timeout_is_not_cut_off() {
    let (addr, _stop) = server(false).await;
    let lb = balancer(addr, RetryPolicy::default());
    let start = Instant::now();
    // 4 chunks, one every 200 ms: an 800 ms upload under a 300 ms per-try
    // timeout. Before, it failed after 300 ms with the per-try timeout.
    let response = lb.oneshot(upload(4)).await.expect("the upload is answered");
    assert_eq!(start.elapsed(), 4 * GAP);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"20");
}

#[tokio::test(start_paused = true)]
async fn a_server_silent_after_the_upload_times_out_one_per_try_after_its_end() {
    let (addr, _stop) = server(true).await;
    let lb = balancer(addr, RetryPolicy::default());
    let start = Instant::now();
    let err = lb.oneshot(upload(4)).await.unwrap_err();
    // The upload ends at 800 ms; the timer fires 300 ms later.
    assert_eq!(start.elapsed(), 4 * GAP + PER_TRY);
    assert_eq!(err.timeout(), Some(TimeoutKind::PerTry(PER_TRY)), "{err}");
    // A POST that reached the server is not retried.
    assert_eq!(err.attempts().len(), 1, "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_still_bounds_an_upload() {
    let (addr, _stop) = server(false).await;
    let deadline = Duration::from_millis(500);
    let lb = balancer(addr, RetryPolicy::default().deadline(deadline));
    let start = Instant::now();
    let err = lb.oneshot(upload(4)).await.unwrap_err();
    assert_eq!(start.elapsed(), deadline);
    assert_eq!(
        err.timeout(),
        Some(TimeoutKind::Deadline(deadline)),
        "{err}"
    );
}

/// A body in memory reports no upload: its per-try timeout runs from the
/// send, as before.
#[tokio::test(start_paused = true)]
async fn a_buffered_body_times_out_from_the_send() {
    assert!(ReplayBody::<SlowBody>::from_bytes("x").upload().is_none());
    let streamed = ReplayBody::streaming(SlowBody::new(1));
    let upload = streamed.upload().expect("a stream reports its upload");
    assert!(upload.ended_at().is_none());
    let (addr, _stop) = server(true).await;
    let lb = balancer(addr, RetryPolicy::none());
    let start = Instant::now();
    let request = Request::post("http://svc/upload")
        .body(ReplayBody::from_bytes("in memory"))
        .unwrap();
    let err = lb.oneshot(request).await.unwrap_err();
    assert_eq!(start.elapsed(), PER_TRY);
    assert_eq!(err.timeout(), Some(TimeoutKind::PerTry(PER_TRY)), "{err}");
}

/// While the upload lasts, the per-try timeout bounds the time since the
/// body's last frame: an upload that stalls (here the body stops after 2
/// chunks; a server that stops reading stalls it the same way) is cut off
/// one per-try timeout after its last frame, not kept waiting without
/// bound (no deadline is set).
#[tokio::test(start_paused = true)]
async fn an_upload_that_stalls_times_out_one_per_try_after_its_last_frame() {
    let (addr, _stop) = server(false).await;
    let lb = balancer(addr, RetryPolicy::default());
    let start = Instant::now();
    let mut body = SlowBody::new(2);
    body.stall = true;
    let request = Request::post("http://svc/upload")
        .body(ReplayBody::streaming(body))
        .unwrap();
    let sent = tokio::time::timeout(Duration::from_secs(60), lb.oneshot(request)).await;
    let err = sent.expect("bounded").unwrap_err();
    assert_eq!(start.elapsed(), 2 * GAP + PER_TRY);
    assert_eq!(err.timeout(), Some(TimeoutKind::PerTry(PER_TRY)), "{err}");
    assert_eq!(err.attempts().len(), 1, "{err}");
}
