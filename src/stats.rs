//! Per-endpoint live statistics and the circuit breaker, kept in atomics so
//! the request path never locks (Ribbon's `ServerStats`, Finagle's and
//! tower's peak EWMA).
//!
//! An [`EndpointStats`] lives as long as its instance's identity: a refresh
//! that brings the same instance again keeps it. Every attempt goes through
//! an [`InFlightGuard`], which lowers the in-flight count on every
//! completion path, including a dropped (cancelled) future, and records the
//! attempt's [`Outcome`] and latency.
//!
//! What is kept, per endpoint:
//! - in-flight count, attempts, failures;
//! - latency EWMA and **peak EWMA** (Finagle / Linkerd: a slower observation
//!   replaces the estimate at once, faster ones pull it down with decay
//!   `exp(-Δt/τ)`, τ = 10 s by default); failures are priced as at least
//!   [`StatsConfig::failure_penalty`] (1 s) so a fast-failing instance never
//!   looks fast;
//! - a decaying mean response time (τ = 30 s) for weighted response time;
//! - a decaying success rate (τ = 10 s);
//! - successive connection-class failures and the **circuit breaker**
//!   (Ribbon's defaults: trip after 3; blackout `min(2^(n-3) × 10 s, 30 s)`
//!   from the last failure; any response resets), plus a half-open state:
//!   after the blackout one probe request decides.
//!
//! Time is read from [`tokio::time::Instant`], so tests can pause it.
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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How one attempt ended, as every part of the crate classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A response that is not a failure status.
    Success,
    /// The connection was refused or could not be made: the request
    /// provably never reached the server.
    ConnectFailure,
    /// The connection was not made within the connect timeout: the request
    /// provably never reached the server.
    ConnectTimeout,
    /// No response in time after the request was sent (read timeout).
    ReadTimeout,
    /// A response whose status counts as a failure (default: 5xx and 429).
    FailureStatus(u16),
    /// Any other error of the inner service.
    OtherError,
}

impl Outcome {
    /// A success.
    pub fn is_success(self) -> bool {
        self == Outcome::Success
    }

    /// A connection-class failure (connect failure, connect timeout or read
    /// timeout): what trips the circuit breaker (Ribbon counts the same).
    pub fn is_connection_failure(self) -> bool {
        matches!(
            self,
            Outcome::ConnectFailure | Outcome::ConnectTimeout | Outcome::ReadTimeout
        )
    }

    /// The request provably never reached a server (connect failure or
    /// connect timeout), so even a non-idempotent request may be retried.
    pub fn never_reached_server(self) -> bool {
        matches!(self, Outcome::ConnectFailure | Outcome::ConnectTimeout)
    }
}

/// Tuning of the statistics and the circuit breaker.
#[derive(Debug, Clone)]
pub struct StatsConfig {
    /// Decay τ of the latency EWMA and peak EWMA. Default 10 s (Finagle).
    pub ewma_decay: Duration,
    /// Decay τ of the mean response time used by weighted response time.
    /// Default 30 s.
    pub mean_decay: Duration,
    /// Least latency a failed attempt is recorded as. Default 1 s.
    pub failure_penalty: Duration,
    /// Successive connection-class failures that trip the breaker. Ribbon
    /// key `connectionFailureCountThreshold`. Default 3.
    pub breaker_threshold: u32,
    /// Blackout after the threshold is reached, doubled per further
    /// failure. Ribbon key `circuitTripTimeoutFactorSeconds`. Default 10 s.
    pub breaker_base: Duration,
    /// Longest blackout. Ribbon key `circuitTripMaxTimeoutSeconds`.
    /// Default 30 s.
    pub breaker_max: Duration,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            ewma_decay: Duration::from_secs(10),
            mean_decay: Duration::from_secs(30),
            failure_penalty: Duration::from_secs(1),
            breaker_threshold: 3,
            breaker_base: Duration::from_secs(10),
            breaker_max: Duration::from_secs(30),
        }
    }
}

impl StatsConfig {
    /// The blackout after `failures` successive connection failures, or
    /// `None` below the threshold: `min(2^(failures - threshold) × base, max)`.
    pub fn blackout(&self, failures: u32) -> Option<Duration> {
        if failures < self.breaker_threshold.max(1) {
            return None;
        }
        let exp = (failures - self.breaker_threshold.max(1)).min(20);
        Some(
            self.breaker_base
                .saturating_mul(1 << exp)
                .min(self.breaker_max),
        )
    }
}

