//! [`EurekaRegistry`]: one registry client per Eureka cluster, shared by
//! every service id, fetching the way the Java `DiscoveryClient` does.
//!
//! - At start: a full `GET /apps`.
//! - Then every interval (default 30 s): `GET /apps/delta`, applied by
//!   `actionType`: ADDED and MODIFIED insert or replace (a MODIFIED of an
//!   unknown instance adds it), DELETED removes (a no-op for an unknown
//!   one). Applying the same delta twice is harmless.
//! - After applying, the local status-count hash (`DOWN_1_UP_3_`, statuses
//!   sorted) is compared with the delta's `apps__hashcode`; on mismatch, or
//!   when the delta carries no hash at all, a full fetch replaces the local
//!   copy. A delta refused or unusable (`disableDelta`'s 403, a body that
//!   does not decode) is replaced by a full fetch; one that no server could
//!   answer (a timeout, a transport error, a 5xx or a 429 from each) fails
//!   the fetch and keeps the copy, as Java's client does: a hung server
//!   costs one request timeout per fetch, not two.
//! - A fetch due longer than `delta_retention` (default 3 min, the Eureka
//!   server's `retention-time-in-m-s-in-delta-queue`) after the copy was
//!   last complete (after an outage) is a full fetch: the server's delta no
//!   longer holds the outage's first changes, and the hash alone can miss
//!   them (an instance replaced by another of the same status keeps the
//!   counts), which would keep the gone instance in the copy for good.
//!   If that full fetch fails, the delta is still applied (and served, a
//!   drain it carries included), and the next fetch tries the full one
//!   again.
//! - The copy is bounded in records and in metadata, across deltas as in
//!   one payload. A full payload with more than `max_instances` elements,
//!   or whose records keep more than `max_metadata_entries` metadata
//!   entries together, is refused while decoding. A delta that would take
//!   the copy past `max_instances` records
//!   ([`DiscoveryError::RegistryFull`]) or past `max_metadata_entries`
//!   metadata entries ([`DiscoveryError::RegistryMetadataFull`]) is
//!   refused before it is applied; the copy is kept, and the hash check of
//!   a later delta brings the full fetch. So however many deltas arrive,
//!   the copy holds at most 2^20 metadata entries at the default bound:
//!   40 bytes each plus their text, about 40 MiB when keys repeat across
//!   records as Spring's do (shared), about 60 MiB measured with 256
//!   distinct keys per record and short values (keys past the 64 shared
//!   ones are copied). Their text (keys and values) is bounded by the body
//!   bound, `max_body_bytes`, across deltas too: a fetch that would take the
//!   copy past it is refused ([`DiscoveryError::RegistryMetadataTooLarge`])
//!   and the copy kept, since no full payload could carry such a copy. So
//!   is all the text the copy keeps per record (metadata, instance ids,
//!   skipped records' ids too, health check URLs, statuses):
//!   [`DiscoveryError::RegistryTextTooLarge`] past `max_body_bytes`.
//! - A failed fetch (transport, status, a payload without Eureka's shape,
//!   a bound) keeps the local copy; the next tick tries again (a delta if a
//!   full fetch ever succeeded, else a full fetch). Until a first fetch
//!   succeeds the copy is empty, so the next try comes sooner: 1 s, 2 s,
//!   4 s, ... up to the fetch interval. A delta applied before the full
//!   fetch its hash mismatch calls for fails stays applied, and services
//!   read the copy with it (the Java client keeps its updated copy too):
//!   a draining instance the delta marks is not served UP while the full
//!   fetches fail. The failure is counted and logged.
//! - While the registry's fetches fail, a service's read fails too, with a
//!   [`RegistryStale`] (inside [`DiscoveryError::Other`]) naming the
//!   registry's last error: the service's refresh keeps its last good list,
//!   and its `refresh_status` (failures, consecutive failures, time since
//!   the last success) and staleness gauge show the outage. The first
//!   success clears it. A read whose service last read the copy before
//!   its last successful fetch gets the copy instead, once: that fetch may
//!   have deleted or drained an instance the service's list still holds.
//!   So a change the registry shows reaches a service within the fetch
//!   interval plus the service's refresh interval, outage or not.
//! - `refresh_now` calls and the background loop join one fetch at a time
//!   (see [`EurekaRegistry::refresh_now`]).
//! - A full answer given in failover (after the server the copy followed
//!   failed) that lacks an app the copy holds asks that server once: an app
//!   it lists takes its records, one it lacks leaves; with no answer the
//!   app is held for `absence_hold` (90 s). Fetches stay at the server
//!   that answered; a failover lasts at most `absence_hold`. Outside a
//!   failover a full answer is the truth, as in Java's client.
//! - App names are matched upper-cased with Unicode rules, as Eureka (Java's
//!   `toUpperCase(Locale.ROOT)`) stores them: service id `über-service`
//!   finds app `ÜBER-SERVICE`.
//!
//! Services read the local copy through the registry's [`InstanceSource`]
//! implementation, so a balancer over many services costs one fetch per
//! interval, not one per service.
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_ribbon::LoadBalancer;
//! use tower_ribbon::discovery::eureka::EurekaRegistry;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = EurekaRegistry::builder()
//!     .server_urls("http://127.0.0.1:8761/eureka")
//!     .fetch_interval(Duration::from_secs(30))
//!     .build()?;
//! let lb = LoadBalancer::builder()
//!     .source(registry.clone())
//!     .services(["user-service", "auth-service"])
//!     .build(tower_ribbon::ReqwestService::default())?;
//! # let _ = lb; Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

