//! `tower_ribbon::config`: Ribbon keys from properties and YAML files,
//! parsed exactly and turned into working balancers over real backends.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::backend::Backend;
use support::{counts, http_client, tally};

#[path = "common/log_capture.rs"]
mod log_capture;
use tower_ribbon::config::{ConfigError, ConfigErrorKind, RibbonConfig, RuleKind, ServerListKind};

/// A file under the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("tower-ribbon-config-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write temp file");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Builds from `config` and checks that 10 GETs split 5/5 over `a`, `b`.
async fn ten_requests_split_evenly(config: &RibbonConfig, a: &Backend, b: &Backend) {
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    let client = config.client("user-service");
    assert_eq!(client.rule, Some(RuleKind::RoundRobin));
    assert_eq!(client.max_auto_retries_next_server, Some(1));
    assert_eq!(
        client.server_list_refresh_interval,
        Some(Duration::from_millis(1000))
    );
    let lb = config
        .builder()
        .expect("builder")
        .build(http_client())
        .expect("balancer");
    assert_eq!(lb.services(), ["user-service"]);
    assert!(lb.ready_service("user-service").await);
    let tally = tally(&lb, "http://user-service/hello", 10).await;
    assert_eq!(tally, counts(&[("a", 5), ("b", 5)]));
    assert_eq!((a.hits(), b.hits()), (5, 5));
}

#[tokio::test]
async fn properties_file_with_ribbon_keys_builds_a_working_balancer() {
    log_capture::init();
    let (a, b) = (
        Backend::start("a").await.unwrap(),
        Backend::start("b").await.unwrap(),
    );
    let file = TempFile::new(
        "client.properties",
        &format!(
            "# Ribbon keys only\n\
             user-service.ribbon.listOfServers=127.0.0.1:{},127.0.0.1:{}\n\
             user-service.ribbon.NFLoadBalancerRuleClassName=com.netflix.loadbalancer.RoundRobinRule\n\
             user-service.ribbon.MaxAutoRetriesNextServer=1\n\
             user-service.ribbon.ServerListRefreshInterval=1000\n",
            a.port(),
            b.port()
        ),
    );
    let config = RibbonConfig::from_file(&file.0).expect("config");
    ten_requests_split_evenly(&config, &a, &b).await;
}

#[tokio::test]
async fn yaml_file_with_ribbon_keys_builds_a_working_balancer() {
    log_capture::init();
    let (a, b) = (
        Backend::start("a").await.unwrap(),
        Backend::start("b").await.unwrap(),
    );
    let file = TempFile::new(
        "application.yml",
        &format!(
            "user-service:\n  \
               ribbon:\n    \
                 listOfServers:\n      \
                   - 127.0.0.1:{}\n      \
                   - 127.0.0.1:{}\n    \
                 NFLoadBalancerRuleClassName: com.netflix.loadbalancer.RoundRobinRule\n    \
                 MaxAutoRetriesNextServer: 1\n    \
                 ServerListRefreshInterval: 1000\n\
             server:\n  port: 8080\n",
            a.port(),
            b.port()
        ),
    );
    let config = RibbonConfig::from_file(&file.0).expect("config");
    ten_requests_split_evenly(&config, &a, &b).await;
}

#[tokio::test]
async fn yaml_and_properties_read_the_same() {
    log_capture::init();
    let yaml = RibbonConfig::from_yaml_str(
        "user-service:\n  ribbon:\n    listOfServers: h1:1, h2:2\n    MaxAutoRetries: 3\n\
         ribbon:\n  ReadTimeout: 250\n",
    )
    .unwrap();
    let dotted = RibbonConfig::from_yaml_str(
        "user-service.ribbon.listOfServers: [h1:1, h2:2]\nuser-service.ribbon:\n  MaxAutoRetries: 3\n\
         ribbon.ReadTimeout: 250\n",
    )
    .unwrap();
    let properties = RibbonConfig::from_properties_str(
        "user-service.ribbon.listOfServers = h1:1, h2:2\nuser-service.ribbon.MaxAutoRetries: 3\n\
         ribbon.ReadTimeout 250\n",
    )
    .unwrap();
    assert_eq!(yaml.clients(), properties.clients());
    assert_eq!(dotted.clients(), properties.clients());
    assert_eq!(
        yaml.client("user-service").read_timeout,
        Some(Duration::from_millis(250))
    );
}

