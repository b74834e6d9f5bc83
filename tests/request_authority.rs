//! What the instance receives of the caller's authority, through both
//! adapters (hyper-util's client and [`ReqwestService`]) over a real
//! loopback server on `[::1]`:
//! - without a `Host` header, the client derives it from the endpoint the
//!   URI was rewritten to, an IPv6 address in brackets (`[::1]:PORT`); the
//!   request target keeps the caller's path and query;
//! - a `Host` header the caller set is kept, as Envoy keeps it unless a
//!   route asks for `auto_host_rewrite`
//!   (<https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-routeaction-auto-host-rewrite>);
//! - the caller's userinfo (`http://user:secret@svc/`) is dropped with the
//!   rest of the authority: no instance receives it, neither as basic auth
//!   (reqwest turns a URL's userinfo into an `Authorization` header) nor
//!   in an HTTP/2 `:authority`, which must not carry it (RFC 9113
//!   §8.3.1); the caller's port (`svc:8080`) is replaced too.
//!
//! The module docs of `tower_ribbon::service` say the same.

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::instance::Instance;
use tower_ribbon::{LoadBalancer, ReqwestService};

const SVC: &str = "svc";

/// A server on `[::1]` answering each request with what it received:
/// `target`, the `Host` fields and any `Authorization`, on one line.
async fn echo() -> Option<(u16, oneshot::Sender<()>)> {
    let listener = match TcpListener::bind("[::1]:0").await {
        Ok(listener) => listener,
        Err(e) if support::eureka::in_ci() => panic!("::1 is required under CI=true: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: no ::1 here: {e}");
            return None;
        }
    };
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(support::backend::serve::serve(
        listener,
        stopped,
        |_| {},
        |req: Request<hyper::body::Incoming>| async move {
            let text = |name: &str| -> Vec<String> {
                req.headers()
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect()
            };
            let seen = format!(
                "target={} host={:?} authorization={:?}",
                req.uri(),
                text("host"),
                text("authorization")
            );
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(seen))))
        },
    ));
    Some((port, stop))
}

/// The caller's requests: URI and an optional `Host` header.
const CALLS: [(&str, Option<&str>); 4] = [
    ("http://svc/a?b=1", None),
    ("http://svc/a", Some("svc")),
    ("http://user:secret@svc/a", None),
    ("http://svc:8080/a", None),
];

/// What the instance on `port` must receive for each of [`CALLS`].
fn expected(port: u16) -> Vec<String> {
    let own = format!("[\"[::1]:{port}\"]");
    vec![
        format!("target=/a?b=1 host={own} authorization=[]"),
        "target=/a host=[\"svc\"] authorization=[]".to_owned(),
        format!("target=/a host={own} authorization=[]"),
        format!("target=/a host={own} authorization=[]"),
    ]
}

/// Sends each of [`CALLS`] through `lb` (a request body made by `body`),
/// one after another, and returns what the instance answered it saw.
async fn seen_through<L, B, R>(lb: L, body: fn() -> B) -> Vec<String>
where
    L: tower::Service<Request<B>, Response = http::Response<R>> + Clone,
    L::Error: std::fmt::Debug,
    R: http_body::Body,
    R::Error: std::fmt::Debug,
{
    let mut seen = Vec::new();
    for (uri, host) in CALLS {
        let mut request = Request::get(uri);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        let request = request.body(body()).expect("request");
        let response = lb.clone().oneshot(request).await.expect("answered");
        assert_eq!(response.status(), 200);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        seen.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    seen
}

fn instance(port: u16) -> Instance {
    Instance::new(SVC, "::1", port).expect("an IPv6 instance")
}

#[tokio::test]
async fn through_hyper_util_the_instance_sees_its_own_authority() {
    let Some((port, _stop)) = echo().await else {
        return;
    };
    assert_eq!(instance(port).authority().as_str(), format!("[::1]:{port}"));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, vec![instance(port)]))
        .service(SVC)
        .build(client)
        .expect("balancer");
    assert!(lb.ready_service(SVC).await);
    assert_eq!(seen_through(lb, Empty::new).await, expected(port));
}

#[tokio::test]
async fn through_reqwest_the_instance_sees_its_own_authority() {
    let Some((port, _stop)) = echo().await else {
        return;
    };
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, vec![instance(port)]))
        .service(SVC)
        .build(ReqwestService::default())
        .expect("balancer");
    assert!(lb.ready_service(SVC).await);
    let empty = || reqwest::Body::from("");
    assert_eq!(seen_through(lb, empty).await, expected(port));
}
