//! A response in order over a streak longer than 8 whose latest stamps lie
//! more than 1 s ahead (helper 141, against the streak that keeps its
//! latest 8 stamps): those stamps take the kept slots and push failures
//! after the response out of them; the response then kept only the kept
//! ones in its window and dropped the others, so nine 503s after it read 4
//! (under Envoy's trigger of 5) and nine connection failures read 2, and
//! the breaker closed. Now only the kept stamps outside the window go (the
//! count errs high by dropped failures before the response, never low),
//! and the breaker stays open while the failures after the response reach
//! its threshold (it closed on nine before this session too).

use std::time::Duration;

use tokio::time::Instant;
use tower_ribbon::stats::{BreakerState, BreakerTransition, EndpointStats, Outcome};

fn rec(s: &EndpointStats, t0: Instant, ms: u64, o: Outcome) -> BreakerTransition {
    let at = t0 + Duration::from_millis(ms);
    s.start_at(at).finish_at(o, at)
}

/// Four 503s stamped 7 000..=7 003 ms (more than 1 s ahead of what
/// follows: wrong stamps, ended by a response in order), nine 503s at
/// 5 001..=5 009, then a success at 5 000 (in order: the latest failure
/// is more than 1 s ahead). In time order the nine 503s come after the
/// success: Envoy's consecutive_5xx is 9 (at least its trigger of 5), and
/// so is consecutive_gateway_failure. The streak kept 7 000..=7 003 and
/// 5 006..=5 009 (the latest 8 stamps), dropped 5 001..=5 005
/// (`dropped_max` 5 005, inside the window 5 001..=6 000), and the reset
/// keeps only the 4 kept in-window stamps: 4, below the trigger.
#[test]
fn a_reset_in_order_keeps_the_dropped_failures_after_it_past_far_ahead_stamps() {
    let s = EndpointStats::new();
    let t0 = s.first_seen();
    for ms in 7_000..=7_003 {
        rec(&s, t0, ms, Outcome::FailureStatus(503));
    }
    for ms in 5_001..=5_009 {
        rec(&s, t0, ms, Outcome::FailureStatus(503));
    }
    assert_eq!(s.consecutive_server_errors(), 13);
    rec(&s, t0, 5_000, Outcome::Success);
    let (x, g) = (
        s.consecutive_server_errors(),
        s.consecutive_gateway_errors(),
    );
    assert!(
        x >= 9 && g >= 9,
        "after S@5000 in order, 503s at 5001..=5009 follow it (9, Envoy's trigger 5): \
         consecutive_5xx {x}, gateway {g}; expected 9 and 9 (at least 5)"
    );
}

fn breaker_case() -> (EndpointStats, Instant, BreakerTransition) {
    let s = EndpointStats::new();
    let t0 = s.first_seen();
    let mut trips = 0;
    for ms in (7_000..=7_005).chain(5_001..=5_009) {
        if rec(&s, t0, ms, Outcome::ConnectFailure) == BreakerTransition::Tripped {
            trips += 1;
        }
    }
    assert_eq!((trips, s.successive_connection_failures()), (1, 15));
    let tr = rec(&s, t0, 5_000, Outcome::Success);
    (s, t0, tr)
}

/// The breaker: six connect failures stamped 7 000..=7 005 (trip at the
/// third), nine at 5 001..=5 009, then a success at 5 000 in order. In time
/// order nine successive connection failures follow the success: 9
/// successive. Observed: the reset keeps 5 008 and 5 009 only: 2 (the
/// parent commit read 15, at least the 9).
#[test]
fn a_reset_in_order_keeps_nine_successive_failures_after_it() {
    let (s, _, _) = breaker_case();
    let n = s.successive_connection_failures();
    assert!(
        n >= 9,
        "S@5000 in order, then connect failures at 5001..=5009 in time order: \
         {n} successive; expected 9 (threshold 3)"
    );
}

/// The same: the commit's own rule (a response's close needs the failures
/// the streak keeps after it below the threshold) should keep the breaker
/// open with nine failures after the success. Observed: 2 left, the breaker
/// closes and reports `Recovered` (the parent commit closed too, with 15).
#[test]
fn a_reset_in_order_does_not_close_on_nine_failures_after_it() {
    let (s, t0, tr) = breaker_case();
    let n = s.successive_connection_failures();
    let state = s.breaker_state_at(t0 + Duration::from_millis(5_010));
    assert!(
        tr == BreakerTransition::None && matches!(state, BreakerState::Open { .. }),
        "S@5000 in order, then 9 connect failures at 5001..=5009 in time order (threshold 3): \
         got {tr:?}, {n} successive, {state:?} at 5010 ms; expected None, 9 successive, Open"
    );
}
