//! Ribbon-style configuration: read `<client>.ribbon.<Key>` settings from a
//! `.properties` or YAML file and turn them into a [`Builder`] (Ribbon's
//! `IClientConfig` / Archaius properties, Spring Cloud Netflix's
//! `application.yml`).
//!
//! ```
//! use tower_ribbon::config::{RibbonConfig, RuleKind};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let config = RibbonConfig::from_properties_str(
//!     r"
//! # Defaults for every client.
//! ribbon.ServerListRefreshInterval=10000
//! ribbon.ReadTimeout=2000
//!
//! user-service.ribbon.listOfServers=127.0.0.1:8081, 127.0.0.1:8082
//! user-service.ribbon.NFLoadBalancerRuleClassName=com.netflix.loadbalancer.RoundRobinRule
//! user-service.ribbon.MaxAutoRetriesNextServer=2
//! ",
//! )?;
//! let client = config.client("user-service");
//! assert_eq!(client.rule, Some(RuleKind::RoundRobin));
//! assert_eq!(client.max_auto_retries_next_server, Some(2));
//! assert_eq!(client.read_timeout, Some(std::time::Duration::from_secs(2)));
//! assert_eq!(client.list_of_servers.as_ref().map(Vec::len), Some(2));
//! assert!(config.warnings().is_empty());
//!
//! // One balancer for every configured client (here just `user-service`).
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! runtime.block_on(async {
//!     use hyper_util::client::legacy::Client;
//!     use hyper_util::rt::TokioExecutor;
//!     let http = Client::builder(TokioExecutor::new())
//!         .build_http::<http_body_util::Empty<bytes::Bytes>>();
//!     let lb = config.builder()?.build(http)?;
//!     assert_eq!(lb.services(), ["user-service"]);
//!     Ok(())
//! })
//! # }
//! ```
//!
//! # Formats
//!
//! - `.properties` ([`RibbonConfig::from_properties_str`]): Java's
//!   `java.util.Properties` grammar (`=`, `:` or blank separators, `#` and
//!   `!` comments, `\` continuations, `\uXXXX` escapes), read with the
//!   [`java-properties`](https://docs.rs/java-properties) crate.
//! - YAML ([`RibbonConfig::from_yaml_str`]): read with
//!   [`yaml-rust2`](https://docs.rs/yaml-rust2). Nested maps flatten to
//!   dotted keys, so `user-service: { ribbon: { listOfServers: a:1 } }` is
//!   `user-service.ribbon.listOfServers=a:1`; a list of scalars is joined
//!   with commas; a list holding maps flattens with Spring's `[index]`
//!   suffixes; `null` is an empty value. Several documents (`---`) are read
//!   in order, later values winning.
//! - Any other source of pairs: [`RibbonConfig::from_pairs`].
//!
//! Values are trimmed. A key given twice keeps the later value.
//!
//! # Keys
//!
//! Every key is read per client as `<client>.ribbon.<Key>`, and as a global
//! default for every client as `ribbon.<Key>`; a client's own value wins.
//! Key names are case-sensitive, as Ribbon writes them. Nothing is required
//! except a way to find instances (`listOfServers` or a Eureka URL).
//!
//! | key | unit / form | default | becomes |
//! |---|---|---|---|
//! | `listOfServers` | `host:port`, `http://host:port`, `https://host:port`, comma-separated | none | a [`StaticSource`] list ([`parse_list_of_servers`]) |
//! | `NFLoadBalancerRuleClassName` | Ribbon class name, short name, or ours | round robin | the rule, see [`RuleKind`] |
//! | `MaxAutoRetries` | count | 0 | [`RetryPolicy::max_same`] |
//! | `MaxAutoRetriesNextServer` | count | 1 | [`RetryPolicy::max_next`] |
//! | `OkToRetryOnAllOperations` | `true` / `false` | `false` | [`RetryPolicy::retry_on_all_operations`] |
//! | `retryableStatusCodes` | comma-separated codes | 502, 503, 504 | [`RetryPolicy::retryable_statuses`] |
//! | `ReadTimeout` | milliseconds, 0 = none | none | [`RetryPolicy::per_try_timeout`] |
//! | `ConnectTimeout` | milliseconds, 0 = none | none | recorded only: set it on your HTTP client's connector |
//! | `ServerListRefreshInterval` | milliseconds | 30000 | [`RefreshConfig::interval`] |
//! | `HealthCheckPath` (ours) | URL path | off | [`ActiveHealthCheck::new`]: turns active checks on |
//! | `NFLoadBalancerPingInterval` | **seconds** (Ribbon's unit) | 30 | [`ActiveHealthCheck::interval`] |
//! | `EnableZoneAffinity` | `true` / `false` | `false` | prefer the client's zone ([`ZoneAvoidance::preferred_zone`]) |
//! | `EnableZoneExclusivity` | `true` / `false` | `false` | as `EnableZoneAffinity` (see below) |
//! | `zone` (ours) | zone name | Spring's `eureka.instance.metadata-map.zone` | the client's own zone |
//! | `DeploymentContextBasedVipAddresses` | comma-separated VIPs | none | recorded only |
//! | `NIWSServerListClassName` | `ConfigurationBasedServerList` / `DiscoveryEnabledNIWSServerList` | see below | the instance source |
//! | `eureka.enabled` (Spring) | `true` / `false` | `true` | `false` forces `listOfServers` |
//!
//! Outside the `ribbon` namespace these Spring keys are read (Spring's
//! relaxed names, `service-url` or `serviceUrl` and so on, are accepted):
//!
//! | key | unit | default | becomes |
//! |---|---|---|---|
//! | `eureka.client.service-url.defaultZone` | comma-separated URLs | none | an `EurekaRegistry` shared by every Eureka client (an `EurekaSource` when built outside a Tokio runtime; feature `eureka`) |
//! | `eureka.client.registry-fetch-interval-seconds` | seconds | 30 | the registry's delta interval |
//! | `eureka.client.eureka-server-connect-timeout-seconds` | seconds | 5 | its connect timeout |
//! | `eureka.client.eureka-server-read-timeout-seconds` | seconds | 8 | its request timeout |
//! | `eureka.instance.metadata-map.zone` | zone name | none | every client's zone unless `zone` is set |
//!
//! Other keys outside `ribbon` are ignored silently, so a whole Spring
//! `application.yml` can be read; keys whose client part starts with
//! `spring.`, `eureka.` or `zuul.` are never taken for clients. An unknown
//! key inside `ribbon` (such as `ribbon.MaxTotalConnections`) is ignored with
//! a warning: [`tracing::warn!`] and an entry in [`RibbonConfig::warnings`]
//! naming the key. A value that cannot be read is a [`ConfigError`] naming
//! the key and the value.
//!
//! # Choices where Ribbon and this crate differ
//!
//! - **Instance source.** Per client, first match wins:
//!   `NIWSServerListClassName` if set; a static list if `eureka.enabled` is
//!   `false`; a static list if `listOfServers` is set; Eureka if a
//!   `defaultZone` URL is set; else [`ConfigError::NoSource`]. (Spring Cloud
//!   with Eureka on the class path ignores `listOfServers` unless
//!   `ribbon.eureka.enabled=false`; here an explicit list wins, since it was
//!   written for this client.) When [`RibbonConfig::builder`] serves clients
//!   of both kinds, it routes each service id to its own source.
//! - **Rules.** `RetryRule` becomes round robin: its retrying of the pick is
//!   what the balancer's retries (`MaxAutoRetries*`) and health filtering
//!   already do. Custom rule classes cannot be loaded and are an error.
//! - **Zones.** The preferred zone is set when the client's zone is known
//!   and `EnableZoneAffinity` or `EnableZoneExclusivity` is `true`, or the
//!   rule is `ZoneAvoidanceRule` and `EnableZoneAffinity` is not `false`
//!   (Spring Cloud's `ZonePreferenceServerListFilter`); any other rule is
//!   then wrapped in [`ZoneAvoidance`]. Exclusivity is not strict here: when
//!   the own zone has no available instance, other zones are used (a
//!   warning says so).
//! - **Timeouts.** `ReadTimeout` bounds each whole attempt. `ConnectTimeout`
//!   belongs to the HTTP client, which the caller owns: it is recorded in
//!   [`ClientConfig::connect_timeout`] for you to apply.
//! - **One balancer, one policy.** A [`Builder`] has one rule, retry policy,
//!   refresh and health check for all its services.
//!   [`RibbonConfig::builder`] therefore requires every client to agree on
//!   those keys and fails with [`ConfigError::Conflicting`] naming the key
//!   otherwise; [`RibbonConfig::builder_for`] builds one client's balancer.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use crate::discovery::{
    FetchFuture, InstanceSource, RefreshConfig, StaticSource, parse_list_of_servers,
};
use crate::error::DiscoveryError;
use crate::health::ActiveHealthCheck;
use crate::instance::Instance;
use crate::retry::RetryPolicy;
use crate::rule::{
    AvailabilityFiltering, BestAvailable, ConsistentHash, PeakEwmaP2c, Random, RoundRobin, Rule,
    WeightedResponseTime, WeightedRoundRobin, ZoneAvoidance,
};
use crate::service::{Builder, LoadBalancer};

/// Ribbon's default ping interval when read from configuration
/// (`BaseLoadBalancer.initWithConfig`), in seconds.
const DEFAULT_PING_INTERVAL_SECS: u64 = 30;

/// Client-name prefixes that are Spring namespaces, never Ribbon clients.
const NOT_CLIENTS: [&str; 3] = ["spring.", "eureka.", "zuul."];

/// The keys read under `ribbon.` and `<client>.ribbon.`.
const KNOWN_KEYS: [&str; 17] = [
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
];

/// Why a configuration cannot be read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file's extension is not `.properties`, `.yml` or `.yaml`.
    #[error("`{}`: unknown configuration format (expected .properties, .yml or .yaml)", path.display())]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
    },
    /// The text is not a valid properties file.
    #[error("invalid properties{}: {reason}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Properties {
        /// The 1-based line, when known.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// The text is not valid YAML, or not a map of settings.
    #[error("invalid YAML: {reason}")]
    Yaml {
        /// What is wrong, with the line and column when known.
        reason: String,
    },
    /// A key has a value that cannot be used, e.g.
    /// `` `user-service.ribbon.MaxAutoRetries` = "x": not a number ``.
    /// Credentials in URLs are replaced by `***`.
    #[error("`{key}` = \"{value}\": {reason}")]
    InvalidValue {
        /// The key as written (`user-service.ribbon.MaxAutoRetries`).
        key: String,
        /// The value as written.
        value: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Two clients set a balancer-wide key differently, so one
    /// [`RibbonConfig::builder`] cannot serve both; use
    /// [`RibbonConfig::builder_for`] per client.
    #[error(
        "clients `{first_client}` and `{second_client}` disagree on `{key}` ({first_value} vs {second_value}): \
         one load balancer has one rule, retry policy, refresh and health check; \
         build one per client with `RibbonConfig::builder_for`"
    )]
    Conflicting {
        /// The Ribbon key (`NFLoadBalancerRuleClassName`, `MaxAutoRetries`, ...).
        key: String,
        /// One client.
        first_client: String,
        /// Its effective value.
        first_value: String,
        /// Another client.
        second_client: String,
        /// Its effective value.
        second_value: String,
    },
    /// A client has no way to find instances.
    #[error("client `{client}` has no instance source: {reason}")]
    NoSource {
        /// The client name.
        client: String,
        /// What is missing.
        reason: String,
    },
    /// [`RibbonConfig::builder`] found no `<client>.ribbon.*` key.
    #[error("no client configured: no `<client>.ribbon.<Key>` key was found")]
    NoClients,
}

