//! Boxed request bodies (`BoxBody`, `UnsyncBoxBody`) through the balancer,
//! against real hyper servers on 127.0.0.1: one answers 503, the other
//! echoes the request body. An empty boxed body is replayed on the other
//! instance; a non-empty one is sent once (it cannot be copied); one
//! buffered with `ReplayBody::buffer` is replayed with its bytes.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::backend::{Backend, Behavior};
use tokio::net::TcpListener;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::retry::{ReplayBody, RetryPolicy};
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::{BoxError, LoadBalancer};

type Boxed = BoxBody<Bytes, BoxError>;

/// A hyper server that answers 200 with the request body it read, and
/// counts the requests.
async fn echo_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let echo = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let counter = Arc::clone(&counter);
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let body = body.unwrap_or_default();
                        Ok::<_, Infallible>(Response::new(Full::new(body)))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), echo)
                    .await;
            });
        }
    });
    (addr, hits)
}

/// One instance answering 503 and one echoing, in that order; round robin
/// from the first (retries rotate on their own, so first attempts take
/// turns: requests 1, 3, 5, ... start at the 503 instance); one retry on
/// the other instance for 503; every method retryable.
async fn setup<B>() -> (
    LoadBalancer<Client<hyper_util::client::legacy::connect::HttpConnector, B>>,
    Backend,
    Arc<AtomicUsize>,
)
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let failing = Backend::start_with("failing", Behavior::Status(503))
        .await
        .expect("backend");
    let (echo, hits) = echo_server().await;
    let list = format!("{},{}", failing.addr(), echo);
    let source = StaticSource::new().with_list("echo", &list).expect("list");
    let policy = RetryPolicy::default()
        .max_same(0)
        .max_next(1)
        .retryable_statuses([503])
        .retry_on_all_operations(true);
    let client = Client::builder(TokioExecutor::new()).build_http::<B>();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("echo")
        .rule(|| RoundRobin::with_start(0))
        .retry(policy)
        .build(client)
        .expect("build");
    assert!(lb.ready_service("echo").await);
    (lb, failing, hits)
}

async fn body_of<B: http_body::Body>(response: Response<B>) -> (StatusCode, Bytes)
where
    B::Error: std::fmt::Debug,
{
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, bytes)
}

#[tokio::test]
async fn an_empty_box_body_is_retried_on_the_other_instance() {
    let (lb, failing, echo_hits) = setup::<Boxed>().await;
    for _ in 0..4 {
        let body: Boxed = Empty::new().map_err(|never| match never {}).boxed();
        let request = Request::get("http://echo/x").body(body).expect("request");
        let response = lb.clone().send(request).await.expect("response");
        assert_eq!(body_of(response).await, (StatusCode::OK, Bytes::new()));
    }
    // Requests 1 and 3 went to the 503 instance first and were retried on
    // the echo one; 2 and 4 went to the echo one.
    assert_eq!(failing.hits(), 2);
    assert_eq!(echo_hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_box_body_with_data_is_sent_once() {
    let (lb, failing, echo_hits) = setup::<UnsyncBoxBody<Bytes, BoxError>>().await;
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let body = Full::new(Bytes::from_static(b"order #42"))
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = Request::post("http://echo/orders")
            .body(body)
            .expect("request");
        let response = lb.clone().send(request).await.expect("response");
        outcomes.push(body_of(response).await);
    }
    // The first met the 503 and could not be copied, so it was not
    // retried; the second went to the echo instance.
    assert_eq!(
        outcomes,
        vec![
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(b"failing")
            ),
            (StatusCode::OK, Bytes::from_static(b"order #42")),
        ]
    );
    assert_eq!(failing.hits(), 1);
    assert_eq!(echo_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_buffered_box_body_is_replayed_with_its_bytes() {
    let (lb, failing, echo_hits) = setup::<ReplayBody<Boxed>>().await;
    for _ in 0..4 {
        let boxed: Boxed = Full::new(Bytes::from_static(b"order #42"))
            .map_err(|never| match never {})
            .boxed();
        let body = ReplayBody::buffer(boxed, 1024).await.expect("buffered");
        let request = Request::post("http://echo/orders")
            .body(body)
            .expect("request");
        let response = lb.clone().send(request).await.expect("response");
        assert_eq!(
            body_of(response).await,
            (StatusCode::OK, Bytes::from_static(b"order #42"))
        );
    }
    // Requests 1 and 3 replayed on the echo instance after the 503.
    assert_eq!(failing.hits(), 2);
    assert_eq!(echo_hits.load(Ordering::SeqCst), 4);
}
