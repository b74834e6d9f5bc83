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
//!   copy.
//! - The copy is bounded: a full payload with more than `max_instances`
//!   elements is refused while decoding, and a delta that would take the
//!   copy past `max_instances` records is refused before it is applied
//!   ([`DiscoveryError::RegistryFull`]).
//! - A failed fetch (transport, status, a payload without Eureka's shape,
//!   a bound) keeps the local copy; the next tick tries again (a delta if a
//!   full fetch ever succeeded, else a full fetch).
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
//! let client = reqwest::Client::new();
//! let lb = LoadBalancer::builder()
//!     .source(registry.clone())
//!     .services(["user-service", "auth-service"])
//!     .build(tower_ribbon::ReqwestService::new(client))?;
//! # let _ = lb; Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

mod copy;
mod vip;

pub use copy::status_hash;
pub use vip::VipSource;

use copy::{Registry, apply, hash_of};

use super::client::{Connection, EurekaHttp, Fetched};
use super::wire::{self, Applications, ParseOptions};
use crate::discovery::{FetchFuture, InstanceSource, TaskGuard};
use crate::error::{BuildError, DiscoveryError};
use crate::instance::Instance;

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
}

struct Inner {
    http: EurekaHttp,
    options: ParseOptions,
    registry: Mutex<Registry>,
    full_fetches: AtomicU64,
    delta_fetches: AtomicU64,
    hash_mismatches: AtomicU64,
    failures: AtomicU64,
    /// Bumped by every fetch applied: a fetch applies its answer only if
    /// none was applied since it started, so an older answer arriving late
    /// (a slow background fetch racing `refresh_now`) never overwrites a
    /// newer one. The Java client's `fetchRegistryGeneration`.
    generation: AtomicU64,
    /// `None` until the first fetch finishes; then its error, if any.
    first: watch::Sender<Option<Result<(), Arc<DiscoveryError>>>>,
    last_success: Mutex<Option<Instant>>,
}

/// A shared, cached view of a whole Eureka registry. Cloning is cheap; the
/// background fetching stops when the last clone is dropped.
#[derive(Clone)]
pub struct EurekaRegistry {
    inner: Arc<Inner>,
    _task: Arc<TaskGuard>,
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

    /// Time between two delta fetches. Spring key
    /// `eureka.client.registry-fetch-interval-seconds`. Values under 10 ms
    /// are raised to 10 ms. Default 30 s.
    pub fn fetch_interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval.max(Duration::from_millis(10)));
        self
    }

    /// Builds the registry client and starts fetching.
    ///
    /// # Errors
    /// [`BuildError::Invalid`] for missing or bad URLs;
    /// [`BuildError::NoRuntime`] outside a Tokio runtime.
    pub fn build(self) -> Result<EurekaRegistry, BuildError> {
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
            first: watch::Sender::new(None),
            last_success: Mutex::new(None),
        });
        let interval = self.interval.unwrap_or(Duration::from_secs(30));
        let weak = Arc::downgrade(&inner);
        let task = TaskGuard::new(handle.spawn(run(weak, interval)));
        Ok(EurekaRegistry {
            inner,
            _task: Arc::new(task),
        })
    }
}

