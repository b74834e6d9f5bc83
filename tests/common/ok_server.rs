//! A real hyper server on 127.0.0.1 that reads each request body and
//! answers `ok`, counting the requests it answered: HTTP/1, or HTTP/2
//! cleartext (prior knowledge) with an optional
//! `SETTINGS_MAX_HEADER_LIST_SIZE`; and a round-robin balancer over such
//! instances through any inner service. Used through `never_reached.rs`,
//! and alone by tests that build without `hyper-util` (`reqwest_h2.rs`).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::instance::Instance;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::service::Builder;

/// The service id of the balancers made here.
pub const SVC: &str = "svc";

/// Round robin from the first of `ports` (instances of [`SVC`] on
/// 127.0.0.1) through `inner`, with the builder's settings changed by
/// `configure`; ready.
pub async fn round_robin<S>(
    ports: &[u16],
    inner: S,
    configure: impl FnOnce(Builder) -> Builder,
) -> LoadBalancer<S> {
    let instances = ports
        .iter()
        .map(|&port| Instance::new(SVC, "127.0.0.1", port).unwrap())
        .collect();
    let builder = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .rule(|| RoundRobin::with_start(0));
    let lb = configure(builder).build(inner).unwrap();
    assert!(lb.ready_service(SVC).await);
    lb
}

/// A server (HTTP/2 cleartext with `h2`, else HTTP/1) that reads each
/// request body and answers `ok`; its port and the requests it answered.
pub async fn ok_server(h2: bool) -> (u16, Arc<AtomicUsize>) {
    ok_server_with(h2, None).await
}

/// [`ok_server`], over HTTP/2 with `max_header_list` as its
/// `SETTINGS_MAX_HEADER_LIST_SIZE` when given (h2 answers a header list
/// over it with 431, over four times it with `GOAWAY(ENHANCE_YOUR_CALM)`).
pub async fn ok_server_with(h2: bool, max_header_list: Option<u32>) -> (u16, Arc<AtomicUsize>) {
    slow_ok_server(h2, max_header_list, std::time::Duration::ZERO).await
}

/// [`ok_server_with`], answering each request `delay` after counting it
/// (so that requests stay open on its connection that long).
pub async fn slow_ok_server(
    h2: bool,
    max_header_list: Option<u32>,
    delay: std::time::Duration,
) -> (u16, Arc<AtomicUsize>) {
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
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let ok = Full::new(Bytes::from_static(b"ok"));
                        Ok::<_, std::io::Error>(http::Response::new(ok))
                    }
                });
                let io = TokioIo::new(stream);
                let _ = if h2 {
                    let mut builder =
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    if let Some(limit) = max_header_list {
                        builder.max_header_list_size(limit);
                    }
                    builder.serve_connection(io, svc).await
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