/// A rule this crate offers, as named by `NFLoadBalancerRuleClassName`.
///
/// [`RuleKind::from_class_name`] reads Ribbon's class names
/// (`com.netflix.loadbalancer.RoundRobinRule`), their short forms
/// (`RoundRobinRule`, `RoundRobin`), and this crate's rule names
/// (`PeakEwmaP2c`, `peak_ewma_p2c`), ignoring case and `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuleKind {
    /// [`RoundRobin`]: `RoundRobinRule`, also `RetryRule` and
    /// `ClientConfigEnabledRoundRobinRule`.
    RoundRobin,
    /// [`Random`]: `RandomRule`.
    Random,
    /// [`WeightedResponseTime`]: `WeightedResponseTimeRule` (and the older
    /// `ResponseTimeWeightedRule`).
    WeightedResponseTime,
    /// [`AvailabilityFiltering`] over round robin: `AvailabilityFilteringRule`.
    AvailabilityFiltering,
    /// [`BestAvailable`]: `BestAvailableRule`.
    BestAvailable,
    /// [`ZoneAvoidance`] over round robin: `ZoneAvoidanceRule`.
    ZoneAvoidance,
    /// [`PeakEwmaP2c`] (this crate's): `PeakEwmaP2c`.
    PeakEwmaP2c,
    /// [`WeightedRoundRobin`] (this crate's): `WeightedRoundRobin`.
    WeightedRoundRobin,
    /// [`ConsistentHash`] (this crate's): `ConsistentHash`. Set
    /// [`Builder::hash_key`] yourself, else it falls back to round robin.
    ConsistentHash,
}

impl RuleKind {
    /// Reads a rule class name; `None` if it names no rule of this crate.
    /// A qualified Ribbon name must be in `com.netflix.loadbalancer` (or
    /// `com.netflix.niws.loadbalancer`); other packages are custom rules,
    /// which cannot be loaded.
    ///
    /// ```
    /// use tower_ribbon::config::RuleKind;
    ///
    /// assert_eq!(
    ///     RuleKind::from_class_name("com.netflix.loadbalancer.RandomRule"),
    ///     Some(RuleKind::Random)
    /// );
    /// assert_eq!(RuleKind::from_class_name("RetryRule"), Some(RuleKind::RoundRobin));
    /// assert_eq!(RuleKind::from_class_name("peak_ewma_p2c"), Some(RuleKind::PeakEwmaP2c));
    /// assert_eq!(RuleKind::from_class_name("com.example.MyRule"), None);
    /// ```
    pub fn from_class_name(name: &str) -> Option<RuleKind> {
        let name = name.trim();
        let simple = if let Some((package, simple)) = name.rsplit_once("::") {
            if !matches!(package, "tower_ribbon::rule" | "rule") {
                return None;
            }
            simple
        } else if let Some((package, simple)) = name.rsplit_once('.') {
            if !matches!(
                package,
                "com.netflix.loadbalancer" | "com.netflix.niws.loadbalancer"
            ) {
                return None;
            }
            simple
        } else {
            name
        };
        let norm: String = simple
            .chars()
            .filter(|c| *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        let norm = norm.strip_suffix("rule").unwrap_or(&norm);
        Some(match norm {
            "roundrobin" | "retry" | "clientconfigenabledroundrobin" => RuleKind::RoundRobin,
            "random" => RuleKind::Random,
            "weightedresponsetime" | "responsetimeweighted" => RuleKind::WeightedResponseTime,
            "availabilityfiltering" => RuleKind::AvailabilityFiltering,
            "bestavailable" => RuleKind::BestAvailable,
            "zoneavoidance" => RuleKind::ZoneAvoidance,
            "peakewmap2c" => RuleKind::PeakEwmaP2c,
            "weightedroundrobin" => RuleKind::WeightedRoundRobin,
            "consistenthash" => RuleKind::ConsistentHash,
            _ => return None,
        })
    }

    /// The [`Rule::name`] of the rule this kind makes (`round_robin`, ...).
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::RoundRobin => "round_robin",
            RuleKind::Random => "random",
            RuleKind::WeightedResponseTime => "weighted_response_time",
            RuleKind::AvailabilityFiltering => "availability_filtering",
            RuleKind::BestAvailable => "best_available",
            RuleKind::ZoneAvoidance => "zone_avoidance",
            RuleKind::PeakEwmaP2c => "peak_ewma_p2c",
            RuleKind::WeightedRoundRobin => "weighted_round_robin",
            RuleKind::ConsistentHash => "consistent_hash",
        }
    }

    /// A new rule of this kind with its defaults (wrappers over round
    /// robin).
    pub fn make(self) -> Box<dyn Rule> {
        match self {
            RuleKind::RoundRobin => Box::new(RoundRobin::new()),
            RuleKind::Random => Box::new(Random::new()),
            RuleKind::WeightedResponseTime => Box::new(WeightedResponseTime::new()),
            RuleKind::AvailabilityFiltering => Box::new(AvailabilityFiltering::default()),
            RuleKind::BestAvailable => Box::new(BestAvailable::new()),
            RuleKind::ZoneAvoidance => Box::new(ZoneAvoidance::default()),
            RuleKind::PeakEwmaP2c => Box::new(PeakEwmaP2c::new()),
            RuleKind::WeightedRoundRobin => Box::new(WeightedRoundRobin::new()),
            RuleKind::ConsistentHash => Box::new(ConsistentHash::new()),
        }
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a client's instances come from (`NIWSServerListClassName`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerListKind {
    /// `listOfServers` ([`StaticSource`]): Ribbon's
    /// `ConfigurationBasedServerList`.
    Static,
    /// The Eureka servers of `eureka.client.service-url.defaultZone`:
    /// Ribbon's `DiscoveryEnabledNIWSServerList` (and Spring's
    /// `DomainExtractingServerList`). The client name is the Eureka app
    /// name.
    Eureka,
}

