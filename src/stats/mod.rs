//! Per-endpoint live statistics and the circuit breaker, kept in atomics so
//! the request path never locks (Ribbon's `ServerStats`, Finagle's and
//! tower's peak EWMA, Envoy's outlier-detection counters).
//!
//! An [`EndpointStats`] lives as long as its instance's identity: a refresh
//! that brings the same instance again keeps it. Every attempt goes through
//! an [`InFlightGuard`], which lowers the in-flight count on every
//! completion path, including a dropped (cancelled) future, and records the
//! attempt's [`Outcome`] and latency (from start to finish, in µs).
//!
//! What is kept, per endpoint:
//! - in-flight count, attempts, failures (this module);
//! - latency EWMA and **peak EWMA** (Finagle / Linkerd: a slower observation
//!   replaces the stored estimate at once, faster ones pull the stored
//!   estimate down, which keeps `exp(-Δt/τ)` of its weight, τ = 10 s by
//!   default); failures are priced as at least
//!   [`StatsConfig::failure_penalty`] (1 s) so a fast-failing instance never
//!   looks fast. Rules read the peak decayed toward zero since its last
//!   observation (an idle instance is tried again); an observation weighs
//!   against the stored value, as tower's does, so after an idle spell any
//!   answer reads higher than the decayed read before it (11.1 ms, 1 s
//!   decayed over 45 s, to 21 ms after a 10 ms answer);
//! - a decaying mean response time (τ = 30 s, for weighted response time)
//!   and success rate (τ = 10 s), all three one packed atomic ([`decaying`]);
//! - successive connection-class failures and the **circuit breaker**
//!   (Ribbon's defaults: trip after 3; blackout `min(2^(n-3) × 10 s, 30 s)`
//!   from the last failure; any response resets), plus a half-open state:
//!   after the blackout one probe request decides ([`breaker`]);
//! - Envoy's consecutive-error counters, the ejection state and the active
//!   health-check verdict ([`ejection`]; the policies are in
//!   [`crate::health`]).
//!
//! **Time.** [`tokio::time::Instant`] (tests pause it), kept as ms since
//! the stats' creation. Under concurrency a record or a pick often carries
//! a timestamp a little older than the last stored one. Elapsed times
//! saturate at zero, stored times only move forward, a response older than
//! the latest failure resets no counter, and a connection failure older
//! than the latest response counts toward no trip. So no stat jumps for an
//! out-of-order record: its value lies between the values without the
//! record and with the record taken as in order.
//!
//! ```
//! use tower_ribbon::stats::{BreakerState, EndpointStats, Outcome};
//!
//! let stats = EndpointStats::new();
//! for _ in 0..3 {
//!     stats.start().finish(Outcome::ConnectFailure);
//! }
//! assert!(matches!(stats.breaker_state(), BreakerState::Open { .. }));
//! assert_eq!(stats.in_flight(), 0);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub mod breaker;
mod config;
pub mod decaying;
pub mod ejection;
mod guard;
mod lost;
mod outcome;
mod streak;

pub use breaker::{BreakerState, BreakerTransition};
pub(crate) use config::check;
pub use config::{InvalidConfig, StatsConfig};
pub(crate) use ejection::EjectionTimes;
pub(crate) use guard::Detached;
pub use guard::InFlightGuard;
use guard::StatsRef;
pub use outcome::Outcome;

use breaker::Breaker;
use decaying::{Decaying, us_to_duration};
use ejection::{ActiveChecks, Ejection};

/// Live statistics of one endpoint identity. All methods are lock-free.
pub struct EndpointStats {
    created: Instant,
    config: StatsConfig,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Time of the latest recorded failure (ms), for staleness of resets.
    last_failure_ms: AtomicU64,
    /// Time of the latest record of any kind (ms): the stats' own clock.
    latest_ms: AtomicU64,
    ewma_us: Decaying,
    peak_ewma_us: Decaying,
    mean_us: Decaying,
    /// Longest recent wait, τ of the mean (`guard::first_answer_bound`).
    wait_bound_us: Decaying,
    success_rate: Decaying,
    breaker: Breaker,
    ejection: Ejection,
    active: ActiveChecks,
    /// When active checks last found this endpoint healthy again after
    /// failing (ms, 0 for never): slow start begins again from there.
    returned_ms: AtomicU64,
}

impl Default for EndpointStats {
    fn default() -> Self {
        Self::with_config(StatsConfig::default())
    }
}

