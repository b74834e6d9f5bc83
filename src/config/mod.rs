//! Ribbon-style configuration: read `<client>.ribbon.<Key>` settings from a
//! `.properties` or YAML file (Ribbon's `IClientConfig` / Archaius
//! properties, a Spring `application.yml`) and make a [`Builder`] of them.
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
//!   [`java-properties`](https://docs.rs/java-properties) crate; a `#---`
//!   or `!---` line starts a new document, as in Spring Boot 2.4+.
//! - YAML ([`RibbonConfig::from_yaml_str`]): read with
//!   [`yaml-rust2`](https://docs.rs/yaml-rust2). Nested maps flatten to
//!   dotted keys, so `user-service: { ribbon: { listOfServers: a:1 } }` is
//!   `user-service.ribbon.listOfServers=a:1`; a list of scalars is joined
//!   with commas; a list holding maps flattens with Spring's `[index]`
//!   suffixes; `null` is an empty value; plain scalars are read as Spring
//!   Boot's SnakeYAML reads them (YAML 1.1: `on`/`yes` true, `off`/`no`
//!   false, `010` octal, `0x7d0`, `0b11`, `5_000`, base-60 `1:30`).
//!   Several documents (`---`) are read in order, later values winning;
//!   profile-specific ones apply as Spring Boot's profiles say (see
//!   `docs/spring-cloud-users.md`).
//! - Any other source of pairs: [`RibbonConfig::from_pairs`].
//!
//! Values are trimmed. A key given twice keeps the later value. Spring's
//! `${name:default}` placeholders are resolved from the environment, the
//! file's keys or the default, as Spring does (see [`placeholders`]).
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
//! | `OkToRetryOnAllOperations` | `true` / `false` | `false` | [`RetryPolicy::retry_on_all_operations`]; `false` still retries PUT and DELETE (RFC 9110's idempotent methods) where Spring retries GET alone |
//! | `retryableStatusCodes` | comma-separated codes | 502, 503, 504 | [`RetryPolicy::retryable_statuses`] |
//! | `ReadTimeout` | milliseconds, 0 = none | 5000 (Ribbon's) | [`Builder::read_timeout`]: the per-try bound (a [`RetryPolicy::per_try_timeout`] set in code wins) |
//! | `ConnectTimeout` | milliseconds, 0 = none | 2000 (Ribbon's) | [`Builder::connect_timeout`]: the connector of [`Builder::build_http`]'s client; yours from [`Builder::get_connect_timeout`] |
//! | `ServerListRefreshInterval` | milliseconds | 30000 | [`RefreshConfig::interval`] |
//! | `HealthCheckPath` (ours) | URL path | off | [`ActiveHealthCheck::new`]: turns active checks on |
//! | `NFLoadBalancerPingInterval` | **seconds** (Ribbon's unit) | 30 | [`ActiveHealthCheck::interval`] |
//! | `EnableZoneAffinity` | `true` / `false` | `false` | prefer the client's zone ([`ZoneAvoidance::preferred_zone`]) |
//! | `EnableZoneExclusivity` | `true` / `false` | `false` | as `EnableZoneAffinity` (see below) |
//! | `zone` (ours) | zone name | Spring's `eureka.instance.metadata-map.zone` | the client's own zone |
//! | `DeploymentContextBasedVipAddresses` | comma-separated VIPs | none | recorded only |
//! | `NIWSServerListClassName` | `ConfigurationBasedServerList` / `DiscoveryEnabledNIWSServerList` | see below | the instance source |
//! | `eureka.enabled` (Spring) | `true` / `false` | `true` | `false` forces `listOfServers` |
//! | `connectionFailureCountThreshold` | count, 1 to 1 000 000 | 3 | [`StatsConfig::breaker_threshold`] |
//! | `circuitTripTimeoutFactorSeconds` | **seconds**, 1 to 86 400 | 10 | [`StatsConfig::breaker_base`] |
//! | `circuitTripMaxTimeoutSeconds` | **seconds**, 1 to 86 400 | 30 | [`StatsConfig::breaker_max`] |
//! | `SlowStartWindow` (ours) | milliseconds, 0 to one day, 0 = off | off | Envoy's `slow_start_window`: [`SlowStart`] around the rule |
//! | `SlowStartAggression` (ours) | number, above 0, at most 100 | 1.0 | Envoy's `aggression` |
//! | `SlowStartMinWeightPercent` (ours) | number, 0 to 100 | 10 | Envoy's `min_weight_percent` |
//!
//! The three breaker keys are also read in Ribbon's own form,
//! `niws.loadbalancer.<client>.<Key>` and `niws.loadbalancer.default.<Key>`.
//! Numbers have ranges: retries 0 to 100, milliseconds up to one day
//! (`ServerListRefreshInterval` at least 1), seconds 1 to 86 400; a value
//! outside is a [`ConfigError`] of kind
//! [`OutOfRange`](ConfigErrorKind::OutOfRange) naming the key, the value and
//! [the range](ConfigError::allowed).
//!
//! Outside the `ribbon` namespace these Spring keys are read (relaxed as
//! Spring binds them: case, `-` and `_` are ignored in every name element,
//! here and in the `spring.cloud.*` prefixes below, so `serviceUrl` or
//! `spring.cloud.loadBalancer` work; Ribbon's names stay case-sensitive):
//!
//! | key | unit | default | becomes |
//! |---|---|---|---|
//! | `eureka.client.service-url.defaultZone` | comma-separated URLs | none | an `EurekaRegistry` shared by every Eureka client (an `EurekaSource` when built outside a Tokio runtime; feature `eureka`) |
//! | `eureka.client.registry-fetch-interval-seconds` | seconds | 30 | the registry's delta interval |
//! | `eureka.client.eureka-server-connect-timeout-seconds` | seconds | 5 | its connect timeout |
//! | `eureka.client.eureka-server-read-timeout-seconds` | seconds | 8 | its request timeout |
//! | `eureka.instance.metadata-map.zone` | zone name | none | every client's zone unless `zone` is set |
//! | `eureka.client.enabled`, `eureka.client.fetch-registry` | `true` / `false` | `true` | `false`: no Eureka source (Spring then has no Eureka client, or one that never fetches); other values warn |
//!
//! Spring Cloud LoadBalancer's `spring.cloud.loadbalancer.*` keys and their
//! per-client form `spring.cloud.loadbalancer.clients.<name>.*` (or
//! `clients[<name>].*` for names with dots; it wins
//! over the global form, and names a client as `<name>.ribbon.*` does) are
//! read too: [`spring_loadbalancer`] lists each key and what it becomes.
//! Where a Ribbon key and its Spring counterpart are both set in one scope,
//! the Ribbon key wins; a client's own keys, Ribbon or Spring, win over
//! the global ones. `retry.enabled` (the client's, else the global one)
//! `false` turns retries off but for a client's own Ribbon keys under a
//! global `false`. A YAML profile's document applies if the file says.
//!
//! Spring Cloud's `SimpleDiscoveryClient` keys,
//! `spring.cloud.discovery.client.simple.instances.<serviceId>[i].*`, give
//! static instances with ids and metadata: see [`simple_discovery`].
//!
//! Other keys outside `ribbon` and `spring.cloud.loadbalancer` are ignored
//! silently, so a whole Spring `application.yml` can be read; keys whose
//! client part starts with `spring.`, `eureka.` or `zuul.` are never taken
//! for clients; near misses warn (a `spring.cloud.*` namespace one or two
//! edits from `loadbalancer` or `discovery`, an unknown key under
//! `spring.cloud.discovery.client`, `Ribbon` for `ribbon`). An unknown key
//! inside `ribbon` (such as `ribbon.MaxTotalConnections`),
//! `spring.cloud.loadbalancer` or `spring.cloud.discovery.client.simple` is
//! ignored with a warning naming the key and the nearest known key (by edit
//! distance): [`tracing::warn!`] and an entry in [`RibbonConfig::warnings`].
//! Spring keys read but not applied yet (`api-version`, some health-check
//! and retry keys) warn the same way, as "recognized, not yet applied"
//! (and change nothing set in code). A value that cannot be read is a
//! [`ConfigError`] naming the key and the value.
//!
//! # Bounds
//!
//! Text and files over 1 MiB are refused. YAML is read without copying
//! aliases and refused (a [`TooLarge`](ConfigErrorKind::TooLarge) error)
//! beyond 64 levels of nesting, 100 000 nodes after alias expansion, or
//! 8 MiB of flattened keys and values, so an alias bomb fails in
//! milliseconds with bounded memory (see the `yaml` module source). At
//! most 1 024 clients are read, and at most 100 unknown keys are reported
//! one by one (the rest are counted in one warning). Each `listOfServers`
//! entry becomes an instance of a few hundred bytes, so entries are bounded
//! too, before any is parsed: at most
//! [`MAX_LIST_ENTRIES`](crate::discovery::MAX_LIST_ENTRIES) (4 096) in one
//! list and 65 536 over all clients (a global `ribbon.listOfServers` counts
//! once for each client it applies to), each a
//! [`TooLarge`](ConfigErrorKind::TooLarge) error. Any other list value
//! (VIP addresses, status codes, exceptions, eager-load clients, Eureka
//! URLs) holds at most 1 024 elements. Every client gets its own copy of
//! each global value (`ribbon.*`, `spring.cloud.loadbalancer.*` outside
//! `clients`), so the global values may take at most 32 MiB once copied
//! into every client (counted high: their bytes plus 32 per list element;
//! Eureka's zone counts too); a 900 KB global value and 1 000 clients made
//! 862 MiB of copies. Spring's identity keys, from which every client
//! builds its subset instance id, are ignored (with a warning) over 253
//! bytes.
//!
//! # Choices where Ribbon and this crate differ
//!
//! - **Instance source.** Per client, first match wins:
//!   `NIWSServerListClassName` if set; a static list if `eureka.enabled` is
//!   `false`; a static list if `listOfServers` is set, else the client's
//!   Spring Cloud simple instances ([`simple_discovery`]:
//!   `spring.cloud.discovery.client.simple.instances.<client>`, with ids
//!   and metadata); Eureka if a `defaultZone` URL is set and none of
//!   `spring.cloud.discovery.enabled`, `eureka.client.enabled`, `fetch-registry` is `false`; else a
//!   [`NoSource`](ConfigErrorKind::NoSource) error. A warning names each
//!   client where two of these are set. (Spring Cloud
//!   with Eureka on the class path ignores `listOfServers` unless
//!   `ribbon.eureka.enabled=false`; here an explicit list wins, since it was
//!   written for this client.) When [`RibbonConfig::builder`] serves clients
//!   of both kinds, it routes each service id to its own source.
//! - **Rules.** `RetryRule` becomes round robin: its retrying of the pick is
//!   what the balancer's retries (`MaxAutoRetries*`) and health filtering
//!   already do. Custom rule classes cannot be loaded and are an error.
//! - **Zones.** The preferred zone is set when the client's zone is known
//!   and `EnableZoneAffinity` or `EnableZoneExclusivity` is `true`, or the
//!   rule is `ZoneAvoidanceRule` or `configurations` is `zone-preference`
//!   (with any rule, as Spring's list filter) and `EnableZoneAffinity` is
//!   not `false` (Spring Cloud's `ZonePreferenceServerListFilter`); any
//!   other rule is then wrapped in [`ZoneAvoidance`]. Exclusivity is not strict here: when
//!   the own zone has no available instance, other zones are used (a
//!   warning says so).
//! - **Timeouts.** `ReadTimeout` bounds each whole attempt. `ConnectTimeout`
//!   belongs to the HTTP client's connector: it is set on the client
//!   [`Builder::build_http`] makes; a client you build yourself takes it
//!   from [`Builder::get_connect_timeout`]. Unset, Ribbon's 2 s / 5 s apply
//!   (see [`crate::service::timeouts`]).
//! - **One balancer, one policy.** A [`Builder`] has one rule, retry policy,
//!   refresh and health check for all its services.
//!   [`RibbonConfig::builder`] therefore requires every client to agree on
//!   those keys and fails with a [`Conflicting`](ConfigErrorKind::Conflicting) error naming the key
//!   otherwise; [`RibbonConfig::builder_for`] builds one client's balancer.

