//! Per-endpoint live statistics, kept in atomics so the request path never
//! locks (Ribbon's `ServerStats`).
//!
//! An [`EndpointStats`] lives as long as its instance's identity: a refresh
//! that brings the same instance again keeps it. The balancer records every
//! attempt through an [`InFlightGuard`], which decrements the in-flight count
//! on every completion path, including a dropped (cancelled) future.
//!
//! ```
//! use tower_ribbon::stats::EndpointStats;
//!
//! let stats = EndpointStats::new();
//! {
//!     let guard = stats.start();
//!     assert_eq!(stats.in_flight(), 1);
//!     guard.success();
//! }
//! assert_eq!(stats.in_flight(), 0);
//! assert_eq!(stats.requests(), 1);
//! assert_eq!(stats.failures(), 0);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Live counters of one endpoint identity. All methods are lock-free.
#[derive(Default)]
pub struct EndpointStats {
    in_flight: AtomicUsize,
    requests: AtomicU64,
    failures: AtomicU64,
}

impl EndpointStats {
    /// Fresh stats: nothing in flight, no requests.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests sent to this endpoint and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Attempts started against this endpoint since it was first seen.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Attempts that ended in an error of the inner service (no response).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Starts an attempt: counts it and raises the in-flight count until the
    /// returned guard is finished or dropped.
    pub fn start(&self) -> InFlightGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlightGuard { stats: self }
    }
}

impl fmt::Debug for EndpointStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointStats")
            .field("in_flight", &self.in_flight())
            .field("requests", &self.requests())
            .field("failures", &self.failures())
            .finish()
    }
}

/// Keeps one attempt counted as in flight; dropping it ends the attempt.
///
/// Dropped without [`InFlightGuard::success`] or [`InFlightGuard::failure`]
/// (a cancelled request), it only lowers the in-flight count.
#[must_use = "dropping the guard ends the attempt at once"]
pub struct InFlightGuard<'a> {
    stats: &'a EndpointStats,
}

impl InFlightGuard<'_> {
    /// Ends the attempt with a response.
    pub fn success(self) {}

    /// Ends the attempt with an error of the inner service.
    pub fn failure(self) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for InFlightGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_every_path() {
        let s = EndpointStats::new();
        let a = s.start();
        let b = s.start();
        let c = s.start();
        assert_eq!(s.in_flight(), 3);
        a.success();
        b.failure();
        drop(c);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.requests(), 3);
        assert_eq!(s.failures(), 1);
    }
}
