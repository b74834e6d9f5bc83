//! The services a balancer knows: declared ones, which live as long as the
//! balancer, and on-demand ones (Builder::discover_on_demand), which count
//! against a cap checked under the insert lock and expire when idle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::ServiceState;
use super::Shared;
use crate::discovery::{TaskGuard, spawn_refresher};

/// One known service and its background tasks (aborted when the entry is
/// dropped, that is when it leaves the map).
pub(super) struct Entry {
    pub(super) state: Arc<ServiceState>,
    on_demand: bool,
    /// Milliseconds since [`Shared::epoch`] of the last request.
    last_used_ms: AtomicU64,
    _tasks: Vec<TaskGuard>,
}

/// Service id to entry, hashed with FNV-1a: the key is hashed on every
/// request, and SipHash's flood resistance buys nothing here, since the map
/// holds only declared services and at most `max_services` on-demand ones
/// (so colliding keys cost at most that many comparisons).
///
/// Keys are `Arc<str>`: the map is copied on every insert (readers load it
/// without a lock), and a copy then costs a reference count per key, not
/// an allocation (helper 211: the call adding the 8 192nd service made
/// 8 216 allocations).
pub(super) type Services = HashMap<Arc<str>, Arc<Entry>, std::hash::BuildHasherDefault<Fnv>>;

/// FNV-1a, 64 bit (Fowler, Noll, Vo).
#[derive(Default)]
pub(super) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

impl Shared {
    /// The service a host names, case kept: a fully qualified name's
    /// trailing dot (`svc.`) is dropped, since `svc.` and `svc` are one host
    /// (RFC 1034, section 3.1) and must share one slot.
    pub(super) fn name(host: &str) -> &str {
        match host.strip_suffix('.') {
            Some(name) if !name.is_empty() => name,
            _ => host,
        }
    }

