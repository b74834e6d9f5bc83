//! [`ClientConfig`]: the merged settings of one client, and how they become
//! the builder's rule, retry policy, refresh, breaker and health check.

mod apply;
mod warnings;

use std::time::Duration;

use super::error::ConfigError;
use super::policies::{Policies, RuleSpec, SlowStartSettings};
use super::ribbon::{DEFAULT_PING_INTERVAL_SECS, RuleKind, ServerListKind};
use super::spring_loadbalancer::{DEFAULT_MIN_BACKOFF, LoadBalancerSettings};
use super::value::{DAY_MS, DAY_S, MAX_RETRIES};
use crate::discovery::RefreshConfig;
use crate::health::ActiveHealthCheck;
use crate::instance::Instance;
use crate::retry::RetryPolicy;
use crate::rule::Rule;
#[cfg(doc)]
use crate::rule::ZoneAvoidance;
use crate::stats::StatsConfig;

/// The settings of one client, with the global `ribbon.<Key>` defaults and
/// the Spring Cloud LoadBalancer keys merged in. `None` means "not set":
/// the crate's default applies (given per field). Read from a file by
/// [`RibbonConfig`](super::RibbonConfig), or filled in by hand; checked by
/// [`ClientConfig::validate`] when a builder is configured from it.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The client name, which is the service id requests use
    /// (`http://user-service/...`) and the Eureka app name.
    pub name: String,
    /// The static instances: `listOfServers`, else Spring's simple
    /// discovery instances (ids, metadata). Default: none.
    pub list_of_servers: Option<Vec<Instance>>,
    /// `NFLoadBalancerRuleClassName`, read. Default: round robin.
    pub rule: Option<RuleKind>,
    /// `NFLoadBalancerRuleClassName` as written.
    pub rule_class_name: Option<String>,
    /// `MaxAutoRetries`: retries on the same instance, 0 to 100. Default 0.
    pub max_auto_retries: Option<u32>,
    /// `MaxAutoRetriesNextServer`: retries on other instances, 0 to 100.
    /// Default 1.
    pub max_auto_retries_next_server: Option<u32>,
    /// `OkToRetryOnAllOperations`: retry non-idempotent methods too.
    /// Default `false`.
    pub ok_to_retry_on_all_operations: Option<bool>,
    /// `retryableStatusCodes`: statuses retried for idempotent requests.
    /// Default 502, 503, 504.
    pub retryable_status_codes: Option<Vec<u16>>,
    /// `ReadTimeout` (ms): bound on each attempt; zero means none.
    /// Default: unset, so the balancer's 5 s (Ribbon's) applies.
    pub read_timeout: Option<Duration>,
    /// `ConnectTimeout` (ms): set on the balancer
    /// ([`Builder::connect_timeout`](crate::Builder::connect_timeout)), which
    /// puts it on the connector of the client it builds
    /// ([`Builder::build_http`](crate::Builder::build_http)) and names it in
    /// errors; set it on a client of your own from
    /// [`Builder::get_connect_timeout`](crate::Builder::get_connect_timeout).
    /// Zero means none. Default: unset, so 2 s (Ribbon's) applies.
    pub connect_timeout: Option<Duration>,
    /// `ServerListRefreshInterval` (ms, at least 1): time between instance
    /// list fetches. Default 30 s.
    pub server_list_refresh_interval: Option<Duration>,
    /// `HealthCheckPath` (this crate's key): path of active health checks;
    /// setting it turns them on. Default: off.
    pub health_check_path: Option<String>,
    /// `NFLoadBalancerPingInterval` (seconds, as in Ribbon, at least 1):
    /// time between active health checks. Default 30 s (Ribbon's default
    /// when read from configuration).
    pub ping_interval: Option<Duration>,
    /// `EnableZoneAffinity`: prefer the client's own zone. Default `false`.
    pub enable_zone_affinity: Option<bool>,
    /// `EnableZoneExclusivity`: read as zone affinity (other zones are
    /// still used when the own zone has no available instance). Default
    /// `false`.
    pub enable_zone_exclusivity: Option<bool>,
    /// The client's own zone: `zone`, else `spring.cloud.loadbalancer.zone`,
    /// else Spring's `eureka.instance.metadata-map.zone`. Default: none.
    pub zone: Option<String>,
    /// `DeploymentContextBasedVipAddresses`: recorded only (the client name
    /// is looked up in Eureka). Default: none.
    pub vip_addresses: Option<Vec<String>>,
    /// `NIWSServerListClassName`, read. Default: chosen as the
    /// [module docs](super) describe.
    pub server_list: Option<ServerListKind>,
    /// Spring's `ribbon.eureka.enabled`: `false` makes the client use
    /// `listOfServers`. Default `true`.
    pub eureka_enabled: Option<bool>,
    /// `connectionFailureCountThreshold`: successive connection failures
    /// that trip an instance's circuit breaker, 1 to 1 000 000
    /// ([`StatsConfig::breaker_threshold`]). Default 3.
    pub connection_failure_count_threshold: Option<u32>,
    /// `circuitTripTimeoutFactorSeconds` (seconds, 1 to 86 400): the first
    /// blackout, doubled per further failure
    /// ([`StatsConfig::breaker_base`]). Default 10 s.
    pub circuit_trip_timeout_factor: Option<Duration>,
    /// `circuitTripMaxTimeoutSeconds` (seconds, 1 to 86 400): the longest
    /// blackout ([`StatsConfig::breaker_max`]). Default 30 s.
    pub circuit_trip_max_timeout: Option<Duration>,
    /// `SlowStartWindow`, `SlowStartAggression`, `SlowStartMinWeightPercent`
    /// (this crate's keys): Envoy-style slow start. Default: off.
    pub slow_start: SlowStartSettings,
    /// The `spring.cloud.loadbalancer.*` keys of this client, per-client
    /// form over global form.
    pub load_balancer: LoadBalancerSettings,
}

