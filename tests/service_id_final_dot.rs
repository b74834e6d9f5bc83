//! A service declared with a final dot (`svc.`, an absolute name) in both
//! the source and the builder never gets a list: the balancer strips the
//! dot (`Shared::name`, src/service/services.rs:64, "`svc.` and `svc` are
//! one host") and fetches `svc`, while `StaticSource` and `DnsSource` key
//! their services by the id as written, lower-cased only
//! (src/discovery/static_list.rs:72, src/discovery/dns/source.rs:204), so
//! they hold `svc.` and answer `UnknownService` for `svc`. Every request
//! fails "discovery for service `svc` failed: source has no service `svc`",
//! although the source and the builder name the same service.
//! (`.service("svc.")` over a source holding `svc` works: the mismatch is
//! only on the source side.)

use std::convert::Infallible;
use std::net::SocketAddr;

use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::discovery::dns::{DnsConfig, DnsSource, DnsTarget};

fn ok_inner() -> impl tower::Service<
    http::Request<String>,
    Response = http::Response<String>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|_req: http::Request<String>| async {
        Ok::<_, Infallible>(http::Response::new(String::new()))
    })
}

#[tokio::test]
async fn a_static_list_under_an_absolute_name_is_served() {
    let lb = LoadBalancer::builder()
        .source(
            StaticSource::new()
                .with_list("svc.", "127.0.0.1:1")
                .unwrap(),
        )
        .service("svc.")
        .build(ok_inner())
        .unwrap();
    assert!(lb.ready_service("svc.").await);
    let status = lb.refresh_status("svc.").unwrap();
    // Observed: 0 instances, last error "source has no service `svc`".
    assert_eq!(
        status.instances,
        1,
        "last error: {:?}",
        status.last_error.map(|e| e.to_string())
    );
    let r = lb
        .request(
            http::Request::get("http://svc./")
                .body(String::new())
                .unwrap(),
        )
        .await;
    // Observed: Err("discovery for service `svc` failed: source has no service `svc`").
    assert!(r.is_ok(), "{:?}", r.err().map(|e| e.to_string()));
}

#[tokio::test]
async fn a_dns_service_under_an_absolute_name_is_asked() {
    // No DNS server is needed: before the fix the id was answered
    // `UnknownService` before any query; now the query goes to :9, where
    // nothing answers, and fails fast with a DNS error naming the target.
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let config = DnsConfig::new([unused])
        .timeout(std::time::Duration::from_millis(200))
        .attempts(1)
        .resolve_timeout(std::time::Duration::from_millis(500));
    let source = DnsSource::new(config)
        .unwrap()
        .with_service("users.", DnsTarget::host("users.example.", 8080))
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("users.")
        .build(ok_inner())
        .unwrap();
    // The first fetch ends with an error either way (nothing answers on
    // :9); which error is what this test reads. Waiting is bounded by the
    // fetch timeout, and `ready_service` says the fetch finished.
    lb.ready_service("users.").await;
    let error = lb
        .refresh_status("users.")
        .unwrap()
        .last_error
        .map(|e| e.to_string())
        .unwrap_or_default();
    // Observed before: "source has no service `users`" (the source held
    // `users.`). Now a DNS error for `users.example.`.
    assert!(!error.contains("no service"), "{error}");
    assert!(error.contains("users.example"), "{error}");
}