impl EndpointStats {
    /// Fresh stats with the default [`StatsConfig`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Fresh stats with `config` (used as given; the builder validates it).
    pub fn with_config(config: StatsConfig) -> Self {
        Self {
            created: Instant::now(),
            config,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_failure_ms: AtomicU64::new(0),
            latest_ms: AtomicU64::new(0),
            ewma_us: Decaying::new(),
            peak_ewma_us: Decaying::new(),
            mean_us: Decaying::new(),
            wait_bound_us: Decaying::new(),
            success_rate: Decaying::new(),
            breaker: Breaker::new(),
            ejection: Ejection::new(),
            active: ActiveChecks::new(),
            returned_ms: AtomicU64::new(0),
        }
    }

    /// When these stats were created: when the refresh first saw this
    /// endpoint's [identity](crate::instance::InstanceKey). A refresh that
    /// keeps the identity keeps the stats, so this survives refreshes; an
    /// instance that leaves the list and comes back gets new stats and a
    /// new time, unless a request it took before it left is still in
    /// flight (a stream): then it gets its stats back, so that request
    /// still counts on it. Read by [`SlowStart`](crate::rule::SlowStart).
    pub fn first_seen(&self) -> Instant {
        self.created
    }

    /// When this endpoint (re)entered service: when active health checks
    /// last found it healthy again after failing, else
    /// [`first_seen`](Self::first_seen). [`SlowStart`](crate::rule::SlowStart)
    /// ramps its share from here, as Envoy puts a host that passes an
    /// active health check after failing back into slow start (load
    /// balancing docs, "Slow start mode").
    pub fn slow_start_since(&self) -> Instant {
        match self.returned_ms.load(Ordering::Acquire) {
            0 => self.created,
            ms => self.instant_at(ms).unwrap_or(self.created),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StatsConfig {
        &self.config
    }

    /// Milliseconds from creation to `now`, zero for an earlier `now`.
    #[inline]
    fn ms_at(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.created).as_millis()).unwrap_or(u64::MAX)
    }

    fn instant_at(&self, ms: u64) -> Option<Instant> {
        self.created.checked_add(Duration::from_millis(ms))
    }

    fn tau_ms(d: Duration) -> f64 {
        (d.as_secs_f64() * 1000.0).max(1.0)
    }

    /// Requests sent to this endpoint and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Attempts started against this endpoint since it was first seen.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Attempts that ended in a failure of any kind.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Latency EWMA (τ = [`StatsConfig::ewma_decay`]); `None` before the
    /// first completed attempt.
    pub fn ewma(&self) -> Option<Duration> {
        self.ewma_us.get().map(us_to_duration)
    }

    /// Peak EWMA latency as of `now`, decayed toward zero since the last
    /// observation (not at all for a `now` older than it); `None` before
    /// the first completed attempt or dropped one (a request dropped before
    /// its result gives its wait, a lower bound of the latency; see
    /// [`InFlightGuard`]).
    pub fn peak_ewma_at(&self, now: Instant) -> Option<Duration> {
        self.peak_ewma_us_at(now).map(us_to_duration)
    }

    /// Whether an attempt completed (the EWMA has a sample; waits do not).
    pub(crate) fn has_latency_sample(&self) -> bool {
        self.ewma_us.load().is_some()
    }

    /// Peak EWMA in µs as of `now` (hot-path form of [`Self::peak_ewma_at`]).
    #[inline]
    pub fn peak_ewma_us_at(&self, now: Instant) -> Option<f64> {
        self.peak_ewma_us
            .get_decayed(self.ms_at(now), Self::tau_ms(self.config.ewma_decay))
    }

    /// Decaying mean response time (τ = [`StatsConfig::mean_decay`]), with
    /// failures counted at least at the failure penalty; raised by a
    /// dropped request's wait it exceeds (see [`InFlightGuard`]), and `None`
    /// before the first completed or dropped attempt.
    pub fn mean_response_time(&self) -> Option<Duration> {
        self.mean_us.get().map(us_to_duration)
    }

    /// Decaying success rate in `0.0..=1.0`; `None` before any outcome.
    pub fn success_rate(&self) -> Option<f64> {
        self.success_rate.get()
    }

    /// Success rate as of `now`, drifting back toward 1.0 with τ =
    /// [`StatsConfig::ewma_decay`] while no outcome is recorded, so an idle
    /// instance that failed is tried again. `None` before any outcome.
    #[inline]
    pub fn success_rate_at(&self, now: Instant) -> Option<f64> {
        self.success_rate
            .get_recovered(self.ms_at(now), Self::tau_ms(self.config.ewma_decay))
    }

    /// Successive connection-class failures (reset by any response).
    pub fn successive_connection_failures(&self) -> u32 {
        self.breaker.successive()
    }

