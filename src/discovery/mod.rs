//! Where instance lists come from, and how they are kept fresh.
//!
//! - [`InstanceSource`]: fetches the instances of one service id (Ribbon's
//!   `ServerList`, Spring Cloud's `ServiceInstanceListSupplier`).
//! - [`StaticSource`]: fixed lists in Ribbon's `listOfServers` form, which
//!   can also be replaced at run time.
//! - [`eureka::EurekaSource`] (feature `eureka`): a Eureka registry.
//! - [`Snapshot`] (defined in [`snapshot`](crate::snapshot), re-exported
//!   here): the immutable list of eligible endpoints a refresh publishes.
//! - [`RefreshConfig`] / [`RefreshStatus`]: the background refresh that
//!   re-fetches every interval (Ribbon's `ServerListUpdater`), keeps the last
//!   good list when a fetch fails, and says how stale it is. It publishes
//!   each new list through a callback and knows nothing of rules or health
//!   (this module imports only `instance`, `snapshot` and `error`). A
//!   refreshed list keeps the instances it already held in their places
//!   and adds new ones after them, so a source that answers in another
//!   order each time does not move round robin's rotation (the same
//!   instances in another order are no change at all).
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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::DiscoveryError;
use crate::instance::Instance;

cfg_feature! {
    #![feature = "dns"]
    pub mod dns;
}
cfg_feature! {
    #![feature = "eureka"]
    pub mod eureka;
    mod stale;
}
mod refresh;
mod static_list;

pub use crate::snapshot::{Listing, Snapshot, SourceKind};
#[cfg(test)]
pub(crate) use refresh::MAX_DEPARTED;
pub(crate) use refresh::{NewEndpoint, Refresh, Refreshed, TaskGuard, spawn_refresher};
pub use refresh::{RefreshConfig, RefreshStatus};
#[cfg(feature = "config")]
pub(crate) use static_list::count_list_entries;
pub use static_list::{MAX_LIST_ENTRIES, StaticSource, parse_list_of_servers};

/// The future an [`InstanceSource`] returns.
pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Instance>, DiscoveryError>> + Send + 'a>>;

/// Fetches the current instances of a service id.
///
/// A source returns every instance it knows, with its status; the refresh
/// keeps only `UP` ones. It is called from the background refresh task, never
/// on the request path. An error leaves the last good list in place, except
/// [`DiscoveryError::UnknownService`]: the source no longer has the service,
/// and its list empties (unless
/// [`RefreshConfig::keep_last_on_empty`] is on). A panic in `fetch` or in
/// its future is caught and counts as a failed fetch
/// ([`DiscoveryError::Panicked`]): the last list stays and the refresh goes
/// on.
pub trait InstanceSource: Send + Sync + 'static {
    /// Fetches the instances of `service_id` (as written in request URIs,
    /// e.g. `user-service`; sources decide case rules, Eureka upper-cases).
    /// A fully qualified name's final dot is dropped before the balancer
    /// asks (`svc.` and `svc` are one host, RFC 1034 section 3.1): a
    /// source keyed by names as users write them should key them by
    /// [`service_key`], as [`StaticSource`] and `DnsSource` do.
    ///
    /// # Errors
    /// Any [`DiscoveryError`]; the refresh counts it and keeps the last list
    /// ([`DiscoveryError::UnknownService`] empties it).
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a>;

    /// What kind of source this is, for errors ("not in the registry",
    /// "the static list has none") and whether its instances carry
    /// statuses. Default [`SourceKind::Registry`].
    fn kind(&self) -> SourceKind {
        SourceKind::Registry
    }
}

impl<T: InstanceSource + ?Sized> InstanceSource for Arc<T> {
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
        (**self).fetch(service_id)
    }

    fn kind(&self) -> SourceKind {
        (**self).kind()
    }
}

impl<T: InstanceSource + ?Sized> InstanceSource for Box<T> {
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
        (**self).fetch(service_id)
    }

    fn kind(&self) -> SourceKind {
        (**self).kind()
    }
}

/// The key a source files `service_id` under: lower case (host names are
/// case-insensitive, RFC 4343), and one final dot dropped unless the name
/// is `.` alone, as the balancer drops it before asking (`svc.` names the
/// host `svc`). A source keyed by the id as written missed `svc.`, so a
/// service named `svc.` on both sides never got a list (helper 234).
pub fn service_key(service_id: &str) -> String {
    let name = match service_id.strip_suffix('.') {
        Some(name) if !name.is_empty() => name,
        _ => service_id,
    };
    name.to_ascii_lowercase()
}
