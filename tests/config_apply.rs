//! `RibbonConfig::apply` over a builder configured in code: keys the file
//! does not set leave the builder's setting as it was (helper 201). Before,
//! a refresh key reset the code's `keep_last_on_empty`, fetch timeout and
//! jitter; a breaker key the code's threshold (3 errors where 1 was set);
//! a Spring retry key read but not applied the code's `RetryPolicy::none()`
//! (2 attempts); and a wrapper key (hint header, slow start, sticky
//! sessions) replaced the code's rule with round robin (4/4/4 where the
//! code's zone preference sent 12 of 12 to one zone).
mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use support::backend::closed_port::ClosedPort;
use support::backend::{Backend, Behavior};
use support::{HttpClient, http_client, simple_discovery, tally};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::config::RibbonConfig;
use tower_ribbon::discovery::RefreshConfig;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::{RoundRobin, ZoneAvoidance};
use tower_ribbon::stats::StatsConfig;

async fn get(lb: &LoadBalancer<HttpClient>) -> String {
    let req = http::Request::get("http://svc/x")
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

/// Code keeps the last list on an empty answer and bounds fetches at 7 s;
/// the file sets only `ServerListRefreshInterval`. Now: the code's
/// `keep_last_on_empty`, `fetch_timeout`, `first_fetch_wait`, `jitter` stay.
#[test]
fn refresh_interval_alone_keeps_the_rest_of_the_code_refresh() {
    let mut refresh = RefreshConfig::default();
    refresh.keep_last_on_empty = true;
    refresh.fetch_timeout = Duration::from_secs(7);
    refresh.first_fetch_wait = Duration::from_millis(1234);
    refresh.jitter = 0.0;
    let config = RibbonConfig::from_properties_str(
        "svc.ribbon.listOfServers=127.0.0.1:1\nsvc.ribbon.ServerListRefreshInterval=1000\n",
    )
    .unwrap();
    let builder = config
        .apply("svc", LoadBalancer::builder().refresh(refresh))
        .unwrap();
    let debug = format!("{builder:?}");
    assert!(debug.contains("interval: 1s"), "{debug}");
    assert!(debug.contains("keep_last_on_empty: true"), "{debug}");
    assert!(debug.contains("fetch_timeout: 7s"), "{debug}");
    assert!(debug.contains("first_fetch_wait: 1.234s"), "{debug}");
}

/// Code trips the breaker after 1 connection failure; the file sets only
/// `circuitTripMaxTimeoutSeconds`. One instance refuses connections, one
/// answers; 8 GETs without retries. Threshold 1: 1 error; threshold 3 (the
/// default): more.
#[tokio::test]
async fn a_breaker_key_keeps_the_code_threshold() {
    let mut errors = Vec::new();
    for file_key in ["", "svc.ribbon.circuitTripMaxTimeoutSeconds=60\n"] {
        let dead = ClosedPort::new().unwrap();
        let live = Backend::start("live").await.unwrap();
        let config = RibbonConfig::from_properties_str(&format!(
            "svc.ribbon.listOfServers=127.0.0.1:{},127.0.0.1:{}\n{file_key}",
            dead.port(),
            live.port()
        ))
        .unwrap();
        let mut stats = StatsConfig::default();
        stats.breaker_threshold = 1;
        let builder = LoadBalancer::builder()
            .retry(RetryPolicy::none())
            .stats(stats)
            .outlier_detection(Default::default());
        let lb = config
            .apply("svc", builder)
            .unwrap()
            .build(http_client())
            .unwrap();
        assert!(lb.ready_service("svc").await);
        let t = tally(&lb, "http://svc/x", 8).await;
        let e: usize = t
            .iter()
            .filter(|(k, _)| k.starts_with("error"))
            .map(|(_, v)| *v)
            .sum();
        errors.push((file_key, e, t));
    }
    assert_eq!(errors[0].1, errors[1].1, "{errors:#?}");
}

/// Code makes no retries; the file sets only a Spring retry key documented
/// as "recognized, not yet applied". Now: still one attempt.
#[tokio::test]
async fn a_not_applied_retry_key_keeps_the_code_policy() {
    let mut got = Vec::new();
    for key in [
        "spring.cloud.loadbalancer.retry.backoff.jitter=0.2",
        "spring.cloud.loadbalancer.retry.avoid-previous-instance=true",
        "spring.cloud.loadbalancer.retry.retry-on-all-exceptions=true",
        "spring.cloud.loadbalancer.retry.retryable-exceptions=java.io.IOException",
    ] {
        let mut bs = Vec::new();
        for i in 0..3 {
            bs.push(
                Backend::start_with(&format!("b{i}"), Behavior::Status(503))
                    .await
                    .unwrap(),
            );
        }
        let list: Vec<String> = bs
            .iter()
            .map(|b| format!("127.0.0.1:{}", b.port()))
            .collect();
        let config = RibbonConfig::from_properties_str(&format!(
            "svc.ribbon.listOfServers={}\n{key}\n",
            list.join(",")
        ))
        .unwrap();
        let lb = config
            .apply("svc", LoadBalancer::builder().retry(RetryPolicy::none()))
            .unwrap()
            .build(http_client())
            .unwrap();
        assert!(lb.ready_service("svc").await);
        assert_eq!(get(&lb).await, "503");
        let hits: usize = bs.iter().map(Backend::hits).sum();
        got.push((key, hits));
    }
    assert!(got.iter().all(|(_, h)| *h == 1), "{got:?}");
}

/// The code's rule prefers zone z1 (12 of 12 to `a`); the file sets no
/// rule key, only a hint header name / a slow start window / a sticky
/// cookie configuration. Now: the code's rule still picks (wrapped).
#[tokio::test]
async fn policy_keys_alone_keep_the_code_rule() {
    let (a, b, c) = (
        Backend::start("a").await.unwrap(),
        Backend::start("b").await.unwrap(),
        Backend::start("c").await.unwrap(),
    );
    let mut out = Vec::new();
    for key in [
        "",
        "spring.cloud.loadbalancer.hint-header-name=X-Hint\n",
        "svc.ribbon.SlowStartWindow=1\n",
        "spring.cloud.loadbalancer.configurations=request-based-sticky-session\n",
    ] {
        let props = simple_discovery("svc", &[(&a, "z1"), (&b, "z2"), (&c, "z3")]) + key;
        let config = RibbonConfig::from_properties_str(&props).unwrap();
        let builder = LoadBalancer::builder()
            .rule(|| ZoneAvoidance::new(RoundRobin::new()).preferred_zone(Some("z1")));
        let lb = config
            .apply("svc", builder)
            .unwrap()
            .build(http_client())
            .unwrap();
        assert!(lb.ready_service("svc").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = tally(&lb, "http://svc/x", 12).await;
        out.push((key, t));
    }
    for (key, t) in &out {
        assert_eq!(t.get("a"), Some(&12), "{key}: {out:?}");
    }
}
