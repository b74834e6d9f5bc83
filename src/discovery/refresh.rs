//! The background refresh of one service's instance list (Ribbon's
//! `PollingServerListUpdater` + `DynamicServerListLoadBalancer`).
//!
//! One task per service id: the first fetch at once, then one every
//! interval (default 30 s, ±10 % jitter so many clients do not fetch in
//! step). A successful fetch keeps the `UP` instances, reuses the stats of
//! every instance whose identity it already knew, and swaps the new
//! [`Snapshot`] in with one atomic store. A failed fetch keeps the last good
//! list, counts the failure and leaves the time since the last success
//! readable through [`RefreshStatus`]. The task ends when the balancer that
//! owns it is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{InstanceSource, Snapshot};
use crate::error::DiscoveryError;
use crate::instance::{Endpoint, Instance, InstanceKey};
use crate::rng::AtomicRng;
use crate::rule::Rule;

/// How the instance list of each service is refreshed.
///
/// ```
/// use std::time::Duration;
/// use tower_ribbon::discovery::RefreshConfig;
///
/// let config = RefreshConfig::default()
///     .interval(Duration::from_secs(5))
///     .jitter(0.0)
///     .first_fetch_wait(Duration::from_secs(2));
/// assert_eq!(config.get_interval(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct RefreshConfig {
    interval: Duration,
    jitter: f64,
    fetch_timeout: Duration,
    first_fetch_wait: Duration,
    keep_last_on_empty: bool,
    seed: Option<u64>,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            jitter: 0.1,
            fetch_timeout: Duration::from_secs(60),
            first_fetch_wait: Duration::from_secs(5),
            keep_last_on_empty: false,
            seed: None,
        }
    }
}

impl RefreshConfig {
    /// Time between two fetches of one service. Ribbon key
    /// `ServerListRefreshInterval`. Values under 1 ms are raised to 1 ms.
    /// Default is 30 s.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Fraction of the interval by which each wait is randomly lengthened or
    /// shortened, clamped to `0.0..=0.5`. Default is 0.1 (±10 %).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 0.5)
        } else {
            0.0
        };
        self
    }

    /// Bound on one fetch, whatever the source does inside; a fetch that
    /// takes longer counts as a failed refresh ([`DiscoveryError::Timeout`]).
    /// A safety net for sources without timeouts of their own: keep it above
    /// the source's worst case (for Eureka, servers × request timeout, so
    /// failover can reach the last server). Default is 60 s.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// How long a request may wait for the first fetch of its service to
    /// finish before failing with [`Error::DiscoveryTimeout`](crate::Error).
    /// Zero means "never wait". Default is 5 s.
    pub fn first_fetch_wait(mut self, wait: Duration) -> Self {
        self.first_fetch_wait = wait;
        self
    }

    /// What to do when a fetch succeeds but lists no `UP` instance while the
    /// current list is not empty. `false` (Ribbon's behaviour): apply the
    /// empty list; requests fail with `NoInstances` until a later fetch
    /// brings instances back. `true`: keep the current list and count the
    /// fetch as failed, guarding against a registry that suddenly forgets
    /// everything. Default is `false`.
    pub fn keep_last_on_empty(mut self, keep: bool) -> Self {
        self.keep_last_on_empty = keep;
        self
    }

    /// Seeds the jitter, for repeatable tests. Default: seeded from entropy.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The interval between fetches.
    pub fn get_interval(&self) -> Duration {
        self.interval
    }

    /// The bound on waiting for the first fetch.
    pub fn get_first_fetch_wait(&self) -> Duration {
        self.first_fetch_wait
    }

    fn next_delay(
        &self,
        rng: &AtomicRng,
        ok: bool,
        failures_before_first_success: u32,
    ) -> Duration {
        if !ok && failures_before_first_success > 0 {
            // Never had a list: retry sooner (1 s, 2 s, 4 s, ... up to the interval).
            let backoff = Duration::from_secs(1 << (failures_before_first_success - 1).min(16));
            return backoff.min(self.interval);
        }
        if self.jitter == 0.0 {
            return self.interval;
        }
        let factor = 1.0 + self.jitter * (2.0 * rng.unit_f64() - 1.0);
        Duration::try_from_secs_f64(self.interval.as_secs_f64() * factor).unwrap_or(self.interval)
    }
}

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

/// The live state of one service: its snapshot, rule and refresh record.
pub(crate) struct ServiceState {
    service_id: Arc<str>,
    snapshot: ArcSwap<Snapshot>,
    rule: Arc<dyn Rule>,
    config: RefreshConfig,
    first_done: AtomicBool,
    first_done_tx: watch::Sender<bool>,
    counters: Mutex<Counters>,
    health: crate::health::HealthView,
}

impl ServiceState {
    pub(crate) fn new(
        service_id: &str,
        rule: Arc<dyn Rule>,
        config: RefreshConfig,
        panic_threshold_percent: u32,
    ) -> Self {
        let service_id: Arc<str> = Arc::from(service_id);
        Self {
            snapshot: ArcSwap::from_pointee(Snapshot::empty(Arc::clone(&service_id))),
            service_id,
            rule,
            config,
            first_done: AtomicBool::new(false),
            first_done_tx: watch::Sender::new(false),
            counters: Mutex::new(Counters::default()),
            health: crate::health::HealthView::new(panic_threshold_percent),
        }
    }

