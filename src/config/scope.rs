//! The keys of one scope (global, or one client) before merging, and the
//! merge of a client's scopes over the global ones.

use super::client::ClientConfig;
use super::policies::AppIdentity;
use super::spring_loadbalancer::{LoadBalancerSettings, RetrySettings};
use crate::discovery::parse_list_of_servers;

/// The Ribbon keys of one scope (global `ribbon.` or one client), read but
/// not yet merged. The server list is kept as text so each client's
/// instances get its name.
#[derive(Debug, Clone, Default)]
pub(crate) struct RibbonScope {
    pub(crate) servers: Option<String>,
    pub(crate) c: ClientConfig,
}

/// `own.f = own.f.or(defaults.f)` for each listed field.
macro_rules! inherit {
    ($own:expr, $defaults:expr; $($field:ident),* $(,)?) => {
        $( if $own.$field.is_none() { $own.$field = $defaults.$field.clone(); } )*
    };
}

impl RibbonScope {
    /// This scope over `defaults`, as the client `name`, in `zone` (from
    /// Eureka's metadata) with the Spring settings `lb` (merged) and
    /// `own_retry` (the client's own `retry.*` Spring keys, unmerged).
    ///
    /// Each retry key goes by scope: the client's Ribbon key, else its
    /// Spring key, beats the global scope's (in the same order), so a
    /// client's Spring retry counts are not overridden by a global
    /// `ribbon.MaxAutoRetries`; counts no scope sets are the defaults.
    /// `retry.enabled` in effect is the client's own, else the global one
    /// (as Spring binds a client's keys over the global ones): `false`
    /// turns every Spring count and the global Ribbon keys off; a client's
    /// own `false` its own Ribbon keys too. The value in effect is shown
    /// under the Ribbon name.
    pub(crate) fn resolve(
        &self,
        defaults: &RibbonScope,
        name: &str,
        zone: Option<&str>,
        lb: LoadBalancerSettings,
        own_retry: Option<&RetrySettings>,
        global_retry: &RetrySettings,
    ) -> ClientConfig {
        let mut c = self.c.clone();
        let empty = RetrySettings::default();
        let own_retry = own_retry.unwrap_or(&empty);
        let (mine, global) = (&self.c, &defaults.c);
        let scopes = [(mine, own_retry), (global, global_retry)];
        // Spring binds a client's `retry.*` keys over a copy of the global
        // ones, so its `retry.enabled` in effect is the client's own, else
        // the global one: off, no Spring count of either scope retries (a
        // client's count under a global `false` retried before; helper
        // 201), and a client's `true` undoes the global `false` (its counts
        // not set are the defaults). A client's own Ribbon key is Ribbon's
        // setting, not Spring's: it beats the global switch, not its own.
        let spring_on = own_retry.enabled.or(global_retry.enabled) != Some(false);
        fn first<T>(
            (mine, own): (&ClientConfig, &RetrySettings),
            (global, global_spring): (&ClientConfig, &RetrySettings),
            spring_on: bool,
            ribbon: impl Fn(&ClientConfig) -> Option<T>,
            spring: impl Fn(&RetrySettings) -> Option<T>,
            off: Option<T>,
        ) -> Option<T> {
            match (own.enabled, off) {
                (Some(false), Some(off)) => Some(off),
                // Off, the global scope's keys are off too: the status
                // codes fall to the defaults (helper 205: a global
                // `ribbon.retryableStatusCodes=500` still applied).
                (_, off) => ribbon(mine).or_else(|| match spring_on {
                    true => spring(own)
                        .or_else(|| ribbon(global))
                        .or_else(|| spring(global_spring)),
                    false => off,
                }),
            }
        }
        c.max_auto_retries = first(
            scopes[0],
            scopes[1],
            spring_on,
            |r| r.max_auto_retries,
            |s| s.max_retries_on_same_service_instance,
            Some(0),
        );
        c.max_auto_retries_next_server = first(
            scopes[0],
            scopes[1],
            spring_on,
            |r| r.max_auto_retries_next_server,
            |s| s.max_retries_on_next_service_instance,
            Some(0),
        );
        c.ok_to_retry_on_all_operations = first(
            scopes[0],
            scopes[1],
            spring_on,
            |r| r.ok_to_retry_on_all_operations,
            |s| s.retry_on_all_operations,
            Some(false),
        );
        c.retryable_status_codes = first(
            scopes[0],
            scopes[1],
            spring_on,
            |r| r.retryable_status_codes.clone(),
            |s| s.retryable_status_codes.clone(),
            None,
        );
        inherit!(c, defaults.c;
            rule, rule_class_name, read_timeout, connect_timeout,
            server_list_refresh_interval, health_check_path, ping_interval, enable_zone_affinity,
            enable_zone_exclusivity, zone, vip_addresses, server_list, eureka_enabled,
            connection_failure_count_threshold, circuit_trip_timeout_factor,
            circuit_trip_max_timeout);
        inherit!(c.slow_start, defaults.c.slow_start; window, aggression, min_weight_percent);
        c.name = name.to_owned();
        // Validated when read; parsing does not depend on the name.
        c.list_of_servers = (self.servers.as_ref())
            .or(defaults.servers.as_ref())
            .map(|text| parse_list_of_servers(name, text).unwrap_or_default());
        c.zone = c
            .zone
            .or_else(|| lb.zone.clone())
            .or_else(|| zone.map(str::to_owned));
        c.load_balancer = lb;
        c
    }
}

