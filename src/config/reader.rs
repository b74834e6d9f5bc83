//! The reader: each `(key, value)` pair to its scope (global or per client,
//! Ribbon or Spring Cloud LoadBalancer, Eureka), then the scopes merged into
//! one [`ClientConfig`] per client.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use super::client::ClientConfig;
use super::error::ConfigError;
use super::eureka::{EurekaOff, EurekaSettings, redact_url};
use super::keys;
use super::policies::AppIdentity;
use super::properties;
use super::bounds::{MAX_COPIED_BYTES, check_server_total, copy_cost};
use super::ribbon::ServerListKind;
use super::scope::{RibbonScope, SpringScope};
use super::simple_discovery::{self, SimpleDiscovery};
use super::value;
use crate::discovery::StaticSource;

/// Client-name prefixes that are Spring namespaces, never Ribbon clients.
const NOT_CLIENTS: [&str; 4] = ["spring.", "eureka.", "zuul.", "niws."];
/// The prefix of Spring Cloud LoadBalancer's keys.
const SPRING_PREFIX: &str = "spring.cloud.loadbalancer.";
/// [`SPRING_PREFIX`]'s name elements, matched relaxed.
const SPRING_ELEMENTS: &str = "spring.cloud.loadbalancer";
/// The name elements of Spring Cloud's discovery keys, matched relaxed.
const DISCOVERY_ELEMENTS: &str = "spring.cloud.discovery";
/// Ribbon's own prefix of the breaker keys (`niws.loadbalancer.<client>.`).
const NIWS_PREFIX: &str = "niws.loadbalancer.";

/// Most clients one configuration may name; one balancer built from it
/// runs a refresh task per client.
pub(crate) const MAX_CLIENTS: usize = 1024;
/// Most unknown keys reported one by one (each costs an edit-distance
/// search); the rest are counted in one last warning.
pub(crate) const MAX_UNKNOWN_WARNINGS: usize = 100;

/// The keys of one named client, read but not yet merged.
#[derive(Clone, Default)]
pub(crate) struct ClientScopes {
    name: String,
    ribbon: RibbonScope,
    spring: Option<SpringScope>,
}

/// Everything read, before merging.
#[derive(Default)]
pub(crate) struct Reader {
    pub(crate) defaults: RibbonScope,
    pub(crate) spring: SpringScope,
    pub(crate) clients: Vec<ClientScopes>,
    pub(crate) eureka: EurekaSettings,
    pub(crate) warnings: Vec<String>,
    /// Spring's application identity keys (for `subset.instance-id`).
    app: AppIdentity,
    /// Lower-case client name -> index in `clients`.
    index: HashMap<String, usize>,
    /// Unknown keys seen.
    unknown: usize,
    /// `spring.cloud.discovery.client.simple.*`.
    simple: SimpleDiscovery,
    /// What the global values read cost each client they are copied into
    /// ([`copy_cost`]).
    global_bytes: usize,
}

impl Reader {
    fn client(&mut self, name: &str) -> Result<&mut ClientScopes, ConfigError> {
        let lower = name.to_ascii_lowercase();
        let index = match self.index.get(&lower) {
            Some(&index) => index,
            None if self.clients.len() >= MAX_CLIENTS => {
                return Err(ConfigError::too_large(
                    MAX_CLIENTS as u64,
                    format!("more than {MAX_CLIENTS} clients"),
                ));
            }
            None => {
                let name = name.to_owned();
                self.clients.push(ClientScopes {
                    name,
                    ..ClientScopes::default()
                });
                self.index.insert(lower, self.clients.len() - 1);
                self.clients.len() - 1
            }
        };
        Ok(&mut self.clients[index])
    }

    /// Reports an unknown key (the message is built only for the first
    /// [`MAX_UNKNOWN_WARNINGS`]).
    fn unknown(&mut self, message: impl FnOnce() -> String) {
        self.unknown += 1;
        if self.unknown <= MAX_UNKNOWN_WARNINGS {
            self.warnings.push(message());
        }
    }

