//! The tower middleware: [`LoadBalancer`], [`LoadBalancerLayer`] and the
//! [`Builder`] that configures both (Spring's `@LoadBalanced` client,
//! Ribbon's `LoadBalancerClient`).
//!
//! A request to `http://user-service/api/x` goes through five steps:
//! 1. the URI host (`user-service`, case-insensitive, a trailing dot
//!    ignored) names the service;
//! 2. the service's current [`Picker`] (built by its [`Rule`] for the
//!    current [`Snapshot`]) is loaded (one atomic load, no lock);
//! 3. the picker chooses an endpoint;
//! 4. the authority is rewritten to the endpoint's
//!    (`http://127.0.0.1:8081/api/x`, `http://[::1]:8081/api/x`); path and
//!    query are kept. The scheme becomes the endpoint's (`https` for a
//!    secure instance), except that an `https` request stays `https`
//!    whatever the instance, as Spring Cloud's `LoadBalancerUriTools`
//!    never downgrades one: so `https://user-service/` to a plain
//!    instance through a plain client such as
//!    [`Builder::build_http`] fails at the connect ("invalid URL, scheme
//!    is not http", in the error's text) rather than sending
//!    in clear text what the caller asked to protect. The caller's userinfo and port go with the rest of
//!    the authority: no instance receives `http://user:secret@svc/`'s
//!    credentials (reqwest would send them as basic auth; HTTP/2's
//!    `:authority` must not carry them); send an `Authorization` header
//!    instead. A `Host` header the caller set is kept over HTTP/1.1, as
//!    Envoy keeps it without `auto_host_rewrite`; without one the client
//!    derives it from the endpoint. Over HTTP/2 the authority travels as
//!    `:authority` (the endpoint's), and a `Host` differing from it makes
//!    a malformed request (RFC 9113 §8.3.1; Go's and Vert.x's servers
//!    reject it), so it is dropped where the protocol is known beforehand:
//!    a request whose version is `HTTP/2` (tonic's are; set
//!    `Version::HTTP_2` on yours, which hyper-util then sends only over
//!    HTTP/2), every request through an HTTP/2-only `tls::HttpsClient`,
//!    and every request through a [`ReqwestService`] told
//!    [`http2_only`](ReqwestService::http2_only). A client offering both by ALPN learns the
//!    protocol only at the connect, after the balancer has handed the
//!    request on: there a `Host` the caller set reaches an HTTP/2
//!    instance as a plain field, so leave it unset or set the version;
//! 5. the inner service (hyper-util's client, [`ReqwestService`], ...) sends
//!    it, and the endpoint's stats record the attempt.
//!
//! **What an attempt measures.** The inner service is awaited ready
//! *before* the pick, so that wait is charged to no instance. An attempt
//! then counts as in flight on its instance from the send until, for a
//! successful response, its body ends, fails or is dropped (a response
//! without content, a 204, 304, `Content-Length: 0` or a HEAD's, has ended
//! with its headers, as has one whose hyper or reqwest body ended with them,
//! such as an HTTP/2 response whose HEADERS end the stream); the response body is wrapped in a [`TrackedBody`], as tower's
//! `PeakEwma` tracks completion through the body); its latency covers the
//! same span, so a long stream reads as both busy and slow: after a 60 s
//! stream ends, its instance's peak EWMA holds that 60 s sample and
//! decays from it (τ = `StatsConfig::ewma_decay`, 10 s), so
//! [`PeakEwmaP2c`](crate::rule::PeakEwmaP2c) avoids the instance for a
//! minute or two while others answer fast (10 ms requests every 5 ms over
//! three instances: none to it in the 60 s after its stream ended, 148 in
//! the 30 s after that; Linkerd times a stream to its first data frame
//! instead). Put long streams and
//! short calls to one service behind balancers of their own, or use a
//! rule that weighs load alone ([`BestAvailable`](crate::rule::BestAvailable)).
//! A failed attempt (an error, a
//! failure status) is recorded when its result arrives, with the latency
//! to then; a failure status handed to the caller (no retry follows)
//! still counts in flight until its body ends, fails or is dropped, since
//! its body streams from the instance as any other. An HTTP/1.1 upgrade
//! (a WebSocket's `101`, a `CONNECT`'s 2xx) is recorded when its head
//! arrives and counts in flight until the upgraded connection is dropped
//! if the caller takes it with [`upgrade::on`] (with
//! `hyper::upgrade::on`, until the response is dropped); see [`upgrade`].
//!
//! **Timeouts.** Each attempt is cut off after the per-try (read) timeout,
//! Ribbon's 5 s unless set ([`Builder::read_timeout`], Ribbon key
//! `ReadTimeout`); the connect timeout (2 s, `ConnectTimeout`) is set on the
//! connector of the client [`Builder::build_http`] makes and must be set on
//! a client you bring. The error says which timeout fired and why no retry
//! followed ([`timeouts`], [`crate::error::TimeoutKind`]).
//!
//! **Tracing.** Each call is a `ribbon.request` span with one
//! `ribbon.attempt` child per attempt, carrying the OpenTelemetry HTTP
//! client attributes (`http.request.method`, `server.address`,
//! `server.port`, `http.response.status_code`, `error.type`,
//! `http.request.resend_count`) plus `peer.service` (the service id) and
//! `ribbon.instance.id`; retries, ejections and list changes are events.
//! A method outside RFC 9110's and PATCH is `_OTHER` (the attempt's span
//! name `HTTP`), so made-up methods add no span names. Without a subscriber they cost a few nanoseconds per request.
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
//! use tower_ribbon::discovery::StaticSource;
//! use tower_ribbon::LoadBalancer;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let source = StaticSource::new().with_list("user-service", "127.0.0.1:8081,127.0.0.1:8082")?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
//! let lb = LoadBalancer::builder().source(source).service("user-service").build(client)?;
//!
//! let request = http::Request::get("http://user-service/whoami").body(Empty::new())?;
//! let response = lb.request(request).await?;
//! println!("{}", response.status());
//! # Ok(()) }
//! ```
//!
//! [`Rule`]: crate::rule::Rule
//! [`Picker`]: crate::rule::Picker
//! [`Snapshot`]: crate::snapshot::Snapshot

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::Request;
use tower::Service;

