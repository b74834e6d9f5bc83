//! A request hyper hands back unsent (the connection closed before it was
//! written: hyper-util's `Canceled` on a fresh connection) never reached
//! the server, so even a POST may go to another instance, as after a
//! refused connection.

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

/// Accepts each connection and closes it at once, reading nothing;
/// counts the connections.
async fn closing_server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (port, accepted)
}

/// An HTTP/1 server that reads each request body and answers `ok`,
/// counting requests.
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
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, requests)
}

/// Ten POSTs over an instance that closes every connection at once and a
/// healthy one (round robin): each reaches the healthy one. Before, the 5
/// whose first attempt went to the closing instance failed with
/// `[OtherError]`, "POST not retried", though hyper had handed them back
/// unsent; 5 of 10 succeeded.
#[tokio::test]
async fn a_post_hyper_never_sent_goes_to_the_next_instance() {
    let (closing, accepted) = closing_server().await;
    let (healthy, served) = ok_server().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(
            SVC,
            vec![
                Instance::new(SVC, "127.0.0.1", closing).unwrap(),
                Instance::new(SVC, "127.0.0.1", healthy).unwrap(),
            ],
        ))
        .service(SVC)
        .rule(|| RoundRobin::with_start(0))
        .build(client)
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    let mut ok = 0;
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        let req = Request::post("http://svc/orders")
            .body(Full::new(Bytes::from_static(b"one order")))
            .unwrap();
        match lb.clone().oneshot(req).await {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                ok += 1;
            }
            Err(err) => {
                outcomes.extend(err.attempts().iter().map(|a| a.outcome));
                eprintln!("{err}");
            }
        }
    }
    assert_eq!((ok, outcomes), (10, Vec::<Outcome>::new()));
    assert_eq!(served.load(Ordering::SeqCst), 10);
    // Every other first attempt goes to the closing instance until its
    // third failure in a row trips its circuit breaker (a connect
    // failure, Ribbon's threshold of 3).
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}
