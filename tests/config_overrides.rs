//! Configuration keys against what they override: a client's own keys over
//! the global ones (Spring binds a client's keys over the global ones), a
//! file's keys over a builder set in code (`RibbonConfig::apply`: keys not
//! set leave the builder's setting as it was), a YAML merge key read as
//! SnakeYAML reads it, and `configurations: zone-preference` beside a
//! Ribbon rule key. Each through a real balancer over loopback backends,
//! counting the attempts the backends received. Helper 198 found each of
//! these wrong (stop 58).

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use support::backend::{Backend, Behavior};
use support::{HttpClient, http_client, simple_discovery, tally};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::config::RibbonConfig;
use tower_ribbon::retry::RetryPolicy;

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
    let ports: Vec<String> = bs
        .iter()
        .map(|b| format!("127.0.0.1:{}", b.port()))
        .collect();
    ports.join(",")
}

fn hits(bs: &[Backend]) -> usize {
    bs.iter().map(Backend::hits).sum()
}

/// The status of one GET to `svc`, or the error's text.
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

/// A client's own `retry.enabled=true` undoes the global
/// `retry.enabled=false`; its counts not set are the defaults (next
/// server 1), so a GET answered 503 by three instances is tried twice.
/// Before: once (the global `false` read as zero retries).
#[tokio::test]
async fn a_clients_retry_enabled_true_beats_the_global_false() {
    let bs = backends(3, Behavior::Status(503)).await;
    let config = RibbonConfig::from_properties_str(&format!(
        "svc.ribbon.listOfServers={}\n\
         spring.cloud.loadbalancer.retry.enabled=false\n\
         spring.cloud.loadbalancer.clients.svc.retry.enabled=true\n",
        list(&bs)
    ))
    .unwrap();
    let retry = config.client("svc").retry_policy();
    assert_eq!((retry.get_max_same(), retry.get_max_next()), (0, 1));
    let lb = config
        .builder_for("svc")
        .unwrap()
        .build(http_client())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    assert_eq!(get(&lb).await, "503");
    assert_eq!(hits(&bs), 2);
    // The global `false` alone still gives one attempt, and a client's own
    // `false` under a global `true` too.
    for props in [
        "spring.cloud.loadbalancer.retry.enabled=false\n",
        "spring.cloud.loadbalancer.retry.enabled=true\n\
         spring.cloud.loadbalancer.clients.svc.retry.enabled=false\n",
    ] {
        let config = RibbonConfig::from_properties_str(props).unwrap();
        let retry = config.client("svc").retry_policy();
        assert_eq!(
            (retry.get_max_same(), retry.get_max_next()),
            (0, 0),
            "{props}"
        );
    }
}

/// A file setting only `ReadTimeout` leaves the retry policy set in code
/// as it was: `RetryPolicy::none()` makes one attempt of a GET answered 503
/// (before: two, the file's `ReadTimeout` replaced the whole policy with
/// the default one).
#[tokio::test]
async fn read_timeout_alone_keeps_the_retry_policy_set_in_code() {
    let bs = backends(3, Behavior::Status(503)).await;
    let config = RibbonConfig::from_properties_str(&format!(
        "svc.ribbon.listOfServers={}\nsvc.ribbon.ReadTimeout=3000\n",
        list(&bs)
    ))
    .unwrap();
    let builder = LoadBalancer::builder().retry(RetryPolicy::none());
    let builder = config.apply("svc", builder).unwrap();
    assert_eq!(builder.get_read_timeout(), Some(Duration::from_secs(3)));
    let lb = builder.build(http_client()).unwrap();
    assert!(lb.ready_service("svc").await);
    assert_eq!(get(&lb).await, "503");
    assert_eq!(hits(&bs), 1);
}

/// A per-try timeout set in code (200 ms) wins over the file's
/// `ReadTimeout` (3 s), as the README says: a backend answering after
/// 1.5 s is cut off with a timeout (before: its 200 after 1.5 s).
#[tokio::test]
async fn a_per_try_timeout_set_in_code_wins_over_read_timeout() {
    let slow = Backend::start_with("slow", Behavior::Slow(Duration::from_millis(1500)))
        .await
        .unwrap();
    let config = RibbonConfig::from_properties_str(&format!(
        "svc.ribbon.listOfServers=127.0.0.1:{}\nsvc.ribbon.ReadTimeout=3000\n",
        slow.port()
    ))
    .unwrap();
    let builder = LoadBalancer::builder()
        .retry(RetryPolicy::none().per_try_timeout(Duration::from_millis(200)));
    let lb = config
        .apply("svc", builder)
        .unwrap()
        .build(http_client())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let answer = get(&lb).await;
    assert!(
        answer.contains("timeout") || answer.contains("timed out"),
        "{answer}"
    );
}

