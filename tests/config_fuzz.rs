//! Every Ribbon and Spring Cloud LoadBalancer key this crate reads, global
//! and per client, with hostile and edge values (negative, overflowing,
//! `NaN`, empty, units, class names, lists, placeholders, control
//! characters), through the whole path a user takes: `RibbonConfig::from_pairs`,
//! `builder()`, `build` over hyper-util's client, and requests to the
//! configured and to an unknown service (an instance at 127.0.0.1:1, which
//! refuses connections). Each step either succeeds or returns its typed
//! error; nothing panics, in the caller or in the tasks the balancer
//! starts (refresh, health checks). Seeded: 3 000 cases, of which at
//! least 5 % must reach a built balancer, so the test cannot pass by
//! rejecting everything.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tower::ServiceExt;
use tower_ribbon::config::RibbonConfig;

static PANICS: AtomicUsize = AtomicUsize::new(0);

const RIBBON_KEYS: &[&str] = &[
    "listOfServers",
    "NFLoadBalancerRuleClassName",
    "MaxAutoRetries",
    "MaxAutoRetriesNextServer",
    "OkToRetryOnAllOperations",
    "retryableStatusCodes",
    "ReadTimeout",
    "ConnectTimeout",
    "ServerListRefreshInterval",
    "HealthCheckPath",
    "NFLoadBalancerPingInterval",
    "EnableZoneAffinity",
    "EnableZoneExclusivity",
    "zone",
    "DeploymentContextBasedVipAddresses",
    "NIWSServerListClassName",
    "eureka.enabled",
    "connectionFailureCountThreshold",
    "circuitTripTimeoutFactorSeconds",
    "circuitTripMaxTimeoutSeconds",
    "SlowStartWindow",
    "SlowStartAggression",
    "SlowStartMinWeightPercent",
];
const SPRING_KEYS: &[&str] = &[
    "configurations",
    "zone",
    "hint.svc",
    "hint.default",
    "hint-header-name",
    "health-check.initial-delay",
    "health-check.interval",
    "health-check.path.svc",
    "health-check.path.default",
    "health-check.port",
    "health-check.repeat-health-check",
    "health-check.refetch-instances",
    "health-check.refetch-instances-interval",
    "health-check.update-results-list",
    "retry.enabled",
    "retry.max-retries-on-same-service-instance",
    "retry.max-retries-on-next-service-instance",
    "retry.retry-on-all-operations",
    "retry.retry-on-all-exceptions",
    "retry.retryable-status-codes",
    "retry.retryable-exceptions",
    "retry.avoid-previous-instance",
    "retry.backoff.enabled",
    "retry.backoff.min-backoff",
    "retry.backoff.max-backoff",
    "retry.backoff.jitter",
    "sticky-session.instance-id-cookie-name",
    "sticky-session.add-service-instance-cookie",
    "subset.size",
    "subset.instance-id",
    "cache.enabled",
    "cache.ttl",
    "cache.capacity",
    "cache.caffeine.spec",
    "stats.micrometer.enabled",
    "stats.include-path",
    "service-discovery.timeout",
    "enabled",
    "eager-load.clients",
    "eureka.approximate-zone-from-hostname",
    "x-forwarded.enabled",
];
const VALUES: &[&str] = &[
    "0",
    "1",
    "2",
    "-1",
    "3",
    "64",
    "1000",
    "2147483647",
    "4294967296",
    "9223372036854775807",
    "18446744073709551616",
    "1e308",
    "1e-308",
    "NaN",
    "inf",
    "-inf",
    "",
    " ",
    "true",
    "false",
    "abc",
    "0.5",
    "0.0",
    "-0.0",
    "1.5",
    "100",
    "127.0.0.1:1",
    "127.0.0.1:0",
    "[::1]:65535",
    "localhost:99999",
    "a,b,,c",
    "127.0.0.1:1,127.0.0.1:1,127.0.0.1:2",
    "P1D",
    "PT0S",
    "1d",
    "10000000d",
    "0ms",
    "1ms",
    "500ms",
    "1h",
    "0s",
    "/",
    "/health",
    "/a b",
    "http://x",
    "com.netflix.loadbalancer.RoundRobinRule",
    "com.netflix.loadbalancer.WeightedResponseTimeRule",
    "com.netflix.loadbalancer.BestAvailableRule",
    "com.netflix.loadbalancer.ZoneAvoidanceRule",
    "com.netflix.loadbalancer.AvailabilityFilteringRule",
    "com.netflix.loadbalancer.RandomRule",
    "com.netflix.loadbalancer.RetryRule",
    "com.netflix.niws.loadbalancer.DiscoveryEnabledNIWSServerList",
    "com.netflix.loadbalancer.ConfigurationBasedServerList",
    "random",
    "zone-preference",
    "weighted",
    "health-check",
    "same-instance-preference",
    "request-based-sticky-session",
    "subset",
    "hint-based",
    "default",
    "round-robin",
    "999",
    "200,503",
    "500-599",
    "*",
    "java.io.IOException",
    "maximumSize=0",
    "initialCapacity=-1",
    "a\nb",
    "zone1",
    "svc",
    "X-Hint",
    "none",
];

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        (0..RIBBON_KEYS.len(), any::<bool>()).prop_map(|(i, g)| format!(
            "{}ribbon.{}",
            if g { "" } else { "svc." },
            RIBBON_KEYS[i]
        )),
        (0..SPRING_KEYS.len(), any::<bool>()).prop_map(|(i, g)| format!(
            "spring.cloud.loadbalancer.{}{}",
            if g { "" } else { "clients.svc." },
            SPRING_KEYS[i]
        )),
    ];
    let value = prop_oneof![
        8 => proptest::sample::select(VALUES).prop_map(str::to_owned),
        1 => proptest::collection::vec(proptest::sample::select(VALUES), 1..4).prop_map(|v| v.join(",")),
    ];
    proptest::collection::vec((key, value), 1..5).prop_map(|mut v| {
        v.push((
            "svc.ribbon.listOfServers".to_owned(),
            "127.0.0.1:1".to_owned(),
        ));
        v.rotate_right(1);
        v
    })
}