/// The Spring keys of one scope (global or one client), read but not yet
/// merged; map keys keep their argument.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpringScope {
    pub(crate) lb: LoadBalancerSettings,
    /// `hint.<arg>` in order.
    pub(crate) hints: Vec<(String, String)>,
    /// `health-check.path.<arg>` in order.
    pub(crate) health_paths: Vec<(String, String)>,
    /// `eager-load.clients` (global only).
    pub(crate) eager_load: Option<Vec<String>>,
    /// Spring's default instance id from `spring.application.name` and
    /// its neighbours (global only): `subset.instance-id` when unset.
    pub(crate) default_instance_id: Option<String>,
    /// Spring's identity keys, for placeholders in `subset.instance-id`
    /// (global only).
    pub(crate) identity: AppIdentity,
}

/// The last value of `map` for `client`, else for `default`.
fn lookup(map: &[(String, String)], client: &str) -> Option<String> {
    let find = |k: &str| {
        map.iter()
            .rev()
            .find(|(a, _)| a.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    find(client).or_else(|| find("default"))
}

impl SpringScope {
    /// The settings of `client`: `own` (its `clients.<name>.*` keys) over
    /// `global`.
    pub(crate) fn resolve(
        own: Option<&SpringScope>,
        global: &SpringScope,
        client: &str,
    ) -> LoadBalancerSettings {
        let empty = SpringScope::default();
        let own = own.unwrap_or(&empty);
        let mut lb = own.lb.clone();
        let g = &global.lb;
        inherit!(lb, g; configuration, zone, hint_header_name, micrometer_stats, stats_include_path,
            service_discovery_timeout, enabled, approximate_zone_from_hostname, x_forwarded);
        inherit!(lb.health_check, g.health_check; initial_delay, interval, port, repeat_health_check,
            refetch_instances, refetch_instances_interval, update_results_list);
        inherit!(lb.retry, g.retry; enabled, max_retries_on_same_service_instance,
            max_retries_on_next_service_instance, retry_on_all_operations, retry_on_all_exceptions,
            retryable_status_codes, retryable_exceptions, avoid_previous_instance);
        inherit!(lb.retry.backoff, g.retry.backoff; enabled, min_backoff, max_backoff, jitter);
        inherit!(lb.sticky_session, g.sticky_session; instance_id_cookie_name, add_service_instance_cookie);
        inherit!(lb.subset, g.subset; size, instance_id);
        inherit!(lb.cache, g.cache; enabled, ttl, capacity, caffeine_spec);
        lb.hint = lookup(&own.hints, client).or_else(|| lookup(&global.hints, client));
        lb.subset.instance_id = match lb.subset.instance_id.take() {
            Some(id) => Some(global.identity.resolve(&id)),
            None => global.default_instance_id.clone(),
        };
        lb.health_check.path =
            lookup(&own.health_paths, client).or_else(|| lookup(&global.health_paths, client));
        lb
    }
}
