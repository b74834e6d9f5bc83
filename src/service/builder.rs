//! [`Builder`]: configures a [`LoadBalancer`] or [`LoadBalancerLayer`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::timeouts::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT};
use super::{FailureStatuses, HashKey, LoadBalancer, LoadBalancerLayer, Shared};
use crate::discovery::{InstanceSource, RefreshConfig};
use crate::error::BuildError;
#[cfg(feature = "hyper-util")]
use crate::health::ActiveHealthCheck;
use crate::health::OutlierDetection;
use crate::retry::RetryPolicy;
use crate::rule::{RoundRobin, Rule};

mod getters;

pub(super) type MakeRule = Arc<dyn Fn() -> Arc<dyn Rule> + Send + Sync>;

/// Configures a [`LoadBalancer`] or [`LoadBalancerLayer`].
///
/// Required: a [`source`](Builder::source). Defaults: rule [`RoundRobin`],
/// refresh every 30 s ([`RefreshConfig::default`]), no services declared and
/// on-demand discovery off (so every service must be declared with
/// [`service`](Builder::service)), Ribbon's timeouts (2 s connect, 5 s per
/// try; see [`timeouts`](super::timeouts)).
#[must_use]
pub struct Builder {
    source: Option<Arc<dyn InstanceSource>>,
    services: Vec<String>,
    make_rule: MakeRule,
    /// The rule before a configuration file's wrapper keys wrapped it.
    rule_before_config: Option<MakeRule>,
    refresh: RefreshConfig,
    discover_on_demand: bool,
    max_services: usize,
    on_demand_idle: std::time::Duration,
    per_instance_metrics: bool,
    failure_statuses: FailureStatuses,
    hash_key: Option<HashKey>,
    retry: RetryPolicy,
    outliers: OutlierDetection,
    #[cfg(feature = "hyper-util")]
    active_health: Option<ActiveHealthCheck>,
    stats: crate::stats::StatsConfig,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    instance_cookies: super::cookie::InstanceCookies,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            source: None,
            services: Vec::new(),
            make_rule: Arc::new(|| Arc::new(RoundRobin::new())),
            rule_before_config: None,
            refresh: RefreshConfig::default(),
            discover_on_demand: false,
            max_services: 1024,
            on_demand_idle: Duration::from_secs(600),
            per_instance_metrics: false,
            failure_statuses: FailureStatuses::default(),
            hash_key: None,
            retry: RetryPolicy::default(),
            outliers: OutlierDetection::default(),
            #[cfg(feature = "hyper-util")]
            active_health: None,
            stats: crate::stats::StatsConfig::default(),
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            read_timeout: Some(DEFAULT_READ_TIMEOUT),
            instance_cookies: super::cookie::InstanceCookies::default(),
        }
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("services", &self.services)
            .field("refresh", &self.refresh)
            .field("discover_on_demand", &self.discover_on_demand)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Where instance lists come from (Eureka, a static list, your own).
    pub fn source(mut self, source: impl InstanceSource) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Declares a service id (as in request URIs: `user-service`); its
    /// refresh starts when the balancer is built.
    pub fn service(mut self, service_id: impl Into<String>) -> Self {
        self.services.push(service_id.into());
        self
    }

    /// Declares several service ids.
    pub fn services<I, T>(mut self, service_ids: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.services
            .extend(service_ids.into_iter().map(Into::into));
        self
    }

    /// How to make the rule of each service: called once per service, so
    /// each service has its own rule state. Ribbon's
    /// `NFLoadBalancerRuleClassName`; default [`RoundRobin::new`].
    pub fn rule<R, F>(mut self, make: F) -> Self
    where
        R: Rule,
        F: Fn() -> R + Send + Sync + 'static,
    {
        self.make_rule = Arc::new(move || Arc::new(make()) as Arc<dyn Rule>);
        self.rule_before_config = None;
        self
    }

    /// How instance lists are refreshed; default [`RefreshConfig::default`].
    pub fn refresh(mut self, config: RefreshConfig) -> Self {
        self.refresh = config;
        self
    }

    /// Whether a request to a service id that was not declared starts
    /// discovery for it (and waits for its first fetch) instead of failing
    /// with [`Error::is_unknown_service`](crate::Error::is_unknown_service). Default is `false`.
    pub fn discover_on_demand(mut self, on: bool) -> Self {
        self.discover_on_demand = on;
        self
    }

    /// Most services [`discover_on_demand`](Builder::discover_on_demand)
    /// may hold at once (declared services do not count and are never
    /// dropped). The cap is checked under the insert lock, so racing
    /// requests never exceed it. When it is reached, on-demand services idle
    /// for [`on_demand_idle`](Builder::on_demand_idle) are dropped to make
    /// room (so made-up host names hold slots only that long); if none can
    /// be, the request fails with an error for which
    /// [`Error::is_unknown_service`](crate::Error::is_unknown_service) holds. Default is 1024;
    /// at most 65 536 (checked at build): each new on-demand service copies
    /// the service map, a reference count per known service (0.8 ms at 8 192, debug).
    pub fn max_services(mut self, max: usize) -> Self {
        self.max_services = max;
        self
    }

    /// How long an on-demand service may go without requests before it is
    /// dropped (its refresh stopped, its slot freed); one with a request in
    /// flight (a response body still open: a stream, a WebSocket) is kept
    /// until it ends. Declared services are never dropped. Must not be
    /// zero. Default is 10 minutes.
    pub fn on_demand_idle(mut self, idle: std::time::Duration) -> Self {
        self.on_demand_idle = idle;
        self
    }

    /// Whether per-attempt metrics carry an `instance` label (see
    /// [`crate::metrics`]). A recorder keeps every series it has seen, so
    /// turn it on only with an exporter that drops idle series, or with a
    /// stable set of instances. Default is `false` (series per service).
    pub fn per_instance_metrics(mut self, on: bool) -> Self {
        self.per_instance_metrics = on;
        self
    }

    /// Where the key of key-routing rules
    /// ([`ConsistentHash`](crate::rule::ConsistentHash)) comes from:
    /// [`HashKey::header`] or [`HashKey::from_fn`]. Without one, or when the
    /// request has no key, such rules fall back to round robin. Default:
    /// none.
    pub fn hash_key(mut self, key: HashKey) -> Self {
        self.hash_key = Some(key);
        self
    }

    /// When requests are retried on the same or other instances. Default:
    /// [`RetryPolicy::default`] (one retry elsewhere, budget 20 % + 10/s).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Outlier ejection and the panic threshold. Default:
    /// [`OutlierDetection::default`] (5 consecutive 5xx or gateway errors
    /// eject for 30 s × times ejected; 50 % at most; panic below 50 %).
    pub fn outlier_detection(mut self, detection: OutlierDetection) -> Self {
        self.outliers = detection;
        self
    }

    /// Tuning of per-instance statistics and the circuit breaker
    /// ([`StatsConfig`](crate::stats::StatsConfig): Ribbon's
    /// `connectionFailureCountThreshold`, `circuitTripTimeoutFactorSeconds`,
    /// `circuitTripMaxTimeoutSeconds`, and the EWMA decays). Default
    /// [`StatsConfig::default`](crate::stats::StatsConfig::default).
    pub fn stats(mut self, config: crate::stats::StatsConfig) -> Self {
        self.stats = config;
        self
    }

    /// Active health checks of every instance. Default: off.
    #[cfg(feature = "hyper-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "hyper-util")))]
    pub fn active_health_check(mut self, check: ActiveHealthCheck) -> Self {
        self.active_health = Some(check);
        self
    }

    /// Which response statuses count as failed attempts in the instance
    /// stats (latency-aware rules price them as slow). Default: 5xx and 429.
    pub fn failure_statuses(mut self, statuses: FailureStatuses) -> Self {
        self.failure_statuses = statuses;
        self
    }

    /// The connect timeout for the HTTP client the balancer sends through
    /// (Ribbon key `ConnectTimeout`; `None`: the operating system's).
    /// Default [`DEFAULT_CONNECT_TIMEOUT`] (2 s, Ribbon's).
    ///
    /// The balancer cannot change a client it is given: this value is set
    /// on the connector of the client [`build_http`](Builder::build_http)
    /// makes, and named in connect-timeout errors. For your own client, set
    /// it there from [`get_connect_timeout`](Builder::get_connect_timeout)
    /// (`HttpConnector::set_connect_timeout`,
    /// `tls::HttpsClientBuilder::connect_timeout`,
    /// `reqwest::ClientBuilder::connect_timeout`).
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The per-try (read) timeout: each attempt, from waiting for the inner
    /// service to be ready until its response headers, is cut off after it
    /// (Ribbon's `ReadTimeout`, per attempt). `None`: no per-try bound.
    /// [`RetryPolicy::per_try_timeout`], when set, wins. Default
    /// [`DEFAULT_READ_TIMEOUT`] (5 s, Ribbon's); read back with
    /// [`get_read_timeout`](Self::get_read_timeout).
    ///
    /// For a streamed body that reports its upload
    /// ([`ReplayBody::streaming`](crate::retry::ReplayBody::streaming), the
    /// gRPC bodies; see [`Upload`](crate::retry::Upload)) it starts when the
    /// upload ends, as Envoy's timeouts start once the request is sent, and
    /// bounds the time since its last frame while it lasts; for other
    /// bodies it also runs while the body is sent.
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Adds the cookie `name=<chosen instance id>` to every request this
    /// balancer sends, for every service (Spring Cloud LoadBalancer's
    /// `sticky-session.add-service-instance-cookie: true` with
    /// `instance-id-cookie-name`, default name `sc-lb-instance-id`; SCLB's
    /// `LoadBalancerServiceInstanceCookieTransformer`). The instance can
    /// echo it back (`Set-Cookie`) so that later requests carrying it stick
    /// to it ([`StickySession`](crate::rule::StickySession)). `None` (the
    /// default): no cookie, and the request path does no work for it.
    ///
    /// Each attempt sets the pair of the instance it goes to: an existing
    /// pair of that name is replaced (a retry to another instance, or a
    /// caller's sticky cookie naming an instance that was not chosen),
    /// other cookies are kept and all are sent as one `Cookie` field. An
    /// instance id that is empty or holds a byte outside RFC 6265's
    /// `cookie-octet` gets no cookie (the first such refusal of a service
    /// logs a warning); see [`instance_cookie`](crate::rule::sticky_session::instance_cookie).
    ///
    /// # Errors
    /// [`Builder::layer`] fails with [`BuildError::Invalid`] when `name` is
    /// not an RFC 6265 cookie name (an HTTP token).
    pub fn instance_cookie(mut self, name: Option<&str>) -> Self {
        self.instance_cookies.default = name.map(Arc::from);
        self
    }

    /// As [`Builder::instance_cookie`] for the one service `service_id`
    /// (matched ignoring ASCII case), overriding the balancer-wide setting:
    /// `None` turns the cookie off for that service. The last call for a
    /// service wins.
    ///
    /// # Errors
    /// As [`Builder::instance_cookie`].
    pub fn service_instance_cookie(
        mut self,
        service_id: impl Into<String>,
        name: Option<&str>,
    ) -> Self {
        self.instance_cookies
            .set(service_id.into(), name.map(Arc::from));
        self
    }

    /// Builds a [`LoadBalancer`] around hyper-util's client
    /// ([`http_client`](super::http_client)) with this builder's connect
    /// timeout on its connector (cloned per request: [`InnerService`](super::InnerService)).
    ///
    /// # Errors
    /// As [`Builder::layer`].
    #[cfg(feature = "hyper-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "hyper-util")))]
    pub fn build_http<B>(self) -> Result<LoadBalancer<super::HttpClient<B>>, BuildError>
    where
        B: http_body::Body + Send,
        B::Data: Send,
    {
        let client = super::http_client(self.connect_timeout);
        self.build(client)
    }

    /// Builds the layer and starts one refresh task per declared service.
    ///
    /// Every setting that takes a number or a duration is checked here;
    /// [`BuildError::Invalid`] names the first one out of bounds and the
    /// bound ([`BuildError::key`] is the setting):
    ///
    /// | setting | bound |
    /// |---|---|
    /// | `Builder::max_services` | `1..=65_536` |
    /// | `Builder::on_demand_idle` | more than zero |
    /// | `Builder::read_timeout`, `Builder::connect_timeout` | more than zero, or `None` |
    /// | `refresh.interval`, `.jitter`, `.fetch_timeout` | at least 1 ms; `0.0..=0.5`; more than zero |
    /// | `RetryPolicy::per_try_timeout`, `::deadline` | more than zero |
    /// | `RetryPolicy::backoff` | cap at least base |
    /// | `RetryPolicy::retryable_statuses` | `100..=599` |
    /// | retry budget `ttl`, `ratio`, `min_per_sec` | 1 s..=60 s; `0.0..=1000.0`; below `i32::MAX` |
    /// | `OutlierDetection::*` | see [`OutlierDetection::validate`] |
    /// | `StatsConfig::*` | see [`StatsConfig::validate`](crate::stats::StatsConfig::validate) |
    /// | `ActiveHealthCheck::*` | see `ActiveHealthCheck::validate` |
    ///
    /// `max_same` and `max_next` take any count: the deadline and the
    /// retry budget bound what they cost.
    ///
    /// # Errors
    /// [`BuildError::NoSource`] without a source; [`BuildError::NoRuntime`]
    /// outside a Tokio runtime; [`BuildError::Invalid`] for a setting out of
    /// bounds (above), an empty service id, one over 253 bytes, one with
    /// control characters or one that is no URI host (`user-service:8080`,
    /// `http://user-service`: requests are routed by their URI's host, so
    /// none could reach it).
    pub fn layer(self) -> Result<LoadBalancerLayer, BuildError> {
        let source = self.source.ok_or(BuildError::NoSource)?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        self.refresh.validate()?;
        validate_numbers(&self.retry, self.on_demand_idle, self.max_services)?;
        self.retry.build()?;
        if self.read_timeout == Some(Duration::ZERO) {
            return Err(BuildError::invalid(
                "Builder::read_timeout",
                "must be more than zero (None: no per-try bound)",
            ));
        }
        if self.connect_timeout == Some(Duration::ZERO) {
            return Err(BuildError::invalid(
                "Builder::connect_timeout",
                "must be more than zero (None: the operating system's)",
            ));
        }
        self.instance_cookies.validate()?;
        let invalid = |e: crate::stats::InvalidConfig| BuildError::invalid(e.field(), e.reason());
        self.outliers.validate().map_err(invalid)?;
        self.stats.validate().map_err(invalid)?;
        #[cfg(feature = "hyper-util")]
        if let Some(active) = &self.active_health {
            active.validate().map_err(invalid)?;
        }
        for service in &self.services {
            validate_service_id(service)?;
        }
        let shared = Arc::new_cyclic(|me| Shared {
            services: ArcSwap::from_pointee(super::services::Services::default()),
            tasks: Mutex::new(Vec::new()),
            me: me.clone(),
            epoch: tokio::time::Instant::now(),
            on_demand_idle: self.on_demand_idle,
            source,
            make_rule: self.make_rule,
            refresh: self.refresh,
            discover_on_demand: self.discover_on_demand,
            max_services: self.max_services,
            on_demand_count: std::sync::atomic::AtomicUsize::new(0),
            request: Arc::new(super::RequestConfig {
                per_instance_metrics: self.per_instance_metrics,
                failure_statuses: self.failure_statuses,
                hash_key: self.hash_key,
                per_try: self.retry.get_per_try_timeout().or(self.read_timeout),
                connect_timeout: self.connect_timeout,
                retry: self.retry,
                outliers: self.outliers,
                rng: crate::rng::AtomicRng::from_entropy(),
            }),
            #[cfg(feature = "hyper-util")]
            active_health: self.active_health,
            stats: self.stats,
            instance_cookies: self.instance_cookies,
            handle,
            unknown_logged: super::log_limit::LogLimit::default(),
        });
        for service in &self.services {
            shared.add_service(service.trim(), false);
        }
        Ok(LoadBalancerLayer::new(shared))
    }

    /// Builds a [`LoadBalancer`] around `inner`. See [`Builder::layer`].
    ///
    /// # Errors
    /// As [`Builder::layer`].
    pub fn build<S>(self, inner: S) -> Result<LoadBalancer<S>, BuildError> {
        Ok(LoadBalancer::from_shared(
            inner,
            self.layer()?.shared().clone(),
        ))
    }
}

