//! [`DnsSource`]: instance lists from DNS (feature `dns`), for Kubernetes
//! headless services and SRV records, through
//! [hickory-resolver](https://docs.rs/hickory-resolver).
//!
//! # Kubernetes headless services (A/AAAA)
//!
//! A Kubernetes `Service` with `clusterIP: None` is *headless*: its DNS name
//! (`users.default.svc.cluster.local`) resolves to one A (or AAAA) record per
//! ready pod instead of one virtual IP. A client that resolves it and
//! balances over the addresses itself is a client-side load balancer; a
//! client that resolves a normal `ClusterIP` service gets one address, and
//! kube-proxy balances per connection, so long-lived connections stay on one
//! pod. [`DnsTarget::host`] maps a service id to `name:port`: every address
//! becomes one [`Instance`] at that port, weight 1.
//!
//! The pod's `/etc/resolv.conf` is written by the kubelet:
//!
//! ```text
//! nameserver 10.96.0.10
//! search default.svc.cluster.local svc.cluster.local cluster.local
//! options ndots:5
//! ```
//!
//! A name with fewer than `ndots` dots is tried with each search domain
//! first, then as written; a name with `ndots` dots or more is tried as
//! written first; a name ending in `.` is never searched. So `users` finds
//! `users.default.svc.cluster.local` with the first query, and a full name
//! is cheapest written with its final dot. [`DnsConfig::from_resolv_conf`]
//! reads that file (nameservers, `search`/`domain`, `ndots`, `timeout`,
//! `attempts`), [`DnsConfig::kubernetes`] builds the same configuration by
//! hand, and every setting can be changed on [`DnsConfig`].
//!
//! # SRV records: priority and weight (RFC 2782)
//!
//! [`DnsTarget::srv`] looks up `_service._proto.name` (Kubernetes publishes
//! `_http._tcp.users.default.svc.cluster.local` for a named port `http`).
//! Each SRV record names a target host, a port, a priority and a weight:
//!
//! - **priority**: lower is preferred. Only the lowest priority group that
//!   has at least one target with an address is used; the other groups are
//!   backups, used only when every target of the better groups is gone from
//!   DNS (RFC 2782: "a client MUST attempt to contact the target host with
//!   the lowest-numbered priority it can reach").
//! - **weight**: within the group, a target's share is its weight over the
//!   sum of weights. The weight becomes [`Instance::weight`] (and metadata
//!   `weight`), which [`WeightedRoundRobin`](crate::rule::WeightedRoundRobin)
//!   reads, so weight 3 against weight 1 gets three requests in four. If
//!   every weight in the group is 0 they all become 1 (RFC 2782: equal
//!   chance); a weight 0 next to non-zero weights stays 0, which weighted
//!   rules treat as no share (RFC 2782 gives it "a very small chance").
//! - a single record with target `.` means "decidedly not available": the
//!   fetch succeeds with an empty list.
//!
//! Target addresses are taken from the answer's additional section when the
//! server sends them, otherwise looked up (A and AAAA of the target as an
//! absolute name). Each address of a target becomes one instance with the
//! target's port and full weight.
//!
//! # TTL handling
//!
//! The crate's refresh ([`RefreshConfig`](super::RefreshConfig)) polls a
//! source at a fixed interval and has no per-fetch interval hook, so the TTL
//! clamp lives in this source: a successful answer is cached for
//! `min(max(ttl, floor), ceiling)` where `ttl` is the smallest TTL of the
//! records used, and every fetch inside that window returns the cached list
//! without sending a query. Set the refresh interval well below the floor
//! (1 s costs one map look-up per second): a DNS change is then seen within
//! the clamped TTL plus one refresh interval, or within the clamped TTL with
//! [`DnsConfig::refresh_ahead`] set to the refresh interval plus the query
//! time (the answer is then re-resolved that much before it expires). [`DnsSource::answer`] exposes
//! the last answer's TTL and clamped lifetime. A failed resolution returns an
//! error, so the refresh keeps the last good list (as with every source) and
//! counts the failure; the next query waits a backoff (doubling from
//! [`DnsConfig::failure_backoff`] up to the floor) so an outage does not
//! turn every refresh tick into a query. hickory's own cache is cleared
//! before every resolution, so the TTLs read are the server's, not what is
//! left of a cached copy.
//!
//! Defaults: floor **5 s**, ceiling **30 s**.
//! - The floor is Envoy's default `dns_refresh_rate` for DNS clusters (5 s;
//!   its DNS cache's `dns_min_refresh_rate`, the floor under TTL-driven
//!   refresh, is 5 s too) and CoreDNS's default TTL for cluster records
//!   (5 s), so pods that come and go are seen about as fast as the cluster
//!   DNS publishes them, while a TTL of 0 or 1 s cannot turn every client
//!   into a DNS load generator. gRPC waits at least 30 s between
//!   re-resolutions (grpc/grpc#19661), too slow for scale-ups
//!   (grpc/grpc#12295).
//! - The ceiling is Ribbon's and this crate's default refresh interval
//!   (30 s; Spring Cloud LoadBalancer caches lists 35 s), so an external zone
//!   with a one-hour TTL still cannot keep a removed address for an hour.
//!
//! # Bounds and errors
//!
//! Every answer is bounded: at most [`DnsConfig::max_records`] instances
//! (sorted by address and port, then cut; [`DnsAnswer::truncated`] says so)
//! and SRV records, names of at most [`DnsConfig::max_name_len`] bytes
//! (longer SRV targets are skipped), one whole resolution within
//! [`DnsConfig::resolve_timeout`]. Errors are [`DnsError`] values, carried as
//! [`DiscoveryError::Other`] (downcast to read them); an unconfigured
//! service id is [`DiscoveryError::UnknownService`]. No answer, however
//! malformed, makes the source panic.
//!
//! A name that stops existing (NXDOMAIN) or loses every record is an error
//! ([`DnsError::NoRecords`]), not an empty list: the last good list stays,
//! so a DNS glitch cannot empty a service. The flip side: a headless
//! service scaled to zero keeps its last addresses until they fail their
//! requests (outlier detection and health checks then take them out). Only
//! an SRV answer of a single `.` target empties the list on purpose.
//!
//! # Counterparts
//!
//! | System | What it does |
//! |---|---|
//! | Spring Cloud Kubernetes `DiscoveryClient` | asks the API server for the service's Endpoints/EndpointSlices (not DNS), configured by `spring.cloud.kubernetes.discovery.*`; SCLB caches the list (35 s) |
//! | gRPC `dns:///` resolver | A/AAAA (SRV only for grpclb), re-resolves on connection failure or GOAWAY, at most every 30 s; ignores TTLs |
//! | Envoy `STRICT_DNS` cluster | every address of the name is a host; re-resolves every `dns_refresh_rate` (5 s), or at the record TTL with `respect_dns_ttl`; `dns_failure_refresh_rate` (base and max interval) after failures; hosts kept until a successful resolution drops them |
//! | this source | A/AAAA and SRV with priority and weight; re-resolves by TTL, clamped to `[floor, ceiling]`; last good list on failure |
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_ribbon::LoadBalancer;
//! use tower_ribbon::discovery::RefreshConfig;
//! use tower_ribbon::discovery::dns::{DnsConfig, DnsSource, DnsTarget};
//!
//! # fn build() -> Result<(), Box<dyn std::error::Error>> {
//! // In a pod: the kubelet's resolv.conf (search list, ndots:5).
//! let source = DnsSource::new(DnsConfig::system()?)?
//!     .with_service("users", DnsTarget::host("users", 8080))?
//!     .with_service("orders", DnsTarget::srv("_http._tcp.orders"))?;
//! let balancer = LoadBalancer::builder()
//!     .source(source)
//!     .services(["users", "orders"])
//!     .refresh(RefreshConfig::default().interval(Duration::from_secs(1)))
//!     .build(tower::service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(()))
//!     }))?;
//! # let _ = balancer; Ok(()) }
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::time::Instant;

