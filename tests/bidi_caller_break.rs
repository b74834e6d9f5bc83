//! The caller's own half of a bidirectional h2 stream failing after the
//! response headers (hyper resets with INTERNAL_ERROR, the response body
//! fails) does not eject an instance that `max_ejection_percent` held at
//! its trigger, as
//! `body_failures.rs::a_callers_broken_upload_does_not_eject_an_instance_held_at_its_trigger`
//! holds for a broken upload before the headers. Before, the body's end ran
//! the ejection check for any outcome but a success, and the caller's
//! `RequestError` ejected the held instance (helper 207).

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
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::RoundRobin;

const SVC: &str = "svc";
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `/fail`: 503 after reading the body; anything else: echoes the request
/// body as the response body (headers at once): a bidirectional stream.
async fn h2c_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    if req.uri().path() == "/fail" {
                        let _ = req.into_body().collect().await;
                        let mut r = http::Response::new(
                            Full::new(Bytes::from_static(b"no"))
                                .map_err(|e| match e {})
                                .boxed(),
                        );
                        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                        return Ok::<_, std::convert::Infallible>(r);
                    }
                    Ok(http::Response::new(
                        req.into_body()
                            .map_err(|e| -> BoxError { e.into() })
                            .boxed(),
                    ))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

/// Whole (`go` None, `fail` false), or one chunk then, once `go` fires,
/// an error: the caller's half of a bidirectional stream breaking.
struct Upload {
    sent: bool,
    go: Option<tokio::sync::oneshot::Receiver<()>>,
    fail: bool,
}

impl http_body::Body for Upload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::future::Future;
        if !self.fail {
            return std::task::Poll::Ready(None);
        }
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
        std::task::Poll::Ready(Some(Err(Box::new(std::io::Error::other(
            "the caller's stream broke",
        )))))
    }
}

impl tower_ribbon::retry::TryCloneBody for Upload {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

#[tokio::test]
async fn a_callers_bidi_stream_breaking_does_not_eject_an_instance_held_at_its_trigger() {
    let (a, b) = (h2c_server().await, h2c_server().await);
    let instances = [a, b]
        .iter()
        .map(|port| Instance::new(SVC, "127.0.0.1", *port).unwrap())
        .collect();
    let mut outliers = OutlierDetection::default();
    outliers.base_ejection_time = std::time::Duration::from_secs(1);
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .rule(|| RoundRobin::with_start(0))
        .retry(RetryPolicy::none())
        .outlier_detection(outliers)
        .build(
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http::<Upload>(),
        )
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    let ejected = || -> Vec<bool> {
        let now = tokio::time::Instant::now();
        (lb.snapshot(SVC).unwrap().endpoints().iter())
            .map(|e| e.stats().is_ejected_at(now))
            .collect()
    };
    let whole = || Upload {
        sent: false,
        go: None,
        fail: false,
    };

    // `a`'s fifth 503 ejects it; `b`'s fifth finds the cap (1 of 2) full.
    for _ in 0..10 {
        let req = Request::post("http://svc/fail").body(whole()).unwrap();
        let response = lb.clone().oneshot(req).await.expect("a 503");
        assert_eq!(response.status(), 503);
        drop(response);
    }
    assert_eq!(ejected(), [true, false]);
    let snapshot = lb.snapshot(SVC).unwrap();
    assert_eq!(
        snapshot.endpoints()[1].stats().consecutive_server_errors(),
        5
    );

    // `a` comes back: the cap has room again.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(ejected(), [false, false]);

    // Two bidirectional streams, one per instance; the caller's half of
    // each breaks after the response headers. The caller's error.
    for _ in 0..2 {
        let (go, rx) = tokio::sync::oneshot::channel();
        let req = Request::post("http://svc/chat")
            .body(Upload {
                sent: false,
                go: Some(rx),
                fail: true,
            })
            .unwrap();
        let response = lb.clone().oneshot(req).await.expect("headers");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let first = body.frame().await.expect("a frame").expect("echoed");
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"part"));
        go.send(()).unwrap();
        assert!(body.collect().await.is_err(), "the reset fails the body");
    }
    let snapshot = lb.snapshot(SVC).unwrap();
    let failures: Vec<u64> = snapshot
        .endpoints()
        .iter()
        .map(|e| e.stats().failures())
        .collect();
    eprintln!("failures {failures:?} ejected {:?}", ejected());
    // Neither stream counted against its instance ...
    assert_eq!(failures, [5, 5]);
    // ... so neither may eject it.
    assert_eq!(
        ejected(),
        [false, false],
        "b ejected by the caller's own broken stream"
    );
}