/// A declared service id's checks (see [`Builder::layer`]).
fn validate_service_id(service: &str) -> Result<(), BuildError> {
    if service.trim().is_empty() {
        return Err(BuildError::invalid("service", "empty service id"));
    }
    if service.trim().len() > MAX_SERVICE_ID {
        // Requests are routed by their host, so a longer id is never
        // reached; it would only fill every span, log and label.
        return Err(BuildError::invalid(
            "service",
            "a service id is at most 253 bytes (a host name's bound)",
        ));
    }
    if service.chars().any(char::is_control) {
        // Service ids end up in log fields and metric labels.
        return Err(BuildError::invalid(
            "service",
            "control characters in a service id",
        ));
    }
    if !is_uri_host(service.trim()) {
        // Requests are routed by their URI's host: a port, a scheme or
        // userinfo in the id is never part of it.
        return Err(BuildError::invalid(
            "service",
            format!(
                "`{}` is not a URI host, so no request can name it (requests are \
                 routed by their URI's host: `http://user-service/...`)",
                crate::error::quote(service.trim())
            ),
        ));
    }
    Ok(())
}

/// Whether a request URI can name `id` as its host (`http://{id}/...`):
/// the whole of `id` is an authority's host, with no port or userinfo.
fn is_uri_host(id: &str) -> bool {
    http::uri::Authority::try_from(id)
        .is_ok_and(|a| a.port().is_none() && a.host().eq_ignore_ascii_case(id))
}

