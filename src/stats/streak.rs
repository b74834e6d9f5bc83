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
//! (helper 130). A streak keeps the times of its first and latest
//! failure: a late response at or after the latest ends the streak (every
//! failure in it came before), one between them leaves one failure (the
//! latest; how many others came after it is not kept, so the count errs
//! low, by at most the failures of the last second: a late record is at
//! most [`LATE_MAX_MS`] behind).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A consecutive-failure count and the times (ms) of its first and latest
/// failure.
pub(crate) struct Streak {
    count: AtomicU32,
    first_ms: AtomicU64,
    last_ms: AtomicU64,
}

impl Streak {
    pub(crate) const fn new() -> Self {
        Self {
            count: AtomicU32::new(0),
            first_ms: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
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
        if n == 1 {
            self.first_ms.store(now_ms, Ordering::Release);
        } else {
            self.first_ms.fetch_min(now_ms, Ordering::AcqRel);
        }
        self.last_ms.fetch_max(now_ms, Ordering::AcqRel);
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

    /// A response stamped `at_ms`, recorded after a newer failure: ends
    /// the streak if every failure in it came before (at or before
    /// `at_ms`), else leaves the latest one only if some came before.
    /// Returns the count after.
    pub(crate) fn trim(&self, at_ms: u64) -> u32 {
        let n = self.count.load(Ordering::Acquire);
        if n == 0 {
            return 0;
        }
        if at_ms >= self.last_ms.load(Ordering::Acquire) {
            self.count.store(0, Ordering::Release);
            return 0;
        }
        if n > 1 && at_ms >= self.first_ms.load(Ordering::Acquire) {
            let last = self.last_ms.load(Ordering::Acquire);
            self.first_ms.store(last, Ordering::Release);
            self.count.store(1, Ordering::Release);
            return 1;
        }
        n
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
        // Inside it: the latest failure stays.
        assert_eq!(s.trim(11), 1);
        assert_eq!(s.add(16), 2);
        // At or after the latest: the streak is over.
        assert_eq!(s.trim(16), 0);
        assert_eq!(s.get(), 0);
        // A failure recorded out of order moves the first time back.
        assert_eq!((s.add(30), s.add(20)), (1, 2));
        assert_eq!(s.trim(19), 2);
        assert_eq!(s.trim(25), 1);
        s.reset();
        assert_eq!(s.get(), 0);
    }
}
