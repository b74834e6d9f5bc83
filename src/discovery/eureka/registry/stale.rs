//! [`RegistryStale`]: what a service read from a failing registry gets.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::DiscoveryError;

/// Why a service's refresh over an
/// [`EurekaRegistry`](super::EurekaRegistry) failed: the registry's last
/// fetch failed, so its local copy may be stale. The refresh counts a
/// failure (in `refresh_status`, the refresh failure counter and the
/// staleness gauge) and keeps its last good list, as it does for any
/// other source that cannot reach its registry. Returned inside
/// [`DiscoveryError::Other`]; downcast to read it.
#[derive(Debug, Clone)]
pub struct RegistryStale {
    pub(super) consecutive_failures: u64,
    pub(super) since_last_success: Option<Duration>,
    pub(super) last_error: Arc<DiscoveryError>,
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

/// Apps the registry remembers as read (65 536): one more is treated as
/// read before, so its first read during an outage fails like the others.
pub(super) const MAX_SERVED: usize = 1 << 16;

/// The registry's failures since its last successful fetch.
#[derive(Debug, Default)]
pub(super) struct Failing {
    pub(super) consecutive: u64,
    pub(super) last_error: Option<Arc<DiscoveryError>>,
}
