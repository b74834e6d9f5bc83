//! Redirects through [`ReqwestService`]: the default adapter follows none,
//! so a POST answered `307` by its instance reaches no other server and
//! the caller gets the `307`, as with Ribbon (`FollowRedirects` false),
//! the hyper-util client and tonic. A client passed to
//! `ReqwestService::new` keeps its own policy (reqwest's default follows
//! up to 10), as the adapter's docs say; this test pins both.
//!
//! Before, `ReqwestService::default()` was `reqwest::Client::default()`:
//! the POST was sent again, body and all, to the `Location` server, whose
//! answer the balancer charged to the instance it picked.
//!
//! Peers: Netflix/ribbon#61 ("FollowRedirects impossible to turn off",
//! <https://github.com/Netflix/ribbon/issues/61>) and ribbon PR #118,
//! which made `false` the default
//! (<https://github.com/Netflix/ribbon/pull/118>);
//! spring-cloud-netflix#691 ("Disable redirect handling in
//! RibbonLoadBalancingHttpClient",
//! <https://github.com/spring-cloud/spring-cloud-netflix/issues/691>).

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper::Response;
use support::backend::Backend;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::instance::Instance;
use tower_ribbon::{LoadBalancer, ReqwestService};

const SVC: &str = "svc";

/// A loopback server answering every request `307` to `location`.
async fn redirecting(location: String) -> (u16, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(support::backend::serve::serve(
        listener,
        stopped,
        |_| {},
        move |_req| {
            let location = location.clone();
            async move {
                let response = Response::builder()
                    .status(307)
                    .header("location", location)
                    .body(Full::new(Bytes::new()))
                    .expect("response");
                Ok::<_, Infallible>(response)
            }
        },
    ));
    (port, stop)
}

/// One POST through a balancer over the redirecting instance: the status
/// the caller got.
async fn post_once(inner: ReqwestService, port: u16) -> u16 {
    let instances = vec![Instance::new(SVC, "127.0.0.1", port).expect("instance")];
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .build(inner)
        .expect("balancer");
    assert!(lb.ready_service(SVC).await);
    let request = Request::post("http://svc/orders")
        .body(reqwest::Body::from("order #1"))
        .expect("request");
    let response = lb.oneshot(request).await.expect("answered");
    response.status().as_u16()
}

#[tokio::test]
async fn the_default_adapter_follows_no_redirect() {
    let elsewhere = Backend::start("elsewhere").await.expect("backend");
    let (port, _stop) = redirecting(format!("http://127.0.0.1:{}/orders", elsewhere.port())).await;
    let status = post_once(ReqwestService::default(), port).await;
    // Before: (200, 1), the POST sent again to the other server.
    assert_eq!((status, elsewhere.hits()), (307, 0));
}

#[tokio::test]
async fn a_callers_client_keeps_its_own_redirect_policy() {
    let elsewhere = Backend::start("elsewhere").await.expect("backend");
    let (port, _stop) = redirecting(format!("http://127.0.0.1:{}/orders", elsewhere.port())).await;
    let status = post_once(ReqwestService::new(reqwest::Client::new()), port).await;
    assert_eq!((status, elsewhere.hits()), (200, 1));
    let none = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let status = post_once(ReqwestService::new(none), port).await;
    assert_eq!((status, elsewhere.hits()), (307, 1));
}
