//! The source itself: the resolver, the cached answers and the fetch.

use hickory_resolver::TokioResolver;
use hickory_resolver::config::ConnectionConfig;
use hickory_resolver::config::LookupIpStrategy;
use hickory_resolver::config::NameServerConfig;
use hickory_resolver::config::ResolveHosts;
use hickory_resolver::config::ResolverConfig;
use hickory_resolver::config::ResolverOpts;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::Name;
use crate::DiscoveryError;
use crate::Instance;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use super::config::DnsConfig;
use super::error::DnsError;
use super::target::DnsTarget;
use std::time::Duration;
use std::collections::HashMap;
use std::net::IpAddr;
use super::config::IpFamily;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use super::records::{Candidate, Resolved};
use std::sync::RwLock;
use super::target::TargetKind;
use super::records::Additionals;
use super::records::build;
use std::fmt;
use super::records::{PriorityGroups, min_ttl, net_error, only_root};
use super::answers::{addresses, answering_lookup, asked_names};
use super::records::{TargetWalk, parse_name};
use super::records::{parse_srv, priority_groups};
use tokio::time::Instant;

/// The last successful answer for one service id.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DnsAnswer {
    /// The instances, sorted by address and port.
    pub instances: Arc<Vec<Instance>>,
    /// The smallest TTL of the records used.
    pub ttl: Duration,
    /// How long the answer is used: the TTL clamped to `[floor, ceiling]`,
    /// less [`DnsConfig::refresh_ahead`], and no longer than an address it
    /// keeps through a failed lookup may stay (the ceiling after that
    /// address was last resolved).
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

pub(super) struct ServiceEntry {
    pub(super) target: DnsTarget,
    /// The lookup name as hickory parses it (search rules apply unless it
    /// ends with a dot).
    pub(super) name: Name,
}

/// An address of an answer: SRV target (`None`: the host target), port, IP.
pub(super) type KeptAddr = (Option<String>, u16, IpAddr);

#[derive(Default)]
pub(super) struct CacheEntry {
    pub(super) answer: Option<DnsAnswer>,
    pub(super) failures: u32,
    pub(super) retry_at: Option<Instant>,
    /// Addresses kept through failed lookups: when each was last resolved
    /// (kept up to the TTL ceiling). Only addresses of the last answer.
    pub(super) kept_since: HashMap<KeptAddr, Instant>,
}

pub(super) struct Inner {
    pub(super) resolver: TokioResolver,
    pub(super) config: DnsConfig,
    pub(super) services: RwLock<HashMap<String, Arc<ServiceEntry>>>,
    pub(super) cache: Mutex<HashMap<String, CacheEntry>>,
    pub(super) resolutions: AtomicU64,
}

/// An [`InstanceSource`](crate::discovery::InstanceSource) that resolves service ids through DNS: A/AAAA for
/// headless services, SRV with priority and weight; see the
/// [module documentation](crate::discovery::dns).
///
/// Service ids are matched case-insensitively. Clones share the resolver,
/// the services and the cached answers.
#[derive(Clone)]
pub struct DnsSource {
    pub(super) inner: Arc<Inner>,
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
        // A CNAME chain's records stay in the answers it assembles, so the
        // addresses are told apart from records of other names
        // (`records::answering`).
        options.preserve_intermediates = true;
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
    /// As [`set_service`](Self::set_service).
    pub fn with_service(self, service_id: &str, target: DnsTarget) -> Result<Self, DnsError> {
        self.set_service(service_id, target)?;
        Ok(self)
    }