use super::{FetchFuture, InstanceSource};
use crate::error::{BoxError, DiscoveryError};
use crate::instance::Instance;

/// The longest DNS name (RFC 1035: 255 octets on the wire, 253 in text).
pub const MAX_DNS_NAME_LEN: usize = 253;

/// Search domains kept from a `search` line (glibc keeps 6 up to 2.25, 32
/// since; this is the newer bound).
const MAX_SEARCH_DOMAINS: usize = 32;
/// Name servers kept from resolv.conf (glibc's `MAXNS`).
const MAX_NAME_SERVERS: usize = 3;
/// Upper bound on every duration setting (a day), so deadlines computed
/// from them never overflow.
const MAX_SETTING: Duration = Duration::from_secs(24 * 3600);

/// Which address records a host lookup asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IpFamily {
    /// A records only.
    V4,
    /// AAAA records only.
    V6,
    /// A and AAAA records, both kept (dual-stack clusters). Default.
    #[default]
    Both,
}

/// How a [`DnsSource`] resolves: name servers, search list, `ndots`,
/// timeouts, TTL clamp and answer bounds.
///
/// ```
/// use std::time::Duration;
/// use tower_ribbon::discovery::dns::DnsConfig;
///
/// let config = DnsConfig::from_resolv_conf(
///     "nameserver 10.96.0.10\n\
///      search default.svc.cluster.local svc.cluster.local cluster.local\n\
///      options ndots:5 timeout:2 attempts:3\n",
/// )
/// .unwrap();
/// assert_eq!(config.get_ndots(), 5);
/// assert_eq!(config.get_search().len(), 3);
/// assert_eq!(config.get_timeout(), Duration::from_secs(2));
/// assert_eq!(config.get_ttl_floor(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct DnsConfig {
    name_servers: Vec<SocketAddr>,
    search: Vec<String>,
    ndots: usize,
    timeout: Duration,
    attempts: usize,
    resolve_timeout: Duration,
    ttl_floor: Duration,
    ttl_ceiling: Duration,
    failure_backoff: Duration,
    refresh_ahead: Duration,
    max_records: usize,
    max_name_len: usize,
    ip_family: IpFamily,
}

