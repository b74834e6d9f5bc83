//! `tower_ribbon::config` reading Spring Cloud LoadBalancer's keys from a
//! real-looking Spring `application.yml` (tests/data/config), checking
//! every key's effect on the settings the balancer is built from.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tower_ribbon::config::spring_loadbalancer::LoadBalancerConfiguration;
use tower_ribbon::config::{ConfigErrorKind, RibbonConfig};
use tower_ribbon::health::ActiveHealthCheck;
use tower_ribbon::instance::{Endpoint, Instance};
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::{PickContext, Rule};
use tower_ribbon::snapshot::Snapshot;

/// A snapshot of instances `(id, zone, metadata hint)` on ports 9001, ….
fn snapshot(instances: &[(&str, Option<&str>, Option<&str>)]) -> Arc<Snapshot> {
    let endpoints = (instances.iter().zip(9001..))
        .map(|((id, zone, hint), port)| {
            let mut i = Instance::new("svc", "127.0.0.1", port)
                .unwrap()
                .with_id(*id);
            if let Some(z) = zone {
                i = i.with_zone(*z);
            }
            if let Some(h) = hint {
                i = i.with_metadata("hint", *h);
            }
            Endpoint::new(i)
        })
        .collect();
    Arc::new(Snapshot::new("svc", endpoints, 1))
}

/// A snapshot of instances `(id, metadata weight)`.
fn snapshot_weights(instances: &[(&str, &str)]) -> Arc<Snapshot> {
    let endpoints = (instances.iter().zip(9001..))
        .map(|((id, w), port)| {
            let i = Instance::new("svc", "127.0.0.1", port)
                .unwrap()
                .with_id(*id);
            Endpoint::new(i.with_metadata("weight", *w))
        })
        .collect();
    Arc::new(Snapshot::new("svc", endpoints, 1))
}

/// The instance ids of `n` picks of `rule` over `list`, each request with
/// `headers`.
fn ids(rule: &dyn Rule, list: &Arc<Snapshot>, headers: &[(&str, &str)], n: usize) -> Vec<String> {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let picker = rule.build(list);
    (0..n)
        .map(|_| {
            let ctx = PickContext::new().with_headers(&h);
            picker.pick(&ctx).unwrap().instance().id().to_owned()
        })
        .collect()
}

fn application_yml() -> RibbonConfig {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config/application.yml");
    RibbonConfig::from_file(path).expect("application.yml")
}

