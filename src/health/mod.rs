//! Health: which instances of a service get traffic.
//!
//! An instance is **unhealthy** while its circuit breaker is open
//! ([`crate::stats::breaker`]), while outlier detection has it ejected
//! ([`outlier`], Envoy's outlier detection), or while its active health
//! checks hold it unhealthy ([`active`], Envoy's active health checking,
//! Ribbon's `IPing`). Rules pick among healthy instances only, unless fewer
//! than the [panic threshold](OutlierDetection::panic_threshold_percent)
//! of the instances are healthy: then health is ignored and traffic spreads
//! over all of them (Envoy's `healthy_panic_threshold`, default 50 %),
//! because a health signal that condemns most of a fleet is more likely
//! wrong than the fleet. Instances waiting for their first active probe
//! count on neither side (Envoy's `ignore_new_hosts_until_first_hc`): a
//! scale-up whose first probes are slow leaves the service as it was. Rules that skip tripped instances themselves
//! (availability filtering, best available, zone avoidance, PeakEwmaP2c)
//! skip none then either ([`PickContext::with_panic_mode`](crate::rule::PickContext::with_panic_mode)).
//! Set the threshold to 0 to keep every filter at any health.
//!
//! Per-service state is one counter recounted only when
//! something changed, a blackout / ejection ends or a pick brings a newer
//! list, so a pick over a fully healthy service pays two atomic loads. Per-instance state lives in the
//! instance's [`EndpointStats`](crate::stats::EndpointStats), so it
//! survives refreshes that bring the same instance again.
//!
//! Every config type here follows one convention: a `#[non_exhaustive]`
//! struct with public fields and `Default`, whose `validate()` the builder
//! calls once ([`InvalidConfig`] names the field).
//!
//! ```
//! use std::time::Duration;
//! use tower_ribbon::health::OutlierDetection;
//!
//! let mut detection = OutlierDetection::default();
//! detection.consecutive_5xx = 3;
//! detection.base_ejection_time = Duration::from_secs(10);
//! assert!(detection.validate().is_ok());
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::time::Instant;

use crate::discovery::Snapshot;

pub mod outlier;

cfg_feature! {
    #![feature = "hyper-util"]
    pub mod active;
    pub use active::{ActiveHealthCheck, MANAGEMENT_CONTEXT_PATH, MANAGEMENT_PORT};
    pub(crate) use active::{CheckHooks, spawn_health_checks};
}

pub use crate::stats::InvalidConfig;
pub use outlier::OutlierDetection;

const NO_CHANGE: u64 = u64::MAX;

/// `recount_at_ms` while a recount walks the list: not due for other
/// picks, and replaced by the recount's result only if no invalidation
/// (which stores 0) came meanwhile.
const RECOUNTING: u64 = u64::MAX - 1;

/// Which instances of one service are healthy, recounted only when
/// something changed, a blackout / ejection ends or a pick brings a newer
/// list, so a pick over a fully healthy service pays two atomic loads.
pub(crate) struct HealthView {
    base: Instant,
    panic_threshold_percent: u32,
    unhealthy: AtomicUsize,
    panic: AtomicBool,
    /// When to recount (ms since `base`); 0 = now, `NO_CHANGE` = on event.
    recount_at_ms: AtomicU64,
    recounting: AtomicBool,
    /// The version of the list the last recount walked: a pick over a
    /// newer list recounts, whatever `recount_at_ms` says (a pick still
    /// holding the list a refresh replaced may have taken the refresh's
    /// invalidation with a recount of the old list).
    counted_version: AtomicU64,
    /// The number of the last recount, unique across every view (see
    /// [`HealthView::epoch`]).
    epoch: AtomicU64,
}

/// The next recount's epoch: one counter for every view, so no two
/// recounts of any services share a number.
static NEXT_EPOCH: AtomicU64 = AtomicU64::new(1);

