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