impl DnsConfig {
    /// Queries `name_servers` (UDP, then TCP for truncated answers) with no
    /// search list, `ndots` 1, per-query timeout 5 s, 2 attempts (the
    /// resolv.conf defaults), a whole resolution bounded by 10 s, TTL floor
    /// 5 s and ceiling 30 s, failure backoff 1 s, at most 256 records and
    /// names of at most 253 bytes, A and AAAA.
    pub fn new(name_servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            name_servers: name_servers.into_iter().collect(),
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
            resolve_timeout: Duration::from_secs(10),
            ttl_floor: Duration::from_secs(5),
            ttl_ceiling: Duration::from_secs(30),
            failure_backoff: Duration::from_secs(1),
            refresh_ahead: Duration::ZERO,
            max_records: 256,
            max_name_len: MAX_DNS_NAME_LEN,
            ip_family: IpFamily::Both,
        }
    }

    /// What the kubelet writes for a pod in `namespace` with cluster domain
    /// `cluster.local`: `search <ns>.svc.cluster.local svc.cluster.local
    /// cluster.local`, `ndots:5`, and `name_server` (the cluster DNS
    /// service, e.g. `10.96.0.10:53`).
    pub fn kubernetes(namespace: &str, name_server: SocketAddr) -> Self {
        Self::new([name_server])
            .search([
                format!("{namespace}.svc.cluster.local"),
                "svc.cluster.local".to_owned(),
                "cluster.local".to_owned(),
            ])
            .ndots(5)
    }

    /// Reads resolv.conf text: `nameserver` (up to 3, port 53), `search`
    /// and `domain` (the last one wins, as in glibc), `options ndots:N`
    /// (capped at 15), `timeout:N` seconds (capped at 30) and `attempts:N`
    /// (capped at 5). Comments (`#`, `;`), unknown lines and unknown options
    /// are ignored, as glibc does; so are values that do not parse.
    ///
    /// # Errors
    /// [`DnsError::NoNameServers`] if no usable `nameserver` line remains.
    pub fn from_resolv_conf(text: &str) -> Result<Self, DnsError> {
        let mut config = Self::new([]);
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    let ip = words.next().and_then(|w| w.parse::<IpAddr>().ok());
                    if let Some(ip) = ip {
                        if config.name_servers.len() < MAX_NAME_SERVERS {
                            config.name_servers.push(SocketAddr::new(ip, 53));
                        }
                    }
                }
                Some("search") => {
                    config.search = words
                        .take(MAX_SEARCH_DOMAINS)
                        .map(|w| w.trim_end_matches('.').to_owned())
                        .filter(|w| !w.is_empty() && w.len() <= MAX_DNS_NAME_LEN)
                        .collect();
                }
                Some("domain") => {
                    config.search = words
                        .next()
                        .map(|w| w.trim_end_matches('.').to_owned())
                        .filter(|w| !w.is_empty() && w.len() <= MAX_DNS_NAME_LEN)
                        .into_iter()
                        .collect();
                }
                Some("options") => {
                    for option in words {
                        let Some((key, value)) = option.split_once(':') else {
                            continue;
                        };
                        let Ok(value) = value.parse::<u64>() else {
                            continue;
                        };
                        match key {
                            "ndots" => config.ndots = usize::try_from(value.min(15)).unwrap_or(15),
                            "timeout" => {
                                config.timeout = Duration::from_secs(value.clamp(1, 30));
                            }
                            "attempts" => {
                                config.attempts = usize::try_from(value.clamp(1, 5)).unwrap_or(5);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if config.name_servers.is_empty() {
            return Err(DnsError::NoNameServers);
        }
        Ok(config)
    }

    /// Reads `/etc/resolv.conf` with [`DnsConfig::from_resolv_conf`].
    ///
    /// # Errors
    /// [`DnsError::ResolvConf`] if the file cannot be read;
    /// [`DnsError::NoNameServers`] if it names no server.
    pub fn system() -> Result<Self, DnsError> {
        Self::from_resolv_conf_file("/etc/resolv.conf")
    }

    /// Reads a resolv.conf file with [`DnsConfig::from_resolv_conf`]. Files
    /// over 64 KiB are refused.
    ///
    /// # Errors
    /// [`DnsError::ResolvConf`] if the file cannot be read or is too large;
    /// [`DnsError::NoNameServers`] if it names no server.
    pub fn from_resolv_conf_file(path: impl AsRef<Path>) -> Result<Self, DnsError> {
        let path = path.as_ref();
        let error = |source: std::io::Error| DnsError::ResolvConf {
            path: path.display().to_string(),
            source,
        };
        let len = std::fs::metadata(path).map_err(error)?.len();
        if len > 64 * 1024 {
            return Err(error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "resolv.conf larger than 64 KiB",
            )));
        }
        let text = std::fs::read_to_string(path).map_err(error)?;
        Self::from_resolv_conf(&text)
    }

    /// Replaces the name servers.
    pub fn name_servers(mut self, servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.name_servers = servers.into_iter().collect();
        self
    }

    /// Replaces the search list (resolv.conf `search`); trailing dots are
    /// dropped. Default: empty.
    pub fn search<I, S>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.search = domains
            .into_iter()
            .map(|d| d.into().trim_end_matches('.').to_owned())
            .filter(|d| !d.is_empty())
            .take(MAX_SEARCH_DOMAINS)
            .collect();
        self
    }

    /// Dots a name needs to be tried as written before the search list
    /// (resolv.conf `ndots`; Kubernetes sets 5). Capped at 15. Default 1.
    pub fn ndots(mut self, ndots: usize) -> Self {
        self.ndots = ndots.min(15);
        self
    }

    /// Timeout of one query to one server (resolv.conf `timeout`). At least
    /// 1 ms. Default 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.clamp(Duration::from_millis(1), MAX_SETTING);
        self
    }

    /// Tries per query (resolv.conf `attempts`), 1 to 5. Default 2.
    pub fn attempts(mut self, attempts: usize) -> Self {
        self.attempts = attempts.clamp(1, 5);
        self
    }

    /// Bound on one whole resolution (every search name, every SRV target);
    /// past it the fetch fails with [`DnsError::Timeout`]. Keep it under the
    /// refresh's `fetch_timeout`. Default 10 s.
    pub fn resolve_timeout(mut self, timeout: Duration) -> Self {
        self.resolve_timeout = timeout.clamp(Duration::from_millis(1), MAX_SETTING);
        self
    }

    /// Shortest time an answer is used before DNS is asked again, whatever
    /// its TTL. Raises the ceiling to match if needed. At most a day.
    /// Default 5 s.
    pub fn ttl_floor(mut self, floor: Duration) -> Self {
        let floor = floor.min(MAX_SETTING);
        self.ttl_floor = floor;
        self.ttl_ceiling = self.ttl_ceiling.max(floor);
        self
    }

    /// Longest time an answer is used before DNS is asked again, whatever
    /// its TTL. Lowers the floor to match if needed. At most a day.
    /// Default 30 s.
    pub fn ttl_ceiling(mut self, ceiling: Duration) -> Self {
        let ceiling = ceiling.min(MAX_SETTING);
        self.ttl_ceiling = ceiling;
        self.ttl_floor = self.ttl_floor.min(ceiling);
        self
    }

    /// First wait after a failed resolution before DNS is asked again; each
    /// further failure doubles it, up to the TTL floor (1 ms to a day).
    /// Default 1 s.
    pub fn failure_backoff(mut self, backoff: Duration) -> Self {
        self.failure_backoff = backoff.clamp(Duration::from_millis(1), MAX_SETTING);
        self
    }

    /// Re-resolve this long before the clamped TTL runs out (at most half
    /// of it), so that with the refresh interval (and the query time)
    /// inside this margin a change is seen within one TTL, not one TTL plus
    /// a refresh tick. Default 0 (the answer is used for the whole clamped
    /// TTL).
    pub fn refresh_ahead(mut self, ahead: Duration) -> Self {
        self.refresh_ahead = ahead.min(MAX_SETTING);
        self
    }

    /// Most instances (and SRV records) one answer may yield, at least 1.
    /// Default 256.
    pub fn max_records(mut self, max: usize) -> Self {
        self.max_records = max.max(1);
        self
    }

    /// Longest name accepted, in bytes without the final dot, 1 to 253.
    /// Default 253.
    pub fn max_name_len(mut self, max: usize) -> Self {
        self.max_name_len = max.clamp(1, MAX_DNS_NAME_LEN);
        self
    }

    /// Which address records host lookups ask for. Default [`IpFamily::Both`].
    pub fn ip_family(mut self, family: IpFamily) -> Self {
        self.ip_family = family;
        self
    }

    /// The name servers.
    pub fn get_name_servers(&self) -> &[SocketAddr] {
        &self.name_servers
    }

    /// The search list.
    pub fn get_search(&self) -> &[String] {
        &self.search
    }

    /// `ndots`.
    pub fn get_ndots(&self) -> usize {
        self.ndots
    }

    /// The per-query timeout.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// Tries per query.
    pub fn get_attempts(&self) -> usize {
        self.attempts
    }

    /// The TTL floor.
    pub fn get_ttl_floor(&self) -> Duration {
        self.ttl_floor
    }

    /// The TTL ceiling.
    pub fn get_ttl_ceiling(&self) -> Duration {
        self.ttl_ceiling
    }

    /// How long an answer with `ttl` is used: `min(max(ttl, floor),
    /// ceiling)`.
    pub fn clamp_ttl(&self, ttl: Duration) -> Duration {
        ttl.max(self.ttl_floor).min(self.ttl_ceiling)
    }

    /// How long an answer with `ttl` is used before DNS is asked again:
    /// [`clamp_ttl`](Self::clamp_ttl) less
    /// [`refresh_ahead`](Self::refresh_ahead) (at most half of it).
    pub fn answer_lifetime(&self, ttl: Duration) -> Duration {
        let clamped = self.clamp_ttl(ttl);
        clamped - self.refresh_ahead.min(clamped / 2)
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.failure_backoff
            .saturating_mul(factor)
            .min(self.ttl_floor.max(self.failure_backoff))
    }
}