use crate::discovery::{InstanceSource, RefreshConfig, RefreshStatus};
use crate::error::Error;
#[cfg(feature = "hyper-util")]
use crate::health::ActiveHealthCheck;
use crate::health::OutlierDetection;
use crate::retry::{RetryPolicy, TryCloneBody};
use crate::snapshot::Snapshot;

mod attempt;
mod body;
mod builder;
mod classify;
mod connection;
mod cookie;
mod ending;
mod framing;
mod future;
pub(crate) mod grpc_status;
mod hash_key;
mod inner;
mod layer;
mod log_limit;
cfg_feature! {
    #![feature = "reqwest"]
    mod reqwest_adapter;
    pub use reqwest_adapter::ReqwestService;
}
mod retrying;
mod send;
mod sending;
mod services;
mod start;
pub(crate) mod state;
pub mod timeouts;
mod trace;
mod try_timer;
cfg_feature! {
    #![any(feature = "hyper-util", feature = "reqwest")]
    pub mod upgrade;
}

pub use body::{Completion, TrackCompletion, TrackedBody};
pub use builder::Builder;
use builder::MakeRule;
pub use classify::{FailureStatuses, ResponseStatus, classify_error};
pub use future::ResponseFuture;
pub use hash_key::HashKey;
pub use inner::InnerService;
pub use layer::LoadBalancerLayer;
pub(crate) use state::ServiceState;
pub use timeouts::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT};
cfg_feature! {
    #![feature = "hyper-util"]
    pub use timeouts::http_client;
    /// The client [`http_client`] and [`Builder::build_http`] make.
    pub type HttpClient<B> = hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        B,
    >;
}

/// The URI's host, as [`http::Uri::host`] gives it: an authority without
/// userinfo, port or IPv6 brackets (`user-service`, the usual service
/// name) is the host itself, which skips `Uri::host`'s splitting (about
/// 250 instructions per request, `scripts/path-instructions`).
#[inline]
fn uri_host(uri: &http::Uri) -> Option<&str> {
    let authority = uri.authority()?;
    let text = authority.as_str();
    if text.bytes().any(|b| matches!(b, b':' | b'@' | b'[')) {
        Some(authority.host())
    } else {
        Some(text)
    }
}

