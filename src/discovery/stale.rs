//! [`RegistryStale`]: what a service read from a failing Eureka registry
//! gets. Here rather than under `eureka`, so that the refresh, which takes
//! the copy it carries, does not import the Eureka client (which imports
//! the refresh's task guard).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::DiscoveryError;
use crate::instance::Instance;

/// Why a service's refresh over an
/// [`EurekaRegistry`](crate::discovery::eureka::EurekaRegistry) failed: the registry's last
/// fetch failed, so its local copy may be stale. The refresh counts a
/// failure (in `refresh_status`, the refresh failure counter and the
/// staleness gauge) and keeps its last good list, as it does for any
/// other source that cannot reach its registry. Returned inside
/// [`DiscoveryError::Other`]; downcast to read it.
///
/// A service whose refresh has not succeeded yet (one built, or added
/// again after its on-demand eviction, during the outage) takes the app's
/// list from the copy that comes with this error, the last good data
/// there is, as the Java client serves its cache; its refresh still
/// counts the failure. The refresh takes the copy out of the error before
/// keeping the error as its last.
#[derive(Clone)]
pub struct RegistryStale {
    pub(crate) consecutive_failures: u64,
    pub(crate) since_last_success: Option<Duration>,
    pub(crate) last_error: Arc<DiscoveryError>,
    /// The app's instances in the copy, for a service with no list yet.
    pub(crate) copy: Option<Vec<Instance>>,
}

impl fmt::Debug for RegistryStale {
    // The copy's length, not its instances (a list of thousands in a log
    // line).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryStale")
            .field("consecutive_failures", &self.consecutive_failures)
            .field("since_last_success", &self.since_last_success)
            .field("last_error", &self.last_error)
            .field("copy", &self.copy.as_ref().map(Vec::len))
            .finish()
    }
}

/// Takes the copy out of `err` when it is a [`RegistryStale`]: the list a
/// service with none yet takes during an outage (see [`RegistryStale`]).
pub(crate) fn take_copy(err: &mut DiscoveryError) -> Option<Vec<Instance>> {
    match err {
        DiscoveryError::Other(inner) => inner.downcast_mut::<RegistryStale>()?.copy.take(),
        _ => None,
    }
}

impl RegistryStale {
    /// Registry fetches that failed since the last one that succeeded.
    pub fn consecutive_failures(&self) -> u64 {
        self.consecutive_failures
    }

    /// Time since the registry's last successful fetch; `None` if none
    /// succeeded.
    pub fn since_last_success(&self) -> Option<Duration> {
        self.since_last_success
    }

    /// The error of the registry's last fetch.
    pub fn last_error(&self) -> &DiscoveryError {
        &self.last_error
    }
}

impl fmt::Display for RegistryStale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Eureka registry copy may be stale: {} fetches failed in a row",
            self.consecutive_failures
        )?;
        match self.since_last_success {
            Some(since) => write!(f, " (last success {:.1} s ago)", since.as_secs_f64())?,
            None => write!(f, " (none succeeded)")?,
        }
        write!(f, "; last: {}", self.last_error)
    }
}

impl std::error::Error for RegistryStale {
    // The last error's text is in `Display`; the chain goes on from its
    // source, so it is not printed twice.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.last_error.as_ref())
    }
}