/// What a service id resolves to.
///
/// ```
/// use tower_ribbon::discovery::dns::DnsTarget;
///
/// assert_eq!(DnsTarget::parse("users:8080").unwrap(), DnsTarget::host("users", 8080));
/// assert_eq!(
///     DnsTarget::parse("_http._tcp.users").unwrap(),
///     DnsTarget::srv("_http._tcp.users")
/// );
/// assert!(DnsTarget::parse("users").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTarget {
    kind: TargetKind,
    secure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TargetKind {
    Host { name: String, port: u16 },
    Srv { name: String },
}

impl DnsTarget {
    /// A/AAAA records of `name`, every address at `port` (a Kubernetes
    /// headless service).
    pub fn host(name: impl Into<String>, port: u16) -> Self {
        Self {
            kind: TargetKind::Host {
                name: name.into(),
                port,
            },
            secure: false,
        }
    }

    /// SRV records of `name` (`_http._tcp.users`), with their ports,
    /// priorities and weights.
    pub fn srv(name: impl Into<String>) -> Self {
        Self {
            kind: TargetKind::Srv { name: name.into() },
            secure: false,
        }
    }

    /// `name:port` is a host target, a name starting with `_` an SRV
    /// target.
    ///
    /// # Errors
    /// [`DnsError::InvalidName`] for anything else (no port, port 0, not a
    /// number).
    pub fn parse(text: &str) -> Result<Self, DnsError> {
        let text = text.trim();
        if text.starts_with('_') {
            return Ok(Self::srv(text));
        }
        let invalid = |reason: &'static str| DnsError::InvalidName {
            name: shorten(text),
            reason,
        };
        let (name, port) = text
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected `name:port` or `_service._proto.name`"))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid("port is not in 1..=65535"))?;
        Ok(Self::host(name, port))
    }

    /// Requests go over `https`. Default `false`.
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The name looked up.
    pub fn name(&self) -> &str {
        match &self.kind {
            TargetKind::Host { name, .. } | TargetKind::Srv { name } => name,
        }
    }

    /// Whether this is an SRV target.
    pub fn is_srv(&self) -> bool {
        matches!(self.kind, TargetKind::Srv { .. })
    }
}

/// Why a DNS fetch or configuration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A configured name is not a valid DNS name.
    #[error("invalid DNS name `{name}`: {reason}")]
    InvalidName {
        /// The name (cut to 64 characters).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A configured name is longer than [`DnsConfig::max_name_len`].
    #[error("DNS name of {len} bytes is longer than {max}")]
    NameTooLong {
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The configuration names no name server.
    #[error("no DNS name server configured")]
    NoNameServers,
    /// resolv.conf could not be read.
    #[error("cannot read {path}: {source}")]
    ResolvConf {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The name exists nowhere on the search list (NXDOMAIN), or has no
    /// record of the asked type. The last good list is kept.
    #[error("no {record_type} records for `{name}`{}", if *.nxdomain { " (NXDOMAIN)" } else { "" })]
    NoRecords {
        /// The name as configured.
        name: String,
        /// `A/AAAA` or `SRV`.
        record_type: &'static str,
        /// The server said the name does not exist.
        nxdomain: bool,
    },
    /// SRV records were found, but no target of any priority had an
    /// address.
    #[error("SRV `{name}`: {records} records, no target with an address")]
    NoAddresses {
        /// The SRV name.
        name: String,
        /// SRV records seen.
        records: usize,
    },
    /// The query failed: no server answered, a server refused or failed.
    #[error("resolving `{name}` failed: {source}")]
    Resolve {
        /// The name as configured.
        name: String,
        /// hickory's error.
        #[source]
        source: BoxError,
    },
    /// The whole resolution took longer than [`DnsConfig::resolve_timeout`].
    #[error("resolving `{name}` took longer than {after:?}")]
    Timeout {
        /// The name as configured.
        name: String,
        /// The bound.
        after: Duration,
    },
    /// An earlier resolution failed and the backoff has not elapsed; DNS was
    /// not asked.
    #[error("resolving `{name}` failed {failures} times; next try in {retry_in:?}")]
    Backoff {
        /// The name as configured.
        name: String,
        /// Consecutive failures.
        failures: u32,
        /// Time left before the next query.
        retry_in: Duration,
    },
}

/// The last successful answer for one service id.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DnsAnswer {
    /// The instances, sorted by address and port.
    pub instances: Arc<Vec<Instance>>,
    /// The smallest TTL of the records used.
    pub ttl: Duration,
    /// How long the answer is used: the TTL clamped to `[floor, ceiling]`,
    /// less [`DnsConfig::refresh_ahead`].
    pub valid_for: Duration,
    /// When it was resolved.
    pub resolved_at: Instant,
    /// Records beyond [`DnsConfig::max_records`] were dropped.
    pub truncated: bool,
}

impl DnsAnswer {
    /// Time until DNS is asked again (zero once expired).
    pub fn expires_in(&self) -> Duration {
        (self.resolved_at + self.valid_for).saturating_duration_since(Instant::now())
    }
}

struct ServiceEntry {
    target: DnsTarget,
    /// The lookup name as hickory parses it (search rules apply unless it
    /// ends with a dot).
    name: Name,
}

#[derive(Default)]
struct CacheEntry {
    answer: Option<DnsAnswer>,
    failures: u32,
    retry_at: Option<Instant>,
}

struct Inner {
    resolver: TokioResolver,
    config: DnsConfig,
    services: RwLock<HashMap<String, Arc<ServiceEntry>>>,
    cache: Mutex<HashMap<String, CacheEntry>>,
    resolutions: AtomicU64,
}

/// An [`InstanceSource`] that resolves service ids through DNS: A/AAAA for
/// headless services, SRV with priority and weight; see the
/// [module documentation](self).
///
/// Service ids are matched case-insensitively. Clones share the resolver,
/// the services and the cached answers.
#[derive(Clone)]
pub struct DnsSource {
    inner: Arc<Inner>,
}

impl fmt::Debug for DnsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let services = self
            .inner
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&String> = services.keys().collect();
        names.sort();
        f.debug_struct("DnsSource")
            .field("name_servers", &self.inner.config.name_servers)
            .field("services", &names)
            .finish()
    }
}

