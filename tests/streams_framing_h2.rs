//! Streams the in-flight count must see, by their framing rather than
//! their headers (helper 135), through hyper-util's client and reqwest:
//!
//! - an HTTP/2 204 or 304 whose stream stays open and carries DATA (h2
//!   checks DATA only against a declared `Content-Length` and a HEAD
//!   request, so hyper hands it to the caller): counted as ended at its
//!   headers before, so best available sent 39 of 40 held streams to the
//!   instance answering so;
//! - an HTTP/2 `content-length: 0` response whose stream stays open until
//!   its trailers 600 ms later: 0 in flight while the caller waited;
//! - an HTTP/1 chunked body read to its trailers and held (as tonic's
//!   `Streaming` stops at the trailers): still 1 in flight until dropped.
//!
//! Real hyper servers on 127.0.0.1 (HTTP/1 and h2c through hyper-util's
//! auto builder). Left as documented: an upload still flowing after the
//! response ended leaves the count with the response (see
//! `service::body`).
//!
//! h2o's HTTP/2 client refuses content on a 204 or 304
//! (<https://github.com/h2o/h2o/pull/2971>); hyper's h2 passes it on, so
//! the balancer counts such a stream while it is read.

#[path = "common/stream_rig.rs"]
mod rig;
use rig::ReqBody;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tower_ribbon::rule::BestAvailable;
use tower_ribbon::{BoxError, LoadBalancer};

const SVC: &str = "streams";

type SBody = StreamBody<ReceiverStream<Result<Frame<Bytes>, BoxError>>>;

fn status_of(query: Option<&str>) -> StatusCode {
    query
        .and_then(|q| q.strip_prefix("status="))
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK)
}

/// Routes:
/// - `/drip?status=N`: status N, then a 1 KiB chunk every 20 ms for ever;
/// - `/trailers`: two 1 KiB chunks, then trailers (`x-done: 1`);
/// - `/early`: answers `200 ok` at once, and reads the request body in the
///   background (an upload the instance is still receiving);
/// - `/late`: reads the whole request body, then answers `200 ok`.
async fn server() -> SocketAddr {
    server_with(None).await
}

/// [`server`] answering every request with `fixed` as status, when given.
async fn server_with(fixed: Option<StatusCode>) -> SocketAddr {
    serve(fixed).await
}

async fn serve(fixed: Option<StatusCode>) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
                    let path = req.uri().path().to_owned();
                    let status = fixed.unwrap_or_else(|| status_of(req.uri().query()));
                    let chunk = Bytes::from(vec![b'x'; 1024]);
                    match path.as_str() {
                        "/drip" => {
                            tokio::spawn(async move {
                                loop {
                                    if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                                        return;
                                    }
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                            });
                        }
                        "/trailers" => {
                            tokio::spawn(async move {
                                for _ in 0..2 {
                                    let _ = tx.send(Ok(Frame::data(chunk.clone()))).await;
                                }
                                let mut t = http::HeaderMap::new();
                                t.insert("x-done", http::HeaderValue::from_static("1"));
                                let _ = tx.send(Ok(Frame::trailers(t))).await;
                            });
                        }
                        "/cl0trailers" => {
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(600)).await;
                                let mut t = http::HeaderMap::new();
                                t.insert("grpc-status", http::HeaderValue::from_static("0"));
                                let _ = tx.send(Ok(Frame::trailers(t))).await;
                            });
                        }
                        _ => drop(tx),
                    }
                    let mut response =
                        Response::new(StreamBody::new(ReceiverStream::new(rx)) as SBody);
                    *response.status_mut() = status;
                    if path == "/cl0trailers" {
                        response
                            .headers_mut()
                            .insert("content-length", http::HeaderValue::from_static("0"));
                    }
                    if path == "/trailers" {
                        response
                            .headers_mut()
                            .insert("trailer", http::HeaderValue::from_static("x-done"));
                    }
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------
// 1. An HTTP/2 204 / 304 whose stream carries DATA frames: hyper's h2 client
//    hands them to the caller (h2 checks no status, only Content-Length), but
//    the balancer ended the attempt at the headers (`has_content` reads the
//    status alone). The instance streams to the caller with in_flight 0.
// ---------------------------------------------------------------------------

