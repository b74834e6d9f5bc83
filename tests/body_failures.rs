//! A response whose body fails after its headers (a truncated response:
//! `Content-Length` 100, 5 bytes sent, then the connection closes) is a failure of its instance for outlier
//! ejection, as a 5xx or a reset before the headers is: an instance whose
//! every body breaks is ejected after `consecutive_5xx` of them, though
//! no attempt of it ever fails before its headers.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::backend::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::instance::Instance;
use tower_ribbon::rule::RoundRobin;

#[path = "common/broken_upload.rs"]
mod broken_upload;
use broken_upload::{BrokenUpload, expect_request_errors, expect_untouched};

const SVC: &str = "svc";

/// A stub that answers every request with headers promising 100 bytes,
/// sends 5 and closes: a truncated response, which a real server does not
/// produce on demand (hyper asserts its body length). Counts requests.
async fn truncating() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, hits)
}

/// Round robin from the first of `ports` (127.0.0.1) over hyper-util's
/// client, default outlier detection, ready.
async fn balancer<B>(ports: &[u16]) -> LoadBalancer<Client<HttpConnector, B>>
where
    B: http_body::Body + tower_ribbon::retry::TryCloneBody + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let instances = ports
        .iter()
        .map(|port| Instance::new(SVC, "127.0.0.1", *port).unwrap())
        .collect();
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .rule(|| RoundRobin::with_start(0))
        .outlier_detection(OutlierDetection::default())
        .build(Client::builder(TokioExecutor::new()).build_http())
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    lb
}

#[tokio::test]
async fn an_instance_whose_bodies_break_is_ejected() {
    let (broken, broken_hits) = truncating().await;
    let good = Backend::start("good").await.expect("backend");
    let lb = balancer::<Empty<Bytes>>(&[broken.port(), good.port()]).await;
    let mut bodies = (0, 0);
    for _ in 0..20 {
        let response = lb
            .clone()
            .oneshot(Request::get("http://svc/x").body(Empty::new()).unwrap())
            .await
            .expect("headers arrive from both");
        assert_eq!(response.status(), 200);
        match response.into_body().collect().await {
            Ok(_) => bodies.0 += 1,
            Err(_) => bodies.1 += 1,
        }
    }
    // Round robin alternates until the fifth broken body ejects `broken`
    // (default `consecutive_5xx` 5, 30 s): 5 broken, then all to `good`.
    assert_eq!((broken_hits.load(Ordering::SeqCst), good.hits()), (5, 15));
    assert_eq!(bodies, (15, 5));
}

/// The caller's request body failing is not its instance's fault: ten
/// broken uploads over two healthy instances eject neither and count no
/// failure against them (before: each counted as a 5xx, and the first
/// instance was ejected at its fifth broken upload),
/// and each fails once, at one instance, with the caller's error.
#[tokio::test]
async fn a_callers_broken_upload_is_not_its_instances_failure() {
    let a = Backend::start("a").await.expect("backend");
    let b = Backend::start("b").await.expect("backend");
    let lb = balancer::<BrokenUpload>(&[a.port(), b.port()]).await;
    expect_request_errors(10, || {
        let req = Request::post("http://svc/upload")
            .header(http::header::CONTENT_LENGTH, 100)
            .body(BrokenUpload(0))
            .unwrap();
        lb.clone().oneshot(req)
    })
    .await;
    expect_untouched(&lb.snapshot(SVC).unwrap());
}

/// A whole body, or the caller's broken upload, in one request type.
enum Upload {
    Whole,
    Broken(BrokenUpload),
}

impl http_body::Body for Upload {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Upload::Whole => std::task::Poll::Ready(None),
            Upload::Broken(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }
}

impl tower_ribbon::retry::TryCloneBody for Upload {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

/// An instance held at its ejection trigger by `max_ejection_percent` is
/// not ejected by the caller's broken upload once the cap has room: the
/// ejection check skips `RequestError` (before: it ejected `b` for its
/// base ejection time, though its last failure was the caller's).
#[tokio::test]
async fn a_callers_broken_upload_does_not_eject_an_instance_held_at_its_trigger() {
    use tower_ribbon::retry::RetryPolicy;
    use tower_ribbon::snapshot::Snapshot;

    let a = Backend::start_with("a", support::backend::Behavior::Status(503))
        .await
        .expect("a");
    let b = Backend::start_with("b", support::backend::Behavior::Status(503))
        .await
        .expect("b");
    let instances = [a.port(), b.port()]
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
        .build(Client::builder(TokioExecutor::new()).build_http::<Upload>())
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    let post = |body| Request::post("http://svc/upload").body(body).unwrap();
    let ejected = |snapshot: &Snapshot| -> Vec<bool> {
        let now = tokio::time::Instant::now();
        snapshot
            .endpoints()
            .iter()
            .map(|e| e.stats().is_ejected_at(now))
            .collect()
    };

    // Round robin alternates: `a`'s fifth 503 ejects it; `b`'s fifth finds
    // the cap (1 of 2) full, so `b` stays in at its trigger.
    for _ in 0..10 {
        let response = lb
            .clone()
            .oneshot(post(Upload::Whole))
            .await
            .expect("a 503");
        assert_eq!(response.status(), 503);
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
    let snapshot = lb.snapshot(SVC).unwrap();
    assert_eq!(ejected(&snapshot), [true, false]);
    assert_eq!(
        snapshot.endpoints()[1].stats().consecutive_server_errors(),
        5
    );

    // `a` comes back: the cap has room again.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(ejected(&snapshot), [false, false]);

    // Two broken uploads, one at each instance: neither is ejected.
    expect_request_errors(2, || {
        let req = Request::post("http://svc/upload")
            .header(http::header::CONTENT_LENGTH, 100)
            .body(Upload::Broken(BrokenUpload(0)))
            .unwrap();
        lb.clone().oneshot(req)
    })
    .await;
    let snapshot = lb.snapshot(SVC).unwrap();
    assert_eq!(ejected(&snapshot), [false, false]);
    assert_eq!(
        snapshot.endpoints()[1].stats().consecutive_server_errors(),
        5
    );
}
