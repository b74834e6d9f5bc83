//! Passive health: outlier ejection on top of the circuit breaker, the
//! panic threshold, and the per-service view of which instances are
//! healthy (Envoy's outlier detection; Ribbon's `AvailabilityPredicate`).
//!
//! An instance is **unhealthy** while its circuit breaker is open, while
//! outlier detection has it ejected, or while its active health check
//! fails (see [`ActiveHealthCheck`]).
//! Rules pick among healthy instances only, unless fewer than the
//! [panic threshold](OutlierDetection::panic_threshold_percent) of the
//! instances are healthy: then health is ignored and traffic spreads over
//! all of them (Envoy's panic mode), because a health signal that condemns
//! most of a fleet is more likely wrong than the fleet.
//!
//! **Outlier ejection** (after Envoy): `consecutive_5xx` (default 5)
//! successive 5xx or connection-level failures, or
//! `consecutive_gateway_failure` (default 5) successive 502/503/504 or
//! connection-level failures, eject the instance for `base_ejection_time`
//! (default 30 s) × times ejected, at most `max_ejection_time` (default
//! 300 s). Never more than `max_ejection_percent` (default 50 %) of the
//! instances are ejected at once, but at least one may be. The panic
//! threshold defaults to 50 % healthy.
//!
//! ```
//! use std::time::Duration;
//! use tower_ribbon::health::OutlierDetection;
//!
//! let detection = OutlierDetection::default()
//!     .consecutive_5xx(3)
//!     .base_ejection_time(Duration::from_secs(10));
//! assert_eq!(detection.get_consecutive_5xx(), 3);
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::instance::Endpoint;
use crate::snapshot::Snapshot;

mod active;

pub use active::ActiveHealthCheck;
pub(crate) use active::spawn_health_checks;

/// Outlier ejection and panic-threshold settings (Envoy's
/// `outlier_detection` and `healthy_panic_threshold`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    enabled: bool,
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    base_ejection: Duration,
    max_ejection: Duration,
    max_ejection_percent: u32,
    panic_threshold_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_5xx: 5,
            consecutive_gateway: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
            panic_threshold_percent: 50,
        }
    }
}

impl OutlierDetection {
    /// No ejection (the breaker and the panic threshold still apply).
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Successive 5xx or connection-level failures that eject. 0 turns
    /// this trigger off. Envoy `consecutive_5xx`. Default 5.
    pub fn consecutive_5xx(mut self, n: u32) -> Self {
        self.consecutive_5xx = n;
        self
    }

    /// Successive 502/503/504 or connection-level failures that eject. 0
    /// turns this trigger off. Envoy `consecutive_gateway_failure`.
    /// Default 5.
    pub fn consecutive_gateway_failure(mut self, n: u32) -> Self {
        self.consecutive_gateway = n;
        self
    }

    /// Ejection time per ejection; the `n`-th ejection lasts `n ×` this.
    /// Envoy `base_ejection_time`. Default 30 s.
    pub fn base_ejection_time(mut self, d: Duration) -> Self {
        self.base_ejection = d;
        self
    }

    /// Longest ejection. Envoy `max_ejection_time`. Default 300 s.
    pub fn max_ejection_time(mut self, d: Duration) -> Self {
        self.max_ejection = d;
        self
    }

    /// Most instances ejected at once, in percent (at least one is always
    /// allowed). Envoy `max_ejection_percent`. Default 50.
    pub fn max_ejection_percent(mut self, percent: u32) -> Self {
        self.max_ejection_percent = percent.min(100);
        self
    }

    /// Below this share of healthy instances, in percent, health is
    /// ignored. 0 disables panic mode. Envoy `healthy_panic_threshold`.
    /// Default 50.
    pub fn panic_threshold_percent(mut self, percent: u32) -> Self {
        self.panic_threshold_percent = percent.min(100);
        self
    }

    /// The 5xx trigger.
    pub fn get_consecutive_5xx(&self) -> u32 {
        self.consecutive_5xx
    }

