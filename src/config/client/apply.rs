//! What a [`ClientConfig`] sets on a [`Builder`], and the balancer-wide
//! settings compared between clients.

use std::time::Duration;

use super::ClientConfig;
use crate::service::Builder;

impl ClientConfig {
    /// The balancer-wide settings in effect, one per Ribbon key (a Spring
    /// Cloud LoadBalancer counterpart shows under the Ribbon name), as
    /// shown in a conflict.
    pub(crate) fn balancer_settings(&self) -> [(&'static str, String); 14] {
        let v = self.retry_values();
        // As a set: `503,502` and `502,503` agree (helper 205).
        let codes = v.codes.as_ref().map_or_else(
            || "502,503,504".to_owned(),
            |c| {
                let set: std::collections::BTreeSet<u16> = c.iter().copied().collect();
                set.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
            },
        );
        let stats = self.stats_config();
        let refresh = self.refresh_config();
        [
            (
                "NFLoadBalancerRuleClassName",
                self.rule_spec().kind.name().to_owned(),
            ),
            (
                "spring.cloud.loadbalancer.configurations",
                self.rule_spec().policies.balancer_wide(),
            ),
            (
                "zone",
                self.preferred_zone()
                    .unwrap_or("no preferred zone")
                    .to_owned(),
            ),
            ("MaxAutoRetries", v.same.to_string()),
            ("MaxAutoRetriesNextServer", v.next.to_string()),
            ("OkToRetryOnAllOperations", v.all_operations.to_string()),
            ("retryableStatusCodes", codes),
            // As `configure` applies them: unset keeps the default, zero
            // means no bound.
            (
                "ReadTimeout",
                timeout_setting(self.read_timeout, crate::service::DEFAULT_READ_TIMEOUT),
            ),
            (
                "ConnectTimeout",
                timeout_setting(
                    self.connect_timeout,
                    crate::service::DEFAULT_CONNECT_TIMEOUT,
                ),
            ),
            ("retry.backoff", format!("{:?}", v.backoff)),
            ("ServerListRefreshInterval", format!("{refresh:?}")),
            ("HealthCheckPath", format!("{:?}", self.health_check())),
            (
                "connectionFailureCountThreshold",
                stats.breaker_threshold.to_string(),
            ),
            (
                "circuitTripTimeoutFactorSeconds",
                format!("{:?}/{:?}", stats.breaker_base, stats.breaker_max),
            ),
        ]
    }

    /// Sets the builder's rule, retry, refresh, breaker and health check
    /// from the keys that are set (`all`: from every key, defaults
    /// included). A refresh or breaker key changes that one setting of the
    /// builder's (before, it reset the others set in code to their
    /// defaults; helper 201).
    pub(crate) fn configure(&self, mut builder: Builder, all: bool) -> Builder {
        if all || self.sets_rule() {
            let spec = self.rule_spec();
            use crate::config::spring_loadbalancer::LoadBalancerConfiguration as C;
            let names_rule = self.rule.is_some()
                || matches!(
                    self.load_balancer.configuration,
                    Some(C::Default | C::RoundRobin | C::Random | C::Weighted)
                );
            if all || names_rule {
                builder = builder.rule(move || spec.make());
            } else {
                // Wrapper keys alone (a hint header, sticky sessions, slow
                // start, a zone) wrap the builder's own rule, not round
                // robin (before, they replaced a rule set in code; helper
                // 201).
                let base = builder.rule_factory();
                let make = std::sync::Arc::clone(&base);
                builder = builder.rule_over_base(base, move || spec.wrap(Box::new(make())));
            }
        }
        if all || self.sets_retry() {
            // Each retry key changes its setting of the builder's policy.
            let base = if all { crate::retry::RetryPolicy::default() } else { builder.get_retry_policy().clone() };
            builder = builder.retry(self.retry_over(base));
        }
        if all
            || self.refresh_interval().is_some()
            || self.load_balancer.service_discovery_timeout.is_some()
        {
            let base = if all { Default::default() } else { builder.refresh_set().clone() };
            builder = builder.refresh(self.refresh_over(base));
        }
        if all || self.sets_stats() {
            let base = if all { Default::default() } else { builder.stats_set().clone() };
            builder = builder.stats(self.stats_over(base));
        }
        match builder.get_active_health_check().filter(|_| !all) {
            // A check set in code: the file's keys change its path and
            // interval only (before, a path key reset the interval to
            // Ribbon's 30 s, an interval key alone did nothing, and
            // `configurations: health-check` replaced the path; helper
            // 205).
            Some(code) => {
                let check = self.health_over(code.clone());
                builder = builder.active_health_check(check);
            }
            None => {
                if let Some(check) = self.health_check() {
                    builder = builder.active_health_check(check);
                }
            }
        }
        // Zero means none, as in Ribbon; unset keeps the builder's default.
        let timeout = |t: Duration| (!t.is_zero()).then_some(t);
        if let Some(t) = self.read_timeout {
            builder = builder.read_timeout(timeout(t));
        }
        if let Some(t) = self.connect_timeout {
            builder = builder.connect_timeout(timeout(t));
        }
        builder
    }
}


/// A timeout key as the balancer applies it: unset is the default, zero no
/// bound. Shown by its value alone, so a client writing out the default
/// agrees with one leaving it unset (before, `5000 ms` and `5000 ms
/// (default)` conflicted; helper 201).
fn timeout_setting(set: Option<Duration>, default: Duration) -> String {
    match set.unwrap_or(default) {
        t if t.is_zero() => "none (0)".to_owned(),
        t => format!("{} ms", t.as_millis()),
    }
}

impl ClientConfig {
    /// `check` with the health keys that are set: `HealthCheckPath` or
    /// `health-check.path` (an empty one leaves the path), and
    /// `NFLoadBalancerPingInterval` or `health-check.interval` (its jitter
    /// to scale). The code's probe timeout is kept: Spring's interval is
    /// also its probe timeout, but only where the file makes the check
    /// (`health_check`); here it made a 500 ms timeout 30 s, so a hung
    /// instance took three 30 s probes to be marked down (helper 210).
    fn health_over(&self, mut check: crate::health::ActiveHealthCheck) -> crate::health::ActiveHealthCheck {
        let spring = &self.load_balancer.health_check;
        let path = (self.health_check_path.as_deref())
            .or(spring.path.as_deref())
            .filter(|p| !p.is_empty());
        if let Some(path) = path {
            check.path = crate::health::ActiveHealthCheck::new(path).path;
        }
        if let Some(interval) = self.ping_interval.or(spring.interval) {
            check.interval = interval;
            check.interval_jitter = crate::health::active::jitter_for(interval);
        }
        check
    }
}
