//! Resolver settings: name servers, search list, ndots, TTL bounds and limits.



use super::error::DnsError;
use std::time::Duration;
use std::net::IpAddr;
use super::MAX_DNS_NAME_LEN;
use super::MAX_NAME_SERVERS;
use super::MAX_SEARCH_DOMAINS;
use super::MAX_SETTING;
use std::path::Path;
use std::net::SocketAddr;

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

impl IpFamily {
    /// Whether `ip` is of this family.
    pub(super) fn admits(self, ip: IpAddr) -> bool {
        match self {
            Self::V4 => ip.is_ipv4(),
            Self::V6 => ip.is_ipv6(),
            Self::Both => true,
        }
    }
}

/// How a [`DnsSource`](super::DnsSource) resolves: name servers, search list, `ndots`,
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
    pub(super) name_servers: Vec<SocketAddr>,
    pub(super) search: Vec<String>,
    pub(super) ndots: usize,
    pub(super) timeout: Duration,
    pub(super) attempts: usize,
    pub(super) resolve_timeout: Duration,
    pub(super) ttl_floor: Duration,
    pub(super) ttl_ceiling: Duration,
    pub(super) failure_backoff: Duration,
    pub(super) refresh_ahead: Duration,
    pub(super) max_records: usize,
    pub(super) subset_seed: u64,
    pub(super) max_name_len: usize,
    pub(super) ip_family: IpFamily,
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
            subset_seed: crate::rng::AtomicRng::from_entropy().next_u64(),
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
    /// over 64 KiB are refused; the read stops there, so a FIFO or a device
    /// (whose metadata gives no size) is bounded too.
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
        const MAX_BYTES: usize = 64 * 1024;
        let too_large = || {
            error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "resolv.conf larger than 64 KiB",
            ))
        };
        let file = std::fs::File::open(path).map_err(error)?;
        // The metadata's length is 0 for a FIFO, a `/proc` file or a
        // device: the read itself is bounded, one byte past the bound.
        if file.metadata().map_err(error)?.len() > MAX_BYTES as u64 {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        let mut bounded = std::io::Read::take(file, MAX_BYTES as u64 + 1);
        std::io::Read::read_to_end(&mut bounded, &mut bytes).map_err(error)?;
        if bytes.len() > MAX_BYTES {
            return Err(too_large());
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            error(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
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
    /// Default 256. Over it, the heaviest records are kept, and among
    /// records of equal weight a subset chosen by
    /// [`subset_seed`](Self::subset_seed).
    pub fn max_records(mut self, max: usize) -> Self {
        self.max_records = max.max(1);
        self
    }

    /// Seeds which records of equal weight a cut to
    /// [`max_records`](Self::max_records) keeps: each record is ranked by a
    /// hash of the seed, its address and its port (rendezvous hashing), and
    /// the best-ranked are kept. Default: random per `DnsConfig`, so each
    /// client keeps its own subset and a fleet of clients covers every
    /// address, while one client keeps the same subset across refreshes
    /// (a removed address is replaced by one other, the rest stay). A
    /// fixed seed makes the choice reproducible. (The lowest addresses were
    /// kept, the same for every client: over a 1 000-address answer cut to
    /// 10, a fleet sent all its traffic to 10 addresses.)
    pub fn subset_seed(mut self, seed: u64) -> Self {
        self.subset_seed = seed;
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

    pub(super) fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.failure_backoff
            .saturating_mul(factor)
            .min(self.ttl_floor.max(self.failure_backoff))
    }
}
