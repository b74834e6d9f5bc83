//! Spring Cloud's `SimpleDiscoveryClient` keys: static instances with ids
//! and metadata, read from `spring.cloud.discovery.client.simple.*`
//! (spring-cloud-commons' `SimpleDiscoveryProperties`, its instances
//! `DefaultServiceInstance`).
//!
//! Per instance, `instances.<serviceId>[i].<field>` (or
//! `instances[<serviceId>][i].<field>` for ids with dots; YAML lists give
//! the same keys):
//!
//! - `uri`: `http://host[:port]` or `https://host[:port]`. Sets host, port
//!   (80 / 443 when absent) and, for `https`, `secure` (as
//!   `DefaultServiceInstance.setUri`). A path is ignored.
//! - `host`, `port` (1 to 65 535): used when `uri` is not set.
//! - `secure`: `true` / `false`; `https` in the `uri` makes it `true`.
//! - `instance-id` (`instanceId`): the id the sticky-session cookie names.
//!   Default `host:port` (Spring leaves it null).
//! - `metadata.<key>`: kept as the instance's metadata (`hint`, `weight`
//!   are read by the rules); `metadata.zone` also sets its zone.
//!
//! Indexes start at 0 and have no gaps (Spring's binder refuses gaps too);
//! at most [`MAX_INSTANCES`] per service. `order`, `local.*` and the other
//! `spring.cloud.discovery.*` switches are recognized but not applied;
//! `spring.cloud.discovery.enabled=false` turns the instances off.
//!
//! Precedence per client: `<client>.ribbon.listOfServers` wins over these
//! instances, which win over Eureka's `defaultZone`; each conflict warns
//! (see "Instance source" in the [config docs](super)).
//!
//! ```
//! use tower_ribbon::config::RibbonConfig;
//!
//! let config = RibbonConfig::from_yaml_str(
//!     r"
//! spring.cloud.discovery.client.simple.instances:
//!   users:
//!     - uri: https://10.0.0.1:8443
//!       instance-id: users-a
//!       metadata: { hint: canary, zone: zone-a }
//! ",
//! )
//! .unwrap();
//! let users = config.client("users").list_of_servers.unwrap();
//! assert_eq!(users[0].id(), "users-a");
//! assert_eq!(users[0].to_string(), "https://10.0.0.1:8443");
//! assert_eq!(users[0].metadata()["hint"], "canary");
//! assert_eq!(users[0].zone(), Some("zone-a"));
//! ```

use std::collections::BTreeMap;

use super::client::ClientConfig;
use super::ribbon::ServerListKind;
use super::error::ConfigError;
use super::keys;
use super::value::{self, Kv};
use crate::instance::Instance;

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    value::spring_boolean(&Kv { key, value, arg: "" })
}

/// What one key under `spring.cloud.discovery.` was.
pub(crate) enum Read {
    /// An instance field of this service id.
    Service(String),
    /// An unknown key: the warning naming the nearest known one.
    Unknown(String),
    /// Another key (read, or ignored).
    Other,
}

/// Prefix of all Spring Cloud discovery keys.
pub(crate) const DISCOVERY_PREFIX: &str = "spring.cloud.discovery.";
/// Prefix of the simple discovery client's keys, after [`DISCOVERY_PREFIX`].
const SIMPLE: &str = "client.simple.";
/// Most instances per service (indexes 0 to 1 023).
pub const MAX_INSTANCES: usize = 1024;

/// The per-instance fields, as the nearest-key search names them.
const FIELDS: [&str; 6] = ["uri", "instance-id", "host", "port", "secure", "metadata.<key>"];

/// Keys under `spring.cloud.discovery.` read but not applied, with why.
const NOT_APPLIED: [(&str, &str); 6] = [
    (
        "client.simple.order",
        "one discovery client per service here; see the precedence in `docs/spring-cloud-users.md`",
    ),
    ("client.simple.local.", "this application's own instance: nothing to balance"),
    ("client.health-indicator.", "no Spring health indicators here"),
    ("client.composite-indicator.", "no Spring health indicators here"),
    ("blocking.enabled", "one client kind here"),
    ("reactive.enabled", "one client kind here"),
];

/// One instance as written (`uri` and `port` with the key they came from).
#[derive(Clone, Default)]
struct Entry {
    uri: Option<(String, String)>,
    host: Option<String>,
    port: Option<(String, String)>,
    secure: Option<bool>,
    id: Option<String>,
    metadata: BTreeMap<String, String>,
}

