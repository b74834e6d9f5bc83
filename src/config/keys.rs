//! The one table from key to parser to field: every key this module reads
//! under `ribbon.` / `<client>.ribbon.` ([`RIBBON`]) and under
//! `spring.cloud.loadbalancer.` / `spring.cloud.loadbalancer.clients.<name>.`
//! ([`SPRING`]), with the parser and range of its value and the field it
//! sets. Properties and YAML both arrive here as flat `(key, value)` pairs,
//! so both formats read every key the same way; unknown keys are matched
//! against the same table for the nearest known one.

use super::error::ConfigError;
use super::ribbon::{RuleKind, ServerListKind};
use super::scope::{RibbonScope, SpringScope};
use super::spring_loadbalancer::{LoadBalancerConfiguration, LoadBalancerSettings};
use super::value::{
    DAY_MS, DAY_S, Kv, MAX_RETRIES, boolean, count, duration, fraction, header_name, list, millis, spring_boolean,
    real, relaxed, secs, servers, status_codes, text, url_path,
};

/// One key: its name as documented (a trailing `.*` marks a map key such as
/// `hint.<serviceId>`) and how its value sets a field of scope `S`.
pub(crate) struct KeyDef<S: 'static> {
    pub(crate) name: &'static str,
    pub(crate) apply: fn(&mut S, &Kv<'_>) -> Result<(), ConfigError>,
}

macro_rules! key {
    ($name:literal, |$s:ident, $kv:ident| $body:expr) => {
        KeyDef {
            name: $name,
            apply: |$s, $kv| {
                $body;
                Ok(())
            },
        }
    };
}

/// Ribbon's keys, case-sensitive as Ribbon writes them.
pub(crate) const RIBBON: &[KeyDef<RibbonScope>] = &[
    key!("listOfServers", |s, kv| s.servers = Some(servers(kv)?)),
    key!("NFLoadBalancerRuleClassName", |s, kv| {
        let (kind, class) = rule(kv)?;
        (s.c.rule, s.c.rule_class_name) = (Some(kind), Some(class));
    }),
    key!("MaxAutoRetries", |s, kv| s.c.max_auto_retries =
        Some(count(kv, 0..=MAX_RETRIES)?)),
    key!("MaxAutoRetriesNextServer", |s, kv| {
        s.c.max_auto_retries_next_server = Some(count(kv, 0..=MAX_RETRIES)?);
    }),
    key!("OkToRetryOnAllOperations", |s, kv| {
        s.c.ok_to_retry_on_all_operations = Some(boolean(kv)?);
    }),
    key!("retryableStatusCodes", |s, kv| s.c.retryable_status_codes =
        Some(status_codes(kv)?)),
    key!("ReadTimeout", |s, kv| s.c.read_timeout =
        Some(millis(kv, 0..=DAY_MS)?)),
    key!("ConnectTimeout", |s, kv| s.c.connect_timeout =
        Some(millis(kv, 0..=DAY_MS)?)),
    key!("ServerListRefreshInterval", |s, kv| {
        s.c.server_list_refresh_interval = Some(millis(kv, 1..=DAY_MS)?);
    }),
    key!("HealthCheckPath", |s, kv| s.c.health_check_path =
        url_path(kv)?),
    key!("NFLoadBalancerPingInterval", |s, kv| s.c.ping_interval =
        Some(secs(kv, 1..=DAY_S)?)),
    key!("EnableZoneAffinity", |s, kv| s.c.enable_zone_affinity =
        Some(boolean(kv)?)),
    key!("EnableZoneExclusivity", |s, kv| s
        .c
        .enable_zone_exclusivity =
        Some(boolean(kv)?)),
    key!("zone", |s, kv| s.c.zone = text(kv)),
    key!("DeploymentContextBasedVipAddresses", |s, kv| s
        .c
        .vip_addresses =
        Some(list(kv)?)),
    key!("NIWSServerListClassName", |s, kv| s.c.server_list =
        Some(server_list(kv)?)),
    key!("eureka.enabled", |s, kv| s.c.eureka_enabled =
        Some(boolean(kv)?)),
    key!("connectionFailureCountThreshold", |s, kv| {
        s.c.connection_failure_count_threshold = Some(count(kv, 1..=1_000_000)?);
    }),
    key!("circuitTripTimeoutFactorSeconds", |s, kv| {
        s.c.circuit_trip_timeout_factor = Some(secs(kv, 1..=DAY_S)?);
    }),
    key!("circuitTripMaxTimeoutSeconds", |s, kv| {
        s.c.circuit_trip_max_timeout = Some(secs(kv, 1..=DAY_S)?);
    }),
    key!("SlowStartWindow", |s, kv| s.c.slow_start.window =
        Some(millis(kv, 0..=DAY_MS)?)),
    key!("SlowStartAggression", |s, kv| s.c.slow_start.aggression =
        Some(real(kv, 0.0, false, 100.0)?)),
    key!("SlowStartMinWeightPercent", |s, kv| s
        .c
        .slow_start
        .min_weight_percent =
        Some(real(kv, 0.0, true, 100.0)?)),
];