#[test]
fn every_key_is_parsed_exactly() {
    log_capture::init();
    let config = RibbonConfig::from_properties_str(
        r"
ribbon.ConnectTimeout=750
ribbon.MaxAutoRetries=9
eureka.client.service-url.defaultZone=http://127.0.0.1:8761/eureka, http://127.0.0.1:8762/eureka
eureka.client.eureka-server-connect-timeout-seconds=2
eureka.client.eureka-server-read-timeout-seconds=4
eureka.instance.metadata-map.zone=zone-from-spring

svc.ribbon.listOfServers=127.0.0.1:8081, https://b.internal, [::1]:9
svc.ribbon.NFLoadBalancerRuleClassName=com.netflix.loadbalancer.WeightedResponseTimeRule
svc.ribbon.MaxAutoRetries=2
svc.ribbon.MaxAutoRetriesNextServer=3
svc.ribbon.OkToRetryOnAllOperations=TRUE
svc.ribbon.ServerListRefreshInterval=1500
svc.ribbon.ReadTimeout=2500
svc.ribbon.retryableStatusCodes=500, 503,429
svc.ribbon.HealthCheckPath=/actuator/health
svc.ribbon.NFLoadBalancerPingInterval=7
svc.ribbon.EnableZoneAffinity=true
svc.ribbon.EnableZoneExclusivity=false
svc.ribbon.zone=us-east-1a
svc.ribbon.DeploymentContextBasedVipAddresses=svc-vip, svc-secure-vip
svc.ribbon.NIWSServerListClassName=com.netflix.loadbalancer.ConfigurationBasedServerList
svc.ribbon.eureka.enabled=false

other.ribbon.NIWSServerListClassName=com.netflix.niws.loadbalancer.DiscoveryEnabledNIWSServerList
",
    )
    .unwrap();
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    assert_eq!(
        config.eureka_server_urls(),
        [
            "http://127.0.0.1:8761/eureka",
            "http://127.0.0.1:8762/eureka"
        ]
    );
    let names: Vec<&str> = config.clients().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["svc", "other"]);

    let svc = config.client("svc");
    let servers: Vec<String> = svc
        .list_of_servers
        .as_ref()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        servers,
        [
            "http://127.0.0.1:8081",
            "https://b.internal:443",
            "http://[::1]:9"
        ]
    );
    assert!(
        svc.list_of_servers
            .as_ref()
            .unwrap()
            .iter()
            .all(|i| i.service_id() == "svc")
    );
    assert_eq!(svc.rule, Some(RuleKind::WeightedResponseTime));
    assert_eq!(
        svc.rule_class_name.as_deref(),
        Some("com.netflix.loadbalancer.WeightedResponseTimeRule")
    );
    assert_eq!(svc.max_auto_retries, Some(2));
    assert_eq!(svc.max_auto_retries_next_server, Some(3));
    assert_eq!(svc.ok_to_retry_on_all_operations, Some(true));
    assert_eq!(
        svc.server_list_refresh_interval,
        Some(Duration::from_millis(1500))
    );
    assert_eq!(svc.read_timeout, Some(Duration::from_millis(2500)));
    assert_eq!(svc.connect_timeout, Some(Duration::from_millis(750)));
    assert_eq!(svc.retryable_status_codes, Some(vec![500, 503, 429]));
    assert_eq!(svc.health_check_path.as_deref(), Some("/actuator/health"));
    assert_eq!(svc.ping_interval, Some(Duration::from_secs(7)));
    assert_eq!(svc.enable_zone_affinity, Some(true));
    assert_eq!(svc.enable_zone_exclusivity, Some(false));
    assert_eq!(svc.zone.as_deref(), Some("us-east-1a"));
    assert_eq!(svc.preferred_zone(), Some("us-east-1a"));
    assert_eq!(
        svc.vip_addresses,
        Some(vec!["svc-vip".to_owned(), "svc-secure-vip".to_owned()])
    );
    assert_eq!(svc.server_list, Some(ServerListKind::Static));
    assert_eq!(svc.eureka_enabled, Some(false));

    // What the builder receives.
    let retry = svc.retry_policy();
    assert_eq!(retry.get_max_same(), 2);
    assert_eq!(retry.get_max_next(), 3);
    // `ReadTimeout` bounds each try through the builder, so a policy's own
    // per-try timeout (set in code) wins over it.
    assert_eq!(retry.get_per_try_timeout(), None);
    assert_eq!(
        config.builder_for("svc").unwrap().get_read_timeout(),
        Some(Duration::from_millis(2500))
    );
    assert!(retry.is_idempotent(&http::Method::POST));
    assert!(retry.is_retryable_status(429));
    assert!(!retry.is_retryable_status(502));
    assert_eq!(svc.refresh_config().interval, Duration::from_millis(1500));
    assert_eq!(
        svc.health_check(),
        Some({
            let mut check = tower_ribbon::health::ActiveHealthCheck::new("/actuator/health");
            check.interval = Duration::from_secs(7);
            // A tenth of the interval, at most 1 s.
            check.interval_jitter = Duration::from_millis(700);
            check
        })
    );
    // Zone affinity wraps the configured rule in zone avoidance.
    assert_eq!(svc.make_rule().name(), "zone_avoidance");
    assert_eq!(
        config.server_list_kind("svc").unwrap(),
        ServerListKind::Static
    );

    // `other` has only the defaults and its server list class.
    let other = config.client("other");
    assert_eq!(other.max_auto_retries, Some(9));
    assert_eq!(other.connect_timeout, Some(Duration::from_millis(750)));
    assert_eq!(other.zone.as_deref(), Some("zone-from-spring"));
    assert_eq!(other.preferred_zone(), None);
    assert_eq!(other.rule, None);
    assert_eq!(other.make_rule().name(), "round_robin");
    assert_eq!(other.health_check(), None);
    assert_eq!(other.retry_policy().get_per_try_timeout(), None);
    assert_eq!(
        config.server_list_kind("other").unwrap(),
        ServerListKind::Eureka
    );
    // A client named nowhere gets the defaults, and Eureka.
    assert_eq!(config.client("nowhere").max_auto_retries, Some(9));
    assert_eq!(
        config.server_list_kind("nowhere").unwrap(),
        ServerListKind::Eureka
    );
}

