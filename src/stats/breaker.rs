//! The circuit breaker (Ribbon's `ServerStats` breaker, plus a half-open
//! probe).
//!
//! - **Trip.** `breaker_threshold` (default 3) successive connection-class
//!   failures ([`Outcome::is_connection_failure`]) trip it. The blackout is
//!   `min(2^(n − threshold) × breaker_base, breaker_max)` from the failure
//!   (defaults 10 s and 30 s: 10, 20, 30, 30 ... s), `n` the count.
//! - **Reset.** Any response (success or failure status) resets the count
//!   and closes the breaker (Ribbon clears it on every response). The
//!   balancer does this when the response's headers arrive, not when its
//!   body ends, so a probe answered with a long stream (SSE, a watch, a
//!   server-streaming gRPC call) gives its instance back at once.
//! - **Half-open.** Ribbon has none; here, once the blackout ends, exactly
//!   one request (the probe) may go; its outcome closes or re-trips. The
//!   balancer's health view counts the instance unhealthy from the moment
//!   the probe is taken until its result (every rule, round robin
//!   included, then skips it), and looks again every [`PROBE_RECHECK`] in
//!   case the probe's request is dropped without a result. A probe holds
//!   the turn of its own blackout only: if another request's response
//!   closes the breaker and it trips again, the old probe (still hanging)
//!   neither keeps the instance out after the new blackout nor frees the
//!   new blackout's probe when it ends.
//!
//! **Time.** Times are milliseconds since the stats were created. The end
//! of a blackout only moves forward (`fetch_max`): a failure recorded out
//! of order never shortens a blackout. A response whose time is older than
//! the latest recorded failure, by at most 1 s, is stale: it
//! neither resets the count nor closes the breaker, because in time order
//! it came before that failure. (Older still, the failure's time is taken
//! as wrong, stamped far ahead: the response counts in order.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Outcome;
use super::StatsConfig;
use super::lost::LostStreams;
use super::streak::Streak;

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

/// The breaker's atomics (part of [`super::EndpointStats`]).
pub(crate) struct Breaker {
    successive: Streak,
    /// End of the blackout in ms; 0 when closed.
    until_ms: AtomicU64,
    /// The blackout end (`until_ms`) a reader (a pick) last saw over: a
    /// failure extending that blackout re-trips the breaker (see
    /// [`Breaker::record`]).
    over_seen: AtomicU64,
    /// The blackout end (`until_ms`) whose half-open probe is in flight; 0
    /// for none. A probe holds only its own blackout's turn: once the
    /// breaker closes or trips again, it no longer keeps the instance out,
    /// and its end frees no later probe.
    probing: AtomicU64,
    /// When a declined attempt last counted (ms + 1; 0: never), see
    /// [`StatsConfig::declined_counted_every`].
    declined_ms: AtomicU64,
    /// When the last declined attempt ended, counted or not (ms + 1; 0:
    /// never): a connection the server closes right after its
    /// `GOAWAY(ENHANCE_YOUR_CALM)` was closed for this client's traffic.
    declined_seen_ms: AtomicU64,
    /// The [`ConnectionLost`](super::Outcome::ConnectionLost) attempts
    /// counted: once per connection's end ([`super::lost`]).
    lost: LostStreams,
    /// The latest time a response was recorded: a connection failure
    /// stamped before it, recorded late (its thread descheduled between
    /// reading the clock and recording), happened before that response and
    /// does not count toward tripping, as it would not have in order.
    responded_ms: LatestReset,
}

pub(crate) use super::streak::{LatestReset, is_late};

/// How often the health view looks again at an instance whose half-open
/// probe is in flight: the probe's result is reported at once, so this
/// only bounds the wait when the probe's request is dropped (its instance
/// is then half-open and free to probe again).
pub const PROBE_RECHECK: Duration = Duration::from_secs(1);

pub(crate) const PROBE_RECHECK_MS: u64 = PROBE_RECHECK.as_millis() as u64;

