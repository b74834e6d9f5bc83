//! Records that arrive out of order against the breaker and the outlier
//! counters (helper 130, stop 49).
//!
//! - Failure, response, failure, response, one per ms, each response
//!   recorded 2 ms late (just after the next failure): a stale response
//!   reset nothing, so the successive connection failures reached 10 and
//!   the breaker tripped at the third pair; the consecutive 5xx count
//!   reached 10 (Envoy ejects at 5). In time order the count never
//!   passes 1. A late response now shortens the streak by the failures it
//!   came after (`stats::streak`).
//! - A connection failure stamped 1 ms before a blackout's end, recorded
//!   after a pick saw the breaker half-open and available, reopened it for
//!   20 s and reported no transition, so the balancer's health view kept
//!   the instance (it is reset on transitions only). Now `Tripped`.

use std::time::Duration;

use tokio::time::Instant;
use tower_ribbon::stats::{BreakerState, EndpointStats, Outcome};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One attempt of `latency_ms` finishing at `t0 + finish_ms`.
fn attempt(s: &EndpointStats, t0: Instant, outcome: Outcome, latency_ms: u64, finish_ms: u64) {
    let end = t0 + ms(finish_ms);
    let start = end.checked_sub(ms(latency_ms)).unwrap_or(end);
    s.start_at(start).finish_at(outcome, end);
}

/// Warm: 100 successes of 10 ms, one per ms, ending at `t0 + 100 ms`.
fn warm(s: &EndpointStats, t0: Instant) {
    for i in 1..=100 {
        attempt(s, t0, Outcome::Success, 10, i);
    }
}

// ---------------------------------------------------------------------------
// 1. Responses recorded late behind a newer failure never reset anything, so
//    failures interleaved with responses accumulate as if consecutive.
// ---------------------------------------------------------------------------

/// Real order: F S F S F S ... one per ms (every failure followed 1 ms later
/// by a response: never two failures in a row). Each response's record is
/// 2 ms late: it lands just after the next failure's. In time order the
/// count of successive connection failures never exceeds 1 and the breaker
/// never trips; here each late response is "stale" and resets nothing, while
/// each failure is newer than every recorded response and counts.
#[tokio::test(start_paused = true)]
async fn alternating_connect_failures_with_late_responses_do_not_trip_the_breaker() {
    let s = EndpointStats::new();
    let t0 = Instant::now();
    warm(&s, t0);
    let base = 200;
    let mut max_successive = 0;
    let mut tripped_at = None;
    for k in 0..10u64 {
        // F at base + 2k; S at base + 2k + 1, recorded after F at base + 2k + 2.
        attempt(&s, t0, Outcome::ConnectFailure, 1, base + 2 * k + 2);
        attempt(&s, t0, Outcome::Success, 1, base + 2 * k + 1);
        max_successive = max_successive.max(s.successive_connection_failures());
        if tripped_at.is_none()
            && !matches!(
                s.breaker_state_at(t0 + ms(base + 2 * k + 2)),
                BreakerState::Closed
            )
        {
            tripped_at = Some(k);
        }
    }
    // Measured before the fix: max_successive 10, tripped after the 3rd failure (k = 2),
    // blackout 10 s. In time order: 1, never tripped.
    assert!(
        max_successive <= 1 && tripped_at.is_none(),
        "successive connection failures reached {max_successive}, tripped at pair {tripped_at:?}, state now {:?}",
        s.breaker_state_at(t0 + ms(base + 21))
    );
}

/// The same with 500s (outlier ejection's consecutive_5xx, default trigger 5).
#[tokio::test(start_paused = true)]
async fn alternating_500s_with_late_successes_do_not_count_as_consecutive() {
    let s = EndpointStats::new();
    let t0 = Instant::now();
    warm(&s, t0);
    let base = 200;
    let mut max_5xx = 0;
    for k in 0..10u64 {
        attempt(&s, t0, Outcome::FailureStatus(500), 1, base + 2 * k + 2);
        attempt(&s, t0, Outcome::Success, 1, base + 2 * k + 1);
        max_5xx = max_5xx.max(s.consecutive_server_errors());
    }
    // Measured before the fix: 10 (5 ejects with Envoy's default). In time order: 1.
    assert!(max_5xx <= 1, "consecutive 5xx reached {max_5xx}");
}

/// Three connect failures trip the breaker at 3 ms (blackout to 10 003 ms).
/// At 10 003 ms it is half-open and available: the balancer's health view,
/// recounted at the blackout's end, counts the instance healthy again and
/// waits for the next event. Then a connect failure stamped 10 002 ms (a
/// thread that read the clock 1 ms before the blackout ended) is recorded:
/// it opens the breaker again for 20 s, but `finish_at` reports
/// `BreakerTransition::None`. The balancer invalidates its health view only
/// on a transition (src/service/attempt.rs:275), so the view keeps the
/// instance healthy and rules that do not check breakers themselves (round
/// robin, the default) keep sending to an open breaker for 20 s.
#[tokio::test(start_paused = true)]
async fn a_late_failure_that_reopens_a_half_open_breaker_reports_a_trip() {
    use tower_ribbon::stats::BreakerTransition;
    let s = EndpointStats::new();
    let t0 = Instant::now();
    warm(&s, t0);
    for t in [101, 102, 103] {
        attempt(&s, t0, Outcome::ConnectFailure, 1, t);
    }
    let end = t0 + ms(103 + 10_000);
    assert_eq!(
        s.breaker_state_at(end),
        BreakerState::HalfOpen { probing: false }
    );
    assert!(s.is_available_at(end));
    let late = end - ms(1);
    let transition = s
        .start_at(late - ms(1))
        .finish_at(Outcome::ConnectFailure, late);
    let after = s.breaker_state_at(end);
    // Measured before the fix: available before, Open { remaining:
    // 19.999 s } after, and the transition reported is None; now Tripped.
    assert!(
        s.is_available_at(end) || transition == BreakerTransition::Tripped,
        "half-open and available, then {after:?} after a late failure, reported {transition:?}"
    );
}
