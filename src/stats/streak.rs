//! A count of consecutive failures that a response recorded late can
//! shorten.
//!
//! In time order a response resets the count of consecutive failures
//! before it. A response recorded after a newer failure (its thread
//! descheduled between reading the clock and recording, or its body read
//! after the next request failed) is stale: it must not erase the newer
//! failure, and before this it reset nothing, so failures it came after
//! still counted. Failure, response, failure, response, each response
//! recorded just after the next failure: the count reached 10 and the
//! breaker tripped on an instance that never failed twice in a row, and
//! the consecutive 5xx count reached twice Envoy's ejection trigger
//! (helper 130). A streak keeps the times of its latest [`KEPT`]
//! failures: a late response counts those after it (a failure in the
//! response's own millisecond counts as after it, as
//! [`LatestReset::came_before`] takes it), exactly while the streak is at
//! most [`KEPT`] long; a longer streak whose kept failures all came after
//! the response keeps its count. (A first version kept only the first and
//! latest time and left one failure: six 503s in a row after each late
//! success read 4, below Envoy's trigger of 5, so a failing instance was
//! never ejected; helper 134.)

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Failure times a streak keeps: past every default trigger (the
/// breaker's 3, Envoy's 5).
pub(crate) const KEPT: usize = 8;

/// A consecutive-failure count and the times (ms) of its latest [`KEPT`]
/// failures.
pub(crate) struct Streak {
    count: AtomicU32,
    /// Failure `n` (from 1) of the streak at `(n - 1) % KEPT`.
    times: [AtomicU64; KEPT],
}

impl Streak {
    pub(crate) const fn new() -> Self {
        Self {
            count: AtomicU32::new(0),
            times: [const { AtomicU64::new(0) }; KEPT],
        }
    }

    /// The count.
    #[inline]
    pub(crate) fn get(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts a failure at `now_ms`; returns the new count.
    pub(crate) fn add(&self, now_ms: u64) -> u32 {
        let n = self.count.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        if let Some(slot) = self.times.get((n as usize - 1) % KEPT) {
            slot.store(now_ms, Ordering::Release);
        }
        n
    }

    /// Ends the streak (a response in order). Written only when there is
    /// something to reset: a success leaves the line shared between cores.
    #[inline]
    pub(crate) fn reset(&self) {
        if self.count.load(Ordering::Acquire) != 0 {
            self.count.store(0, Ordering::Release);
        }
    }

    /// A response stamped `at_ms`, recorded after a newer failure: the
    /// streak keeps the failures stamped at or after `at_ms` (its own
    /// millisecond counts as after, as `LatestReset::came_before` takes
    /// it). Returns the count after.
    pub(crate) fn trim(&self, at_ms: u64) -> u32 {
        let n = self.count.load(Ordering::Acquire);
        if n == 0 {
            return 0;
        }
        let kept = (n as usize).min(KEPT);
        let after = (self.times.iter().take(kept))
            .filter(|t| t.load(Ordering::Acquire) >= at_ms)
            .count();
        if after == kept && (n as usize) > KEPT {
            // Every kept failure came after: the older ones may too.
            return n;
        }
        // The kept failures after `at_ms`, renumbered from the first slot
        // in their order.
        let mut times = [0u64; KEPT];
        let mut left = 0;
        for k in 0..kept {
            let t = self.times[(n as usize - kept + k) % KEPT].load(Ordering::Acquire);
            if t >= at_ms {
                times[left] = t;
                left += 1;
            }
        }
        for (slot, t) in self.times.iter().zip(&times[..left]) {
            slot.store(*t, Ordering::Release);
        }
        self.count.store(left as u32, Ordering::Release);
        left as u32
    }
}

/// The latest time (ms) a record reset a failure count, shared by the
/// breaker and the ejection counters: an error stamped before it and
/// recorded after it came before that reset, so it does not count (if at
/// most [`LATE_MAX_MS`] older: late by a scheduling delay).
pub(crate) struct LatestReset(AtomicU64);

impl LatestReset {
    pub(crate) const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// A reset at `now_ms`. Written at most once per millisecond: a reset
    /// in a millisecond already stored only reads the line.
    #[inline]
    pub(crate) fn mark(&self, now_ms: u64) {
        if now_ms > self.0.load(Ordering::Relaxed) {
            self.0.fetch_max(now_ms, Ordering::AcqRel);
        }
    }

    /// Whether an error stamped at `now_ms` came before the latest reset
    /// (and is late by at most [`LATE_MAX_MS`]: a record stamped far ahead,
    /// through `finish_at` with a future instant, hides nothing beyond).
    #[inline]
    pub(crate) fn came_before(&self, now_ms: u64) -> bool {
        is_late(now_ms, self.0.load(Ordering::Acquire))
    }
}

/// Whether a record stamped at `now_ms` is late behind one stamped at
/// `latest_ms`: older, by at most [`LATE_MAX_MS`]. A record further
/// behind is taken in order: the newer one was stamped far ahead (through
/// `finish_at` with a future instant), and left alone it would hide every
/// record for as long (one failure stamped an hour ahead kept every
/// response of that hour from resetting the breaker's and the ejection
/// counters' counts).
#[inline]
pub(crate) fn is_late(now_ms: u64, latest_ms: u64) -> bool {
    now_ms < latest_ms && latest_ms - now_ms <= LATE_MAX_MS
}

/// How much older than the latest response a connection failure may be
/// stamped and still be taken as recorded late (its thread descheduled
/// between reading the clock and recording), so not counted toward a
/// trip: 1 s, far above a scheduling delay.
pub(crate) const LATE_MAX_MS: u64 = 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_response_keeps_only_the_failures_after_it() {
        let s = Streak::new();
        assert_eq!((s.add(10), s.add(12), s.add(14)), (1, 2, 3));
        // Before the whole streak: every failure came after it.
        assert_eq!(s.trim(9), 3);
        // Inside it: the failures after it stay.
        assert_eq!(s.trim(11), 2);
        assert_eq!(s.add(16), 3);
        // Its own millisecond counts as after it.
        assert_eq!(s.trim(16), 1);
        assert_eq!(s.trim(17), 0);
        assert_eq!(s.get(), 0);
        // Failures recorded out of order among themselves.
        assert_eq!((s.add(30), s.add(20)), (1, 2));
        assert_eq!(s.trim(19), 2);
        assert_eq!(s.trim(25), 1);
        assert_eq!(s.add(40), 2);
        assert_eq!(s.trim(35), 1);
        s.reset();
        assert_eq!(s.get(), 0);
    }

    /// Longer than the times it keeps: exact when some kept failure came
    /// before the response, unchanged when all came after.
    #[test]
    fn a_streak_longer_than_it_keeps() {
        let s = Streak::new();
        for t in 1..=20u64 {
            s.add(t * 10);
        }
        // Kept: 130..=200. All after 125: the count stays.
        assert_eq!(s.trim(125), 20);
        // 175: 180, 190, 200 after it.
        assert_eq!(s.trim(175), 3);
        assert_eq!(s.add(210), 4);
        assert_eq!(s.trim(195), 2);
    }
}