/// An instance cookie set in code stays when the file has no
/// sticky-session key (before: the file's unset key turned it off for the
/// service: no `Cookie` at all).
#[tokio::test]
async fn a_file_without_cookie_keys_keeps_the_instance_cookie_set_in_code() {
    let a = Backend::start("a").await.unwrap();
    let config = RibbonConfig::from_properties_str(&format!(
        "svc.ribbon.listOfServers=127.0.0.1:{}\n",
        a.port()
    ))
    .unwrap();
    let builder = LoadBalancer::builder().instance_cookie(Some("sc-lb-instance-id"));
    let lb = config
        .apply("svc", builder)
        .unwrap()
        .build(http_client())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    assert_eq!(get(&lb).await, "200");
    let cookies = a.cookies();
    assert_eq!(cookies.len(), 1);
    assert_eq!(cookies[0].len(), 1, "{cookies:?}");
    assert!(
        cookies[0][0].starts_with("sc-lb-instance-id="),
        "{cookies:?}"
    );
    // The file's own `false` still turns it off.
    let b = Backend::start("b").await.unwrap();
    let config = RibbonConfig::from_properties_str(&format!(
        "svc.ribbon.listOfServers=127.0.0.1:{}\n\
         spring.cloud.loadbalancer.sticky-session.add-service-instance-cookie=false\n",
        b.port()
    ))
    .unwrap();
    let builder = LoadBalancer::builder().instance_cookie(Some("sc-lb-instance-id"));
    let lb = config
        .apply("svc", builder)
        .unwrap()
        .build(http_client())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    assert_eq!(get(&lb).await, "200");
    assert_eq!(b.cookies(), vec![Vec::<String>::new()]);
}

/// SnakeYAML's merge is shallow: `svc`'s own `ribbon:` map replaces the
/// merged `ribbon:` map as a whole, so the retry counts are unset (0 and
/// 1) and a GET answered 503 is tried twice (before: the maps were merged
/// into, 2 and 2, nine attempts).
#[tokio::test]
async fn a_yaml_merge_key_is_shallow_as_in_snakeyaml() {
    let bs = backends(3, Behavior::Status(503)).await;
    let yaml = format!(
        "x-defaults: &d\n  ribbon:\n    MaxAutoRetries: 2\n    MaxAutoRetriesNextServer: 2\n\
         svc:\n  <<: *d\n  ribbon:\n    listOfServers: {}\n",
        list(&bs)
    );
    let config = RibbonConfig::from_yaml_str(&yaml).unwrap();
    let c = config.client("svc");
    assert_eq!(
        (c.max_auto_retries, c.max_auto_retries_next_server),
        (None, None)
    );
    let lb = config
        .builder_for("svc")
        .unwrap()
        .build(http_client())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    assert_eq!(get(&lb).await, "503");
    assert_eq!(hits(&bs), 2);
    // A key the map does not have is still merged in, also from a merged
    // map's own merge.
    let yaml = "base: &base\n  ConnectTimeout: 700\nmid: &mid\n  <<: *base\n  ReadTimeout: 900\n\
                svc:\n  ribbon:\n    <<: *mid\n    listOfServers: 127.0.0.1:1\n";
    let c = RibbonConfig::from_yaml_str(yaml).unwrap().client("svc");
    assert_eq!(c.read_timeout, Some(Duration::from_millis(900)));
    assert_eq!(c.connect_timeout, Some(Duration::from_millis(700)));
}