    pub(crate) fn read(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        // Spring's prefixes bind relaxed (`spring.cloud.loadBalancer.` too);
        // Ribbon's (`ribbon`, `niws`) are Archaius names, exact.
        if let Some(rest) = value::strip_elements(key, SPRING_ELEMENTS) {
            return self.read_spring(rest, key, value);
        }
        if let Some(rest) = key.strip_prefix(NIWS_PREFIX) {
            return self.read_niws(rest, key, value);
        }
        if let Some(rest) = value::strip_elements(key, DISCOVERY_ELEMENTS) {
            match self.simple.read(rest, key, value)? {
                simple_discovery::Read::Service(name) => _ = self.client(&name)?,
                simple_discovery::Read::Unknown(warning) => self.unknown(|| warning),
                simple_discovery::Read::Other => {}
            }
            return Ok(());
        }
        let (scope, name) = if let Some(name) = key.strip_prefix("ribbon.") {
            self.global_bytes = self.global_bytes.saturating_add(copy_cost(value));
            (&mut self.defaults, name)
        } else if let Some((client, name)) = split_client_key(key) {
            (&mut self.client(client)?.ribbon, name)
        } else {
            if value::strip_elements(key, "eureka").is_some() {
                if let Some(warning) = self.eureka.set(key, value)? {
                    self.unknown(|| warning);
                }
            } else if let Some(warning) = near_miss(key) {
                self.unknown(|| warning);
            }
            if let Some(warning) = self.app.read(key, value) {
                self.warnings.push(warning);
            }
            return Ok(());
        };
        if !keys::set_ribbon(scope, name, key, value)? {
            self.unknown(|| unknown_ribbon(key, name));
        }
        Ok(())
    }

    /// `rest` is the key after `spring.cloud.loadbalancer.`.
    fn read_spring(&mut self, rest: &str, key: &str, value: &str) -> Result<(), ConfigError> {
        // `clients.<name>.<key>`, or `clients[<name>].<key>` for names with
        // dots; `clients` is relaxed as Spring binds it.
        let head = rest.find(['.', '[']).map_or(rest, |at| &rest[..at]);
        let after = &rest[head.len()..];
        let client = match after.strip_prefix('[') {
            _ if !value::element_is(head, "clients") => None,
            Some(r) => r.split_once("]."),
            None => after.strip_prefix('.').and_then(|r| r.split_once('.')),
        };
        let (scope, name) = match client {
            Some((client, name)) if !client.trim().is_empty() => (
                self.client(client.trim())?
                    .spring
                    .get_or_insert_with(SpringScope::default),
                name,
            ),
            _ => {
                // A client takes only its own entry of a per-service map
                // (`hint.*`, ...) or else `default`: only that is copied.
                let copied = keys::spring_key(rest).is_none_or(|(def, arg)| {
                    !def.name.ends_with(".*") || arg.eq_ignore_ascii_case("default")
                });
                if copied {
                    self.global_bytes = self.global_bytes.saturating_add(copy_cost(value));
                }
                (&mut self.spring, rest)
            }
        };
        if !keys::set_spring(scope, name, key, value)? {
            self.unknown(|| unknown_spring(key, name));
        }
        Ok(())
    }

    /// Ribbon's `niws.loadbalancer.<client>.<Key>` form of the breaker keys;
    /// other keys there are ignored.
    fn read_niws(&mut self, rest: &str, key: &str, value: &str) -> Result<(), ConfigError> {
        const BREAKER: [&str; 3] = [
            "connectionFailureCountThreshold",
            "circuitTripTimeoutFactorSeconds",
            "circuitTripMaxTimeoutSeconds",
        ];
        let Some((client, name)) = rest.rsplit_once('.') else {
            return Ok(());
        };
        if !BREAKER.contains(&name) || client.trim().is_empty() {
            return Ok(());
        }
        let scope = if client == "default" {
            self.global_bytes = self.global_bytes.saturating_add(copy_cost(value));
            &mut self.defaults
        } else {
            &mut self.client(client.trim())?.ribbon
        };
        keys::set_ribbon(scope, name, key, value).map(|_| ())
    }