impl ServerListKind {
    /// Reads a server list class name (qualified or not); `None` if it is
    /// neither kind.
    pub fn from_class_name(name: &str) -> Option<ServerListKind> {
        let simple = name.trim().rsplit('.').next().unwrap_or_default();
        match simple {
            "ConfigurationBasedServerList" => Some(ServerListKind::Static),
            "DiscoveryEnabledNIWSServerList" | "DomainExtractingServerList" => {
                Some(ServerListKind::Eureka)
            }
            _ => None,
        }
    }
}

/// The settings of one client, with the global `ribbon.<Key>` defaults
/// merged in. `None` means "not set": the crate's default applies (given
/// per field).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The client name, which is the service id requests use
    /// (`http://user-service/...`) and the Eureka app name.
    pub name: String,
    /// `listOfServers`: the static instances, each with `name` as its
    /// service id. Default: none.
    pub list_of_servers: Option<Vec<Instance>>,
    /// `NFLoadBalancerRuleClassName`, read. Default: round robin.
    pub rule: Option<RuleKind>,
    /// `NFLoadBalancerRuleClassName` as written.
    pub rule_class_name: Option<String>,
    /// `MaxAutoRetries`: retries on the same instance. Default 0.
    pub max_auto_retries: Option<u32>,
    /// `MaxAutoRetriesNextServer`: retries on other instances. Default 1.
    pub max_auto_retries_next_server: Option<u32>,
    /// `OkToRetryOnAllOperations`: retry non-idempotent methods too.
    /// Default `false`.
    pub ok_to_retry_on_all_operations: Option<bool>,
    /// `retryableStatusCodes`: statuses retried for idempotent requests.
    /// Default 502, 503, 504.
    pub retryable_status_codes: Option<Vec<u16>>,
    /// `ReadTimeout` (ms): bound on each attempt; zero means none.
    /// Default: none.
    pub read_timeout: Option<Duration>,
    /// `ConnectTimeout` (ms): recorded for the caller's HTTP client (the
    /// balancer does not own the connector). Zero means none.
    pub connect_timeout: Option<Duration>,
    /// `ServerListRefreshInterval` (ms): time between instance list
    /// fetches. Default 30 s.
    pub server_list_refresh_interval: Option<Duration>,
    /// `HealthCheckPath` (this crate's key): path of active health checks;
    /// setting it turns them on. Default: off.
    pub health_check_path: Option<String>,
    /// `NFLoadBalancerPingInterval` (seconds, as in Ribbon): time between
    /// active health checks. Default 30 s (Ribbon's default when read from
    /// configuration).
    pub ping_interval: Option<Duration>,
    /// `EnableZoneAffinity`: prefer the client's own zone. Default `false`.
    pub enable_zone_affinity: Option<bool>,
    /// `EnableZoneExclusivity`: read as zone affinity (other zones are
    /// still used when the own zone has no available instance). Default
    /// `false`.
    pub enable_zone_exclusivity: Option<bool>,
    /// The client's own zone: `zone`, else Spring's
    /// `eureka.instance.metadata-map.zone`. Default: none.
    pub zone: Option<String>,
    /// `DeploymentContextBasedVipAddresses`: recorded only (the client name
    /// is looked up in Eureka). Default: none.
    pub vip_addresses: Option<Vec<String>>,
    /// `NIWSServerListClassName`, read. Default: chosen as the
    /// [module docs](self) describe.
    pub server_list: Option<ServerListKind>,
    /// Spring's `ribbon.eureka.enabled`: `false` makes the client use
    /// `listOfServers`. Default `true`.
    pub eureka_enabled: Option<bool>,
}

impl ClientConfig {
    /// A client with nothing set.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// The zone requests prefer, if any (see the [module docs](self)).
    pub fn preferred_zone(&self) -> Option<&str> {
        let zone = self.zone.as_deref()?;
        let affinity = self.enable_zone_affinity == Some(true)
            || self.enable_zone_exclusivity == Some(true)
            || (self.rule == Some(RuleKind::ZoneAvoidance)
                && self.enable_zone_affinity != Some(false));
        affinity.then_some(zone)
    }

    /// A new rule as configured: the [`RuleKind`] (default round robin),
    /// wrapped in [`ZoneAvoidance`] with the
    /// [preferred zone](ClientConfig::preferred_zone) when there is one.
    pub fn make_rule(&self) -> Box<dyn Rule> {
        self.rule_spec().make()
    }

    /// The retry policy: [`RetryPolicy::default`] with `MaxAutoRetries`,
    /// `MaxAutoRetriesNextServer`, `OkToRetryOnAllOperations`,
    /// `retryableStatusCodes` and `ReadTimeout` applied.
    pub fn retry_policy(&self) -> RetryPolicy {
        let mut policy = RetryPolicy::default();
        if let Some(n) = self.max_auto_retries {
            policy = policy.max_same(n);
        }
        if let Some(n) = self.max_auto_retries_next_server {
            policy = policy.max_next(n);
        }
        if let Some(on) = self.ok_to_retry_on_all_operations {
            policy = policy.retry_on_all_operations(on);
        }
        if let Some(codes) = &self.retryable_status_codes {
            policy = policy.retryable_statuses(codes.iter().copied());
        }
        if let Some(timeout) = self.read_timeout.filter(|t| !t.is_zero()) {
            policy = policy.per_try_timeout(timeout);
        }
        policy
    }

    /// The refresh: [`RefreshConfig::default`] with
    /// `ServerListRefreshInterval` applied.
    pub fn refresh_config(&self) -> RefreshConfig {
        let mut config = RefreshConfig::default();
        if let Some(interval) = self.server_list_refresh_interval {
            config.interval = interval;
        }
        config
    }

    /// The active health check, when `HealthCheckPath` is set, every
    /// `NFLoadBalancerPingInterval` seconds (default 30).
    pub fn health_check(&self) -> Option<ActiveHealthCheck> {
        let path = self.health_check_path.as_deref()?;
        let interval = self
            .ping_interval
            .unwrap_or(Duration::from_secs(DEFAULT_PING_INTERVAL_SECS));
        Some(ActiveHealthCheck::new(path).interval(interval))
    }

    fn rule_spec(&self) -> RuleSpec {
        RuleSpec {
            kind: self.rule.unwrap_or(RuleKind::RoundRobin),
            preferred_zone: self.preferred_zone().map(str::to_owned),
        }
    }

    fn sets_rule(&self) -> bool {
        self.rule.is_some() || self.preferred_zone().is_some()
    }

    fn sets_retry(&self) -> bool {
        self.max_auto_retries.is_some()
            || self.max_auto_retries_next_server.is_some()
            || self.ok_to_retry_on_all_operations.is_some()
            || self.retryable_status_codes.is_some()
            || self.read_timeout.is_some()
    }

