//! Retry key scopes over real loopback backends, case by case (helper
//! 205): under a global `retry.enabled=false` the global Ribbon and Spring
//! status codes are off too (R1, R1b: 3 attempts before, 1 now); a
//! client's own switch, key families, relaxed forms. POSTs that reached a
//! server are never retried without an opt-in.
mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use support::backend::{Backend, Behavior};
use support::{HttpClient, http_client};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::config::RibbonConfig;

async fn send(lb: &LoadBalancer<HttpClient>, method: http::Method) -> String {
    let req = http::Request::builder()
        .method(method)
        .uri("http://svc/x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    match lb.clone().oneshot(req).await {
        Ok(r) => {
            let s = r.status().as_u16();
            let _ = r.into_body().collect().await;
            s.to_string()
        }
        Err(e) => format!("error: {e}"),
    }
}

async fn attempts(props: &str, status: u16, method: http::Method) -> (usize, String) {
    let mut bs = Vec::new();
    for i in 0..5 {
        bs.push(
            Backend::start_with(&format!("b{i}"), Behavior::Status(status))
                .await
                .unwrap(),
        );
    }
    let list = bs
        .iter()
        .map(|b| format!("127.0.0.1:{}", b.port()))
        .collect::<Vec<_>>()
        .join(",");
    let config = match RibbonConfig::from_properties_str(&format!(
        "svc.ribbon.listOfServers={list}\n{props}"
    )) {
        Ok(c) => c,
        Err(e) => return (0, format!("config error: {e}")),
    };
    let c = config.client("svc");
    let desc = format!(
        "same={:?} next={:?} all={:?} codes={:?} warn={:?}",
        c.max_auto_retries,
        c.max_auto_retries_next_server,
        c.ok_to_retry_on_all_operations,
        c.retryable_status_codes,
        config.warnings()
    );
    let lb = config
        .builder_for("svc")
        .unwrap()
        .build(http_client())
        .unwrap();
    let s = send(&lb, method).await;
    (bs.iter().map(Backend::hits).sum(), format!("{s} {desc}"))
}

#[tokio::test]
async fn r_matrix() {
    use http::Method;
    let cases: &[(&str, &str, u16, Method, usize)] = &[
        // global off: global Ribbon codes are off too (docs) -> 500 not retried.
        (
            "R1 global off, client Ribbon next=2, global Ribbon codes=500",
            "spring.cloud.loadbalancer.retry.enabled=false\nsvc.ribbon.MaxAutoRetriesNextServer=2\nribbon.retryableStatusCodes=500\n",
            500,
            Method::GET,
            1,
        ),
        (
            "R1b global off, client Ribbon next=2, global Spring codes=500",
            "spring.cloud.loadbalancer.retry.enabled=false\nsvc.ribbon.MaxAutoRetriesNextServer=2\nspring.cloud.loadbalancer.retry.retryable-status-codes=500\n",
            500,
            Method::GET,
            1,
        ),
        (
            "R1c client off, client Spring codes=500, client Ribbon next... (own false beats own ribbon)",
            "spring.cloud.loadbalancer.clients.svc.retry.enabled=false\nsvc.ribbon.MaxAutoRetriesNextServer=2\nsvc.ribbon.OkToRetryOnAllOperations=true\n",
            503,
            Method::POST,
            1,
        ),
        (
            "R2 client off, global Ribbon next=3 all-ops",
            "spring.cloud.loadbalancer.clients.svc.retry.enabled=false\nribbon.MaxAutoRetriesNextServer=3\nribbon.OkToRetryOnAllOperations=true\n",
            503,
            Method::POST,
            1,
        ),
        (
            "R3 global off via 'off'",
            "spring.cloud.loadbalancer.retry.enabled=off\nribbon.MaxAutoRetriesNextServer=3\n",
            503,
            Method::GET,
            1,
        ),
        (
            "R3b global off via 'FALSE'",
            "spring.cloud.loadbalancer.retry.enabled=FALSE\nribbon.MaxAutoRetriesNextServer=3\n",
            503,
            Method::GET,
            1,
        ),
        (
            "R3c global off via '0'",
            "spring.cloud.loadbalancer.retry.enabled=0\nribbon.MaxAutoRetriesNextServer=3\n",
            503,
            Method::GET,
            1,
        ),
        (
            "R4 relaxed client key case",
            "spring.cloud.loadbalancer.clients.SVC.retry.enabled=false\nribbon.MaxAutoRetriesNextServer=3\n",
            503,
            Method::GET,
            1,
        ),
        (
            "R5 relaxed enabled key",
            "spring.cloud.loadbalancer.Retry.Enabled=false\nspring.cloud.loadbalancer.retry.max-retries-on-next-service-instance=3\n",
            503,
            Method::GET,
            1,
        ),
        (
            "R6 global off, client Spring all-ops + global ribbon all-ops, client ribbon next 2 (POST must not retry after reaching)",
            "spring.cloud.loadbalancer.retry.enabled=false\nsvc.ribbon.MaxAutoRetriesNextServer=2\nribbon.OkToRetryOnAllOperations=true\nspring.cloud.loadbalancer.clients.svc.retry.retry-on-all-operations=true\n",
            503,
            Method::POST,
            1,
        ),
        // Documented difference: without codes this crate retries 502-504
        // (Spring's `retryable-status-codes` default is empty).
        (
            "R7 Spring keys only, GET 503, next=2, no codes: the documented 502-504 default",
            "spring.cloud.loadbalancer.retry.max-retries-on-next-service-instance=2\n",
            503,
            Method::GET,
            3,
        ),
        (
            "R8 global off; clients.svc.retry.max-retries-on-same=2 (client Spring count under global false)",
            "spring.cloud.loadbalancer.retry.enabled=false\nspring.cloud.loadbalancer.clients.svc.retry.max-retries-on-same-service-instance=2\n",
            503,
            Method::GET,
            1,
        ),
        (
            "R9 global Spring retry on all ops true, client retry.enabled=false, client ribbon all ops unset, global ribbon next=2",
            "spring.cloud.loadbalancer.retry.retry-on-all-operations=true\nspring.cloud.loadbalancer.clients.svc.retry.enabled=false\nribbon.MaxAutoRetriesNextServer=2\n",
            503,
            Method::POST,
            1,
        ),
    ];
    let mut bad = Vec::new();
    for (name, props, status, method, want) in cases {
        let (n, desc) = attempts(props, *status, method.clone()).await;
        println!("{name}: attempts {n} (want {want}) {desc}");
        if n != *want {
            bad.push(format!("{name}: {n} != {want}"));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
