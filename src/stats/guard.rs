//! [`InFlightGuard`]: one attempt counted in flight until it is finished
//! or dropped, and its guard-less form [`Detached`].

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{BreakerTransition, EndpointStats, Outcome};

/// The mark of a [`Detached`] attempt whose response headers arrived.
pub(super) const RESPONDED: u32 = 1 << 31;

/// Keeps one attempt counted as in flight; finishing or dropping it ends
/// the attempt.
///
/// Dropped without [`InFlightGuard::finish`] (a cancelled request), it
/// lowers the in-flight count, frees a half-open probe, and notes the wait
/// so far as a lower bound of the latency (it raises the EWMA, peak EWMA
/// and mean it exceeds; tower's `PeakEwma` records a dropped request's
/// elapsed time too). It counts as no success or failure.
#[must_use = "dropping the guard ends the attempt at once"]
pub struct InFlightGuard<'a> {
    pub(super) stats: StatsRef<'a>,
    pub(super) started: Instant,
    /// The blackout whose half-open probe this attempt holds (0: none).
    pub(super) probe: u32,
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
    /// The blackout whose half-open probe this attempt holds (0: none).
    pub(super) probe: u32,
    /// 0 until its response's headers arrived and reset the breaker
    /// ([`EndpointStats::record_response_detached`]); then the stats'
    /// failure count (cut to 31 bits) with [`RESPONDED`] set: a failure
    /// recorded since makes the response older than it, so its result,
    /// recorded when the body ends, resets no failure counter.
    pub(super) seen: u32,
}

impl Detached {
    /// When the attempt started.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Whether the attempt holds its instance's half-open probe.
    pub(crate) fn is_probe(&self) -> bool {
        self.probe != 0
    }
}

/// Attempts held without a guard (the balancer's).
impl EndpointStats {
    /// Starts an attempt at `now` held without a guard: the caller records
    /// its result with [`EndpointStats::record_detached`] (if it got one)
    /// and ends it with [`EndpointStats::cancel_detached`] on these stats.
    pub(crate) fn start_detached(&self, now: Instant) -> Detached {
        let probe = self.begin(now);
        Detached {
            started: now,
            probe,
            seen: 0,
        }
    }