/// One service's instances by index: the index as written, and the entry.
type Entries = BTreeMap<usize, (String, Entry)>;

/// The simple discovery keys read so far.
#[derive(Clone, Default)]
pub(crate) struct SimpleDiscovery {
    /// Service id as written -> index -> (index as written, entry).
    services: Vec<(String, Entries)>,
    /// `spring.cloud.discovery.enabled=false`.
    disabled: bool,
    /// Which [`NOT_APPLIED`] entries were reported.
    warned: [bool; NOT_APPLIED.len()],
    warnings: Vec<String>,
}

/// `(service, index text, field)` of `instances.<svc>[i].<field>`.
fn split_instance(rest: &str) -> Option<(&str, &str, &str)> {
    let head = rest.find(['.', '[']).map_or(rest, |at| &rest[..at]);
    let rest = Some(&rest[head.len()..]).filter(|_| value::element_is(head, "instances"))?;
    let (service, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (service, r) = r.split_once(']')?;
        (service, r.strip_prefix('[')?)
    } else {
        let (service, r) = rest.strip_prefix('.')?.split_once('[')?;
        (service, r)
    };
    let (index, field) = rest.split_once("].")?;
    Some((service.trim(), index, field))
}

impl SimpleDiscovery {
    /// Reads one key after `spring.cloud.discovery.`; returns the service
    /// id the key declares, or a warning for an unknown key.
    pub(crate) fn read(
        &mut self,
        rest: &str,
        key: &str,
        value: &str,
    ) -> Result<Read, ConfigError> {
        if value::elements_match(rest, "enabled") {
            self.disabled = !parse_bool(key, value)?;
            return Ok(Read::Other);
        }
        if let Some(i) = (NOT_APPLIED.iter()).position(|(k, _)| value::elements_match(rest, k)) {
            // One warning per entry of the table, so the count is bounded.
            if !self.warned[i] {
                self.warned[i] = true;
                let key = crate::error::quote(key);
                let why = NOT_APPLIED[i].1;
                self.warnings.push(format!("`{key}`: recognized, not applied ({why})"));
            }
            return Ok(Read::Other);
        }
        // Spring binds every element relaxed (`client.Simple.Instances`).
        let Some(simple) = value::strip_elements(rest, "client.simple") else {
            return Ok(unknown_discovery(key, rest).map_or(Read::Other, Read::Unknown));
        };
        let Some((service, index_text, field)) = split_instance(simple) else {
            return Ok(Read::Unknown(unknown(key, simple)));
        };
        if service.is_empty() {
            return Err(ConfigError::invalid(key, value, "the service id is empty"));
        }
        let index = parse_index(key, index_text)?;
        let Some(parsed) = self::field(field) else {
            return Ok(Read::Unknown(unknown(key, field)));
        };
        let slot = self.slot(service, index, index_text, key)?;
        set_field(slot, parsed, key, value)?;
        Ok(Read::Service(service.to_owned()))
    }

    fn slot(
        &mut self,
        service: &str,
        index: usize,
        text: &str,
        key: &str,
    ) -> Result<&mut Entry, ConfigError> {
        let found = (self.services.iter()).position(|(s, _)| s.eq_ignore_ascii_case(service));
        let position = match found {
            Some(p) => p,
            None => {
                self.services.push((service.to_owned(), BTreeMap::new()));
                self.services.len() - 1
            }
        };
        let (_, entries) = &mut self.services[position];
        let (written, entry) = entries
            .entry(index)
            .or_insert_with(|| (text.to_owned(), Entry::default()));
        if written != text {
            return Err(ConfigError::invalid(
                key,
                text,
                format!("index {index} is also written `[{written}]`: one instance, two spellings"),
            ));
        }
        Ok(entry)
    }

    /// The instances of every service, and the warnings of the keys read.
    ///
    /// # Errors
    /// A gap in the indexes, an instance without `uri` or `host`, a bad
    /// `uri` or `port`, or two instances of a service with one id.
    pub(crate) fn instances(&self) -> Result<Vec<(String, Vec<Instance>)>, ConfigError> {
        let prefix = format!("{DISCOVERY_PREFIX}{SIMPLE}instances.");
        let mut out = Vec::with_capacity(self.services.len());
        for (service, entries) in &self.services {
            let mut list: Vec<Instance> = Vec::with_capacity(entries.len());
            for (expected, (&index, (written, entry))) in entries.iter().enumerate() {
                let key = format!("{prefix}{service}[{written}]");
                if index != expected {
                    return Err(ConfigError::invalid(
                        &key,
                        written,
                        format!("index {expected} is missing (indexes start at 0, without gaps)"),
                    ));
                }
                let instance = entry.build(service, &key)?;
                if list.iter().any(|i| i.id() == instance.id()) {
                    return Err(ConfigError::invalid(
                        &format!("{key}.instance-id"),
                        instance.id(),
                        "two instances of the service have this id",
                    ));
                }
                list.push(instance);
            }
            out.push((service.clone(), list));
        }
        Ok(out)
    }