/// The retry settings in effect: Ribbon's keys over Spring Cloud
/// LoadBalancer's over the defaults.
#[derive(Debug, Clone, PartialEq)]
struct RetryValues {
    same: u32,
    next: u32,
    all_operations: bool,
    codes: Option<Vec<u16>>,
    backoff: Option<(Duration, Duration)>,
}

impl ClientConfig {
    /// A client with nothing set.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// The zone requests prefer, if any (see the [module docs](super)).
    pub fn preferred_zone(&self) -> Option<&str> {
        let zone = self.zone.as_deref()?;
        let affinity = self.enable_zone_affinity == Some(true)
            || self.enable_zone_exclusivity == Some(true)
            || (self.rule == Some(RuleKind::ZoneAvoidance)
                && self.enable_zone_affinity != Some(false))
            // Spring's zone preference is a list filter: it keeps to the
            // zone whatever rule picks, a Ribbon rule key's too.
            || (self.enable_zone_affinity != Some(false) && self.load_balancer.prefers_zone());
        affinity.then_some(zone)
    }

    /// A new rule as configured: the [`RuleKind`] (`NFLoadBalancerRuleClassName`,
    /// else as `spring.cloud.loadbalancer.configurations` says, else round
    /// robin), wrapped in [`ZoneAvoidance`] with the
    /// [preferred zone](ClientConfig::preferred_zone) when there is one.
    pub fn make_rule(&self) -> Box<dyn Rule> {
        self.rule_spec().make()
    }

    fn retry_values(&self) -> RetryValues {
        let lb = &self.load_balancer.retry;
        let off = lb.enabled == Some(false);
        let spring = |v: Option<u32>| if off { Some(0) } else { v };
        let backoff = match (lb.backoff.enabled, off) {
            (Some(true), false) => Some((
                lb.backoff.min_backoff.unwrap_or(DEFAULT_MIN_BACKOFF),
                lb.backoff
                    .max_backoff
                    .unwrap_or(Duration::from_millis(DAY_MS)),
            )),
            (Some(false), _) => Some((Duration::ZERO, Duration::ZERO)),
            _ => None,
        };
        RetryValues {
            same: (self.max_auto_retries)
                .or(spring(lb.max_retries_on_same_service_instance))
                .unwrap_or(0),
            next: (self.max_auto_retries_next_server)
                .or(spring(lb.max_retries_on_next_service_instance))
                .unwrap_or(1),
            // Off, the Spring keys are off (helper 205: the global
            // `retryable-status-codes` still applied).
            all_operations: (self.ok_to_retry_on_all_operations)
                .or(lb.retry_on_all_operations.filter(|_| !off))
                .unwrap_or(false),
            codes: (self.retryable_status_codes.clone())
                .or_else(|| lb.retryable_status_codes.clone().filter(|_| !off)),
            backoff,
        }
    }

