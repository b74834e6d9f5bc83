//! "No instances": the error says whether the source lists the service at
//! all, and in which statuses (issue 12 item 8). Against the real Eureka
//! server (registered instances moved to OUT_OF_SERVICE and STARTING, and a
//! service never registered), and a static list.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use support::eureka::EurekaFixture;
use tower_ribbon::discovery::eureka::EurekaRegistry;
use tower_ribbon::discovery::{RefreshConfig, SourceKind, StaticSource};
use tower_ribbon::instance::Instance;
use tower_ribbon::{InstanceStatus, LoadBalancer};

async fn error_of<S>(lb: &LoadBalancer<S>, uri: &str) -> tower_ribbon::Error
where
    S: tower_ribbon::InnerService<Empty<Bytes>>,
{
    let request = http::Request::get(uri).body(Empty::new()).expect("request");
    match lb.clone().send(request).await {
        Ok(_) => panic!("{uri}: expected an error"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eureka_says_which_statuses_it_lists_or_that_it_lists_none() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let a = eureka.register("user-service", 21001).await;
    let b = eureka.register("user-service", 21002).await;
    let c = eureka.register("user-service", 21003).await;
    eureka
        .set_status("user-service", &a, "OUT_OF_SERVICE")
        .await;
    eureka
        .set_status("user-service", &b, "OUT_OF_SERVICE")
        .await;
    eureka.set_status("user-service", &c, "STARTING").await;
    let mut statuses: Vec<String> = eureka
        .statuses("user-service")
        .await
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["OUT_OF_SERVICE", "OUT_OF_SERVICE", "STARTING"]);

    let registry = EurekaRegistry::builder()
        .server_urls(&eureka.url())
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("registry");
    registry.ready().await.expect("first fetch");

    let client = support::http_client();
    let lb = LoadBalancer::builder()
        .source(registry.clone())
        .services(["user-service", "ghost-service"])
        .build(client)
        .expect("build");
    assert!(lb.ready_service("user-service").await);
    assert!(lb.ready_service("ghost-service").await);

    let listing = *lb.snapshot("user-service").expect("known").listing();
    assert_eq!(listing.source(), SourceKind::Registry);
    assert_eq!(
        (
            listing.total(),
            listing.count(InstanceStatus::OutOfService),
            listing.count(InstanceStatus::Starting),
            listing.count(InstanceStatus::Up),
        ),
        (3, 2, 1, 0)
    );

    let err = error_of(&lb, "http://user-service/x").await;
    assert!(err.is_no_instances(), "{err}");
    assert_eq!(
        err.to_string(),
        "service `user-service`: no instance is UP (registry lists 3: 2 OUT_OF_SERVICE, 1 STARTING)"
    );

    let err = error_of(&lb, "http://ghost-service/x").await;
    assert!(err.is_no_instances(), "{err}");
    assert_eq!(
        err.to_string(),
        "service `ghost-service` is not in the registry, so it has no UP instance"
    );
}

#[tokio::test]
async fn a_static_list_says_what_it_lists() {
    let down = Instance::new("orders", "127.0.0.1", 1)
        .expect("instance")
        .with_status(InstanceStatus::Down);
    let source = StaticSource::new()
        .with_instances("orders", vec![down])
        .with_list("empty", "")
        .expect("list");
    let mut refresh = RefreshConfig::default();
    refresh.jitter = 0.0;
    let lb = LoadBalancer::builder()
        .source(source)
        .services(["orders", "empty"])
        .refresh(refresh)
        .build(support::http_client())
        .expect("build");
    assert!(lb.ready_service("orders").await);
    assert!(lb.ready_service("empty").await);
    assert_eq!(
        error_of(&lb, "http://orders/").await.to_string(),
        "service `orders`: no instance is UP (static list lists 1: 1 DOWN)"
    );
    assert_eq!(
        error_of(&lb, "http://empty/").await.to_string(),
        "service `empty`: its static list is empty, so it has no UP instance"
    );
}
