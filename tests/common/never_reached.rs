//! What the tests of requests that never reached a server share
//! (`h2_refused_stream.rs`, `never_sent.rs`): a healthy server counting the
//! requests it answers, a round-robin balancer over two instances, and a
//! POST (never retried once it may have reached a server).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::instance::Instance;
use tower_ribbon::rule::RoundRobin;

pub const SVC: &str = "svc";

/// A server on 127.0.0.1 (HTTP/2 cleartext with `h2`, else HTTP/1) that
/// reads each request body and answers `ok`; its port and the requests it
/// answered.
pub async fn ok_server(h2: bool) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let _ = req.into_body().collect().await;
                        seen.fetch_add(1, Ordering::SeqCst);
                        let ok = Full::new(Bytes::from_static(b"ok"));
                        Ok::<_, std::io::Error>(http::Response::new(ok))
                    }
                });
                let io = TokioIo::new(stream);
                let _ = if h2 {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                };
            });
        }
    });
    (port, requests)
}

/// Round robin from the first of two instances (`first`, `second` on
/// 127.0.0.1) over hyper-util's client (HTTP/2 only with `h2`), ready.
pub async fn balancer(
    first: u16,
    second: u16,
    h2: bool,
) -> LoadBalancer<tower_ribbon::service::HttpClient<Full<Bytes>>> {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http::<Full<Bytes>>();
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
        .build(client)
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    lb
}

/// A POST with a small body.
pub fn post() -> Request<Full<Bytes>> {
    Request::post("http://svc/orders")
        .body(Full::new(Bytes::from_static(b"one order")))
        .unwrap()
}