/// What one finished attempt did to the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerTransition {
    /// Nothing changed.
    None,
    /// The breaker tripped (or re-tripped after a failed probe).
    Tripped,
    /// A response closed a tripped breaker.
    Recovered,
}

/// The circuit breaker's state at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// Tripped: no traffic for `remaining`.
    Open {
        /// Time left in the blackout.
        remaining: Duration,
    },
    /// The blackout is over: one probe request decides; `probing` is true
    /// while it is in flight.
    HalfOpen {
        /// A probe is in flight.
        probing: bool,
    },
}

const EMPTY: u64 = u64::MAX;

/// A decaying average packed in one atomic: high 32 bits the value (`f32`),
/// low 32 bits the time of the last observation (ms since the stats were
/// created). Updated with a CAS loop, so value and time always match.
struct Decaying(AtomicU64);

impl Decaying {
    const fn new() -> Self {
        Self(AtomicU64::new(EMPTY))
    }

    fn unpack(bits: u64) -> (f64, u32) {
        (f64::from(f32::from_bits((bits >> 32) as u32)), bits as u32)
    }

    fn pack(value: f64, at: u32) -> u64 {
        let v = (value as f32).to_bits();
        let bits = (u64::from(v) << 32) | u64::from(at);
        if bits == EMPTY { bits - 1 } else { bits }
    }

    /// Adds an observation. With `peak`, a larger observation replaces the
    /// value at once.
    fn observe(&self, x: f64, now_ms: u32, tau_ms: f64, peak: bool) {
        let mut old = self.0.load(Ordering::Relaxed);
        loop {
            let new = if old == EMPTY {
                Self::pack(x, now_ms)
            } else {
                let (v, at) = Self::unpack(old);
                let next = if peak && x > v {
                    x
                } else {
                    let w = (-f64::from(now_ms.wrapping_sub(at)) / tau_ms).exp();
                    v * w + x * (1.0 - w)
                };
                Self::pack(next, now_ms)
            };
            match self
                .0
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => old = seen,
            }
        }
    }

    /// The value, or `None` before the first observation.
    fn get(&self) -> Option<f64> {
        match self.0.load(Ordering::Relaxed) {
            EMPTY => None,
            bits => Some(Self::unpack(bits).0),
        }
    }

    /// The value decayed toward zero for the time since the last
    /// observation (tower's peak EWMA does the same, so an idle instance
    /// is tried again).
    fn get_decayed(&self, now_ms: u32, tau_ms: f64) -> Option<f64> {
        match self.0.load(Ordering::Relaxed) {
            EMPTY => None,
            bits => {
                let (v, at) = Self::unpack(bits);
                Some(v * (-f64::from(now_ms.wrapping_sub(at)) / tau_ms).exp())
            }
        }
    }
}

/// Live statistics of one endpoint identity. All methods are lock-free.
pub struct EndpointStats {
    created: Instant,
    config: StatsConfig,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    failures: AtomicU64,
    ewma_us: Decaying,
    peak_ewma_us: Decaying,
    mean_us: Decaying,
    success_rate: Decaying,
    successive_connection_failures: AtomicU32,
    /// End of the blackout in ms since `created`; 0 when not tripped.
    tripped_until_ms: AtomicU64,
    probing: AtomicBool,
    consecutive_server_errors: AtomicU32,
    consecutive_gateway_errors: AtomicU32,
    /// End of the outlier ejection in ms since `created`; 0 when not ejected.
    ejected_until_ms: AtomicU64,
    times_ejected: AtomicU32,
    active_unhealthy: AtomicBool,
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

