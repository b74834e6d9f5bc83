//! [`StaticSource`]: instance lists given in configuration (Ribbon's
//! `ConfigurationBasedServerList`, key `<client>.ribbon.listOfServers`).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{FetchFuture, InstanceSource};
use crate::error::{DiscoveryError, InstanceError};
use crate::instance::Instance;

/// Fixed instance lists per service id, replaceable at run time.
///
/// Service ids are matched case-insensitively. Clones share the same lists,
/// so a test or an operator can [`set_instances`](StaticSource::set_instances)
/// on one clone and the balancer's next refresh sees it. Fetching a service
/// id the source does not hold is [`DiscoveryError::UnknownService`].
///
/// ```
/// use tower_ribbon::discovery::StaticSource;
///
/// let source = StaticSource::new()
///     .with_list("user-service", "127.0.0.1:8081, https://127.0.0.1:8443, [::1]:8082")
///     .unwrap();
/// let list = source.instances("USER-SERVICE").unwrap();
/// assert_eq!(list.len(), 3);
/// assert_eq!(list[1].to_string(), "https://127.0.0.1:8443");
/// assert_eq!(list[2].authority().as_str(), "[::1]:8082");
/// ```
#[derive(Clone, Default)]
pub struct StaticSource {
    services: Arc<ArcSwap<HashMap<String, Arc<Vec<Instance>>>>>,
}

impl StaticSource {
    /// A source with no services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `service_id` with the instances of a `listOfServers` string
    /// (at most [`MAX_LIST_ENTRIES`] entries; a longer list goes through
    /// [`with_instances`](Self::with_instances)).
    ///
    /// # Errors
    /// [`InstanceError`] naming the first entry that cannot be parsed, or
    /// for more than [`MAX_LIST_ENTRIES`] entries.
    pub fn with_list(self, service_id: &str, list: &str) -> Result<Self, InstanceError> {
        self.set_list(service_id, list)?;
        Ok(self)
    }

    /// Adds `service_id` with `instances`.
    pub fn with_instances(self, service_id: &str, instances: Vec<Instance>) -> Self {
        self.set_instances(service_id, instances);
        self
    }

    /// Replaces the list of `service_id` by a parsed `listOfServers` string.
    ///
    /// # Errors
    /// [`InstanceError`] for the first bad entry; the old list is kept then.
    pub fn set_list(&self, service_id: &str, list: &str) -> Result<(), InstanceError> {
        let instances = parse_list_of_servers(service_id, list)?;
        self.set_instances(service_id, instances);
        Ok(())
    }

    /// Replaces the list of `service_id` (adding the service if new).
    pub fn set_instances(&self, service_id: &str, instances: Vec<Instance>) {
        let key = crate::discovery::service_key(service_id);
        let instances = Arc::new(instances);
        self.services.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(key.clone(), Arc::clone(&instances));
            map
        });
    }

    /// Removes `service_id`; later fetches of it fail with `UnknownService`,
    /// and a balancer's next refresh of it empties its list (requests then
    /// fail with "no instances"; with
    /// [`RefreshConfig::keep_last_on_empty`](super::RefreshConfig::keep_last_on_empty)
    /// the last list is kept).
    pub fn remove_service(&self, service_id: &str) {
        let key = crate::discovery::service_key(service_id);
        self.services.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(&key);
            map
        });
    }

    /// The current list of `service_id`, if the source has it.
    pub fn instances(&self, service_id: &str) -> Option<Arc<Vec<Instance>>> {
        self.services
            .load()
            .get(&crate::discovery::service_key(service_id))
            .cloned()
    }
}

impl std::fmt::Debug for StaticSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let map = self.services.load();
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        f.debug_struct("StaticSource")
            .field("services", &names)
            .finish()
    }
}

impl InstanceSource for StaticSource {
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
        let result = self
            .instances(service_id)
            .map(|list| list.as_ref().clone())
            .ok_or_else(|| DiscoveryError::UnknownService {
                service: service_id.to_owned(),
            });
        Box::pin(std::future::ready(result))
    }

    fn kind(&self) -> crate::snapshot::SourceKind {
        crate::snapshot::SourceKind::StaticList
    }
}

/// The most entries [`parse_list_of_servers`] reads from one list: 4 096.
///
/// Each entry becomes an [`Instance`] of a few hundred bytes, about 70
/// times the five bytes of text an entry can take (`h:1,`), so the text
/// alone does not bound the memory: 1 MiB of it made 262 144 instances
/// (117 MiB), and a YAML file of 18 KB whose aliases expand one list to
/// 8 MiB made 2 million (1.2 GB). A static list that long is no use to a
/// balancer; a registry is.
pub const MAX_LIST_ENTRIES: usize = 4096;

/// Parses Ribbon's `listOfServers`: comma-separated `host:port`,
/// `http://host:port` or `https://host:port` entries; blanks around entries
/// and empty entries are ignored, and so is an entry naming a server an
/// earlier one named (the same name in another case, the same address
/// written another way): the first spelling is kept. A missing port is 80 for `http` and 443 for
/// `https`. IPv6 addresses go in brackets (`[::1]:8080`). At most
/// [`MAX_LIST_ENTRIES`] entries, counted before any is parsed.
///
/// # Errors
/// [`InstanceError`] ([`InstanceError::is_invalid_entry`]) naming the first entry that is not of
/// that form (unknown scheme, a path, userinfo, a bad port or host);
/// [`InstanceErrorKind::TooManyEntries`](crate::error::InstanceErrorKind::TooManyEntries)
/// for a list of more than [`MAX_LIST_ENTRIES`] entries.
pub fn parse_list_of_servers(service_id: &str, list: &str) -> Result<Vec<Instance>, InstanceError> {
    let entries = count_list_entries(list, MAX_LIST_ENTRIES);
    if entries > MAX_LIST_ENTRIES {
        // Only its start is quoted: cut before the error copies it.
        let mut cut = list.len().min(256);
        while !list.is_char_boundary(cut) {
            cut -= 1;
        }
        return Err(InstanceError::new(
            crate::error::InstanceErrorKind::TooManyEntries,
            &list[..cut],
            format!("more than {MAX_LIST_ENTRIES} entries in one list of servers"),
        ));
    }
    let mut instances = Vec::with_capacity(entries);
    let mut seen = std::collections::HashSet::with_capacity(entries);
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let instance = parse_entry(service_id, entry)?;
        if seen.insert(server_of(&instance)) {
            instances.push(instance);
        }
    }
    Ok(instances)
}

