//! Retry keys by scope against Spring's binding, which binds a client's
//! keys over a copy of the global ones (helper 201): a global
//! `retry.enabled=false` stays off for a client setting only counts (before:
//! 3 attempts, and a POST answered 503 sent to 3 servers with the client's
//! `retry-on-all-operations`); a client writing out a default timeout agrees
//! with one leaving it unset in `RibbonConfig::builder` (before: a
//! conflict). Each over real loopback backends answering 503.
mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use support::backend::{Backend, Behavior};
use support::{HttpClient, http_client};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::config::{ConfigErrorKind, RibbonConfig};

async fn backends(n: usize, behavior: Behavior) -> Vec<Backend> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(
            Backend::start_with(&format!("b{i}"), behavior.clone())
                .await
                .unwrap(),
        );
    }
    v
}
fn list(bs: &[Backend]) -> String {
    bs.iter()
        .map(|b| format!("127.0.0.1:{}", b.port()))
        .collect::<Vec<_>>()
        .join(",")
}
fn hits(bs: &[Backend]) -> usize {
    bs.iter().map(Backend::hits).sum()
}
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

/// Attempts one request of `method` makes over 4 backends answering 503.
async fn attempts(props: &str, method: http::Method) -> (usize, (u32, u32, Option<bool>)) {
    let bs = backends(4, Behavior::Status(503)).await;
    let config = RibbonConfig::from_properties_str(&format!(
        "svc.ribbon.listOfServers={}\n{props}",
        list(&bs)
    ))
    .unwrap();
    let p = config.client("svc").retry_policy();
    let lb = config
        .builder_for("svc")
        .unwrap()
        .build(http_client())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let _ = send(&lb, method).await;
    (
        hits(&bs),
        (
            p.get_max_same(),
            p.get_max_next(),
            config.client("svc").ok_to_retry_on_all_operations,
        ),
    )
}

/// Spring binds `clients.svc.*` over a copy of the global properties, so a
/// global `retry.enabled=false` stays false for svc when svc sets only a
/// count: `RetryLoadBalancerInterceptor` uses `NeverRetryPolicy`: 1 attempt.
#[tokio::test]
async fn global_false_with_client_spring_count_get() {
    let (n, p) = attempts(
        "spring.cloud.loadbalancer.retry.enabled=false\n\
         spring.cloud.loadbalancer.clients.svc.retry.max-retries-on-next-service-instance=2\n",
        http::Method::GET,
    )
    .await;
    assert_eq!((n, p), (1, (0, 0, Some(false))), "Spring makes 1 attempt");
}

/// The same with `retry-on-all-operations=true` on the client: a POST that
/// reached a server (503) is sent 3 times where Spring sends it once.
#[tokio::test]
async fn global_false_with_client_spring_keys_post() {
    let (n, p) = attempts(
        "spring.cloud.loadbalancer.retry.enabled=false\n\
         spring.cloud.loadbalancer.clients.svc.retry.max-retries-on-next-service-instance=2\n\
         spring.cloud.loadbalancer.clients.svc.retry.retry-on-all-operations=true\n",
        http::Method::POST,
    )
    .await;
    assert_eq!(n, 1, "POST answered 503 sent {n} times; policy {p:?}");
}