impl HealthView {
    pub(crate) fn new(panic_threshold_percent: u32) -> Self {
        Self {
            base: Instant::now(),
            panic_threshold_percent,
            unhealthy: AtomicUsize::new(0),
            panic: AtomicBool::new(false),
            recount_at_ms: AtomicU64::new(0),
            recounting: AtomicBool::new(false),
            counted_version: AtomicU64::new(0),
            epoch: AtomicU64::new(NEXT_EPOCH.fetch_add(1, Ordering::Relaxed)),
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_millis() as u64
    }

    /// Something changed (a trip, a recovery, an ejection, a check, a new
    /// list): recount at the next pick.
    pub(crate) fn invalidate(&self) {
        self.recount_at_ms.store(0, Ordering::Release);
    }

    /// Whether a pick at `now` must skip unhealthy instances: some are
    /// unhealthy and the service is not in panic mode.
    #[inline]
    pub(crate) fn filter(&self, snapshot: &Snapshot, now: Instant) -> bool {
        // A view with nothing due (every instance healthy, or waiting for
        // an event) needs no clock conversion.
        let at = self.recount_at_ms.load(Ordering::Acquire);
        let due = at != NO_CHANGE && self.ms(now) >= at;
        if (due || snapshot.version() > self.counted_version.load(Ordering::Acquire))
            && self
                .recounting
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.recount(snapshot, now);
            self.recounting.store(false, Ordering::Release);
        }
        self.unhealthy.load(Ordering::Relaxed) > 0 && !self.panic.load(Ordering::Relaxed)
    }

    /// The number of the last recount: the same number means the same
    /// health, so a picker may keep the unhealthy instances it walked for
    /// as long as the epoch lasts (round robin under the health filter
    /// then costs O(log u) per pick instead of two walks of the list). A
    /// change of health invalidates the view, and the pick that recounts
    /// starts a new epoch before it picks.
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether the service is in panic mode (as of the last recount).
    pub(crate) fn in_panic(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    fn recount(&self, snapshot: &Snapshot, now: Instant) {
        // Marked before the walk (a swap, so the walk sees every change an
        // earlier invalidation announced): an invalidation during the walk
        // replaces the mark with 0, and the result below does not overwrite
        // it. (A load after the walk and a compare-exchange from that value
        // lost such an invalidation: an instance ejected mid-walk kept its
        // full share until the ejection ended.)
        self.recount_at_ms.swap(RECOUNTING, Ordering::AcqRel);
        self.counted_version
            .store(snapshot.version(), Ordering::Release);
        let mut unhealthy = 0usize;
        let mut pending = 0usize;
        let mut next: Option<Instant> = None;
        for e in snapshot.endpoints() {
            let stats = e.stats();
            crate::metrics::record_ejection_returns(
                snapshot.service_id(),
                stats.end_expired_ejections(now),
            );
            if !stats.is_healthy_at(now) {
                unhealthy += 1;
                pending += usize::from(stats.is_active_pending());
                if let Some(at) = stats.healthy_again_at(now) {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
        }
        let healthy = snapshot.len() - unhealthy;
        // Instances waiting for their first probe (joined after the active
        // checks began) are left out of the panic threshold's count, as
        // Envoy's `ignore_new_hosts_until_first_hc` leaves them out: counted
        // as unhealthy, three unprobed instances beside two healthy ones
        // put the service in panic for as long as their first probes took,
        // and panic mode sent traffic to an instance that fails its checks
        // (20 of 120 requests; helper 187). When only unprobed instances
        // and failing ones are listed, panic mode still spreads over all.
        let n = snapshot.len() - pending;
        let panic = if n == 0 {
            pending > 0 && self.panic_threshold_percent > 0
        } else {
            healthy * 100 < self.panic_threshold_percent as usize * n
        };
        self.unhealthy.store(unhealthy, Ordering::Relaxed);
        self.panic.store(panic, Ordering::Relaxed);
        self.epoch.store(
            NEXT_EPOCH.fetch_add(1, Ordering::Relaxed),
            Ordering::Release,
        );
        let at = next.map_or(NO_CHANGE, |t| self.ms(t).clamp(1, RECOUNTING - 1));
        // An invalidation that came during the walk keeps its 0.
        let _ = self.recount_at_ms.compare_exchange(
            RECOUNTING,
            at,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests;
