//! Spring Cloud LoadBalancer's keys (`spring.cloud.loadbalancer.*` and the
//! per-client `spring.cloud.loadbalancer.clients.<name>.*`), read into
//! [`LoadBalancerSettings`] and mapped onto this crate's settings where it
//! has a counterpart.
//!
//! What each key becomes (defaults are Spring Cloud LoadBalancer 4.x's,
//! `LoadBalancerProperties`):
//!
//! | key (after `spring.cloud.loadbalancer.`) | form | becomes |
//! |---|---|---|
//! | `configurations` | SCLB's `default`, `zone-preference`, `health-check`, `weighted`, `request-based-sticky-session`, `same-instance-preference`, `subset`, `api-version`; also `round-robin`, `random` (this crate's) | the rule and its wrappers, see [`LoadBalancerConfiguration`] |
//! | `zone` | zone name | the client's zone (under Ribbon's `zone`, over `eureka.instance.metadata-map.zone`) |
//! | `hint.<serviceId>`, `hint.default` | text | hint routing ([`HintBased`]) with this hint for requests without the header (unset: the literal `default`); setting either hint key turns hint routing on (Spring needs `.withHints()` in code; there is no `configurations` value for it) |
//! | `hint-header-name` | header name | the header [`HintBased`] reads (default `X-SC-LB-Hint`; per client in a balancer serving several, `clients.<name>.hint-header-name`); also turns hint routing on |
//! | `health-check.path.<serviceId>`, `.default` | URL path, empty = no check | with `configurations: health-check`, the [`ActiveHealthCheck`] path (default `/actuator/health`) |
//! | `health-check.interval` | Spring duration | its interval and per-check timeout (default 25 s); over a check set in code (`apply`), its interval only |
//! | `health-check.initial-delay`, `.port`, `.repeat-health-check`, `.refetch-instances`, `.refetch-instances-interval`, `.update-results-list` | | recognized, not yet applied |
//! | `retry.enabled` | bool | `false`: no retries |
//! | `retry.max-retries-on-same-service-instance` | count | [`RetryPolicy::max_same`](crate::retry::RetryPolicy::max_same) (under `MaxAutoRetries`) |
//! | `retry.max-retries-on-next-service-instance` | count | [`RetryPolicy::max_next`](crate::retry::RetryPolicy::max_next) (under `MaxAutoRetriesNextServer`) |
//! | `retry.retry-on-all-operations` | bool | [`RetryPolicy::retry_on_all_operations`](crate::retry::RetryPolicy::retry_on_all_operations) |
//! | `retry.retryable-status-codes` | codes | [`RetryPolicy::retryable_statuses`](crate::retry::RetryPolicy::retryable_statuses) |
//! | `retry.backoff.enabled`, `.min-backoff`, `.max-backoff` | bool, durations | [`RetryPolicy::backoff`](crate::retry::RetryPolicy::backoff) (`false`: none) |
//! | `retry.backoff.jitter`, `retry.retry-on-all-exceptions`, `retry.retryable-exceptions`, `retry.avoid-previous-instance` | | recognized, not yet applied (Java exception classes have no counterpart; retries always go to another instance first) |
//! | `sticky-session.instance-id-cookie-name` | cookie name | with `configurations: request-based-sticky-session`, the cookie [`StickySession`] reads (default `sc-lb-instance-id`) |
//! | `sticky-session.add-service-instance-cookie` | bool, default `false` | [`Builder::service_instance_cookie`] (per client; in [`RibbonConfig::builder`](super::RibbonConfig::builder) the global key also sets [`Builder::instance_cookie`] for services discovered on demand): each attempt sends `<instance-id-cookie-name>=<instance id>` to the instance it goes to, replacing a pair of that name; ids that are not cookie values ([`instance_cookie`]) get none, and a pair of that name the request carried is dropped |
//! | `subset.size` | count, 1 to 1 000 000 | with `configurations: subset`, the [`Subset`] size (default 100) |
//! | `subset.instance-id` | text, `${…}` placeholders of `spring.application.name`, `server.port`, `spring.application.instance_id`, `spring.cloud.client.hostname`, `vcap.application.instance_id` resolved | the [`Subset`] client id (default: Spring's default instance id from those keys, with the machine's host name for `spring.cloud.client.hostname` unless set, as Spring fills it; else a random id) |
//! | `cache.ttl` | Spring duration | the refresh interval (under `ServerListRefreshInterval`) |
//! | `cache.enabled`, `cache.capacity`, `cache.caffeine.spec` | | recognized, not applied: the list is always kept between refreshes |
//! | `service-discovery.timeout` | Spring duration | [`RefreshConfig::fetch_timeout`](crate::discovery::RefreshConfig::fetch_timeout) |
//! | `stats.micrometer.enabled`, `stats.include-path` | bool | recognized: the crate's metrics go through the `metrics` facade whenever a recorder is installed |
//! | `eager-load.clients` | service ids | each becomes a configured client, so [`RibbonConfig::builder`](super::RibbonConfig::builder) declares it and its refresh starts when the balancer is built |
//! | `enabled`, `eureka.approximate-zone-from-hostname`, `x-forwarded.enabled` | | recognized, not yet applied |
//!
//! With `configurations: same-instance-preference` the rule is wrapped in
//! [`SameInstancePreference`]; with `weighted`, smooth weighted round robin
//! reads weights as SCLB does ([`WeightedRoundRobin::spring_weights`]).
//! The wrappers' order is: subset, sticky session or same instance, hint,
//! zone, slow start, rule.
//!
//! [`HintBased`]: crate::rule::HintBased
//! [`StickySession`]: crate::rule::StickySession
//! [`SameInstancePreference`]: crate::rule::SameInstancePreference
//! [`Subset`]: crate::rule::Subset
//! [`instance_cookie`]: crate::rule::sticky_session::instance_cookie
//! [`Builder::service_instance_cookie`]: crate::service::Builder::service_instance_cookie
//! [`Builder::instance_cookie`]: crate::service::Builder::instance_cookie
//! [`WeightedRoundRobin::spring_weights`]: crate::rule::WeightedRoundRobin::spring_weights
//!
//! Spring durations are a bare number of milliseconds, a number with a unit
//! (`ns`, `us`, `ms`, `s`, `m`, `h`, `d`) or ISO-8601 (`PT35S`). Keys match
//! with Spring's relaxed binding (case, `-` and `_` ignored).

