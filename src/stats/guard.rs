//! [`InFlightGuard`]: one attempt counted in flight until it is finished
//! or dropped, and its guard-less form [`Detached`].

use std::fmt;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{BreakerTransition, EndpointStats, Outcome};

/// Keeps one attempt counted as in flight; finishing or dropping it ends
/// the attempt.
///
/// Dropped without [`InFlightGuard::finish`] (a cancelled request), it only
/// lowers the in-flight count and frees a half-open probe.
#[must_use = "dropping the guard ends the attempt at once"]
pub struct InFlightGuard<'a> {
    pub(super) stats: StatsRef<'a>,
    pub(super) started: Instant,
    pub(super) probe: bool,
    pub(super) done: bool,
}

/// An attempt still counted in flight, held without a reference to its
/// stats: whoever holds it also holds the stats (the balancer's attempt
/// holds the instance), records its result with
/// [`EndpointStats::record_detached`] and ends it with
/// [`EndpointStats::cancel_detached`]. It saves the reference-count
/// traffic of a guard that owns the stats, which on a multi-core host is
/// a contended cache line per request.
#[derive(Debug)]
pub(crate) struct Detached {
    pub(super) started: Instant,
    pub(super) probe: bool,
}

impl Detached {
    /// When the attempt started.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }
}

impl InFlightGuard<'_> {
    /// Ends the attempt now with `outcome`, measuring latency from start.
    /// Returns what the attempt did to the circuit breaker.
    pub fn finish(self, outcome: Outcome) -> BreakerTransition {
        self.finish_at(outcome, Instant::now())
    }

    /// Ends the attempt at `now` with `outcome` (latency zero for a `now`
    /// before the start).
    pub fn finish_at(mut self, outcome: Outcome, now: Instant) -> BreakerTransition {
        let latency = now.saturating_duration_since(self.started);
        self.done = true;
        let transition = self.stats.record(outcome, latency, now);
        if self.probe {
            self.stats.breaker.release_probe();
        }
        transition
    }

    /// Ends the attempt with a success now.
    pub fn success(self) {
        self.finish_at(Outcome::Success, Instant::now());
    }

    /// When the attempt started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Ends the attempt with an error of the inner service now.
    pub fn failure(self) {
        self.finish_at(Outcome::OtherError, Instant::now());
    }

    /// Whether this attempt is the breaker's half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// The stats an [`InFlightGuard`] ends an attempt on.
pub(super) enum StatsRef<'a> {
    Borrowed(&'a EndpointStats),
    Owned(std::sync::Arc<EndpointStats>),
}

impl std::ops::Deref for StatsRef<'_> {
    type Target = EndpointStats;

    fn deref(&self) -> &EndpointStats {
        match self {
            StatsRef::Borrowed(stats) => stats,
            StatsRef::Owned(stats) => stats,
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.done && self.probe {
            self.stats.breaker.release_probe();
        }
    }
}

impl fmt::Debug for InFlightGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightGuard")
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}