mod copy;
mod failover;
mod fetch;
mod flight;
mod stale;
mod vip;

pub use copy::status_hash;
pub use crate::discovery::stale::RegistryStale;
pub use vip::VipSource;

use copy::{Registry, app_key, hash_of};
use fetch::run;
use stale::Failing;

use super::client::{Connection, EurekaHttp};
use super::wire::{self, ParseOptions};
use crate::discovery::{FetchFuture, InstanceSource, TaskGuard};
use crate::error::{BuildError, DiscoveryError};
use crate::instance::Instance;

/// Eureka's default `retention-time-in-m-s-in-delta-queue`: 3 min.
const DELTA_RETENTION: Duration = Duration::from_secs(180);

/// Counts of what the registry client has done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryStats {
    /// Full `GET /apps` fetches that succeeded.
    pub full_fetches: u64,
    /// `GET /apps/delta` fetches that succeeded and were applied.
    pub delta_fetches: u64,
    /// Deltas whose hash did not match after applying (each led to a full
    /// fetch).
    pub hash_mismatches: u64,
    /// Failed fetches (full or delta).
    pub failures: u64,
    /// Applications known.
    pub applications: usize,
    /// Instance records known (usable or not).
    pub instances: usize,
    /// Metadata entries of the known instances together (bounded by
    /// `max_metadata_entries`).
    pub metadata_entries: usize,
    /// Failed fetches since the last one that succeeded (0 while the
    /// registry answers).
    pub consecutive_failures: u64,
}

