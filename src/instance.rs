//! Instances of a service and the endpoints the balancer picks from.
//!
//! An [`Instance`] is what a registry says about one running copy of a
//! service: its id, address, scheme, zone, status, metadata and weight
//! (Ribbon's `Server`, Spring Cloud's `ServiceInstance`). An [`Endpoint`] is
//! an instance as the balancer holds it: the instance, its request authority
//! built once, and its live [`EndpointStats`], which survive a refresh that
//! keeps the instance's [identity](InstanceKey).
//!
//! ```
//! use tower_ribbon::instance::{Instance, InstanceStatus};
//!
//! let v6 = Instance::new("user-service", "fe80::1%eth0", 8080).unwrap();
//! assert_eq!(v6.authority().as_str(), "[fe80::1%25eth0]:8080");
//!
//! let https = Instance::new("user-service", "users.internal", 8443)
//!     .unwrap()
//!     .with_secure(true)
//!     .with_zone("zone-a");
//! assert_eq!(https.scheme().as_str(), "https");
//! assert_eq!(https.zone(), Some("zone-a"));
//! assert_eq!(https.status(), InstanceStatus::Up);
//! ```

use std::fmt;
use std::sync::{Arc, OnceLock};

use http::uri::{Authority, Scheme};

use crate::error::{InstanceError, InstanceErrorKind};
use crate::stats::EndpointStats;

pub(crate) mod authority;
mod metadata;
mod names;

use authority::build_authority;
pub(crate) use authority::drop_host_differing_from;
pub use metadata::Metadata;
use names::Names;

/// The registry status of an instance (Eureka's `InstanceStatus`).
///
/// Only [`InstanceStatus::Up`] instances are eligible for traffic. A status
/// string this crate does not know parses to [`InstanceStatus::Unknown`],
/// which is not `Up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum InstanceStatus {
    /// Ready to receive traffic.
    #[default]
    Up,
    /// Failed its health check.
    Down,
    /// Still initialising.
    Starting,
    /// Taken out of traffic on purpose (by an operator or the instance itself).
    OutOfService,
    /// Unknown, or a status string this crate does not know.
    Unknown,
}

