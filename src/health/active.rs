//! Active health checks (optional, off by default): an HTTP GET to each
//! instance every interval (Envoy's active health checking; Ribbon's
//! `IPing` / `NFLoadBalancerPingInterval`; Spring Cloud LoadBalancer's
//! `HealthCheckServiceInstanceListSupplier`).
//!
//! - **Verdict** (Envoy): a 2xx answer within `timeout` passes; anything
//!   else (another status, an error, a timeout) fails. A healthy instance
//!   turns unhealthy after `unhealthy_threshold` failures **in a row**, an
//!   unhealthy one healthy after `healthy_threshold` passes in a row, so a
//!   probe that fails every other time changes nothing. Instances of the
//!   list at the first round start healthy; an instance that joins later
//!   is held unhealthy until its first probe, sent as soon as the list
//!   holding it is published, and that probe alone decides (Envoy marks
//!   an added host `FAILED_ACTIVE_HC` / `PENDING_ACTIVE_HC` and checks it
//!   at once; Spring Cloud LoadBalancer lists an instance only once a
//!   check passed). An instance that cannot be probed (see **Target**
//!   and **https**) does not wait. Verdicts are kept per instance
//!   identity (they survive refreshes).
//! - **Schedule**: the first round after `initial_delay`, then one round
//!   `interval` after the previous round ended; every wait is lengthened
//!   by a uniform random share of `interval_jitter`, so many clients do not
//!   probe in step. A round keeps at most
//!   [`max_concurrent_probes`](ActiveHealthCheck::max_concurrent_probes)
//!   probes in flight (per service), so a long list costs that many
//!   sockets at once, not one per instance (with the default clients; see
//!   `https_client`). The first probes of instances
//!   that join run beside a scheduled round (at most as many again), so a
//!   round held by hung instances (`ceil(n / max_concurrent_probes)`
//!   timeouts for `n` of them) does not hold a new instance unhealthy.
//! - **Target**: the instance's own host, never another one unless
//!   `allow_other_hosts` is set. In order:
//!   1. the registry's health URL (Eureka `healthCheckUrl`, when
//!      `use_registry_url`), if it is a plain `http://` URL on the
//!      instance's host and on its traffic port or its management port;
//!   2. Spring Boot's management port (metadata `management.port`) with
//!      `management.context-path` (if set) before `path`;
//!   3. `http://{instance authority}{path}`.
//!
//!   A value that is malformed or points elsewhere is ignored with one
//!   warning per instance. "Elsewhere" compares names literally: a
//!   `healthCheckUrl` naming the machine by its host name while the
//!   instance is registered by IP (Spring's `preferIpAddress`) is ignored
//!   too, and the probe goes to the instance's address with `path` (and the
//!   management port, if any).
//! - **https**: a secure instance is probed over `https` (a registry
//!   `healthCheckUrl` may be `http` or `https`) through the crate's rustls
//!   client (feature `tls`): [`ActiveHealthCheck::https_client`] sets it,
//!   with custom roots or a client certificate; by default webpki roots.
//!   A failed handshake (an unknown root, a wrong name) fails the probe.
//!   Without the `tls` feature `https` instances are not probed (one
//!   warning per instance) and keep their passive health only.

use std::sync::Arc;
use std::time::Duration;

use crate::discovery::Snapshot;
use crate::error::{quote, redact};
use crate::instance::Instance;
use crate::stats::{InvalidConfig, check};

cfg_feature! {
    #![feature = "tls"]
    mod https;
}
mod probe;
mod rounds;
pub(crate) use rounds::spawn_health_checks;

/// Metadata key of Spring Boot's management (actuator) port.
pub const MANAGEMENT_PORT: &str = "management.port";
/// Metadata key of Spring Boot's management context path.
pub const MANAGEMENT_CONTEXT_PATH: &str = "management.context-path";