#[test]
fn defaults_apply_when_keys_are_absent() {
    log_capture::init();
    let config = RibbonConfig::from_properties_str("svc.ribbon.listOfServers=h:1\n").unwrap();
    let svc = config.client("svc");
    assert_eq!(svc.rule, None);
    assert_eq!(svc.read_timeout, None);
    let retry = svc.retry_policy();
    assert_eq!(
        (retry.get_max_same(), retry.get_max_next()),
        (0, 1),
        "Ribbon's MaxAutoRetries 0, MaxAutoRetriesNextServer 1"
    );
    assert!(retry.is_retryable_status(503));
    assert!(!retry.is_idempotent(&http::Method::POST));
    assert_eq!(svc.refresh_config().interval, Duration::from_secs(30));
    // A health path alone checks every 30 s, Ribbon's configured default.
    let config = RibbonConfig::from_properties_str(
        "svc.ribbon.listOfServers=h:1\nsvc.ribbon.HealthCheckPath=health\n",
    )
    .unwrap();
    assert_eq!(
        config.client("svc").health_check(),
        Some({
            let mut check = tower_ribbon::health::ActiveHealthCheck::new("/health");
            check.interval = Duration::from_secs(30);
            check
        })
    );
}

#[test]
fn unknown_keys_warn_and_are_ignored() {
    let (_guard, captured) = log_capture::capture(tracing::Level::INFO);
    let config = RibbonConfig::from_properties_str(
        "user-service.ribbon.listOfServers=h:1\n\
         user-service.ribbon.MaxTotalHttpConnections=200\n\
         ribbon.SomethingNew=1\n\
         user-service.ribbon.maxAutoRetries=2\n\
         spring.application.name=caller\n\
         server.port=8080\n\
         eureka.client.register-with-eureka=false\n",
    )
    .unwrap();
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].contains("`user-service.ribbon.MaxTotalHttpConnections`"));
    assert!(warnings[1].contains("`ribbon.SomethingNew`"));
    assert!(warnings[2].contains("`user-service.ribbon.maxAutoRetries`"));
    assert!(
        warnings[2].contains("did you mean `MaxAutoRetries`"),
        "{}",
        warnings[2]
    );
    // Each was logged as a warning too.
    let logged = captured.text();
    assert_eq!(logged.matches("WARN").count(), 3, "{logged}");
    assert!(
        logged.contains("user-service.ribbon.MaxTotalHttpConnections"),
        "{logged}"
    );
    // Ignored, not applied.
    assert_eq!(config.client("user-service").max_auto_retries, None);
    assert_eq!(config.clients().len(), 1);
}

#[test]
fn settings_without_effect_warn() {
    log_capture::init();
    let config = RibbonConfig::from_properties_str(
        "a.ribbon.listOfServers=h:1\n\
         a.ribbon.NFLoadBalancerPingInterval=5\n\
         a.ribbon.EnableZoneAffinity=true\n",
    )
    .unwrap();
    let warnings = config.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("NFLoadBalancerPingInterval")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("EnableZoneAffinity")),
        "{warnings:?}"
    );
}