impl DnsSource {
    /// A source with no services that resolves as `config` says.
    ///
    /// # Errors
    /// [`DnsError::NoNameServers`]; [`DnsError::InvalidName`] or
    /// [`DnsError::NameTooLong`] for a bad search domain;
    /// [`DnsError::Resolve`] if hickory refuses the configuration.
    pub fn new(config: DnsConfig) -> Result<Self, DnsError> {
        if config.name_servers.is_empty() {
            return Err(DnsError::NoNameServers);
        }
        let mut search = Vec::with_capacity(config.search.len());
        for domain in &config.search {
            let mut name = parse_name(domain, config.max_name_len)?;
            name.set_fqdn(true);
            search.push(name);
        }
        let servers = config
            .name_servers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        let resolver_config = ResolverConfig::from_parts(None, search, servers);
        let mut options = ResolverOpts::default();
        options.ndots = config.ndots;
        options.timeout = config.timeout;
        options.attempts = config.attempts;
        options.use_hosts_file = ResolveHosts::Never;
        options.ip_strategy = match config.ip_family {
            IpFamily::V4 => LookupIpStrategy::Ipv4Only,
            IpFamily::V6 => LookupIpStrategy::Ipv6Only,
            IpFamily::Both => LookupIpStrategy::Ipv4AndIpv6,
        };
        // Cleared before every resolution (TTLs must be the server's; the
        // cache's TTL bounds would rewrite them), so it only serves the
        // lookups of one resolution (search names, SRV targets).
        options.cache_size = 64;
        let resolver =
            TokioResolver::builder_with_config(resolver_config, TokioRuntimeProvider::default())
                .with_options(options)
                .build()
                .map_err(|e| DnsError::Resolve {
                    name: String::new(),
                    source: Box::new(e),
                })?;
        Ok(Self {
            inner: Arc::new(Inner {
                resolver,
                config,
                services: RwLock::new(HashMap::new()),
                cache: Mutex::new(HashMap::new()),
                resolutions: AtomicU64::new(0),
            }),
        })
    }

    /// Adds (or replaces) `service_id` resolving to `target`.
    ///
    /// # Errors
    /// [`DnsError::InvalidName`] / [`DnsError::NameTooLong`] for a bad name.
    pub fn with_service(self, service_id: &str, target: DnsTarget) -> Result<Self, DnsError> {
        self.set_service(service_id, target)?;
        Ok(self)
    }

    /// Adds or replaces `service_id`; its cached answer is dropped, so the
    /// next fetch resolves the new target.
    ///
    /// # Errors
    /// [`DnsError::InvalidName`] / [`DnsError::NameTooLong`] for a bad name.
    pub fn set_service(&self, service_id: &str, target: DnsTarget) -> Result<(), DnsError> {
        let name = parse_name(target.name(), self.inner.config.max_name_len)?;
        let key = service_id.to_ascii_lowercase();
        self.lock_cache().remove(&key);
        self.inner
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, Arc::new(ServiceEntry { target, name }));
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &DnsConfig {
        &self.inner.config
    }

    /// The last successful answer for `service_id` (kept through failures).
    pub fn answer(&self, service_id: &str) -> Option<DnsAnswer> {
        self.lock_cache()
            .get(&service_id.to_ascii_lowercase())
            .and_then(|e| e.answer.clone())
    }

    /// The TTL of the last successful answer for `service_id`, before the
    /// clamp.
    pub fn last_ttl(&self, service_id: &str) -> Option<Duration> {
        self.answer(service_id).map(|a| a.ttl)
    }

    /// Resolutions started so far (fetches answered from the cached answer
    /// or refused by the backoff are not counted).
    pub fn resolutions(&self) -> u64 {
        self.inner.resolutions.load(Ordering::Relaxed)
    }

    /// Resolves `service_id` now, whatever the cached answer, and caches
    /// the result.
    ///
    /// # Errors
    /// [`DnsError`] as for a fetch; `None` inside means the service id is
    /// not configured.
    pub async fn resolve(&self, service_id: &str) -> Option<Result<Vec<Instance>, DnsError>> {
        let key = service_id.to_ascii_lowercase();
        let entry = self.service(&key)?;
        Some(self.resolve_entry(service_id, &key, &entry).await)
    }