/// Settings of active health checking.
///
/// Set the public fields on [`ActiveHealthCheck::default`] or
/// [`ActiveHealthCheck::new`]; the builder calls
/// [`ActiveHealthCheck::validate`] once.
///
/// ```
/// use std::time::Duration;
/// use tower_ribbon::health::ActiveHealthCheck;
///
/// let mut check = ActiveHealthCheck::new("/actuator/health");
/// check.interval = Duration::from_secs(5);
/// check.unhealthy_threshold = 2;
/// assert!(check.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActiveHealthCheck {
    /// Path probed on each instance; starts with `/`. Default
    /// `/actuator/health` (Spring Boot's, as Spring Cloud LoadBalancer).
    pub path: String,
    /// Time from the end of one round to the next; at least 10 ms. Ribbon
    /// key `NFLoadBalancerPingInterval` (whose own default, used when a
    /// configuration file turns checks on, is 30 s). Default 10 s.
    pub interval: Duration,
    /// Each wait is lengthened by a uniform random time in
    /// `[0, interval_jitter)`. Envoy `interval_jitter`. Default 1 s.
    pub interval_jitter: Duration,
    /// Wait before the first round (plus jitter). Spring Cloud
    /// LoadBalancer `initial-delay`. Default 0.
    pub initial_delay: Duration,
    /// Bound on one probe (connect and response headers); at least 1 ms.
    /// Default 2 s.
    pub timeout: Duration,
    /// Passed probes in a row that make an unhealthy instance healthy; at
    /// least 1. Envoy `healthy_threshold`. Default 2.
    pub healthy_threshold: u32,
    /// Failed probes in a row that make a healthy instance unhealthy; at
    /// least 1. Envoy `unhealthy_threshold`. Default 3.
    pub unhealthy_threshold: u32,
    /// Whether the registry's health URL (Eureka `healthCheckUrl`) is used
    /// when it points at the instance's own host. Default `true`.
    pub use_registry_url: bool,
    /// Whether a registry health URL may point at another host or port
    /// (registry data then decides where probes go). Default `false`.
    pub allow_other_hosts: bool,
    /// The most probes of one round in flight at once (tasks and sockets),
    /// at least one. A round over more instances starts each further probe
    /// as one ends, so a list of n instances costs at most this many
    /// sockets at once instead of n, and a round takes at least
    /// `ceil(n / max_concurrent_probes)` probe times (Envoy spreads its
    /// checks too, each host on its own timer). The first probes of
    /// instances that join during a round have a budget of their own, so a
    /// service has at most twice this many in flight. Probe connections
    /// are not kept idle (each probe connects and closes; hyper-util's pool
    /// kept one per probed instance for 90 s, so a round every 10 s held n
    /// sockets for good), unless a client given to
    /// [`https_client`](Self::https_client) keeps them (build it with
    /// `pool_max_idle_per_host(0)`). Default 64.
    pub max_concurrent_probes: usize,
    /// The client of `https` probes, set by `https_client` (feature `tls`).
    #[cfg(feature = "tls")]
    pub(crate) https: Option<https::TlsProbe>,
}

/// The jitter of a check built from configuration keys that set only the
/// interval: a tenth of it, at most the default 1 s, so a short interval
/// (`health-check.interval=50ms`) is not lengthened twentyfold.
#[cfg(feature = "config")]
pub(crate) fn jitter_for(interval: Duration) -> Duration {
    (interval / 10).min(Duration::from_secs(1))
}

impl Default for ActiveHealthCheck {
    fn default() -> Self {
        Self {
            path: "/actuator/health".to_owned(),
            interval: Duration::from_secs(10),
            interval_jitter: Duration::from_secs(1),
            initial_delay: Duration::ZERO,
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            use_registry_url: true,
            allow_other_hosts: false,
            max_concurrent_probes: 64,
            #[cfg(feature = "tls")]
            https: None,
        }
    }
}

/// Where one instance is probed, and what was ignored on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) url: Option<String>,
    pub(crate) warning: Option<String>,
}

impl ActiveHealthCheck {
    /// The defaults, probing `path` (`/` is prepended if missing).
    pub fn new(path: impl Into<String>) -> Self {
        let mut path = path.into();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        Self {
            path,
            ..Self::default()
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`InvalidConfig`] naming the first field out of range (see each
    /// field's doc).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        check(
            self.path.starts_with('/'),
            "ActiveHealthCheck::path",
            "must start with /",
        )?;
        check(
            self.path.parse::<http::uri::PathAndQuery>().is_ok(),
            "ActiveHealthCheck::path",
            "must be a valid URI path",
        )?;
        check(
            self.interval >= Duration::from_millis(10),
            "ActiveHealthCheck::interval",
            "must be at least 10 ms",
        )?;
        check(
            self.timeout >= Duration::from_millis(1),
            "ActiveHealthCheck::timeout",
            "must be at least 1 ms",
        )?;
        check(
            self.healthy_threshold >= 1,
            "ActiveHealthCheck::healthy_threshold",
            "must be at least 1",
        )?;
        check(
            self.unhealthy_threshold >= 1,
            "ActiveHealthCheck::unhealthy_threshold",
            "must be at least 1",
        )?;
        check(
            self.max_concurrent_probes >= 1,
            "ActiveHealthCheck::max_concurrent_probes",
            "must be at least 1",
        )
    }