    /// The retry policy: [`RetryPolicy::default`] with `MaxAutoRetries`,
    /// `MaxAutoRetriesNextServer`, `OkToRetryOnAllOperations` and
    /// `retryableStatusCodes` applied, each falling back to its
    /// `spring.cloud.loadbalancer.retry.*` counterpart. `ReadTimeout` is
    /// not in it: it sets [`Builder::read_timeout`](crate::Builder::read_timeout), the per-try bound of
    /// a policy without its own [`RetryPolicy::per_try_timeout`], so a
    /// per-try timeout set in code wins, and a file setting only
    /// `ReadTimeout` leaves the builder's retry policy as it was.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry_over(RetryPolicy::default())
    }

    /// `policy` with the retry keys that are set applied, each setting
    /// alone: the counts (a Ribbon key, else its Spring counterpart; with
    /// `retry.enabled` false the Spring counts are 0), all operations, the
    /// status codes and the backoff (with `retry.backoff.enabled`). Its
    /// per-try timeout, deadline and budget are kept. Before,
    /// [`RibbonConfig::apply`](super::RibbonConfig::apply) started from
    /// [`RetryPolicy::default`] for any retry key, so a shared file's
    /// `OkToRetryOnAllOperations=true` or a written-out
    /// `retry.enabled=true` made a balancer built with
    /// [`RetryPolicy::none`] send a POST to a second server, and dropped
    /// its deadline (helper 210).
    pub(crate) fn retry_over(&self, mut policy: RetryPolicy) -> RetryPolicy {
        let lb = &self.load_balancer.retry;
        let off = lb.enabled == Some(false);
        let spring = |v: Option<u32>| if off { Some(0) } else { v };
        if let Some(same) = (self.max_auto_retries).or(spring(lb.max_retries_on_same_service_instance)) {
            policy = policy.max_same(same);
        }
        if let Some(next) =
            (self.max_auto_retries_next_server).or(spring(lb.max_retries_on_next_service_instance))
        {
            policy = policy.max_next(next);
        }
        let v = self.retry_values();
        if (self.ok_to_retry_on_all_operations)
            .or(lb.retry_on_all_operations.filter(|_| !off))
            .is_some()
        {
            policy = policy.retry_on_all_operations(v.all_operations);
        }
        if let Some(codes) = v.codes {
            policy = policy.retryable_statuses(codes);
        }
        if let Some((base, cap)) = v.backoff {
            policy = policy.backoff(base, cap);
        }
        policy
    }

    fn refresh_interval(&self) -> Option<Duration> {
        (self.server_list_refresh_interval).or(self.load_balancer.cache.ttl)
    }

    /// The refresh: [`RefreshConfig::default`] with
    /// `ServerListRefreshInterval` (else `cache.ttl`) and
    /// `service-discovery.timeout` applied.
    pub fn refresh_config(&self) -> RefreshConfig {
        self.refresh_over(RefreshConfig::default())
    }

    /// `config` with the keys that are set applied.
    pub(crate) fn refresh_over(&self, mut config: RefreshConfig) -> RefreshConfig {
        if let Some(interval) = self.refresh_interval() {
            config.interval = interval;
        }
        if let Some(timeout) = self.load_balancer.service_discovery_timeout {
            config.fetch_timeout = timeout;
        }
        config
    }

    /// The active health check: `HealthCheckPath` every
    /// `NFLoadBalancerPingInterval` seconds (default 30; each wait
    /// lengthened by up to a tenth of it, at most 1 s) when the path is
    /// set, else Spring Cloud LoadBalancer's `health-check` configuration
    /// (see [`LoadBalancerSettings::health_check`]); `None` when off.
    pub fn health_check(&self) -> Option<ActiveHealthCheck> {
        let Some(path) = self.health_check_path.as_deref() else {
            return self.load_balancer.active_health_check();
        };
        let interval = self
            .ping_interval
            .unwrap_or(Duration::from_secs(DEFAULT_PING_INTERVAL_SECS));
        Some(ActiveHealthCheck {
            interval,
            interval_jitter: crate::health::active::jitter_for(interval),
            ..ActiveHealthCheck::new(path)
        })
    }

    /// The circuit breaker's settings: [`StatsConfig::default`] with
    /// `connectionFailureCountThreshold`, `circuitTripTimeoutFactorSeconds`
    /// and `circuitTripMaxTimeoutSeconds` applied.
    pub fn stats_config(&self) -> StatsConfig {
        self.stats_over(StatsConfig::default())
    }

    /// `stats` with the keys that are set applied.
    pub(crate) fn stats_over(&self, mut stats: StatsConfig) -> StatsConfig {
        if let Some(n) = self.connection_failure_count_threshold {
            stats.breaker_threshold = n;
        }
        if let Some(base) = self.circuit_trip_timeout_factor {
            stats.breaker_base = base;
        }
        if let Some(max) = self.circuit_trip_max_timeout {
            stats.breaker_max = max;
        }
        stats
    }

    /// Checks every set field against its key's range (a [`ClientConfig`]
    /// filled in by hand skips the checks of the file readers).
    ///
    /// # Errors
    /// [`OutOfRange`](super::ConfigErrorKind::OutOfRange) naming the key
    /// (`<name>.ribbon.<Key>`), the value and the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{}.ribbon.{k}", self.name);
        let count = |k: &str, v: Option<u32>, range: std::ops::RangeInclusive<u64>| match v {
            Some(n) if !range.contains(&u64::from(n)) => Err(ConfigError::out_of_range(
                &key(k),
                &n.to_string(),
                range,
                "count",
            )),
            _ => Ok(()),
        };
        let dur = |k: &str, v: Option<Duration>, range: std::ops::RangeInclusive<u64>, unit| {
            let n = v.map(|d| match unit {
                "s" => d.as_secs(),
                _ => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            });
            match n {
                Some(n) if !range.contains(&n) => Err(ConfigError::out_of_range(
                    &key(k),
                    &n.to_string(),
                    range,
                    unit,
                )),
                _ => Ok(()),
            }
        };
        count("MaxAutoRetries", self.max_auto_retries, 0..=MAX_RETRIES)?;
        count(
            "MaxAutoRetriesNextServer",
            self.max_auto_retries_next_server,
            0..=MAX_RETRIES,
        )?;
        count(
            "connectionFailureCountThreshold",
            self.connection_failure_count_threshold,
            1..=1_000_000,
        )?;
        dur("ReadTimeout", self.read_timeout, 0..=DAY_MS, "ms")?;
        dur(
            "ServerListRefreshInterval",
            self.server_list_refresh_interval,
            1..=DAY_MS,
            "ms",
        )?;
        dur(
            "NFLoadBalancerPingInterval",
            self.ping_interval,
            1..=DAY_S,
            "s",
        )?;
        dur(
            "circuitTripTimeoutFactorSeconds",
            self.circuit_trip_timeout_factor,
            1..=DAY_S,
            "s",
        )?;
        dur(
            "circuitTripMaxTimeoutSeconds",
            self.circuit_trip_max_timeout,
            1..=DAY_S,
            "s",
        )?;
        for code in self.retryable_status_codes.iter().flatten() {
            if !(100..=599).contains(code) {
                return Err(ConfigError::out_of_range(
                    &key("retryableStatusCodes"),
                    &code.to_string(),
                    100..=599,
                    "status",
                ));
            }
        }
        self.slow_start.validate(&self.name)?;
        self.load_balancer.validate(&self.name)
    }

    pub(crate) fn rule_spec(&self) -> RuleSpec {
        let kind = (self.rule)
            .or_else(|| self.load_balancer.rule_kind())
            .unwrap_or(RuleKind::RoundRobin);
        RuleSpec {
            kind,
            preferred_zone: self.preferred_zone().map(str::to_owned),
            spring_weights: self.rule.is_none()
                && self.load_balancer.configuration
                    == Some(super::LoadBalancerConfiguration::Weighted),
            policies: Policies::new(&self.load_balancer, &self.slow_start),
        }
    }

    fn sets_rule(&self) -> bool {
        self.rule.is_some()
            || self.preferred_zone().is_some()
            || self.load_balancer.rule_kind().is_some()
            || self.rule_spec().policies != Policies::default()
    }

    fn sets_retry(&self) -> bool {
        let lb = &self.load_balancer.retry;
        self.max_auto_retries.is_some()
            || self.max_auto_retries_next_server.is_some()
            || self.ok_to_retry_on_all_operations.is_some()
            || self.retryable_status_codes.is_some()
            || lb.sets_applied()
    }

    fn sets_stats(&self) -> bool {
        self.connection_failure_count_threshold.is_some()
            || self.circuit_trip_timeout_factor.is_some()
            || self.circuit_trip_max_timeout.is_some()
    }
}

/// The rule of a balancer serving all `clients` when some client routes by
/// hint: the first client's rule, with each client's own hint and header,
/// and the global ones (`global`: `hint.default`, `hint-header-name`) for
/// other services.
pub(crate) fn hint_spec(clients: &[ClientConfig], global: &LoadBalancerSettings) -> Option<RuleSpec> {
    let mut hint = clients.iter().find_map(|c| c.rule_spec().policies.hint)?;
    let mut spec = clients.first()?.rule_spec();
    hint.default = global.hint.clone();
    hint.header = global.hint_header_name.clone();
    hint.services = (clients.iter())
        .filter_map(|c| Some((c.name.clone(), c.load_balancer.hint.clone()?)))
        .collect();
    hint.service_headers = (clients.iter())
        .filter_map(|c| Some((c.name.clone(), c.load_balancer.hint_header_name.clone()?)))
        .collect();
    spec.policies.hint = Some(hint);
    Some(spec)
}