/// The settings of a client the file does not name: the global keys.
#[test]
fn global_keys_take_effect() {
    let config = application_yml();
    let names: Vec<&str> = config.clients().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "payment-service",
            "inventory-service",
            "catalog-service",
            "session-service"
        ]
    );
    let c = config.client("shipping-service");
    let lb = &c.load_balancer;
    // configurations: zone-preference + zone: the rule prefers zone-a
    // (spring.cloud.loadbalancer.zone wins over Eureka's metadata zone).
    assert_eq!(
        lb.configuration,
        Some(LoadBalancerConfiguration::ZonePreference)
    );
    assert_eq!(lb.zone.as_deref(), Some("zone-a"));
    assert_eq!(c.zone.as_deref(), Some("zone-a"));
    assert_eq!(c.preferred_zone(), Some("zone-a"));
    // hint.default and hint-header-name: hint routing wraps zone avoidance.
    assert_eq!(lb.hint.as_deref(), Some("canary"));
    assert_eq!(lb.hint_header_name.as_deref(), Some("X-Route-Hint"));
    assert_eq!(c.make_rule().name(), "hint_based");
    // Their effect: zone-a preferred; the `canary` instances (hint.default)
    // preferred over the zone; the header's hint over both.
    let list = snapshot(&[
        ("a1", Some("zone-a"), None),
        ("a2", Some("zone-a"), None),
        ("b-canary", Some("zone-b"), Some("canary")),
        ("b-blue", Some("zone-b"), Some("blue")),
    ]);
    let rule = c.make_rule();
    assert_eq!(ids(&*rule, &list, &[], 4), ["b-canary"; 4]);
    let header = [("x-route-hint", "blue")];
    assert_eq!(ids(&*rule, &list, &header, 3), ["b-blue"; 3]);
    // The default header name is no longer read.
    let default_header = [("x-sc-lb-hint", "blue")];
    assert_eq!(ids(&*rule, &list, &default_header, 2), ["b-canary"; 2]);
    // No hinted instance: the zone decides.
    let plain = snapshot(&[("a1", Some("zone-a"), None), ("b1", Some("zone-b"), None)]);
    assert_eq!(ids(&*rule, &plain, &[], 3), ["a1"; 3]);
    // health-check.*: read; no active check outside `health-check`.
    let hc = &lb.health_check;
    assert_eq!(hc.initial_delay, Some(Duration::from_secs(1)));
    assert_eq!(hc.interval, Some(Duration::from_secs(10)));
    assert_eq!(hc.path.as_deref(), Some("/actuator/health"));
    assert_eq!(hc.port, Some(8081));
    assert_eq!(hc.refetch_instances, Some(true));
    assert_eq!(hc.refetch_instances_interval, Some(Duration::from_secs(30)));
    assert_eq!(hc.repeat_health_check, Some(false));
    assert_eq!(hc.update_results_list, Some(false));
    assert_eq!(c.health_check(), None);
    // retry.*: the retry policy.
    let r = &lb.retry;
    assert_eq!(r.enabled, Some(true));
    assert_eq!(r.max_retries_on_same_service_instance, Some(1));
    assert_eq!(r.max_retries_on_next_service_instance, Some(2));
    assert_eq!(r.retry_on_all_operations, Some(false));
    assert_eq!(r.retry_on_all_exceptions, Some(false));
    assert_eq!(r.retryable_status_codes, Some(vec![500, 503]));
    assert_eq!(
        r.retryable_exceptions,
        Some(vec![
            "java.io.IOException".to_owned(),
            "java.util.concurrent.TimeoutException".to_owned()
        ])
    );
    assert_eq!(r.avoid_previous_instance, Some(true));
    assert_eq!(r.backoff.enabled, Some(true));
    assert_eq!(r.backoff.min_backoff, Some(Duration::from_millis(50)));
    assert_eq!(r.backoff.max_backoff, Some(Duration::from_secs(2)));
    assert_eq!(r.backoff.jitter, Some(0.25));
    assert_eq!(
        c.retry_policy(),
        RetryPolicy::default()
            .max_same(1)
            .max_next(2)
            .retry_on_all_operations(false)
            .retryable_statuses([500, 503])
            .backoff(Duration::from_millis(50), Duration::from_secs(2))
    );
    // sticky-session.*, subset.*: kept, typed.
    assert_eq!(
        lb.sticky_session.instance_id_cookie_name.as_deref(),
        Some("lb-instance")
    );
    assert_eq!(lb.sticky_session.add_service_instance_cookie, Some(true));
    assert_eq!(lb.subset.size, Some(20));
    assert_eq!(
        lb.subset.instance_id.as_deref(),
        Some("order-service-1"),
        "placeholders of Spring's identity keys are resolved"
    );
    // cache.*: ttl is the refresh interval; service-discovery.timeout bounds a fetch.
    assert_eq!(lb.cache.enabled, Some(true));
    assert_eq!(lb.cache.ttl, Some(Duration::from_secs(15)));
    assert_eq!(lb.cache.capacity, Some(512));
    assert_eq!(lb.service_discovery_timeout, Some(Duration::from_secs(5)));
    assert_eq!(c.refresh_config().interval, Duration::from_secs(15));
    assert_eq!(
        format!("{:?}", c.refresh_config()),
        format!("{:?}", {
            let mut c = tower_ribbon::discovery::RefreshConfig::default();
            c.interval = Duration::from_secs(15);
            c.fetch_timeout = Duration::from_secs(5);
            c
        })
    );
    // stats.micrometer.enabled: kept.
    assert_eq!(lb.micrometer_stats, Some(true));
    // Eureka keys of the same file: the source.
    assert_eq!(
        config.eureka_server_urls(),
        ["http://127.0.0.1:8761/eureka/"]
    );
}

#[test]
fn per_client_keys_override_global_ones() {
    let config = application_yml();
    // payment-service: random, its own retry and cache, the global rest.
    let pay = config.client("Payment-Service");
    assert_eq!(
        pay.load_balancer.configuration,
        Some(LoadBalancerConfiguration::Random)
    );
    assert_eq!(pay.preferred_zone(), None);
    assert_eq!(pay.make_rule().name(), "hint_based");
    assert_eq!(
        pay.load_balancer.hint.as_deref(),
        Some("stable"),
        "hint.<serviceId>"
    );
    // Random among the `stable` instances, never a `canary` one.
    let list = snapshot(&[
        ("s1", None, Some("stable")),
        ("c1", None, Some("canary")),
        ("s2", None, Some("stable")),
    ]);
    let mut seen = ids(&*pay.make_rule(), &list, &[], 200);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, ["s1", "s2"]);
    assert_eq!(
        pay.retry_policy(),
        RetryPolicy::default()
            .max_same(1)
            .max_next(0)
            .retryable_statuses([502])
            .backoff(Duration::from_millis(50), Duration::from_secs(2))
    );
    assert_eq!(pay.refresh_config().interval, Duration::from_secs(5));
    // inventory-service: active checks on its own path every 2 s.
    let inv = config.client("inventory-service");
    assert_eq!(
        inv.make_rule().name(),
        "hint_based",
        "hint.default is global"
    );
    let mut expected = ActiveHealthCheck::new("/health/ready");
    expected.interval = Duration::from_secs(2);
    expected.timeout = Duration::from_secs(2);
    expected.interval_jitter = Duration::from_millis(200);
    assert_eq!(inv.health_check(), Some(expected));
    // catalog-service: weighted by instance metadata `weight`, read as
    // SCLB reads it (0 or a bad value is 1).
    let catalog = config.client("catalog-service").make_rule();
    let list = snapshot_weights(&[("w3", "3"), ("w0", "0"), ("bad", "x")]);
    let picks = ids(&*catalog, &list, &[], 500);
    let share = |id: &str| picks.iter().filter(|p| *p == id).count();
    assert_eq!((share("w3"), share("w0"), share("bad")), (300, 100, 100));
    // session-service: sticky sessions on its own cookie name.
    let session = config.client("session-service");
    assert_eq!(
        session.load_balancer.configuration,
        Some(LoadBalancerConfiguration::RequestBasedStickySession)
    );
    assert_eq!(session.make_rule().name(), "sticky_session");
    let list = snapshot(&[
        ("i-1", None, None),
        ("i-2", None, None),
        ("i-3", None, None),
    ]);
    let cookie = [("cookie", "theme=dark; session-lb=i-2")];
    assert_eq!(ids(&*session.make_rule(), &list, &cookie, 4), ["i-2"; 4]);
    let other = [("cookie", "lb-instance=i-2")];
    let mut seen = ids(&*session.make_rule(), &list, &other, 3);
    seen.sort_unstable();
    assert_eq!(
        seen,
        ["i-1", "i-2", "i-3"],
        "the global cookie name is overridden"
    );
    let sticky = &session.load_balancer.sticky_session;
    assert_eq!(
        sticky.instance_id_cookie_name.as_deref(),
        Some("session-lb")
    );
    assert_eq!(sticky.add_service_instance_cookie, Some(true), "inherited");
}