    /// Fresh stats with `config`.
    pub fn with_config(config: StatsConfig) -> Self {
        Self {
            created: Instant::now(),
            config,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ewma_us: Decaying::new(),
            peak_ewma_us: Decaying::new(),
            mean_us: Decaying::new(),
            success_rate: Decaying::new(),
            successive_connection_failures: AtomicU32::new(0),
            tripped_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            consecutive_server_errors: AtomicU32::new(0),
            consecutive_gateway_errors: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
            active_unhealthy: AtomicBool::new(false),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StatsConfig {
        &self.config
    }

    fn ms_at(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.created).as_millis() as u64
    }

    fn now_ms32(&self, now: Instant) -> u32 {
        self.ms_at(now) as u32
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
    /// observation; `None` before the first completed attempt.
    pub fn peak_ewma_at(&self, now: Instant) -> Option<Duration> {
        self.peak_ewma_us
            .get_decayed(self.now_ms32(now), self.tau_ms(self.config.ewma_decay))
            .map(us_to_duration)
    }

    /// Peak EWMA in µs as of `now` (hot-path form of [`Self::peak_ewma_at`]).
    #[inline]
    pub fn peak_ewma_us_at(&self, now: Instant) -> Option<f64> {
        self.peak_ewma_us
            .get_decayed(self.now_ms32(now), self.tau_ms(self.config.ewma_decay))
    }

    /// Decaying mean response time (τ = [`StatsConfig::mean_decay`]), with
    /// failures counted at least at the failure penalty.
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
        let tau = self.tau_ms(self.config.ewma_decay);
        // 1 - (1 - r)·w: the failure share decays toward zero.
        match self.success_rate.0.load(Ordering::Relaxed) {
            EMPTY => None,
            bits => {
                let (rate, at) = Decaying::unpack(bits);
                let w = (-f64::from(self.now_ms32(now).wrapping_sub(at)) / tau).exp();
                Some(1.0 - (1.0 - rate) * w)
            }
        }
    }

    /// Successive connection-class failures (reset by any response).
    pub fn successive_connection_failures(&self) -> u32 {
        self.successive_connection_failures.load(Ordering::Relaxed)
    }

    fn tau_ms(&self, d: Duration) -> f64 {
        (d.as_secs_f64() * 1000.0).max(1.0)
    }

    /// The breaker's state at `now`.
    pub fn breaker_state_at(&self, now: Instant) -> BreakerState {
        let until = self.tripped_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return BreakerState::Closed;
        }
        let at = self.ms_at(now);
        if at < until {
            BreakerState::Open {
                remaining: Duration::from_millis(until - at),
            }
        } else {
            BreakerState::HalfOpen {
                probing: self.probing.load(Ordering::Acquire),
            }
        }
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker_state_at(Instant::now())
    }

    /// Whether a new request may go here at `now`: the breaker is closed,
    /// or half-open with no probe in flight.
    #[inline]
    pub fn is_available_at(&self, now: Instant) -> bool {
        let until = self.tripped_until_ms.load(Ordering::Relaxed);
        until == 0 || (self.ms_at(now) >= until && !self.probing.load(Ordering::Relaxed))
    }

    /// Successive attempts that ended in a 5xx or a connection-level
    /// failure (Envoy's `consecutive_5xx`).
    pub fn consecutive_server_errors(&self) -> u32 {
        self.consecutive_server_errors.load(Ordering::Relaxed)
    }

    /// Successive attempts that ended in 502, 503, 504 or a
    /// connection-level failure (Envoy's `consecutive_gateway_failure`).
    pub fn consecutive_gateway_errors(&self) -> u32 {
        self.consecutive_gateway_errors.load(Ordering::Relaxed)
    }