/// Spring Cloud LoadBalancer's keys, after `spring.cloud.loadbalancer.` or
/// `spring.cloud.loadbalancer.clients.<name>.`, matched with Spring's
/// relaxed binding (case, `-` and `_` ignored).
pub(crate) const SPRING: &[KeyDef<SpringScope>] = &[
    key!("configurations", |s, kv| s.lb.configuration =
        Some(configuration(kv)?)),
    key!("zone", |s, kv| s.lb.zone = text(kv)),
    key!("hint.*", |s, kv| s
        .hints
        .push((kv.arg.to_owned(), kv.value.to_owned()))),
    key!("hint-header-name", |s, kv| s.lb.hint_header_name =
        Some(header_name(kv)?)),
    key!("health-check.initial-delay", |s, kv| {
        s.lb.health_check.initial_delay = Some(duration(kv, 0..=DAY_MS)?);
    }),
    key!("health-check.interval", |s, kv| {
        // The checker's least interval is 10 ms.
        s.lb.health_check.interval = Some(duration(kv, 10..=DAY_MS)?);
    }),
    key!("health-check.path.*", |s, kv| {
        let path = url_path(kv)?.unwrap_or_default();
        s.health_paths.push((kv.arg.to_owned(), path));
    }),
    key!("health-check.port", |s, kv| {
        s.lb.health_check.port = Some(u16::try_from(count(kv, 1..=65_535)?).unwrap_or(u16::MAX));
    }),
    key!("health-check.repeat-health-check", |s, kv| {
        s.lb.health_check.repeat_health_check = Some(spring_boolean(kv)?);
    }),
    key!("health-check.refetch-instances", |s, kv| {
        s.lb.health_check.refetch_instances = Some(spring_boolean(kv)?);
    }),
    key!("health-check.refetch-instances-interval", |s, kv| {
        s.lb.health_check.refetch_instances_interval = Some(duration(kv, 1..=DAY_MS)?);
    }),
    key!("health-check.update-results-list", |s, kv| {
        s.lb.health_check.update_results_list = Some(spring_boolean(kv)?);
    }),
    key!("retry.enabled", |s, kv| s.lb.retry.enabled =
        Some(spring_boolean(kv)?)),
    key!("retry.max-retries-on-same-service-instance", |s, kv| {
        s.lb.retry.max_retries_on_same_service_instance = Some(count(kv, 0..=MAX_RETRIES)?);
    }),
    key!("retry.max-retries-on-next-service-instance", |s, kv| {
        s.lb.retry.max_retries_on_next_service_instance = Some(count(kv, 0..=MAX_RETRIES)?);
    }),
    key!("retry.retry-on-all-operations", |s, kv| {
        s.lb.retry.retry_on_all_operations = Some(spring_boolean(kv)?);
    }),
    key!("retry.retry-on-all-exceptions", |s, kv| {
        s.lb.retry.retry_on_all_exceptions = Some(spring_boolean(kv)?);
    }),
    key!("retry.retryable-status-codes", |s, kv| {
        s.lb.retry.retryable_status_codes = Some(status_codes(kv)?);
    }),
    key!("retry.retryable-exceptions", |s, kv| s
        .lb
        .retry
        .retryable_exceptions =
        Some(list(kv)?)),
    key!("retry.avoid-previous-instance", |s, kv| {
        s.lb.retry.avoid_previous_instance = Some(spring_boolean(kv)?);
    }),
    key!("retry.backoff.enabled", |s, kv| s
        .lb
        .retry
        .backoff
        .enabled =
        Some(spring_boolean(kv)?)),
    key!("retry.backoff.min-backoff", |s, kv| {
        s.lb.retry.backoff.min_backoff = Some(duration(kv, 0..=DAY_MS)?);
    }),
    key!("retry.backoff.max-backoff", |s, kv| {
        s.lb.retry.backoff.max_backoff = Some(duration(kv, 0..=DAY_MS)?);
    }),
    key!("retry.backoff.jitter", |s, kv| s.lb.retry.backoff.jitter =
        Some(fraction(kv)?)),
    key!("sticky-session.instance-id-cookie-name", |s, kv| {
        s.lb.sticky_session.instance_id_cookie_name = Some(header_name(kv)?);
    }),
    key!("sticky-session.add-service-instance-cookie", |s, kv| {
        s.lb.sticky_session.add_service_instance_cookie = Some(spring_boolean(kv)?);
    }),
    key!("subset.size", |s, kv| s.lb.subset.size =
        Some(count(kv, 1..=1_000_000)?)),
    key!("subset.instance-id", |s, kv| s.lb.subset.instance_id =
        text(kv)),
    key!("cache.enabled", |s, kv| s.lb.cache.enabled =
        Some(spring_boolean(kv)?)),
    key!("cache.ttl", |s, kv| s.lb.cache.ttl =
        Some(duration(kv, 1..=DAY_MS)?)),
    key!("cache.capacity", |s, kv| s.lb.cache.capacity =
        Some(count(kv, 1..=1_000_000)?)),
    key!("cache.caffeine.spec", |s, kv| s.lb.cache.caffeine_spec =
        text(kv)),
    key!("stats.micrometer.enabled", |s, kv| s.lb.micrometer_stats =
        Some(spring_boolean(kv)?)),
    key!("stats.include-path", |s, kv| s.lb.stats_include_path =
        Some(spring_boolean(kv)?)),
    key!("service-discovery.timeout", |s, kv| {
        s.lb.service_discovery_timeout = Some(duration(kv, 1..=DAY_MS)?);
    }),
    key!("enabled", |s, kv| s.lb.enabled = Some(spring_boolean(kv)?)),
    key!("eager-load.clients", |s, kv| s.eager_load = Some(list(kv)?)),
    key!("eureka.approximate-zone-from-hostname", |s, kv| {
        s.lb.approximate_zone_from_hostname = Some(spring_boolean(kv)?);
    }),
    key!("x-forwarded.enabled", |s, kv| s.lb.x_forwarded =
        Some(spring_boolean(kv)?)),
];