    /// The map key of the service a host names: its [`name`](Self::name),
    /// lowercased.
    fn key(service_id: &str) -> std::borrow::Cow<'_, str> {
        let service_id = Self::name(service_id);
        if service_id.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(service_id.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(service_id)
        }
    }

    fn ms_now(&self) -> u64 {
        let ms = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// The service's state, without marking it used.
    pub(super) fn get(&self, service_id: &str) -> Option<Arc<ServiceState>> {
        let map = self.services.load();
        map.get(Self::key(service_id).as_ref())
            .map(|e| Arc::clone(&e.state))
    }

    /// The service's state for a request: an on-demand service is marked
    /// used (one relaxed store).
    pub(super) fn route(&self, service_id: &str) -> Option<Arc<ServiceState>> {
        let map = self.services.load();
        let entry = map.get(Self::key(service_id).as_ref())?;
        if entry.on_demand {
            entry.last_used_ms.store(self.ms_now(), Ordering::Relaxed);
        }
        Some(Arc::clone(&entry.state))
    }

    /// Adds a service and starts its refresh, unless it exists already.
    /// An on-demand service is refused (`None`) when `max_services`
    /// on-demand services exist and none can be evicted; the count is
    /// checked under the insert lock, so racing requests cannot exceed it.
    pub(super) fn add_service(
        &self,
        service_id: &str,
        on_demand: bool,
    ) -> Option<Arc<ServiceState>> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock so two racing requests start one task.
        if let Some(state) = self.route(service_id) {
            return Some(state);
        }
        let service_id = Self::name(service_id);
        if on_demand && self.on_demand_count.load(Ordering::Relaxed) >= self.max_services {
            self.evict();
            if self.on_demand_count.load(Ordering::Relaxed) >= self.max_services {
                return None;
            }
        }
        let state = Arc::new(
            ServiceState::new(
                service_id,
                (self.make_rule)(),
                self.refresh.clone(),
                self.stats.clone(),
                self.request.outliers.panic_threshold_percent,
            )
            .with_request_config(Arc::clone(&self.request))
            // Validated by the builder, so `build` cannot fail here.
            .with_retry_budget(self.request.retry.build().ok().flatten())
            .with_instance_cookie(self.instance_cookies.for_service(service_id))
            .on_demand(on_demand),
        );
        #[cfg_attr(not(feature = "hyper-util"), allow(unused_mut))]
        let mut service_tasks = vec![spawn_refresher(
            &state,
            Arc::clone(&self.source),
            &self.handle,
        )];
        #[cfg(feature = "hyper-util")]
        if let Some(check) = &self.active_health {
            let (list, view) = (Arc::downgrade(&state), Arc::downgrade(&state));
            let (wait_for_probe, published) = state.active_check_links();
            let hooks = crate::health::CheckHooks {
                wait_for_probe,
                published,
                service: state.service_id().to_owned(),
                snapshot: Box::new(move || list.upgrade().map(|s| s.snapshot())),
                // The rule may read verdicts at build time (slow start
                // after a recovery): rebuild, which also recounts health.
                uneject_on_pass: self.request.outliers.enabled
                    && self
                        .request
                        .outliers
                        .successful_active_health_check_uneject_host,
                changed: Box::new(move || {
                    view.upgrade().into_iter().for_each(|s| s.rebuild_picker())
                }),
            };
            service_tasks.push(crate::health::spawn_health_checks(
                hooks,
                check.clone(),
                &self.handle,
            ));
        }
        let entry = Arc::new(Entry {
            state: Arc::clone(&state),
            on_demand,
            last_used_ms: AtomicU64::new(self.ms_now()),
            _tasks: service_tasks,
        });
        let key: Arc<str> = Arc::from(Self::key(service_id).as_ref());
        self.services.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(Arc::clone(&key), Arc::clone(&entry));
            map
        });
        if on_demand {
            // Changed under the insert lock only, as the map is.
            self.on_demand_count.fetch_add(1, Ordering::Relaxed);
        }
        if on_demand && tasks.is_empty() {
            tasks.push(spawn_sweeper(self));
        }
        Some(state)
    }

    /// The error for a host naming no known service: which services exist
    /// and what to do.
    pub(super) fn unknown_service(&self, host: &str) -> crate::Error {
        const SHOWN: usize = 10;
        metrics::counter!(crate::metrics::UNKNOWN_SERVICE).increment(1);
        let service = crate::error::quote(host);
        match self.unknown_logged.admit() {
            // `suppressed`: requests logged at DEBUG since the last line.
            Some(suppressed) => tracing::info!(
                service = %service,
                suppressed,
                "request to an unknown service"
            ),
            None => tracing::debug!(service = %service, "request to an unknown service"),
        }
        let map = self.services.load();
        let mut known: Vec<&str> = map.values().map(|e| e.state.service_id()).collect();
        // The first `SHOWN` in order, without sorting them all (a refused
        // name at a cap of 16 384 took 49 ms; helper 211).
        if known.len() > SHOWN {
            known.select_nth_unstable(SHOWN);
            known[..SHOWN].sort_unstable();
        } else {
            known.sort_unstable();
        }
        let mut list: Vec<String> = known
            .iter()
            .take(SHOWN)
            .map(|s| format!("`{}`", crate::error::quote(s)))
            .collect();
        if known.len() > SHOWN {
            list.push(format!("and {} more", known.len() - SHOWN));
        }
        let known = if list.is_empty() {
            "no services are known".to_owned()
        } else {
            format!("known services: {}", list.join(", "))
        };
        let remedy = if !self.discover_on_demand {
            "declare it with `Builder::service`, or turn on `Builder::discover_on_demand`"
                .to_owned()
        } else if Self::name(host).len() > 253 {
            "a host name over 253 bytes never starts discovery".to_owned()
        } else {
            format!(
                "the on-demand cap (`max_services` = {}) is reached; raise it or shorten `on_demand_idle`",
                self.max_services
            )
        };
        crate::Error::unknown_service(host).with_note(format!("{known}; {remedy}"))
    }

    /// Removes on-demand services idle for `on_demand_idle`. Declared
    /// services are never removed, nor is a service whose first fetch is
    /// still running: requests may be waiting for that list, and removing
    /// the service would stop the fetch they wait for. (The fetch timeout
    /// bounds that wait, so made-up names still free their slots.) Nor is
    /// one with a request in flight (a stream, a WebSocket): a service
    /// discovered again gets fresh stats, and its least-loaded rules would
    /// no longer see those requests on their instances. Nor is one whose
    /// request is still alive, waiting for readiness or in a backoff (its
    /// later picks would read a list no longer refreshed). Call with the
    /// insert lock held.
    fn evict(&self) {
        let now = self.ms_now();
        let idle_ms = u64::try_from(self.on_demand_idle.as_millis()).unwrap_or(u64::MAX);
        let idle = |e: &Entry| {
            e.on_demand
                && now.saturating_sub(e.last_used_ms.load(Ordering::Relaxed)) >= idle_ms
                && e.state.first_fetch_done()
                && !e.state.has_in_flight()
        };
        // Claimed one by one: a request holding the service (or taking its
        // hold first) keeps it; one routed to it after the claim routes
        // again (see `ServiceState::claim_for_eviction`).
        let map = self.services.load();
        let mut claimed = false;
        for entry in map.values() {
            if idle(entry) && entry.state.claim_for_eviction() {
                // A request that ended (dropping its hold) between the
                // check and the claim may have left its body open: keep
                // the service then (helper 216).
                if entry.state.has_in_flight() {
                    entry.state.release_claim();
                } else {
                    claimed = true;
                }
            }
        }
        if !claimed {
            return;
        }
        let mut removed = 0;
        self.services.rcu(|map| {
            let mut map = HashMap::clone(map);
            let before = map.len();
            map.retain(|_, e| !(e.on_demand && e.state.is_claimed()));
            removed = before - map.len();
            map
        });
        self.on_demand_count.fetch_sub(removed, Ordering::Relaxed);
    }
}

/// Sweeps idle on-demand services every half idle time, as long as the
/// balancer lives.
fn spawn_sweeper(shared: &Shared) -> TaskGuard {
    let weak: Weak<Shared> = shared.me.clone();
    let every = (shared.on_demand_idle / 2).max(Duration::from_millis(1));
    TaskGuard::new(shared.handle.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            let _lock = shared.tasks.lock().unwrap_or_else(|e| e.into_inner());
            shared.evict();
        }
    }))
}
