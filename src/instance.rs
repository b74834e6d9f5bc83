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

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use http::uri::{Authority, Scheme};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::{InstanceError, InstanceErrorKind};
use crate::stats::EndpointStats;

/// Characters of an IPv6 zone id that stay as they are in a URI (RFC 6874:
/// `unreserved`); everything else is percent-encoded.
const ZONE_ID_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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
    id: String,
    service_id: String,
    host: String,
    port: u16,
    secure: bool,
    zone: Option<String>,
    status: InstanceStatus,
    metadata: BTreeMap<String, String>,
    weight: u32,
    health_check_url: Option<String>,
    authority: Authority,
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
    /// [`InstanceError::InvalidHost`] if `host` is empty or cannot be part of
    /// a URI authority; [`InstanceError::InvalidPort`] for port 0.
    pub fn new(
        service_id: impl Into<String>,
        host: impl Into<String>,
        port: u16,
    ) -> Result<Self, InstanceError> {
        let host = host.into();
        if port == 0 {
            return Err(InstanceError::new(
                InstanceErrorKind::InvalidPort,
                &format!("{}:0", crate::error::quote(&host)),
                "port 0",
            ));
        }
        let (host, authority) = build_authority(&host, port)?;
        Ok(Self {
            id: format!("{host}:{port}"),
            service_id: service_id.into(),
            host,
            port,
            secure: false,
            zone: None,
            status: InstanceStatus::Up,
            metadata: BTreeMap::new(),
            weight: 1,
            health_check_url: None,
            authority,
        })
    }

    /// Sets the instance id (Eureka's `instanceId`). Default: `host:port`.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
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

    /// Sets the health check URL (Eureka's `healthCheckUrl`). Default: none.
    pub fn with_health_check_url(mut self, url: impl Into<String>) -> Self {
        self.health_check_url = Some(url.into());
        self
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The service id this instance belongs to, as the registry spells it.
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// The host: a DNS name, an IPv4 address, or an IPv6 address without
    /// brackets (a zone id, if any, after a plain `%`).
    pub fn host(&self) -> &str {
        &self.host
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
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The static weight (default 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The health check URL, if the registry gave one.
    pub fn health_check_url(&self) -> Option<&str> {
        self.health_check_url.as_deref()
    }

    /// The request authority: `host:port`, `1.2.3.4:port`, `[::1]:port`, or
    /// `[fe80::1%25eth0]:port` for an IPv6 address with a zone id.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The identity that per-instance state is kept under across refreshes:
    /// instance id, host, port and scheme. A changed port is a new identity.
    pub fn key(&self) -> InstanceKey {
        InstanceKey {
            id: self.id.clone(),
            host: self.host.clone(),
            port: self.port,
            secure: self.secure,
        }
    }
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("id", &self.id)
            .field("service_id", &self.service_id)
            .field("authority", &self.authority.as_str())
            .field("secure", &self.secure)
            .field("zone", &self.zone)
            .field("status", &self.status)
            .field("weight", &self.weight)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme(), self.authority)
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

/// Longest host accepted, in bytes: a DNS name's limit in text form
/// (RFC 1035 §2.3.4; 255 octets on the wire).
const MAX_HOST_LEN: usize = 253;

/// Normalises `host` and builds `host:port` as a URI authority.
fn build_authority(host: &str, port: u16) -> Result<(String, Authority), InstanceError> {
    let invalid =
        |reason: &str| InstanceError::new(InstanceErrorKind::InvalidHost, host, reason.to_owned());
    let trimmed = host.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty host"));
    }
    let bracketed = trimmed.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let bare = bracketed.unwrap_or(trimmed);
    if bare.is_empty() {
        return Err(invalid("empty host"));
    }
    if bare.len() > MAX_HOST_LEN {
        return Err(invalid("longer than 253 bytes (RFC 1035)"));
    }
    if bracketed.is_some() && !bare.contains(':') {
        return Err(invalid("brackets are only for IPv6 addresses"));
    }

    // IPv6, possibly with a zone id.
    if bare.contains(':') {
        let (addr, zone) = match bare.split_once('%') {
            // In URI form (`[fe80::1%25eth0]`) the `%` is itself encoded.
            Some((addr, zone)) if bracketed.is_some() => {
                (addr, Some(zone.strip_prefix("25").unwrap_or(zone)))
            }
            Some((addr, zone)) => (addr, Some(zone)),
            None => (bare, None),
        };
        let ip = Ipv6Addr::from_str(addr).map_err(|_| invalid("not a valid IPv6 address"))?;
        let (stored, text) = match zone {
            Some("") => return Err(invalid("empty IPv6 zone id")),
            Some(zone) => (
                format!("{ip}%{zone}"),
                format!(
                    "[{ip}%25{}]:{port}",
                    utf8_percent_encode(zone, ZONE_ID_KEEP)
                ),
            ),
            None => (ip.to_string(), format!("[{ip}]:{port}")),
        };
        let authority = Authority::from_str(&text).map_err(|e| invalid(&e.to_string()))?;
        return Ok((stored, authority));
    }

    if let Ok(ip) = IpAddr::from_str(bare) {
        let text = format!("{ip}:{port}");
        let authority = Authority::from_str(&text).map_err(|e| invalid(&e.to_string()))?;
        return Ok((ip.to_string(), authority));
    }

    // A DNS name: letters, digits, '-', '.', '_' only (no userinfo, no port).
    if !bare
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(invalid(
            "a host name may hold only letters, digits, '-', '.' and '_'",
        ));
    }
    let text = format!("{bare}:{port}");
    let authority = Authority::from_str(&text).map_err(|e| invalid(&e.to_string()))?;
    Ok((bare.to_owned(), authority))
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

    /// Metric handles, registered on first use.
    pub(crate) fn metrics(&self) -> &crate::metrics::EndpointMetrics {
        self.inner.metrics.get_or_init(|| {
            let instance = &self.inner.instance;
            crate::metrics::EndpointMetrics::register(instance.service_id(), instance.id())
        })
    }

    /// Whether `other` has the same identity (shares its stats).
    pub fn same_identity(&self, other: &Endpoint) -> bool {
        Arc::ptr_eq(&self.inner.stats, &other.inner.stats)
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
mod tests {
    use super::*;

    fn auth(host: &str, port: u16) -> String {
        Instance::new("svc", host, port)
            .map(|i| i.authority().as_str().to_owned())
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn authorities_for_names_and_ipv4() {
        assert_eq!(
            auth("user-service.internal", 8080),
            "user-service.internal:8080"
        );
        assert_eq!(auth("127.0.0.1", 1), "127.0.0.1:1");
        assert_eq!(auth(" host_1 ", 65535), "host_1:65535");
    }

    #[test]
    fn authorities_for_ipv6() {
        assert_eq!(auth("::1", 8080), "[::1]:8080");
        assert_eq!(auth("[::1]", 8080), "[::1]:8080");
        assert_eq!(auth("2001:DB8:0:0:0:0:0:1", 80), "[2001:db8::1]:80");
        let i = Instance::new("svc", "[::1]", 9).unwrap();
        assert_eq!(i.host(), "::1");
    }

    #[test]
    fn ipv6_zone_ids_are_percent_encoded() {
        assert_eq!(auth("fe80::1%eth0", 8080), "[fe80::1%25eth0]:8080");
        assert_eq!(auth("[fe80::1%25eth0]", 8080), "[fe80::1%25eth0]:8080");
        assert_eq!(auth("fe80::1%en 0", 1), "[fe80::1%25en%200]:1");
        assert_eq!(auth("fe80::1%3", 1), "[fe80::1%253]:1");
        assert_eq!(auth("[fe80::1%253]", 1), "[fe80::1%253]:1");
        let i = Instance::new("svc", "fe80::1%eth0", 1).unwrap();
        assert_eq!(i.host(), "fe80::1%eth0");
        assert_eq!(i.to_string(), "http://[fe80::1%25eth0]:1");
    }

    #[test]
    fn bad_hosts_and_ports_are_typed_errors() {
        for bad in [
            "",
            "  ",
            "a b",
            "user@host",
            "host:80",
            "::zz",
            "[::1",
            "fe80::1%",
            "a/b",
            "h\u{e9}",
        ] {
            let err = Instance::new("svc", bad, 80).unwrap_err();
            assert!(err.is_invalid_host(), "{bad:?}: {err}");
        }
        assert!(Instance::new("svc", "h", 0).unwrap_err().is_invalid_port());
    }

    #[test]
    fn scheme_and_key() {
        let a = Instance::new("svc", "h", 80).unwrap();
        assert_eq!(a.scheme(), Scheme::HTTP);
        assert_eq!(a.id(), "h:80");
        let b = a.clone().with_secure(true);
        assert_eq!(b.scheme(), Scheme::HTTPS);
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key(), a.clone().with_zone("z").key());
    }

    #[test]
    fn status_parsing() {
        assert_eq!(InstanceStatus::parse("up"), InstanceStatus::Up);
        assert_eq!(
            InstanceStatus::parse("OUT_OF_SERVICE"),
            InstanceStatus::OutOfService
        );
        assert_eq!(InstanceStatus::parse("WHATEVER"), InstanceStatus::Unknown);
        assert!(!InstanceStatus::parse("").is_up());
    }
}