async fn run(weak: Weak<Inner>, interval: Duration) {
    let mut have_full = false;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let result = if have_full {
            inner.delta().await
        } else {
            inner.full().await
        };
        match &result {
            Ok(()) => have_full = true,
            Err(e) => {
                inner.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "Eureka registry fetch failed; keeping the local copy");
            }
        }
        if inner.first.borrow().is_none() {
            let first = result.map_err(Arc::new);
            inner.first.send_replace(Some(first));
        } else if result.is_ok() {
            inner.first.send_replace(Some(Ok(())));
        }
        drop(inner);
        tokio::time::sleep(interval).await;
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn get(&self, path: &str) -> Result<Applications, DiscoveryError> {
        let options = self.options;
        // A 404 here is a wrong base path or a disabled endpoint, never an
        // empty registry (that is a 200 with no application).
        match self
            .http
            .get(path, false, move |body, deadline| {
                wire::decode_applications(body, options, Some(deadline))
            })
            .await?
        {
            Fetched::Found(apps) => Ok(apps),
            Fetched::NotFound => Err(DiscoveryError::Status {
                server: path.to_owned(),
                status: 404,
            }),
        }
    }

    /// Takes the next generation if `started` (read before the fetch) is
    /// still current; `false` if another fetch was applied meanwhile (this
    /// one's answer is older). Call with the registry lock held, so answers
    /// are applied in generation order.
    fn take_turn(&self, started: u64) -> bool {
        let newer = self
            .generation
            .compare_exchange(started, started.wrapping_add(1), Ordering::AcqRel, Ordering::Acquire)
            .is_err();
        if newer {
            tracing::info!("an older Eureka answer arrived after a newer one was applied; dropped");
        }
        !newer
    }

    async fn full(&self) -> Result<(), DiscoveryError> {
        let started = self.generation.load(Ordering::Acquire);
        let apps = self.get("apps").await?;
        {
            let mut registry = self.lock();
            if !self.take_turn(started) {
                return Ok(());
            }
            apply(&mut registry, &apps, true);
        }
        self.full_fetches.fetch_add(1, Ordering::Relaxed);
        *self.last_success.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(())
    }

    async fn delta(&self) -> Result<(), DiscoveryError> {
        let started = self.generation.load(Ordering::Acquire);
        let delta = match self.get("apps/delta").await {
            Ok(delta) => delta,
            Err(e) => {
                // Like the Java client: no usable delta (refused with
                // `disableDelta`, a failure) means a full fetch.
                tracing::info!(error = %e, "Eureka delta fetch failed; fetching the full registry");
                self.failures.fetch_add(1, Ordering::Relaxed);
                return self.full().await;
            }
        };
        let limit = self.options.max_instances;
        let matches = {
            let mut registry = self.lock();
            let would_hold = copy::size_after(&registry, &delta);
            if would_hold > limit {
                return Err(DiscoveryError::RegistryFull { limit, would_hold });
            }
            // Another fetch applied since this one started: its answer is
            // newer than this delta, which is dropped.
            if !self.take_turn(started) {
                return Ok(());
            }
            apply(&mut registry, &delta, false);
            // A delta without a hash cannot be checked: it is not taken as
            // consistent (the Java client's reconcile needs the hash too).
            delta
                .apps_hashcode
                .as_deref()
                .is_some_and(|expected| hash_of(&registry) == expected)
        };
        self.delta_fetches.fetch_add(1, Ordering::Relaxed);
        if matches {
            *self.last_success.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            return Ok(());
        }
        self.hash_mismatches.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            expected = ?delta.apps_hashcode,
            "Eureka delta hash mismatch; fetching the full registry"
        );
        self.full().await
    }
}

impl EurekaRegistry {
    /// Starts configuring a registry client.
    pub fn builder() -> EurekaRegistryBuilder {
        EurekaRegistryBuilder::default()
    }

    /// What the client has done so far.
    pub fn stats(&self) -> RegistryStats {
        let (applications, instances) = {
            let registry = self.inner.lock();
            (registry.len(), registry.values().map(BTreeMap::len).sum())
        };
        RegistryStats {
            full_fetches: self.inner.full_fetches.load(Ordering::Relaxed),
            delta_fetches: self.inner.delta_fetches.load(Ordering::Relaxed),
            hash_mismatches: self.inner.hash_mismatches.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
            applications,
            instances,
        }
    }

    /// Fetches now, outside the schedule: a delta (reconciled by hash) once
    /// a full fetch has succeeded, else a full fetch.
    ///
    /// # Errors
    /// The fetch's [`DiscoveryError`]; the local copy is kept.
    pub async fn refresh_now(&self) -> Result<(), DiscoveryError> {
        let result = if self.inner.full_fetches.load(Ordering::Relaxed) > 0 {
            self.inner.delta().await
        } else {
            self.inner.full().await
        };
        if result.is_err() {
            self.inner.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
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
    pub async fn ready(&self) -> Result<(), Arc<DiscoveryError>> {
        let mut rx = self.inner.first.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(first) => first.clone().unwrap_or(Ok(())),
            // The sender lives in `inner`, which `self` keeps alive.
            Err(_) => Ok(()),
        }
    }

    /// The usable instances of `app` in the local copy (every status).
    pub fn instances(&self, app: &str) -> Vec<Instance> {
        self.inner
            .lock()
            .get(&app.trim().to_ascii_uppercase())
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
    /// service id of a request is taken as the VIP address.
    pub fn vip_source(&self) -> VipSource {
        VipSource {
            http: self.inner.http.clone(),
            options: self.inner.options,
        }
    }
}

impl InstanceSource for EurekaRegistry {
    /// Reads `service_id`'s instances from the local copy, after waiting
    /// for the first fetch. An app the registry does not list has no
    /// instances.
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            self.ready()
                .await
                .map_err(|e| DiscoveryError::Other(Box::new(SharedError(e))))?;
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