/// A probe's token: its blackout's end cut to 32 bits, never 0 (so a
/// guard holds 4 bytes for it: the request future stays in the
/// allocator's thread cache).
fn token(until_ms: u64) -> u32 {
    (until_ms as u32).max(1)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Breaker {
    pub(crate) const fn new() -> Self {
        Self {
            successive: Streak::new(),
            until_ms: AtomicU64::new(0),
            over_seen: AtomicU64::new(0),
            probing: AtomicU64::new(0),
            declined_ms: AtomicU64::new(0),
            declined_seen_ms: AtomicU64::new(0),
            lost: LostStreams::new(),
            responded_ms: LatestReset::new(),
        }
    }

    /// Whether a declined attempt at `now_ms` counts (the first one in
    /// each `every_ms`; of racing ones, exactly one).
    pub(crate) fn count_declined(&self, now_ms: u64, every_ms: u64) -> bool {
        let now = now_ms.saturating_add(1);
        let last = self.declined_ms.load(Ordering::Acquire);
        if last != 0 && now < last.saturating_add(every_ms) {
            return false;
        }
        self.declined_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Notes a declined attempt at `now_ms`, counted or not.
    pub(crate) fn saw_declined(&self, now_ms: u64) {
        self.declined_seen_ms
            .fetch_max(now_ms.saturating_add(1), Ordering::AcqRel);
    }

    /// Whether a lost stream (sent at `sent_us`, failed at `now_us`, µs + 1,
    /// on `connection` if known) counts: not when a declined attempt ended
    /// within `every_ms` before `now_ms` (the server closed the connection
    /// for this client's traffic), nor when its connection's end counted
    /// already ([`super::lost`]); of racing ones from one connection,
    /// exactly one.
    pub(crate) fn count_lost(
        &self,
        connection: Option<u64>,
        sent_us: u64,
        now_us: u64,
        now_ms: u64,
        every_ms: u64,
    ) -> bool {
        let seen = self.declined_seen_ms.load(Ordering::Acquire);
        if seen != 0 && now_ms.saturating_add(1) < seen.saturating_add(every_ms) {
            return false;
        }
        self.lost.count(connection, sent_us, now_us)
    }

    pub(crate) fn successive(&self) -> u32 {
        self.successive.get()
    }

    /// End of the blackout in ms (0: closed).
    #[inline]
    pub(crate) fn until_ms(&self) -> u64 {
        self.until_ms.load(Ordering::Acquire)
    }

    pub(crate) fn state(&self, now_ms: u64) -> BreakerState {
        let until = self.until_ms();
        if until == 0 {
            BreakerState::Closed
        } else if now_ms < until {
            BreakerState::Open {
                remaining: Duration::from_millis(until - now_ms),
            }
        } else {
            BreakerState::HalfOpen {
                probing: self.probing.load(Ordering::Acquire) == until,
            }
        }
    }

    /// Closed, or half-open with no probe in flight.
    #[inline]
    pub(crate) fn is_available(&self, now_ms: u64) -> bool {
        let until = self.until_ms.load(Ordering::Relaxed);
        until == 0
            || (self.seen_over(until, now_ms) && self.probing.load(Ordering::Relaxed) != until)
    }

    /// Whether the blackout ending at `until` is over at `now_ms`, noting
    /// it when it is (written once per blackout).
    #[inline]
    fn seen_over(&self, until: u64, now_ms: u64) -> bool {
        let over = now_ms >= until;
        if over && self.over_seen.load(Ordering::Relaxed) != until {
            self.over_seen.store(until, Ordering::Relaxed);
        }
        over
    }

    /// Takes the half-open probe if the blackout is over and no probe of
    /// this blackout is in flight: the probe's token (its blackout's end
    /// cut to 32 bits, never 0) if this attempt is the probe, else 0.
    pub(crate) fn try_probe(&self, now_ms: u64) -> u32 {
        let until = self.until_ms();
        if until == 0 || !self.seen_over(until, now_ms) {
            return 0;
        }
        let held = self.probing.load(Ordering::Acquire);
        if held == until {
            return 0;
        }
        match (self.probing).compare_exchange(held, until, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => token(until),
            Err(_) => 0,
        }
    }

    /// Whether a response has anything to reset: successive failures
    /// counted, or a blackout (over or not) not cleared yet.
    #[inline]
    pub(crate) fn needs_reset(&self) -> bool {
        self.successive.get() != 0 || self.until_ms.load(Ordering::Relaxed) != 0
    }

    /// Frees the probe of `token` (as [`Breaker::try_probe`] returned it)
    /// if its blackout's probe is still the one in flight. (Two blackouts
    /// share a token only if their ends lie a multiple of 2³² ms, 49.7
    /// days, apart.)
    pub(crate) fn release_probe(&self, token: u32) {
        let held = self.probing.load(Ordering::Acquire);
        if held != 0 && self::token(held) == token {
            let _ = (self.probing).compare_exchange(held, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Records an outcome at `now_ms`; `stale` when `now_ms` is older than
    /// the latest failure recorded before this one. A connection failure
    /// older than the latest recorded response is not counted (that
    /// response reset the count after it). `late`: a stale response
    /// stamped `now_ms` shortens the streak of failures by those it came
    /// after ([`Streak::trim`]). `latest_ms`: the latest stamp recorded,
    /// the clock pickers have seen: a failure that extends a blackout
    /// already over by that clock re-trips the breaker.
    pub(crate) fn record(
        &self,
        config: &StatsConfig,
        outcome: Outcome,
        now_ms: u64,
        stale: bool,
        late: bool,
        latest_ms: u64,
    ) -> BreakerTransition {
        if outcome.is_response() {
            // Also a stale one: a failure older still came before it.
            self.responded_ms.mark(now_ms);
        }
        // Each change of the streak and the blackout it decides happen
        // under the streak's lock: apart, a response resetting the streak
        // between a failure's count and its blackout left the breaker open
        // with no failure counted, and a late response closed a blackout a
        // failure counted after its trim had extended (helper 140).
        if outcome.is_connection_failure() {
            let now = |n| self.trip(config, n, now_ms, latest_ms);
            return (self.successive)
                .add_unless_reset_then(now_ms, &self.responded_ms, now)
                .unwrap_or(BreakerTransition::None);
        }
        if !outcome.is_response() || (stale && !late) {
            return BreakerTransition::None;
        }
        // In time order this response closed the breaker, and the failures
        // after it (those the streak keeps: a late response's, or another
        // thread's newer ones) trip it again only if they reach the
        // threshold. Read before writing: on the common path (nothing to
        // reset) the cache line stays shared between cores instead of
        // being taken for a write by every response.
        let close = |left: u32| {
            if self.until_ms.load(Ordering::Acquire) != 0
                && config.blackout(left).is_none()
                && self.until_ms.swap(0, Ordering::AcqRel) != 0
            {
                BreakerTransition::Recovered
            } else {
                BreakerTransition::None
            }
        };
        if stale {
            self.successive.trim_then(now_ms, close)
        } else {
            self.successive.reset_at_then(now_ms, close)
        }
    }

    /// A connection failure counted at `now_ms`, the streak now `n`: opens
    /// or extends the blackout when `n` reaches the threshold.
    fn trip(&self, config: &StatsConfig, n: u32, now_ms: u64, latest_ms: u64) -> BreakerTransition {
        if let Some(blackout) = config.blackout(n) {
            let until = now_ms.saturating_add(millis(blackout)).max(1);
            let was = self.until_ms.fetch_max(until, Ordering::AcqRel);
            // A trip when it was closed, or half-open (a failed probe
            // re-trips); a failure while it is open only extends the
            // blackout, as Ribbon's count goes on. (Every failure past the
            // threshold reported a trip: the requests in flight when an
            // instance dies, failing together, each counted one.) Half-open
            // by the latest stamp is half-open: a failure stamped just
            // before the blackout's end, recorded after a pick saw it over,
            // reopened it silently, and the balancer's health view kept
            // routing to it (helper 130). A latest stamp more than 1 s
            // ahead is taken as wrong (a record through `finish_at` with a
            // future instant), as `is_late` takes it: with it, every
            // failure reported a trip.
            let clock = match latest_ms.saturating_sub(now_ms) {
                ahead if ahead <= super::streak::LATE_MAX_MS => now_ms + ahead,
                _ => now_ms,
            };
            let seen = self.over_seen.load(Ordering::Relaxed);
            if was == 0 || was <= clock || seen == was {
                return BreakerTransition::Tripped;
            }
        }
        BreakerTransition::None
    }
}

impl super::EndpointStats {
    /// Whether the breaker still marks the instance down at `now`: open,
    /// or half-open (no response closed it since it tripped) for at most
    /// [`StatsConfig::breaker_max`] after its blackout ended. The refresh
    /// keeps a departed instance's stats this long, so one listed again
    /// meanwhile comes back one failure from a longer blackout, and a
    /// host and port reused much later start afresh.
    pub(crate) fn breaker_holds_at(&self, now: tokio::time::Instant) -> bool {
        let until = self.breaker.until_ms();
        until != 0 && self.ms_at(now) < until.saturating_add(millis(self.config.breaker_max))
    }

    /// How much longer (ms after `now`) the breaker
    /// ([`breaker_holds_at`](Self::breaker_holds_at)) or an ejection marks
    /// the instance down; 0 when neither does. The refresh's departed map
    /// drops the marks ending soonest first when it overflows.
    pub(crate) fn marked_down_for_ms(&self, now: tokio::time::Instant) -> u64 {
        let until = self.breaker.until_ms();
        let breaker = match until {
            0 => 0,
            _ => until.saturating_add(millis(self.config.breaker_max)),
        };
        let end = breaker.max(self.ejection.until_ms());
        end.saturating_sub(self.ms_at(now))
    }

    /// Whether a [`Declined`](super::Outcome::Declined) attempt at `now`
    /// counts against this endpoint, as a connect failure: the first in
    /// each [`StatsConfig::declined_counted_every`], exactly one of racing
    /// ones.
    pub(crate) fn count_declined(&self, now: tokio::time::Instant) -> bool {
        let every = self.config.declined_counted_every.as_millis();
        let now_ms = self.ms_at(now);
        self.breaker.saw_declined(now_ms);
        self.breaker
            .count_declined(now_ms, u64::try_from(every).unwrap_or(u64::MAX))
    }

    /// Whether a [`ConnectionLost`](super::Outcome::ConnectionLost) attempt
    /// sent at `sent`, failed at `now` (when it was read), on `connection`
    /// (an identity of it, as [`connection_id`](crate::service::ResponseStatus::connection_id)
    /// gives; `None` when unknown) counts against this endpoint, as an
    /// other error: once per connection's end (by its identity, else a
    /// stream sent after the last counted one ended; see [`super::lost`]),
    /// and not within
    /// [`StatsConfig::declined_counted_every`] of a declined attempt (its
    /// `GOAWAY(ENHANCE_YOUR_CALM)` closed the connection for this client's
    /// traffic).
    pub(crate) fn count_lost(
        &self,
        sent: tokio::time::Instant,
        now: tokio::time::Instant,
        connection: Option<u64>,
    ) -> bool {
        // µs + 1, so that a stream sent at (or, out of order, before) the
        // endpoint's creation is still after "never" (0).
        let us = |at: tokio::time::Instant| {
            u64::try_from(at.saturating_duration_since(self.created).as_micros())
                .unwrap_or(u64::MAX)
                .saturating_add(1)
        };
        let every = self.config.declined_counted_every.as_millis();
        self.breaker.count_lost(
            connection,
            us(sent),
            us(now),
            self.ms_at(now),
            u64::try_from(every).unwrap_or(u64::MAX),
        )
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