/// Parses `key=value` for client `svc` and returns the error's text.
fn error_of(key: &str, value: &str) -> (ConfigError, String) {
    let text = format!("svc.ribbon.listOfServers=h:1\nsvc.ribbon.{key}={value}\n");
    let err = RibbonConfig::from_properties_str(&text).expect_err(key);
    let shown = err.to_string();
    (err, shown)
}

#[test]
fn bad_values_are_errors_naming_key_and_value() {
    log_capture::init();
    let (err, shown) = error_of("MaxAutoRetries", "x");
    assert_eq!(shown, "`svc.ribbon.MaxAutoRetries` = \"x\": not a number");
    assert_eq!(err.kind(), ConfigErrorKind::InvalidValue);
    assert_eq!(err.key(), Some("svc.ribbon.MaxAutoRetries"));
    assert_eq!(err.value(), Some("x"));
    for (key, value, reason) in [
        ("MaxAutoRetries", "-1", "negative"),
        ("MaxAutoRetriesNextServer", "1.5", "not a number"),
        ("OkToRetryOnAllOperations", "yes", "not a boolean"),
        ("ServerListRefreshInterval", "0", "at least 1"),
        ("ServerListRefreshInterval", "30s", "not a number"),
        ("ReadTimeout", "fast", "not a number"),
        ("ConnectTimeout", "-5", "negative"),
        (
            "retryableStatusCodes",
            "503,abc",
            "`abc` is not an HTTP status code",
        ),
        (
            "retryableStatusCodes",
            "700",
            "`700` is not an HTTP status code",
        ),
        ("NFLoadBalancerPingInterval", "0", "at least 1"),
        ("EnableZoneAffinity", "1", "not a boolean"),
        ("EnableZoneExclusivity", "on", "not a boolean"),
        ("HealthCheckPath", "/health check", "no blanks"),
        (
            "NFLoadBalancerRuleClassName",
            "com.example.MyRule",
            "not a known rule",
        ),
        (
            "NFLoadBalancerRuleClassName",
            "FancyRule",
            "not a known rule",
        ),
        (
            "NIWSServerListClassName",
            "com.example.MyList",
            "not a supported server list",
        ),
        ("listOfServers", "h:0", "invalid server entry"),
        ("eureka.enabled", "maybe", "not a boolean"),
    ] {
        let (err, shown) = error_of(key, value);
        // Out-of-range numbers are their own kind, with the range.
        assert!(
            matches!(
                err.kind(),
                ConfigErrorKind::InvalidValue | ConfigErrorKind::OutOfRange
            ),
            "{key}: {err:?}"
        );
        assert_eq!(err.key(), Some(format!("svc.ribbon.{key}").as_str()));
        assert_eq!(err.value(), Some(value));
        assert!(
            shown.contains(&format!("`svc.ribbon.{key}`")),
            "{key}: {shown}"
        );
        assert!(shown.contains(&format!("\"{value}\"")), "{key}: {shown}");
        assert!(shown.contains(reason), "{key}: {shown}");
    }
    // Global keys and Spring's Eureka keys are named as written too.
    let err = RibbonConfig::from_properties_str("ribbon.ReadTimeout=soon\n").unwrap_err();
    assert!(err.to_string().contains("`ribbon.ReadTimeout`"), "{err}");
    let err =
        RibbonConfig::from_properties_str("eureka.client.eureka-server-read-timeout-seconds=x\n")
            .unwrap_err();
    assert!(
        err.to_string()
            .contains("`eureka.client.eureka-server-read-timeout-seconds` = \"x\""),
        "{err}"
    );
    // YAML values are named by their dotted key.
    let err =
        RibbonConfig::from_yaml_str("svc:\n  ribbon:\n    MaxAutoRetries: many\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "`svc.ribbon.MaxAutoRetries` = \"many\": not a number"
    );
}