use std::time::Duration;

use super::error::ConfigError;
use super::ribbon::RuleKind;
use super::value::{self, DAY_MS};
use crate::health::ActiveHealthCheck;

/// Spring Cloud LoadBalancer's default health check path.
const DEFAULT_HEALTH_PATH: &str = "/actuator/health";
/// Spring Cloud LoadBalancer's default least backoff.
pub(crate) const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(5);
/// Spring Cloud LoadBalancer's default health check interval.
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(25);

/// `spring.cloud.loadbalancer.configurations`: the predefined supplier
/// chain (Spring's `LoadBalancerClientConfiguration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoadBalancerConfiguration {
    /// `default`: round robin over the discovered list.
    Default,
    /// `round-robin` (accepted as `default`).
    RoundRobin,
    /// `random`: [`RuleKind::Random`].
    Random,
    /// `zone-preference`: round robin wrapped in zone avoidance with the
    /// client's zone preferred.
    ZonePreference,
    /// `health-check`: round robin with active health checks.
    HealthCheck,
    /// `weighted`: [`RuleKind::WeightedRoundRobin`] over each instance's
    /// weight (Eureka metadata `weight`), as SCLB's
    /// `WeightedServiceInstanceListSupplier` reads it.
    Weighted,
    /// `request-based-sticky-session`: round robin wrapped in
    /// [`StickySession`](crate::rule::StickySession).
    RequestBasedStickySession,
    /// `same-instance-preference`: round robin wrapped in
    /// [`SameInstancePreference`](crate::rule::SameInstancePreference).
    SameInstancePreference,
    /// `subset`: round robin wrapped in [`Subset`](crate::rule::Subset).
    Subset,
    /// `api-version`: recognized, not yet applied (round robin).
    ApiVersion,
}