struct Inner {
    http: EurekaHttp,
    options: ParseOptions,
    registry: Mutex<Registry>,
    full_fetches: AtomicU64,
    delta_fetches: AtomicU64,
    hash_mismatches: AtomicU64,
    failures: AtomicU64,
    /// Bumped by every fetch applied (what a reader last got; see
    /// `EurekaRegistry::fetch`).
    generation: AtomicU64,
    /// The last ticket handed out: each fetch takes one as it is sent, in
    /// send order.
    tickets: AtomicU64,
    /// The ticket of the last fetch applied (changed under the registry
    /// lock): an answer is applied only if it was sent after that one, so
    /// an older answer arriving late (a slow background fetch racing
    /// `refresh_now`) never overwrites a newer one, and a newer answer
    /// arriving after an older one is applied. (The Java client's
    /// `fetchRegistryGeneration` drops any answer when another was applied
    /// since it started: there a newer `refresh_now` answer was dropped
    /// after an older background one, and a drain it carried waited a
    /// whole interval; helper 200.)
    applied_ticket: AtomicU64,
    /// `None` until the first fetch finishes; then its error, if any.
    first: watch::Sender<Option<Result<(), Arc<DiscoveryError>>>>,
    last_success: Mutex<Option<Instant>>,
    /// When the fetch that last made the copy complete (a full fetch, or a
    /// delta whose hash matched) was sent.
    complete_at: Mutex<Option<Instant>>,
    /// How long the server keeps a change in its delta queue: a fetch
    /// later than that after `complete_at` is a full one.
    delta_retention: Duration,
    /// Failures since the last successful fetch, and the last error.
    failing: Mutex<Failing>,
    /// One fetch at a time (see `flight`).
    flight: flight::Flight,
    /// Failover answers' servers and held apps (see `failover`).
    failover: Mutex<failover::Failover>,
}

/// A shared, cached view of a whole Eureka registry. Cloning is cheap; the
/// background fetching stops when the last clone is dropped. Each clone
/// is a reader of its own for the outage rule of
/// [`fetch`](InstanceSource::fetch): give each balancer its own clone
/// (two balancers over one clone shared through an `Arc` are one reader,
/// and the second to read during an outage keeps its last list; built
/// during the outage, it takes the copy).
pub struct EurekaRegistry {
    inner: Arc<Inner>,
    _task: Arc<TaskGuard>,
    /// Apps (keys) this clone read successfully through
    /// [`InstanceSource::fetch`] (at most [`stale::MAX_SERVED`]), with the
    /// `generation` of the copy each last got: during an outage an app
    /// whose last read came after the copy's last applied fetch gets
    /// [`RegistryStale`] and keeps its last list, while an app this clone
    /// first reads then, or last read before that fetch (whose list may
    /// hold instances the copy no longer has), gets the copy. Kept by the
    /// registry for all its clones, one balancer's read stood for every
    /// balancer's: a second balancer sharing it kept a drained instance for
    /// the whole outage (369 of 738 requests in 5 s), and one built during
    /// the outage got no list at all. Each clone's own, it goes with it.
    served: Mutex<HashMap<String, u64>>,
}

impl Clone for EurekaRegistry {
    /// Shares the copy and its fetching; the clone is a reader of its own
    /// (see [`InstanceSource::fetch`]).
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _task: Arc::clone(&self._task),
            served: Mutex::new(HashMap::new()),
        }
    }
}

impl std::fmt::Debug for EurekaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EurekaRegistry")
            .field("http", &self.inner.http)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Configures an [`EurekaRegistry`]. Its `Debug` output hides credentials.
#[derive(Default)]
#[must_use]
pub struct EurekaRegistryBuilder {
    connection: Connection,
    options: ParseOptions,
    interval: Option<Duration>,
    delta_retention: Option<Duration>,
}

