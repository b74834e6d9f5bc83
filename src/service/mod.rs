//! The tower middleware: [`LoadBalancer`], [`LoadBalancerLayer`] and the
//! [`Builder`] that configures both (Spring's `@LoadBalanced` client,
//! Ribbon's `LoadBalancerClient`).
//!
//! A request to `http://user-service/api/x` goes through five steps:
//! 1. the URI host (`user-service`, case-insensitive) names the service;
//! 2. the service's current [`Picker`] (built by its [`Rule`] for the
//!    current [`Snapshot`]) is loaded (one atomic load, no lock);
//! 3. the picker chooses an endpoint;
//! 4. scheme and authority are rewritten to the endpoint
//!    (`http://127.0.0.1:8081/api/x`); path and query are kept;
//! 5. the inner service (hyper-util's client, [`ReqwestService`], ...) sends
//!    it, and the endpoint's stats record the attempt.
//!
//! `LoadBalancer` is always ready: it routes each request to a different
//! instance, so readiness of the inner service is awaited per request on a
//! clone of it (the inner service must be `Clone`, as HTTP clients are).
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::ServiceExt;
//! use tower_ribbon::discovery::StaticSource;
//! use tower_ribbon::LoadBalancer;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let source = StaticSource::new().with_list("user-service", "127.0.0.1:8081,127.0.0.1:8082")?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
//! let lb = LoadBalancer::builder().source(source).service("user-service").build(client)?;
//!
//! let request = http::Request::get("http://user-service/whoami").body(Empty::new())?;
//! let response = lb.oneshot(request).await?;
//! println!("{}", response.status());
//! # Ok(()) }
//! ```
//!
//! [`Rule`]: crate::rule::Rule
//! [`Picker`]: crate::rule::Picker
//! [`Snapshot`]: crate::snapshot::Snapshot

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::Request;
use tower::Service;

use crate::discovery::spawn_refresher;
use crate::discovery::{InstanceSource, RefreshConfig, RefreshStatus};
use crate::error::{BoxError, BuildError, Error};
use crate::health::{ActiveHealthCheck, OutlierDetection};
use crate::retry::{RetryPolicy, TryCloneBody};
use crate::rule::{RoundRobin, Rule};
use crate::snapshot::Snapshot;
use crate::stats::StatsConfig;

mod classify;
mod future;
mod hash_key;
mod layer;
#[cfg(feature = "reqwest")]
mod reqwest_adapter;
mod send;
pub(crate) mod state;

pub use classify::{FailureStatuses, ResponseStatus, classify_error};
pub use future::ResponseFuture;
pub use hash_key::HashKey;
pub use layer::LoadBalancerLayer;
#[cfg(feature = "reqwest")]
pub use reqwest_adapter::ReqwestService;
pub(crate) use state::ServiceState;

type MakeRule = Arc<dyn Fn() -> Arc<dyn Rule> + Send + Sync>;

/// Configures a [`LoadBalancer`] or [`LoadBalancerLayer`].
///
/// Required: a [`source`](Builder::source). Defaults: rule [`RoundRobin`],
/// refresh every 30 s ([`RefreshConfig::default`]), no services declared and
/// on-demand discovery off (so every service must be declared with
/// [`service`](Builder::service)).
#[must_use]
pub struct Builder {
    source: Option<Arc<dyn InstanceSource>>,
    services: Vec<String>,
    make_rule: MakeRule,
    refresh: RefreshConfig,
    discover_on_demand: bool,
    max_services: usize,
    failure_statuses: FailureStatuses,
    hash_key: Option<HashKey>,
    retry: RetryPolicy,
    outliers: OutlierDetection,
    active_health: Option<ActiveHealthCheck>,
    stats: StatsConfig,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            source: None,
            services: Vec::new(),
            make_rule: Arc::new(|| Arc::new(RoundRobin::new())),
            refresh: RefreshConfig::default(),
            discover_on_demand: false,
            max_services: 1024,
            failure_statuses: FailureStatuses::default(),
            hash_key: None,
            retry: RetryPolicy::default(),
            outliers: OutlierDetection::default(),
            active_health: None,
            stats: StatsConfig::default(),
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