    /// The panic threshold in percent.
    pub fn get_panic_threshold_percent(&self) -> u32 {
        self.panic_threshold_percent
    }

    /// Ejects `endpoint` if its consecutive errors reached a trigger and
    /// the share of ejected instances allows it. Returns the ejection time.
    pub(crate) fn observe(
        &self,
        snapshot: &Snapshot,
        endpoint: &Endpoint,
        now: Instant,
    ) -> Option<Duration> {
        let stats = endpoint.stats();
        let hit = |limit: u32, count: u32| limit > 0 && count >= limit;
        if !self.enabled
            || !(hit(self.consecutive_5xx, stats.consecutive_server_errors())
                || hit(self.consecutive_gateway, stats.consecutive_gateway_errors()))
            || stats.is_ejected_at(now)
            || !snapshot.contains(endpoint)
        {
            return None;
        }
        let n = snapshot.len();
        let ejected = snapshot
            .endpoints()
            .iter()
            .filter(|e| e.stats().is_ejected_at(now))
            .count();
        let allowed = (n * self.max_ejection_percent as usize / 100).max(1);
        if ejected >= allowed {
            return None;
        }
        Some(stats.eject(now, self.base_ejection, self.max_ejection))
    }
}

const NO_CHANGE: u64 = u64::MAX;

/// Which instances of one service are healthy, recounted only when
/// something changed or a blackout / ejection ends, so a pick over a fully
/// healthy service pays one atomic load.
pub(crate) struct HealthView {
    base: Instant,
    panic_threshold_percent: u32,
    unhealthy: AtomicUsize,
    panic: AtomicBool,
    /// When to recount (ms since `base`); 0 = now, `NO_CHANGE` = on event.
    recount_at_ms: AtomicU64,
    recounting: AtomicBool,
}