impl LoadBalancerConfiguration {
    /// Reads a configuration name (case, `-` and `_` ignored); `None` if it
    /// is none of the above.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match value::relaxed(name.trim()).as_str() {
            "default" => Self::Default,
            "roundrobin" => Self::RoundRobin,
            "random" => Self::Random,
            "zonepreference" => Self::ZonePreference,
            "healthcheck" => Self::HealthCheck,
            "weighted" => Self::Weighted,
            "requestbasedstickysession" => Self::RequestBasedStickySession,
            "sameinstancepreference" => Self::SameInstancePreference,
            "subset" => Self::Subset,
            "apiversion" => Self::ApiVersion,
            _ => return None,
        })
    }

    /// Whether this crate applies the configuration today.
    pub fn is_applied(self) -> bool {
        self != Self::ApiVersion
    }
}

/// `health-check.*`. Default: every field `None` (Spring's defaults in each
/// field's doc).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct HealthCheckSettings {
    /// `initial-delay`: before the first check. Spring's default 0. Not
    /// yet applied.
    pub initial_delay: Option<Duration>,
    /// `interval`: between checks, also the per-check timeout. Default
    /// 25 s.
    pub interval: Option<Duration>,
    /// `path.<serviceId>`, else `path.default`: the path checked; empty
    /// means "no check, healthy". Default `/actuator/health`.
    pub path: Option<String>,
    /// `port`: the port checked instead of the instance's. Not yet applied.
    pub port: Option<u16>,
    /// `repeat-health-check` (default `true`). Not yet applied.
    pub repeat_health_check: Option<bool>,
    /// `refetch-instances` (default `false`). Not yet applied.
    pub refetch_instances: Option<bool>,
    /// `refetch-instances-interval` (default 25 s). Not yet applied.
    pub refetch_instances_interval: Option<Duration>,
    /// `update-results-list` (default `true`). Not yet applied.
    pub update_results_list: Option<bool>,
}

/// `retry.backoff.*`.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct BackoffSettings {
    /// `enabled` (default `false`; this crate's own default backoff applies
    /// when unset).
    pub enabled: Option<bool>,
    /// `min-backoff` (default 5 ms): the backoff's base.
    pub min_backoff: Option<Duration>,
    /// `max-backoff` (Spring's default is unbounded; here 1 day): its cap.
    pub max_backoff: Option<Duration>,
    /// `jitter`, 0.0 to 1.0 (default 0.5). Not yet applied: this crate's
    /// backoff is always fully jittered.
    pub jitter: Option<f64>,
}

/// `retry.*`.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct RetrySettings {
    /// `enabled` (default `true`): `false` turns retries off.
    pub enabled: Option<bool>,
    /// `max-retries-on-same-service-instance`, 0 to 100 (default 0).
    pub max_retries_on_same_service_instance: Option<u32>,
    /// `max-retries-on-next-service-instance`, 0 to 100 (default 1).
    pub max_retries_on_next_service_instance: Option<u32>,
    /// `retry-on-all-operations` (default `false`).
    pub retry_on_all_operations: Option<bool>,
    /// `retry-on-all-exceptions` (default `false`). Not yet applied.
    pub retry_on_all_exceptions: Option<bool>,
    /// `retryable-status-codes` (Spring's default none; this crate's 502,
    /// 503, 504 stay when unset).
    pub retryable_status_codes: Option<Vec<u16>>,
    /// `retryable-exceptions`: Java class names. Not applied.
    pub retryable_exceptions: Option<Vec<String>>,
    /// `avoid-previous-instance` (default `true`, as this crate always
    /// does). `false` is not yet applied.
    pub avoid_previous_instance: Option<bool>,
    /// `backoff.*`.
    pub backoff: BackoffSettings,
}