#[test]
fn malformed_files_are_errors() {
    log_capture::init();
    let kind = |r: Result<RibbonConfig, ConfigError>| r.unwrap_err().kind();
    assert_eq!(
        kind(RibbonConfig::from_yaml_str("svc: [a\n")),
        ConfigErrorKind::Yaml
    );
    assert_eq!(
        kind(RibbonConfig::from_properties_str("a=\\uZZZZ\n")),
        ConfigErrorKind::Properties
    );
    let file = TempFile::new("client.toml", "a = 1\n");
    assert_eq!(
        kind(RibbonConfig::from_file(&file.0)),
        ConfigErrorKind::UnsupportedFormat
    );
    let err = RibbonConfig::from_file("/nonexistent/tower-ribbon/client.properties").unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Io);
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn ribbon_class_names_map_to_rules() {
    log_capture::init();
    for (class, name) in [
        ("com.netflix.loadbalancer.RoundRobinRule", "round_robin"),
        ("com.netflix.loadbalancer.RandomRule", "random"),
        (
            "com.netflix.loadbalancer.WeightedResponseTimeRule",
            "weighted_response_time",
        ),
        (
            "com.netflix.loadbalancer.ResponseTimeWeightedRule",
            "weighted_response_time",
        ),
        (
            "com.netflix.loadbalancer.AvailabilityFilteringRule",
            "availability_filtering",
        ),
        (
            "com.netflix.loadbalancer.BestAvailableRule",
            "best_available",
        ),
        (
            "com.netflix.loadbalancer.ZoneAvoidanceRule",
            "zone_avoidance",
        ),
        ("com.netflix.loadbalancer.RetryRule", "round_robin"),
        ("RoundRobinRule", "round_robin"),
        ("RandomRule", "random"),
        ("WeightedResponseTimeRule", "weighted_response_time"),
        ("AvailabilityFilteringRule", "availability_filtering"),
        ("BestAvailableRule", "best_available"),
        ("ZoneAvoidanceRule", "zone_avoidance"),
        ("RetryRule", "round_robin"),
        ("RoundRobin", "round_robin"),
        ("PeakEwmaP2c", "peak_ewma_p2c"),
        ("WeightedRoundRobin", "weighted_round_robin"),
        ("ConsistentHash", "consistent_hash"),
        ("peak_ewma_p2c", "peak_ewma_p2c"),
    ] {
        let config = RibbonConfig::from_properties_str(&format!(
            "svc.ribbon.listOfServers=h:1\nsvc.ribbon.NFLoadBalancerRuleClassName={class}\n"
        ))
        .unwrap();
        let client = config.client("svc");
        assert_eq!(client.make_rule().name(), name, "{class}");
        assert_eq!(client.rule.map(RuleKind::name), Some(name), "{class}");
        assert_eq!(client.rule_class_name.as_deref(), Some(class));
    }
}

#[tokio::test]
async fn clients_with_different_rules_need_one_balancer_each() {
    log_capture::init();
    let (a, b) = (
        Backend::start("a").await.unwrap(),
        Backend::start("b").await.unwrap(),
    );
    let config = RibbonConfig::from_properties_str(&format!(
        "users.ribbon.listOfServers=127.0.0.1:{}\n\
         users.ribbon.NFLoadBalancerRuleClassName=RoundRobinRule\n\
         orders.ribbon.listOfServers=127.0.0.1:{}\n\
         orders.ribbon.NFLoadBalancerRuleClassName=RandomRule\n",
        a.port(),
        b.port()
    ))
    .unwrap();
    let err = config.builder().expect_err("conflicting rules accepted");
    assert_eq!(err.kind(), ConfigErrorKind::Conflicting);
    assert_eq!(err.key(), Some("NFLoadBalancerRuleClassName"));
    assert_eq!(
        (err.value(), err.other_value()),
        (Some("round_robin"), Some("random"))
    );
    let users = config
        .builder_for("users")
        .unwrap()
        .build(http_client())
        .unwrap();
    let orders = config
        .builder_for("orders")
        .unwrap()
        .build(http_client())
        .unwrap();
    assert_eq!(users.services(), ["users"]);
    assert_eq!(
        tally(&users, "http://users/x", 2).await,
        counts(&[("a", 2)])
    );
    assert_eq!(
        tally(&orders, "http://orders/x", 2).await,
        counts(&[("b", 2)])
    );
}

#[tokio::test]
async fn clients_that_agree_share_one_balancer() {
    log_capture::init();
    let (a, b) = (
        Backend::start("a").await.unwrap(),
        Backend::start("b").await.unwrap(),
    );
    let config = RibbonConfig::from_yaml_str(&format!(
        "ribbon:\n  NFLoadBalancerRuleClassName: RandomRule\n  MaxAutoRetries: 1\n\
         users:\n  ribbon:\n    listOfServers: 127.0.0.1:{}\n\
         orders:\n  ribbon:\n    listOfServers: 127.0.0.1:{}\n",
        a.port(),
        b.port()
    ))
    .unwrap();
    let lb = config.builder().unwrap().build(http_client()).unwrap();
    assert_eq!(lb.services(), ["orders", "users"]);
    assert_eq!(tally(&lb, "http://users/x", 3).await, counts(&[("a", 3)]));
    assert_eq!(tally(&lb, "http://orders/x", 3).await, counts(&[("b", 3)]));
}

