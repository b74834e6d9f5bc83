//! A request hyper-util's plain client cannot dial is no instance's fault:
//! `https://svc/x` through `HttpConnector` (which refuses every scheme but
//! `http` before any I/O) fails at once as [`Outcome::RequestError`],
//! with hyper-util's reason in its source chain, is not retried, and leaves the
//! instances' stats, breakers and ejection untouched; the same balancer
//! then serves `http://svc/x`. Before, each such request was a connect
//! failure on every instance it was retried on, and five of them opened
//! the breaker of both healthy instances for 30 s (found by this crate's
//! adversarial review, stop 43). An instance registered with its secure
//! port enabled meets the same refusal for its own `https`: that one is
//! the instance's (a connect failure, as reqwest's builder error and
//! `HttpsClient::https_only` are), so a GET goes to a plain instance and
//! the secure one's breaker opens (the README says which client to use).

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use support::backend::Backend;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::instance::Instance;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::stats::{BreakerState, Outcome};

const SVC: &str = "svc";

#[path = "common/broken_upload.rs"]
mod broken_upload;
use broken_upload::expect_untouched;

/// Round robin from the first of `instances` through hyper-util's plain
/// client (`build_http`), ready.
async fn balancer(
    instances: Vec<Instance>,
) -> LoadBalancer<tower_ribbon::service::HttpClient<Empty<Bytes>>> {
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .rule(|| RoundRobin::with_start(0))
        .build_http::<Empty<Bytes>>()
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    lb
}

#[tokio::test]
async fn an_https_request_through_a_plain_client_is_the_callers_error() {
    let a = Backend::start("a").await.unwrap();
    let b = Backend::start("b").await.unwrap();
    let lb = balancer(vec![
        Instance::new(SVC, "127.0.0.1", a.port()).unwrap(),
        Instance::new(SVC, "127.0.0.1", b.port()).unwrap(),
    ])
    .await;

    for i in 0..6 {
        let request = Request::get("https://svc/x").body(Empty::new()).unwrap();
        let err = lb.request(request).await.expect_err("no https here");
        let outcomes: Vec<Outcome> = err.attempts().iter().map(|a| a.outcome).collect();
        assert_eq!(outcomes, [Outcome::RequestError], "request {i}: {err:?}");
        // hyper-util's reason is in the error's source chain.
        let mut chain = Vec::new();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        assert!(
            chain.iter().any(|t| t == "invalid URL, scheme is not http"),
            "{chain:?}"
        );
        // And in the error's own text, not only two sources down: before,
        // it read "…: client error (Connect)" (new user, stop 59).
        let text = err.to_string();
        assert!(
            text.contains("client error (Connect): invalid URL, scheme is not http"),
            "{text}"
        );
    }
    assert_eq!((a.connections(), b.connections()), (0, 0));
    let snapshot = lb.snapshot(SVC).unwrap();
    expect_untouched(&snapshot);
    for e in snapshot.endpoints() {
        assert_eq!(e.stats().successive_connection_failures(), 0, "{e}");
        assert_eq!(e.stats().breaker_state(), BreakerState::Closed, "{e}");
    }

    for _ in 0..2 {
        let request = Request::get("http://svc/x").body(Empty::new()).unwrap();
        let response = lb.request(request).await.expect("http is served");
        assert_eq!(response.status(), 200);
    }
    assert_eq!((a.hits(), b.hits()), (1, 1));
}

/// The refusal of an instance's own `https` is the instance's: a GET goes
/// to the plain instance, and the secure one's breaker opens after three
/// (Ribbon's default), so later requests go straight to the plain one.
#[tokio::test]
async fn a_secure_instance_behind_a_plain_client_is_the_instances_failure() {
    let secure = Backend::start("secure").await.unwrap();
    let plain = Backend::start("plain").await.unwrap();
    let lb = balancer(vec![
        Instance::new(SVC, "127.0.0.1", secure.port())
            .unwrap()
            .with_secure(true),
        Instance::new(SVC, "127.0.0.1", plain.port()).unwrap(),
    ])
    .await;

    for i in 0..8 {
        let request = Request::get("http://svc/x").body(Empty::new()).unwrap();
        let response = lb.request(request).await.expect("the plain one serves");
        assert_eq!(response.status(), 200, "request {i}");
    }
    assert_eq!((secure.connections(), plain.hits()), (0, 8));
    let snapshot = lb.snapshot(SVC).unwrap();
    let stats = |port: u16| {
        let e = snapshot
            .endpoints()
            .iter()
            .find(|e| e.authority().port_u16() == Some(port))
            .expect("listed");
        e.stats()
    };
    let secure_stats = stats(secure.port());
    assert_eq!(secure_stats.successive_connection_failures(), 3);
    assert!(matches!(
        secure_stats.breaker_state(),
        BreakerState::Open { .. }
    ));
    assert_eq!(stats(plain.port()).failures(), 0);
}

/// A refused connection names its cause in the error's text: hyper-util's
/// top-level "client error (Connect)" said neither what failed nor why
/// (new user, stop 59); the root cause of the source chain now follows it,
/// once, cut to 512 bytes.
#[tokio::test]
async fn a_refused_connection_names_its_cause_in_the_text() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let lb = balancer(vec![Instance::new(SVC, "127.0.0.1", port).unwrap()]).await;
    let request = Request::get("http://svc/x").body(Empty::new()).unwrap();
    let err = lb.request(request).await.expect_err("nothing listens");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "service `svc`, instance http://127.0.0.1:{port}: client error (Connect): "
        )),
        "{text}"
    );
    assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
}
