//! Active health checks (optional, off by default): an HTTP GET to each
//! instance's health URL every interval (Ribbon's `IPing` /
//! `NFLoadBalancerPingInterval`, Envoy's active health checking).

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::discovery::TaskGuard;
use crate::instance::Endpoint;
use crate::service::ServiceState;

/// Settings of active health checking.
///
/// The URL checked is the instance's registry health URL (Eureka's
/// `healthCheckUrl`) when it has one and [`use_registry_url`] is on, else
/// `http://{instance authority}{path}`. A 2xx answer within the timeout is
/// healthy; anything else (another status, an error, a timeout) is
/// unhealthy, and the instance gets no traffic until a later check passes.
/// Results are kept per instance identity, so they survive refreshes.
/// A registry URL that is not a plain `http://` URL is replaced by the
/// configured path. `https` instances are not checked (this checker has no
/// TLS connector): they keep their passive health only.
/// A registry URL that is not a plain `http://` URL is replaced by the
/// configured path. `https` instances are not checked (this checker has no
/// TLS connector): they keep their passive health only.
///
/// [`use_registry_url`]: ActiveHealthCheck::use_registry_url
///
/// ```
/// use std::time::Duration;
/// use tower_ribbon::health::ActiveHealthCheck;
///
/// let check = ActiveHealthCheck::new("/actuator/health").interval(Duration::from_secs(5));
/// # let _ = check;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveHealthCheck {
    path: String,
    interval: Duration,
    timeout: Duration,
    use_registry_url: bool,
}

impl ActiveHealthCheck {
    /// Checks `path` on each instance (`/actuator/health`, `/health`, ...).
    /// Defaults: every 10 s, 2 s timeout, registry URL preferred.
    pub fn new(path: impl Into<String>) -> Self {
        let mut path = path.into();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        Self {
            path,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            use_registry_url: true,
        }
    }

    /// Time between two rounds of checks. Ribbon key
    /// `NFLoadBalancerPingInterval` (whose own default, used when a
    /// configuration file turns checks on, is 30 s). Values under 10 ms are
    /// raised to 10 ms. Default 10 s.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Bound on one check. Default 2 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether the registry's health URL wins over the configured path.
    /// Default `true`.
    pub fn use_registry_url(mut self, on: bool) -> Self {
        self.use_registry_url = on;
        self
    }

    /// The URL to check, or `None` when the instance cannot be checked
    /// (https: this checker has no TLS connector). A registry URL that is
    /// not a plain `http://` URL falls back to the configured path.
    fn url_of(&self, endpoint: &Endpoint) -> Option<String> {
        if endpoint.instance().is_secure() {
            return None;
        }
        if self.use_registry_url {
            if let Some(url) = endpoint.instance().health_check_url() {
                let usable = url
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
                if usable {
                    return Some(url.to_owned());
                }
            }
        }
        Some(format!("http://{}{}", endpoint.authority(), self.path))
    }
}

async fn check_one(
    client: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
    timeout: Duration,
) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    match tokio::time::timeout(timeout, client.get(uri)).await {
        Ok(Ok(response)) => response.status().is_success(),
        _ => false,
    }
}

/// Starts the checking task of one service.
pub(crate) fn spawn_health_checks(
    state: &Arc<ServiceState>,
    config: ActiveHealthCheck,
    handle: &tokio::runtime::Handle,
) -> TaskGuard {
    let weak: Weak<ServiceState> = Arc::downgrade(state);
    TaskGuard::new(handle.spawn(async move {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        loop {
            tokio::time::sleep(config.interval).await;
            let Some(state) = weak.upgrade() else { return };
            let snapshot = state.snapshot_full();
            let mut checks = tokio::task::JoinSet::new();
            for endpoint in snapshot.endpoints().iter().cloned() {
                let Some(url) = config.url_of(&endpoint) else {
                    continue;
                };
                let (client, timeout) = (client.clone(), config.timeout);
                checks.spawn(async move {
                    let healthy = check_one(&client, &url, timeout).await;
                    (endpoint, healthy)
                });
            }
            let service = state.service_id().to_owned();
            drop(state);
            let mut changed = false;
            while let Some(Ok((endpoint, healthy))) = checks.join_next().await {
                let result = if healthy { "healthy" } else { "unhealthy" };
                metrics::counter!(crate::metrics::HEALTH_CHECKS, "service" => service.clone(), "result" => result)
                    .increment(1);
                if endpoint.stats().set_active_healthy(healthy) {
                    tracing::info!(service = %service, instance = %endpoint, healthy, "active health check changed");
                    changed = true;
                }
            }
            if changed {
                if let Some(state) = weak.upgrade() {
                    state.health().invalidate();
                }
            }
        }
    }))
}