    /// Adds or replaces `service_id`; its cached answer is dropped, so the
    /// next fetch resolves the new target.
    ///
    /// # Errors
    /// [`DnsError::InvalidName`] / [`DnsError::NameTooLong`] for a bad name;
    /// [`DnsError::PortZero`] for a host target at port 0 (no instance can
    /// have it, so every fetch would be an empty list).
    pub fn set_service(&self, service_id: &str, target: DnsTarget) -> Result<(), DnsError> {
        target.check_port()?;
        let name = parse_name(target.name(), self.inner.config.max_name_len)?;
        let key = crate::discovery::service_key(service_id);
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
            .get(&crate::discovery::service_key(service_id))
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
    /// the result. If a resolution of it that started later has ended
    /// first, its answer is the newer and is given instead (this one,
    /// success or failure, is dropped).
    ///
    /// # Errors
    /// [`DnsError`] as for a fetch; `None` inside means the service id is
    /// not configured.
    pub async fn resolve(&self, service_id: &str) -> Option<Result<Vec<Instance>, DnsError>> {
        let key = crate::discovery::service_key(service_id);
        let entry = self.service(&key)?;
        Some(self.resolve_entry(service_id, &key, &entry).await)
    }

    pub(super) fn service(&self, key: &str) -> Option<Arc<ServiceEntry>> {
        self.inner
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    pub(super) fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CacheEntry>> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) async fn fetch_service(
        &self,
        service_id: &str,
    ) -> Result<Vec<Instance>, DiscoveryError> {
        let key = crate::discovery::service_key(service_id);
        let Some(entry) = self.service(&key) else {
            return Err(DiscoveryError::UnknownService {
                service: service_id.to_owned(),
            });
        };
        let now = Instant::now();
        {
            let cache = self.lock_cache();
            if let Some(cached) = cache.get(&key) {
                // Within its TTL, whatever a `resolve` meanwhile did.
                if let Some(answer) = &cached.answer {
                    if now < answer.resolved_at + answer.valid_for {
                        return Ok(answer.instances.as_ref().clone());
                    }
                }
                if let Some(retry_at) = cached.retry_at.filter(|at| *at > now) {
                    return Err(DiscoveryError::Other(Box::new(DnsError::Backoff {
                        name: entry.target.name().to_owned(),
                        failures: cached.failures,
                        retry_in: retry_at - now,
                    })));
                }
            }
        }
        self.resolve_entry(service_id, &key, &entry)
            .await
            .map_err(|e| DiscoveryError::Other(Box::new(e)))
    }

    pub(super) async fn resolve_entry(
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
        // Overtaken by a resolution that started later: its answer is newer.
        if let Some(newer) = cached.answer.as_ref().filter(|a| a.resolved_at > started) {
            return Ok(newer.instances.as_ref().clone());
        }
        match result {
            Ok(resolved) => {
                let instances = Arc::new(resolved.instances);
                cached.forget_unlisted(&instances);
                cached.answer = Some(DnsAnswer {
                    instances: Arc::clone(&instances),
                    ttl: resolved.ttl,
                    valid_for: cached.lifetime(config, resolved.ttl, started),
                    resolved_at: started,
                    truncated: resolved.truncated,
                });
                cached.failures = 0;
                cached.retry_at = None;
                Ok(instances.as_ref().clone())
            }
            Err(e) => {
                cached.failures = cached.failures.saturating_add(1);
                cached.retry_at = Instant::now().checked_add(config.backoff(cached.failures));
                tracing::debug!(service = service_id, error = %e, "DNS resolution failed");
                Err(e)
            }
        }
    }

    pub(super) async fn lookup(
        &self,
        service_id: &str,
        entry: &ServiceEntry,
    ) -> Result<Resolved, DnsError> {
        let config = &self.inner.config;
        let configured = entry.target.name();
        match &entry.target.kind {
            TargetKind::Host { port, .. } => {
                let (mut addrs, mut ttl, gone) =
                    match self.inner.resolver.lookup_ip(entry.name.clone()).await {
                        Ok(lookup) => {
                            let asked = asked_names(&entry.name, &config.search);
                            let answers = answering_lookup(lookup.as_lookup(), &asked);
                            let ttl = min_ttl(answers.iter().copied()).map_or_else(
                                || {
                                    (lookup.valid_until())
                                        .saturating_duration_since(std::time::Instant::now())
                                },
                                |secs| Duration::from_secs(u64::from(secs)),
                            );
                            (addresses(&answers, config.ip_family), ttl, false)
                        }
                        Err(e) => match self.gone_everywhere(&entry.name, e, None).await {
                            Ok(ttl) => (Vec::new(), ttl, true),
                            Err(e) => return Err(net_error(configured, "A/AAAA", e)),
                        },
                    };
                // With both families, the one that failed keeps its last
                // addresses (asked again on its own).
                let last = (service_id, *port, None);
                self.keep_failed_family(last, &entry.name, &mut addrs, &mut ttl)
                    .await;
                if addrs.is_empty() && gone {
                    return Ok(Resolved::none(ttl));
                }
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
                    config.subset_seed,
                ))
            }
            TargetKind::Srv { .. } => self.lookup_srv(service_id, entry).await,
        }
    }

    pub(super) async fn lookup_srv(
        &self,
        service_id: &str,
        entry: &ServiceEntry,
    ) -> Result<Resolved, DnsError> {
        let config = &self.inner.config;
        let (configured, srv) = (entry.target.name(), hickory_resolver::proto::rr::RecordType::SRV);
        let lookup = match self.inner.resolver.srv_lookup(entry.name.clone()).await {
            Ok(lookup) => lookup,
            Err(e) => match self.gone_everywhere(&entry.name, e, Some(srv)).await {
                Ok(ttl) => return Ok(Resolved::none(ttl)),
                Err(e) => return Err(net_error(configured, "SRV", e)),
            },
        };
        let answers = answering_lookup(&lookup, &asked_names(&entry.name, &config.search));
        let srv_records = parse_srv(answers.iter().copied(), config.max_name_len);
        if srv_records.is_empty() {
            return Err(DnsError::NoRecords {
                name: configured.to_owned(),
                record_type: "SRV",
                nxdomain: false,
            });
        }
        let srv_ttl = min_ttl(answers.iter().copied()).unwrap_or(0);
        if only_root(&srv_records) {
            // RFC 2782: "." alone means the service is decidedly not here.
            return Ok(Resolved::none(Duration::from_secs(u64::from(srv_ttl))));
        }
        let total = srv_records.len();
        // All records (one message, ≤ 3 449); lookups ≤ 2 · max_records; weights all 0: 1 each.
        let PriorityGroups { groups, .. } = priority_groups(srv_records, usize::MAX);
        let mut walk = TargetWalk::new(config.max_records.saturating_mul(2));
        let additionals = Additionals::new(lookup.additionals(), config);
        for mut group in groups {
            super::records::lookup_order(&mut group, config.subset_seed);
            let (candidates, ttl, visited) = self
                .group_candidates(service_id, &group, &additionals, &mut walk, srv_ttl)
                .await;
            if !candidates.is_empty() {
                let mut resolved = build(
                    service_id,
                    configured,
                    candidates,
                    Duration::from_secs(u64::from(ttl)),
                    entry.target.secure,
                    config.max_records,
                    config.subset_seed,
                );
                resolved.truncated |= visited < group.len();
                return Ok(resolved);
            }
        }
        walk.no_address(configured, total, srv_ttl)
    }
}