    fn service(&self, key: &str) -> Option<Arc<ServiceEntry>> {
        self.inner
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CacheEntry>> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn fetch_service(&self, service_id: &str) -> Result<Vec<Instance>, DiscoveryError> {
        let key = service_id.to_ascii_lowercase();
        let Some(entry) = self.service(&key) else {
            return Err(DiscoveryError::UnknownService {
                service: service_id.to_owned(),
            });
        };
        let now = Instant::now();
        {
            let cache = self.lock_cache();
            if let Some(cached) = cache.get(&key) {
                if let Some(retry_at) = cached.retry_at.filter(|at| *at > now) {
                    return Err(DiscoveryError::Other(Box::new(DnsError::Backoff {
                        name: entry.target.name().to_owned(),
                        failures: cached.failures,
                        retry_in: retry_at - now,
                    })));
                }
                if let Some(answer) = &cached.answer {
                    if now < answer.resolved_at + answer.valid_for {
                        return Ok(answer.instances.as_ref().clone());
                    }
                }
            }
        }
        self.resolve_entry(service_id, &key, &entry)
            .await
            .map_err(|e| DiscoveryError::Other(Box::new(e)))
    }

    async fn resolve_entry(
        &self,
        service_id: &str,
        key: &str,
        entry: &Arc<ServiceEntry>,
    ) -> Result<Vec<Instance>, DnsError> {
        self.inner.resolutions.fetch_add(1, Ordering::Relaxed);
        // TTLs must be the server's, not what is left of a cached copy.
        self.inner.resolver.clear_cache();
        let config = &self.inner.config;
        let started = Instant::now();
        let result = match tokio::time::timeout(
            config.resolve_timeout,
            self.lookup(service_id, entry),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(DnsError::Timeout {
                name: entry.target.name().to_owned(),
                after: config.resolve_timeout,
            }),
        };
        // The service may have been re-targeted or removed meanwhile: then
        // this answer is for a name nobody asks about any more.
        let current = self
            .service(key)
            .is_some_and(|now| Arc::ptr_eq(&now, entry));
        if !current {
            return result.map(|r| r.instances);
        }
        let mut cache = self.lock_cache();
        let cached = cache.entry(key.to_owned()).or_default();
        match result {
            Ok(resolved) => {
                let instances = Arc::new(resolved.instances);
                cached.answer = Some(DnsAnswer {
                    instances: Arc::clone(&instances),
                    ttl: resolved.ttl,
                    valid_for: config.answer_lifetime(resolved.ttl),
                    resolved_at: started,
                    truncated: resolved.truncated,
                });
                cached.failures = 0;
                cached.retry_at = None;
                Ok(instances.as_ref().clone())
            }
            Err(e) => {
                cached.failures = cached.failures.saturating_add(1);
                cached.retry_at = Some(Instant::now() + config.backoff(cached.failures));
                tracing::debug!(service = service_id, error = %e, "DNS resolution failed");
                Err(e)
            }
        }
    }

    async fn lookup(&self, service_id: &str, entry: &ServiceEntry) -> Result<Resolved, DnsError> {
        let config = &self.inner.config;
        let configured = entry.target.name();
        match &entry.target.kind {
            TargetKind::Host { port, .. } => {
                let lookup = self
                    .inner
                    .resolver
                    .lookup_ip(entry.name.clone())
                    .await
                    .map_err(|e| net_error(configured, "A/AAAA", e))?;
                let answers = lookup.as_lookup().answers();
                let ttl = min_ttl(answers).map_or_else(
                    || {
                        lookup
                            .valid_until()
                            .saturating_duration_since(std::time::Instant::now())
                    },
                    |secs| Duration::from_secs(u64::from(secs)),
                );
                let addrs: Vec<IpAddr> = answers.iter().filter_map(record_ip).collect();
                if addrs.is_empty() {
                    return Err(DnsError::NoRecords {
                        name: configured.to_owned(),
                        record_type: "A/AAAA",
                        nxdomain: false,
                    });
                }
                let candidates = addrs
                    .into_iter()
                    .map(|ip| Candidate {
                        ip,
                        port: *port,
                        weight: 1,
                        target: None,
                    })
                    .collect();
                Ok(build(
                    service_id,
                    configured,
                    candidates,
                    ttl,
                    entry.target.secure,
                    config.max_records,
                ))
            }
            TargetKind::Srv { .. } => self.lookup_srv(service_id, entry).await,
        }
    }

    async fn lookup_srv(
        &self,
        service_id: &str,
        entry: &ServiceEntry,
    ) -> Result<Resolved, DnsError> {
        let config = &self.inner.config;
        let configured = entry.target.name();
        let lookup = self
            .inner
            .resolver
            .srv_lookup(entry.name.clone())
            .await
            .map_err(|e| net_error(configured, "SRV", e))?;
        let srv_records = parse_srv(lookup.answers(), config.max_records, config.max_name_len);
        if srv_records.is_empty() {
            return Err(DnsError::NoRecords {
                name: configured.to_owned(),
                record_type: "SRV",
                nxdomain: false,
            });
        }
        let srv_ttl = min_ttl(lookup.answers()).unwrap_or(0);
        let total = srv_records.len();
        for group in priority_groups(srv_records) {
            if group.len() == 1 && group[0].target.is_empty() {
                // RFC 2782: "." alone means the service is decidedly not here.
                return Ok(Resolved {
                    instances: Vec::new(),
                    ttl: Duration::from_secs(u64::from(srv_ttl)),
                    truncated: false,
                });
            }
            let all_zero = group.iter().all(|r| r.weight == 0);
            let mut candidates = Vec::new();
            let mut ttl = srv_ttl;
            for record in group.iter().filter(|r| !r.target.is_empty() && r.port > 0) {
                let (addrs, addr_ttl) = match additional_addrs(lookup.additionals(), &record.target)
                {
                    Some(found) => found,
                    None => match self.target_addrs(&record.target).await {
                        Some(found) => found,
                        None => continue,
                    },
                };
                ttl = ttl.min(addr_ttl);
                let weight = if all_zero {
                    1
                } else {
                    u32::from(record.weight)
                };
                candidates.extend(addrs.into_iter().map(|ip| Candidate {
                    ip,
                    port: record.port,
                    weight,
                    target: Some((record.target.clone(), record.priority)),
                }));
                if candidates.len() >= config.max_records.saturating_mul(2) {
                    break;
                }
            }
            if !candidates.is_empty() {
                return Ok(build(
                    service_id,
                    configured,
                    candidates,
                    Duration::from_secs(u64::from(ttl)),
                    entry.target.secure,
                    config.max_records,
                ));
            }
        }
        Err(DnsError::NoAddresses {
            name: configured.to_owned(),
            records: total,
        })
    }

    /// A/AAAA of an SRV target (an absolute name); `None` if it has none or
    /// the lookup fails (the target is skipped).
    async fn target_addrs(&self, target: &str) -> Option<(Vec<IpAddr>, u32)> {
        let mut name = Name::from_ascii(target).ok()?;
        name.set_fqdn(true);
        let lookup = self.inner.resolver.lookup_ip(name).await.ok()?;
        let answers = lookup.as_lookup().answers();
        let addrs: Vec<IpAddr> = answers.iter().filter_map(record_ip).collect();
        if addrs.is_empty() {
            return None;
        }
        Some((addrs, min_ttl(answers).unwrap_or(0)))
    }
}

impl InstanceSource for DnsSource {
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
        Box::pin(self.fetch_service(service_id))
    }
}

/// One SRV record, validated: `target` is lower-case ASCII without the
/// final dot, empty for the root (`.`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SrvRecord {
    priority: u16,
    weight: u16,
    port: u16,
    target: String,
}

struct Candidate {
    ip: IpAddr,
    port: u16,
    weight: u32,
    /// SRV target name and priority.
    target: Option<(String, u16)>,
}

struct Resolved {
    instances: Vec<Instance>,
    ttl: Duration,
    truncated: bool,
}

/// The SRV records of an answer, at most `max`, targets longer than
/// `max_name_len` dropped.
fn parse_srv(records: &[Record], max: usize, max_name_len: usize) -> Vec<SrvRecord> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => {
                let target = srv
                    .target
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                (target.len() <= max_name_len).then_some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target,
                })
            }
            _ => None,
        })
        .take(max)
        .collect()
}

/// Records grouped by priority, lowest first; within a group by target and
/// port, duplicates removed.
fn priority_groups(mut records: Vec<SrvRecord>) -> Vec<Vec<SrvRecord>> {
    records.sort_by(|a, b| {
        (a.priority, &a.target, a.port, a.weight).cmp(&(b.priority, &b.target, b.port, b.weight))
    });
    records.dedup_by(|b, a| a.priority == b.priority && a.target == b.target && a.port == b.port);
    let mut groups: Vec<Vec<SrvRecord>> = Vec::new();
    for record in records {
        match groups.last_mut() {
            Some(group) if group[0].priority == record.priority => group.push(record),
            _ => groups.push(vec![record]),
        }
    }
    groups
}

/// Addresses for `target` in an answer's additional section.
fn additional_addrs(additionals: &[Record], target: &str) -> Option<(Vec<IpAddr>, u32)> {
    let matching: Vec<&Record> = additionals
        .iter()
        .filter(|r| {
            record_ip(r).is_some()
                && r.name
                    .to_ascii()
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(target)
        })
        .collect();
    let ttl = matching.iter().map(|r| r.ttl).min()?;
    Some((matching.iter().filter_map(|r| record_ip(r)).collect(), ttl))
}