    pub(crate) fn service_id(&self) -> &str {
        &self.service_id
    }

    pub(crate) fn health(&self) -> &crate::health::HealthView {
        &self.health
    }

    pub(crate) fn rule(&self) -> &dyn Rule {
        &*self.rule
    }

    pub(crate) fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    pub(crate) fn snapshot_full(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
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

    fn lock_counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        // A poisoned lock only means a panic elsewhere mid-update of plain
        // counters; the values are still usable.
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn status(&self) -> RefreshStatus {
        let snap = self.snapshot.load();
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

    /// Fetches once and applies the result. Returns whether it succeeded.
    pub(crate) async fn refresh_once(&self, source: &dyn InstanceSource) -> bool {
        let fetched =
            match tokio::time::timeout(self.config.fetch_timeout, source.fetch(&self.service_id))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(DiscoveryError::Timeout {
                    server: "instance source".to_owned(),
                    after: self.config.fetch_timeout,
                }),
            };
        let result = fetched.and_then(|instances| self.apply(instances));
        let ok = result.is_ok();
        {
            let mut c = self.lock_counters();
            match result {
                Ok(()) => {
                    c.successes += 1;
                    c.consecutive_failures = 0;
                    c.last_success = Some(Instant::now());
                    c.last_error = None;
                    metrics::counter!(crate::metrics::REFRESH_SUCCESS, "service" => self.service_id.to_string())
                        .increment(1);
                }
                Err(e) => {
                    tracing::warn!(service = %self.service_id, error = %e, "instance list refresh failed; keeping the last list");
                    c.failures += 1;
                    c.consecutive_failures += 1;
                    c.last_error = Some(Arc::new(e));
                    metrics::counter!(crate::metrics::REFRESH_FAILURE, "service" => self.service_id.to_string())
                        .increment(1);
                }
            }
        }
        metrics::gauge!(crate::metrics::INSTANCES, "service" => self.service_id.to_string())
            .set(self.snapshot.load().len() as f64);
        if let Some(since) = self.lock_counters().last_success.map(|t| t.elapsed()) {
            metrics::gauge!(crate::metrics::REFRESH_STALENESS, "service" => self.service_id.to_string())
                .set(since.as_secs_f64());
        }
        if !self.first_done.swap(true, Ordering::AcqRel) {
            self.first_done_tx.send_replace(true);
        }
        ok
    }

    /// Builds and stores the next snapshot from a fetched list.
    fn apply(&self, instances: Vec<Instance>) -> Result<(), DiscoveryError> {
        let current = self.snapshot.load_full();
        let mut seen = HashSet::new();
        let eligible: Vec<Instance> = instances
            .into_iter()
            .filter(|i| i.status().is_up())
            .filter(|i| seen.insert(i.key()))
            .collect();

        if eligible.is_empty() && !current.is_empty() && self.config.keep_last_on_empty {
            return Err(DiscoveryError::EmptyList {
                service: self.service_id.to_string(),
            });
        }
        let unchanged = eligible.len() == current.len()
            && eligible
                .iter()
                .zip(current.endpoints())
                .all(|(new, old)| new == old.instance());
        if unchanged && current.version() > 0 {
            return Ok(());
        }

        let known: HashMap<InstanceKey, &Endpoint> = current
            .endpoints()
            .iter()
            .map(|e| (e.instance().key(), e))
            .collect();
        let (mut kept, mut added) = (0usize, 0usize);
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
                    Endpoint::new(instance)
                }
            })
            .collect();
        let removed = current.len() - kept;
        let next = Arc::new(Snapshot::new(
            Arc::clone(&self.service_id),
            endpoints,
            current.version() + 1,
        ));
        self.rule.update(&next);
        tracing::debug!(
            service = %self.service_id,
            instances = next.len(),
            added,
            removed,
            version = next.version(),
            "instance list updated"
        );
        self.snapshot.store(next);
        self.health.invalidate();
        Ok(())
    }
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

/// Starts the refresh task of `state` on `handle`.
pub(crate) fn spawn_refresher(
    state: &Arc<ServiceState>,
    source: Arc<dyn InstanceSource>,
    handle: &tokio::runtime::Handle,
) -> TaskGuard {
    let weak: Weak<ServiceState> = Arc::downgrade(state);
    let rng = match state.config.seed {
        Some(seed) => AtomicRng::with_seed(seed),
        None => AtomicRng::from_entropy(),
    };
    TaskGuard::new(handle.spawn(async move {
        let mut failures_before_first_success = 0u32;
        let mut ever_ok = false;
        loop {
            let Some(state) = weak.upgrade() else { return };
            let ok = state.refresh_once(&*source).await;
            ever_ok |= ok;
            if !ever_ok {
                failures_before_first_success = failures_before_first_success.saturating_add(1);
            } else {
                failures_before_first_success = 0;
            }
            let delay = state
                .config
                .next_delay(&rng, ok, failures_before_first_success);
            drop(state);
            tokio::time::sleep(delay).await;
        }
    }))
}