#[test]
fn policies_not_yet_applied_are_reported() {
    let config = application_yml();
    let global = |k: &str, why: &str| format!("`spring.cloud.loadbalancer.{k}`: {why}");
    let later = "recognized, not yet applied";
    let expected = [
        global("health-check.initial-delay", later),
        global("health-check.port", later),
        global("health-check.repeat-health-check", later),
        global("health-check.refetch-instances", later),
        global("health-check.refetch-instances-interval", later),
        global("health-check.update-results-list", later),
        global(
            "retry.retryable-exceptions",
            "recognized, not applied (Java exception classes)",
        ),
        global(
            "retry.backoff.jitter",
            "recognized, not yet applied (the backoff is fully jittered)",
        ),
        global("cache.capacity", "recognized, not applied"),
    ];
    assert_eq!(config.warnings(), expected);
}

#[test]
fn a_spring_application_yml_without_balancer_keys_loads_unchanged() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config/application.yml"),
    )
    .unwrap();
    // Drop the `spring.cloud` block: what is left is an ordinary service.
    let start = text.find("  cloud:\n").unwrap();
    let end = text.find("\neureka:").unwrap();
    let plain = format!("{}{}", &text[..start], &text[end..]);
    let config = RibbonConfig::from_yaml_str(&plain).unwrap();
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    assert!(config.clients().is_empty());
    let c = config.client("any");
    assert_eq!(c.zone.as_deref(), Some("zone-b"), "Eureka's metadata zone");
    assert_eq!(c.make_rule().name(), "round_robin");
    assert_eq!(c.retry_policy(), RetryPolicy::default());
}

/// The file's clients are Eureka clients, so this needs the Eureka source.
#[cfg(feature = "eureka")]
#[tokio::test]
async fn each_client_builds_a_balancer() {
    let config = application_yml();
    for name in [
        "payment-service",
        "inventory-service",
        "catalog-service",
        "session-service",
    ] {
        let lb = config
            .builder_for(name)
            .unwrap()
            .build(tower::service_fn(|_: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            }))
            .unwrap();
        assert_eq!(lb.services(), [name]);
    }
    // One balancer for all of them cannot hold their different policies.
    let err = config.builder().unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Conflicting);
    assert_eq!(err.key(), Some("NFLoadBalancerRuleClassName"));
    assert_eq!(
        (err.value(), err.other_value()),
        (Some("random"), Some("round_robin"))
    );
}

#[test]
fn properties_and_relaxed_names_read_the_same() {
    let config = RibbonConfig::from_properties_str(
        "spring.cloud.loadbalancer.retry.maxRetriesOnNextServiceInstance=3\n\
         spring.cloud.loadbalancer.cache.TTL=PT20S\n\
         spring.cloud.loadbalancer.clients.users.retry.max_retries_on_same_service_instance=2\n\
         spring.cloud.loadbalancer.clients.users.configurations=RANDOM\n\
         spring.cloud.loadbalancer.clients[v1.orders].configurations=weighted\n",
    )
    .unwrap();
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    let users = config.client("users");
    assert_eq!(
        users.retry_policy(),
        RetryPolicy::default().max_same(2).max_next(3)
    );
    assert_eq!(users.refresh_config().interval, Duration::from_secs(20));
    assert_eq!(users.make_rule().name(), "random");
    // Spring's bracket form for a client name holding dots.
    let orders = config.client("v1.orders");
    assert_eq!(orders.make_rule().name(), "weighted_round_robin");
    // eager-load.clients declares clients, which one balancer can serve.
    let eager = RibbonConfig::from_yaml_str(
        "spring:\n  cloud:\n    loadbalancer:\n      eager-load:\n        clients: [users, orders]\n\
         eureka:\n  client:\n    service-url:\n      defaultZone: http://127.0.0.1:8761/eureka\n",
    )
    .unwrap();
    assert!(eager.warnings().is_empty(), "{:?}", eager.warnings());
    let names: Vec<&str> = eager.clients().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["users", "orders"]);
    // Ribbon's key wins over its Spring counterpart.
    let both = RibbonConfig::from_properties_str(
        "spring.cloud.loadbalancer.retry.max-retries-on-next-service-instance=3\n\
         users.ribbon.MaxAutoRetriesNextServer=0\n\
         spring.cloud.loadbalancer.retry.enabled=false\n\
         orders.ribbon.listOfServers=127.0.0.1:1\n",
    )
    .unwrap();
    assert_eq!(
        both.client("users").retry_policy(),
        RetryPolicy::default().max_same(0).max_next(0)
    );
    // retry.enabled=false: no retries.
    assert_eq!(both.client("orders").retry_policy(), RetryPolicy::none());
}