    /// The breaker's state at `now`.
    pub fn breaker_state_at(&self, now: Instant) -> BreakerState {
        self.breaker.state(self.ms_at(now))
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker_state_at(Instant::now())
    }

    /// Whether a new request may go here at `now`: the breaker is closed,
    /// or half-open with no probe in flight.
    #[inline]
    pub fn is_available_at(&self, now: Instant) -> bool {
        self.breaker.is_available(self.ms_at(now))
    }

    /// Whether the breaker is open or its half-open probe is taken at `now`.
    #[inline]
    pub fn is_tripped_at(&self, now: Instant) -> bool {
        !self.is_available_at(now)
    }

    /// Successive attempts that ended in a 5xx or a connection-level
    /// failure (Envoy's `consecutive_5xx`).
    pub fn consecutive_server_errors(&self) -> u32 {
        self.ejection.consecutive_5xx()
    }

    /// Successive attempts that ended in 502, 503, 504 or a
    /// connection-level failure (Envoy's `consecutive_gateway_failure`).
    pub fn consecutive_gateway_errors(&self) -> u32 {
        self.ejection.consecutive_gateway()
    }

    /// Whether outlier detection has ejected this endpoint at `now`.
    #[inline]
    pub fn is_ejected_at(&self, now: Instant) -> bool {
        self.ejection.is_ejected(self.ms_at(now))
    }

    /// How many times outlier detection ejected this endpoint.
    pub fn times_ejected(&self) -> u32 {
        self.ejection.times()
    }

    /// The ejection multiplier at `now`: the next ejection lasts
    /// `base × (this + 1)` (at most the max). It drops by one per full
    /// `interval` since the last ejection ended (Envoy).
    pub fn ejection_multiplier_at(&self, now: Instant, interval: Duration) -> u32 {
        self.ejection.multiplier(self.ms_at(now), interval)
    }

    /// Records one active probe; `true` if the verdict changed (see
    /// [`ejection::ActiveChecks`]).
    #[cfg(feature = "hyper-util")]
    pub(crate) fn record_active_check(&self, passed: bool, healthy: u32, unhealthy: u32) -> bool {
        let changed = self.active.record(passed, healthy, unhealthy);
        if changed && passed {
            self.restart_slow_start(Instant::now());
        }
        changed
    }

    /// Ends an ejection on at `now` begun by `sent` (a probe's); `true` if so.
    #[cfg(feature = "hyper-util")]
    pub(crate) fn end_ejection(&self, sent: Instant, now: Instant) -> bool {
        self.ejection.end_early(self.ms_at(sent), self.ms_at(now))
    }

    /// Slow start begins again at `now` (back or relisted), never earlier.
    pub(crate) fn restart_slow_start(&self, now: Instant) {
        self.returned_ms
            .fetch_max(self.ms_at(now).max(1), Ordering::AcqRel);
    }

    /// Holds this endpoint unhealthy until its first active probe (it
    /// joined after the checks began).
    #[cfg(feature = "hyper-util")]
    pub(crate) fn start_active_pending(&self) {
        self.active.start_pending();
    }

    /// Ends the wait for a first probe that will not come; `true` if it
    /// was waiting.
    #[cfg(feature = "hyper-util")]
    pub(crate) fn clear_active_pending(&self) -> bool {
        self.active.clear_pending()
    }

    /// Whether active health checks hold this endpoint unhealthy (failing,
    /// or joined after the checks began and not probed yet).
    pub fn is_active_unhealthy(&self) -> bool {
        self.active.is_unhealthy()
    }

    /// Healthy at `now`: breaker available, not ejected, not failing active
    /// health checks.
    #[inline]
    pub fn is_healthy_at(&self, now: Instant) -> bool {
        self.is_available_at(now) && !self.is_ejected_at(now) && !self.is_active_unhealthy()
    }

    /// When an unhealthy endpoint becomes healthy again by itself: `None`
    /// if it is healthy or waits for an event (an active check), else the
    /// end of its blackout or ejection.
    ///
    /// An instance whose half-open probe is in flight is due again
    /// [`PROBE_RECHECK`](breaker::PROBE_RECHECK) from `now` (or at its ejection's end if later):
    /// the probe's result tells the balancer at once, and this bounds the
    /// wait when the probe's request is dropped instead. (Its blackout's
    /// end, in the past, made every pick recount the list while a probe
    /// was out.)
    pub(crate) fn healthy_again_at(&self, now: Instant) -> Option<Instant> {
        if self.is_healthy_at(now) || self.is_active_unhealthy() {
            return None;
        }
        let now_ms = self.ms_at(now);
        let mut breaker = self.breaker.until_ms();
        if breaker != 0 && breaker <= now_ms {
            // Over: half-open with its probe taken.
            breaker = now_ms.saturating_add(breaker::PROBE_RECHECK_MS);
        }
        self.instant_at(breaker.max(self.ejection.until_ms()))
    }

