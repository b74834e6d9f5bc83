//! [`ServiceState`]: the live state of one service in the balancer: its
//! refresh record, its rule and current picker, and its health view.
//!
//! The refresh (in [`discovery`](crate::discovery)) publishes each new
//! list here; the state builds the rule's picker for it (off the request
//! path), swaps it in with one atomic store and tells the health view to
//! recount. The request path loads the current picker with one atomic
//! load, and reads the list from the picker, so the list and the picker a
//! request uses always belong together.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};

use crate::discovery::{NewEndpoint, Refresh, RefreshConfig, RefreshStatus, Refreshed};
use crate::error::DiscoveryError;
use crate::health::HealthView;
use crate::instance::Endpoint;
use crate::rule::{Picker, Rule};
use crate::snapshot::Snapshot;
use crate::stats::{EndpointStats, StatsConfig};

/// The live state of one service: its refresh, rule, picker and health.
pub(crate) struct ServiceState {
    refresh: Refresh,
    rule: Arc<dyn Rule>,
    picker: ArcSwap<Arc<dyn Picker>>,
    health: HealthView,
    retry_budget: Option<crate::retry::TpsBudget>,
    /// Set once a request saw the first fetch finished, so later requests
    /// skip the wait (and its future) with one load.
    first_fetch_seen: std::sync::atomic::AtomicBool,
    /// The cookie name each request gets `name=<instance id>` under
    /// (`Builder::instance_cookie`); `None`: off.
    instance_cookie: Option<Arc<str>>,
    /// Set once an instance id was refused as a cookie value (one warning
    /// per service, not one per request).
    cookie_refused: std::sync::atomic::AtomicBool,
    /// The balancer's request settings (shared with it).
    request: Arc<super::RequestConfig>,
    /// Set by the active checks when their first round begins: endpoints
    /// new from then on wait unhealthy for their first probe.
    #[cfg_attr(not(feature = "hyper-util"), allow(dead_code))]
    new_wait_for_probe: Arc<std::sync::atomic::AtomicBool>,
    /// Woken when a new list is published (the active checks probe the
    /// endpoints waiting for their first probe at once).
    published: Arc<tokio::sync::Notify>,
    /// Retries are logged at INFO at most once a second per service (while
    /// an instance fails, every request may retry).
    retries_logged: super::log_limit::LogLimit,
    /// Picker rebuilds asked for by changed verdicts: a publish that sees
    /// this move during its build rebuilds after its store.
    verdicts: std::sync::atomic::AtomicU64,
    /// A service discovered on demand: its requests are counted in `live`.
    on_demand: bool,
    /// Request futures of an on-demand service alive now (waiting for
    /// readiness, in a backoff, sending): such a service is not evicted.
    live: std::sync::atomic::AtomicUsize,
}

/// The bit of `ServiceState::live` the sweeper sets when it claims a
/// service for eviction.
const EVICTED: usize = 1 << (usize::BITS - 1);

/// The service was claimed for eviction (see
/// [`ServiceState::live_request`]).
#[derive(Debug)]
pub(crate) struct Evicted;

/// A request future's hold on its on-demand service: while one lives, the
/// service is not evicted (see [`ServiceState::live_request`]).
pub(crate) struct LiveRequest(Arc<ServiceState>);

impl Drop for LiveRequest {
    fn drop(&mut self) {
        self.0
            .live
            .fetch_sub(1, std::sync::atomic::Ordering::Release);
    }
}