impl RetrySettings {
    /// Whether a key this crate applies is set: a file setting only keys
    /// read but not applied (`retry-on-all-exceptions`,
    /// `retryable-exceptions`, `avoid-previous-instance`, `backoff.jitter`)
    /// leaves a retry policy set in code as it was (helper 201).
    pub(crate) fn sets_applied(&self) -> bool {
        let b = &self.backoff;
        self.enabled.is_some()
            || self.max_retries_on_same_service_instance.is_some()
            || self.max_retries_on_next_service_instance.is_some()
            || self.retry_on_all_operations.is_some()
            || self.retryable_status_codes.is_some()
            || b.enabled.is_some()
            || b.min_backoff.is_some()
            || b.max_backoff.is_some()
    }
}

/// `sticky-session.*`: request-based sticky sessions (with
/// `configurations: request-based-sticky-session`).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct StickySessionSettings {
    /// `instance-id-cookie-name` (default `sc-lb-instance-id`).
    pub instance_id_cookie_name: Option<String>,
    /// `add-service-instance-cookie` (default `false`): each request gets
    /// the cookie `<instance-id-cookie-name>=<chosen instance id>`
    /// ([`Builder::service_instance_cookie`](crate::service::Builder::service_instance_cookie)).
    pub add_service_instance_cookie: Option<bool>,
}

/// `subset.*`: deterministic subsetting (with `configurations: subset`).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct SubsetSettings {
    /// `size`, 1 to 1 000 000 (default 100).
    pub size: Option<u32>,
    /// `instance-id`, placeholders resolved (default: Spring's default
    /// instance id from the identity keys, if the file sets any).
    pub instance_id: Option<String>,
}

/// `cache.*`.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct CacheSettings {
    /// `enabled` (default `true`). `false` is not applied: the list is kept
    /// between refreshes.
    pub enabled: Option<bool>,
    /// `ttl` (default 35 s in Spring): the refresh interval.
    pub ttl: Option<Duration>,
    /// `capacity` (default 256). Not applied.
    pub capacity: Option<u32>,
    /// `caffeine.spec`. Not applied.
    pub caffeine_spec: Option<String>,
}

/// The `spring.cloud.loadbalancer.*` settings of one client: its
/// `clients.<name>.*` keys over the global ones. `None` means not set.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct LoadBalancerSettings {
    /// `configurations`. Default: round robin.
    pub configuration: Option<LoadBalancerConfiguration>,
    /// `zone`: the client's zone for `zone-preference`.
    pub zone: Option<String>,
    /// `hint.<serviceId>`, else `hint.default`: the hint matched against
    /// instance metadata `hint` by [`HintBased`](crate::rule::HintBased).
    pub hint: Option<String>,
    /// `hint-header-name` (default `X-SC-LB-Hint`).
    pub hint_header_name: Option<String>,
    /// `health-check.*`.
    pub health_check: HealthCheckSettings,
    /// `retry.*`.
    pub retry: RetrySettings,
    /// `sticky-session.*`.
    pub sticky_session: StickySessionSettings,
    /// `subset.*`.
    pub subset: SubsetSettings,
    /// `cache.*`.
    pub cache: CacheSettings,
    /// `stats.micrometer.enabled` (default `false`).
    pub micrometer_stats: Option<bool>,
    /// `stats.include-path` (default `true`).
    pub stats_include_path: Option<bool>,
    /// `service-discovery.timeout` (default 30 s): bound on one fetch.
    pub service_discovery_timeout: Option<Duration>,
    /// `enabled` (default `true`). Not applied.
    pub enabled: Option<bool>,
    /// `eureka.approximate-zone-from-hostname`. Not yet applied.
    pub approximate_zone_from_hostname: Option<bool>,
    /// `x-forwarded.enabled`. Not applied.
    pub x_forwarded: Option<bool>,
}