/// State shared by every clone of a balancer and its layer: the services,
/// their refresh tasks, the source and the rule factory. Dropping the last
/// holder aborts the refresh tasks.
pub(crate) struct Shared {
    services: ArcSwap<services::Services>,
    /// The insert lock; holds the idle sweeper's task.
    tasks: Mutex<Vec<crate::discovery::TaskGuard>>,
    me: std::sync::Weak<Shared>,
    epoch: tokio::time::Instant,
    on_demand_idle: std::time::Duration,
    source: Arc<dyn InstanceSource>,
    make_rule: MakeRule,
    refresh: RefreshConfig,
    discover_on_demand: bool,
    max_services: usize,
    /// On-demand services in `services` (changed under the insert lock).
    on_demand_count: std::sync::atomic::AtomicUsize,
    /// What the request path reads; every service state holds it too.
    request: Arc<RequestConfig>,
    #[cfg(feature = "hyper-util")]
    active_health: Option<ActiveHealthCheck>,
    stats: crate::stats::StatsConfig,
    /// The instance cookie of each service (`Builder::instance_cookie`).
    instance_cookies: cookie::InstanceCookies,
    handle: tokio::runtime::Handle,
    /// Requests to unknown services since the last INFO line about them,
    /// and when that line was written (ms since `epoch`, `u64::MAX`: never).
    unknown_logged: log_limit::LogLimit,
}

/// The builder's settings the request path reads. The balancer and each
/// service state share one, so a request's future holds a single
/// reference (its service state) and takes no count on the balancer's
/// state: on a multi-core host every reference count taken per request is
/// a cache line moved between cores.
pub(crate) struct RequestConfig {
    pub(crate) per_instance_metrics: bool,
    pub(crate) failure_statuses: FailureStatuses,
    pub(crate) hash_key: Option<HashKey>,
    pub(crate) retry: RetryPolicy,
    /// The per-try timeout: the policy's, else the builder's read timeout.
    pub(crate) per_try: Option<std::time::Duration>,
    /// The builder's connect timeout, for error messages.
    pub(crate) connect_timeout: Option<std::time::Duration>,
    pub(crate) outliers: OutlierDetection,
    pub(crate) rng: crate::rng::AtomicRng,
}

impl Default for RequestConfig {
    fn default() -> Self {
        Self {
            per_instance_metrics: false,
            failure_statuses: FailureStatuses::default(),
            hash_key: None,
            retry: RetryPolicy::default(),
            per_try: None,
            connect_timeout: None,
            outliers: OutlierDetection::default(),
            rng: crate::rng::AtomicRng::from_entropy(),
        }
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
            .map(|e| e.state.service_id().to_owned())
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

// The bounds on `S` are one crate trait, so a wrong inner service is
// reported with `InnerService`'s message (see `inner.rs`).
impl<S, B> Service<Request<B>> for LoadBalancer<S>
where
    S: InnerService<B>,
    B: TryCloneBody + Send + 'static,
{
    type Response = <S::Response as TrackCompletion>::Tracked;
    type Error = Error;
    type Future = ResponseFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.start(req, std::convert::identity)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[test]
    fn the_host_of_each_authority_form_is_uri_hosts() {
        for (uri, host) in [
            ("http://user-service/x", Some("user-service")),
            ("http://User-Service:8080/x", Some("User-Service")),
            ("http://me:secret@user-service/x", Some("user-service")),
            ("http://[::1]:8080/x", Some("[::1]")),
            ("http://127.0.0.1/x", Some("127.0.0.1")),
            ("/x", None),
        ] {
            let uri: http::Uri = uri.parse().unwrap();
            assert_eq!(super::uri_host(&uri), host, "{uri}");
            assert_eq!(super::uri_host(&uri), uri.host(), "{uri}");
        }
    }

    proptest! {
        /// The fast path gives `Uri::host`'s answer for every authority
        /// that parses.
        #[test]
        fn uri_host_agrees_with_http(authority in "[a-zA-Z0-9.:@\\[\\]%_~-]{1,24}") {
            if let Ok(uri) = format!("http://{authority}/x").parse::<http::Uri>() {
                prop_assert_eq!(super::uri_host(&uri), uri.host());
            }
        }
    }
}