#[tokio::test]
async fn apply_keeps_builder_settings_for_absent_keys() {
    log_capture::init();
    let a = Backend::start("a").await.unwrap();
    let config = RibbonConfig::from_properties_str(&format!(
        "users.ribbon.listOfServers=127.0.0.1:{}\n",
        a.port()
    ))
    .unwrap();
    let builder = tower_ribbon::LoadBalancer::builder()
        .rule(tower_ribbon::rule::Random::new)
        .discover_on_demand(false);
    let lb = config
        .apply("users", builder)
        .unwrap()
        .build(http_client())
        .unwrap();
    assert_eq!(tally(&lb, "http://users/x", 2).await, counts(&[("a", 2)]));
    // No source for a client without servers or Eureka.
    assert_eq!(
        config.builder_for("nobody").unwrap_err().kind(),
        ConfigErrorKind::NoSource
    );
    assert_eq!(
        RibbonConfig::from_properties_str("ribbon.ReadTimeout=1\n")
            .unwrap()
            .builder()
            .unwrap_err()
            .kind(),
        ConfigErrorKind::NoClients
    );
}

/// The three breaker keys of the properties file used by the breaker tests:
/// trip after 2 connection failures, blackout 4 s doubling up to 6 s.
const BREAKER_PROPERTIES: &str = "\
ribbon.connectionFailureCountThreshold=9
svc.ribbon.listOfServers=127.0.0.1:9
svc.ribbon.MaxAutoRetriesNextServer=0
svc.ribbon.connectionFailureCountThreshold=2
svc.ribbon.circuitTripTimeoutFactorSeconds=4
svc.ribbon.circuitTripMaxTimeoutSeconds=6
";

#[test]
fn breaker_keys_map_onto_stats_config() {
    log_capture::init();
    let config = RibbonConfig::from_properties_str(BREAKER_PROPERTIES).unwrap();
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    let svc = config.client("svc");
    assert_eq!(svc.connection_failure_count_threshold, Some(2));
    assert_eq!(
        svc.circuit_trip_timeout_factor,
        Some(Duration::from_secs(4))
    );
    assert_eq!(svc.circuit_trip_max_timeout, Some(Duration::from_secs(6)));
    let stats = svc.stats_config();
    assert_eq!(
        (
            stats.breaker_threshold,
            stats.breaker_base,
            stats.breaker_max
        ),
        (2, Duration::from_secs(4), Duration::from_secs(6))
    );
    // The global form reaches clients without their own value; the rest of
    // StatsConfig keeps its defaults.
    let other = config.client("other").stats_config();
    let defaults = tower_ribbon::stats::StatsConfig::default();
    assert_eq!(other.breaker_threshold, 9);
    assert_eq!(
        (other.breaker_base, other.breaker_max, other.ewma_decay),
        (
            defaults.breaker_base,
            defaults.breaker_max,
            defaults.ewma_decay
        )
    );
    // Ribbon's own `niws.loadbalancer.<client>.<Key>` form, and YAML.
    let niws = RibbonConfig::from_properties_str(
        "niws.loadbalancer.default.circuitTripMaxTimeoutSeconds=60\n\
         niws.loadbalancer.svc.connectionFailureCountThreshold=5\n\
         svc.ribbon.listOfServers=127.0.0.1:9\n",
    )
    .unwrap()
    .client("svc")
    .stats_config();
    assert_eq!(
        (niws.breaker_threshold, niws.breaker_max),
        (5, Duration::from_secs(60))
    );
    let yaml = RibbonConfig::from_yaml_str(
        "svc:\n  ribbon:\n    connectionFailureCountThreshold: 2\n    circuitTripTimeoutFactorSeconds: 4\n",
    )
    .unwrap();
    assert_eq!(yaml.client("svc").stats_config().breaker_threshold, 2);
    // Out of range: a typed error naming key, value and range.
    for (key, value, allowed) in [
        ("connectionFailureCountThreshold", "0", 1..=1_000_000),
        ("circuitTripTimeoutFactorSeconds", "0", 1..=86_400),
        ("circuitTripMaxTimeoutSeconds", "86401", 1..=86_400),
    ] {
        let (err, _) = error_of(key, value);
        assert_eq!(err.kind(), ConfigErrorKind::OutOfRange, "{key}");
        assert_eq!(err.key(), Some(format!("svc.ribbon.{key}").as_str()));
        assert_eq!((err.value(), err.allowed()), (Some(value), Some(allowed)));
    }
}