mod bounds;
mod client;
mod error;
mod file;
mod eureka;
mod keys;
mod policies;
pub mod placeholders;
mod profiles;
mod properties;
mod reader;
mod ribbon;
mod routing;
mod scope;
pub mod simple_discovery;
pub mod spring_loadbalancer;
mod value;
mod yaml;


pub use client::ClientConfig;
pub use error::{ConfigError, ConfigErrorKind};
pub use policies::SlowStartSettings;
pub use reader::RibbonConfig;
pub use ribbon::{RuleKind, ServerListKind};
pub use spring_loadbalancer::{LoadBalancerConfiguration, LoadBalancerSettings};

use crate::service::{Builder, LoadBalancer};
#[cfg(doc)]
use crate::{discovery::{RefreshConfig, StaticSource, parse_list_of_servers}, health::ActiveHealthCheck};
#[cfg(doc)]
use crate::{retry::RetryPolicy, rule::{SlowStart, ZoneAvoidance}, stats::StatsConfig};
use reader::{Reader, static_source};
use scope::{RibbonScope, SpringScope};

impl RibbonConfig {
    /// Reads Java properties text (`user-service.ribbon.MaxAutoRetries=1`).
    ///
    /// # Errors
    /// [`Properties`](ConfigErrorKind::Properties) for text that is not a
    /// properties file; [`TooLarge`](ConfigErrorKind::TooLarge) over 1 MiB;
    /// [`InvalidValue`](ConfigErrorKind::InvalidValue) and
    /// [`OutOfRange`](ConfigErrorKind::OutOfRange) for a value that cannot
    /// be used.
    pub fn from_properties_str(text: &str) -> Result<Self, ConfigError> {
        let documents = properties::read_properties_documents(text.as_bytes(), encoding_rs::UTF_8)?;
        Self::from_documents(documents, "properties")
    }