const CASES: u32 = 3000;

#[test]
fn every_key_builds_or_fails_with_a_typed_error() {
    std::panic::set_hook(Box::new(|info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        eprintln!("PANIC {info}");
    }));
    let config = ProptestConfig {
        cases: CASES,
        rng_seed: proptest::test_runner::RngSeed::Fixed(32),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let built = AtomicUsize::new(0);
    let result = runner.run(&pairs(), |pairs| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let Ok(config) = RibbonConfig::from_pairs(pairs.clone()) else {
                return;
            };
            let Ok(builder) = config.builder() else {
                return;
            };
            let http =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Empty<bytes::Bytes>>();
            let Ok(lb) = builder.build(http) else {
                return;
            };
            built.fetch_add(1, Ordering::SeqCst);
            for uri in ["http://svc/x", "http://other/x"] {
                let req = http::Request::get(uri)
                    .header("X-Hint", "zone1")
                    .header("cookie", "sc-lb-instance-id=127.0.0.1:1")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                let _ = tokio::time::timeout(Duration::from_secs(3), lb.clone().oneshot(req)).await;
            }
            // Let the balancer's own tasks run once.
            tokio::time::sleep(Duration::from_millis(5)).await;
        });
        drop(rt);
        prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "{:?}", pairs);
        Ok(())
    });
    let _ = std::panic::take_hook();
    result.unwrap();
    let built = built.load(Ordering::SeqCst);
    eprintln!("{built} of {CASES} configurations built");
    assert!(
        built * 20 >= CASES as usize,
        "only {built} of {CASES} built"
    );
}