/// A key recognized and read but not (yet) applied: its name, whether a
/// settings value sets it (to other than what the crate does anyway), and
/// what happens instead.
pub(crate) type NotApplied = (
    &'static str,
    fn(&LoadBalancerSettings) -> bool,
    &'static str,
);

const LATER: &str = "recognized, not yet applied";

/// Every Spring key this crate reads but does not apply yet.
pub(crate) const NOT_APPLIED: &[NotApplied] = &[
    (
        "configurations",
        |s| s.configuration.is_some_and(|c| !c.is_applied()),
        "recognized, not yet applied (round robin is used)",
    ),
    (
        "health-check.initial-delay",
        |s| s.health_check.initial_delay.is_some(),
        LATER,
    ),
    (
        "health-check.port",
        |s| s.health_check.port.is_some(),
        LATER,
    ),
    (
        "health-check.repeat-health-check",
        |s| s.health_check.repeat_health_check == Some(false),
        LATER,
    ),
    (
        "health-check.refetch-instances",
        |s| s.health_check.refetch_instances == Some(true),
        LATER,
    ),
    (
        "health-check.refetch-instances-interval",
        |s| s.health_check.refetch_instances_interval.is_some(),
        LATER,
    ),
    (
        "health-check.update-results-list",
        |s| s.health_check.update_results_list.is_some(),
        LATER,
    ),
    (
        "retry.retry-on-all-exceptions",
        |s| s.retry.retry_on_all_exceptions == Some(true),
        LATER,
    ),
    (
        "retry.retryable-exceptions",
        |s| s.retry.retryable_exceptions.is_some(),
        "recognized, not applied (Java exception classes)",
    ),
    (
        "retry.avoid-previous-instance",
        |s| s.retry.avoid_previous_instance == Some(false),
        LATER,
    ),
    (
        "retry.backoff.jitter",
        |s| s.retry.backoff.jitter.is_some(),
        "recognized, not yet applied (the backoff is fully jittered)",
    ),
    (
        "cache.enabled",
        |s| s.cache.enabled == Some(false),
        "recognized, not applied (the list is kept between refreshes)",
    ),
    (
        "cache.capacity",
        |s| s.cache.capacity.is_some() || s.cache.caffeine_spec.is_some(),
        "recognized, not applied",
    ),
    (
        "enabled",
        |s| s.enabled == Some(false),
        "recognized, not applied",
    ),
    (
        "eureka.approximate-zone-from-hostname",
        |s| s.approximate_zone_from_hostname.is_some(),
        LATER,
    ),
    (
        "x-forwarded.enabled",
        |s| s.x_forwarded.is_some(),
        "recognized, not applied",
    ),
];