impl InstanceStatus {
    /// Parses Eureka's spelling (`UP`, `DOWN`, `STARTING`, `OUT_OF_SERVICE`,
    /// `UNKNOWN`), case-insensitively. Anything else is `Unknown`.
    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        if s.eq_ignore_ascii_case("UP") {
            Self::Up
        } else if s.eq_ignore_ascii_case("DOWN") {
            Self::Down
        } else if s.eq_ignore_ascii_case("STARTING") {
            Self::Starting
        } else if s.eq_ignore_ascii_case("OUT_OF_SERVICE") {
            Self::OutOfService
        } else {
            Self::Unknown
        }
    }

    /// Eureka's spelling of this status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "UP",
            Self::Down => "DOWN",
            Self::Starting => "STARTING",
            Self::OutOfService => "OUT_OF_SERVICE",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// `true` only for `Up`.
    pub fn is_up(self) -> bool {
        self == Self::Up
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One running copy of a service, as a registry describes it.
///
/// Built with [`Instance::new`], which validates the host and builds the
/// request authority once, then refined with the `with_*` methods. Defaults:
/// instance id `host:port`, scheme `http`, no zone, status `UP`, weight 1,
/// no metadata.
#[derive(Clone, PartialEq, Eq)]
pub struct Instance {
    /// Id, host and health check URL.
    names: Names,
    /// Shared by the instances of one service a registry decoder builds.
    service_id: Arc<str>,
    port: u16,
    secure: bool,
    /// Shared by the instances in one zone a registry decoder builds.
    zone: Option<Arc<str>>,
    status: InstanceStatus,
    metadata: Metadata,
    weight: u32,
    authority: LazyAuthority,
}

impl Instance {
    /// A new `UP` instance of `service_id` at `host:port`.
    ///
    /// `host` is a DNS name, an IPv4 address, or an IPv6 address with or
    /// without brackets, optionally with a zone id: `fe80::1%eth0` (RFC 4007
    /// text form) or, in brackets, the URI form `[fe80::1%25eth0]` (RFC
    /// 6874). Without brackets `%25` is read literally as part of the zone.
    ///
    /// # Errors
    /// [`InstanceError`] ([`is_invalid_host`](InstanceError::is_invalid_host)) if `host` is empty, longer than 253 bytes (a trailing dot
    /// not counted), a name with an empty label (`a..b`, `.a`, `.` alone)
    /// or a label over 63 bytes (which no resolver looks up), a name
    /// ending in a number (`010.0.0.1`, `127.1`: resolvers read it as an
    /// IPv4 address, `010.0.0.1` as 8.0.0.1), an address of no one host
    /// (`0.0.0.0`, `::`, multicast, broadcast, IPv4-mapped or not), or
    /// cannot be part of a URI authority; [`InstanceError`]
    /// ([`is_invalid_port`](InstanceError::is_invalid_port)) for port 0.
    pub fn new(
        service_id: impl Into<String>,
        host: impl Into<String>,
        port: u16,
    ) -> Result<Self, InstanceError> {
        let host = host.into();
        Self::with_identity(Arc::from(service_id.into()), None, &host, port, None)
    }

    /// [`Instance::new`] with the id given up front (`None`: `host:port`),
    /// so a registry decoder builds each string once.
    pub(crate) fn with_identity(
        service_id: Arc<str>,
        id: Option<&str>,
        host: &str,
        port: u16,
        health_check_url: Option<&str>,
    ) -> Result<Self, InstanceError> {
        if port == 0 {
            return Err(InstanceError::new(
                InstanceErrorKind::InvalidPort,
                &format!("{}:0", crate::error::quote(host)),
                "port 0",
            ));
        }
        let (host, authority) = build_authority(host, port)?;
        Ok(Self {
            names: match id {
                Some(id) => Names::new(id, &host, health_check_url),
                None => Names::new(&format!("{host}:{port}"), &host, health_check_url),
            },
            service_id,
            port,
            secure: false,
            zone: None,
            status: InstanceStatus::Up,
            metadata: Metadata::new(),
            weight: 1,
            authority: LazyAuthority(authority.map(OnceLock::from).unwrap_or_default()),
        })
    }

    /// Sets the instance id (Eureka's `instanceId`). Default: `host:port`.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.names = Names::new(&id.into(), self.host(), self.health_check_url());
        self
    }

    /// Sets whether requests use `https`. Default: `false` (`http`).
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Sets the zone (compared case-insensitively by zone-aware rules).
    /// Default: none, which zone-aware rules treat as `default`.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        let zone = zone.into();
        self.zone = if zone.is_empty() {
            None
        } else {
            Some(Arc::from(zone))
        };
        self
    }

    /// [`Instance::with_zone`] with a zone string shared with other
    /// instances (a decoder's interned copy).
    #[cfg(feature = "eureka")]
    pub(crate) fn with_shared_zone(mut self, zone: Arc<str>) -> Self {
        self.zone = if zone.is_empty() { None } else { Some(zone) };
        self
    }

    /// Sets the registry status. Default: `UP`.
    pub fn with_status(mut self, status: InstanceStatus) -> Self {
        self.status = status;
        self
    }

    /// Sets the static weight used by weighted rules. Default: 1. A weight of
    /// 0 is kept and means "no share" to weighted rules.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Replaces all metadata at once (a decoder's map, moved in).
    #[cfg(feature = "eureka")]
    pub(crate) fn with_metadata_map(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the health check URL (Eureka's `healthCheckUrl`). Default: none.
    pub fn with_health_check_url(mut self, url: impl Into<String>) -> Self {
        self.names = Names::new(self.id(), self.host(), Some(&url.into()));
        self
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        self.names.id()
    }

    /// The service id this instance belongs to, as the registry spells it.
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// The host: a DNS name, an IPv4 address, or an IPv6 address without
    /// brackets (a zone id, if any, after a plain `%`).
    pub fn host(&self) -> &str {
        self.names.host()
    }

    /// The port requests go to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether requests use `https`.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> Scheme {
        if self.secure {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    /// The zone, if the registry gave one.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// The registry status.
    pub fn status(&self) -> InstanceStatus {
        self.status
    }

    /// Metadata, sorted by key.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The static weight (default 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The health check URL, if the registry gave one.
    pub fn health_check_url(&self) -> Option<&str> {
        self.names.health_check_url()
    }

    /// The request authority: `host:port`, `1.2.3.4:port`, `[::1]:port`, or
    /// `[fe80::1%25eth0]:port` for an IPv6 address with a zone id.
    ///
    /// Built on first use for a name or an IPv4 address (a registry
    /// decoder makes thousands of instances, most never called; an
    /// [`Endpoint`] builds it when it is made), at once for IPv6.
    pub fn authority(&self) -> &Authority {
        self.authority
            .0
            .get_or_init(|| authority::name_authority(self.host(), self.port))
    }

    /// The stable hash (FNV-1a) of this instance's identity (id, host,
    /// port): consistent hashing's ring position, and a list's membership.
    pub(crate) fn identity_hash(&self) -> u64 {
        // 0xff never occurs in UTF-8, so the fields cannot run into each other.
        let bytes = self.id().bytes().chain([0xff]).chain(self.host().bytes());
        crate::hash::fnv1a64(bytes.chain([0xff]).chain(self.port().to_be_bytes()))
    }

    /// The identity that per-instance state is kept under across refreshes:
    /// instance id, host, port and scheme. A changed port is a new identity.
    pub fn key(&self) -> InstanceKey {
        InstanceKey {
            id: self.id().to_owned(),
            host: self.host().to_owned(),
            port: self.port,
            secure: self.secure,
        }
    }
}

/// An instance's request authority, made from its host and port when first
/// asked for. Two instances with the same host and port have the same
/// authority, so it takes no part in comparing them.
#[derive(Clone, Default)]
struct LazyAuthority(OnceLock<Authority>);

impl PartialEq for LazyAuthority {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for LazyAuthority {}

/// Registry text (id, service id, zone, metadata keys) cut to 128 bytes each;
/// metadata keys only, values hidden ([`Metadata`]'s `Debug`).
impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::error::DebugCut;
        f.debug_struct("Instance")
            .field("id", &DebugCut(self.id()))
            .field("service_id", &DebugCut(&self.service_id))
            .field("authority", &self.authority().as_str())
            .field("secure", &self.secure)
            .field("zone", &self.zone().map(DebugCut))
            .field("status", &self.status)
            .field("weight", &self.weight)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme(), self.authority())
    }
}