    /// Whether `spring.cloud.discovery.enabled` is `false`.
    pub(crate) fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Puts the instances into `clients` where no `listOfServers` is set,
    /// and warns where another source wins or both are set.
    pub(crate) fn apply(
        &self,
        clients: &mut [ClientConfig],
        eureka_urls: &[String],
    ) -> Result<Vec<String>, ConfigError> {
        let mut warnings = self.warnings.clone();
        let services = self.instances()?;
        if self.disabled && !services.is_empty() {
            warnings.push(format!(
                "`{DISCOVERY_PREFIX}enabled` is false: \
                 the `{DISCOVERY_PREFIX}{SIMPLE}instances` are not used"
            ));
            return Ok(warnings);
        }
        for (service, instances) in services {
            let Some(client) = (clients.iter_mut()).find(|c| c.name.eq_ignore_ascii_case(&service))
            else {
                continue;
            };
            let name = crate::error::quote(&client.name);
            if client.list_of_servers.is_some() {
                warnings.push(format!(
                    "client `{name}`: both `listOfServers` and \
                     `{DISCOVERY_PREFIX}{SIMPLE}instances` are set; \
                     `listOfServers` is used"
                ));
                continue;
            }
            if client.server_list == Some(ServerListKind::Eureka) {
                warnings.push(format!(
                    "client `{name}`: `NIWSServerListClassName` chooses Eureka; \
                     its simple instances are not used"
                ));
            } else if !eureka_urls.is_empty() && client.eureka_enabled != Some(false) {
                warnings.push(format!(
                    "client `{name}`: both simple instances and a Eureka URL are set; \
                     the simple instances are \
                     used (set `NIWSServerListClassName` to choose)"
                ));
            }
            client.list_of_servers = Some(instances);
        }
        Ok(warnings)
    }
}

impl Entry {
    fn build(&self, service: &str, key: &str) -> Result<Instance, ConfigError> {
        let (host, port, mut secure) = match (&self.uri, &self.host) {
            (Some((uri_key, uri)), _) => parse_uri(uri_key, uri)?,
            (None, Some(host)) => {
                let secure = self.secure == Some(true);
                let port = match &self.port {
                    Some((port_key, port)) => parse_port(port_key, port)?,
                    None if secure => 443,
                    None => 80,
                };
                (host.clone(), port, false)
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    &format!("{key}.uri"),
                    "",
                    "an instance needs `uri` (or `host`)",
                ));
            }
        };
        secure |= self.secure == Some(true);
        let host_key = self.uri.as_ref().map_or_else(|| format!("{key}.host"), |(k, _)| k.clone());
        let mut instance = Instance::new(service, host.as_str(), port)
            .map_err(|e| ConfigError::invalid(&host_key, &host, e.to_string()))?
            .with_secure(secure);
        if let Some(id) = &self.id {
            instance = instance.with_id(id.as_str());
        }
        for (name, value) in &self.metadata {
            if name == "zone" {
                instance = instance.with_zone(value.as_str());
            }
            instance = instance.with_metadata(name.as_str(), value.as_str());
        }
        Ok(instance)
    }
}

/// An instance field, by Spring's relaxed name (`instance-id`,
/// `instanceId`, `instance_id`, `INSTANCEID`), or a metadata key as
/// written (`metadata.<key>` or `metadata[<key>]`).
enum Field<'a> {
    Uri,
    Host,
    Port,
    Secure,
    Id,
    /// Spring overwrites it with the map key: ignored.
    ServiceId,
    Metadata(&'a str),
}

fn field(name: &str) -> Option<Field<'_>> {
    let metadata = (name.strip_prefix("metadata."))
        .or_else(|| name.strip_prefix("metadata[")?.strip_suffix(']'))
        .map(str::trim);
    if let Some(key) = metadata {
        return (!key.is_empty()).then_some(Field::Metadata(key));
    }
    Some(match super::value::relaxed(name).as_str() {
        "uri" => Field::Uri,
        "host" => Field::Host,
        "port" => Field::Port,
        "secure" => Field::Secure,
        "instanceid" => Field::Id,
        "serviceid" => Field::ServiceId,
        _ => return None,
    })
}

