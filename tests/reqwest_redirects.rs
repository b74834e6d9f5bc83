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
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    let (port, stop, _) = redirecting_with(307, location).await;
    (port, stop)
}

/// A loopback server answering every request `status` to `location`, and
/// the count of requests it answered.
async fn redirecting_with(
    status: u16,
    location: String,
) -> (u16, oneshot::Sender<()>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = oneshot::channel();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    tokio::spawn(support::backend::serve::serve(
        listener,
        stopped,
        |_| {},
        move |_req| {
            let location = location.clone();
            count.fetch_add(1, Ordering::SeqCst);
            async move {
                let response = Response::builder()
                    .status(status)
                    .header("location", location)
                    .body(Full::new(Bytes::new()))
                    .expect("response");
                Ok::<_, Infallible>(response)
            }
        },
    ));
    (port, stop, answered)
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

/// A caller's client following redirects, and a `Location` reqwest
/// cannot follow (found by helper 117): its builder error names that URL.
/// The instance had processed the POST and answered; read as its connect
/// failure, the POST went to the next instance too (A read 1, B read 1,
/// for 302, 303 and 307) and the redirecting instance's breaker opened
/// after three. Now the caller's error: sent once, counted against no
/// instance. A target refusing the connection is not told apart (the
/// error names the instance's URL); the last case pins that it is still
/// read as the instance's connect failure.
#[tokio::test]
async fn a_post_whose_redirect_cannot_be_followed_goes_to_no_other_instance() {
    use tower_ribbon::rule::RoundRobin;
    use tower_ribbon::stats::Outcome;
    let locations = [
        "com.example.app://cb?code=1".to_owned(),
        "ftp://files.example/x".to_owned(),
    ];
    for status in [302, 303, 307] {
        for location in &locations {
            let other = Backend::start("other").await.expect("backend");
            let (port, _stop, answered) = redirecting_with(status, location.clone()).await;
            let instances = vec![
                Instance::new(SVC, "127.0.0.1", port).expect("instance"),
                Instance::new(SVC, "127.0.0.1", other.port()).expect("instance"),
            ];
            let lb = LoadBalancer::builder()
                .source(StaticSource::new().with_instances(SVC, instances))
                .service(SVC)
                .rule(|| RoundRobin::with_start(0))
                .build(ReqwestService::new(reqwest::Client::new()))
                .expect("balancer");
            assert!(lb.ready_service(SVC).await);
            for round in 0..4 {
                let request = Request::post("http://svc/orders")
                    .body(reqwest::Body::from("order #1"))
                    .expect("request");
                let result = lb.clone().oneshot(request).await;
                if round % 2 == 1 {
                    // Round robin's turn of the other instance.
                    assert_eq!(result.expect("answered").status(), 200);
                    continue;
                }
                let error = result.expect_err("the redirect cannot be followed");
                let outcomes: Vec<Outcome> = error.attempts().iter().map(|a| a.outcome).collect();
                assert_eq!(
                    outcomes,
                    [Outcome::RequestError],
                    "{status} to {location}: {error}"
                );
            }
            // Each POST reached one server once; the redirecting
            // instance stays in rotation (its breaker never opened).
            assert_eq!(
                (answered.load(Ordering::SeqCst), other.hits()),
                (2, 2),
                "{status} to {location}"
            );
            let snapshot = lb.snapshot(SVC).expect("listed");
            let redirecting = snapshot
                .endpoints()
                .iter()
                .find(|e| e.instance().port() == port)
                .expect("the redirecting instance");
            assert_eq!(redirecting.stats().successive_connection_failures(), 0);
        }
    }
}

/// The case `failed_past_redirect` does not tell apart: a redirect target
/// refusing the connection. reqwest's connect error names the instance's
/// URL, so the attempt reads as the instance's connect failure (the POST
/// it had processed is sent to the next instance): pinned, so a reqwest
/// that names the hop's URL shows up here.
#[tokio::test]
async fn a_redirect_to_a_refusing_port_still_reads_as_a_connect_failure() {
    use tower_ribbon::stats::Outcome;
    let refusing = support::backend::closed_port::ClosedPort::new().expect("reserved port");
    let location = format!("http://127.0.0.1:{}/orders", refusing.port());
    let (port, _stop, answered) = redirecting_with(307, location).await;
    let instances = vec![Instance::new(SVC, "127.0.0.1", port).expect("instance")];
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .build(ReqwestService::new(reqwest::Client::new()))
        .expect("balancer");
    assert!(lb.ready_service(SVC).await);
    let request = Request::post("http://svc/orders")
        .body(reqwest::Body::from("order #1"))
        .expect("request");
    let error = lb.oneshot(request).await.expect_err("refused");
    let first = error.attempts().first().map(|a| a.outcome);
    assert_eq!(first, Some(Outcome::ConnectFailure), "{error}");
    assert!(answered.load(Ordering::SeqCst) >= 1);
}
