//! An HTTP/2 stream the server refuses with REFUSED_STREAM was not
//! processed (RFC 9113, section 8.7), so even a POST may go to another
//! instance, as after a refused connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::instance::Instance;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::stats::Outcome;

const SVC: &str = "svc";

/// An h2c server that resets every stream with `reason`, counting them.
async fn resetting_server(reason: h2::Reason) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&streams);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    seen.fetch_add(1, Ordering::SeqCst);
                    respond.send_reset(reason);
                }
            });
        }
    });
    (port, streams)
}

/// An h2c server that reads each request body and answers `ok`.
async fn ok_server() -> (u16, Arc<AtomicUsize>) {
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
                        Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, requests)
}

async fn balancer(
    first: u16,
    second: u16,
) -> LoadBalancer<tower_ribbon::service::HttpClient<Full<Bytes>>> {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
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

fn post() -> Request<Full<Bytes>> {
    Request::post("http://svc/orders")
        .body(Full::new(Bytes::from_static(b"one order")))
        .unwrap()
}

/// Ten POSTs, the first instance refusing every stream: each goes on to
/// the second instance (before: the 5 whose first attempt went to the
/// refusing instance failed with `[OtherError]`, "POST not retried"; 5
/// of 10 succeeded).
#[tokio::test]
async fn a_post_refused_with_refused_stream_goes_to_the_next_instance() {
    let (refusing, refused) = resetting_server(h2::Reason::REFUSED_STREAM).await;
    let (healthy, served) = ok_server().await;
    let lb = balancer(refusing, healthy).await;
    let mut ok = 0;
    for _ in 0..10 {
        match lb.clone().oneshot(post()).await {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                ok += 1;
            }
            Err(err) => eprintln!("{err}"),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(served.load(Ordering::SeqCst), 10);
    // Round robin sends every other first attempt to the refusing one
    // until its third refusal in a row trips its circuit breaker (a
    // connect failure, Ribbon's threshold of 3).
    assert_eq!(refused.load(Ordering::SeqCst), 3);
}

/// A stream the server reset with another reason may have been processed:
/// the POST is not retried.
#[tokio::test]
async fn a_post_reset_with_internal_error_is_not_retried() {
    let (resetting, reset) = resetting_server(h2::Reason::INTERNAL_ERROR).await;
    let (healthy, served) = ok_server().await;
    let lb = balancer(resetting, healthy).await;
    let err = lb.clone().oneshot(post()).await.expect_err("reset");
    let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Outcome::OtherError], "{err:?}");
    assert_eq!(reset.load(Ordering::SeqCst), 1);
    assert_eq!(served.load(Ordering::SeqCst), 0);
}