impl std::fmt::Debug for EurekaRegistryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EurekaRegistryBuilder")
            .field("urls", &self.connection.redacted_urls())
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl EurekaRegistryBuilder {
    connection_setters!();
    parse_setters!();
    absence_setter!();

    /// Time between two delta fetches. Spring key
    /// `eureka.client.registry-fetch-interval-seconds`. Values under 10 ms
    /// are raised to 10 ms. Default 30 s. An interval as long as
    /// [`delta_retention`](Self::delta_retention) (3 min) or longer makes
    /// every fetch a full one, since a delta would miss changes.
    pub fn fetch_interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval.max(Duration::from_millis(10)));
        self
    }

    /// How long the Eureka server keeps a change in its delta queue
    /// (server key `eureka.server.retention-time-in-m-s-in-delta-queue`):
    /// a fetch that comes longer than this after the copy was last
    /// complete (a full fetch, or a delta whose hash matched, counted from
    /// when it was sent) is a full fetch, since a delta would lack the
    /// changes made since then and its hash can still match (an instance
    /// replaced by another of the same status); if that full fetch fails,
    /// a delta is still applied meanwhile. Default 3 min, Eureka's
    /// default. Zero makes every fetch a full one.
    pub fn delta_retention(mut self, retention: Duration) -> Self {
        self.delta_retention = Some(retention);
        self
    }

    /// Builds the registry client and starts fetching.
    ///
    /// # Errors
    /// [`BuildError::Invalid`] for missing or bad URLs, a zero timeout, or
    /// `max_body_bytes`, `max_instances` or `max_metadata_entries` of 0
    /// (as [`EurekaSourceBuilder::build`](super::EurekaSourceBuilder::build));
    /// [`BuildError::NoRuntime`] outside a Tokio runtime.
    pub fn build(self) -> Result<EurekaRegistry, BuildError> {
        super::validate_options(&self.options)?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let inner = Arc::new(Inner {
            http: self.connection.build()?,
            options: self.options,
            registry: Mutex::new(HashMap::new()),
            full_fetches: AtomicU64::new(0),
            delta_fetches: AtomicU64::new(0),
            hash_mismatches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            tickets: AtomicU64::new(0),
            applied_ticket: AtomicU64::new(0),
            first: watch::Sender::new(None),
            last_success: Mutex::new(None),
            complete_at: Mutex::new(None),
            delta_retention: self.delta_retention.unwrap_or(DELTA_RETENTION),
            failing: Mutex::new(Failing::default()),
            flight: flight::Flight::default(),
            failover: Mutex::new(failover::Failover::default()),
        });
        let interval = self.interval.unwrap_or(Duration::from_secs(30));
        let weak = Arc::downgrade(&inner);
        let task = TaskGuard::new(handle.spawn(run(weak, interval)));
        Ok(EurekaRegistry {
            inner,
            _task: Arc::new(task),
            served: Mutex::new(HashMap::new()),
        })
    }
}

impl EurekaRegistry {
    /// Starts configuring a registry client.
    pub fn builder() -> EurekaRegistryBuilder {
        EurekaRegistryBuilder::default()
    }

    /// What the client has done so far.
    pub fn stats(&self) -> RegistryStats {
        let (applications, held) = {
            let registry = self.inner.lock();
            (registry.len(), copy::footprint(&registry))
        };
        RegistryStats {
            full_fetches: self.inner.full_fetches.load(Ordering::Relaxed),
            delta_fetches: self.inner.delta_fetches.load(Ordering::Relaxed),
            hash_mismatches: self.inner.hash_mismatches.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
            applications,
            instances: held.records,
            metadata_entries: held.metadata,
            consecutive_failures: self.inner.lock_failing().consecutive,
        }
    }

    /// Fetches now, outside the schedule: a delta (reconciled by hash) once
    /// a full fetch has succeeded, else a full fetch (also when the copy
    /// was last complete longer than
    /// [`delta_retention`](EurekaRegistryBuilder::delta_retention) ago). A success makes the
    /// registry [`ready`](Self::ready), also after a failed first fetch.
    ///
    /// Calls made while a fetch runs (another `refresh_now` or the
    /// background one) wait for it and send one more fetch after it,
    /// shared by all of them: a fetch that started before the call asked
    /// may miss a change made just before, one started after cannot. So
    /// sixteen concurrent calls cost at most two fetches, not sixteen.
    ///
    /// # Errors
    /// The fetch's [`DiscoveryError`]; the local copy is kept (with the
    /// delta applied, when only the full fetch after a hash mismatch
    /// failed). A call that shared another's fetch gets its error as
    /// [`DiscoveryError::Other`], with the same text.
    pub async fn refresh_now(&self) -> Result<(), DiscoveryError> {
        self.inner.fetch_joined(true).await.map_err(|failed| {
            failed
                .own
                .unwrap_or_else(|| DiscoveryError::Other(Box::new(SharedError(failed.shared))))
        })
    }