    /// Declares a service id (as written in request URIs, e.g.
    /// `user-service`). Its refresh starts when the balancer is built.
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
    /// each service has its own rule state. Ribbon key
    /// `NFLoadBalancerRuleClassName`. Default is [`RoundRobin::new`].
    pub fn rule<R, F>(mut self, make: F) -> Self
    where
        R: Rule,
        F: Fn() -> R + Send + Sync + 'static,
    {
        self.make_rule = Arc::new(move || Arc::new(make()) as Arc<dyn Rule>);
        self
    }

    /// How instance lists are refreshed. Default is
    /// [`RefreshConfig::default`] (every 30 s, ±10 % jitter); checked when
    /// the balancer is built.
    pub fn refresh(mut self, config: RefreshConfig) -> Self {
        self.refresh = config;
        self
    }

    /// Tuning of per-instance statistics and the circuit breaker
    /// ([`StatsConfig`]). Default [`StatsConfig::default`].
    pub fn stats(mut self, config: crate::stats::StatsConfig) -> Self {
        self.stats = config;
        self
    }

    /// Whether a request to a service id that was not declared starts
    /// discovery for it (and waits for its first fetch) instead of failing
    /// with [`Error::UnknownService`]. Default is `false`.
    pub fn discover_on_demand(mut self, on: bool) -> Self {
        self.discover_on_demand = on;
        self
    }

    /// Most services [`discover_on_demand`](Builder::discover_on_demand)
    /// may start; requests naming further unknown hosts fail with
    /// [`Error::UnknownService`], so arbitrary hosts cannot grow the
    /// balancer without bound. Declared services always start. Default is
    /// 1024.
    pub fn max_services(mut self, max: usize) -> Self {
        self.max_services = max;
        self
    }

    /// Where the key of key-routing rules ([`ConsistentHash`]) comes from:
    /// [`HashKey::header`] or [`HashKey::from_fn`]. Without one, or when the
    /// request has no key, such rules fall back to round robin. Default:
    /// none.
    ///
    /// [`ConsistentHash`]: crate::rule::ConsistentHash
    pub fn hash_key(mut self, key: HashKey) -> Self {
        self.hash_key = Some(key);
        self
    }

    /// When requests are retried on the same or other instances. Default:
    /// [`RetryPolicy::default`] (one retry on another instance, budget
    /// 20 % + 10/s).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Outlier ejection and the panic threshold. Default:
    /// [`OutlierDetection::default`] (5 consecutive 5xx or gateway errors
    /// eject for 30 s × times ejected; at most 50 % ejected; panic below
    /// 50 % healthy).
    pub fn outlier_detection(mut self, detection: OutlierDetection) -> Self {
        self.outliers = detection;
        self
    }

    /// Active health checks of every instance. Default: off.
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

    /// Builds the layer and starts one refresh task per declared service.
    ///
    /// # Errors
    /// [`BuildError::NoSource`] without a source; [`BuildError::NoRuntime`]
    /// outside a Tokio runtime; [`BuildError::Invalid`] for an empty
    /// service id.
    pub fn layer(self) -> Result<LoadBalancerLayer, BuildError> {
        let source = self.source.ok_or(BuildError::NoSource)?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        self.refresh.validate()?;
        let budget = self.retry.get_budget().build()?;
        let shared = Arc::new(Shared {
            services: ArcSwap::from_pointee(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            source,
            make_rule: self.make_rule,
            refresh: self.refresh,
            stats: self.stats,
            discover_on_demand: self.discover_on_demand,
            max_services: self.max_services,
            failure_statuses: self.failure_statuses,
            hash_key: self.hash_key,
            retry: self.retry,
            outliers: self.outliers,
            active_health: self.active_health,
            budget,
            rng: crate::rng::AtomicRng::from_entropy(),
            handle,
        });
        for service in &self.services {
            if service.trim().is_empty() {
                return Err(BuildError::Invalid {
                    key: "service".to_owned(),
                    reason: "empty service id".to_owned(),
                });
            }
            shared.add_service(service.trim());
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

/// State shared by every clone of a balancer and its layer: the services,
/// their refresh tasks, the source and the rule factory. Dropping the last
/// holder aborts the refresh tasks.
pub(crate) struct Shared {
    services: ArcSwap<HashMap<String, Arc<ServiceState>>>,
    tasks: Mutex<Vec<crate::discovery::TaskGuard>>,
    source: Arc<dyn InstanceSource>,
    make_rule: MakeRule,
    refresh: RefreshConfig,
    stats: StatsConfig,
    discover_on_demand: bool,
    max_services: usize,
    failure_statuses: FailureStatuses,
    hash_key: Option<HashKey>,
    retry: RetryPolicy,
    outliers: OutlierDetection,
    active_health: Option<ActiveHealthCheck>,
    budget: Option<tower::retry::budget::TpsBudget>,
    rng: crate::rng::AtomicRng,
    handle: tokio::runtime::Handle,
}

impl Shared {
    fn key(service_id: &str) -> std::borrow::Cow<'_, str> {
        if service_id.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(service_id.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(service_id)
        }
    }

    fn get(&self, service_id: &str) -> Option<Arc<ServiceState>> {
        self.services
            .load()
            .get(Self::key(service_id).as_ref())
            .cloned()
    }

    /// Adds a service and starts its refresh, unless it exists already.
    fn add_service(&self, service_id: &str) -> Arc<ServiceState> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock so two racing requests start one task.
        if let Some(state) = self.get(service_id) {
            return state;
        }
        let state = Arc::new(ServiceState::new(
            service_id,
            (self.make_rule)(),
            self.refresh.clone(),
            self.stats.clone(),
            self.outliers.get_panic_threshold_percent(),
        ));
        tasks.push(spawn_refresher(
            &state,
            Arc::clone(&self.source),
            &self.handle,
        ));
        if let Some(check) = &self.active_health {
            tasks.push(crate::health::spawn_health_checks(
                &state,
                check.clone(),
                &self.handle,
            ));
        }
        let key = Self::key(service_id).into_owned();
        self.services.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(key.clone(), Arc::clone(&state));
            map
        });
        state
    }
}

