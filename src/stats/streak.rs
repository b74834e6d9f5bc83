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
    /// The latest [`KEPT`] failure stamps, in `times[..min(count, KEPT)]`.
    times: Mutex<Kept>,
}

/// A streak's kept stamps, and the latest stamp of those it no longer
/// keeps (0 for none).
struct Kept {
    times: [u64; KEPT],
    dropped_max: u64,
}

impl Streak {
    pub(crate) const fn new() -> Self {
        Self {
            count: AtomicU32::new(0),
            times: Mutex::new(Kept {
                times: [0; KEPT],
                dropped_max: 0,
            }),
        }
    }

    /// The count.
    #[inline]
    pub(crate) fn get(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// The slots, for a change. Nothing panics while holding them, so a
    /// poisoned lock holds whole slots.
    fn change(&self) -> MutexGuard<'_, Kept> {
        self.times.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a failure at `now_ms`; returns the new count.
    #[cfg(test)]
    pub(crate) fn add(&self, now_ms: u64) -> u32 {
        let mut times = self.change();
        self.push(&mut times, now_ms).0
    }

    /// Counts a failure at `now_ms` unless `reset` says a record that
    /// reset the streak came after it ([`LatestReset::came_before`]), read
    /// under the lock: a reset is marked before it takes the lock, so a
    /// failure either sees its mark or is counted before the reset trims
    /// it. Then `then` with the new count (`None` if not counted), still
    /// under the lock (the breaker opens there, so a response resetting
    /// the streak never runs between the count and the blackout it sets;
    /// helper 140).
    pub(crate) fn add_unless_reset_then<R>(
        &self,
        now_ms: u64,
        reset: &LatestReset,
        then: impl FnOnce(u32) -> R,
    ) -> Option<R> {
        self.add_checked(now_ms, reset, || false, then)
    }

    /// Counts a failure as [`add_unless_reset_then`] does, and not if
    /// `skip` holds, read under the lock: [`reset`](Self::reset) takes the
    /// lock, so a failure either sees the state its caller changed before
    /// that reset (an ejection's end, stored first) or is counted before
    /// the reset ends it (a 5xx racing an ejection carried over it, so the
    /// instance returned with a streak of 1; helper 142). Returns the new
    /// count, `None` if not counted.
    ///
    /// [`add_unless_reset_then`]: Self::add_unless_reset_then
    pub(crate) fn add_unless(
        &self,
        now_ms: u64,
        reset: &LatestReset,
        skip: impl FnOnce() -> bool,
    ) -> Option<u32> {
        self.add_checked(now_ms, reset, skip, |n| n)
    }

    fn add_checked<R>(
        &self,
        now_ms: u64,
        reset: &LatestReset,
        skip: impl FnOnce() -> bool,
        then: impl FnOnce(u32) -> R,
    ) -> Option<R> {
        let mut times = self.change();
        if reset.came_before(now_ms) || skip() {
            return None;
        }
        let dropped_max = times.dropped_max;
        let (next, replaced) = self.push(&mut times, now_ms);
        // A response that marked its reset after the check above may have
        // read the count before this failure was in it, and skipped the
        // lock (nothing to reset): one of the two sees the other (both
        // sides store, then load, sequentially consistent), so this
        // failure takes itself back out when it sees the mark.
        if reset.came_before_seq(now_ms) {
            if let Some((slot, was)) = replaced {
                times.times[slot] = was;
            }
            times.dropped_max = dropped_max;
            self.count.store(next - 1, Ordering::SeqCst);
            return None;
        }
        Some(then(next))
    }

    /// Counts a failure: the slots hold the latest [`KEPT`] stamps (by
    /// stamp, not by record: a failure stamped before every kept one
    /// counts but keeps no slot; a ring by record order kept late older
    /// failures and dropped newer ones, so a late response trimmed a streak
    /// of three newer failures to two and closed the breaker; helper 140).
    /// Returns the new count and the slot replaced with its old stamp.
    fn push(&self, kept: &mut Kept, now_ms: u64) -> (u32, Option<(usize, u64)>) {
        let n = self.count.load(Ordering::Relaxed);
        let replaced = if (n as usize) < KEPT {
            let slot = n as usize;
            let was = kept.times[slot];
            kept.times[slot] = now_ms;
            Some((slot, was))
        } else {
            // The oldest kept stamp, if older than this one.
            let (slot, &oldest) = (kept.times.iter().enumerate())
                .min_by_key(|&(_, t)| *t)
                .unwrap_or((0, &0));
            kept.dropped_max = kept.dropped_max.max(oldest.min(now_ms));
            (oldest < now_ms).then(|| {
                kept.times[slot] = now_ms;
                (slot, oldest)
            })
        };
        let next = n.saturating_add(1);
        self.count.store(next, Ordering::SeqCst);
        (next, replaced)
    }

    /// Ends the streak (an ejection starting over). Always under the lock,
    /// even at a count of 0: a failure checking its caller's state under
    /// the lock ([`add_unless`](Self::add_unless)) is then either counted
    /// before this or sees what the caller stored before calling it.
    pub(crate) fn reset(&self) {
        let mut kept = self.change();
        kept.dropped_max = 0;
        self.count.store(0, Ordering::Release);
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
        self.reset_at_then(at_ms, |_| ());
    }

    /// [`reset_at`](Self::reset_at), then `then` with the count after,
    /// under the lock when there was something to reset.
    #[inline]
    pub(crate) fn reset_at_then<R>(&self, at_ms: u64, then: impl FnOnce(u32) -> R) -> R {
        // Sequentially consistent, after the caller's `LatestReset::mark`:
        // see `add_unless_reset_then`.
        if self.count.load(Ordering::SeqCst) == 0 {
            return then(0);
        }
        let mut times = self.change();
        let left = self.keep_between(
            &mut times,
            at_ms.saturating_add(1),
            at_ms.saturating_add(LATE_MAX_MS),
        );
        then(left)
    }

    /// A response stamped `at_ms`, recorded after a newer failure: the
    /// streak keeps the failures stamped at or after `at_ms` (its own
    /// millisecond counts as after, as `LatestReset::came_before` takes
    /// it). Returns the count after.
    pub(crate) fn trim(&self, at_ms: u64) -> u32 {
        self.trim_then(at_ms, |left| left)
    }

    /// [`trim`](Self::trim), then `then` with the count after, still
    /// under the lock (the breaker closes there, so no failure counted
    /// after the trim runs between it and the close; helper 140).
    pub(crate) fn trim_then<R>(&self, at_ms: u64, then: impl FnOnce(u32) -> R) -> R {
        let mut times = self.change();
        let left = self.keep_between(&mut times, at_ms, u64::MAX);
        then(left)
    }

    /// Keeps the failures stamped in `from_ms..=to_ms`; returns the count
    /// after. The failures a streak longer than [`KEPT`] no longer keeps
    /// are all older than its kept ones: dropped too when the latest of them
    /// is before the window, else counted as in it (the count errs high by
    /// those of them before it).
    fn keep_between(&self, kept: &mut Kept, from_ms: u64, to_ms: u64) -> u32 {
        let n = self.count.load(Ordering::Relaxed);
        let held = (n as usize).min(KEPT);
        let mut left = [0u64; KEPT];
        let mut m = 0;
        for &t in &kept.times[..held] {
            if (from_ms..=to_ms).contains(&t) {
                left[m] = t;
                m += 1;
            }
        }
        if m == n as usize {
            return n;
        }
        let older_out = n as usize == held || kept.dropped_max < from_ms;
        // The dropped ones may be in the window (the kept ones are the
        // latest stamps, and some of them are past it: stamps far ahead, for
        // a response in order): only the kept ones out of it go. Dropping
        // them all took a streak of 9 failures after a response to 2 and
        // closed the breaker (helper 141).
        let count = if older_out {
            kept.dropped_max = 0;
            m as u32
        } else {
            n - (held - m) as u32
        };
        kept.times[..m].copy_from_slice(&left[..m]);
        // Slots past the survivors go to dropped failures, stamped with
        // the latest dropped stamp (at or after theirs).
        let filled = (count as usize).min(KEPT);
        kept.times[m..filled].fill(kept.dropped_max);
        self.count.store(count, Ordering::Release);
        count
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
        let stored = self.0.load(Ordering::Relaxed);
        if now_ms > stored {
            // Sequentially consistent: see `Streak::add_unless_reset_then`.
            self.0.fetch_max(now_ms, Ordering::SeqCst);
        } else if stored - now_ms > LATE_MAX_MS {
            // A mark more than 1 s ahead is taken as wrong (a record stamped
            // far ahead through `finish_at`), as `is_late` takes it: this
            // reset replaces it, in record order. Kept, it ruled out no
            // late failure (a response 1.5 s ahead, then one at 400 ms, then
            // failures at 100 to 300 ms recorded late opened the breaker;
            // helper 140).
            let _ = self
                .0
                .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |stored| {
                    (stored > now_ms && stored - now_ms > LATE_MAX_MS).then_some(now_ms)
                });
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

    /// Longer than the times it keeps: exact when some kept failure, or
    /// the latest dropped one, came before the response; unchanged when
    /// the latest dropped one may have come after.
    #[test]
    fn a_streak_longer_than_it_keeps() {
        let s = Streak::new();
        for t in 1..=20u64 {
            s.add(t * 10);
        }
        // Kept: 130..=200; dropped 10..=120. The latest dropped is after
        // 115: the count stays.
        assert_eq!(s.trim(115), 20);
        // All dropped ones before 125: the kept ones stay.
        assert_eq!(s.trim(125), 8);
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