async fn h2_no_content_stream_counts<S>(lb: LoadBalancer<S>, label: &str, rows: &mut Vec<String>)
where
    LoadBalancer<S>: Clone,
    S: tower::Service<Request<ReqBody>, Response = Response<Incoming>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    for status in [204u16, 304] {
        let mut r = lb
            .request(rig::get(SVC, &format!("/drip?status={status}")))
            .await
            .expect("drip");
        assert_eq!(r.status().as_u16(), status);
        let bytes = rig::read_frames(&mut r, 5).await;
        let held = rig::loads(&lb, SVC).iter().sum::<usize>();
        if held != 1 {
            rows.push(format!(
                "{label} {status}: the caller read {bytes} bytes of the stream and it is still open; \
                 in_flight {held}, expected 1"
            ));
        }
        drop(r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_204_and_304_streams_count_in_flight_while_read() {
    let addr = server().await;
    let mut rows = Vec::new();
    let lb = rig::builder(SVC, &[addr]).build(rig::h2c()).unwrap();
    h2_no_content_stream_counts(lb, "hyper-util h2c", &mut rows).await;
    assert!(rows.is_empty(), "{rows:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_204_and_304_streams_through_reqwest_count_in_flight_while_read() {
    let addr = server().await;
    let lb = rig::builder(SVC, &[addr])
        .build(tower_ribbon::ReqwestService::new(
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap(),
        ))
        .unwrap();
    let mut rows = Vec::new();
    for status in [204u16, 304] {
        let req = Request::get(format!("http://{SVC}/drip?status={status}"))
            .body(String::new())
            .unwrap();
        let mut r = lb.request(req).await.expect("drip");
        assert_eq!(r.status().as_u16(), status);
        let bytes = rig::read_frames(&mut r, 5).await;
        let held = rig::loads(&lb, SVC).iter().sum::<usize>();
        if held != 1 {
            rows.push(format!(
                "reqwest h2c {status}: the caller read {bytes} bytes of the stream and it is still \
                 open; in_flight {held}, expected 1"
            ));
        }
    }
    assert!(rows.is_empty(), "{rows:#?}");
}

/// What the miscount does to best available: instance A answers its
/// streams 200, instance B answers the same streams 204 (both stream for
/// ever). 40 streams opened one after another, all held: least loaded
/// would put 20 on each; B never counts any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_available_piles_streams_on_the_instance_whose_204_streams_are_invisible() {
    let a = server_with(Some(StatusCode::OK)).await;
    let b = server_with(Some(StatusCode::NO_CONTENT)).await;
    let lb = rig::builder(SVC, &[a, b])
        .rule(BestAvailable::new)
        .build(rig::h2c())
        .unwrap();
    let mut held = Vec::new();
    let (mut on_a, mut on_b) = (0, 0);
    for _ in 0..40 {
        let mut r = lb.request(rig::get(SVC, "/drip")).await.expect("drip");
        // Each stream is read a little (it is live) and held.
        r.body_mut().frame().await.expect("a frame").expect("data");
        if r.status() == StatusCode::OK {
            on_a += 1;
        } else {
            on_b += 1;
        }
        held.push(r);
    }
    let counts = rig::loads(&lb, SVC);
    assert!(
        on_a.max(on_b) <= 21,
        "40 streams held open through best available: {on_a} on instance A (200), {on_b} on \
         instance B (204 with DATA); expected about 20 each; in_flight per instance {counts:?} \
         with all 40 open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h1_body_read_to_its_trailers_leaves_the_count() {
    let addr = server().await;
    let mut rows = Vec::new();
    // hyper-util's client.
    let lb = rig::builder(SVC, &[addr]).build(rig::h1()).unwrap();
    let req = Request::get(format!("http://{SVC}/trailers"))
        .header("te", "trailers")
        .body(rig::empty())
        .unwrap();
    let mut r = lb.request(req).await.expect("trailers");
    let mut data = 0;
    let mut trailers = false;
    while let Some(f) = r.body_mut().frame().await {
        let f = f.expect("ok");
        if f.is_trailers() {
            trailers = true;
            break;
        }
        data += f.data_ref().map_or(0, |d| d.len());
    }
    assert!(trailers, "trailers after {data} bytes");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let held = rig::loads(&lb, SVC).iter().sum::<usize>();
    if held != 0 {
        rows.push(format!(
            "hyper-util h1: body read to its trailers ({data} bytes then the trailers frame, the \
             message complete) and held: in_flight {held}, expected 0"
        ));
    }
    drop(r);
    // reqwest's.
    let lb = rig::builder(SVC, &[addr])
        .build(tower_ribbon::ReqwestService::default())
        .unwrap();
    let req = Request::get(format!("http://{SVC}/trailers"))
        .header("te", "trailers")
        .body(String::new())
        .unwrap();
    let mut r = lb.request(req).await.expect("trailers");
    let (mut data, mut trailers) = (0, false);
    while let Some(f) = r.body_mut().frame().await {
        let f = f.expect("ok");
        if f.is_trailers() {
            trailers = true;
            break;
        }
        data += f.data_ref().map_or(0, |d| d.len());
    }
    assert!(trailers, "trailers after {data} bytes");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let held = rig::loads(&lb, SVC).iter().sum::<usize>();
    if held != 0 {
        rows.push(format!(
            "reqwest h1: body read to its trailers ({data} bytes then the trailers frame, the \
             message complete) and held: in_flight {held}, expected 0"
        ));
    }
    assert!(rows.is_empty(), "{rows:#?}");
}

/// An HTTP/2 response whose HEADERS say `content-length: 0` without ending
/// the stream, which ends 600 ms later with trailers (`grpc-status: 0`):
/// the caller waits for the trailers on an open stream, counted nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_content_length_0_stream_open_until_its_trailers_counts_in_flight() {
    let addr = server().await;
    let lb = rig::builder(SVC, &[addr]).build(rig::h2c()).unwrap();
    let mut r = lb
        .request(rig::get(SVC, "/cl0trailers"))
        .await
        .expect("cl0");
    let open = rig::loads(&lb, SVC).iter().sum::<usize>();
    let started = std::time::Instant::now();
    let f = r.body_mut().frame().await.expect("a frame").expect("ok");
    let waited = started.elapsed();
    assert!(f.is_trailers());
    assert_eq!(
        open,
        1,
        "h2 `content-length: 0` without END_STREAM, trailers {} ms later: in_flight {open} while \
         the stream was open and the caller waited for its end; expected 1",
        waited.as_millis()
    );
}