/// A tower [`Service`] that sends each request to one instance of the
/// service named by the request URI's host. See the [module docs](self).
///
/// Clones share services, rules, stats and refresh tasks; the tasks stop
/// when the last clone (and the last [`LoadBalancerLayer`]) is dropped.
pub struct LoadBalancer<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl LoadBalancer<()> {
    /// Starts configuring a balancer.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<S> LoadBalancer<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the balancer.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The service ids this balancer knows, sorted.
    pub fn services(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .shared
            .services
            .load()
            .values()
            .map(|s| s.service_id().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// The current instance list of `service_id`, if the service is known.
    pub fn snapshot(&self, service_id: &str) -> Option<Arc<Snapshot>> {
        self.shared.get(service_id).map(|s| s.snapshot())
    }

    /// What the refresh of `service_id` has done: counts, staleness, last
    /// error. `None` if the service is not known.
    pub fn refresh_status(&self, service_id: &str) -> Option<RefreshStatus> {
        self.shared.get(service_id).map(|s| s.status())
    }

    /// Whether `service_id` is in panic mode: fewer than the panic threshold
    /// of its instances are healthy, so health is ignored (as of the last
    /// pick). `None` for an unknown service.
    pub fn in_panic(&self, service_id: &str) -> Option<bool> {
        self.shared.get(service_id).map(|s| s.health().in_panic())
    }

    /// Waits until the first fetch of `service_id` has finished (or the
    /// configured first-fetch bound has passed). Returns whether it finished.
    /// `false` for an unknown service.
    pub async fn ready_service(&self, service_id: &str) -> bool {
        match self.shared.get(service_id) {
            Some(state) => state.wait_first_fetch().await,
            None => false,
        }
    }
}

impl<S: Clone> Clone for LoadBalancer<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for LoadBalancer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalancer")
            .field("inner", &self.inner)
            .field("services", &self.services())
            .finish()
    }
}

impl<S, B> Service<Request<B>> for LoadBalancer<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    S::Response: ResponseStatus + Send + 'static,
    B: TryCloneBody + Send + 'static,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(host) = req.uri().host() else {
            return ResponseFuture::ready(Err(Error::NoServiceInUri {
                uri: req.uri().to_string(),
            }));
        };
        let state = match self.shared.get(host) {
            Some(state) => state,
            None if self.shared.discover_on_demand
                && self.shared.services.load().len() < self.shared.max_services =>
            {
                self.shared.add_service(host)
            }
            None => {
                return ResponseFuture::ready(Err(Error::UnknownService {
                    service: host.to_owned(),
                }));
            }
        };
        let inner = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        ResponseFuture::new(send::send(shared, state, inner, req))
    }
}
