//! Per-endpoint state of outlier ejection and active health checks; the
//! policies live in [`crate::health`], the atomics here so they follow the
//! endpoint's identity across refreshes.
//!
//! **Ejection multiplier (Envoy).** Each ejection raises the multiplier by
//! one and lasts `min(base × multiplier, max)`. Every full `interval` the
//! host then stays un-ejected lowers it by one again (Envoy decrements it
//! at each detection sweep while the host is healthy). Here the decrement
//! is computed lazily from the time since the last ejection ended, so no
//! sweep task is needed. The multiplier stops growing once
//! `base × multiplier` reaches `max` (as in Envoy), so a long bad spell
//! does not take longer to forgive than `max / base` intervals.
//!
//! **Time.** The end of an ejection only moves forward; an ejection
//! attempted with a time older than the current ejection's end does
//! nothing.

use super::breaker::LatestReset;
use super::streak::Streak;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Settings an ejection needs, in the units of the atomics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EjectionTimes {
    /// Envoy `base_ejection_time`.
    pub(crate) base: Duration,
    /// Envoy `max_ejection_time`.
    pub(crate) max: Duration,
    /// Envoy `interval`: one healthy interval lowers the multiplier by one.
    pub(crate) interval: Duration,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Outlier-ejection atomics (part of [`super::EndpointStats`]).
pub(crate) struct Ejection {
    consecutive_5xx: Streak,
    /// The latest time a record reset (or, stale, would have reset) each
    /// counter: an error stamped before it, recorded late, came before
    /// that record and does not count.
    reset_5xx_ms: LatestReset,
    reset_gateway_ms: LatestReset,
    consecutive_gateway: Streak,
    /// End of the last ejection in ms; 0 if never ejected.
    until_ms: AtomicU64,
    /// Start of the last ejection in ms (stored before its end).
    #[cfg_attr(not(feature = "hyper-util"), allow(dead_code))]
    since_ms: AtomicU64,
    /// Ejections whose end a recount has reported ([`Self::take_returns`]).
    returns_reported: AtomicU32,
    multiplier: AtomicU32,
    times: AtomicU32,
}

impl Ejection {
    pub(crate) const fn new() -> Self {
        Self {
            consecutive_5xx: Streak::new(),
            reset_5xx_ms: LatestReset::new(),
            reset_gateway_ms: LatestReset::new(),
            consecutive_gateway: Streak::new(),
            until_ms: AtomicU64::new(0),
            since_ms: AtomicU64::new(0),
            returns_reported: AtomicU32::new(0),
            multiplier: AtomicU32::new(0),
            times: AtomicU32::new(0),
        }
    }

    /// Counts an outcome's outlier errors at `now_ms`; a non-error resets
    /// a counter unless `stale` (older than the latest recorded failure),
    /// and, stale and `late` (not answered before a failure recorded since
    /// its headers), shortens it by the errors it came after
    /// ([`Streak::trim`]).
    /// An error older than the latest record that reset its counter is not
    /// counted: in order, that record reset it ([`LatestReset`]).
    pub(crate) fn record(
        &self,
        server_error: bool,
        gateway_error: bool,
        (stale, late): (bool, bool),
        now_ms: u64,
    ) {
        for (counter, reset_ms, hit) in [
            (&self.consecutive_5xx, &self.reset_5xx_ms, server_error),
            (
                &self.consecutive_gateway,
                &self.reset_gateway_ms,
                gateway_error,
            ),
        ] {
            if hit {
                // Not while ejected, checked under the streak's lock, which
                // `eject` takes after storing the ejection's end.
                counter.add_unless(now_ms, reset_ms, || self.is_ejected(now_ms));
                continue;
            }
            // Also a stale record: an error older still came before it.
            reset_ms.mark(now_ms);
            if !stale {
                // Written only when there is something to reset: a success
                // leaves the line shared between cores (see `Breaker`).
                counter.reset_at(now_ms);
            } else if late {
                counter.trim(now_ms);
            }
        }
    }

    pub(crate) fn consecutive_5xx(&self) -> u32 {
        self.consecutive_5xx.get()
    }

    pub(crate) fn consecutive_gateway(&self) -> u32 {
        self.consecutive_gateway.get()
    }

    pub(crate) fn times(&self) -> u32 {
        self.times.load(Ordering::Relaxed)
    }

    /// End of the last ejection in ms (0: never ejected).
    #[inline]
    pub(crate) fn until_ms(&self) -> u64 {
        self.until_ms.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn is_ejected(&self, now_ms: u64) -> bool {
        now_ms < self.until_ms()
    }

    /// The multiplier at `now_ms`: the stored one less one per full
    /// `interval` since the last ejection ended (unchanged while ejected).
    pub(crate) fn multiplier(&self, now_ms: u64, interval: Duration) -> u32 {
        let stored = self.multiplier.load(Ordering::Acquire);
        let healthy_ms = now_ms.saturating_sub(self.until_ms());
        let steps = healthy_ms / millis(interval).max(1);
        stored.saturating_sub(u32::try_from(steps).unwrap_or(u32::MAX))
    }

    /// Ejects from `now_ms` unless already ejected at `clock_ms` (or a
    /// racing caller won), `now_ms` is before the current ejection's end, or
    /// the ejection would be over by `clock_ms`: multiplier `m` = 1 + the
    /// multiplier decayed until `clock_ms` (the latest time seen, at least
    /// `now_ms`), at most `⌈max / base⌉`; ejection time
    /// `min(base × m, max)`. Resets the error counters.
    pub(crate) fn eject(&self, now_ms: u64, clock_ms: u64, t: EjectionTimes) -> Option<Duration> {
        let prev = self.until_ms();
        let clock_ms = clock_ms.max(now_ms);
        // A trigger stamped before the current ejection's end (a late
        // record, counted by a thread that raced the ejection) ejects no
        // more: before, its ejection ended within the previous one, so the
        // instance was never ejected at or after the clock, yet the count
        // and the multiplier rose (helper 144).
        if clock_ms < prev || now_ms < prev {
            return None;
        }
        let base = millis(t.base).max(1);
        let cap = millis(t.max).div_ceil(base).clamp(1, u64::from(u32::MAX));
        let m = self
            .multiplier(clock_ms, t.interval)
            .saturating_add(1)
            .min(u32::try_from(cap).unwrap_or(u32::MAX));
        let time = t.base.saturating_mul(m).min(t.max);
        let until = now_ms.saturating_add(millis(time)).max(1);
        if until <= clock_ms {
            // Over before the clock: a trigger stamped more than the
            // ejection time ago does nothing either.
            return None;
        }
        // Before the end, so a probe's check never reads a later ejection's
        // end with an earlier one's start (a lost race leaves a later start:
        // a probe then ends nothing, the safe side).
        self.since_ms.fetch_max(now_ms, Ordering::AcqRel);
        self.until_ms
            .compare_exchange(prev, until, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        self.multiplier.store(m, Ordering::Release);
        // After the end is stored: `take_returns` reads this count first.
        self.times.fetch_add(1, Ordering::AcqRel);
        self.consecutive_5xx.reset();
        self.consecutive_gateway.reset();
        Some(time)
    }

    /// Ends an ejection still on at `now_ms` that began no later than
    /// `sent_ms` (a passing active probe sent then); `true` if one was. The
    /// multiplier stays, decaying from `now_ms`.
    #[cfg(feature = "hyper-util")]
    pub(crate) fn end_early(&self, sent_ms: u64, now_ms: u64) -> bool {
        let mut prev = self.until_ms();
        if sent_ms < self.since_ms.load(Ordering::Acquire) {
            return false;
        }
        while now_ms < prev {
            match self.until_ms.compare_exchange(
                prev,
                now_ms.max(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(current) => prev = current,
            }
        }
        false
    }

    /// The ejections seen over at `now_ms` and not reported before: each
    /// ejection is counted once, also one that ended unseen before the
    /// next (a bare flag counted two such ejections as one return).
    ///
    /// Over = ejections begun, less the one still on. The count is read
    /// before the end: `eject` stores the end before counting, so a count
    /// that includes a new ejection is read with its end, and a new
    /// ejection is never reported over while on (a check of the end then
    /// a separate take of pending returns reported a re-ejection landing
    /// between the two: 86 to 271 of 20 000 races; helper 142). An
    /// ejection begun between the two reads is left for a later recount.
    pub(crate) fn take_returns(&self, now_ms: u64) -> u32 {
        let begun = self.times.load(Ordering::Acquire);
        let over = begun.saturating_sub(u32::from(self.is_ejected(now_ms)));
        self.returns_reported
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                (over > r).then_some(over)
            })
            .map_or(0, |r| over - r)
    }
}

/// Active-check atomics: the verdict and the current streaks (only the
/// `hyper-util` feature's active checks write them).
#[cfg_attr(not(feature = "hyper-util"), allow(dead_code))]
pub(crate) struct ActiveChecks {
    unhealthy: AtomicBool,
    /// Joined after the checks began and not probed yet: held unhealthy
    /// until its first probe, which alone decides (Envoy's
    /// `PENDING_ACTIVE_HC`).
    pending: AtomicBool,
    /// Listed by a full round of probes (see
    /// [`EndpointStats::is_active_unlisted`]).
    claimed: AtomicBool,
    passes: AtomicU32,
    fails: AtomicU32,
    /// Times this endpoint (re)joined waiting for a first probe: a probe
    /// sent before the latest join gives no verdict.
    joins: AtomicU32,
}

#[cfg_attr(not(feature = "hyper-util"), allow(dead_code))]
impl ActiveChecks {
    pub(crate) const fn new() -> Self {
        Self {
            unhealthy: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            claimed: AtomicBool::new(false),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            joins: AtomicU32::new(0),
        }
    }

    /// Holds a new endpoint unhealthy until its first probe.
    pub(crate) fn start_pending(&self) {
        self.joins.fetch_add(1, Ordering::AcqRel);
        self.unhealthy.store(true, Ordering::Release);
        self.pending.store(true, Ordering::Release);
    }

    /// Times this endpoint joined waiting for a first probe.
    pub(crate) fn joins(&self) -> u32 {
        self.joins.load(Ordering::Acquire)
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Marks it listed by a full round.
    pub(crate) fn claim(&self) {
        self.claimed.store(true, Ordering::Release);
    }

    /// Whether no full round listed it yet.
    pub(crate) fn is_unclaimed(&self) -> bool {
        !self.claimed.load(Ordering::Acquire)
    }

    /// Ends the wait for a first probe that will not come (the endpoint
    /// cannot be probed): it is healthy, as before checks began. `true` if
    /// it was pending.
    pub(crate) fn clear_pending(&self) -> bool {
        if self.pending.swap(false, Ordering::AcqRel) {
            self.unhealthy.store(false, Ordering::Release);
            return true;
        }
        false
    }

    pub(crate) fn is_unhealthy(&self) -> bool {
        self.unhealthy.load(Ordering::Relaxed)
    }

    /// Records one probe (Envoy semantics): a healthy endpoint turns
    /// unhealthy after `unhealthy_threshold` failed probes in a row, an
    /// unhealthy one healthy after `healthy_threshold` passed probes in a
    /// row. Returns `true` if the verdict changed. Thresholds of 0 act as 1.
    #[cfg_attr(not(feature = "hyper-util"), allow(dead_code))]
    pub(crate) fn record(
        &self,
        passed: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> bool {
        if self.pending.swap(false, Ordering::AcqRel) {
            // The first probe of a new endpoint decides alone, as Envoy's
            // first check does: a pass makes it healthy, a failure leaves
            // it unhealthy with a failure streak of one.
            // The other streak too: a relisted instance keeps its stats,
            // and its old streak made one probe after the first change the
            // verdict (helper 191: two failures, relisted, a passing first
            // probe, then one failure turned it unhealthy at a threshold
            // of 3).
            let (streak, other) = if passed {
                (&self.passes, &self.fails)
            } else {
                (&self.fails, &self.passes)
            };
            streak.store(1, Ordering::Release);
            other.store(0, Ordering::Release);
            if passed {
                self.unhealthy.store(false, Ordering::Release);
            }
            return passed;
        }
        let (streak, other, threshold) = if passed {
            (&self.passes, &self.fails, healthy_threshold)
        } else {
            (&self.fails, &self.passes, unhealthy_threshold)
        };
        other.store(0, Ordering::Release);
        let n = streak.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let verdict_unhealthy = !passed;
        if n >= threshold.max(1) && self.is_unhealthy() != verdict_unhealthy {
            self.unhealthy.store(verdict_unhealthy, Ordering::Release);
            return true;
        }
        false
    }
}

impl super::EndpointStats {
    /// Ejects from `now` (see [the module docs](self)); `None` if already ejected.
    /// The multiplier decays up to the latest record's time, so an
    /// ejection triggered by a late record is never longer than an
    /// in-order one.
    pub(crate) fn eject(
        &self,
        now: tokio::time::Instant,
        times: EjectionTimes,
    ) -> Option<Duration> {
        let now_ms = self.ms_at(now);
        // A latest record far ahead (see `super::breaker::is_late`) decays nothing.
        let latest = self.latest_ms.load(Ordering::Acquire);
        let clock = if super::breaker::is_late(now_ms, latest) {
            latest
        } else {
            now_ms
        };
        self.ejection.eject(now_ms, clock, times)
    }

    /// The ejections seen over at `now` and not reported before (each once).
    pub(crate) fn end_expired_ejections(&self, now: tokio::time::Instant) -> u32 {
        self.ejection.take_returns(self.ms_at(now))
    }

    /// The ejections not reported over yet, reported now because the
    /// balancer forgets these stats (their instance left the list for
    /// good, or their on-demand service was evicted): an ejection still on
    /// ends for the balancer with them, so `ribbon_ejections_total` minus
    /// `ribbon_ejection_returns_total` reads the instances ejected now.
    pub(crate) fn forget_ejections(&self) -> u32 {
        self.ejection.take_returns(u64::MAX)
    }

    /// Marks this endpoint listed by a round of active probes.
    #[cfg(feature = "hyper-util")]
    pub(crate) fn list_for_active_checks(&self) {
        self.active.claim();
    }

    /// Whether no round of active probes listed this endpoint yet and it
    /// waits for no first probe (see `health::active::rounds::joining`).
    #[cfg(feature = "hyper-util")]
    pub(crate) fn is_active_unlisted(&self) -> bool {
        self.active.is_unclaimed() && !self.active.is_pending()
    }

    /// Times this endpoint joined waiting for a first probe (see
    /// `ActiveChecks::joins`): a probe carries the count it was sent at.
    #[cfg(feature = "hyper-util")]
    pub(crate) fn active_joins(&self) -> u32 {
        self.active.joins()
    }

    /// Whether this endpoint waits for its first active probe.
    pub(crate) fn is_active_pending(&self) -> bool {
        self.active.is_pending()
    }
}

#[cfg(test)]
#[path = "ejection_race_tests.rs"]
mod race_tests;

#[cfg(test)]
#[path = "ejection_tests.rs"]
mod tests;
