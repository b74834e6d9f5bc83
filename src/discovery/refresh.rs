//! The background refresh of one service's instance list (Ribbon's
//! `PollingServerListUpdater` + `DynamicServerListLoadBalancer`).
//!
//! One task per service id: the first fetch at once, then one every
//! interval (default 30 s, ±10 % jitter so many clients do not fetch in
//! step). A successful fetch keeps the `UP` instances, reuses the stats of
//! every instance whose identity it already knew (or that left the list
//! with requests still in flight on it, a stream, while they last, so
//! least-loaded rules still see them when it comes back, or marked down by
//! its breaker or outlier ejection, while that lasts, so it comes back
//! still marked down), keeps the instances it held in their places (new
//! ones after them; see `order.rs`), and publishes the new
//! [`Snapshot`] through a callback (the service layer builds the rule's
//! picker for it); the refresh knows nothing of rules or health. A failed
//! fetch keeps the last good list, counts the failure and leaves the time
//! since the last success readable through [`RefreshStatus`]; except
//! [`DiscoveryError::UnknownService`], the source saying it no longer has
//! the service: counted as failed too, it empties the list as a fetch
//! listing nothing does (kept with `keep_last_on_empty`). The task ends
//! when the balancer that owns it is dropped.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::InstanceSource;
use crate::error::DiscoveryError;
use crate::instance::{Endpoint, Instance, InstanceKey};
use crate::rng::AtomicRng;
use crate::snapshot::{Listing, Snapshot, SourceKind};
use crate::stats::EndpointStats;

mod config;
mod departed;
mod guard;
mod order;
mod stale_copy;
pub use config::RefreshConfig;

/// What the refresh of one service has done so far.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RefreshStatus {
    /// The service id.
    pub service_id: String,
    /// Eligible instances in the current list.
    pub instances: usize,
    /// Version of the current list (applied refreshes that changed it).
    pub version: u64,
    /// Successful fetches.
    pub successes: u64,
    /// Failed fetches.
    pub failures: u64,
    /// Failed fetches since the last success.
    pub consecutive_failures: u64,
    /// Time since the last successful fetch; `None` if none succeeded yet.
    pub since_last_success: Option<Duration>,
    /// The error of the last failed fetch, if the last fetch failed.
    pub last_error: Option<Arc<DiscoveryError>>,
}

#[derive(Default)]
struct Counters {
    successes: u64,
    failures: u64,
    consecutive_failures: u64,
    last_success: Option<Instant>,
    last_error: Option<Arc<DiscoveryError>>,
}

/// The most departed instances whose stats are kept for their health
/// alone (a tripped breaker, an ejection; each for at most the breaker's
/// or the ejection's longest time): past it, those whose marks end soonest
/// go (requests in flight keep theirs).
pub(crate) const MAX_DEPARTED: usize = 4_096;

/// Makes the endpoint of a newly listed instance (the service layer passes
/// one that gives it stats with the configured
/// [`StatsConfig`](crate::stats::StatsConfig)).
/// Makes the endpoint of an instance new to the list; with the stats it
/// had when it left with requests in flight or marked down, it keeps them
/// (those requests still count on it; it stays marked down) but joins as a
/// new instance otherwise.
pub(crate) type NewEndpoint =
    Arc<dyn Fn(Instance, Option<Arc<EndpointStats>>) -> Endpoint + Send + Sync>;

/// The refresh record of one service: the last published list, the
/// configuration and the counters. Publishes lists through the callback
/// given to [`Refresh::refresh_once`].
pub(crate) struct Refresh {
    service_id: Arc<str>,
    current: ArcSwap<Snapshot>,
    config: RefreshConfig,
    new_endpoint: NewEndpoint,
    first_done: AtomicBool,
    first_done_tx: watch::Sender<bool>,
    counters: Mutex<Counters>,
    /// Whether metrics carry this service's label: an on-demand name (the
    /// caller's) gets it once a fetch lists an instance.
    labelled: AtomicBool,
    /// The stats of instances that left the list, by identity: kept until
    /// the next refresh, then only while a request of theirs is in flight
    /// (streams, WebSockets) or while their breaker is open or half-open
    /// (no response closed it since it tripped; for at most `breaker_max`
    /// after the blackout) or outlier ejection holds them (at most [`MAX_DEPARTED`] entries): an instance
    /// listed again meanwhile gets them back, so those requests still
    /// count on it, and a sick instance whose registry status flapped
    /// (DOWN, then UP) is still marked down, as Ribbon's stats cache keeps
    /// it.
    departed: Mutex<HashMap<InstanceKey, Arc<EndpointStats>>>,
}

