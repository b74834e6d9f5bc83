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
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Failure times a streak keeps: past every default trigger (the
/// breaker's 3, Envoy's 5).
pub(crate) const KEPT: usize = 8;

/// A consecutive-failure count and the times (ms) of its latest [`KEPT`]
/// failures.
///
/// Every change (a failure, a trim, a reset) holds a lock, so a count is
/// never seen beside the slots of another: lock-free, a trim that had
/// replaced the count but not yet its slots let a second trim read the new
/// count with the old times and drop failures after both responses (a
/// breaker closed with three newer failures; helper 138), and a failure
/// checked against the latest reset before a concurrent response reset the
/// streak was counted after it (five consecutive 5xx where time order has
/// four). Reading the count takes no lock, and neither does a response
/// while there is nothing to reset (the common path).
pub(crate) struct Streak {
    count: AtomicU32,
    /// Failure `n` (from 1) of the streak at `(n - 1) % KEPT`.
    times: Mutex<[u64; KEPT]>,
}

impl Streak {
    pub(crate) const fn new() -> Self {
        Self {
            count: AtomicU32::new(0),
            times: Mutex::new([0; KEPT]),
        }
    }

    /// The count.
    #[inline]
    pub(crate) fn get(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// The slots, for a change. Nothing panics while holding them, so a
    /// poisoned lock holds whole slots.
    fn change(&self) -> MutexGuard<'_, [u64; KEPT]> {
        self.times.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a failure at `now_ms`; returns the new count.
    #[cfg(test)]
    pub(crate) fn add(&self, now_ms: u64) -> u32 {
        let mut times = self.change();
        self.push(&mut times, now_ms)
    }

    /// Counts a failure at `now_ms` unless `reset` says a record that
    /// reset the streak came after it ([`LatestReset::came_before`]), read
    /// under the lock: a reset is marked before it takes the lock, so a
    /// failure either sees its mark or is counted before the reset trims
    /// it. Returns the new count, `None` if not counted.
    pub(crate) fn add_unless_reset(&self, now_ms: u64, reset: &LatestReset) -> Option<u32> {
        let mut times = self.change();
        if reset.came_before(now_ms) {
            return None;
        }
        let next = self.push(&mut times, now_ms);
        // A response that marked its reset after the check above may have
        // read the count before this failure was in it, and skipped the
        // lock (nothing to reset): one of the two sees the other (both
        // sides store, then load, sequentially consistent), so this
        // failure takes itself back out when it sees the mark.
        if reset.came_before_seq(now_ms) {
            self.count.store(next - 1, Ordering::SeqCst);
            return None;
        }
        Some(next)
    }

    fn push(&self, times: &mut [u64; KEPT], now_ms: u64) -> u32 {
        let n = self.count.load(Ordering::Relaxed);
        if let Some(slot) = times.get_mut(n as usize % KEPT) {
            *slot = now_ms;
        }
        let next = n.saturating_add(1);
        self.count.store(next, Ordering::SeqCst);
        next
    }

    /// Ends the streak (an ejection starting over).
    #[inline]
    pub(crate) fn reset(&self) {
        if self.count.load(Ordering::Acquire) != 0 {
            let _times = self.change();
            self.count.store(0, Ordering::Release);
        }
    }

    /// A response stamped `at_ms`, in order: ends the streak, except for
    /// failures stamped after it and counted while it was recorded (another
    /// thread's newer failure; a plain reset erased it, so a streak read one
    /// less than in time order). Only reads the count when there is nothing
    /// to reset. A failure stamped more than [`LATE_MAX_MS`] after the
    /// response is taken in order, as [`is_late`] takes it (a stamp far
    /// ahead through `finish_at`), and ended.
    #[inline]
    pub(crate) fn reset_at(&self, at_ms: u64) {
        // Sequentially consistent, after the caller's `LatestReset::mark`:
        // see `add_unless_reset`.
        if self.count.load(Ordering::SeqCst) != 0 {
            self.keep_between(at_ms.saturating_add(1), at_ms.saturating_add(LATE_MAX_MS));
        }
    }

    /// A response stamped `at_ms`, recorded after a newer failure: the
    /// streak keeps the failures stamped at or after `at_ms` (its own
    /// millisecond counts as after, as `LatestReset::came_before` takes
    /// it). Returns the count after.
    pub(crate) fn trim(&self, at_ms: u64) -> u32 {
        self.keep_between(at_ms, u64::MAX)
    }

    /// Keeps the failures stamped in `from_ms..=to_ms`; returns the count
    /// after.
    fn keep_between(&self, from_ms: u64, to_ms: u64) -> u32 {
        let mut times = self.change();
        let n = self.count.load(Ordering::Relaxed);
        if n == 0 {
            return 0;
        }
        let kept = (n as usize).min(KEPT);
        // The kept failures in the window, renumbered from the first slot
        // in their order.
        let mut left = [0u64; KEPT];
        let mut m = 0;
        for k in 0..kept {
            let t = times[(n as usize - kept + k) % KEPT];
            if (from_ms..=to_ms).contains(&t) {
                left[m] = t;
                m += 1;
            }
        }
        if m == kept {
            // Every kept failure is in the window (and for a streak longer
            // than it keeps, the older ones may be too): nothing to trim.
            return n;
        }
        times[..m].copy_from_slice(&left[..m]);
        self.count.store(m as u32, Ordering::Release);
        m as u32
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
            // Sequentially consistent: see `Streak::add_unless_reset`.
            self.0.fetch_max(now_ms, Ordering::SeqCst);
        }
    }

    /// Whether an error stamped at `now_ms` came before the latest reset
    /// (and is late by at most [`LATE_MAX_MS`]: a record stamped far ahead,
    /// through `finish_at` with a future instant, hides nothing beyond).
    #[inline]
    pub(crate) fn came_before(&self, now_ms: u64) -> bool {
        is_late(now_ms, self.0.load(Ordering::Acquire))
    }

    /// [`came_before`](Self::came_before), read sequentially consistent.
    #[inline]
    fn came_before_seq(&self, now_ms: u64) -> bool {
        is_late(now_ms, self.0.load(Ordering::SeqCst))
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

    /// Failures counted while late responses trim: none is lost. Before,
    /// a trim stored the count it had computed, dropping a failure counted
    /// in between (the streak read less than the failures after the
    /// responses, so a trigger could stay unfired).
    #[test]
    fn failures_counted_during_a_trim_are_kept() {
        for round in 0..400 {
            let s = std::sync::Arc::new(Streak::new());
            // Two failures before the late responses' time, then seven
            // after it, counted while the responses trim.
            s.add(10);
            s.add(20);
            let adder = {
                let s = std::sync::Arc::clone(&s);
                std::thread::spawn(move || {
                    for i in 0..7 {
                        s.add(100 + i);
                        std::hint::spin_loop();
                    }
                })
            };
            let mut trims = 0;
            while !adder.is_finished() || trims < 2 {
                s.trim(30);
                s.trim(5);
                trims += 1;
            }
            adder.join().unwrap();
            s.trim(30);
            assert_eq!(s.get(), 7, "round {round}");
        }
    }

    /// The same for responses in order racing with newer failures: the
    /// failures stamped after the response stay.
    #[test]
    fn newer_failures_counted_during_a_reset_are_kept() {
        for round in 0..400 {
            let s = std::sync::Arc::new(Streak::new());
            s.add(10);
            let adder = {
                let s = std::sync::Arc::clone(&s);
                std::thread::spawn(move || {
                    for i in 0..5 {
                        s.add(100 + i);
                        std::hint::spin_loop();
                    }
                })
            };
            let mut resets = 0;
            while !adder.is_finished() || resets < 2 {
                s.reset_at(50);
                resets += 1;
            }
            adder.join().unwrap();
            assert_eq!(s.get(), 5, "round {round}");
            // Its own millisecond and before: ended; far ahead (more than
            // `LATE_MAX_MS`) too.
            s.add(60);
            s.add(60 + LATE_MAX_MS + 1);
            s.reset_at(60);
            assert_eq!(s.get(), 5, "round {round}");
        }
    }
}
