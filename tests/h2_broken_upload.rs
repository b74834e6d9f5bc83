//! The caller's request body failing over HTTP/2 (h2c here) is the
//! caller's error, as over HTTP/1: hyper reports it as the stream reset it
//! sent (INTERNAL_ERROR, initiated by this side), not as its user body
//! error, so it was an `OtherError` counted against the instance.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::instance::Instance;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::stats::Outcome;

#[path = "common/broken_upload.rs"]
mod broken_upload;
use broken_upload::{BrokenUpload, expect_request_errors, expect_untouched};

const SVC: &str = "svc";

/// An h2c server that reads each request body and answers 200, or with
/// `fail` resets every stream (its service fails: hyper sends
/// RST_STREAM INTERNAL_ERROR).
async fn h2c_server_with(fail: bool) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    if fail {
                        return Err(std::io::Error::other("server failed"));
                    }
                    Ok(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

async fn h2c_server() -> u16 {
    h2c_server_with(false).await
}

/// Ten broken uploads over two healthy h2c instances: each fails once, at
/// one instance, as `RequestError`, and neither instance counts an error
/// or is ejected (before: each was `[OtherError]`, a 5xx for outlier
/// ejection, and the first instance was ejected at its fifth).
#[tokio::test]
async fn a_callers_broken_upload_over_h2_is_not_its_instances_failure() {
    let instances = vec![
        Instance::new(SVC, "127.0.0.1", h2c_server().await).unwrap(),
        Instance::new(SVC, "127.0.0.1", h2c_server().await).unwrap(),
    ];
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<BrokenUpload>();
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .rule(|| RoundRobin::with_start(0))
        .outlier_detection(OutlierDetection::default())
        .build(client)
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    expect_request_errors(10, || {
        let req = Request::post("http://svc/upload")
            .body(BrokenUpload(0))
            .unwrap();
        lb.clone().oneshot(req)
    })
    .await;
    expect_untouched(&lb.snapshot(SVC).unwrap());
}

/// The server resetting the stream with the same INTERNAL_ERROR is still
/// the instance's failure: only a reset this side sent is the caller's.
#[tokio::test]
async fn a_reset_from_the_server_stays_the_instances_failure() {
    let port = h2c_server_with(true).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let lb = LoadBalancer::builder()
        .source(
            StaticSource::new()
                .with_instances(SVC, vec![Instance::new(SVC, "127.0.0.1", port).unwrap()]),
        )
        .service(SVC)
        .build(client)
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    let req = Request::post("http://svc/upload")
        .body(Full::new(Bytes::from_static(b"whole")))
        .unwrap();
    let err = lb.oneshot(req).await.expect_err("reset");
    let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Outcome::OtherError], "{err:?}");
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends one chunk, waits for `go`, then fails: the caller's half of a
/// bidirectional stream breaking after the response headers arrived. With
/// `reason` its error is that HTTP/2 reason (a gateway forwarding a
/// downstream client's stream, which the client reset), which hyper sends
/// in its reset instead of INTERNAL_ERROR.
struct LateBreak {
    sent: bool,
    go: Option<tokio::sync::oneshot::Receiver<()>>,
    reason: Option<h2::Reason>,
}

impl http_body::Body for LateBreak {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::future::Future;
        if !self.sent {
            self.sent = true;
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
                b"part",
            )))));
        }
        if let Some(go) = self.go.as_mut() {
            if std::pin::Pin::new(go).poll(cx).is_pending() {
                return std::task::Poll::Pending;
            }
            self.go = None;
        }
        let err: BoxError = match self.reason {
            Some(reason) => Box::new(h2::Error::from(reason)),
            None => Box::new(std::io::Error::other("the caller's stream broke")),
        };
        std::task::Poll::Ready(Some(Err(err)))
    }
}

impl tower_ribbon::retry::TryCloneBody for LateBreak {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

/// An h2c server echoing each request body as its response body (headers
/// at once, then the data as it comes): a bidirectional stream.
async fn h2c_echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(req.into_body()))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

/// The caller's half of a bidirectional h2 stream breaking after the
/// response headers came (hyper resets the stream with INTERNAL_ERROR, and
/// the response body fails) is the caller's error too: the instance counts
/// no failure and no 5xx, so five such streams do not eject a healthy
/// instance (before: failures 1 and consecutive 5xx 1 per stream).
#[tokio::test]
async fn a_callers_stream_breaking_after_the_headers_is_not_its_instances_failure() {
    late_breaks(None).await;
}

/// Six bidirectional streams whose caller's half fails with an HTTP/2
/// reason (CANCEL: a gateway forwarding a downstream client's stream that
/// the client cancelled; hyper resets the upstream stream with the reason
/// the error carries) after the response headers: the caller's error, as
/// with INTERNAL_ERROR (before: failures 1 and consecutive 5xx 1 per
/// stream, and the healthy instance ejected at the fifth).
#[tokio::test]
async fn a_callers_stream_reset_with_its_own_reason_is_not_its_instances_failure() {
    late_breaks(Some(h2::Reason::CANCEL)).await;
}

async fn late_breaks(reason: Option<h2::Reason>) {
    let instances = vec![Instance::new(SVC, "127.0.0.1", h2c_echo_server().await).unwrap()];
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<LateBreak>();
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .outlier_detection(OutlierDetection::default())
        .build(client)
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    for i in 0..6 {
        let (go, rx) = tokio::sync::oneshot::channel();
        let req = Request::post("http://svc/chat")
            .body(LateBreak {
                sent: false,
                go: Some(rx),
                reason,
            })
            .unwrap();
        let response = lb.clone().oneshot(req).await.expect("headers");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let first = body.frame().await.expect("a frame").expect("echoed");
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"part"));
        go.send(()).unwrap();
        let rest = body.collect().await;
        assert!(rest.is_err(), "stream {i}: the reset fails the body");
    }
    expect_untouched(&lb.snapshot(SVC).unwrap());
}