/// `<<: [*a, *b]`: the first map listed gives a key both hold (YAML's merge
/// key type; SnakeYAML). Before: the last. The map's own key beats both.
#[test]
fn of_several_merged_maps_the_first_gives_a_key() {
    let yaml = "a: &a\n  ReadTimeout: 1000\nb: &b\n  ReadTimeout: 9000\n  ConnectTimeout: 800\n\
                svc:\n  ribbon:\n    <<: [*a, *b]\n    listOfServers: 127.0.0.1:1\n";
    let c = RibbonConfig::from_yaml_str(yaml).unwrap().client("svc");
    assert_eq!(c.read_timeout, Some(Duration::from_millis(1000)));
    assert_eq!(c.connect_timeout, Some(Duration::from_millis(800)));
    let yaml = "a: &a\n  ReadTimeout: 1000\n\
                svc:\n  ribbon:\n    ReadTimeout: 5\n    <<: [*a]\n    listOfServers: 127.0.0.1:1\n";
    let c = RibbonConfig::from_yaml_str(yaml).unwrap().client("svc");
    assert_eq!(c.read_timeout, Some(Duration::from_millis(5)));
}

/// Merges of merges are bounded: 30 levels each merging the level below
/// twice (2^30 pairs if expanded) fail with a typed error, fast.
#[test]
fn merges_of_merges_are_bounded() {
    let mut yaml = String::from("l0: &l0\n  k: v\n");
    for i in 1..30 {
        yaml.push_str(&format!(
            "l{i}: &l{i}\n  <<: [*l{p}, *l{p}]\n  k{i}: v\n",
            p = i - 1
        ));
    }
    yaml.push_str("svc:\n  ribbon:\n    <<: *l29\n    listOfServers: 127.0.0.1:1\n");
    let started = std::time::Instant::now();
    let answer = RibbonConfig::from_yaml_str(&yaml);
    assert!(answer.is_err(), "{:?}", answer.map(|c| c.client("svc")));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// `configurations: zone-preference` keeps requests in the zone beside a
/// Ribbon rule key too (Spring's zone preference is a list filter, under
/// any rule): 12 of 12 to the z1 instance, as without the rule key
/// (before: 4/4/4, the preference dropped without a warning).
#[tokio::test]
async fn zone_preference_holds_beside_a_ribbon_rule_key() {
    let (a, b, c) = (
        Backend::start("a").await.unwrap(),
        Backend::start("b").await.unwrap(),
        Backend::start("c").await.unwrap(),
    );
    for rule in [
        "",
        "ribbon.NFLoadBalancerRuleClassName=com.netflix.loadbalancer.RoundRobinRule\n",
    ] {
        let props = simple_discovery("svc", &[(&a, "z1"), (&b, "z2"), (&c, "z3")])
            + rule
            + "spring.cloud.loadbalancer.configurations=zone-preference\n\
               spring.cloud.loadbalancer.zone=z1\n";
        let config = RibbonConfig::from_properties_str(&props).unwrap();
        let lb = config
            .builder_for("svc")
            .unwrap()
            .build(http_client())
            .unwrap();
        assert!(lb.ready_service("svc").await);
        let t = tally(&lb, "http://svc/x", 12).await;
        assert_eq!(t.get("a"), Some(&12), "{rule}: {t:?}");
        assert_eq!(t.len(), 1, "{rule}: {t:?}");
    }
}

/// A configured health-check interval brings a jitter to scale: a tenth of
/// it, at most 1 s (before: the fixed 1 s, so `interval=50ms` probed every
/// 50 ms to 1 050 ms, 3 and 7 probes in 2 s where about 40 were asked for).
#[test]
fn a_configured_probe_interval_has_a_jitter_to_scale() {
    for (props, interval, jitter) in [
        (
            "spring.cloud.loadbalancer.configurations=health-check\n\
             spring.cloud.loadbalancer.health-check.interval=50ms\n",
            50,
            5,
        ),
        (
            "svc.ribbon.HealthCheckPath=/h\nsvc.ribbon.NFLoadBalancerPingInterval=2\n",
            2_000,
            200,
        ),
        ("svc.ribbon.HealthCheckPath=/h\n", 30_000, 1_000),
    ] {
        let config = RibbonConfig::from_properties_str(&format!(
            "svc.ribbon.listOfServers=127.0.0.1:1\n{props}"
        ))
        .unwrap();
        let check = config.client("svc").health_check().unwrap();
        assert_eq!(
            (check.interval, check.interval_jitter),
            (
                Duration::from_millis(interval),
                Duration::from_millis(jitter)
            ),
            "{props}"
        );
    }
}