impl ServiceState {
    /// A service with no list yet (an empty picker), whose new endpoints
    /// get stats tuned by `stats`.
    pub(crate) fn new(
        service_id: &str,
        rule: Arc<dyn Rule>,
        config: RefreshConfig,
        stats: StatsConfig,
        panic_threshold_percent: u32,
    ) -> Self {
        let new_wait_for_probe = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let wait_for_probe = Arc::clone(&new_wait_for_probe);
        // An instance listed again while requests it had when it left are
        // in flight keeps their stats, but joins as any new instance: in
        // slow start again, and waiting for its first probe.
        let new_endpoint: NewEndpoint = Arc::new(move |instance, departed| {
            let stats = match departed {
                Some(kept) => {
                    kept.restart_slow_start(tokio::time::Instant::now());
                    kept
                }
                None => Arc::new(EndpointStats::with_config(stats.clone())),
            };
            #[cfg(feature = "hyper-util")]
            if wait_for_probe.load(std::sync::atomic::Ordering::Acquire) {
                stats.start_active_pending();
            }
            #[cfg(not(feature = "hyper-util"))]
            let _ = &wait_for_probe;
            Endpoint::with_stats(instance, stats)
        });
        let refresh = Refresh::new(service_id, config, new_endpoint);
        let picker = rule.build(&refresh.current());
        Self {
            refresh,
            rule,
            picker: ArcSwap::from_pointee(picker),
            health: HealthView::new(panic_threshold_percent),
            retry_budget: None,
            first_fetch_seen: std::sync::atomic::AtomicBool::new(false),
            instance_cookie: None,
            cookie_refused: std::sync::atomic::AtomicBool::new(false),
            request: Arc::new(super::RequestConfig::default()),
            new_wait_for_probe,
            published: Arc::new(tokio::sync::Notify::new()),
            retries_logged: super::log_limit::LogLimit::default(),
            verdicts: std::sync::atomic::AtomicU64::new(0),
            on_demand: false,
            live: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The rate limit on this service's INFO lines about retries.
    pub(super) fn retries_logged(&self) -> &super::log_limit::LogLimit {
        &self.retries_logged
    }

    /// What the active checks share with the service: the flag that makes
    /// new endpoints wait for their first probe, and the wake-up of a
    /// published list.
    #[cfg(feature = "hyper-util")]
    pub(crate) fn active_check_links(
        &self,
    ) -> (Arc<std::sync::atomic::AtomicBool>, Arc<tokio::sync::Notify>) {
        (
            Arc::clone(&self.new_wait_for_probe),
            Arc::clone(&self.published),
        )
    }

    /// Uses the balancer's request settings (a new state has the defaults).
    pub(crate) fn with_request_config(mut self, request: Arc<super::RequestConfig>) -> Self {
        self.request = request;
        self
    }

    /// Marks a service started on demand: its metrics carry its name only
    /// once a fetch lists an instance.
    pub(crate) fn on_demand(mut self, on: bool) -> Self {
        if on {
            self.refresh.label_once_listed();
        }
        self.on_demand = on;
        self
    }

    /// A hold on this service for one request's whole life, if it was
    /// discovered on demand (`Ok(None)` for a declared one, which is never
    /// evicted); `Err` once the sweeper claimed it for eviction (route the
    /// request again). Before, a request waiting for a not-ready inner
    /// service or in a backoff counted as idle: its service was evicted
    /// under it and the request then went to an instance the source had
    /// removed 2 s before (helper 211).
    pub(crate) fn live_request(self: &Arc<Self>) -> Result<Option<LiveRequest>, Evicted> {
        use std::sync::atomic::Ordering;
        if !self.on_demand {
            return Ok(None);
        }
        if self.live.fetch_add(1, Ordering::AcqRel) & EVICTED != 0 {
            self.live.fetch_sub(1, Ordering::Release);
            return Err(Evicted);
        }
        Ok(Some(LiveRequest(Arc::clone(self))))
    }

    /// Claims this on-demand service for eviction if no request holds it:
    /// from then on [`live_request`](Self::live_request) fails, so a
    /// request routed to it as it goes takes the service's next entry, not
    /// this state, whose list no longer refreshes (helper 214: a request
    /// routed before the claim and held after went to an instance removed
    /// 150 ms before). Call with the insert lock held.
    pub(crate) fn claim_for_eviction(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.live
            .compare_exchange(0, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Gives back a claim (see
    /// [`claim_for_eviction`](Self::claim_for_eviction)) the sweeper
    /// found it should not have made. Call with the insert lock held.
    pub(crate) fn release_claim(&self) {
        self.live
            .fetch_and(!EVICTED, std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether the sweeper claimed this service (see
    /// [`claim_for_eviction`](Self::claim_for_eviction)).
    pub(crate) fn is_claimed(&self) -> bool {
        self.live.load(std::sync::atomic::Ordering::Acquire) & EVICTED != 0
    }

    /// Whether metrics may carry this service's label.
    pub(crate) fn labels_metrics(&self) -> bool {
        self.refresh.labels_metrics()
    }

    /// The balancer's request settings.
    #[inline]
    pub(crate) fn request_config(&self) -> &super::RequestConfig {
        &self.request
    }

    /// Gives the service its own retry budget (Finagle and Linkerd keep one
    /// per destination, so a failing service cannot spend the retries of
    /// a healthy one: linkerd/linkerd#737).
    pub(crate) fn with_retry_budget(mut self, budget: Option<crate::retry::TpsBudget>) -> Self {
        self.retry_budget = budget;
        self
    }

    /// Sets the instance cookie's name (`None`: off).
    pub(crate) fn with_instance_cookie(mut self, name: Option<Arc<str>>) -> Self {
        self.instance_cookie = name;
        self
    }

    /// The instance cookie's name, if the service adds one.
    pub(crate) fn instance_cookie(&self) -> Option<&str> {
        self.instance_cookie.as_deref()
    }

    /// `true` the first time it is called (the first refused id warns).
    pub(crate) fn first_cookie_refusal(&self) -> bool {
        !self
            .cookie_refused
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// The service's retry budget, if the policy has one.
    pub(crate) fn retry_budget(&self) -> Option<&crate::retry::TpsBudget> {
        self.retry_budget.as_ref()
    }

    pub(crate) fn service_id(&self) -> &str {
        self.refresh.service_id()
    }

    pub(crate) fn health(&self) -> &HealthView {
        &self.health
    }

    /// The current picker (one atomic load); its
    /// [`snapshot`](Picker::snapshot) is the list it picks from.
    #[inline]
    pub(crate) fn picker(&self) -> Guard<Arc<Arc<dyn Picker>>> {
        self.picker.load()
    }

    /// The current list.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(self.picker.load().snapshot())
    }

    /// Waits until the first fetch has finished (success or failure), for
    /// at most the configured bound. Returns whether it has finished.
    pub(crate) async fn wait_first_fetch(&self) -> bool {
        self.refresh.wait_first_fetch().await
    }

    /// Whether a request is in flight on an instance of the current list,
    /// or on one that left it and may come back with its stats (a
    /// response whose body is still open counts): such a service is in
    /// use, however long ago its last request started.
    pub(crate) fn has_in_flight(&self) -> bool {
        self.snapshot()
            .endpoints()
            .iter()
            .any(|e| e.stats().in_flight() > 0)
            || self.refresh.departed_in_flight()
    }

    /// Whether the first fetch has finished (success or failure).
    pub(crate) fn first_fetch_done(&self) -> bool {
        self.refresh.first_fetch_done()
    }

    /// Whether a request already saw the first fetch finished (one load).
    #[inline]
    pub(crate) fn first_fetch_seen(&self) -> bool {
        self.first_fetch_seen
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// [`wait_first_fetch`](Self::wait_first_fetch), boxed (its future is
    /// large and awaited only until the first list arrives), remembering a
    /// finished fetch.
    pub(crate) async fn wait_first_fetch_boxed(&self) -> bool {
        let done = Box::pin(self.wait_first_fetch()).await;
        if done {
            self.first_fetch_seen
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        done
    }

    pub(crate) fn first_fetch_wait(&self) -> Duration {
        self.refresh.first_fetch_wait()
    }

    /// The last fetch error, if no fetch has succeeded yet.
    pub(crate) fn error_before_first_success(&self) -> Option<Arc<DiscoveryError>> {
        self.refresh.error_before_first_success()
    }

    pub(crate) fn status(&self) -> RefreshStatus {
        self.refresh.status()
    }

    /// Rebuilds the picker for the list it serves and makes the health
    /// view recount: an active-check verdict changed, and the rule may read
    /// it at build time (an instance back from failing checks is in slow
    /// start again). A refresh publishing meanwhile wins: the new picker is
    /// swapped in only if the one it replaces is still current, and that
    /// refresh, seeing [`Self::verdicts`] move, rebuilds after its store
    /// (its picker may have been built before the change).
    #[cfg_attr(not(feature = "hyper-util"), allow(dead_code))]
    pub(crate) fn rebuild_picker(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.verdicts.fetch_add(1, SeqCst);
        self.rebuild_current();
        self.health.invalidate();
    }

    /// Builds the rule's picker for the current list and swaps it in if
    /// that picker is still current.
    ///
    /// A panic in the rule's build (run here by the active-check task, or
    /// by a refresh) keeps the current picker and is logged: it ended the
    /// active-check task for good before, so no verdict changed after it.
    fn rebuild_current(&self) {
        use std::panic::{AssertUnwindSafe, catch_unwind};
        let current = self.picker.load_full();
        match catch_unwind(AssertUnwindSafe(|| self.rule.build(current.snapshot()))) {
            Ok(picker) => {
                let _previous = self.picker.compare_and_swap(&current, Arc::new(picker));
            }
            Err(_) => tracing::warn!(
                service = self.service_id(),
                rule = self.rule.name(),
                "the rule panicked building a picker; keeping the current one"
            ),
        }
    }
}

impl Refreshed for ServiceState {
    fn refresh(&self) -> &Refresh {
        &self.refresh
    }

    /// Builds the rule's picker for `snapshot`, swaps it in and makes the
    /// health view recount.
    fn publish(&self, snapshot: Arc<Snapshot>) {
        use std::sync::atomic::Ordering::SeqCst;
        let verdicts = self.verdicts.load(SeqCst);
        let picker = self.rule.build(&snapshot);
        self.picker.store(Arc::new(picker));
        if self.verdicts.load(SeqCst) != verdicts {
            self.rebuild_current();
        }
        self.health.invalidate();
        self.published.notify_one();
    }
}

#[cfg(test)]
mod tests;