    /// Ends an attempt: it leaves the in-flight count and frees a half-open
    /// probe not freed yet. Nothing else is recorded: a result was
    /// recorded already, or [`EndpointStats::cancel_unanswered`] notes a
    /// cancelled attempt's wait.
    pub(crate) fn cancel_detached(&self, attempt: Detached) {
        if attempt.probe != 0 {
            self.breaker.release_probe(attempt.probe);
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Ends an attempt whose request was dropped before its result (the
    /// caller's own timeout, say) at `now`, as
    /// [`EndpointStats::cancel_detached`] does, and notes what its wait
    /// shows: the instance's latency is at least `now − start`. That lower
    /// bound (a censored observation) raises the latency averages it
    /// exceeds and leaves the others as they are; it counts as no
    /// success or failure, so no breaker, ejection or success rate moves.
    /// Without it an instance that hangs until callers give up looked as
    /// fast as before to latency-aware rules (tower's `PeakEwma` records
    /// the elapsed time of a dropped request for the same reason).
    pub(crate) fn cancel_unanswered(&self, attempt: Detached, now: Instant) {
        let started = attempt.started;
        self.cancel_detached(attempt);
        self.note_lower_bound(started, now);
    }

    /// Before an instance's first completed attempt (recorded at `now_ms`),
    /// the longest recent wait of its dropped ones (µs, a peak of waits
    /// kept and read with the mean's τ; 0 without one);
    /// `None` once it has answered. That first answer sets the mean to the
    /// longer of itself and this wait: observed, a 1 ms wait blended a
    /// first 100 ms answer to 1.7 ms (helper 163); left out, 20 waits of
    /// 2 s just before a 1 ms answer read 1 ms (helper 167); and one 2 s
    /// wait 10 minutes before a 10 ms answer counts as nothing (helper 166).
    /// [`first_answer_bound`](Self::first_answer_bound) at `now`: what
    /// weighted response time reads for an instance that has not answered
    /// yet, so its bound and the mean its first answer sets agree (read
    /// with the peak's τ, a 2 s wait 60 s old read 5 ms before the answer
    /// and 271 ms after it; helper 170). Written with the τ it is read
    /// with, a later, shorter wait never lowers it (kept in the peak EWMA,
    /// written with the peak's 10 s, a 6 ms wait 60 s after a 2 s one took
    /// the bound from 271 ms to 11 ms; helper 171).
    pub(crate) fn wait_bound_us_at(&self, now: Instant) -> Option<f64> {
        self.first_answer_bound(self.ms_at(now))
    }

    pub(super) fn first_answer_bound(&self, now_ms: u64) -> Option<f64> {
        if self.has_latency_sample() {
            return None;
        }
        // Decayed with the mean's τ: with the peak's (10 s), a 2 s wait 60 s
        // before a 1 ms answer read 5 ms where a 2 s answer reads 272 ms
        // (helper 169).
        let tau = Self::tau_ms(self.config.mean_decay);
        Some(self.wait_bound_us.get_decayed(now_ms, tau).unwrap_or(0.0))
    }

    /// An attempt started at `started` had no result by `now`: its wait
    /// raises the latency averages it exceeds (see
    /// [`EndpointStats::cancel_unanswered`]).
    fn note_lower_bound(&self, started: Instant, now: Instant) {
        let waited = now.saturating_duration_since(started);
        let (us, now_ms) = (waited.as_secs_f64() * 1e6, self.ms_at(now));
        let tau = Self::tau_ms(self.config.ewma_decay);
        let mean_tau = Self::tau_ms(self.config.mean_decay);
        // Without a completed attempt the EWMA stays empty (a bound is no
        // sample: see `EndpointStats::has_latency_sample`, by which P2C
        // prices such a peak at no less than its default RTT, and weighted
        // response time reads it as a bound); the peak and the mean take
        // the bound (a first answer then sets the mean: see
        // `first_answer_bound`). Each is compared as it is read: the peak
        // decayed to `now`, the EWMA and the mean as stored (compared
        // decayed, a bound below them passed and pulled them down).
        for (average, tau, peak, from_empty) in [
            (&self.ewma_us, tau, false, false),
            (&self.peak_ewma_us, tau, true, true),
            (&self.mean_us, mean_tau, false, true),
        ] {
            let read = if peak {
                average.get_decayed(now_ms, tau)
            } else {
                average.get()
            };
            let raise = match read {
                Some(v) => us > v,
                None => from_empty,
            };
            if raise {
                average.observe(us, now_ms, tau, peak);
            }
        }
        // The wait bound takes every wait, as the mean takes every answer:
        // a longer one at once, a shorter one blended (never below the
        // bound decayed to now). Taking only waits above the decayed bound,
        // a second wait just below it was lost where the same answer is
        // blended in: a 2 s wait, then a 999 ms one 19.8 s later read
        // 1.0 s where the answers read 1.5 s (104 of 500 seeded histories
        // read faster as waits; helper 174).
        self.wait_bound_us.observe(us, now_ms, mean_tau, true);
    }

    /// Records the result of an attempt started with
    /// [`EndpointStats::start_detached`] (`outcome` at `now`, after
    /// `latency` from the attempt's start, which the caller computed once
    /// for its metrics too) and frees its
    /// half-open probe, but keeps it in flight: a failed response whose
    /// body still streams is load until
    /// [`EndpointStats::cancel_detached`] ends it. An attempt whose
    /// response was recorded at its headers
    /// ([`EndpointStats::record_response_detached`]) does not reset the
    /// breaker again, nor the outlier counters if a failure was recorded
    /// since: that response is older than the failure (a stream ending
    /// after connects began failing closed the breaker they tripped).
    pub(crate) fn record_detached(
        &self,
        attempt: &mut Detached,
        outcome: Outcome,
        now: Instant,
        latency: Duration,
    ) -> BreakerTransition {
        let transition = self.record(
            outcome,
            latency,
            now,
            (attempt.seen != 0).then_some(attempt.seen),
        );
        let probe = std::mem::take(&mut attempt.probe);
        if probe != 0 {
            self.breaker.release_probe(probe);
        }
        transition
    }

    /// A response (its headers) arrived at `now` for an attempt started
    /// with [`EndpointStats::start_detached`]: as Ribbon, any response
    /// resets the successive connection failures and closes the breaker,
    /// and this does it when the headers arrive rather than when the body
    /// ends (a half-open probe answered with a long stream kept its
    /// instance out of rotation for the stream's life); frees the
    /// attempt's half-open probe. Reads the clock only when the breaker
    /// has something to reset or the attempt is the probe. The attempt's
    /// result is recorded later, as before.
    pub(crate) fn record_response_detached(&self, attempt: &mut Detached) -> BreakerTransition {
        attempt.seen = self.failures() as u32 | RESPONDED;
        if attempt.probe == 0 && !self.breaker.needs_reset() {
            return BreakerTransition::None;
        }
        let now_ms = self.ms_at(Instant::now());
        let stale = super::breaker::is_late(now_ms, self.last_failure_ms.load(Ordering::Acquire));
        let latest_ms = self.latest_ms.load(Ordering::Acquire);
        let transition = (self.breaker).record(
            &self.config,
            Outcome::Success,
            now_ms,
            stale,
            stale,
            latest_ms,
        );
        let probe = std::mem::take(&mut attempt.probe);
        if probe != 0 {
            self.breaker.release_probe(probe);
        }
        transition
    }
}

impl InFlightGuard<'_> {
    /// Ends the attempt now with `outcome`, measuring latency from start.
    /// Returns what the attempt did to the circuit breaker.
    pub fn finish(self, outcome: Outcome) -> BreakerTransition {
        self.finish_at(outcome, Instant::now())
    }

    /// Ends the attempt at `now` with `outcome` (latency zero for a `now`
    /// before the start). Pass instants of the clock the balancer and the
    /// rules read (tokio's): a `now` far ahead of it holds the decaying
    /// averages (EWMA, peak, mean, success rate) still until the clock
    /// passes it, since a later record can be late and counts as no time
    /// elapsed. (The breaker's and the outlier counters take a stamp more
    /// than 1 s ahead as wrong; an average cannot tell it from a record
    /// late by as much without moving its clock back.)
    pub fn finish_at(mut self, outcome: Outcome, now: Instant) -> BreakerTransition {
        let latency = now.saturating_duration_since(self.started);
        self.done = true;
        let transition = self.stats.record(outcome, latency, now, None);
        if self.probe != 0 {
            self.stats.breaker.release_probe(self.probe);
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
        self.probe != 0
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
        if self.done {
            return;
        }
        if self.probe != 0 {
            self.stats.breaker.release_probe(self.probe);
        }
        // Dropped without a result, as the balancer's cancelled attempts:
        // the wait so far is a lower bound of the latency.
        self.stats.note_lower_bound(self.started, Instant::now());
    }
}

impl fmt::Debug for InFlightGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightGuard")
            .field("probe", &self.is_probe())
            .finish_non_exhaustive()
    }
}