/// The identity of an instance: id, host, port and scheme.
///
/// Per-instance state (stats, breaker, weights) is kept under this key when a
/// refresh brings the same instance again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    /// Instance id.
    pub id: String,
    /// Host as stored in the instance.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `https` if true.
    pub secure: bool,
}

/// An instance as the balancer holds it: the instance, its scheme and
/// authority, and its live stats. Cloning is one reference-count increment.
///
/// Two endpoints with the same [identity](InstanceKey) share one
/// [`EndpointStats`], also across refreshes; [`Endpoint::same_identity`]
/// compares that without touching strings.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<EndpointInner>,
}

struct EndpointInner {
    instance: Instance,
    scheme: Scheme,
    stats: Arc<EndpointStats>,
    metrics: std::sync::OnceLock<crate::metrics::EndpointMetrics>,
}

impl Endpoint {
    /// An endpoint for `instance` with fresh stats.
    pub fn new(instance: Instance) -> Self {
        Self::with_stats(instance, Arc::new(EndpointStats::new()))
    }

    /// An endpoint for `instance` that keeps `stats` (used by a refresh that
    /// brings an instance whose identity is already known).
    pub fn with_stats(instance: Instance, stats: Arc<EndpointStats>) -> Self {
        let scheme = instance.scheme();
        // Built here, once, so no request pays for it.
        instance.authority();
        Self {
            inner: Arc::new(EndpointInner {
                instance,
                scheme,
                stats,
                metrics: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The instance.
    pub fn instance(&self) -> &Instance {
        &self.inner.instance
    }

    /// The scheme requests to this endpoint use.
    pub fn scheme(&self) -> &Scheme {
        &self.inner.scheme
    }

    /// The request authority.
    pub fn authority(&self) -> &Authority {
        self.inner.instance.authority()
    }

    /// Live stats of this endpoint's identity.
    pub fn stats(&self) -> &EndpointStats {
        &self.inner.stats
    }

    /// The shared stats handle (for code that keeps stats beyond a snapshot).
    pub fn stats_handle(&self) -> &Arc<EndpointStats> {
        &self.inner.stats
    }

    /// Metric handles, registered on first use (with the instance label
    /// if `per_instance`; a balancer always passes the same value).
    pub(crate) fn metrics(&self, per_instance: bool) -> &crate::metrics::EndpointMetrics {
        self.inner.metrics.get_or_init(|| {
            let instance = &self.inner.instance;
            let id = per_instance.then(|| instance.id());
            crate::metrics::EndpointMetrics::register(instance.service_id(), id)
        })
    }

    /// Whether `other` has the same identity (shares its stats).
    pub fn same_identity(&self, other: &Endpoint) -> bool {
        #[cfg(test)]
        tests::IDENTITY_TESTS.with(|n| n.set(n.get() + 1));
        Arc::ptr_eq(&self.inner.stats, &other.inner.stats)
    }

    /// The identity [`Endpoint::same_identity`] compares, as a number.
    pub(crate) fn identity(&self) -> usize {
        Arc::as_ptr(&self.inner.stats) as usize
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("instance", &self.inner.instance)
            .field("in_flight", &self.inner.stats.in_flight())
            .finish()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner.instance, f)
    }
}

#[cfg(test)]
pub(crate) mod tests;
