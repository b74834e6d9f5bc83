//! A request reqwest cannot build for one instance (an IPv6 zone id, which
//! the `url` crate rejects) fails there because of the instance's address,
//! not the caller's request: it must count against that instance and be
//! retried elsewhere, as any attempt that never reached a server.

mod support;

use http::Request;
use support::backend::Backend;
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::instance::Instance;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::stats::Outcome;
use tower_ribbon::{LoadBalancer, ReqwestService};

const SVC: &str = "svc";

/// Ten GETs over a zone-id instance reqwest cannot address and a good one:
/// every request succeeds (the five that first went to the zone-id
/// instance are retried at the good one) and the zone-id instance's failures
/// are counted as connect failures, the request never having left the
/// client (before: five of the ten failed with `RequestError`, unretried
/// and never counted against the instance, so it kept its share for ever).
#[tokio::test]
async fn an_instance_reqwest_cannot_address_is_its_own_failure() {
    let good = Backend::start("good").await.expect("backend");
    let instances = vec![
        Instance::new(SVC, "fe80::1%lo", 1).unwrap(),
        Instance::new(SVC, "127.0.0.1", good.port()).unwrap(),
    ];
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances(SVC, instances))
        .service(SVC)
        .rule(|| RoundRobin::with_start(0))
        .outlier_detection(OutlierDetection::default())
        .build(ReqwestService::new(reqwest::Client::new()))
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    let mut outcomes = Vec::new();
    let mut ok = 0;
    for _ in 0..10 {
        let req = Request::get("http://svc/x").body(String::new()).unwrap();
        match lb.clone().oneshot(req).await {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                ok += 1;
            }
            Err(e) => outcomes.extend(e.attempts().iter().map(|a| a.outcome)),
        }
    }
    assert_eq!((ok, outcomes), (10, Vec::<Outcome>::new()));
    let snapshot = lb.snapshot(SVC).unwrap();
    let zoned = snapshot
        .endpoints()
        .iter()
        .find(|e| e.instance().host().starts_with("fe80"))
        .expect("listed");
    // Three connect failures trip its breaker (Ribbon's default), which
    // keeps it out of the later picks.
    assert_eq!(
        (
            zoned.stats().failures(),
            zoned.stats().successive_connection_failures()
        ),
        (3, 3)
    );
}

/// A request through `ReqwestService` that fails (here: its instance
/// refuses the connection) keeps the query of its URI, which may carry a
/// token (`?access_token=S3cret`), out of the balancer's error text and
/// `Debug`, as the balancer's own errors do (`/api?***`): reqwest's error
/// names the whole URL (`error sending request for url
/// (http://127.0.0.1:P/api?access_token=S3cret)`), and the balancer's
/// error shows its source. Before: the token in both; now `?***`.
#[tokio::test]
async fn a_failed_request_keeps_its_query_out_of_the_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let lb = LoadBalancer::builder()
        .source(
            StaticSource::new()
                .with_instances(SVC, vec![Instance::new(SVC, "127.0.0.1", port).unwrap()]),
        )
        .service(SVC)
        .build(ReqwestService::new(reqwest::Client::new()))
        .unwrap();
    assert!(lb.ready_service(SVC).await);
    let req = Request::get("http://svc/api?access_token=S3cret#frag")
        .body(String::new())
        .unwrap();
    let err = lb.clone().oneshot(req).await.unwrap_err();
    let (text, debug) = (err.to_string(), format!("{err:?}"));
    assert!(
        !text.contains("S3cret") && !debug.contains("S3cret"),
        "{text}\n{debug}"
    );
    let url = format!("http://127.0.0.1:{port}/api?***");
    assert!(text.contains(&format!("for url ({url})")), "{text}");
    assert!(debug.contains(&url), "{debug}");
}