#[test]
fn unknown_keys_name_the_nearest_known_key() {
    let config = RibbonConfig::from_properties_str(
        "spring.cloud.loadbalancer.retry.max-retries-on-next-instance=1\n\
         spring.cloud.loadbalancer.cache.tll=5s\n\
         spring.cloud.loadbalancer.clients.users.healthcheck.intervall=5s\n\
         spring.cloud.loadbalancer.hints.users=x\n\
         users.ribbon.MaxAutoRetry=1\n\
         ribbon.ReadTimout=10\n\
         spring.cloud.gateway.routes[0].id=ignored\n",
    )
    .unwrap();
    let spring = |k: &str, near: &str| {
        format!(
            "unknown Spring Cloud LoadBalancer key `spring.cloud.loadbalancer.{k}` ignored \
             (did you mean `spring.cloud.loadbalancer.{near}`?)"
        )
    };
    assert_eq!(
        config.warnings(),
        [
            spring(
                "retry.max-retries-on-next-instance",
                "retry.max-retries-on-next-service-instance"
            ),
            spring("cache.tll", "cache.ttl"),
            spring("clients.users.healthcheck.intervall", "health-check.interval"),
            spring("hints.users", "hint.<serviceId>"),
            "unknown Ribbon key `users.ribbon.MaxAutoRetry` ignored (did you mean `MaxAutoRetries`?)"
                .to_owned(),
            "unknown Ribbon key `ribbon.ReadTimout` ignored (did you mean `ReadTimeout`?)"
                .to_owned(),
        ]
    );
}

#[test]
fn bad_spring_values_are_typed_errors() {
    let err = |text: &str| RibbonConfig::from_properties_str(text).unwrap_err();
    let e = err("spring.cloud.loadbalancer.retry.max-retries-on-same-service-instance=101\n");
    assert_eq!(e.kind(), ConfigErrorKind::OutOfRange);
    assert_eq!(e.allowed(), Some(0..=100));
    let e = err("spring.cloud.loadbalancer.clients.a.cache.ttl=0s\n");
    assert_eq!((e.value(), e.allowed()), (Some("0s"), Some(1..=86_400_000)));
    assert!(e.to_string().contains("must be at least 1"), "{e}");
    assert_eq!(
        (e.kind(), e.key()),
        (
            ConfigErrorKind::OutOfRange,
            Some("spring.cloud.loadbalancer.clients.a.cache.ttl")
        )
    );
    // A least backoff above the greatest is refused when the balancer is
    // built (the two may come from different scopes), not raised silently.
    let config = RibbonConfig::from_properties_str(
        "spring.cloud.loadbalancer.retry.backoff.min-backoff=2s\n\
         spring.cloud.loadbalancer.clients.a.retry.backoff.max-backoff=1s\n\
         a.ribbon.listOfServers=127.0.0.1:1\n",
    )
    .unwrap();
    let e = config.builder_for("a").unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::OutOfRange);
    assert_eq!(
        (e.key(), e.value(), e.allowed()),
        (
            Some("spring.cloud.loadbalancer.clients.a.retry.backoff.max-backoff"),
            Some("1000"),
            Some(2_000..=86_400_000)
        )
    );
    for (key, value) in [
        ("health-check.interval", "5ms"),
        ("configurations", "fastest"),
        ("cache.ttl", "soon"),
        ("retry.backoff.jitter", "1.5"),
        ("hint-header-name", "X Hint"),
        ("retry.retryable-status-codes", "600"),
        ("health-check.port", "70000"),
        ("retry.enabled", "maybe"),
    ] {
        let e = err(&format!("spring.cloud.loadbalancer.{key}={value}\n"));
        assert!(
            matches!(
                e.kind(),
                ConfigErrorKind::InvalidValue | ConfigErrorKind::OutOfRange
            ),
            "{key}: {e}"
        );
        assert_eq!(
            e.key(),
            Some(format!("spring.cloud.loadbalancer.{key}").as_str()),
            "{e}"
        );
    }
}