    /// The documents that apply (see [`profiles`]), read as one, with a
    /// warning for each skipped.
    pub(super) fn from_documents(documents: Vec<Vec<(String, String)>>, kind: &str) -> Result<Self, ConfigError> {
        let (pairs, skipped) = profiles::select(documents, kind);
        let mut config = Self::from_pairs(pairs)?;
        skipped.iter().for_each(|warning| tracing::warn!(%warning, "configuration"));
        config.warnings.splice(0..0, skipped);
        Ok(config)
    }

    /// Reads YAML text; nested maps flatten to dotted keys (see the
    /// [module docs](self)); a profile-specific document applies only when
    /// the file's `spring.profiles.active` names its profile.
    ///
    /// # Errors
    /// [`Yaml`](ConfigErrorKind::Yaml) for text that is not YAML or not a
    /// map; [`TooLarge`](ConfigErrorKind::TooLarge) past a bound (see
    /// [Bounds](self#bounds)); the value errors of
    /// [`RibbonConfig::from_properties_str`].
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_documents(yaml::flatten_yaml_documents(text)?, "YAML")
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
    /// [`InvalidValue`](ConfigErrorKind::InvalidValue) and
    /// [`OutOfRange`](ConfigErrorKind::OutOfRange) for a value that cannot
    /// be used.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let (pairs, warnings) = placeholders::resolve_in(pairs);
        let mut reader = Reader::default();
        reader.warnings.extend(warnings);
        for (key, value) in &pairs {
            reader.read(key, value.trim())?;
        }
        reader.declare_eager()?;
        reader.finish()
    }

    /// The clients named by `<client>.ribbon.<Key>` or
    /// `spring.cloud.loadbalancer.clients.<client>.<key>` keys, in the order
    /// they first appear, then those of
    /// `spring.cloud.loadbalancer.eager-load.clients`, with the global
    /// defaults merged in.
    pub fn clients(&self) -> &[ClientConfig] {
        &self.clients
    }

    /// The settings of `name` (case-insensitive): a configured client, or
    /// any other name with only the global defaults (as Ribbon gives every
    /// client the defaults).
    pub fn client(&self, name: &str) -> ClientConfig {
        match self
            .clients
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
        {
            Some(client) => client.clone(),
            None => {
                let name = name.trim();
                let lb = SpringScope::resolve(None, &self.spring, name);
                RibbonScope::default().resolve(
                    &self.defaults,
                    name,
                    self.eureka.zone.as_deref(),
                    lb,
                    None,
                    &self.spring.lb.retry,
                )
            }
        }
    }

    /// The Eureka server URLs of `eureka.client.service-url.defaultZone`,
    /// as written (credentials included; the `Debug` output hides them),
    /// also when `eureka.client.enabled` is `false`.
    pub fn eureka_server_urls(&self) -> &[String] {
        self.eureka.urls()
    }

    /// What was ignored or read differently: unknown keys under `ribbon`,
    /// `spring.cloud.loadbalancer` and `spring.cloud.discovery.client.simple`
    /// (each message names the key and the nearest known one), Spring keys
    /// recognized but not yet applied, conflicting instance sources, and
    /// settings without effect. Each was also logged with
    /// [`tracing::warn!`].
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Where the instances of `client` come from (see the [module
    /// docs](self)).
    ///
    /// # Errors
    /// [`NoSource`](ConfigErrorKind::NoSource) when the client has neither
    /// a usable `listOfServers` nor a Eureka URL.
    pub fn server_list_kind(&self, client: &str) -> Result<ServerListKind, ConfigError> {
        self.kind_of(&self.client(client))
    }

    /// Configures `builder` for `client`: declares the service, sets the
    /// source (replacing one set before), and sets the rule, retry policy,
    /// refresh, breaker and health check from the keys that are set; keys
    /// that are not set leave the builder's setting as it was. A retry key
    /// changes its one setting of the builder's [`RetryPolicy`] (the counts,
    /// all operations, the status codes, the backoff); the policy's
    /// per-try timeout, deadline and budget set in code are kept.
    ///
    /// To serve several clients from one balancer use
    /// [`RibbonConfig::builder`].
    ///
    /// # Errors
    /// [`NoSource`](ConfigErrorKind::NoSource) when the client has no
    /// instance source; [`OutOfRange`](ConfigErrorKind::OutOfRange) from
    /// [`ClientConfig::validate`].
    pub fn apply(&self, client: &str, builder: Builder) -> Result<Builder, ConfigError> {
        let config = self.client(client);
        config.validate()?;
        let builder = match self.kind_of(&config)? {
            ServerListKind::Static => builder.source(static_source(std::slice::from_ref(&config))),
            ServerListKind::Eureka => builder.source(self.eureka.source(&config.name)?),
        };
        let builder = config.configure(builder.service(config.name.clone()), false);
        let client = (config.name.as_str(), &config.load_balancer);
        Ok(policies::with_instance_cookies(builder, [client], None))
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
    /// refresh, breaker and health check are balancer-wide, so every client
    /// must agree on them.
    ///
    /// # Errors
    /// [`NoClients`](ConfigErrorKind::NoClients) without client keys;
    /// [`NoSource`](ConfigErrorKind::NoSource) for a client without a
    /// source; [`Conflicting`](ConfigErrorKind::Conflicting) naming the
    /// first balancer-wide key two clients set differently;
    /// [`OutOfRange`](ConfigErrorKind::OutOfRange) from
    /// [`ClientConfig::validate`].
    pub fn builder(&self) -> Result<Builder, ConfigError> {
        let first = (self.clients.first())
            .ok_or_else(|| ConfigError::new(ConfigErrorKind::NoClients, ""))?;
        let first_settings = first.balancer_settings();
        for other in &self.clients {
            other.validate()?;
            for ((key, a), (_, b)) in first_settings.iter().zip(other.balancer_settings()) {
                if *a != b {
                    return Err(ConfigError::conflicting(
                        key,
                        (&first.name, a.clone()),
                        (&other.name, b),
                    ));
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
        let builder = self.sources(LoadBalancer::builder(), &statics, &eurekas, &first.name)?;
        let names = self.clients.iter().map(|c| c.name.clone());
        let builder = first.configure(builder.services(names), true);
        let global = SpringScope::resolve(None, &self.spring, "");
        let clients = (self.clients.iter()).map(|c| (c.name.as_str(), &c.load_balancer));
        let builder = policies::with_instance_cookies(builder, clients, Some(&global));
        Ok(match client::hint_spec(&self.clients, &global) {
            Some(spec) => builder.rule(move || spec.make()),
            None => builder,
        })
    }
}

#[cfg(test)]
mod tests;