fn set_field(
    entry: &mut Entry,
    field: Field<'_>,
    key: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let owned = || (key.to_owned(), value.to_owned());
    match field {
        Field::Uri => entry.uri = Some(owned()),
        Field::Host => entry.host = Some(value.to_owned()),
        Field::Port => entry.port = Some(owned()),
        Field::Secure => entry.secure = Some(parse_bool(key, value)?),
        Field::Id => entry.id = Some(value.to_owned()).filter(|v| !v.is_empty()),
        Field::ServiceId => {}
        Field::Metadata(name) => _ = entry.metadata.insert(name.to_owned(), value.to_owned()),
    }
    Ok(())
}

/// The index of `[i]`: decimal digits, at most [`MAX_INSTANCES`] - 1.
fn parse_index(key: &str, text: &str) -> Result<usize, ConfigError> {
    let max = MAX_INSTANCES as u64 - 1;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::invalid(key, text, "an index is a decimal number"));
    }
    let out_of_range = || ConfigError::out_of_range(key, text, 0..=max, "index");
    let n = text.parse::<u64>().map_err(|_| out_of_range())?;
    match usize::try_from(n) {
        Ok(n) if n < MAX_INSTANCES => Ok(n),
        _ => Err(out_of_range()),
    }
}

fn parse_port(key: &str, text: &str) -> Result<u16, ConfigError> {
    match text.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(ConfigError::out_of_range(key, text, 1..=65_535, "port")),
    }
}

/// `(host, port, secure)` of an `http` or `https` URI, read with [`http::Uri`].
fn parse_uri(key: &str, text: &str) -> Result<(String, u16, bool), ConfigError> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e: http::uri::InvalidUri| ConfigError::invalid(key, text, e.to_string()))?;
    let secure = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => {
            let reason = "the uri must start with `http://` or `https://`";
            return Err(ConfigError::invalid(key, text, reason));
        }
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| ConfigError::invalid(key, text, "the uri has no host"))?;
    if authority.as_str().contains('@') {
        return Err(ConfigError::invalid(key, text, "credentials in the uri are not supported"));
    }
    // `Authority::port` hides a port over 65 535: read the text after the host.
    let after_host = authority.as_str().get(authority.host().len()..).unwrap_or("");
    let port = match after_host.strip_prefix(':') {
        None if secure => 443,
        None => 80,
        Some(port) => parse_port(key, port)?,
    };
    Ok((authority.host().to_owned(), port, secure))
}

/// The warning of an unknown key under `spring.cloud.discovery.` outside
/// `client.simple.`, naming the nearest known one: for keys under
/// `client.` (Spring Cloud Commons' own clients) or one or two edits from
/// it or from a known key. Others (another discovery client's) are silent.
fn unknown_discovery(key: &str, name: &str) -> Option<String> {
    let known = ["enabled", "blocking.enabled", "reactive.enabled", "client.simple.instances"];
    let first = name.split(['.', '[']).next().unwrap_or(name);
    let near = |a: &str, b: &str| keys::levenshtein(&value::relaxed(a), &value::relaxed(b)) <= 2;
    if !near(first, "client") && !known.iter().any(|k| near(name, k)) {
        return None;
    }
    let nearest = keys::nearest(name, known.into_iter()).unwrap_or("enabled");
    let key = crate::error::quote(key);
    Some(format!(
        "unknown Spring Cloud discovery key `{key}` ignored (did you mean `{DISCOVERY_PREFIX}{nearest}`?)"
    ))
}

/// The warning of an unknown key under
/// `spring.cloud.discovery.client.simple.`, naming the nearest known one.
fn unknown(key: &str, name: &str) -> String {
    let known = ["order", "instances.<serviceId>[i].uri"].into_iter().chain(FIELDS);
    let nearest = keys::nearest(name, known).unwrap_or("instances.<serviceId>[i].uri");
    let nearest = match nearest {
        "order" | "instances.<serviceId>[i].uri" => format!("{DISCOVERY_PREFIX}{SIMPLE}{nearest}"),
        field => format!("{DISCOVERY_PREFIX}{SIMPLE}instances.<serviceId>[i].{field}"),
    };
    let key = crate::error::quote(key);
    format!("unknown simple discovery key `{key}` ignored (did you mean `{nearest}`?)")
}