#[tokio::test(start_paused = true)]
async fn breaker_from_keys_trips_after_the_count_for_the_blackout() {
    log_capture::init();
    use tower_ribbon::stats::{BreakerState, EndpointStats, Outcome};
    let config = RibbonConfig::from_properties_str(BREAKER_PROPERTIES).unwrap();
    let stats = EndpointStats::with_config(config.client("svc").stats_config());
    let state = || stats.breaker_state_at(tokio::time::Instant::now());
    stats.start().finish(Outcome::ConnectFailure);
    assert_eq!(state(), BreakerState::Closed, "one failure of two");
    stats.start().finish(Outcome::ConnectFailure);
    let four = Duration::from_secs(4);
    assert_eq!(state(), BreakerState::Open { remaining: four });
    tokio::time::advance(four - Duration::from_millis(1)).await;
    assert!(matches!(state(), BreakerState::Open { .. }));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(matches!(state(), BreakerState::HalfOpen { .. }));
    // The failed probe doubles the blackout to 8 s, capped at 6 s.
    stats.start().finish(Outcome::ConnectFailure);
    let six = Duration::from_secs(6);
    assert_eq!(state(), BreakerState::Open { remaining: six });
}

/// Through the balancer built from the file: the refresh must create each
/// endpoint with [`Builder::stats`]' config (wired on branch `rules`).
/// Ignored on branch `config`, which only adds the setter; it passed there
/// with that wiring applied locally. Remove the `ignore` when merging.
#[tokio::test(start_paused = true)]
async fn breaker_from_keys_trips_the_built_balancers_endpoints() {
    log_capture::init();
    use tower::ServiceExt;
    use tower_ribbon::stats::BreakerState;
    let config = RibbonConfig::from_properties_str(BREAKER_PROPERTIES).unwrap();
    let inner = tower::service_fn(|_: http::Request<()>| async {
        Err::<http::Response<()>, _>(tower_ribbon::BoxError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    });
    let lb = config.builder_for("svc").unwrap().build(inner).unwrap();
    assert!(lb.ready_service("svc").await);
    let send = || {
        let req = http::Request::get("http://svc/x").body(()).unwrap();
        lb.clone().oneshot(req)
    };
    let state = || {
        let snapshot = lb.snapshot("svc").unwrap();
        snapshot.endpoints()[0].stats().breaker_state()
    };
    assert!(send().await.is_err());
    assert_eq!(state(), BreakerState::Closed, "one failure of two");
    assert!(send().await.is_err());
    let four = Duration::from_secs(4);
    assert_eq!(state(), BreakerState::Open { remaining: four });
    tokio::time::advance(four).await;
    assert!(
        matches!(state(), BreakerState::HalfOpen { .. }),
        "{:?}",
        state()
    );
    assert!(send().await.is_err());
    assert_eq!(
        state(),
        BreakerState::Open {
            remaining: Duration::from_secs(6)
        }
    );
}

/// A `defaultZone` whose password holds `,`, `@`, `:` and `%` (percent-
/// encoded as Spring expects) is one URL per server, and no warning or
/// error text shows the password (spring-cloud-netflix#3035, #3815).
#[cfg(feature = "eureka")]
#[test]
fn default_zone_with_a_comma_in_the_password_is_split_outside_credentials() {
    log_capture::init();
    let text = "eureka.client.serviceUrl.defaultZone=http://user:s3cr%2Cet%40x%3A9%25@127.0.0.1:8761/eureka,http://user:s3cr%2Cet%40x%3A9%25@127.0.0.1:8762/eureka\n\
                svc.ribbon.NIWSServerListClassName=com.netflix.niws.loadbalancer.DiscoveryEnabledNIWSServerList\n\
                svc.ribbon.bogusKey=1\n";
    let config = RibbonConfig::from_properties_str(text).unwrap();
    assert_eq!(config.eureka_server_urls().len(), 2);
    let raw = "http://user:s3cr,et@x:9%@127.0.0.1:8761/eureka,http://h2:8762/eureka";
    let raw_config =
        RibbonConfig::from_properties_str(&format!("eureka.client.serviceUrl.defaultZone={raw}\n"))
            .unwrap();
    assert_eq!(raw_config.eureka_server_urls().len(), 2);
    for w in config.warnings().iter().chain(raw_config.warnings()) {
        assert!(!w.contains("s3cr"), "password in a warning: {w}");
    }
    let debug = format!("{config:?}{raw_config:?}");
    assert!(!debug.contains("s3cr"), "password in Debug");
}

/// Timeouts are balancer-wide (`Builder::connect_timeout`,
/// `Builder::read_timeout`): clients that disagree need one balancer each,
/// and `builder()` says so instead of keeping the first client's value.
/// Found by an attack: a second client's `ConnectTimeout` was dropped
/// silently (60 s asked, 100 ms applied), and `ReadTimeout=0` (no bound)
/// compared equal to unset (the 5 s default), so a client asking for no
/// bound was cut at 5 s when another client was listed first.
#[test]
fn clients_with_different_timeouts_conflict() {
    let cases = [
        (
            "a.ribbon.ConnectTimeout=100\nb.ribbon.ConnectTimeout=60000\n",
            "ConnectTimeout",
            ("100 ms", "60000 ms"),
        ),
        (
            "a.ribbon.ConnectTimeout=100\n",
            "ConnectTimeout",
            ("100 ms", "2000 ms"),
        ),
        (
            "b.ribbon.ReadTimeout=0\n",
            "ReadTimeout",
            ("5000 ms", "none (0)"),
        ),
    ];
    for (keys, key, (first, second)) in cases {
        let config = RibbonConfig::from_properties_str(&format!(
            "a.ribbon.listOfServers=127.0.0.1:1\nb.ribbon.listOfServers=127.0.0.1:2\n{keys}"
        ))
        .unwrap();
        let err = config.builder().expect_err(keys);
        assert_eq!(err.kind(), ConfigErrorKind::Conflicting, "{err}");
        assert_eq!(err.key(), Some(key), "{err}");
        assert_eq!(
            (err.value(), err.other_value()),
            (Some(first), Some(second)),
            "{err}"
        );
        // Each client alone builds, with its own value.
        assert!(config.builder_for("a").is_ok() && config.builder_for("b").is_ok());
    }
    // The same values on both clients: one balancer, that value.
    let config = RibbonConfig::from_properties_str(
        "a.ribbon.listOfServers=127.0.0.1:1\nb.ribbon.listOfServers=127.0.0.1:2\n\
         a.ribbon.ConnectTimeout=700\nb.ribbon.ConnectTimeout=700\n\
         a.ribbon.ReadTimeout=0\nb.ribbon.ReadTimeout=0\n",
    )
    .unwrap();
    let builder = config.builder().unwrap();
    assert_eq!(
        builder.get_connect_timeout(),
        Some(Duration::from_millis(700))
    );
}

/// Plain YAML scalars are read as Spring Boot's parser (SnakeYAML, YAML
/// 1.1) reads them: `on`/`off`/`yes`/`no` are booleans (Spring's docs ask
/// for `banner-mode: "off"` in quotes for that reason) and `010`, `0x7d0`,
/// `0b11`, `5_000`, `1:30` integers (octal, hex, binary, with underscores,
/// base 60). Before, `OkToRetryOnAllOperations: on` was refused ("not a
/// boolean") and `MaxAutoRetries: 010` read as 10 where Spring reads 8.
/// Quoted scalars stay text.
#[test]
fn plain_yaml_scalars_are_read_as_spring_boots_yaml_reads_them() {
    let yaml = "\
users:
  ribbon:
    listOfServers: 127.0.0.1:1
    OkToRetryOnAllOperations: on
    EnableZoneAffinity: NO
    MaxAutoRetries: 010
    MaxAutoRetriesNextServer: 0b11
    ReadTimeout: 5_000
    ConnectTimeout: 0x7d0
    ServerListRefreshInterval: 1:30
    zone: 'on'
";
    let config = RibbonConfig::from_yaml_str(yaml).unwrap();
    let users = config.client("users");
    assert_eq!(users.ok_to_retry_on_all_operations, Some(true));
    assert_eq!(users.enable_zone_affinity, Some(false));
    assert_eq!(users.max_auto_retries, Some(8));
    assert_eq!(users.max_auto_retries_next_server, Some(3));
    assert_eq!(users.read_timeout, Some(Duration::from_millis(5_000)));
    assert_eq!(users.connect_timeout, Some(Duration::from_millis(2_000)));
    assert_eq!(
        users.server_list_refresh_interval,
        Some(Duration::from_millis(90))
    );
    assert_eq!(users.zone.as_deref(), Some("on"));
    // Not integers in YAML 1.1: kept as written, and refused as before.
    for bad in ["0x", "1:60", "0b2", "_1", "0_"] {
        let err =
            RibbonConfig::from_yaml_str(&format!("users:\n  ribbon:\n    MaxAutoRetries: {bad}\n"))
                .unwrap_err();
        assert_eq!(
            (err.kind(), err.value()),
            (ConfigErrorKind::InvalidValue, Some(bad)),
            "{bad}"
        );
    }
}