    /// Declares the services of `eager-load.clients` as clients (Spring
    /// starts their balancers at startup; here declared services start when
    /// the balancer is built).
    pub(crate) fn declare_eager(&mut self) -> Result<(), ConfigError> {
        for name in self.spring.eager_load.clone().unwrap_or_default() {
            self.client(&name)?;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<RibbonConfig, ConfigError> {
        self.eureka.discovery_disabled = self.simple.is_disabled();
        self.app.fill_hostname(super::policies::machine_hostname());
        self.spring.default_instance_id = self.app.default_id();
        self.spring.identity = self.app.clone();
        check_server_total(&self.defaults, self.clients.iter().map(|c| &c.ribbon))?;
        // Eureka's zone is every client's zone too.
        let zone = self.eureka.zone.as_deref().map_or(0, copy_cost);
        let copied = (self.global_bytes.saturating_add(zone)).saturating_mul(self.clients.len());
        if copied > MAX_COPIED_BYTES {
            return Err(ConfigError::too_large(
                MAX_COPIED_BYTES as u64,
                format!(
                    "global values of about {} bytes, copied into each of {} clients, \
                     exceed {MAX_COPIED_BYTES} bytes",
                    self.global_bytes,
                    self.clients.len()
                ),
            ));
        }
        let zone = self.eureka.zone.as_deref();
        let mut clients: Vec<ClientConfig> = (self.clients.iter())
            .map(|c| {
                let lb = SpringScope::resolve(c.spring.as_ref(), &self.spring, &c.name);
                let own_retry = c.spring.as_ref().map(|s| &s.lb.retry);
                c.ribbon.resolve(&self.defaults, &c.name, zone, lb, own_retry, &self.spring.lb.retry)
            })
            .collect();
        let mut warnings = self.warnings;
        if self.unknown > MAX_UNKNOWN_WARNINGS {
            let more = self.unknown - MAX_UNKNOWN_WARNINGS;
            warnings.push(format!("{more} more unknown keys ignored"));
        }
        warnings.extend(not_applied_warnings(&self.spring, &self.clients));
        for client in &clients {
            warnings.extend(client.semantic_warnings(self.eureka.active_urls()));
        }
        warnings.extend(self.simple.apply(&mut clients, self.eureka.active_urls())?);
        for warning in &warnings {
            tracing::warn!(target: "tower_ribbon::config", "{warning}");
        }
        Ok(RibbonConfig {
            defaults: self.defaults,
            spring: self.spring,
            clients,
            eureka: self.eureka,
            warnings,
        })
    }
}

fn unknown_ribbon(key: &str, name: &str) -> String {
    // Keys come from files: escape them so a key cannot forge log lines.
    let key = crate::error::quote(key);
    let known = keys::RIBBON.iter().map(|k| k.name);
    match known.clone().find(|k| k.eq_ignore_ascii_case(name)) {
        Some(k) => format!(
            "unknown Ribbon key `{key}` ignored (keys are case-sensitive: did you mean `{k}`?)"
        ),
        None => match keys::nearest(name, known) {
            Some(k) => format!("unknown Ribbon key `{key}` ignored (did you mean `{k}`?)"),
            None => format!("unknown Ribbon key `{key}` ignored"),
        },
    }
}

/// The warning for a key read nowhere that looks meant for this crate: a
/// `spring.cloud.*` namespace one or two edits from `loadbalancer` or
/// `discovery` (or split by a dot, `load.balancer`), or Ribbon's `ribbon`
/// element in another case (Archaius names are case-sensitive, so Ribbon
/// ignores `Ribbon.ReadTimeout` too). Other keys, the rest of a Spring
/// `application.yml`, stay silent.
fn near_miss(key: &str) -> Option<String> {
    let quoted = || crate::error::quote(key);
    if let Some(rest) = value::strip_elements(key, "spring.cloud") {
        let canonical = |s: &str| value::relaxed(s).replace('.', "");
        let element = canonical(rest.split('.').next().unwrap_or(rest));
        let joined = canonical(rest);
        for namespace in ["loadbalancer", "discovery"] {
            let near = keys::levenshtein(&element, namespace) <= 2 || joined.starts_with(namespace);
            if near && element != namespace {
                return Some(format!(
                    "unknown key `{}` ignored (did you mean `spring.cloud.{namespace}.…`?)",
                    quoted()
                ));
            }
        }
        return None;
    }
    let mut elements = key.split('.');
    elements.next_back();
    let ribbon = elements.clone().any(|e| e == "ribbon");
    (!ribbon && elements.any(|e| e.eq_ignore_ascii_case("ribbon"))).then(|| {
        format!(
            "unknown key `{}` ignored (Ribbon's keys are case-sensitive: \
             the namespace is `ribbon`, lower case)",
            quoted()
        )
    })
}

fn unknown_spring(key: &str, name: &str) -> String {
    let key = crate::error::quote(key);
    let nearest = keys::nearest(name, keys::SPRING.iter().map(|k| k.name))
        .map(|k| {
            format!(
                " (did you mean `{SPRING_PREFIX}{}`?)",
                k.replace(".*", ".<serviceId>")
            )
        })
        .unwrap_or_default();
    format!("unknown Spring Cloud LoadBalancer key `{key}` ignored{nearest}")
}

/// Ribbon and Spring Cloud LoadBalancer client settings read from a
/// properties or YAML file. See the [module docs](super) for the keys.
#[derive(Clone)]
pub struct RibbonConfig {
    pub(crate) defaults: RibbonScope,
    pub(crate) spring: SpringScope,
    pub(crate) clients: Vec<ClientConfig>,
    pub(crate) eureka: EurekaSettings,
    pub(crate) warnings: Vec<String>,
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

/// "recognized, not yet applied" for the Spring keys set globally and per
/// client.
fn not_applied_warnings(global: &SpringScope, clients: &[ClientScopes]) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut global_lb = SpringScope::resolve(None, global, "default");
    global_lb.hint = global.hints.last().map(|(_, v)| v.clone());
    for (key, what) in keys::not_applied(&global_lb) {
        warnings.push(format!("`{SPRING_PREFIX}{key}`: {what}"));
    }
    for client in clients {
        let Some(own) = &client.spring else { continue };
        let lb = SpringScope::resolve(Some(own), &SpringScope::default(), &client.name);
        for (key, what) in keys::not_applied(&lb) {
            warnings.push(format!(
                "`{SPRING_PREFIX}clients.{}.{key}`: {what}",
                crate::error::quote(&client.name)
            ));
        }
    }
    warnings
}

/// The file's bytes, refusing more than 1 MiB without reading them all.
pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| ConfigError::io(path, e))?;
    let mut bytes = Vec::new();
    let limit = properties::MAX_BYTES as u64 + 1;
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::io(path, e))?;
    properties::check_size(bytes.len()).map_err(|e| e.with_path(path))?;
    Ok(bytes)
}