    /// The balancer-wide settings, one per key, as shown in a conflict.
    fn balancer_settings(&self) -> [(&'static str, String); 10] {
        let retry = self.retry_policy();
        let ms =
            |d: Option<Duration>| d.map_or("none".to_owned(), |d| format!("{} ms", d.as_millis()));
        let codes = self.retryable_status_codes.as_ref().map_or_else(
            || "502,503,504".to_owned(),
            |c| c.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
        );
        [
            (
                "NFLoadBalancerRuleClassName",
                self.rule.unwrap_or(RuleKind::RoundRobin).name().to_owned(),
            ),
            (
                "zone",
                self.preferred_zone()
                    .unwrap_or("no preferred zone")
                    .to_owned(),
            ),
            ("MaxAutoRetries", retry.get_max_same().to_string()),
            ("MaxAutoRetriesNextServer", retry.get_max_next().to_string()),
            (
                "OkToRetryOnAllOperations",
                self.ok_to_retry_on_all_operations
                    .unwrap_or(false)
                    .to_string(),
            ),
            ("retryableStatusCodes", codes),
            ("ReadTimeout", ms(retry.get_per_try_timeout())),
            (
                "ServerListRefreshInterval",
                ms(Some(self.refresh_config().interval)),
            ),
            (
                "HealthCheckPath",
                self.health_check_path
                    .clone()
                    .unwrap_or_else(|| "off".to_owned()),
            ),
            (
                "NFLoadBalancerPingInterval",
                match &self.health_check_path {
                    Some(_) => format!(
                        "{} s",
                        self.ping_interval
                            .map_or(DEFAULT_PING_INTERVAL_SECS, |d| d.as_secs())
                    ),
                    None => "off".to_owned(),
                },
            ),
        ]
    }

    /// Sets the builder's rule, retry, refresh and health check from the
    /// keys that are set (`all`: from every key, defaults included).
    fn configure(&self, mut builder: Builder, all: bool) -> Builder {
        if all || self.sets_rule() {
            let spec = self.rule_spec();
            builder = builder.rule(move || spec.make());
        }
        if all || self.sets_retry() {
            builder = builder.retry(self.retry_policy());
        }
        if all || self.server_list_refresh_interval.is_some() {
            builder = builder.refresh(self.refresh_config());
        }
        if let Some(check) = self.health_check() {
            builder = builder.active_health_check(check);
        }
        builder
    }
}

/// What rule to make: the kind and the preferred zone.
#[derive(Debug, Clone, PartialEq)]
struct RuleSpec {
    kind: RuleKind,
    preferred_zone: Option<String>,
}

impl RuleSpec {
    fn make(&self) -> Box<dyn Rule> {
        match (&self.preferred_zone, self.kind) {
            (None, kind) => kind.make(),
            (Some(zone), RuleKind::ZoneAvoidance) => {
                Box::new(ZoneAvoidance::new(RoundRobin::new()).preferred_zone(Some(zone)))
            }
            (Some(zone), kind) => {
                Box::new(ZoneAvoidance::new(kind.make()).preferred_zone(Some(zone)))
            }
        }
    }
}

/// The keys of one scope (global `ribbon.` or one client), read but not
/// yet merged.
#[derive(Debug, Clone, Default)]
struct Settings {
    /// Validated, kept as text so each client's instances get its name.
    list_of_servers: Option<String>,
    rule: Option<(RuleKind, String)>,
    max_auto_retries: Option<u32>,
    max_auto_retries_next_server: Option<u32>,
    ok_to_retry_on_all_operations: Option<bool>,
    retryable_status_codes: Option<Vec<u16>>,
    read_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    server_list_refresh_interval: Option<Duration>,
    health_check_path: Option<String>,
    ping_interval: Option<Duration>,
    enable_zone_affinity: Option<bool>,
    enable_zone_exclusivity: Option<bool>,
    zone: Option<String>,
    vip_addresses: Option<Vec<String>>,
    server_list: Option<ServerListKind>,
    eureka_enabled: Option<bool>,
}

impl Settings {
    /// Reads `name` (the part after `ribbon.`); `Ok(false)` if the key is
    /// not one of ours.
    fn set(&mut self, name: &str, key: &str, value: &str) -> Result<bool, ConfigError> {
        let invalid = |reason: &str| invalid(key, value, reason);
        match name {
            "listOfServers" => {
                parse_list_of_servers("validate", value).map_err(|e| invalid(&e.to_string()))?;
                self.list_of_servers = Some(value.to_owned());
            }
            "NFLoadBalancerRuleClassName" => {
                let kind = RuleKind::from_class_name(value).ok_or_else(|| {
                    invalid(
                        "not a known rule class (Ribbon's RoundRobinRule, RandomRule, \
                         WeightedResponseTimeRule, AvailabilityFilteringRule, BestAvailableRule, \
                         ZoneAvoidanceRule, RetryRule, or PeakEwmaP2c, WeightedRoundRobin, \
                         ConsistentHash); custom rules are set with Builder::rule",
                    )
                })?;
                self.rule = Some((kind, value.to_owned()));
            }
            "MaxAutoRetries" => self.max_auto_retries = Some(parse_u32(key, value)?),
            "MaxAutoRetriesNextServer" => {
                self.max_auto_retries_next_server = Some(parse_u32(key, value)?);
            }
            "OkToRetryOnAllOperations" => {
                self.ok_to_retry_on_all_operations = Some(parse_bool(key, value)?);
            }
            "retryableStatusCodes" => {
                let codes = value
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(|c| match c.parse::<u16>() {
                        Ok(code) if (100..=599).contains(&code) => Ok(code),
                        _ => Err(invalid(&format!(
                            "`{c}` is not an HTTP status code (100-599)"
                        ))),
                    })
                    .collect::<Result<Vec<u16>, _>>()?;
                self.retryable_status_codes = Some(codes);
            }
            "ReadTimeout" => self.read_timeout = Some(parse_millis(key, value, true)?),
            "ConnectTimeout" => self.connect_timeout = Some(parse_millis(key, value, true)?),
            "ServerListRefreshInterval" => {
                self.server_list_refresh_interval = Some(parse_millis(key, value, false)?);
            }
            "HealthCheckPath" => {
                if value
                    .chars()
                    .any(|c| c.is_whitespace() || c == '?' || c == '#')
                {
                    return Err(invalid("a path holds no blanks, query or fragment"));
                }
                self.health_check_path = (!value.is_empty()).then(|| value.to_owned());
            }
            "NFLoadBalancerPingInterval" => {
                let secs = parse_u32(key, value)?;
                if secs == 0 {
                    return Err(invalid("must be at least 1 (seconds)"));
                }
                self.ping_interval = Some(Duration::from_secs(u64::from(secs)));
            }
            "EnableZoneAffinity" => self.enable_zone_affinity = Some(parse_bool(key, value)?),
            "EnableZoneExclusivity" => {
                self.enable_zone_exclusivity = Some(parse_bool(key, value)?);
            }
            "zone" => self.zone = (!value.is_empty()).then(|| value.to_owned()),
            "DeploymentContextBasedVipAddresses" => {
                self.vip_addresses = Some(split_list(value));
            }
            "NIWSServerListClassName" => {
                let kind = ServerListKind::from_class_name(value).ok_or_else(|| {
                    invalid(
                        "not a supported server list class (ConfigurationBasedServerList, \
                         DiscoveryEnabledNIWSServerList)",
                    )
                })?;
                self.server_list = Some(kind);
            }
            "eureka.enabled" => self.eureka_enabled = Some(parse_bool(key, value)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// This scope over `defaults`, as the client `name`.
    fn resolve(&self, defaults: &Settings, name: &str, zone: Option<&str>) -> ClientConfig {
        let list = self
            .list_of_servers
            .as_ref()
            .or(defaults.list_of_servers.as_ref())
            // Validated when read; parsing does not depend on the name.
            .map(|text| parse_list_of_servers(name, text).unwrap_or_default());
        let rule = self.rule.as_ref().or(defaults.rule.as_ref());
        ClientConfig {
            name: name.to_owned(),
            list_of_servers: list,
            rule: rule.map(|(kind, _)| *kind),
            rule_class_name: rule.map(|(_, class)| class.clone()),
            max_auto_retries: self.max_auto_retries.or(defaults.max_auto_retries),
            max_auto_retries_next_server: self
                .max_auto_retries_next_server
                .or(defaults.max_auto_retries_next_server),
            ok_to_retry_on_all_operations: self
                .ok_to_retry_on_all_operations
                .or(defaults.ok_to_retry_on_all_operations),
            retryable_status_codes: self
                .retryable_status_codes
                .clone()
                .or_else(|| defaults.retryable_status_codes.clone()),
            read_timeout: self.read_timeout.or(defaults.read_timeout),
            connect_timeout: self.connect_timeout.or(defaults.connect_timeout),
            server_list_refresh_interval: self
                .server_list_refresh_interval
                .or(defaults.server_list_refresh_interval),
            health_check_path: self
                .health_check_path
                .clone()
                .or_else(|| defaults.health_check_path.clone()),
            ping_interval: self.ping_interval.or(defaults.ping_interval),
            enable_zone_affinity: self.enable_zone_affinity.or(defaults.enable_zone_affinity),
            enable_zone_exclusivity: self
                .enable_zone_exclusivity
                .or(defaults.enable_zone_exclusivity),
            zone: self
                .zone
                .clone()
                .or_else(|| defaults.zone.clone())
                .or_else(|| zone.map(str::to_owned)),
            vip_addresses: self
                .vip_addresses
                .clone()
                .or_else(|| defaults.vip_addresses.clone()),
            server_list: self.server_list.or(defaults.server_list),
            eureka_enabled: self.eureka_enabled.or(defaults.eureka_enabled),
        }
    }
}

/// The Spring keys of the Eureka client.
#[derive(Clone, Default)]
struct EurekaSettings {
    /// `(key as written, URLs)`.
    urls: Option<(String, Vec<String>)>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    /// `eureka.client.registry-fetch-interval-seconds`.
    fetch_interval: Option<Duration>,
    /// `eureka.instance.metadata-map.zone`.
    zone: Option<String>,
}

impl EurekaSettings {
    /// Reads a key under `eureka.`; `Ok(false)` if it is not one of ours.
    fn set(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        let norm: String = key
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        match norm.as_str() {
            "eureka.client.serviceurl.defaultzone" => {
                let urls = split_list(value);
                #[cfg(feature = "eureka")]
                if !urls.is_empty() {
                    crate::discovery::eureka::EurekaSource::builder()
                        .server_urls(value)
                        .build()
                        .map_err(|e| invalid(key, &redact_urls(value), &e.to_string()))?;
                }
                self.urls = Some((key.to_owned(), urls));
            }
            "eureka.client.eurekaserverconnecttimeoutseconds" => {
                self.connect_timeout = Some(parse_secs(key, value)?);
            }
            "eureka.client.eurekaserverreadtimeoutseconds" => {
                self.read_timeout = Some(parse_secs(key, value)?);
            }
            "eureka.client.registryfetchintervalseconds" => {
                self.fetch_interval = Some(parse_secs(key, value)?);
            }
            "eureka.instance.metadatamap.zone" => {
                self.zone = (!value.is_empty()).then(|| value.to_owned());
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn urls(&self) -> &[String] {
        self.urls.as_ref().map_or(&[], |(_, urls)| urls.as_slice())
    }
}

/// Ribbon client settings read from a properties or YAML file. See the
/// [module docs](self) for the keys.
#[derive(Clone)]
pub struct RibbonConfig {
    defaults: Settings,
    clients: Vec<ClientConfig>,
    eureka: EurekaSettings,
    warnings: Vec<String>,
}

impl fmt::Debug for RibbonConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.eureka.urls().iter().map(|u| redact_url(u)).collect();
        f.debug_struct("RibbonConfig")
            .field("clients", &self.clients)
            .field("eureka_server_urls", &urls)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

impl RibbonConfig {
    /// Reads Java properties text (`user-service.ribbon.MaxAutoRetries=1`).
    ///
    /// # Errors
    /// [`ConfigError::Properties`] for text that is not a properties file;
    /// [`ConfigError::InvalidValue`] for a value that cannot be used.
    pub fn from_properties_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_pairs(read_properties(text.as_bytes(), encoding_rs::UTF_8)?)
    }

    /// Reads YAML text; nested maps flatten to dotted keys (see the
    /// [module docs](self)).
    ///
    /// # Errors
    /// [`ConfigError::Yaml`] for text that is not YAML or not a map;
    /// [`ConfigError::InvalidValue`] for a value that cannot be used.
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_pairs(flatten_yaml_str(text)?)
    }

    /// Reads a file by its extension: `.properties` (UTF-8, or ISO-8859-1
    /// as Java's `Properties.load` reads it when the bytes are not UTF-8),
    /// `.yml` or `.yaml` (UTF-8).
    ///
    /// # Errors
    /// [`ConfigError::Io`], [`ConfigError::UnsupportedFormat`], and the
    /// errors of the format's reader.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let format_is_yaml = match extension.as_deref() {
            Some("properties") => false,
            Some("yml" | "yaml") => true,
            _ => {
                return Err(ConfigError::UnsupportedFormat {
                    path: path.to_owned(),
                });
            }
        };
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        if format_is_yaml {
            let text = std::str::from_utf8(&bytes).map_err(|e| ConfigError::Yaml {
                reason: format!("`{}` is not UTF-8: {e}", path.display()),
            })?;
            Self::from_yaml_str(text)
        } else {
            let encoding = if std::str::from_utf8(&bytes).is_ok() {
                encoding_rs::UTF_8
            } else {
                encoding_rs::WINDOWS_1252
            };
            Self::from_pairs(read_properties(&bytes, encoding)?)
        }
    }

    /// Reads flat `(key, value)` pairs, in order (a later pair for the same
    /// key wins).
    ///
    /// ```
    /// use tower_ribbon::config::RibbonConfig;
    ///
    /// let config = RibbonConfig::from_pairs([
    ///     ("ribbon.MaxAutoRetries", "1"),
    ///     ("user-service.ribbon.listOfServers", "10.0.0.1:80"),
    /// ])
    /// .unwrap();
    /// assert_eq!(config.client("user-service").max_auto_retries, Some(1));
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::InvalidValue`] for a value that cannot be used.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut defaults = Settings::default();
        let mut clients: Vec<(String, Settings)> = Vec::new();
        let mut eureka = EurekaSettings::default();
        let mut warnings = Vec::new();
        for (key, value) in pairs {
            let (key, value) = (key.as_ref().trim(), value.as_ref().trim());
            let (settings, name) = if let Some(name) = key.strip_prefix("ribbon.") {
                (&mut defaults, name)
            } else if let Some((client, name)) = split_client_key(key) {
                let index = match clients
                    .iter()
                    .position(|(c, _)| c.eq_ignore_ascii_case(client))
                {
                    Some(index) => index,
                    None => {
                        clients.push((client.to_owned(), Settings::default()));
                        clients.len() - 1
                    }
                };
                (&mut clients[index].1, name)
            } else {
                if key.starts_with("eureka.") {
                    eureka.set(key, value)?;
                }
                continue;
            };
            if !settings.set(name, key, value)? {
                warnings.push(unknown_key_warning(key, name));
            }
        }
        let zone = eureka.zone.as_deref();
        let clients: Vec<ClientConfig> = clients
            .iter()
            .map(|(name, settings)| settings.resolve(&defaults, name, zone))
            .collect();
        let mut config = RibbonConfig {
            defaults,
            clients,
            eureka,
            warnings,
        };
        let semantic: Vec<String> = config
            .clients
            .iter()
            .flat_map(|c| semantic_warnings(c, config.eureka.urls()))
            .collect();
        config.warnings.extend(semantic);
        for warning in &config.warnings {
            tracing::warn!(target: "tower_ribbon::config", "{warning}");
        }
        Ok(config)
    }

    /// The clients named by `<client>.ribbon.<Key>` keys, in the order they
    /// first appear, with the global defaults merged in.
    pub fn clients(&self) -> &[ClientConfig] {
        &self.clients
    }

    /// The settings of `name` (case-insensitive): a configured client, or
    /// any other name with only the global `ribbon.<Key>` defaults (as
    /// Ribbon gives every client the defaults).
    pub fn client(&self, name: &str) -> ClientConfig {
        match self
            .clients
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
        {
            Some(client) => client.clone(),
            None => Settings::default().resolve(
                &self.defaults,
                name.trim(),
                self.eureka.zone.as_deref(),
            ),
        }
    }

    /// The Eureka server URLs of `eureka.client.service-url.defaultZone`,
    /// as written (credentials included; the `Debug` output hides them).
    pub fn eureka_server_urls(&self) -> &[String] {
        self.eureka.urls()
    }

    /// What was ignored or read differently from Ribbon: unknown keys under
    /// `ribbon` (each message names the key), and settings without effect.
    /// Each was also logged with [`tracing::warn!`].
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Where the instances of `client` come from (see the [module
    /// docs](self)).
    ///
    /// # Errors
    /// [`ConfigError::NoSource`] when the client has neither a usable
    /// `listOfServers` nor a Eureka URL.
    pub fn server_list_kind(&self, client: &str) -> Result<ServerListKind, ConfigError> {
        self.kind_of(&self.client(client))
    }

    /// Configures `builder` for `client`: declares the service, sets the
    /// source (replacing one set before), and sets the rule, retry policy,
    /// refresh and health check from the keys that are set; keys that are
    /// not set leave the builder's setting as it was. (A set retry key
    /// replaces the builder's whole [`RetryPolicy`], starting from its
    /// defaults.)
    ///
    /// To serve several clients from one balancer use
    /// [`RibbonConfig::builder`].
    ///
    /// # Errors
    /// [`ConfigError::NoSource`] when the client has no instance source.
    pub fn apply(&self, client: &str, builder: Builder) -> Result<Builder, ConfigError> {
        let config = self.client(client);
        let builder = match self.kind_of(&config)? {
            ServerListKind::Static => builder.source(static_source(std::slice::from_ref(&config))),
            ServerListKind::Eureka => builder.source(self.eureka_source(&config.name)?),
        };
        Ok(config.configure(builder.service(config.name.clone()), false))
    }

    /// A new [`Builder`] for `client` alone: [`RibbonConfig::apply`] on
    /// [`LoadBalancer::builder`].
    ///
    /// # Errors
    /// As [`RibbonConfig::apply`].
    pub fn builder_for(&self, client: &str) -> Result<Builder, ConfigError> {
        self.apply(client, LoadBalancer::builder())
    }

    /// A new [`Builder`] serving every configured client: each is declared
    /// as a service; static clients share one [`StaticSource`], Eureka
    /// clients one Eureka source, and when both kinds are present each
    /// service id is routed to its own source. The rule, retry policy,
    /// refresh and health check are balancer-wide, so every client must
    /// agree on them.
    ///
    /// # Errors
    /// [`ConfigError::NoClients`] without `<client>.ribbon.*` keys;
    /// [`ConfigError::NoSource`] for a client without a source;
    /// [`ConfigError::Conflicting`] naming the first balancer-wide key two
    /// clients set differently.
    pub fn builder(&self) -> Result<Builder, ConfigError> {
        let first = self.clients.first().ok_or(ConfigError::NoClients)?;
        let first_settings = first.balancer_settings();
        for other in &self.clients[1..] {
            for ((key, a), (_, b)) in first_settings.iter().zip(other.balancer_settings()) {
                if *a != b {
                    return Err(ConfigError::Conflicting {
                        key: (*key).to_owned(),
                        first_client: first.name.clone(),
                        first_value: a.clone(),
                        second_client: other.name.clone(),
                        second_value: b,
                    });
                }
            }
        }
        let mut statics = Vec::new();
        let mut eurekas = Vec::new();
        for client in &self.clients {
            match self.kind_of(client)? {
                ServerListKind::Static => statics.push(client.clone()),
                ServerListKind::Eureka => eurekas.push(client.name.clone()),
            }
        }
        let builder = LoadBalancer::builder();
        let builder = match (statics.is_empty(), eurekas.is_empty()) {
            (_, true) => builder.source(static_source(&statics)),
            (true, false) => builder.source(self.eureka_source(&first.name)?),
            (false, false) => {
                let statics_source: Arc<dyn InstanceSource> = Arc::new(static_source(&statics));
                let eureka_source = self.eureka_source(&eurekas[0])?;
                let mut routes = HashMap::new();
                for client in &statics {
                    routes.insert(
                        client.name.to_ascii_lowercase(),
                        Arc::clone(&statics_source),
                    );
                }
                for name in &eurekas {
                    routes.insert(name.to_ascii_lowercase(), Arc::clone(&eureka_source));
                }
                builder.source(PerServiceSource { routes })
            }
        };
        let names = self.clients.iter().map(|c| c.name.clone());
        Ok(first.configure(builder.services(names), true))
    }

    fn kind_of(&self, client: &ClientConfig) -> Result<ServerListKind, ConfigError> {
        let no_source = |reason: &str| ConfigError::NoSource {
            client: client.name.clone(),
            reason: reason.to_owned(),
        };
        let kind = match client.server_list {
            Some(kind) => kind,
            None if client.eureka_enabled == Some(false) || client.list_of_servers.is_some() => {
                ServerListKind::Static
            }
            None if !self.eureka.urls().is_empty() => ServerListKind::Eureka,
            None => {
                return Err(no_source(
                    "set `<client>.ribbon.listOfServers` or `eureka.client.service-url.defaultZone`",
                ));
            }
        };
        match kind {
            ServerListKind::Static if client.list_of_servers.is_none() => Err(no_source(
                "the static server list needs `<client>.ribbon.listOfServers`",
            )),
            ServerListKind::Eureka if self.eureka.urls().is_empty() => Err(no_source(
                "Eureka discovery needs `eureka.client.service-url.defaultZone`",
            )),
            kind => Ok(kind),
        }
    }

    /// The Eureka source, shared by every Eureka client: an
    /// [`EurekaRegistry`](crate::discovery::eureka::EurekaRegistry) (one
    /// cached registry, deltas reconciled by hash) when called inside a
    /// Tokio runtime, else a per-app
    /// [`EurekaSource`](crate::discovery::eureka::EurekaSource).
    #[cfg(feature = "eureka")]
    fn eureka_source(&self, _client: &str) -> Result<Arc<dyn InstanceSource>, ConfigError> {
        use crate::discovery::eureka::{EurekaRegistry, EurekaSource};
        let (key, urls) = self.eureka.urls.as_ref().map_or(
            ("eureka.client.service-url.defaultZone", &[][..]),
            |(k, u)| (k.as_str(), u.as_slice()),
        );
        let joined = urls.join(",");
        let bad = |e: crate::error::BuildError| invalid(key, &redact_urls(&joined), &e.to_string());
        if tokio::runtime::Handle::try_current().is_ok() {
            let mut builder = EurekaRegistry::builder().server_urls(&joined);
            if let Some(timeout) = self.eureka.connect_timeout {
                builder = builder.connect_timeout(timeout);
            }
            if let Some(timeout) = self.eureka.read_timeout {
                builder = builder.request_timeout(timeout);
            }
            if let Some(interval) = self.eureka.fetch_interval {
                builder = builder.fetch_interval(interval);
            }
            return Ok(Arc::new(builder.build().map_err(bad)?));
        }
        let mut builder = EurekaSource::builder().server_urls(&joined);
        if let Some(timeout) = self.eureka.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(timeout) = self.eureka.read_timeout {
            builder = builder.request_timeout(timeout);
        }
        Ok(Arc::new(builder.build().map_err(bad)?))
    }

    /// Without the `eureka` feature there is no Eureka source.
    #[cfg(not(feature = "eureka"))]
    fn eureka_source(&self, client: &str) -> Result<Arc<dyn InstanceSource>, ConfigError> {
        Err(ConfigError::NoSource {
            client: client.to_owned(),
            reason: "Eureka discovery needs the crate's `eureka` feature".to_owned(),
        })
    }
}

/// One [`StaticSource`] holding the lists of `clients`.
fn static_source(clients: &[ClientConfig]) -> StaticSource {
    clients.iter().fold(StaticSource::new(), |source, client| {
        source.with_instances(
            &client.name,
            client.list_of_servers.clone().unwrap_or_default(),
        )
    })
}

/// Routes each service id to the source of its client (used when static
/// and Eureka clients share one balancer).
struct PerServiceSource {
    routes: HashMap<String, Arc<dyn InstanceSource>>,
}

impl InstanceSource for PerServiceSource {
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
        match self.routes.get(&service_id.to_ascii_lowercase()) {
            Some(source) => source.fetch(service_id),
            None => Box::pin(std::future::ready(Err(DiscoveryError::UnknownService {
                service: service_id.to_owned(),
            }))),
        }
    }
}

/// `(client, key name)` of `<client>.ribbon.<Key>`.
fn split_client_key(key: &str) -> Option<(&str, &str)> {
    let (client, name) = key.split_once(".ribbon.")?;
    let client = client.trim();
    if client.is_empty() || NOT_CLIENTS.iter().any(|p| client.starts_with(p)) {
        return None;
    }
    Some((client, name))
}

fn unknown_key_warning(key: &str, name: &str) -> String {
    match KNOWN_KEYS.iter().find(|k| k.eq_ignore_ascii_case(name)) {
        Some(known) => format!(
            "unknown Ribbon key `{key}` ignored (keys are case-sensitive: did you mean `{known}`?)"
        ),
        None => format!("unknown Ribbon key `{key}` ignored"),
    }
}

/// Settings that were read but do nothing as written.
fn semantic_warnings(client: &ClientConfig, eureka_urls: &[String]) -> Vec<String> {
    let name = &client.name;
    let mut warnings = Vec::new();
    let affinity =
        client.enable_zone_affinity == Some(true) || client.enable_zone_exclusivity == Some(true);
    if affinity && client.zone.is_none() {
        warnings.push(format!(
            "client `{name}`: `EnableZoneAffinity`/`EnableZoneExclusivity` has no effect without a zone \
             (`{name}.ribbon.zone` or `eureka.instance.metadata-map.zone`)"
        ));
    }
    if client.enable_zone_exclusivity == Some(true) && client.zone.is_some() {
        warnings.push(format!(
            "client `{name}`: `EnableZoneExclusivity` is read as zone affinity: other zones are used \
             when the own zone has no available instance"
        ));
    }
    if client.ping_interval.is_some() && client.health_check_path.is_none() {
        warnings.push(format!(
            "client `{name}`: `NFLoadBalancerPingInterval` has no effect without `HealthCheckPath`"
        ));
    }
    if client.list_of_servers.is_some()
        && !eureka_urls.is_empty()
        && client.server_list.is_none()
        && client.eureka_enabled != Some(false)
    {
        warnings.push(format!(
            "client `{name}`: both `listOfServers` and a Eureka URL are set; `listOfServers` is used \
             (set `NIWSServerListClassName` to choose)"
        ));
    }
    warnings
}

/// An invalid value; the value and reason are shown with anything that may
/// be credentials (before an `@`) hidden.
fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_owned(),
        value: crate::error::redact(value),
        reason: crate::error::redact(reason),
    }
}

fn parse_u32(key: &str, value: &str) -> Result<u32, ConfigError> {
    value.parse::<u32>().map_err(|_| {
        let reason = match value.parse::<i64>() {
            Ok(n) if n < 0 => "must not be negative",
            Ok(_) => "too large",
            Err(_) => "not a number",
        };
        invalid(key, value, reason)
    })
}

fn parse_millis(key: &str, value: &str, zero_ok: bool) -> Result<Duration, ConfigError> {
    let ms = value.parse::<u64>().map_err(|_| {
        let reason = match value.parse::<i64>() {
            Ok(n) if n < 0 => "must not be negative (milliseconds)",
            _ => "not a number (milliseconds)",
        };
        invalid(key, value, reason)
    })?;
    if ms == 0 && !zero_ok {
        return Err(invalid(key, value, "must be at least 1 (milliseconds)"));
    }
    Ok(Duration::from_millis(ms))
}

fn parse_secs(key: &str, value: &str) -> Result<Duration, ConfigError> {
    match parse_u32(key, value)? {
        0 => Err(invalid(key, value, "must be at least 1 (seconds)")),
        secs => Ok(Duration::from_secs(u64::from(secs))),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(invalid(key, value, "not a boolean (true or false)"))
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `http://user:pass@host/x` as `http://***@host/x` (see
/// [`crate::error::redact`]: every form that may hold credentials).
fn redact_url(url: &str) -> String {
    crate::error::redact(url)
}

/// [`redact_url`] over a comma-separated list.
#[cfg_attr(not(feature = "eureka"), allow(dead_code))]
fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(|u| redact_url(u.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Refuses YAML that the loader would handle badly before loading it: the
/// loader recurses per nesting level (deep block nesting overflows the
/// stack and aborts the process) and expands aliases by copying (a few
/// nested anchors grow exponentially). Configuration files need neither.
fn yaml_guard(text: &str) -> Result<(), ConfigError> {
    const MAX_BYTES: usize = 4 << 20;
    const MAX_DEPTH: usize = 128;
    const MAX_ANCHORS: usize = 32;
    let refuse = |reason: String| Err(ConfigError::Yaml { reason });
    if text.len() > MAX_BYTES {
        return refuse(format!(
            "{} bytes is more than the {MAX_BYTES} accepted",
            text.len()
        ));
    }
    for (n, line) in text.lines().enumerate() {
        // Indentation plus `- ` sequence markers opening on the same line.
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let mut rest = line.trim_start();
        let mut markers = 0usize;
        while let Some(after) = rest.strip_prefix("- ") {
            markers += 1;
            rest = after.trim_start();
        }
        let flow = line.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
        if indent / 2 + markers + flow > MAX_DEPTH {
            return refuse(format!(
                "line {}: nested deeper than {MAX_DEPTH} levels",
                n + 1
            ));
        }
    }
    let anchors = text
        .split(|c: char| c.is_whitespace() || c == ':' || c == '-' || c == '[' || c == ',')
        .filter(|token| token.starts_with('&') && token.len() > 1)
        .count();
    if anchors > MAX_ANCHORS {
        return refuse(format!(
            "{anchors} anchors; at most {MAX_ANCHORS} are accepted"
        ));
    }
    Ok(())
}

/// The key/value pairs of properties text, in order.
fn read_properties(
    bytes: &[u8],
    encoding: &'static encoding_rs::Encoding,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut pairs = Vec::new();
    java_properties::PropertiesIter::new_with_encoding(bytes, encoding)
        .read_into(|key, value| pairs.push((key, value)))
        .map_err(|e| ConfigError::Properties {
            line: e.line_number(),
            // Its `Display` ends with " (line_number = N)"; the line is kept apart.
            reason: e
                .to_string()
                .split(" (line_number")
                .next()
                .unwrap_or_default()
                .to_owned(),
        })?;
    Ok(pairs)
}

/// The dotted key/value pairs of YAML text, in order.
fn flatten_yaml_str(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    yaml_guard(text)?;
    let documents = YamlLoader::load_from_str(text).map_err(|e| ConfigError::Yaml {
        reason: format!(
            "{} at line {}, column {}",
            e.info(),
            e.marker().line(),
            e.marker().col() + 1
        ),
    })?;
    let mut pairs = Vec::new();
    for document in &documents {
        match document {
            Yaml::Hash(_) => flatten_yaml(document, "", &mut pairs)?,
            Yaml::Null => {}
            _ => {
                return Err(ConfigError::Yaml {
                    reason: "a document must be a map of settings".to_owned(),
                });
            }
        }
    }
    Ok(pairs)
}

fn yaml_scalar(node: &Yaml) -> Option<String> {
    match node {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        Yaml::Null => Some(String::new()),
        _ => None,
    }
}

fn flatten_yaml(
    node: &Yaml,
    prefix: &str,
    out: &mut Vec<(String, String)>,
) -> Result<(), ConfigError> {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match node {
        Yaml::Hash(map) => {
            for (key, value) in map {
                let key = yaml_scalar(key).ok_or_else(|| ConfigError::Yaml {
                    reason: format!("under `{prefix}`: a key must be a scalar"),
                })?;
                flatten_yaml(value, &join(&key), out)?;
            }
        }
        Yaml::Array(items) => {
            let scalars: Option<Vec<String>> = items.iter().map(yaml_scalar).collect();
            match scalars {
                Some(scalars) => out.push((prefix.to_owned(), scalars.join(","))),
                None => {
                    for (i, item) in items.iter().enumerate() {
                        flatten_yaml(item, &format!("{prefix}[{i}]"), out)?;
                    }
                }
            }
        }
        Yaml::Alias(_) | Yaml::BadValue => {
            return Err(ConfigError::Yaml {
                reason: format!("`{prefix}`: unsupported YAML value"),
            });
        }
        scalar => out.push((prefix.to_owned(), yaml_scalar(scalar).unwrap_or_default())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn yaml_that_would_overflow_or_explode_is_refused() {
        let deep: String = (0..300)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i * 2)))
            .collect();
        assert!(matches!(
            super::flatten_yaml_str(&deep),
            Err(ConfigError::Yaml { .. })
        ));
        let laughs: String = (0..40)
            .map(|i| format!("a{i}: &a{i} [*a{}, *a{}]\n", i.max(1) - 1, i.max(1) - 1))
            .collect();
        assert!(matches!(
            super::flatten_yaml_str(&laughs),
            Err(ConfigError::Yaml { .. })
        ));
        assert!(super::flatten_yaml_str("svc:\n  ribbon:\n    MaxAutoRetries: 1\n").is_ok());
    }

    use super::*;

    #[test]
    fn yaml_flattens_to_dotted_keys() {
        let pairs = flatten_yaml_str(
            "a:\n  b:\n    c: 1\n  list: [x, 2, true]\n  empty:\n  objs:\n    - k: v\n---\nd.e: 1.5\n",
        )
        .unwrap();
        assert_eq!(
            pairs,
            [
                ("a.b.c".to_owned(), "1".to_owned()),
                ("a.list".to_owned(), "x,2,true".to_owned()),
                ("a.empty".to_owned(), String::new()),
                ("a.objs[0].k".to_owned(), "v".to_owned()),
                ("d.e".to_owned(), "1.5".to_owned()),
            ]
        );
        assert!(matches!(
            flatten_yaml_str("- a\n- b\n"),
            Err(ConfigError::Yaml { .. })
        ));
        assert!(matches!(
            flatten_yaml_str("a: [b\n"),
            Err(ConfigError::Yaml { .. })
        ));
        assert!(flatten_yaml_str("").unwrap().is_empty());
    }

    #[test]
    fn properties_keep_order_and_escapes() {
        let pairs = read_properties(
            b"# c\n! c\na = 1\nb: x\\\n   y\nc \\u00e9\n",
            encoding_rs::UTF_8,
        )
        .unwrap();
        assert_eq!(
            pairs,
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "xy".to_owned()),
                ("c".to_owned(), "é".to_owned()),
            ]
        );
        assert!(matches!(
            read_properties(b"a=\\u12", encoding_rs::UTF_8),
            Err(ConfigError::Properties { .. })
        ));
    }

    #[test]
    fn client_keys_split_at_ribbon() {
        assert_eq!(
            split_client_key("user-service.ribbon.listOfServers"),
            Some(("user-service", "listOfServers"))
        );
        assert_eq!(
            split_client_key("my.svc.ribbon.eureka.enabled"),
            Some(("my.svc", "eureka.enabled"))
        );
        assert_eq!(
            split_client_key("spring.cloud.loadbalancer.ribbon.enabled"),
            None
        );
        assert_eq!(split_client_key("ribbon.ReadTimeout"), None);
        assert_eq!(split_client_key("server.port"), None);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("http://u:p@h:1/eureka"), "http://***@h:1/eureka");
        // Over-redacting a path with `@` is the safe side.
        assert_eq!(redact_url("http://h/a@b"), "http://***@b");
        assert_eq!(redact_urls("http://a@x, http://y"), "http://***@x,http://y");
    }

    #[test]
    fn global_defaults_and_client_overrides() {
        let config = RibbonConfig::from_pairs([
            ("ribbon.MaxAutoRetries", "2"),
            ("ribbon.ReadTimeout", "500"),
            ("a.ribbon.listOfServers", "h:1"),
            ("a.ribbon.MaxAutoRetries", "0"),
            ("A.ribbon.ConnectTimeout", "0"),
        ])
        .unwrap();
        assert_eq!(config.clients().len(), 1);
        let a = config.client("a");
        assert_eq!(a.max_auto_retries, Some(0));
        assert_eq!(a.read_timeout, Some(Duration::from_millis(500)));
        assert_eq!(a.connect_timeout, Some(Duration::ZERO));
        assert_eq!(
            a.retry_policy().get_per_try_timeout(),
            Some(Duration::from_millis(500))
        );
        let other = config.client("other");
        assert_eq!(other.name, "other");
        assert_eq!(other.max_auto_retries, Some(2));
        assert!(matches!(
            config.server_list_kind("other"),
            Err(ConfigError::NoSource { .. })
        ));
    }

    #[test]
    fn zone_preference_rules() {
        let config = RibbonConfig::from_pairs([
            ("eureka.instance.metadata-map.zone", "z1"),
            ("a.ribbon.NFLoadBalancerRuleClassName", "ZoneAvoidanceRule"),
            ("b.ribbon.EnableZoneAffinity", "true"),
            ("b.ribbon.NFLoadBalancerRuleClassName", "RandomRule"),
            ("c.ribbon.NFLoadBalancerRuleClassName", "ZoneAvoidanceRule"),
            ("c.ribbon.EnableZoneAffinity", "false"),
            ("d.ribbon.zone", "z2"),
            ("e.ribbon.EnableZoneExclusivity", "true"),
            ("e.ribbon.zone", "z3"),
        ])
        .unwrap();
        assert_eq!(config.client("a").preferred_zone(), Some("z1"));
        assert_eq!(config.client("b").preferred_zone(), Some("z1"));
        assert_eq!(config.client("b").make_rule().name(), "zone_avoidance");
        assert_eq!(config.client("c").preferred_zone(), None);
        assert_eq!(config.client("d").preferred_zone(), None);
        assert_eq!(config.client("d").zone.as_deref(), Some("z2"));
        assert_eq!(config.client("d").make_rule().name(), "round_robin");
        assert_eq!(config.client("e").preferred_zone(), Some("z3"));
        assert!(
            config
                .warnings()
                .iter()
                .any(|w| w.contains("`e`") && w.contains("EnableZoneExclusivity"))
        );
    }

    #[cfg(feature = "eureka")]
    #[test]
    fn eureka_url_is_validated_and_redacted() {
        let err = RibbonConfig::from_pairs([(
            "eureka.client.service-url.defaultZone",
            "ftp://u:secret@h/eureka",
        )])
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("defaultZone"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn conflicting_clients_are_named() {
        let config = RibbonConfig::from_pairs([
            ("a.ribbon.listOfServers", "h:1"),
            ("b.ribbon.listOfServers", "h:2"),
            ("b.ribbon.MaxAutoRetries", "1"),
        ])
        .unwrap();
        match config.builder() {
            Err(ConfigError::Conflicting {
                key,
                first_client,
                second_client,
                first_value,
                second_value,
            }) => {
                assert_eq!(key, "MaxAutoRetries");
                assert_eq!((first_client.as_str(), second_client.as_str()), ("a", "b"));
                assert_eq!((first_value.as_str(), second_value.as_str()), ("0", "1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(config.builder_for("a").is_ok());
        assert!(config.builder_for("b").is_ok());
    }

    #[cfg(feature = "eureka")]
    #[tokio::test]
    async fn mixed_sources_route_per_service() {
        let config = RibbonConfig::from_pairs([
            (
                "eureka.client.serviceUrl.defaultZone",
                "http://127.0.0.1:1/eureka",
            ),
            ("a.ribbon.listOfServers", "127.0.0.1:9"),
            ("b.ribbon.ReadTimeout", "100"),
            ("a.ribbon.ReadTimeout", "100"),
        ])
        .unwrap();
        assert_eq!(
            config.server_list_kind("a").unwrap(),
            ServerListKind::Static
        );
        assert_eq!(
            config.server_list_kind("b").unwrap(),
            ServerListKind::Eureka
        );
        let statics = static_source(&[config.client("a")]);
        let source = PerServiceSource {
            routes: HashMap::from([("a".to_owned(), Arc::new(statics) as Arc<dyn InstanceSource>)]),
        };
        assert_eq!(source.fetch("A").await.unwrap().len(), 1);
        assert!(matches!(
            source.fetch("c").await,
            Err(DiscoveryError::UnknownService { .. })
        ));
        let lb = config
            .builder()
            .unwrap()
            .build(tower::service_fn(|_: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            }))
            .unwrap();
        assert_eq!(lb.services(), ["a", "b"]);
    }
}