    /// Where `instance` is probed (see the module doc).
    pub(crate) fn target_of(&self, instance: &Instance) -> Target {
        if instance.is_secure() && !cfg!(feature = "tls") {
            return Target {
                url: None,
                warning: Some(
                    "https instance not probed: active health checks over https need the `tls` feature"
                        .to_owned(),
                ),
            };
        }
        let scheme = if instance.is_secure() { "https" } else { "http" };
        let mut warnings = Vec::new();
        let management = management_port(instance, &mut warnings);
        if self.use_registry_url {
            if let Some(raw) = instance.health_check_url() {
                match self.registry_url(instance, raw, management) {
                    Ok(url) => {
                        let warning = (!warnings.is_empty()).then(|| warnings.join("; "));
                        return Target {
                            url: Some(url),
                            warning,
                        };
                    }
                    Err(why) => warnings.push(format!("healthCheckUrl \"{}\" ignored: {why}", quote(&redact(raw)))),
                }
            }
        }
        let (port_authority, context) = match management {
            Some(port) => (
                with_port(instance, port),
                context_path(instance, &mut warnings),
            ),
            None => (instance.authority().as_str().to_owned(), String::new()),
        };
        let warning = (!warnings.is_empty()).then(|| warnings.join("; "));
        let url = Some(format!("{scheme}://{port_authority}{context}{}", self.path));
        Target { url, warning }
    }

    fn registry_url(
        &self,
        instance: &Instance,
        raw: &str,
        management: Option<u16>,
    ) -> Result<String, &'static str> {
        let uri = raw.parse::<http::Uri>().map_err(|_| "not a URI")?;
        let host = uri.host().ok_or("no host")?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") if cfg!(feature = "tls") => {}
            _ => return Err("not an http URL (https needs the `tls` feature)"),
        }
        if self.allow_other_hosts {
            return Ok(raw.to_owned());
        }
        let bare = |h: &str| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        };
        if bare(host) != bare(instance.host()) {
            return Err("another host");
        }
        let default_port = if uri.scheme_str() == Some("https") { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        if port != instance.port() && Some(port) != management {
            return Err("another port");
        }
        Ok(raw.to_owned())
    }
}

/// The `management.port` metadata, when present and valid.
fn management_port(instance: &Instance, warnings: &mut Vec<String>) -> Option<u16> {
    let raw = instance.metadata().get(MANAGEMENT_PORT)?;
    match raw.trim().parse::<u16>() {
        Ok(port) if port != 0 => Some(port),
        _ => {
            warnings.push(format!("{MANAGEMENT_PORT} \"{}\" ignored: not a port", quote(raw)));
            None
        }
    }
}

/// The `management.context-path` metadata as a path prefix (`/x`, no
/// trailing slash), or empty when absent or malformed.
fn context_path(instance: &Instance, warnings: &mut Vec<String>) -> String {
    let Some(raw) = instance.metadata().get(MANAGEMENT_CONTEXT_PATH) else {
        return String::new();
    };
    let trimmed = raw.trim().trim_matches('/');
    let valid = trimmed
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/%".contains(&b));
    if !valid {
        warnings.push(format!(
            "{MANAGEMENT_CONTEXT_PATH} \"{}\" ignored: not a path",
            quote(raw)
        ));
        return String::new();
    }
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

/// The instance's authority with another port.
fn with_port(instance: &Instance, port: u16) -> String {
    let authority = instance.authority().as_str();
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    format!("{host}:{port}")
}

/// `wait` from now, or the clock's far end (30 years, tokio's own bound
/// for a sleep) for a wait past it: `Instant + Duration` panics on
/// overflow, and an interval of `Duration::MAX` (which `validate` accepts)
/// killed the checking task after its first round.
fn after(wait: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    let now = tokio::time::Instant::now();
    now.checked_add(wait.min(FAR)).unwrap_or(now)
}

/// `base` plus a uniform random share of `jitter`, saturating (a share
/// of a jitter near `Duration::MAX` can round past it, where `mul_f64`
/// panics).
fn jittered(base: Duration, jitter: Duration, rng: &crate::rng::AtomicRng) -> Duration {
    let share = Duration::try_from_secs_f64(jitter.as_secs_f64() * rng.unit_f64())
        .unwrap_or(Duration::MAX);
    base.saturating_add(share)
}

/// What the checking task of one service reads and reports, as callbacks,
/// so health knows nothing of the service layer above it.
pub(crate) struct CheckHooks {
    /// The service id, for logs and metrics.
    pub(crate) service: String,
    /// The current list, or `None` once the service is gone (the task
    /// then ends).
    pub(crate) snapshot: Box<dyn Fn() -> Option<Arc<Snapshot>> + Send + Sync>,
    /// A verdict changed: health must be recounted.
    pub(crate) changed: Box<dyn Fn() + Send + Sync>,
    /// A passing probe ends the instance's ejection
    /// ([`OutlierDetection::successful_active_health_check_uneject_host`](crate::health::OutlierDetection::successful_active_health_check_uneject_host)).
    pub(crate) uneject_on_pass: bool,
    /// Set when the first round begins: endpoints new from then on wait
    /// unhealthy for their first probe.
    pub(crate) wait_for_probe: Arc<std::sync::atomic::AtomicBool>,
    /// Woken when the service publishes a new list.
    pub(crate) published: Arc<tokio::sync::Notify>,
}

#[cfg(test)]
mod tests;