    /// Whether outlier detection has ejected this endpoint at `now`.
    #[inline]
    pub fn is_ejected_at(&self, now: Instant) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && self.ms_at(now) < until
    }

    /// How many times outlier detection ejected this endpoint.
    pub fn times_ejected(&self) -> u32 {
        self.times_ejected.load(Ordering::Relaxed)
    }

    /// Ejects until `now + base × (times ejected + 1)`, at most `max`;
    /// resets the consecutive-error counters. Returns the ejection time.
    pub(crate) fn eject(&self, now: Instant, base: Duration, max: Duration) -> Duration {
        let times = self
            .times_ejected
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let time = base.saturating_mul(times).min(max);
        let until = self
            .ms_at(now)
            .saturating_add(u64::try_from(time.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until_ms.store(until.max(1), Ordering::Release);
        self.consecutive_server_errors.store(0, Ordering::Release);
        self.consecutive_gateway_errors.store(0, Ordering::Release);
        time
    }

    /// Ends an ejection whose time has passed; `true` if one ended.
    pub(crate) fn end_expired_ejection(&self, now: Instant) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Acquire);
        until != 0
            && self.ms_at(now) >= until
            && self
                .ejected_until_ms
                .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Records an active health check's verdict; `true` if it changed.
    pub(crate) fn set_active_healthy(&self, healthy: bool) -> bool {
        self.active_unhealthy.swap(!healthy, Ordering::AcqRel) == healthy
    }

    /// Whether the last active health check failed.
    pub fn is_active_unhealthy(&self) -> bool {
        self.active_unhealthy.load(Ordering::Relaxed)
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
    pub(crate) fn healthy_again_at(&self, now: Instant) -> Option<Instant> {
        if self.is_healthy_at(now) || self.is_active_unhealthy() {
            return None;
        }
        let until = self
            .tripped_until_ms
            .load(Ordering::Relaxed)
            .max(self.ejected_until_ms.load(Ordering::Relaxed));
        self.created.checked_add(Duration::from_millis(until))
    }

    /// Whether the breaker is open or its half-open probe is taken at `now`.
    #[inline]
    pub fn is_tripped_at(&self, now: Instant) -> bool {
        !self.is_available_at(now)
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

    /// Counts an attempt starting at `now`; whether it is the probe.
    fn begin(&self, now: Instant) -> bool {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let until = self.tripped_until_ms.load(Ordering::Acquire);
        until != 0
            && self.ms_at(now) >= until
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Records a finished attempt (called by [`InFlightGuard::finish`]).
    fn record(
        &self,
        outcome: Outcome,
        latency: Duration,
        now: Instant,
        probe: bool,
    ) -> BreakerTransition {
        let now_ms = self.now_ms32(now);
        let mut latency_us = latency.as_secs_f64() * 1e6;
        if !outcome.is_success() {
            self.failures.fetch_add(1, Ordering::Relaxed);
            latency_us = latency_us.max(self.config.failure_penalty.as_secs_f64() * 1e6);
        }
        let tau = self.tau_ms(self.config.ewma_decay);
        self.ewma_us.observe(latency_us, now_ms, tau, false);
        self.peak_ewma_us.observe(latency_us, now_ms, tau, true);
        self.mean_us.observe(
            latency_us,
            now_ms,
            self.tau_ms(self.config.mean_decay),
            false,
        );
        self.success_rate.observe(
            if outcome.is_success() { 1.0 } else { 0.0 },
            now_ms,
            tau,
            false,
        );

        // Outlier-detection counters (Envoy): connection-level failures count
        // as both 5xx and gateway errors; any other response resets.
        let (server_error, gateway_error) = match outcome {
            Outcome::Success => (false, false),
            Outcome::FailureStatus(code) => ((500..600).contains(&code), matches!(code, 502..=504)),
            _ => (true, true),
        };
        for (counter, hit) in [
            (&self.consecutive_server_errors, server_error),
            (&self.consecutive_gateway_errors, gateway_error),
        ] {
            if hit {
                counter.fetch_add(1, Ordering::AcqRel);
            } else {
                counter.store(0, Ordering::Release);
            }
        }

        let mut transition = BreakerTransition::None;
        if outcome.is_connection_failure() {
            let n = self
                .successive_connection_failures
                .fetch_add(1, Ordering::AcqRel)
                .saturating_add(1);
            if let Some(blackout) = self.config.blackout(n) {
                let until = self
                    .ms_at(now)
                    .saturating_add(u64::try_from(blackout.as_millis()).unwrap_or(u64::MAX));
                self.tripped_until_ms.store(until.max(1), Ordering::Release);
                transition = BreakerTransition::Tripped;
            }
        } else if matches!(outcome, Outcome::Success | Outcome::FailureStatus(_)) {
            // Any response resets (Ribbon clears on every response).
            self.successive_connection_failures
                .store(0, Ordering::Release);
            if self.tripped_until_ms.swap(0, Ordering::AcqRel) != 0 {
                transition = BreakerTransition::Recovered;
            }
        }
        if probe {
            self.probing.store(false, Ordering::Release);
        }
        transition
    }
}

fn us_to_duration(us: f64) -> Duration {
    Duration::from_secs_f64((us / 1e6).max(0.0))
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

/// Keeps one attempt counted as in flight; finishing or dropping it ends
/// the attempt.
///
/// Dropped without [`InFlightGuard::finish`] (a cancelled request), it only
/// lowers the in-flight count and frees a half-open probe.
#[must_use = "dropping the guard ends the attempt at once"]
pub struct InFlightGuard<'a> {
    stats: StatsRef<'a>,
    started: Instant,
    probe: bool,
    done: bool,
}

impl InFlightGuard<'_> {
    /// Ends the attempt now with `outcome`, measuring latency from start.
    /// Returns what the attempt did to the circuit breaker.
    pub fn finish(self, outcome: Outcome) -> BreakerTransition {
        self.finish_at(outcome, Instant::now())
    }

    /// Ends the attempt at `now` with `outcome`.
    pub fn finish_at(mut self, outcome: Outcome, now: Instant) -> BreakerTransition {
        let latency = now.saturating_duration_since(self.started);
        self.done = true;
        self.stats.record(outcome, latency, now, self.probe)
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
enum StatsRef<'a> {
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
            self.stats.probing.store(false, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blackouts_follow_ribbon() {
        let c = StatsConfig::default();
        let secs = |n| c.blackout(n).map(|d| d.as_secs());
        assert_eq!(secs(2), None);
        assert_eq!(secs(3), Some(10));
        assert_eq!(secs(4), Some(20));
        assert_eq!(secs(5), Some(30));
        assert_eq!(secs(60), Some(30));
    }

    #[tokio::test(start_paused = true)]
    async fn guard_counts_every_path() {
        let s = EndpointStats::new();
        let a = s.start();
        let b = s.start();
        let c = s.start();
        assert_eq!(s.in_flight(), 3);
        a.success();
        b.failure();
        drop(c);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.requests(), 3);
        assert_eq!(s.failures(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_trips_blacks_out_and_probes() {
        let s = EndpointStats::new();
        let t0 = Instant::now();
        for _ in 0..2 {
            s.start_at(t0).finish_at(Outcome::ConnectFailure, t0);
        }
        assert_eq!(s.breaker_state_at(t0), BreakerState::Closed);
        s.start_at(t0).finish_at(Outcome::ReadTimeout, t0);
        assert_eq!(
            s.breaker_state_at(t0),
            BreakerState::Open {
                remaining: Duration::from_secs(10)
            }
        );
        assert!(!s.is_available_at(t0 + Duration::from_millis(9_999)));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            s.breaker_state_at(t1),
            BreakerState::HalfOpen { probing: false }
        );
        assert!(s.is_available_at(t1));

        // The probe fails: re-trips for 20 s.
        let probe = s.start_at(t1);
        assert!(probe.is_probe());
        assert!(!s.is_available_at(t1));
        assert!(!s.start_at(t1).is_probe());
        probe.finish_at(Outcome::ConnectFailure, t1);
        assert_eq!(
            s.breaker_state_at(t1),
            BreakerState::Open {
                remaining: Duration::from_secs(20)
            }
        );
        // Then 30 s, and 30 s after that.
        let t2 = t1 + Duration::from_secs(20);
        s.start_at(t2).finish_at(Outcome::ConnectFailure, t2);
        assert_eq!(
            s.breaker_state_at(t2),
            BreakerState::Open {
                remaining: Duration::from_secs(30)
            }
        );
        let t3 = t2 + Duration::from_secs(30);
        s.start_at(t3).finish_at(Outcome::ConnectFailure, t3);
        assert_eq!(
            s.breaker_state_at(t3),
            BreakerState::Open {
                remaining: Duration::from_secs(30)
            }
        );
        // A successful probe closes it.
        let t4 = t3 + Duration::from_secs(30);
        let probe = s.start_at(t4);
        assert!(probe.is_probe());
        probe.finish_at(Outcome::Success, t4);
        assert_eq!(s.breaker_state_at(t4), BreakerState::Closed);
        assert_eq!(s.successive_connection_failures(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_frees_the_half_open_slot() {
        let s = EndpointStats::new();
        let t0 = Instant::now();
        for _ in 0..3 {
            s.start_at(t0).finish_at(Outcome::ConnectFailure, t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        let probe = s.start_at(t1);
        assert!(probe.is_probe());
        drop(probe);
        assert_eq!(
            s.breaker_state_at(t1),
            BreakerState::HalfOpen { probing: false }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_down() {
        let s = EndpointStats::new();
        let t0 = Instant::now();
        let g = s.start_at(t0);
        g.finish_at(Outcome::Success, t0 + Duration::from_millis(10));
        assert_eq!(
            s.peak_ewma_at(t0 + Duration::from_millis(10))
                .unwrap()
                .as_millis(),
            10
        );
        let g = s.start_at(t0 + Duration::from_millis(10));
        g.finish_at(Outcome::Success, t0 + Duration::from_millis(110));
        assert_eq!(
            s.peak_ewma_at(t0 + Duration::from_millis(110))
                .unwrap()
                .as_millis(),
            100
        );
        // 10 s (one τ) later with no traffic: decayed by e.
        let later = s.peak_ewma_at(t0 + Duration::from_millis(10_110)).unwrap();
        assert_eq!(later.as_micros(), 36_787);
        // A failure after 1 ms is priced as the 1 s penalty.
        let t = t0 + Duration::from_secs(20);
        s.start_at(t)
            .finish_at(Outcome::FailureStatus(500), t + Duration::from_millis(1));
        assert_eq!(
            s.peak_ewma_at(t + Duration::from_millis(1))
                .unwrap()
                .as_millis(),
            1000
        );
        assert_eq!(s.failures(), 1);
        assert!(s.success_rate().unwrap() < 1.0);
    }
}