impl LoadBalancerSettings {
    /// The rule `configurations` names, if set: random, weighted round
    /// robin, or round robin for every other configuration.
    pub fn rule_kind(&self) -> Option<RuleKind> {
        Some(match self.configuration? {
            LoadBalancerConfiguration::Random => RuleKind::Random,
            LoadBalancerConfiguration::Weighted => RuleKind::WeightedRoundRobin,
            _ => RuleKind::RoundRobin,
        })
    }

    /// Whether `configurations` is `zone-preference`.
    pub fn prefers_zone(&self) -> bool {
        self.configuration == Some(LoadBalancerConfiguration::ZonePreference)
    }

    /// The active health check of `configurations: health-check`: the path
    /// (default `/actuator/health`; empty means none) every `interval`
    /// (default 25 s), which is also the per-check timeout as in Spring;
    /// each wait lengthened by up to a tenth of it (at most 1 s).
    pub fn active_health_check(&self) -> Option<ActiveHealthCheck> {
        if self.configuration != Some(LoadBalancerConfiguration::HealthCheck) {
            return None;
        }
        let path = self
            .health_check
            .path
            .as_deref()
            .unwrap_or(DEFAULT_HEALTH_PATH);
        let interval = self
            .health_check
            .interval
            .unwrap_or(DEFAULT_HEALTH_INTERVAL);
        (!path.is_empty()).then(|| ActiveHealthCheck {
            interval,
            interval_jitter: crate::health::active::jitter_for(interval),
            timeout: interval,
            ..ActiveHealthCheck::new(path)
        })
    }

    /// Checks the set fields against their keys' ranges.
    ///
    /// # Errors
    /// [`OutOfRange`](super::ConfigErrorKind::OutOfRange) naming the key
    /// (`spring.cloud.loadbalancer.clients.<client>.<key>`).
    pub fn validate(&self, client: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("spring.cloud.loadbalancer.clients.{client}.{k}");
        let ms = |k: &str, d: Option<Duration>, min: u64| match d
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        {
            Some(n) if !(min..=DAY_MS).contains(&n) => Err(ConfigError::out_of_range(
                &key(k),
                &n.to_string(),
                min..=DAY_MS,
                "ms",
            )),
            _ => Ok(()),
        };
        ms("cache.ttl", self.cache.ttl, 1)?;
        ms("health-check.interval", self.health_check.interval, 10)?;
        ms(
            "service-discovery.timeout",
            self.service_discovery_timeout,
            1,
        )?;
        ms(
            "retry.backoff.min-backoff",
            self.retry.backoff.min_backoff,
            0,
        )?;
        let min_backoff = self
            .retry
            .backoff
            .min_backoff
            .unwrap_or(DEFAULT_MIN_BACKOFF);
        let min_ms = u64::try_from(min_backoff.as_millis()).unwrap_or(u64::MAX);
        ms(
            "retry.backoff.max-backoff",
            self.retry.backoff.max_backoff,
            min_ms,
        )?;
        let retries = [
            (
                "retry.max-retries-on-same-service-instance",
                self.retry.max_retries_on_same_service_instance,
            ),
            (
                "retry.max-retries-on-next-service-instance",
                self.retry.max_retries_on_next_service_instance,
            ),
        ];
        for (k, n) in retries {
            if let Some(n) = n.filter(|n| u64::from(*n) > value::MAX_RETRIES) {
                return Err(ConfigError::out_of_range(
                    &key(k),
                    &n.to_string(),
                    0..=value::MAX_RETRIES,
                    "count",
                ));
            }
        }
        if let Some(size) = self.subset.size.filter(|s| *s == 0 || *s > 1_000_000) {
            return Err(ConfigError::out_of_range(
                &key("subset.size"),
                &size.to_string(),
                1..=1_000_000,
                "count",
            ));
        }
        Ok(())
    }
}