/// The longest service id, in bytes: a DNS name's bound, as on-demand
/// discovery's.
const MAX_SERVICE_ID: usize = 253;

/// The most services a balancer may hold with on-demand discovery (each
/// new one copies the service map; see `Builder::max_services`).
const MAX_SERVICES: usize = 65_536;

/// The bounds of the builder's own numbers and of the retry timeouts,
/// named with the bound they miss (see [`Builder::layer`]).
fn validate_numbers(
    retry: &RetryPolicy,
    on_demand_idle: std::time::Duration,
    max_services: usize,
) -> Result<(), BuildError> {
    if !(1..=MAX_SERVICES).contains(&max_services) {
        return Err(BuildError::invalid(
            "Builder::max_services",
            format!("{max_services} is outside 1..=65536"),
        ));
    }
    let positive = [
        ("Builder::on_demand_idle", Some(on_demand_idle)),
        ("RetryPolicy::per_try_timeout", retry.get_per_try_timeout()),
        ("RetryPolicy::deadline", retry.get_deadline()),
    ];
    match positive
        .into_iter()
        .find(|(_, d)| *d == Some(std::time::Duration::ZERO))
    {
        Some((key, _)) => Err(BuildError::invalid(key, "must be more than zero")),
        None => Ok(()),
    }
}