    /// The local status-count hash (`DOWN_1_UP_3_`).
    pub fn local_hash(&self) -> String {
        hash_of(&self.inner.lock())
    }

    /// Time since the last successful fetch; `None` before the first.
    pub fn since_last_success(&self) -> Option<Duration> {
        self.inner
            .last_success
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }

    /// Waits until the first fetch has finished (successfully or not).
    ///
    /// # Errors
    /// The background loop's latest failed fetch's [`DiscoveryError`]
    /// while no fetch has succeeded yet; `Ok` once one has (background or [`refresh_now`](Self::refresh_now)).
    pub async fn ready(&self) -> Result<(), Arc<DiscoveryError>> {
        let mut rx = self.inner.first.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(first) => first.clone().unwrap_or(Ok(())),
            // The sender lives in `inner`, which `self` keeps alive.
            Err(_) => Ok(()),
        }
    }

    /// The usable instances of `app` in the local copy (every status).
    /// `app` is matched upper-cased with Unicode rules, as Eureka stores
    /// app names (`über-service` finds `ÜBER-SERVICE`).
    pub fn instances(&self, app: &str) -> Vec<Instance> {
        self.inner
            .lock()
            .get(&app_key(app))
            .map(|records| {
                records
                    .values()
                    .filter_map(|r| r.instance.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A source that looks up `/vips/{vip}` (Eureka's VIP address lookup,
    /// Ribbon's `DeploymentContextBasedVipAddresses`) on every fetch: the
    /// service id of a request is taken as the VIP address. It starts at
    /// the server the registry's fetches start at now, then fails over on
    /// its own: its fetches never move the registry's (clones of it share
    /// one starting server).
    pub fn vip_source(&self) -> VipSource {
        VipSource {
            http: self.inner.http.own_cursor(),
            options: self.inner.options,
        }
    }
}

impl InstanceSource for EurekaRegistry {
    /// Reads `service_id`'s instances from the local copy, after waiting
    /// for the first fetch. An app the registry does not list has no
    /// instances. While the registry's fetches fail, an app this clone
    /// read before fails with a [`RegistryStale`] (inside
    /// [`DiscoveryError::Other`]), so its refresh keeps its last list and
    /// counts the failure; an app this clone first reads during the
    /// outage, or last read before the copy's last successful fetch (its
    /// list may hold an instance that fetch deleted or drained), gets the
    /// copy, the last good data there is (as the Java client serves its
    /// cache), and the stale error from its next read on. Each clone
    /// counts as its own reader: two balancers over clones of one
    /// registry each get the copy once. A service whose refresh never
    /// succeeded takes the copy that comes with the stale error (one added
    /// again during an outage after its on-demand eviction, which this
    /// clone read before: it got no list until the registry fetched again)
    /// and its refresh counts the failure.
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            self.ready()
                .await
                .map_err(|e| DiscoveryError::Other(Box::new(SharedError(e))))?;
            let key = app_key(service_id);
            // Read before the copy: a fetch applied after this load makes
            // the app's next read take the copy once more (harmless).
            let generation = self.inner.generation.load(Ordering::Acquire);
            let behind = {
                let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
                let room = served.len() < stale::MAX_SERVED;
                match served.get_mut(&key) {
                    Some(last) => std::mem::replace(last, generation) != generation,
                    None if room => served.insert(key, generation).is_none(),
                    // Past the bound every app counts as read before.
                    None => false,
                }
            };
            if !behind {
                if let Some(mut stale) = self.inner.stale() {
                    // For a service of this clone with no list yet (added
                    // again after its on-demand eviction): its refresh
                    // takes the copy from the error.
                    stale.copy = Some(self.instances(service_id));
                    return Err(DiscoveryError::Other(Box::new(stale)));
                }
            }
            Ok(self.instances(service_id))
        })
    }
}

/// A shared first-fetch error, as an owned error.
#[derive(Debug)]
struct SharedError(Arc<DiscoveryError>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}