/// The worked migration of docs/spring-cloud-users.md reads unchanged and
/// every key in it takes effect.
/// Extreme policy values: every one is a typed error naming its key, none
/// is clamped or wraps.
#[test]
fn extreme_policy_values_are_refused_by_key() {
    let err = |text: &str| RibbonConfig::from_properties_str(text).unwrap_err();
    for (key, value) in [
        ("spring.cloud.loadbalancer.subset.size", "0"),
        ("spring.cloud.loadbalancer.subset.size", "-1"),
        ("spring.cloud.loadbalancer.subset.size", "1000001"),
        (
            "spring.cloud.loadbalancer.subset.size",
            "99999999999999999999",
        ),
        ("a.ribbon.SlowStartWindow", "-1"),
        ("a.ribbon.SlowStartWindow", "86400001"),
        ("a.ribbon.SlowStartWindow", "18446744073709551615"),
        ("a.ribbon.SlowStartAggression", "0"),
        ("a.ribbon.SlowStartAggression", "-1"),
        ("a.ribbon.SlowStartAggression", "NaN"),
        ("a.ribbon.SlowStartAggression", "inf"),
        ("a.ribbon.SlowStartAggression", "100.5"),
        ("a.ribbon.SlowStartMinWeightPercent", "-0.1"),
        ("a.ribbon.SlowStartMinWeightPercent", "100.5"),
        ("a.ribbon.SlowStartMinWeightPercent", "NaN"),
    ] {
        let e = err(&format!(
            "a.ribbon.listOfServers=127.0.0.1:1\n{key}={value}\n"
        ));
        assert!(
            matches!(
                e.kind(),
                ConfigErrorKind::InvalidValue | ConfigErrorKind::OutOfRange
            ),
            "{key}={value}: {e}"
        );
        assert_eq!(e.key(), Some(key), "{key}={value}: {e}");
    }
}

#[test]
fn the_spring_users_page_migration_reads_as_documented() {
    let config = tower_ribbon::config::RibbonConfig::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/config/migration.yml"
    ))
    .unwrap();
    let user = config.client("user-service");
    assert_eq!(user.make_rule().name(), "zone_avoidance");
    assert_eq!(user.preferred_zone(), Some("zone-a"));
    assert_eq!(user.refresh_config().interval, Duration::from_secs(10));
    let retry = user.retry_policy();
    assert_eq!((retry.get_max_same(), retry.get_max_next()), (0, 2));
    assert!(retry.is_retryable_status(503) && !retry.is_retryable_status(500));
    // `ReadTimeout` is the builder's per-try bound, not the policy's.
    assert_eq!(retry.get_per_try_timeout(), None);
    assert_eq!(user.read_timeout, Some(Duration::from_secs(3)));
    let stats = user.stats_config();
    assert_eq!(stats.breaker_threshold, 5);
    assert_eq!(stats.breaker_base, Duration::from_secs(5));
    assert_eq!(stats.breaker_max, Duration::from_secs(60));
    assert_eq!(
        config.eureka_server_urls(),
        ["http://127.0.0.1:8761/eureka/".to_owned()]
    );
}

#[path = "support/backend.rs"]
mod backend;

/// A second `application.yml`: the policy keys not in the first one, per
/// client, and this crate's slow start keys in the Ribbon namespace.
const POLICIES_YML: &str = r"
server:
  port: 9090
spring:
  application:
    name: edge
  cloud:
    loadbalancer:
      hint:
        users: gold
      subset:
        size: 2
      clients:
        users:
          configurations: same-instance-preference
        orders:
          configurations: subset
          subset:
            instance-id: client-1
        fleet:
          configurations: subset
        carts:
          configurations: request-based-sticky-session
ribbon:
  SlowStartWindow: 10000
  SlowStartAggression: 2.0
  SlowStartMinWeightPercent: 20
carts:
  ribbon:
    listOfServers: 127.0.0.1:1
    SlowStartWindow: 0
";

/// Seven instances `i0`…`i6`.
fn seven() -> Arc<Snapshot> {
    let ids = ["i0", "i1", "i2", "i3", "i4", "i5", "i6"];
    snapshot(&ids.map(|id| (id, None, None)))
}