/// The server an entry names: its host, a DNS name in lower case (a
/// name's case does not change it: RFC 4343; addresses are already in one
/// form, and an IPv6 zone id, an interface name, keeps its case), its port
/// and scheme. Two entries naming one server (`a.test:1`, `A.test:1`) were
/// two instances: that server took two shares of the traffic (20 of 30
/// requests beside one other server) and its stats were split between them
/// (helper 148). A final dot is kept apart: `a.test.` is absolute and skips
/// the resolver's search list, so it may not resolve where `a.test` does
/// (helper 149: `localhost.` failed here while `localhost` resolved).
///
/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is the IPv4 server it
/// maps: both spellings reach it, so they were two instances taking 20 of
/// 30 requests beside one other server (helper 234); the DNS source folds
/// mapped AAAA records the same way.
fn server_of(instance: &Instance) -> (String, u16, bool) {
    let host = instance.host();
    let host = if host.contains(':') {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<std::net::Ipv6Addr>().map(|a| a.to_canonical()) {
            Ok(std::net::IpAddr::V4(v4)) => v4.to_string(),
            _ => host.to_owned(),
        }
    } else {
        host.to_ascii_lowercase()
    };
    (host, instance.port(), instance.is_secure())
}

/// The entries of a `listOfServers` text, counted up to `max + 1` (no
/// allocation).
pub(crate) fn count_list_entries(list: &str, max: usize) -> usize {
    list.split(',')
        .filter(|e| !e.trim().is_empty())
        .take(max.saturating_add(1))
        .count()
}

fn parse_entry(service_id: &str, entry: &str) -> Result<Instance, InstanceError> {
    let invalid = |reason: String| {
        InstanceError::new(crate::error::InstanceErrorKind::InvalidEntry, entry, reason)
    };
    let (secure, rest) = match entry.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
        Some((scheme, _)) => {
            return Err(invalid(format!(
                "unsupported scheme `{}`",
                crate::error::quote(scheme)
            )));
        }
        None => (false, entry),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(invalid("a server entry holds no path or query".to_owned()));
    }
    if rest.contains('@') {
        return Err(invalid("a server entry holds no userinfo".to_owned()));
    }
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let (host, port_text) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| invalid("unclosed `[` in an IPv6 address".to_owned()))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(invalid("unexpected text after `]`".to_owned())),
            },
        }
    } else {
        match rest.split_once(':') {
            Some((_, tail)) if tail.contains(':') => {
                return Err(invalid(
                    "an IPv6 address must be written in brackets".to_owned(),
                ));
            }
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let port = match port_text {
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => {
                return Err(invalid(format!(
                    "port `{}` is not in 1..=65535",
                    crate::error::quote(text)
                )));
            }
        },
        None if secure => 443,
        None => 80,
    };
    // Brackets kept, so `%25` of a zone id is read in its URI form.
    let host = if rest.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let instance = Instance::new(service_id, host, port)
        .map_err(|e| invalid(e.to_string()))?
        .with_secure(secure);
    Ok(instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ribbon_forms() {
        let list = parse_list_of_servers(
            "svc",
            " a.internal:8080 ,https://b:8443,, http://c , https://d, [::1]:9, HTTP://E:1/, [fe80::1%25eth0]:8",
        )
        .unwrap();
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "http://a.internal:8080",
                "https://b:8443",
                "http://c:80",
                "https://d:443",
                "http://[::1]:9",
                "http://E:1",
                "http://[fe80::1%25eth0]:8"
            ]
        );
        assert!(list.iter().all(|i| i.service_id() == "svc"));
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in [
            "ftp://a:1",
            "a:0",
            "a:99999",
            "a:x",
            "a:+1",
            "a: 1",
            "a:",
            "u:p@a:1",
            "a:1/path",
            "::1:80",
            "[::1",
            "a b:1",
            "http://",
            "a..b:1",
            "http://.:80",
        ] {
            let err = parse_list_of_servers("svc", bad).unwrap_err();
            assert!(err.is_invalid_entry(), "{bad}: {err:?}");
        }
        assert!(parse_list_of_servers("svc", " , ").unwrap().is_empty());
    }

    #[tokio::test]
    async fn fetch_and_replace() {
        let s = StaticSource::new().with_list("Svc", "a:1").unwrap();
        let clone = s.clone();
        assert_eq!(s.fetch("svc").await.unwrap().len(), 1);
        clone.set_list("svc", "a:1,b:2").unwrap();
        assert_eq!(s.fetch("SVC").await.unwrap().len(), 2);
        assert!(clone.set_list("svc", "bad:0").is_err());
        assert_eq!(s.fetch("svc").await.unwrap().len(), 2);
        assert!(matches!(
            s.fetch("other").await.unwrap_err(),
            DiscoveryError::UnknownService { .. }
        ));
        s.remove_service("svc");
        assert!(s.fetch("svc").await.is_err());
    }
}