/// The Ribbon key named `name` (exact, case-sensitive).
pub(crate) fn ribbon_key(name: &str) -> Option<&'static KeyDef<RibbonScope>> {
    RIBBON.iter().find(|k| k.name == name)
}

/// The Spring key named `name` (relaxed), and for a map key its argument
/// (the part after the map's name, as written).
pub(crate) fn spring_key(name: &str) -> Option<(&'static KeyDef<SpringScope>, &str)> {
    let norm = relaxed(name);
    SPRING.iter().find_map(|k| match k.name.strip_suffix(".*") {
        None => (relaxed(k.name) == norm).then_some((k, "")),
        Some(map) => {
            let depth = map.split('.').count();
            let mut parts = name.splitn(depth + 1, '.');
            let head: Vec<&str> = parts.by_ref().take(depth).collect();
            let arg = parts.next().filter(|a| !a.trim().is_empty())?;
            (relaxed(&head.join(".")) == relaxed(map)).then_some((k, arg))
        }
    })
}

/// The known name nearest to `name` by edit distance (ignoring case, `-`
/// and `_`), with the distance.
pub(crate) fn nearest<'a>(name: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let norm = relaxed(name);
    names
        .map(|known| {
            (
                levenshtein(&norm, &relaxed(known.trim_end_matches(".*"))),
                known,
            )
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

/// Levenshtein distance, two rows; names are short (under 100 chars here,
/// longer ones are cut, so the cost is bounded).
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(128).collect();
    let b: Vec<char> = b.chars().take(128).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Reads the Ribbon key `name` (the part after `ribbon.`) into `scope`;
/// `Ok(false)` if the table has no such key.
pub(crate) fn set_ribbon(
    scope: &mut RibbonScope,
    name: &str,
    key: &str,
    value: &str,
) -> Result<bool, ConfigError> {
    let Some(def) = ribbon_key(name) else {
        return Ok(false);
    };
    (def.apply)(
        scope,
        &Kv {
            key,
            value,
            arg: "",
        },
    )?;
    Ok(true)
}

/// Reads the Spring key `name` (the part after the prefix) into `scope`;
/// `Ok(false)` if the table has no such key.
pub(crate) fn set_spring(
    scope: &mut SpringScope,
    name: &str,
    key: &str,
    value: &str,
) -> Result<bool, ConfigError> {
    let Some((def, arg)) = spring_key(name) else {
        return Ok(false);
    };
    (def.apply)(scope, &Kv { key, value, arg })?;
    Ok(true)
}

/// The keys set in `settings` that are recognized but not (yet) applied,
/// each with what happens instead.
pub(crate) fn not_applied(settings: &LoadBalancerSettings) -> Vec<(&'static str, &'static str)> {
    NOT_APPLIED
        .iter()
        .filter(|(_, set, _)| set(settings))
        .map(|(key, _, why)| (*key, *why))
        .collect()
}

fn rule(kv: &Kv<'_>) -> Result<(RuleKind, String), ConfigError> {
    let kind = RuleKind::from_class_name(kv.value).ok_or_else(|| {
        ConfigError::invalid(
            kv.key,
            kv.value,
            "not a known rule class (Ribbon's RoundRobinRule, RandomRule, \
             WeightedResponseTimeRule, AvailabilityFilteringRule, BestAvailableRule, \
             ZoneAvoidanceRule, RetryRule, or PeakEwmaP2c, WeightedRoundRobin, \
             ConsistentHash); custom rules are set with Builder::rule",
        )
    })?;
    Ok((kind, kv.value.to_owned()))
}

fn server_list(kv: &Kv<'_>) -> Result<ServerListKind, ConfigError> {
    ServerListKind::from_class_name(kv.value).ok_or_else(|| {
        ConfigError::invalid(
            kv.key,
            kv.value,
            "not a supported server list class (ConfigurationBasedServerList, \
             DiscoveryEnabledNIWSServerList)",
        )
    })
}

fn configuration(kv: &Kv<'_>) -> Result<LoadBalancerConfiguration, ConfigError> {
    LoadBalancerConfiguration::from_name(kv.value).ok_or_else(|| {
        ConfigError::invalid(
            kv.key,
            kv.value,
            "not a configuration (default, round-robin, random, zone-preference, health-check, \
             request-based-sticky-session, same-instance-preference, weighted, subset, api-version)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spring_keys_are_relaxed_and_maps_keep_their_argument() {
        let (k, arg) = spring_key("retry.maxRetriesOnNextServiceInstance").unwrap();
        assert_eq!(
            (k.name, arg),
            ("retry.max-retries-on-next-service-instance", "")
        );
        let (k, arg) = spring_key("health-check.path.User-Service").unwrap();
        assert_eq!((k.name, arg), ("health-check.path.*", "User-Service"));
        let (k, arg) = spring_key("hint.default").unwrap();
        assert_eq!((k.name, arg), ("hint.*", "default"));
        assert!(spring_key("hint").is_none());
        assert!(spring_key("retry.max").is_none());
    }

    #[test]
    fn nearest_names_by_edit_distance() {
        let spring = || SPRING.iter().map(|k| k.name);
        assert_eq!(
            nearest("retry.max-retries-on-next-instance", spring()),
            Some("retry.max-retries-on-next-service-instance")
        );
        assert_eq!(nearest("cache.tll", spring()), Some("cache.ttl"));
        assert_eq!(
            nearest("MaxAutoRetry", RIBBON.iter().map(|k| k.name)),
            Some("MaxAutoRetries")
        );
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