fn distinct(mut ids: Vec<String>) -> Vec<String> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[test]
fn policy_keys_take_effect() {
    let config = RibbonConfig::from_yaml_str(POLICIES_YML).unwrap();
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    // users: same-instance preference inside hint routing (hint.users,
    // default header X-SC-LB-Hint).
    let users = config.client("users");
    let list = snapshot(&[
        ("g1", None, Some("gold")),
        ("g2", None, Some("gold")),
        ("s1", None, None),
    ]);
    let picks = ids(&*users.make_rule(), &list, &[], 6);
    assert!(
        picks.iter().all(|p| p == &picks[0]) && picks[0].starts_with('g'),
        "{picks:?}"
    );
    let header = [("x-sc-lb-hint", "none-has-it")];
    let picks = ids(&*users.make_rule(), &list, &header, 6);
    assert!(picks.iter().all(|p| p == &picks[0]), "{picks:?}");
    // orders: SCLB's subset of client-1 over 7 instances, size 2: Java
    // gives positions 1 and 5.
    let orders = config.client("orders");
    assert_eq!(orders.load_balancer.subset.size, Some(2), "global size");
    assert_eq!(
        distinct(ids(&*orders.make_rule(), &seven(), &[], 50)),
        ["i1", "i5"]
    );
    // fleet: Spring's default instance id,
    // `spring.cloud.client.hostname:spring.application.name:server.port`,
    // the host name the machine's as Spring fills it (before: `edge:9090`
    // on every replica, so every replica chose the same subset).
    let fleet = config.client("fleet");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let id = format!("{}:edge:9090", host.trim());
    assert_eq!(
        fleet.load_balancer.subset.instance_id.as_deref(),
        Some(&*id)
    );
    let want: Vec<String> = tower_ribbon::rule::subset::subset_indices(&id, 7, 2)
        .iter()
        .map(|i| format!("i{i}"))
        .collect();
    assert_eq!(
        distinct(ids(&*fleet.make_rule(), &seven(), &[], 50)),
        distinct(want)
    );
    // carts: the default cookie `sc-lb-instance-id`.
    let carts = config.client("carts");
    let cookie = [("cookie", "sc-lb-instance-id=i4")];
    assert_eq!(ids(&*carts.make_rule(), &seven(), &cookie, 5), ["i4"; 5]);
    // SlowStart*: global, and off for carts (window 0).
    let slow = users.slow_start.config().unwrap();
    assert_eq!(
        (slow.window, slow.aggression, slow.min_weight_percent),
        (Duration::from_secs(10), 2.0, 20.0)
    );
    assert_eq!(carts.slow_start.config(), None);
    // Hints are per service: clients that differ only in their hint share
    // one balancer.
    let shared = RibbonConfig::from_properties_str(
        "spring.cloud.loadbalancer.hint.a=x\n\
         spring.cloud.loadbalancer.hint.b=y\n\
         a.ribbon.listOfServers=127.0.0.1:1\n\
         b.ribbon.listOfServers=127.0.0.1:2\n",
    )
    .unwrap();
    assert_eq!(shared.client("a").load_balancer.hint.as_deref(), Some("x"));
    assert_eq!(shared.client("b").load_balancer.hint.as_deref(), Some("y"));
    assert!(shared.builder().is_ok());
    // One balancer cannot hold different configurations.
    let err = config.builder().unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Conflicting);
    assert_eq!(err.key(), Some("spring.cloud.loadbalancer.configurations"));
}

/// `SlowStartWindow` and friends: a new instance ramps as configured
/// (aggression 2, so factor = sqrt(t / window), at least 20 %).
#[tokio::test(start_paused = true)]
async fn slow_start_keys_ramp_a_new_instance() {
    let config = RibbonConfig::from_yaml_str(POLICIES_YML).unwrap();
    let rule = config.client("orders-free").make_rule();
    let old = seven();
    let _ = rule.build(&old);
    tokio::time::advance(Duration::from_secs(1)).await;
    let new = Endpoint::new(
        Instance::new("svc", "127.0.0.1", 9100)
            .unwrap()
            .with_id("new"),
    );
    let mut list = old.endpoints().to_vec();
    list.push(new.clone());
    let picker = rule.build(&Arc::new(Snapshot::new("svc", list, 2)));
    let seen = new.stats().first_seen();
    for (at_ms, factor) in [(0u64, 0.2), (2_500, 0.5), (10_000, 1.0)] {
        let ctx = PickContext::at(seen + Duration::from_millis(at_ms));
        let n = 8_000;
        let hits = (0..n)
            .filter(|_| picker.pick(&ctx).unwrap().instance().id() == "new")
            .count();
        let share = hits as f64 / n as f64;
        let want = factor / (7.0 + factor);
        assert!(
            (share - want).abs() < 0.002,
            "t={at_ms} ms: {share} vs {want}"
        );
    }
}