impl HealthView {
    pub(crate) fn new(panic_threshold_percent: u32) -> Self {
        Self {
            base: Instant::now(),
            panic_threshold_percent,
            unhealthy: AtomicUsize::new(0),
            panic: AtomicBool::new(false),
            recount_at_ms: AtomicU64::new(0),
            recounting: AtomicBool::new(false),
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
        if self.ms(now) >= self.recount_at_ms.load(Ordering::Acquire)
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

    /// Whether the service is in panic mode (as of the last recount).
    pub(crate) fn in_panic(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    fn recount(&self, snapshot: &Snapshot, now: Instant) {
        let mut unhealthy = 0usize;
        let mut next: Option<Instant> = None;
        for e in snapshot.endpoints() {
            let stats = e.stats();
            if stats.end_expired_ejection(now) {
                metrics::counter!(crate::metrics::EJECTION_RETURNS, "service" => snapshot.service_id().to_owned())
                    .increment(1);
            }
            if !stats.is_healthy_at(now) {
                unhealthy += 1;
                if let Some(at) = stats.healthy_again_at(now) {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
        }
        let n = snapshot.len();
        let healthy = n - unhealthy;
        let panic = n > 0 && healthy * 100 < self.panic_threshold_percent as usize * n;
        self.unhealthy.store(unhealthy, Ordering::Relaxed);
        self.panic.store(panic, Ordering::Relaxed);
        let at = next.map_or(NO_CHANGE, |t| self.ms(t).max(1));
        // An invalidation that raced with this recount keeps its 0.
        let seen = self.recount_at_ms.load(Ordering::Acquire);
        let _ = self
            .recount_at_ms
            .compare_exchange(seen, at, Ordering::AcqRel, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::Instance;
    use crate::stats::Outcome;

    fn snapshot(n: u16) -> Snapshot {
        let eps = (0..n)
            .map(|p| Endpoint::new(Instance::new("s", "127.0.0.1", 1000 + p).unwrap()))
            .collect();
        Snapshot::new("s", eps, 1)
    }

    fn fail(e: &Endpoint, now: Instant, outcome: Outcome) {
        e.stats().start_at(now).finish_at(outcome, now);
    }

    #[tokio::test(start_paused = true)]
    async fn five_5xx_eject_for_base_times_count() {
        let s = snapshot(4);
        let d = OutlierDetection::default();
        let e = &s.endpoints()[0];
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(d.observe(&s, e, t0), None, "after {i}");
            fail(e, t0, Outcome::FailureStatus(500));
        }
        assert_eq!(d.observe(&s, e, t0), Some(Duration::from_secs(30)));
        assert!(e.stats().is_ejected_at(t0 + Duration::from_millis(29_999)));
        assert!(!e.stats().is_ejected_at(t0 + Duration::from_secs(30)));
        // The second ejection lasts 60 s.
        let t1 = t0 + Duration::from_secs(30);
        assert!(e.stats().end_expired_ejection(t1));
        for _ in 0..5 {
            fail(e, t1, Outcome::ConnectFailure);
        }
        assert_eq!(d.observe(&s, e, t1), Some(Duration::from_secs(60)));
        assert_eq!(e.stats().times_ejected(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_and_429_is_not_a_5xx() {
        let s = snapshot(2);
        let d = OutlierDetection::default();
        let e = &s.endpoints()[0];
        let t0 = Instant::now();
        for _ in 0..4 {
            fail(e, t0, Outcome::FailureStatus(503));
        }
        fail(e, t0, Outcome::Success);
        fail(e, t0, Outcome::FailureStatus(503));
        assert_eq!(e.stats().consecutive_server_errors(), 1);
        fail(e, t0, Outcome::FailureStatus(429));
        assert_eq!(e.stats().consecutive_server_errors(), 0);
        assert_eq!(d.observe(&s, e, t0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_the_max_share_is_ejected_but_always_one() {
        let d = OutlierDetection::default();
        let t0 = Instant::now();
        let s = snapshot(5);
        for e in s.endpoints() {
            for _ in 0..5 {
                fail(e, t0, Outcome::FailureStatus(502));
            }
        }
        let ejected = s
            .endpoints()
            .iter()
            .filter(|e| d.observe(&s, e, t0).is_some())
            .count();
        assert_eq!(ejected, 2); // 50 % of 5, rounded down
        let one = snapshot(1);
        for _ in 0..5 {
            fail(&one.endpoints()[0], t0, Outcome::FailureStatus(502));
        }
        assert!(d.observe(&one, &one.endpoints()[0], t0).is_some());
        let off = OutlierDetection::disabled();
        let s = snapshot(2);
        for _ in 0..9 {
            fail(&s.endpoints()[0], t0, Outcome::FailureStatus(500));
        }
        assert_eq!(off.observe(&s, &s.endpoints()[0], t0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_view_filters_until_panic_and_recounts_when_ejections_end() {
        let d = OutlierDetection::default().max_ejection_percent(100);
        let view = HealthView::new(50);
        let s = snapshot(4);
        let t0 = Instant::now();
        assert!(!view.filter(&s, t0));
        let eject = |i: usize, at: Instant| {
            for _ in 0..5 {
                fail(&s.endpoints()[i], at, Outcome::FailureStatus(500));
            }
            assert!(d.observe(&s, &s.endpoints()[i], at).is_some());
            view.invalidate();
        };
        eject(0, t0);
        assert!(view.filter(&s, t0)); // 3 of 4 healthy: filter
        eject(1, t0);
        assert!(view.filter(&s, t0)); // 2 of 4 = 50 %: still filter
        eject(2, t0);
        assert!(!view.filter(&s, t0)); // 1 of 4 < 50 %: panic, no filter
        assert!(view.in_panic());
        // 30 s later every ejection has ended; the view notices by itself.
        assert!(!view.filter(&s, t0 + Duration::from_secs(30)));
        assert!(!view.in_panic());
        assert!(
            s.endpoints()
                .iter()
                .all(|e| e.stats().is_healthy_at(t0 + Duration::from_secs(30)))
        );
    }
}
