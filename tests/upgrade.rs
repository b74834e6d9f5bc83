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
use http_body_util::{Empty, Full};
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

/// Binds 127.0.0.1 and serves each accepted connection with `conn`, on a
/// task of its own; the address.
async fn listen<F, Fut>(conn: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(conn(stream));
            }
        }
    });
    addr
}

/// Echoes what the upgraded connection reads until the client closes it.
fn echo_upgraded(on: hyper::upgrade::OnUpgrade) {
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

/// A hyper server (with upgrades) named `name`: a WebSocket handshake is
/// answered 101 and a `CONNECT` 200, and the upgraded connection echoes
/// what it reads until the client closes it; anything else is a 200.
/// Every response carries `x-server: name`.
async fn server(name: &'static str) -> SocketAddr {
    listen(move |stream| async move {
        let svc = service_fn(move |mut req: Request<hyper::body::Incoming>| async move {
            let websocket = req
                .headers()
                .get(header::UPGRADE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
            let connect = req.method() == Method::CONNECT;
            // `/body` answers with content (its attempt lasts until
            // the response is dropped); the rest without.
            let content = if req.uri().path() == "/body" {
                Bytes::from_static(b"content")
            } else {
                Bytes::new()
            };
            let mut response = Response::new(Full::new(content));
            response
                .headers_mut()
                .insert("x-server", header::HeaderValue::from_static(name));
            if websocket || connect {
                let on = hyper::upgrade::on(&mut req);
                echo_upgraded(on);
            }
            if websocket {
                switching_protocols(&mut response);
            }
            Ok::<_, Infallible>(response)
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades()
            .await;
    })
    .await
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
    let request = Request::get(format!("http://{SVC}/body"))
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

/// A hyper server over h2c with extended CONNECT (RFC 8441): a `CONNECT`
/// is answered 200 and its stream echoes what it reads.
async fn h2_server() -> SocketAddr {
    listen(|stream| async move {
        let svc = service_fn(move |mut req: Request<hyper::body::Incoming>| async move {
            let on = hyper::upgrade::on(&mut req);
            echo_upgraded(on);
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .enable_connect_protocol()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    })
    .await
}

/// A server that answers a WebSocket handshake 101 and closes the
/// upgraded connection at once.
async fn closing_server() -> SocketAddr {
    listen(|stream| async move {
        let svc = service_fn(move |mut req: Request<hyper::body::Incoming>| async move {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move { drop(on.await) });
            let mut response = Response::new(Empty::<Bytes>::new());
            switching_protocols(&mut response);
            Ok::<_, Infallible>(response)
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades()
            .await;
    })
    .await
}

/// The hold is counted once whatever the caller does with the response:
/// `upgrade::on` twice (the second fails, holding nothing), the
/// extensions cleared (the count ends then), cloned (it ends with the
/// last clone), hyper's `on` first (ours then fails; the count ends with
/// the response), the `on` future dropped unpolled, `into_inner`.
#[tokio::test]
async fn the_hold_is_counted_once_whatever_happens_to_the_response() {
    let a = server("a").await;
    let lb = balancer(&[a], false);
    assert!(lb.ready_service(SVC).await);
    let ep = endpoint(&lb, a);
    let stats = ep.stats();
    let websocket = || lb.clone().oneshot(websocket_request());

    let mut response = websocket().await.unwrap();
    let first = upgrade::on(&mut response);
    assert!(upgrade::on(&mut response).await.is_err());
    assert_eq!(stats.in_flight(), 1);
    let upgraded = first.await.unwrap();
    drop(response);
    assert_eq!(stats.in_flight(), 1);
    drop(upgraded);
    assert_eq!(stats.in_flight(), 0);

    let mut response = websocket().await.unwrap();
    response.extensions_mut().clear();
    assert_eq!(stats.in_flight(), 0);
    assert!(upgrade::on(&mut response).await.is_err());

    let mut response = websocket().await.unwrap();
    let extensions = response.extensions().clone();
    let upgraded = upgrade::on(&mut response).await.unwrap();
    drop((response, upgraded));
    assert_eq!(stats.in_flight(), 1);
    drop(extensions);
    assert_eq!(stats.in_flight(), 0);

    let mut response = websocket().await.unwrap();
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    assert!(upgrade::on(&mut response).await.is_err());
    assert_eq!(stats.in_flight(), 0);
    drop((response, upgraded));

    let mut response = websocket().await.unwrap();
    let on = upgrade::on(&mut response);
    drop(response);
    assert_eq!(stats.in_flight(), 1);
    drop(on);
    assert_eq!(stats.in_flight(), 0);

    let mut response = websocket().await.unwrap();
    let inner = upgrade::on(&mut response).await.unwrap().into_inner();
    assert_eq!(stats.in_flight(), 0);
    drop(inner);
    assert_eq!((stats.requests(), stats.failures()), (6, 0));
}

/// A 101 whose server closes the upgraded connection at once: the
/// connection reads its end and counts until it is dropped.
#[tokio::test]
async fn a_101_closed_at_once_counts_until_dropped() {
    let a = closing_server().await;
    let lb = balancer(&[a], false);
    let mut response = lb.clone().oneshot(websocket_request()).await.unwrap();
    let ep = endpoint(&lb, a);
    let stats = ep.stats();
    let upgraded = upgrade::on(&mut response).await.unwrap();
    drop(response);
    let mut io = TokioIo::new(upgraded);
    let mut buf = [0u8; 8];
    assert_eq!(io.read(&mut buf).await.unwrap(), 0);
    assert_eq!(stats.in_flight(), 1);
    drop(io);
    assert_eq!(stats.in_flight(), 0);
    assert_eq!((stats.requests(), stats.failures()), (1, 0));
}

/// HTTP/2 extended CONNECT (a WebSocket over h2, RFC 8441) is an upgrade
/// too: the stream echoes and counts in flight until it is dropped.
#[tokio::test]
async fn an_h2_extended_connect_counts_in_flight_until_dropped() {
    let a = h2_server().await;
    let source = StaticSource::new().with_list(SVC, &a.to_string()).unwrap();
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let lb: LoadBalancer<Http> = LoadBalancer::builder()
        .source(source)
        .service(SVC)
        .retry(RetryPolicy::none())
        .read_timeout(None)
        .build(client)
        .unwrap();
    let mut request = Request::connect(format!("http://{SVC}/ws"))
        .body(Empty::new())
        .unwrap();
    (request.extensions_mut()).insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = lb.clone().oneshot(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let ep = endpoint(&lb, a);
    let stats = ep.stats();
    let upgraded = upgrade::on(&mut response).await.unwrap();
    drop(response);
    assert_eq!(stats.in_flight(), 1);
    let mut io = TokioIo::new(upgraded);
    echo(&mut io, b"over an h2 stream").await;
    drop(io);
    assert_eq!(stats.in_flight(), 0);
    assert_eq!((stats.requests(), stats.failures()), (1, 0));
}

/// The balancer and its runtime dropped while an upgraded connection is
/// open: it still counts, and leaves the count when dropped (no panic).
#[test]
fn an_upgrade_outlives_its_balancer_and_runtime() {
    let servers = tokio::runtime::Runtime::new().unwrap();
    let a = servers.block_on(server("a"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (upgraded, ep) = rt.block_on(async {
        let lb = balancer(&[a], false);
        let mut response = lb.clone().oneshot(websocket_request()).await.unwrap();
        let upgraded = upgrade::on(&mut response).await.unwrap();
        (upgraded, endpoint(&lb, a))
    });
    drop(rt);
    assert_eq!(ep.stats().in_flight(), 1);
    drop(upgraded);
    assert_eq!(ep.stats().in_flight(), 0);
    assert_eq!((ep.stats().requests(), ep.stats().failures()), (1, 0));
}

/// An upgrade's latency is its head's: an hour-long WebSocket leaves the
/// EWMA and mean as the 101 set them, adds no failure, and its load ends
/// with it.
#[tokio::test]
async fn an_hour_long_websocket_is_no_latency_sample() {
    let a = server("a").await;
    let lb = balancer(&[a], false);
    let mut response = lb.clone().oneshot(websocket_request()).await.unwrap();
    let upgraded = upgrade::on(&mut response).await.unwrap();
    drop(response);
    let ep = endpoint(&lb, a);
    let stats = ep.stats();
    let head = (stats.ewma(), stats.mean_response_time());
    assert!(
        head.0
            .is_some_and(|d| d < std::time::Duration::from_secs(60))
    );
    tokio::time::pause();
    tokio::time::advance(std::time::Duration::from_secs(3600)).await;
    drop(upgraded);
    assert_eq!((stats.ewma(), stats.mean_response_time()), head);
    let now = tokio::time::Instant::now();
    assert!(stats.peak_ewma_at(now) <= head.0);
    assert_eq!(
        (stats.in_flight(), stats.requests(), stats.failures()),
        (0, 1, 0)
    );
}

/// 200 upgrades on four threads, each ended another way (the response
/// dropped, the `on` future dropped, the connection used and dropped,
/// hyper's `on`, `on` awaited on another task): nothing left in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrades_ended_every_way_on_four_threads_leave_no_count() {
    let (a, b) = (server("a").await, server("b").await);
    let lb = balancer(&[a, b], true);
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let lb = lb.clone();
        tasks.push(tokio::spawn(async move {
            let mut response = lb.oneshot(websocket_request()).await.unwrap();
            match i % 5 {
                0 => drop(response),
                1 => {
                    let on = upgrade::on(&mut response);
                    drop(response);
                    tokio::task::yield_now().await;
                    drop(on);
                }
                2 => {
                    let upgraded = upgrade::on(&mut response).await.unwrap();
                    drop(response);
                    echo(&mut TokioIo::new(upgraded), b"x").await;
                }
                3 => drop(hyper::upgrade::on(&mut response).await.unwrap()),
                _ => {
                    let on = tokio::spawn(async move { upgrade::on(&mut response).await });
                    let upgraded = on.await.unwrap().unwrap();
                    tokio::task::yield_now().await;
                    drop(upgraded);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (ea, eb) = (endpoint(&lb, a), endpoint(&lb, b));
    let (sa, sb) = (ea.stats(), eb.stats());
    assert_eq!((sa.in_flight(), sb.in_flight()), (0, 0));
    assert_eq!(sa.requests() + sb.requests(), 200);
    assert_eq!(sa.failures() + sb.failures(), 0);
}

/// Makes `response` a WebSocket handshake's answer: 101 with
/// `Connection: upgrade` and `Upgrade: websocket`.
fn switching_protocols<B>(response: &mut Response<B>) {
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, "upgrade".parse().unwrap());
    headers.insert(header::UPGRADE, "websocket".parse().unwrap());
}

/// A balancer stacked on another (an edge service whose one instance is
/// the inner balancer's service name): each counts the upgraded
/// connection in flight on its own instance until it is dropped. The
/// outer attempt's hold replaced the inner one in the response's
/// extensions, so the inner instance left the count with the 101.
#[tokio::test]
async fn stacked_balancers_each_count_an_upgrade_until_it_is_dropped() {
    let a = server("a").await;
    let inner = balancer(&[a], false);
    let edge = StaticSource::new()
        .with_list("edge", &format!("{SVC}:80"))
        .unwrap();
    let outer = LoadBalancer::builder()
        .source(edge)
        .service("edge")
        .retry(RetryPolicy::none())
        .outlier_detection(OutlierDetection::disabled())
        .read_timeout(None)
        .build(inner.clone())
        .unwrap();
    let request = {
        let mut r = websocket_request();
        *r.uri_mut() = "http://edge/ws".parse().unwrap();
        r
    };
    let mut response = outer.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = upgrade::on(&mut response).await.unwrap();
    drop(response);
    let inner_ep = endpoint(&inner, a);
    let inner_stats = inner_ep.stats();
    let outer_ep = outer.snapshot("edge").unwrap().endpoints()[0].clone();
    let outer_stats = outer_ep.stats();
    assert_eq!((outer_stats.in_flight(), inner_stats.in_flight()), (1, 1));
    let mut io = TokioIo::new(upgraded);
    echo(&mut io, b"through two balancers").await;
    assert_eq!((outer_stats.in_flight(), inner_stats.in_flight()), (1, 1));
    drop(io);
    assert_eq!((outer_stats.in_flight(), inner_stats.in_flight()), (0, 0));
    assert_eq!((inner_stats.requests(), inner_stats.failures()), (1, 0));
    assert_eq!((outer_stats.requests(), outer_stats.failures()), (1, 0));
}

/// Through reqwest (`ReqwestService`): reqwest hands hyper's response
/// over with its extensions, so a WebSocket upgrade taken with
/// `upgrade::on` echoes and counts in flight on its instance until it is
/// dropped, as through hyper-util's client.
#[tokio::test]
async fn a_websocket_through_reqwest_counts_in_flight_until_dropped() {
    let a = server("a").await;
    let source = StaticSource::new().with_list(SVC, &a.to_string()).unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .service(SVC)
        .retry(RetryPolicy::none())
        .outlier_detection(OutlierDetection::disabled())
        .read_timeout(None)
        .build(tower_ribbon::ReqwestService::new(reqwest::Client::new()))
        .unwrap();
    let request = websocket_request().map(|_| reqwest::Body::from(Vec::new()));
    let mut response = lb.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = upgrade::on(&mut response).await.unwrap();
    drop(response);
    let ep = lb.snapshot(SVC).unwrap().endpoints()[0].clone();
    let stats = ep.stats();
    assert_eq!(stats.in_flight(), 1);
    let mut io = TokioIo::new(upgraded);
    echo(&mut io, b"hello through reqwest").await;
    assert_eq!(stats.in_flight(), 1);
    drop(io);
    assert_eq!(stats.in_flight(), 0);
    assert_eq!((stats.requests(), stats.failures()), (1, 0));
}