/// One [`StaticSource`] holding the lists of `clients`.
pub(crate) fn static_source(clients: &[ClientConfig]) -> StaticSource {
    clients.iter().fold(StaticSource::new(), |source, client| {
        source.with_instances(
            &client.name,
            client.list_of_servers.clone().unwrap_or_default(),
        )
    })
}

/// `(client, key name)` of `<client>.ribbon.<Key>`.
pub(crate) fn split_client_key(key: &str) -> Option<(&str, &str)> {
    let (client, name) = key.split_once(".ribbon.")?;
    let client = client.trim();
    if client.is_empty() || NOT_CLIENTS.iter().any(|p| client.starts_with(p)) {
        return None;
    }
    Some((client, name))
}

impl RibbonConfig {
    /// The instance source of `client`: see "Instance source" in the
    /// [module docs](super).
    pub(crate) fn kind_of(&self, client: &ClientConfig) -> Result<ServerListKind, ConfigError> {
        let no_source = |reason: Cow<'static, str>| ConfigError::no_source(&client.name, reason);
        let urls = !self.eureka.urls().is_empty();
        // `eureka.client.enabled=false` (or `fetch-registry=false`) with URLs.
        let off = self.eureka.off().filter(|_| urls);
        let off_reason = |off: EurekaOff, then: &str| {
            let key = off.key();
            no_source(format!("`{key}` is false, so Eureka gives no instances: {then}").into())
        };
        let kind = match (client.server_list, off) {
            (Some(kind), _) => kind,
            (None, _) if client.eureka_enabled == Some(false) || client.list_of_servers.is_some() => {
                ServerListKind::Static
            }
            (None, Some(EurekaOff::DiscoveryDisabled)) => {
                return Err(off_reason(
                    EurekaOff::DiscoveryDisabled,
                    "set `<client>.ribbon.listOfServers`",
                ));
            }
            (None, Some(off)) => {
                return Err(off_reason(
                    off,
                    "set `<client>.ribbon.listOfServers` or \
                     `spring.cloud.discovery.client.simple.instances.<client>`",
                ));
            }
            (None, None) if urls => ServerListKind::Eureka,
            (None, None) => {
                return Err(no_source(
                    "set `<client>.ribbon.listOfServers`, \
                     `spring.cloud.discovery.client.simple.instances.<client>` or \
                     `eureka.client.service-url.defaultZone`"
                        .into(),
                ));
            }
        };
        match (kind, off) {
            (ServerListKind::Static, _) if client.list_of_servers.is_none() => Err(no_source(
                "the static server list needs `<client>.ribbon.listOfServers` or simple instances"
                    .into(),
            )),
            (ServerListKind::Eureka, _) if !urls => Err(no_source(
                "Eureka discovery needs `eureka.client.service-url.defaultZone`".into(),
            )),
            (ServerListKind::Eureka, Some(off)) => {
                Err(off_reason(off, "`NIWSServerListClassName` chooses Eureka"))
            }
            (kind, _) => Ok(kind),
        }
    }
}
