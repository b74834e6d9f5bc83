//! HTTP/1.1 upgrades through the balancer with hyper-util's client,
//! against real hyper servers on 127.0.0.1 that upgrade and echo bytes: a
//! WebSocket handshake (`101 Switching Protocols`) and a `CONNECT`
//! answered 200. The upgraded connection counts in flight on its instance
//! until the caller drops it, when the caller takes it with
//! `tower_ribbon::service::upgrade::on` (Envoy counts an upgraded stream
//! as an active request until it closes). No timer decides anything here.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Empty;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::BestAvailable;
use tower_ribbon::service::upgrade;
use tower_ribbon::{Endpoint, LoadBalancer};

const SVC: &str = "echo";

type Http = Client<HttpConnector, Empty<Bytes>>;

/// A hyper server (with upgrades) named `name`: a WebSocket handshake is
/// answered 101 and a `CONNECT` 200, and the upgraded connection echoes
/// what it reads until the client closes it; anything else is a 200.
/// Every response carries `x-server: name`.
async fn server(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: Request<hyper::body::Incoming>| async move {
                    let websocket = req
                        .headers()
                        .get(header::UPGRADE)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
                    let connect = req.method() == Method::CONNECT;
                    let mut response = Response::new(Empty::<Bytes>::new());
                    response
                        .headers_mut()
                        .insert("x-server", header::HeaderValue::from_static(name));
                    if websocket || connect {
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let Ok(upgraded) = on.await else { return };
                            let mut io = TokioIo::new(upgraded);
                            let mut buf = [0u8; 1024];
                            while let Ok(n @ 1..) = io.read(&mut buf).await {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        });
                    }
                    if websocket {
                        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                        let headers = response.headers_mut();
                        headers.insert(header::CONNECTION, "upgrade".parse().unwrap());
                        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
                    }
                    Ok::<_, Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A balancer over `addrs` with hyper-util's client, no retries, no
/// ejection, no per-try timer.
fn balancer(addrs: &[SocketAddr], rule: bool) -> LoadBalancer<Http> {
    let list = addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let source = StaticSource::new().with_list(SVC, &list).unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let builder = LoadBalancer::builder()
        .source(source)
        .service(SVC)
        .retry(RetryPolicy::none())
        .outlier_detection(OutlierDetection::disabled())
        .read_timeout(None);
    let builder = if rule {
        builder.rule(BestAvailable::new)
    } else {
        builder
    };
    builder.build(client).unwrap()
}

fn endpoint(lb: &LoadBalancer<Http>, addr: SocketAddr) -> Endpoint {
    lb.snapshot(SVC)
        .unwrap()
        .endpoints()
        .iter()
        .find(|e| e.instance().port() == addr.port())
        .cloned()
        .unwrap()
}

fn websocket_request() -> Request<Empty<Bytes>> {
    Request::get(format!("http://{SVC}/ws"))
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Empty::new())
        .unwrap()
}

fn server_of<B>(response: &Response<B>) -> String {
    response.headers()["x-server"].to_str().unwrap().to_owned()
}

/// Writes `bytes` on the upgraded connection and reads them back.
async fn echo<T>(io: &mut TokioIo<T>, bytes: &[u8])
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    io.write_all(bytes).await.unwrap();
    let mut back = vec![0u8; bytes.len()];
    io.read_exact(&mut back).await.unwrap();
    assert_eq!(back, bytes);
}