    /// Starts an attempt now. See [`EndpointStats::start_at`].
    pub fn start(&self) -> InFlightGuard<'_> {
        self.start_at(Instant::now())
    }

    /// Starts an attempt at `now`: counts it, raises the in-flight count
    /// until the returned guard is finished or dropped, and takes the
    /// half-open probe if the breaker is half-open.
    pub fn start_at(&self, now: Instant) -> InFlightGuard<'_> {
        let probe = self.begin(now);
        InFlightGuard {
            stats: StatsRef::Borrowed(self),
            started: now,
            probe,
            done: false,
        }
    }

    /// As [`EndpointStats::start_at`], with a guard that holds the stats
    /// itself, so the attempt can end after the call that started it (the
    /// balancer ends it with the response body).
    pub fn start_owned_at(self: &std::sync::Arc<Self>, now: Instant) -> InFlightGuard<'static> {
        let probe = self.begin(now);
        InFlightGuard {
            stats: StatsRef::Owned(std::sync::Arc::clone(self)),
            started: now,
            probe,
            done: false,
        }
    }

    /// Counts an attempt at `now`; the blackout whose probe it takes, else 0.
    pub(super) fn begin(&self, now: Instant) -> u32 {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        match self.breaker.until_ms() {
            0 => 0,
            _ => self.breaker.try_probe(self.ms_at(now)),
        }
    }

    /// Records a finished attempt; `responded`: the failure count when its
    /// headers reset the breaker (see [`guard::Detached`]).
    pub(super) fn record(
        &self,
        outcome: Outcome,
        latency: Duration,
        now: Instant,
        responded: Option<u32>,
    ) -> BreakerTransition {
        // The caller's fault, or the server's complaint about us: no record.
        if !outcome.counts_against_instance() {
            return BreakerTransition::None;
        }
        // Its response is older than a failure recorded since its headers.
        let older = responded.is_some_and(|seen| self.failures() as u32 | guard::RESPONDED != seen);
        let now_ms = self.ms_at(now);
        // Most records fall in a millisecond already stored: no write then.
        if now_ms > self.latest_ms.load(Ordering::Acquire) {
            self.latest_ms.fetch_max(now_ms, Ordering::AcqRel);
        }
        let mut latency_us = latency.as_secs_f64() * 1e6;
        // `stale`: older than the latest failure by at most 1 s (further
        // behind, the failure's stamp is taken as wrong: see
        // `breaker::is_late`).
        let stale = if outcome.is_success() {
            breaker::is_late(now_ms, self.last_failure_ms.load(Ordering::Acquire))
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
            latency_us = latency_us.max(self.config.failure_penalty.as_secs_f64() * 1e6);
            let latest = self.last_failure_ms.fetch_max(now_ms, Ordering::AcqRel);
            breaker::is_late(now_ms, latest)
        };
        let tau = Self::tau_ms(self.config.ewma_decay);
        let mean = (
            Self::tau_ms(self.config.mean_decay),
            self.first_answer_bound(now_ms),
        );
        self.ewma_us.observe(latency_us, now_ms, tau, false);
        self.peak_ewma_us.observe(latency_us, now_ms, tau, true);
        self.mean_us.observe_mean(latency_us, now_ms, mean);
        let ok = if outcome.is_success() { 1.0 } else { 0.0 };
        self.success_rate.observe(ok, now_ms, tau, false);
        // Errors while ejected do not count toward the next ejection (in
        // panic mode an ejected instance still takes traffic): a returning
        // instance's counters start afresh, as Envoy's do.
        let (server_error, gateway_error) = outcome.outlier_errors();
        let counted = !(server_error || gateway_error) || !self.ejection.is_ejected(now_ms);
        self.ejection.record(
            server_error && counted,
            gateway_error && counted,
            (stale || older, stale && !older),
            now_ms,
        );
        let (late, latest_ms) = (
            stale && responded.is_none(),
            self.latest_ms.load(Ordering::Acquire),
        );
        let stale = stale || responded.is_some();
        (self.breaker).record(&self.config, outcome, now_ms, stale, late, latest_ms)
    }
}

impl fmt::Debug for EndpointStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointStats")
            .field("in_flight", &self.in_flight())
            .field("requests", &self.requests())
            .field("failures", &self.failures())
            .field("ewma", &self.ewma())
            .field(
                "successive_connection_failures",
                &self.successive_connection_failures(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod order_tests;