fn record_ip(record: &Record) -> Option<IpAddr> {
    match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

fn min_ttl(records: &[Record]) -> Option<u32> {
    records
        .iter()
        .filter(|r| {
            matches!(
                r.record_type(),
                RecordType::A | RecordType::AAAA | RecordType::CNAME | RecordType::SRV
            )
        })
        .map(|r| r.ttl)
        .min()
}

/// Sorted, de-duplicated (first weight wins), cut to `max`.
fn build(
    service_id: &str,
    configured: &str,
    mut candidates: Vec<Candidate>,
    ttl: Duration,
    secure: bool,
    max: usize,
) -> Resolved {
    candidates.sort_by_key(|c| (c.ip, c.port));
    let mut seen = BTreeSet::new();
    candidates.retain(|c| seen.insert((c.ip, c.port)));
    let truncated = candidates.len() > max;
    if truncated {
        tracing::warn!(
            service = service_id,
            name = configured,
            records = candidates.len(),
            max,
            "DNS answer cut to max_records"
        );
        candidates.truncate(max);
    }
    let instances = candidates
        .into_iter()
        .filter_map(|c| {
            let instance = Instance::new(service_id, c.ip.to_string(), c.port).ok()?;
            let mut instance = instance
                .with_secure(secure)
                .with_weight(c.weight)
                .with_metadata("weight", c.weight.to_string())
                .with_metadata("dns.name", configured);
            if let Some((target, priority)) = c.target {
                instance = instance
                    .with_metadata("dns.target", target)
                    .with_metadata("dns.priority", priority.to_string());
            }
            Some(instance)
        })
        .collect();
    Resolved {
        instances,
        ttl,
        truncated,
    }
}

fn net_error(name: &str, record_type: &'static str, error: NetError) -> DnsError {
    if error.is_no_records_found() {
        DnsError::NoRecords {
            name: name.to_owned(),
            record_type,
            nxdomain: error.is_nx_domain(),
        }
    } else {
        DnsError::Resolve {
            name: name.to_owned(),
            source: Box::new(error),
        }
    }
}

/// Validates a configured name; a final dot makes it absolute.
fn parse_name(text: &str, max_len: usize) -> Result<Name, DnsError> {
    let trimmed = text.trim();
    let bare = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if bare.len() > max_len {
        return Err(DnsError::NameTooLong {
            len: bare.len(),
            max: max_len,
        });
    }
    let invalid = |reason: &'static str| DnsError::InvalidName {
        name: shorten(trimmed),
        reason,
    };
    if bare.is_empty() {
        return Err(invalid("empty name"));
    }
    if !bare
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid(
            "only ASCII letters, digits, `-`, `_` and `.` are allowed",
        ));
    }
    if bare
        .split('.')
        .any(|label| label.is_empty() || label.len() > 63)
    {
        return Err(invalid("every label must be 1 to 63 bytes"));
    }
    Name::from_ascii(trimmed).map_err(|_| invalid("not a DNS name"))
}

fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Record {
        Record::from_rdata(
            Name::from_ascii("_http._tcp.users.").unwrap(),
            30,
            RData::SRV(SRV::new(
                priority,
                weight,
                port,
                Name::from_ascii(target).unwrap(),
            )),
        )
    }

    #[test]
    fn resolv_conf_as_kubernetes_writes_it() {
        let text = "# written by the kubelet\n\
                    search default.svc.cluster.local svc.cluster.local cluster.local.\n\
                    nameserver 10.96.0.10\n\
                    nameserver bogus\n\
                    options ndots:5 timeout:99 attempts:0 rotate edns0\n";
        let c = DnsConfig::from_resolv_conf(text).unwrap();
        assert_eq!(c.get_name_servers(), ["10.96.0.10:53".parse().unwrap()]);
        assert_eq!(
            c.get_search(),
            [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(c.get_ndots(), 5);
        assert_eq!(c.get_timeout(), Duration::from_secs(30));
        assert_eq!(c.get_attempts(), 1);
        let k = DnsConfig::kubernetes("default", "10.96.0.10:53".parse().unwrap());
        assert_eq!(k.get_search(), c.get_search());
        assert_eq!(k.get_ndots(), 5);
        // `domain` replaces `search`, the last line wins.
        let d = DnsConfig::from_resolv_conf("nameserver ::1\nsearch a b\ndomain c.\n").unwrap();
        assert_eq!(d.get_search(), ["c"]);
        assert!(matches!(
            DnsConfig::from_resolv_conf("search a\n"),
            Err(DnsError::NoNameServers)
        ));
        // Four servers: glibc keeps three.
        let many =
            "nameserver 1.1.1.1\nnameserver 1.1.1.2\nnameserver 1.1.1.3\nnameserver 1.1.1.4\n";
        assert_eq!(
            DnsConfig::from_resolv_conf(many)
                .unwrap()
                .get_name_servers()
                .len(),
            3
        );
    }

    #[test]
    fn ttl_clamp_and_backoff() {
        let c = DnsConfig::new([]);
        assert_eq!(c.clamp_ttl(Duration::ZERO), Duration::from_secs(5));
        assert_eq!(
            c.clamp_ttl(Duration::from_secs(12)),
            Duration::from_secs(12)
        );
        assert_eq!(
            c.clamp_ttl(Duration::from_secs(3600)),
            Duration::from_secs(30)
        );
        let c = c.ttl_floor(Duration::from_secs(60));
        assert_eq!(c.get_ttl_ceiling(), Duration::from_secs(60));
        let c = c.ttl_ceiling(Duration::from_secs(2));
        assert_eq!(c.get_ttl_floor(), Duration::from_secs(2));
        let c = DnsConfig::new([]).failure_backoff(Duration::from_millis(250));
        let waits: Vec<u128> = (1..=7).map(|n| c.backoff(n).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(c.backoff(u32::MAX), Duration::from_secs(5));
        let c = DnsConfig::new([]).refresh_ahead(Duration::from_secs(1));
        assert_eq!(
            c.answer_lifetime(Duration::from_secs(10)),
            Duration::from_secs(9)
        );
        // At most half of the clamped TTL (floor 5 s).
        let c = c.refresh_ahead(Duration::from_secs(60));
        assert_eq!(
            c.answer_lifetime(Duration::ZERO),
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn names_are_validated_and_bounded() {
        assert!(parse_name("users.default.svc.cluster.local", 253).is_ok());
        assert!(parse_name("_http._tcp.users.", 253).unwrap().is_fqdn());
        assert!(!parse_name("users", 253).unwrap().is_fqdn());
        let long = format!("{}.local", "a".repeat(250));
        assert!(matches!(
            parse_name(&long, 253),
            Err(DnsError::NameTooLong { len: 256, max: 253 })
        ));
        assert!(matches!(
            parse_name("users", 3),
            Err(DnsError::NameTooLong { .. })
        ));
        for bad in ["", ".", "a..b", "a b", "ü.local", &"a".repeat(64)] {
            assert!(
                matches!(parse_name(bad, 253), Err(DnsError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(DnsTarget::parse("users:0").is_err());
        assert!(DnsTarget::parse("users:x").is_err());
        assert_eq!(
            DnsTarget::parse(" users.ns:80 ").unwrap(),
            DnsTarget::host("users.ns", 80)
        );
    }

    #[test]
    fn srv_groups_by_priority_and_bounds() {
        let answer = [
            srv(20, 5, 80, "backup.test."),
            srv(10, 3, 8081, "B.test."),
            srv(10, 1, 8080, "a.test."),
            srv(10, 1, 8080, "a.test."),
        ];
        let records = parse_srv(&answer, 16, 253);
        assert_eq!(records.len(), 4);
        let groups = priority_groups(records);
        assert_eq!(groups.len(), 2);
        let first: Vec<(&str, u16, u16)> = groups[0]
            .iter()
            .map(|r| (r.target.as_str(), r.port, r.weight))
            .collect();
        assert_eq!(first, [("a.test", 8080, 1), ("b.test", 8081, 3)]);
        assert_eq!(groups[1][0].priority, 20);
        // max records and max name length.
        assert_eq!(parse_srv(&answer, 2, 253).len(), 2);
        assert_eq!(parse_srv(&answer, 16, 6).len(), 3);
        // Root target.
        let root = parse_srv(&[srv(0, 0, 0, ".")], 16, 253);
        assert_eq!(root[0].target, "");
    }

    #[test]
    fn build_sorts_dedups_weights_and_cuts() {
        let c = |ip: [u8; 4], port, weight| Candidate {
            ip: IpAddr::V4(Ipv4Addr::from(ip)),
            port,
            weight,
            target: Some(("a.test".to_owned(), 10)),
        };
        let r = build(
            "users",
            "_http._tcp.users",
            vec![
                c([127, 0, 0, 3], 80, 3),
                c([127, 0, 0, 2], 80, 1),
                c([127, 0, 0, 3], 80, 9),
            ],
            Duration::from_secs(7),
            true,
            16,
        );
        let shown: Vec<(String, u32)> = r
            .instances
            .iter()
            .map(|i| (i.to_string(), i.weight()))
            .collect();
        assert_eq!(
            shown,
            [
                ("https://127.0.0.2:80".to_owned(), 1),
                ("https://127.0.0.3:80".to_owned(), 3)
            ]
        );
        assert_eq!(r.instances[1].metadata()["weight"], "3");
        assert_eq!(r.instances[1].metadata()["dns.priority"], "10");
        assert!(!r.truncated);
        let many: Vec<Candidate> = (0..10u8).map(|i| c([10, 0, 0, i], 1, 1)).collect();
        let r = build("s", "n", many, Duration::ZERO, false, 4);
        assert!(r.truncated);
        assert_eq!(r.instances.len(), 4);
        assert_eq!(r.instances[3].host(), "10.0.0.3");
    }

    #[test]
    fn additional_section_and_ttls() {
        let name = Name::from_ascii("a.test.").unwrap();
        let other = Name::from_ascii("b.test.").unwrap();
        let extra = [
            Record::from_rdata(name.clone(), 9, RData::A(A(Ipv4Addr::new(127, 0, 0, 2)))),
            Record::from_rdata(name, 4, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
            Record::from_rdata(other, 1, RData::A(A(Ipv4Addr::new(127, 0, 0, 9)))),
        ];
        let (addrs, ttl) = additional_addrs(&extra, "a.test").unwrap();
        assert_eq!(addrs.len(), 2);
        assert_eq!(ttl, 4);
        assert!(additional_addrs(&extra, "c.test").is_none());
        assert_eq!(min_ttl(&extra), Some(1));
        assert_eq!(min_ttl(&[]), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(13),
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// No answer makes the SRV path panic, exceed its bounds, or mix
        /// priorities; weights are the records' (all-zero groups aside).
        #[test]
        fn any_srv_answer_is_bounded(
            records in proptest::collection::vec(
                (0u16..4, 0u16..5, 0u16..4, 0usize..6, proptest::bool::ANY),
                0..40,
            ),
            max in 1usize..12,
            max_name_len in 1usize..20,
        ) {
            let answer: Vec<Record> = records
                .iter()
                .map(|(p, w, port, t, root)| {
                    let target = if *root { ".".to_owned() } else { format!("t{t}.test.") };
                    srv(*p, *w, *port, &target)
                })
                .collect();
            let parsed = parse_srv(&answer, max, max_name_len);
            proptest::prop_assert!(parsed.len() <= max);
            proptest::prop_assert!(parsed.iter().all(|r| r.target.len() <= max_name_len));
            let groups = priority_groups(parsed);
            for pair in groups.windows(2) {
                proptest::prop_assert!(pair[0][0].priority < pair[1][0].priority);
            }
            for group in &groups {
                proptest::prop_assert!(group.iter().all(|r| r.priority == group[0].priority));
                let candidates: Vec<Candidate> = group
                    .iter()
                    .enumerate()
                    .map(|(i, r)| Candidate {
                        ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, u8::try_from(i % 200).unwrap())),
                        port: r.port,
                        weight: u32::from(r.weight),
                        target: Some((r.target.clone(), r.priority)),
                    })
                    .collect();
                let built = build("svc", "n", candidates, Duration::ZERO, false, max);
                proptest::prop_assert!(built.instances.len() <= max);
                // Port 0 cannot be an instance; every other record can.
                proptest::prop_assert!(built.instances.iter().all(|i| i.port() > 0));
            }
        }

        /// Any text: resolv.conf parsing never panics and stays bounded.
        #[test]
        fn any_resolv_conf_is_bounded(text in "(nameserver|search|domain|options|ndots:|[0-9a-z.:; #\n])*") {
            if let Ok(c) = DnsConfig::from_resolv_conf(&text) {
                proptest::prop_assert!(c.get_name_servers().len() <= 3);
                proptest::prop_assert!(c.get_search().len() <= 32);
                proptest::prop_assert!(c.get_ndots() <= 15);
            }
        }
    }

    #[test]
    fn durations_are_capped() {
        let c = DnsConfig::new([])
            .ttl_floor(Duration::MAX)
            .failure_backoff(Duration::MAX)
            .refresh_ahead(Duration::MAX);
        assert_eq!(c.get_ttl_ceiling(), MAX_SETTING);
        // Deadlines from these never overflow.
        let now = Instant::now();
        let _ = now + c.answer_lifetime(Duration::MAX) + c.backoff(u32::MAX);
    }

    #[test]
    fn configuration_errors_are_typed() {
        assert!(matches!(
            DnsSource::new(DnsConfig::new([])),
            Err(DnsError::NoNameServers)
        ));
    }
}