impl fmt::Debug for Refresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresh")
            .field("service_id", &self.service_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Refresh {
    pub(crate) fn new(service_id: &str, config: RefreshConfig, new_endpoint: NewEndpoint) -> Self {
        let service_id: Arc<str> = Arc::from(service_id);
        Self {
            current: ArcSwap::from_pointee(Snapshot::empty(Arc::clone(&service_id))),
            service_id,
            config,
            new_endpoint,
            first_done: AtomicBool::new(false),
            first_done_tx: watch::Sender::new(false),
            counters: Mutex::new(Counters::default()),
            labelled: AtomicBool::new(true),
            departed: Mutex::new(HashMap::new()),
        }
    }

    /// Records no labelled metric until a fetch lists an instance (for a
    /// name a caller chose, so made-up names add no series).
    pub(crate) fn label_once_listed(&self) {
        self.labelled.store(false, Ordering::Relaxed);
    }

    /// Whether metrics may carry this service's label.
    pub(crate) fn labels_metrics(&self) -> bool {
        self.labelled.load(Ordering::Relaxed)
    }

    pub(crate) fn service_id(&self) -> &Arc<str> {
        &self.service_id
    }

    /// The last published list.
    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Waits until the first fetch has finished (success or failure), for at
    /// most the configured bound. Returns whether it has finished.
    pub(crate) async fn wait_first_fetch(&self) -> bool {
        if self.first_done.load(Ordering::Acquire) {
            return true;
        }
        let mut rx = self.first_done_tx.subscribe();
        let wait = self.config.first_fetch_wait;
        matches!(
            tokio::time::timeout(wait, rx.wait_for(|done| *done)).await,
            Ok(Ok(_))
        )
    }

    /// Whether the first fetch has finished (success or failure).
    pub(crate) fn first_fetch_done(&self) -> bool {
        self.first_done.load(Ordering::Acquire)
    }

    pub(crate) fn first_fetch_wait(&self) -> Duration {
        self.config.first_fetch_wait
    }

    /// The last fetch error, if no fetch has succeeded yet.
    pub(crate) fn error_before_first_success(&self) -> Option<Arc<DiscoveryError>> {
        let c = self.lock_counters();
        if c.successes == 0 {
            c.last_error.clone()
        } else {
            None
        }
    }

    /// Whether a request is in flight on an instance that left the list
    /// (its stats are kept for its return, see `departed`).
    pub(crate) fn departed_in_flight(&self) -> bool {
        let departed = self.departed.lock().unwrap_or_else(|e| e.into_inner());
        departed.values().any(|stats| stats.in_flight() > 0)
    }

    fn lock_counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        // A poisoned lock only means a panic elsewhere mid-update of plain
        // counters; the values are still usable.
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn status(&self) -> RefreshStatus {
        let snap = self.current.load();
        let c = self.lock_counters();
        RefreshStatus {
            service_id: self.service_id.to_string(),
            instances: snap.len(),
            version: snap.version(),
            successes: c.successes,
            failures: c.failures,
            consecutive_failures: c.consecutive_failures,
            since_last_success: c.last_success.map(|t| t.elapsed()),
            last_error: if c.consecutive_failures > 0 {
                c.last_error.clone()
            } else {
                None
            },
        }
    }

    /// Fetches once and applies the result, handing a changed list to
    /// `publish` before it becomes current. Returns whether it succeeded.
    pub(crate) async fn refresh_once(
        &self,
        source: &dyn InstanceSource,
        publish: &(dyn Fn(Arc<Snapshot>) + Sync),
    ) -> bool {
        let timeout = self.config.fetch_timeout;
        // A panic in the source is a failed fetch, not the task's end.
        let fetch = guard::fetch_guarded("the instance source", || source.fetch(&self.service_id));
        let fetched = match tokio::time::timeout(timeout, fetch).await {
            Ok(result) => result,
            Err(_) => Err(DiscoveryError::Timeout {
                server: "instance source".to_owned(),
                after: timeout,
            }),
        };
        let kind = source.kind();
        let result = match fetched {
            // A panic in the rule's build (`publish`) comes before the
            // new list is stored: list and picker stay the last ones.
            Ok(instances) => {
                guard::run_guarded("the rule", || self.apply(instances, kind, publish))
            }
            // The source no longer has the service (a `StaticSource`'s
            // `remove_service`): it lists nothing, so the list empties as
            // for a fetch that lists nothing (`keep_last_on_empty` keeps
            // it), and the fetch still counts as failed with this error.
            // Keeping the list as through an outage routed to instances
            // the source had dropped for as long as it lacked the service.
            Err(e @ DiscoveryError::UnknownService { .. }) => {
                if !self.current.load().is_empty() {
                    let _kept = self.apply(Vec::new(), kind, publish);
                }
                Err(e)
            }
            Err(e) => self.first_from_stale_copy(e, kind, publish),
        };
        let ok = result.is_ok();
        self.record(result);
        if !self.first_done.swap(true, Ordering::AcqRel) {
            self.first_done_tx.send_replace(true);
        }
        ok
    }

    /// Counts the outcome of one fetch and updates the refresh metrics.
    fn record(&self, result: Result<(), DiscoveryError>) {
        let ok = result.is_ok();
        if ok && !self.current.load().is_empty() {
            self.labelled.store(true, Ordering::Relaxed);
        }
        let mut c = self.lock_counters();
        match result {
            Ok(()) => {
                c.successes += 1;
                c.consecutive_failures = 0;
                c.last_success = Some(Instant::now());
                c.last_error = None;
            }
            Err(e) => {
                tracing::warn!(service = %self.service_id, error = %e, "instance list refresh failed; keeping the last list");
                c.failures += 1;
                c.consecutive_failures += 1;
                c.last_error = Some(Arc::new(e));
            }
        }
        let since = c.last_success.map(|t| t.elapsed());
        drop(c);
        if self.labels_metrics() {
            let instances = self.current.load().len();
            crate::metrics::record_refresh(&self.service_id, ok, instances, since);
        }
    }

    /// The endpoints of `eligible`, with the stats of the same identity in
    /// `current` (or of one that left with requests in flight), and how
    /// many were kept and added.
    fn endpoints_of(
        &self,
        current: &Snapshot,
        eligible: Vec<Instance>,
    ) -> (Vec<Endpoint>, usize, usize) {
        let known: HashMap<InstanceKey, &Endpoint> = current
            .endpoints()
            .iter()
            .map(|e| (e.instance().key(), e))
            .collect();
        let (mut kept, mut added) = (0usize, 0usize);
        let mut departed = self.retained_departed();
        let endpoints: Vec<Endpoint> = eligible
            .into_iter()
            .map(|instance| match known.get(&instance.key()) {
                Some(old) if old.instance() == &instance => {
                    kept += 1;
                    (*old).clone()
                }
                Some(old) => {
                    kept += 1;
                    Endpoint::with_stats(instance, Arc::clone(old.stats_handle()))
                }
                None => {
                    added += 1;
                    let stats = departed.remove(&instance.key());
                    (self.new_endpoint)(instance, stats)
                }
            })
            .collect();
        // Every instance that leaves, whatever its count now: a request
        // picked from the list this one replaces may start on it after
        // this count (a pick and its start are not one step), and the
        // next refresh keeps it only if such a request is in flight then.
        let listed: HashSet<InstanceKey> = endpoints.iter().map(|e| e.instance().key()).collect();
        for old in current.endpoints() {
            if !listed.contains(&old.instance().key()) {
                departed.insert(old.instance().key(), Arc::clone(old.stats_handle()));
            }
        }
        drop(departed);
        (endpoints, kept, added)
    }

    /// Builds the next snapshot from a fetched list, publishes it and makes
    /// it current.
    fn apply(
        &self,
        instances: Vec<Instance>,
        kind: SourceKind,
        publish: &(dyn Fn(Arc<Snapshot>) + Sync),
    ) -> Result<(), DiscoveryError> {
        let current = self.current.load_full();
        let mut seen = HashSet::new();
        // Every listed instance is counted by status (the "no instances"
        // error says what was listed); only `UP` ones become endpoints.
        let mut listing = Listing::new(kind);
        let eligible: Vec<Instance> = instances
            .into_iter()
            .filter(|i| {
                listing.add(i.status());
                i.status().is_up()
            })
            .filter(|i| seen.insert(i.key()))
            .collect();
        let eligible = order::in_current_order(&current, eligible);

        // Only a listing of nothing is a registry that forgot: instances
        // listed but none UP are drained, and are applied as such.
        if eligible.is_empty()
            && listing.total() == 0
            && !current.is_empty()
            && self.config.keep_last_on_empty
        {
            return Err(DiscoveryError::EmptyList {
                service: self.service_id.to_string(),
            });
        }
        let unchanged = eligible.len() == current.len()
            && eligible
                .iter()
                .zip(current.endpoints())
                .all(|(new, old)| new == old.instance())
            && listing == *current.listing();
        if unchanged && current.version() > 0 {
            // The departed stats are kept only as long as needed, and their
            // ejections' ends counted, between list changes too.
            drop(self.retained_departed());
            return Ok(());
        }

        let (endpoints, kept, added) = self.endpoints_of(&current, eligible);
        let removed = current.len() - kept;
        let next = Arc::new(
            Snapshot::new(
                Arc::clone(&self.service_id),
                endpoints,
                current.version() + 1,
            )
            .with_listing(listing),
        );
        tracing::debug!(
            service = %self.service_id,
            instances = next.len(),
            added,
            removed,
            version = next.version(),
            "instance list updated"
        );
        publish(Arc::clone(&next));
        self.current.store(next);
        Ok(())
    }
}

/// What the refresh task drives: a [`Refresh`] record and the callback that
/// receives each new list.
pub(crate) trait Refreshed: Send + Sync + 'static {
    /// The refresh record.
    fn refresh(&self) -> &Refresh;
    /// Receives each new list before it becomes current.
    fn publish(&self, snapshot: Arc<Snapshot>);
}