/// Through a real balancer over loopback backends: the request's sticky
/// cookie and hint header reach the rule.
#[tokio::test]
async fn cookie_and_hint_header_route_real_requests() {
    use http_body_util::Empty;
    use tower::ServiceExt;

    let backends = [
        backend::Backend::start("a").await.unwrap(),
        backend::Backend::start("b").await.unwrap(),
        backend::Backend::start("c").await.unwrap(),
    ];
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let yml = format!(
        "{POLICIES_YML}\nsticky:\n  ribbon:\n    listOfServers: {}\n\
         spring.cloud.loadbalancer.clients.sticky.configurations: request-based-sticky-session\n",
        backends
            .iter()
            .map(|b| format!("127.0.0.1:{}", b.port()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let config = RibbonConfig::from_yaml_str(&yml).unwrap();
    let lb = config
        .builder_for("sticky")
        .unwrap()
        .build(client.clone())
        .unwrap();
    assert!(lb.ready_service("sticky").await);
    let target = format!("127.0.0.1:{}", backends[1].port());
    for _ in 0..6 {
        let req = http::Request::get("http://sticky/x")
            .header("cookie", format!("sc-lb-instance-id={target}"))
            .body(Empty::new())
            .unwrap();
        assert_eq!(lb.clone().oneshot(req).await.unwrap().status(), 200);
    }
    assert_eq!(
        backends
            .iter()
            .map(backend::Backend::hits)
            .collect::<Vec<_>>(),
        [0, 6, 0]
    );

    // Hint routing: instances with metadata `hint`, the users client's rule.
    let instances = ["gold", "silver", "gold-2"]
        .iter()
        .zip(&backends)
        .map(|(hint, b)| {
            Instance::new("users", "127.0.0.1", b.port())
                .unwrap()
                .with_metadata("hint", hint.trim_end_matches("-2"))
        })
        .collect();
    let users = config.client("users");
    let lb = tower_ribbon::LoadBalancer::builder()
        .source(tower_ribbon::discovery::StaticSource::new().with_instances("users", instances))
        .service("users")
        .rule(move || users.make_rule())
        .build(client)
        .unwrap();
    assert!(lb.ready_service("users").await);
    for _ in 0..4 {
        let req = http::Request::get("http://users/x")
            .header("x-sc-lb-hint", "silver")
            .body(Empty::new())
            .unwrap();
        assert_eq!(lb.clone().oneshot(req).await.unwrap().status(), 200);
    }
    assert_eq!(
        backends
            .iter()
            .map(backend::Backend::hits)
            .collect::<Vec<_>>(),
        [0, 10, 0]
    );
}

/// `sticky-session.add-service-instance-cookie` from the Spring
/// application.yml, through real balancers over loopback backends that
/// record the `Cookie` fields they get: the global key (cookie
/// `lb-instance`), a client's own cookie name (`session-lb`), a client
/// turning it off, and a file without the key adding nothing.
#[tokio::test]
async fn the_instance_cookie_key_sets_the_cookie_on_real_requests() {
    use http_body_util::Empty;
    use tower::ServiceExt;

    let backend = backend::Backend::start("a").await.unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let server = format!("127.0.0.1:{}", backend.port());
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/config/application.yml"),
    )
    .unwrap();
    let yml = format!(
        "{text}\npayment-service.ribbon.listOfServers: {server}\n\
         session-service.ribbon.listOfServers: {server}\n\
         plain-service.ribbon.listOfServers: {server}\n\
         spring.cloud.loadbalancer.clients.plain-service.sticky-session.add-service-instance-cookie: false\n"
    );
    let config = RibbonConfig::from_yaml_str(&yml).unwrap();
    assert_eq!(
        config
            .client("plain-service")
            .load_balancer
            .sticky_session
            .add_service_instance_cookie,
        Some(false)
    );
    let without = RibbonConfig::from_yaml_str(&format!(
        "{POLICIES_YML}\nplain-service.ribbon.listOfServers: {server}\n"
    ))
    .unwrap();
    for (config, name, want) in [
        (&config, "payment-service", Some("lb-instance")),
        (&config, "session-service", Some("session-lb")),
        (&config, "plain-service", None),
        (&without, "plain-service", None),
    ] {
        let lb = config
            .builder_for(name)
            .unwrap()
            .build(client.clone())
            .unwrap();
        assert!(lb.ready_service(name).await);
        let req = http::Request::get(format!("http://{name}/x"))
            .header("cookie", "theme=dark")
            .body(Empty::new())
            .unwrap();
        assert_eq!(lb.oneshot(req).await.unwrap().status(), 200);
        let got = backend.cookies().pop().unwrap();
        let expected = match want {
            Some(cookie) => format!("theme=dark; {cookie}={server}"),
            None => "theme=dark".to_owned(),
        };
        assert_eq!(got, [expected], "{name}");
    }
    // One balancer for several clients keeps each client's cookie.
    let yml = format!(
        "a.ribbon.listOfServers: {server}\nb.ribbon.listOfServers: {server}\n\
         spring.cloud.loadbalancer.sticky-session.add-service-instance-cookie: true\n\
         spring.cloud.loadbalancer.clients.b.sticky-session.instance-id-cookie-name: b-lb\n"
    );
    let lb = RibbonConfig::from_yaml_str(&yml)
        .unwrap()
        .builder()
        .unwrap()
        .build(client)
        .unwrap();
    for (name, cookie) in [("a", "sc-lb-instance-id"), ("b", "b-lb")] {
        assert!(lb.ready_service(name).await);
        let req = http::Request::get(format!("http://{name}/x"))
            .body(Empty::new())
            .unwrap();
        assert_eq!(lb.clone().oneshot(req).await.unwrap().status(), 200);
        assert_eq!(
            backend.cookies().pop().unwrap(),
            [format!("{cookie}={server}")],
            "{name}"
        );
    }
}

/// Retry keys go by scope first, then Ribbon over Spring within a scope,
/// and `retry.enabled=false` turns its scope's retries off. Found by an
/// attack: a client's `retry.enabled=false` lost to global
/// `ribbon.MaxAutoRetries*` and `ribbon.OkToRetryOnAllOperations=true`,
/// giving 6 attempts with POST included and no warning.
#[test]
fn retry_keys_go_by_scope_and_retry_enabled_false_turns_its_scope_off() {
    // (properties, max same, max next, POST retried)
    let cases: [(&str, u32, u32, bool); 8] = [
        // The attack's case: the client's switch beats every global key.
        (
            "ribbon.MaxAutoRetriesNextServer=2\nribbon.MaxAutoRetries=1\n\
             ribbon.OkToRetryOnAllOperations=true\n\
             spring.cloud.loadbalancer.clients.payments.retry.enabled=false",
            0,
            0,
            false,
        ),
        // The global switch beats the global Ribbon keys (its own scope).
        (
            "ribbon.MaxAutoRetriesNextServer=1\nspring.cloud.loadbalancer.retry.enabled=false",
            0,
            0,
            false,
        ),
        // The client's Ribbon key beats the global switch.
        (
            "payments.ribbon.MaxAutoRetries=2\nspring.cloud.loadbalancer.retry.enabled=false",
            2,
            0,
            false,
        ),
        // The client's switch beats its own Ribbon keys too.
        (
            "payments.ribbon.MaxAutoRetries=1\n\
             spring.cloud.loadbalancer.clients.payments.retry.enabled=false",
            0,
            0,
            false,
        ),
        // The client's Spring counts beat the global Ribbon ones.
        (
            "ribbon.MaxAutoRetriesNextServer=1\n\
             spring.cloud.loadbalancer.clients.payments.retry.max-retries-on-next-service-instance=3",
            0,
            3,
            false,
        ),
        // The client's `retry-on-all-operations=false` beats the global
        // Ribbon `true`: no POST retry.
        (
            "ribbon.OkToRetryOnAllOperations=true\n\
             spring.cloud.loadbalancer.clients.payments.retry.retry-on-all-operations=false",
            0,
            1,
            false,
        ),
        // Within one scope the Ribbon key wins over its Spring counterpart.
        (
            "payments.ribbon.MaxAutoRetriesNextServer=2\n\
             spring.cloud.loadbalancer.clients.payments.retry.max-retries-on-next-service-instance=5",
            0,
            2,
            false,
        ),
        // Global keys alone still apply.
        (
            "ribbon.MaxAutoRetries=1\nribbon.OkToRetryOnAllOperations=true",
            1,
            1,
            true,
        ),
    ];
    for (properties, same, next, post) in cases {
        let text = format!("payments.ribbon.listOfServers=127.0.0.1:8081\n{properties}\n");
        let config = RibbonConfig::from_properties_str(&text).unwrap();
        {
            let client = config.client("payments");
            let policy = client.retry_policy();
            assert_eq!(
                (
                    policy.get_max_same(),
                    policy.get_max_next(),
                    policy.is_idempotent(&http::Method::POST)
                ),
                (same, next, post),
                "{properties}"
            );
        }
    }
    // A client the file does not name gets the global scope alone.
    let config = RibbonConfig::from_properties_str(
        "ribbon.MaxAutoRetries=1\nspring.cloud.loadbalancer.retry.enabled=false\n",
    )
    .unwrap();
    let policy = config.client("elsewhere").retry_policy();
    assert_eq!((policy.get_max_same(), policy.get_max_next()), (0, 0));
}

/// Spring binds a boolean from text with its `StringToBooleanConverter`:
/// `true`/`on`/`yes`/`1` and `false`/`off`/`no`/`0`, any case. Spring keys
/// (SCLB's, Spring Cloud's discovery and Eureka client switches) read
/// them so; before, `retry.enabled=yes` or `health-check.refetch-instances=1`
/// in a `.properties` file Spring accepts was refused ("not a boolean").
/// Ribbon's own keys stay `true`/`false`: Ribbon reads them with
/// `Boolean.valueOf`, to which `on` is false, so the crate refuses them.
#[test]
fn spring_keys_take_springs_boolean_words() {
    let config = RibbonConfig::from_properties_str(
        "users.ribbon.listOfServers=127.0.0.1:1\n\
         spring.cloud.loadbalancer.retry.enabled=YES\n\
         spring.cloud.loadbalancer.retry.retry-on-all-operations=on\n\
         spring.cloud.loadbalancer.clients.users.health-check.refetch-instances=1\n\
         spring.cloud.loadbalancer.clients.users.retry.avoid-previous-instance=Off\n\
         spring.cloud.discovery.client.simple.instances.orders[0].uri=http://127.0.0.1:2\n\
         spring.cloud.discovery.client.simple.instances.orders[0].secure=no\n\
         eureka.client.enabled=0\n",
    )
    .unwrap();
    let users = config.client("users");
    let lb = &users.load_balancer;
    assert_eq!(lb.retry.enabled, Some(true));
    assert_eq!(lb.retry.retry_on_all_operations, Some(true));
    assert_eq!(lb.health_check.refetch_instances, Some(true));
    assert_eq!(lb.retry.avoid_previous_instance, Some(false));
    assert_eq!(
        config
            .client("orders")
            .list_of_servers
            .as_ref()
            .map(Vec::len),
        Some(1)
    );
    assert!(
        config
            .warnings()
            .iter()
            .all(|w| !w.contains("eureka.client.enabled")),
        "{:?}",
        config.warnings()
    );
    // Not Spring's words, and Ribbon's keys: refused, naming the key.
    for (key, value) in [
        ("spring.cloud.loadbalancer.retry.enabled", "maybe"),
        ("spring.cloud.loadbalancer.retry.enabled", "2"),
        ("users.ribbon.OkToRetryOnAllOperations", "on"),
    ] {
        let e = RibbonConfig::from_properties_str(&format!("{key}={value}\n")).unwrap_err();
        assert_eq!(
            (e.kind(), e.key(), e.value()),
            (ConfigErrorKind::InvalidValue, Some(key), Some(value))
        );
    }
}