/// A caller that upgrades with hyper's own `hyper::upgrade::on` still
/// gets a working connection through the balancer (the `OnUpgrade`
/// extension survives the balancer's response), as before.
#[tokio::test]
async fn a_websocket_upgrade_with_hyper_upgrade_on_echoes_bytes() {
    let a = server("a").await;
    let lb = balancer(&[a], false);
    let mut response = lb.clone().oneshot(websocket_request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    drop(response);
    // Taken this way, the attempt ended with the response (documented).
    let ep = endpoint(&lb, a);
    assert_eq!(ep.stats().in_flight(), 0);
    assert_eq!((ep.stats().requests(), ep.stats().failures()), (1, 0));
    let mut io = TokioIo::new(upgraded);
    echo(&mut io, b"hello over a websocket").await;
    echo(&mut io, b"and again").await;
}

/// `upgrade::on` on a response that is not an upgrade fails as hyper's
/// does, and holds nothing: the attempt ends with the response.
#[tokio::test]
async fn upgrade_on_a_plain_response_fails_and_holds_nothing() {
    let a = server("a").await;
    let lb = balancer(&[a], false);
    let request = Request::get(format!("http://{SVC}/"))
        .body(Empty::new())
        .unwrap();
    let mut response = lb.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ep = endpoint(&lb, a);
    let on = upgrade::on(&mut response);
    assert_eq!(ep.stats().in_flight(), 1);
    drop(response);
    assert_eq!(ep.stats().in_flight(), 0);
    assert!(on.await.is_err());
    assert_eq!((ep.stats().requests(), ep.stats().failures()), (1, 0));
}

/// `tower_ribbon::service::upgrade::on` gives the same working
/// connection, counted in flight on its instance until it is dropped;
/// the attempt's result (the 101, a success) is recorded at once.
#[tokio::test]
async fn a_websocket_counts_in_flight_until_the_upgraded_connection_is_dropped() {
    let a = server("a").await;
    let lb = balancer(&[a], false);
    let mut response = lb.clone().oneshot(websocket_request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = upgrade::on(&mut response).await.unwrap();
    drop(response);
    let ep = endpoint(&lb, a);
    let stats = ep.stats();
    assert_eq!(stats.in_flight(), 1);
    // The result is the 101: recorded already, a success.
    assert_eq!((stats.requests(), stats.failures()), (1, 0));
    let mut io = TokioIo::new(upgraded);
    echo(&mut io, b"hello over a websocket").await;
    assert_eq!(stats.in_flight(), 1);
    drop(io);
    assert_eq!(stats.in_flight(), 0);
    assert_eq!((stats.requests(), stats.failures()), (1, 0));
}

/// A `CONNECT` answered 200 is an upgrade too: the tunnel echoes and
/// counts in flight until it is dropped.
#[tokio::test]
async fn a_connect_tunnel_echoes_and_counts_in_flight_until_dropped() {
    let a = server("a").await;
    let lb = balancer(&[a], false);
    let request = Request::connect(format!("http://{SVC}/"))
        .body(Empty::new())
        .unwrap();
    let mut response = lb.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let upgraded = upgrade::on(&mut response).await.unwrap();
    drop(response);
    let ep = endpoint(&lb, a);
    let stats = ep.stats();
    assert_eq!(stats.in_flight(), 1);
    let mut io = TokioIo::new(upgraded);
    echo(&mut io, b"through the tunnel").await;
    drop(io);
    assert_eq!(stats.in_flight(), 0);
    assert_eq!((stats.requests(), stats.failures()), (1, 0));
}

/// Best available over two instances: ten WebSockets alternate between
/// them (ties rotate), the five on `b` close, and with five open on `a`
/// the next 20 plain requests all go to `b`.
#[tokio::test]
async fn best_available_avoids_the_instance_holding_open_websockets() {
    let (a, b) = (server("a").await, server("b").await);
    let lb = balancer(&[a, b], true);
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for _ in 0..10 {
        let mut response = lb.clone().oneshot(websocket_request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let name = server_of(&response);
        let upgraded = upgrade::on(&mut response).await.unwrap();
        let mut io = TokioIo::new(upgraded);
        echo(&mut io, name.as_bytes()).await;
        if name == "a" {
            on_a.push(io)
        } else {
            on_b.push(io)
        }
    }
    assert_eq!((on_a.len(), on_b.len()), (5, 5));
    assert_eq!(endpoint(&lb, a).stats().in_flight(), 5);
    assert_eq!(endpoint(&lb, b).stats().in_flight(), 5);
    on_b.clear();
    assert_eq!(endpoint(&lb, b).stats().in_flight(), 0);
    let mut to_a = 0;
    for _ in 0..20 {
        let response = lb
            .clone()
            .oneshot(
                Request::get(format!("http://{SVC}/"))
                    .body(Empty::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        if server_of(&response) == "a" {
            to_a += 1;
        }
    }
    assert_eq!(
        to_a, 0,
        "requests sent to the instance holding 5 open WebSockets"
    );
    // The open sockets still echo, and leave the count when dropped.
    for io in &mut on_a {
        echo(io, b"still open").await;
    }
    on_a.clear();
    assert_eq!(endpoint(&lb, a).stats().in_flight(), 0);
}

/// An upgrade that is never taken (the caller drops the 101 response)
/// leaves the in-flight count with the response, as any response does.
#[tokio::test]
async fn a_dropped_upgrade_response_leaves_the_count() {
    let a = server("a").await;
    let lb = balancer(&[a], false);
    let response = lb.clone().oneshot(websocket_request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let ep = endpoint(&lb, a);
    let stats = ep.stats();
    assert_eq!(stats.in_flight(), 1);
    drop(response);
    assert_eq!(stats.in_flight(), 0);
    assert_eq!((stats.requests(), stats.failures()), (1, 0));
}