/// Aborts a background task (refresh, health checks) when the owning
/// balancer is dropped.
pub(crate) struct TaskGuard(JoinHandle<()>);

impl TaskGuard {
    pub(crate) fn new(handle: JoinHandle<()>) -> Self {
        Self(handle)
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the refresh task of `target` on `handle`; it ends when `target`
/// is dropped.
pub(crate) fn spawn_refresher<T: Refreshed>(
    target: &Arc<T>,
    source: Arc<dyn InstanceSource>,
    handle: &tokio::runtime::Handle,
) -> TaskGuard {
    let weak: Weak<T> = Arc::downgrade(target);
    let rng = match target.refresh().config.seed {
        Some(seed) => AtomicRng::with_seed(seed),
        None => AtomicRng::from_entropy(),
    };
    TaskGuard::new(handle.spawn(async move {
        let mut failures_before_first_success = 0u32;
        let mut ever_ok = false;
        loop {
            let Some(state) = weak.upgrade() else { return };
            let publish = |snapshot| state.publish(snapshot);
            let ok = state.refresh().refresh_once(&*source, &publish).await;
            ever_ok |= ok;
            if !ever_ok {
                failures_before_first_success = failures_before_first_success.saturating_add(1);
            } else {
                failures_before_first_success = 0;
            }
            let delay = state
                .refresh()
                .config
                .next_delay(&rng, ok, failures_before_first_success);
            drop(state);
            tokio::time::sleep(delay).await;
        }
    }))
}
