//! Where instance lists come from, and how they are kept fresh.
//!
//! - [`InstanceSource`]: fetches the instances of one service id (Ribbon's
//!   `ServerList`, Spring Cloud's `ServiceInstanceListSupplier`).
//! - [`StaticSource`]: fixed lists in Ribbon's `listOfServers` form, which
//!   can also be replaced at run time.
//! - [`eureka::EurekaSource`] (feature `eureka`): a Eureka registry.
//! - [`Snapshot`]: the immutable list of eligible endpoints a pick reads.
//! - [`RefreshConfig`] / [`RefreshStatus`]: the background refresh that
//!   re-fetches every interval (Ribbon's `ServerListUpdater`), keeps the last
//!   good list when a fetch fails, and says how stale it is.
//!
//! Writing a source of your own:
//!
//! ```
//! use tower_ribbon::discovery::{FetchFuture, InstanceSource};
//! use tower_ribbon::instance::Instance;
//!
//! struct Localhost;
//!
//! impl InstanceSource for Localhost {
//!     fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
//!         Box::pin(async move {
//!             Ok(vec![Instance::new(service_id, "127.0.0.1", 8080).expect("valid address")])
//!         })
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::DiscoveryError;
use crate::instance::{Endpoint, Instance};

cfg_feature! {
    #![feature = "dns"]
    pub mod dns;
}
cfg_feature! {
    #![feature = "eureka"]
    pub mod eureka;
}
mod refresh;
mod static_list;

pub use refresh::{RefreshConfig, RefreshStatus};
pub(crate) use refresh::{ServiceState, TaskGuard, spawn_refresher};
pub use static_list::{StaticSource, parse_list_of_servers};

/// The future an [`InstanceSource`] returns.
pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Instance>, DiscoveryError>> + Send + 'a>>;

/// Fetches the current instances of a service id.
///
/// A source returns every instance it knows, with its status; the refresh
/// keeps only `UP` ones. It is called from the background refresh task, never
/// on the request path. An error leaves the last good list in place.
pub trait InstanceSource: Send + Sync + 'static {
    /// Fetches the instances of `service_id` (as written in request URIs,
    /// e.g. `user-service`; sources decide case rules, Eureka upper-cases).
    ///
    /// # Errors
    /// Any [`DiscoveryError`]; the refresh counts it and keeps the last list.
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a>;
}

impl<T: InstanceSource + ?Sized> InstanceSource for Arc<T> {
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
        (**self).fetch(service_id)
    }
}

impl<T: InstanceSource + ?Sized> InstanceSource for Box<T> {
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
        (**self).fetch(service_id)
    }
}

/// The eligible endpoints of one service at one moment.
///
/// Immutable: a refresh builds a new snapshot and swaps it in atomically, so
/// a pick always reads one consistent list. `version` grows by one per
/// applied refresh, so rules can tell whether state they computed on refresh
/// belongs to the snapshot they are reading.
pub struct Snapshot {
    service_id: Arc<str>,
    endpoints: Box<[Endpoint]>,
    version: u64,
}

impl Snapshot {
    /// A snapshot of `endpoints` for `service_id` at `version`.
    pub fn new(service_id: impl Into<Arc<str>>, endpoints: Vec<Endpoint>, version: u64) -> Self {
        Self {
            service_id: service_id.into(),
            endpoints: endpoints.into_boxed_slice(),
            version,
        }
    }

    /// An empty snapshot (version 0), what a service holds before its first
    /// fetch.
    pub fn empty(service_id: impl Into<Arc<str>>) -> Self {
        Self::new(service_id, Vec::new(), 0)
    }

    /// The service id.
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// The endpoints, in the order the source listed them.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// No endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The refresh version this snapshot was built at (0 before any fetch).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether `endpoint` (by identity) is in this snapshot.
    pub fn contains(&self, endpoint: &Endpoint) -> bool {
        self.endpoints.iter().any(|e| e.same_identity(endpoint))
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("service_id", &self.service_id)
            .field("version", &self.version)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}