/// Controls that should hold.
#[tokio::test]
async fn controls() {
    // client false beats client ribbon keys
    let (n, _) = attempts(
        "spring.cloud.loadbalancer.clients.svc.retry.enabled=false\n\
         svc.ribbon.MaxAutoRetriesNextServer=2\nsvc.ribbon.OkToRetryOnAllOperations=true\n",
        http::Method::POST,
    )
    .await;
    assert_eq!(n, 1, "client false");
    // global false + client ribbon all-ops, global ribbon count: no retries
    let (n, _) = attempts(
        "spring.cloud.loadbalancer.retry.enabled=false\n\
         svc.ribbon.OkToRetryOnAllOperations=true\nribbon.MaxAutoRetriesNextServer=2\n",
        http::Method::POST,
    )
    .await;
    assert_eq!(n, 1, "global false, global count");
    // client true over global false, global spring all-ops + count: Spring retries POST 2 more
    let (n, _) = attempts(
        "spring.cloud.loadbalancer.retry.enabled=false\n\
         spring.cloud.loadbalancer.retry.retry-on-all-operations=true\n\
         spring.cloud.loadbalancer.retry.max-retries-on-next-service-instance=2\n\
         spring.cloud.loadbalancer.clients.svc.retry.enabled=true\n",
        http::Method::POST,
    )
    .await;
    assert_eq!(n, 3, "client true");
    // POST without all-ops: never retried after 503
    let (n, _) = attempts(
        "ribbon.MaxAutoRetriesNextServer=3\nribbon.MaxAutoRetries=1\n",
        http::Method::POST,
    )
    .await;
    assert_eq!(n, 1, "POST default");
    // client all-ops=false beats global true
    let (n, _) = attempts(
        "spring.cloud.loadbalancer.retry.retry-on-all-operations=true\n\
         spring.cloud.loadbalancer.clients.svc.retry.retry-on-all-operations=false\n\
         ribbon.MaxAutoRetriesNextServer=2\n",
        http::Method::POST,
    )
    .await;
    assert_eq!(n, 1, "client all-ops false");
    // Spring client all-ops=false vs global Ribbon OkToRetryOnAllOperations=true
    let (n, p) = attempts(
        "ribbon.OkToRetryOnAllOperations=true\n\
         spring.cloud.loadbalancer.clients.svc.retry.retry-on-all-operations=false\n\
         ribbon.MaxAutoRetriesNextServer=2\n",
        http::Method::POST,
    )
    .await;
    assert_eq!(
        n, 1,
        "client spring all-ops false vs global ribbon true {p:?}"
    );
    // same/next counts: client spring 0 vs global ribbon 2
    let (n, p) = attempts(
        "ribbon.MaxAutoRetries=2\nribbon.MaxAutoRetriesNextServer=2\n\
         spring.cloud.loadbalancer.clients.svc.retry.max-retries-on-same-service-instance=0\n\
         spring.cloud.loadbalancer.clients.svc.retry.max-retries-on-next-service-instance=0\n",
        http::Method::GET,
    )
    .await;
    assert_eq!(n, 1, "client 0/0 {p:?}");
    // status codes: client's own codes beat global
    let (n, p) = attempts(
        "spring.cloud.loadbalancer.retry.retryable-status-codes=503\n\
         spring.cloud.loadbalancer.clients.svc.retry.retryable-status-codes=500\n",
        http::Method::GET,
    )
    .await;
    assert_eq!(n, 1, "client codes {p:?}");
}

/// Several clients in one balancer: a per-client ReadTimeout still
/// conflicts, agreeing ones apply, zero means none.
#[test]
fn builder_read_timeout_conflicts_and_applies() {
    let base = "a.ribbon.listOfServers=127.0.0.1:1\nb.ribbon.listOfServers=127.0.0.1:2\n";
    let c =
        RibbonConfig::from_properties_str(&format!("{base}a.ribbon.ReadTimeout=3000\n")).unwrap();
    let err = c.builder().unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Conflicting, "{err}");
    assert!(err.to_string().contains("ReadTimeout"), "{err}");
    let c = RibbonConfig::from_properties_str(&format!(
        "{base}a.ribbon.ReadTimeout=3000\nb.ribbon.ReadTimeout=3000\n"
    ))
    .unwrap();
    assert_eq!(
        c.builder().unwrap().get_read_timeout(),
        Some(std::time::Duration::from_secs(3))
    );
    let c = RibbonConfig::from_properties_str(&format!("{base}ribbon.ReadTimeout=0\n")).unwrap();
    assert_eq!(c.builder().unwrap().get_read_timeout(), None);
    // retry.enabled: client true beats global false in one, other inherits false
    let c = RibbonConfig::from_properties_str(&format!(
        "{base}spring.cloud.loadbalancer.retry.enabled=false\nspring.cloud.loadbalancer.clients.a.retry.enabled=true\n")).unwrap();
    let err = c.builder().unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Conflicting, "{err}");
}

/// Explicitly writing the default (ReadTimeout=5000, ConnectTimeout=2000)
/// in one client is the same setting as leaving it unset in another: the
/// balancer gets 5 s / 2 s either way. Now: builder() succeeds.
#[test]
fn builder_explicit_default_timeout_is_no_conflict() {
    let base = "a.ribbon.listOfServers=127.0.0.1:1\nb.ribbon.listOfServers=127.0.0.1:2\n";
    for extra in [
        "a.ribbon.ReadTimeout=5000\n",
        "a.ribbon.ConnectTimeout=2000\n",
    ] {
        let c = RibbonConfig::from_properties_str(&format!("{base}{extra}")).unwrap();
        let a = RibbonConfig::from_properties_str(&format!("{base}{extra}"))
            .unwrap()
            .builder_for("a")
            .unwrap();
        let b = c.builder_for("b").unwrap();
        assert_eq!(
            (a.get_read_timeout(), a.get_connect_timeout()),
            (b.get_read_timeout(), b.get_connect_timeout())
        );
        assert!(c.builder().is_ok(), "{extra}: {:?}", c.builder().err());
    }
}
