//! Records out of order against the breaker and the outlier counters,
//! compared with the same records in time order (helper 134, stop 49, on
//! the first version of `stats::streak`). Every scenario is a list of
//! records (finish time in µs from t0, outcome) fed once in the given
//! (record) order and once sorted by finish time (time order) on fresh
//! stats. The first version kept only a streak's first and latest time
//! and left one failure after a late response, took a failure in the
//! response's own millisecond as before it, did not close a breaker a
//! late response trimmed below its threshold, and took a stamp an hour
//! ahead as the clock for re-trips; each case below failed then.

use std::time::Duration;

use tokio::time::Instant;
use tower_ribbon::stats::{BreakerState, BreakerTransition, EndpointStats, Outcome};

const S: Outcome = Outcome::Success;
const F: Outcome = Outcome::ConnectFailure;

/// (finish µs from t0, outcome)
type Rec = (u64, Outcome);

#[derive(Debug, Default)]
struct Seen {
    tripped: usize,
    recovered: usize,
    max_successive: u32,
    max_5xx: u32,
    max_gateway: u32,
}

fn feed(s: &EndpointStats, t0: Instant, recs: &[Rec]) -> Seen {
    let mut seen = Seen::default();
    for &(us, outcome) in recs {
        let end = t0 + Duration::from_micros(us);
        let start = end.checked_sub(Duration::from_micros(300)).unwrap_or(end);
        match s.start_at(start).finish_at(outcome, end) {
            BreakerTransition::Tripped => seen.tripped += 1,
            BreakerTransition::Recovered => seen.recovered += 1,
            BreakerTransition::None => {}
        }
        seen.max_successive = seen.max_successive.max(s.successive_connection_failures());
        seen.max_5xx = seen.max_5xx.max(s.consecutive_server_errors());
        seen.max_gateway = seen.max_gateway.max(s.consecutive_gateway_errors());
    }
    seen
}

/// 100 successes one per ms ending at 100 ms.
fn warm() -> Vec<Rec> {
    (1..=100).map(|i| (i * 1_000, S)).collect()
}

fn sorted(recs: &[Rec]) -> Vec<Rec> {
    let mut v = recs.to_vec();
    v.sort_by_key(|r| r.0);
    v
}

/// Both orders: (record order stats + seen, time order stats + seen).
fn both(recs: &[Rec]) -> ((EndpointStats, Seen), (EndpointStats, Seen), Instant) {
    let t0 = Instant::now();
    let a = EndpointStats::new();
    let sa = feed(&a, t0, recs);
    let b = EndpointStats::new();
    let sb = feed(&b, t0, &sorted(recs));
    ((a, sa), (b, sb), t0)
}

// ---------------------------------------------------------------------------
// 1. A late response that only trims the streak to 1 leaves the breaker open.
// ---------------------------------------------------------------------------

/// F 101, F 102, F 103 trip the breaker (until 10 103 ms). During the
/// blackout two requests that were in flight finish: a success at 200 ms
/// and a connect failure at 300 ms; the failure is recorded first.
/// Time order: F F F S(200) F(300): S closes the breaker (Recovered), the
/// failure after it makes 1: Closed, 1 successive failure.
/// Record order: the late S trims the streak of 4 to 1 (`Streak::trim`
/// middle branch) but, trim returning 1 and not 0, does not close the
/// breaker, which F(300) extended to 20 300 ms.
/// Measured: Open { remaining: 20 s } with successive_connection_failures
/// == 1 (below the threshold of 3), no Recovered; time order: Closed, 1,
/// one Recovered. The instance is kept out 20 s on one failure.
#[tokio::test(start_paused = true)]
async fn a_late_response_that_trims_to_one_leaves_the_breaker_open() {
    let mut recs = warm();
    recs.extend([
        (101_000, F),
        (102_000, F),
        (103_000, F),
        (300_000, F),
        (200_000, S),
    ]);
    let ((a, sa), (b, sb), t0) = both(&recs);
    let at = t0 + Duration::from_millis(300);
    let (sta, stb) = (a.breaker_state_at(at), b.breaker_state_at(at));
    assert_eq!(
        (sta, a.successive_connection_failures(), sa.recovered),
        (stb, b.successive_connection_failures(), sb.recovered),
        "record order {sa:?} vs time order {sb:?}"
    );
}

// ---------------------------------------------------------------------------
// 2. Trim takes a failure in the response's millisecond as before it.
// ---------------------------------------------------------------------------

/// Per 3 ms cycle at b: S at b+0.1 (in order), S at b+0.2 (recorded late),
/// F at b+0.9, F at b+1.5, F at b+2.5. Time order: S S F F F: three
/// successive connect failures every cycle, the breaker trips at the first
/// one. Record order: S(b.1) F(b.9) F(b+1.5) S(b.2) F(b+2.5): the late S
/// (ms b) is "at or after" the first failure (ms b, truncated) so it trims
/// the streak to 1, and the count never passes 2.
/// Measured over 20 cycles: record order max 2, 0 trips; time order max
/// 3, 20 trips (19 recoveries). Every failure here really came after both
/// responses (µs stamps); only the ms truncation in `Streak::trim`
/// (`at_ms >= first_ms`, src/stats/streak.rs:79) puts it before. The same
/// millisecond counts as after a response for `LatestReset::came_before`
/// (strict `<`), so the two disagree.
#[tokio::test(start_paused = true)]
async fn failures_in_the_responses_millisecond_are_trimmed_so_the_breaker_never_trips() {
    let mut recs = warm();
    for c in 0..20u64 {
        let b = 200_000 + c * 3_000;
        recs.extend([
            (b + 100, S),
            (b + 900, F),
            (b + 1_500, F),
            (b + 200, S),
            (b + 2_500, F),
        ]);
    }
    let ((_a, sa), (_b, sb), _) = both(&recs);
    // Now the same as in time order: 3 successive, 20 trips, 19
    // recoveries.
    assert_eq!(
        (sa.max_successive, sa.tripped, sa.recovered),
        (sb.max_successive, sb.tripped, sb.recovered),
        "record order {sa:?} vs time order {sb:?}"
    );
}

// ---------------------------------------------------------------------------
// 3. Outlier counters: a truly failing streak never reaches Envoy's 5.
// ---------------------------------------------------------------------------

/// Per 10 ms cycle at b (whole ms, no truncation issue): S at b (in order),
/// 503 at b+1, S at b+2 (recorded late), 503 at b+3 ..= b+8, S ends at b+10.
/// Time order: after S(b+2) six 503s in a row: consecutive 5xx and gateway
/// reach 6 every cycle (Envoy's default 5 ejects). Record order: S(b),
/// 503(b+1), 503(b+3..=b+5), S(b+2) late, 503(b+6..=b+8): the late S trims
/// the streak of 4 to 1 (it keeps only the latest of b+3..=b+5), so the
/// count tops out at 4 and the instance is never ejected.
/// Measured over 50 cycles: record order max 5xx 4, max gateway 4; time
/// order 6 and 6. Cause: `Streak::trim` (src/stats/streak.rs:78-83) keeps
/// one failure of those after the response; the doc's "errs low by at most
/// the failures of the last second" is enough to hide every trigger.
#[tokio::test(start_paused = true)]
async fn late_responses_keep_a_failing_instance_below_the_ejection_trigger() {
    let e = Outcome::FailureStatus(503);
    let mut recs = warm();
    for c in 0..50u64 {
        let b = 200_000 + c * 10_000;
        recs.push((b, S));
        recs.push((b + 1_000, e));
        for k in 3..=5 {
            recs.push((b + k * 1_000, e));
        }
        recs.push((b + 2_000, S));
        for k in 6..=8 {
            recs.push((b + k * 1_000, e));
        }
    }
    let ((_a, sa), (_b, sb), _) = both(&recs);
    assert!(sb.max_5xx >= 5 && sb.max_gateway >= 5, "time order {sb:?}");
    assert!(
        sa.max_5xx >= 5 && sa.max_gateway >= 5,
        "record order never reaches Envoy's trigger of 5: {sa:?}; time order {sb:?}"
    );
}

/// The same with connect failures against the breaker's streak and the
/// outlier counters at once (a connect failure counts for both).
/// Measured over 50 cycles: record order max successive 4, max 5xx 4,
/// max gateway 4; time order 6, 6, 6 (the breaker trips 50 times in both).
#[tokio::test(start_paused = true)]
async fn late_responses_keep_connect_failures_below_the_ejection_trigger() {
    let mut recs = warm();
    for c in 0..50u64 {
        // 40 s apart so each cycle starts with the breaker closed by S.
        let b = 200_000 + c * 40_000_000;
        recs.push((b, S));
        recs.push((b + 1_000, F));
        for k in 3..=5 {
            recs.push((b + k * 1_000, F));
        }
        recs.push((b + 2_000, S));
        for k in 6..=8 {
            recs.push((b + k * 1_000, F));
        }
    }
    let ((_a, sa), (_b, sb), _) = both(&recs);
    assert!(sb.max_5xx >= 5, "time order {sb:?}");
    assert!(
        sa.max_5xx >= 5,
        "record order never reaches Envoy's trigger of 5: {sa:?}; time order {sb:?}"
    );
}

// ---------------------------------------------------------------------------
// 4. A record stamped far ahead makes every later failure report a trip.
// ---------------------------------------------------------------------------

/// An OtherError finished with an instant 1 h ahead (`finish_at` with a
/// future instant, which `streak::is_late` explicitly treats as a wrong
/// stamp to be ignored beyond 1 s), then five connect failures at
/// 101..=105 ms. Record order: Tripped at the 3rd, 4th and 5th: `record`
/// compares the open blackout's end with the raw `latest_ms` (3 600 000 ms,
/// src/stats/breaker.rs:`was <= now_ms.max(latest_ms)`), so a breaker that
/// is Open reports a new trip on every failure. Time order: one Tripped.
/// Measured: 3 vs 1.
#[tokio::test(start_paused = true)]
async fn a_record_stamped_far_ahead_makes_every_failure_report_a_trip() {
    let mut recs = warm();
    recs.push((3_600_000_000, Outcome::OtherError));
    for t in 101..=105u64 {
        recs.push((t * 1_000, F));
    }
    let ((a, sa), (_b, sb), t0) = both(&recs);
    assert!(matches!(
        a.breaker_state_at(t0 + Duration::from_millis(105)),
        BreakerState::Open { .. }
    ));
    assert_eq!(
        sa.tripped, sb.tripped,
        "record order {sa:?} vs time order {sb:?}"
    );
}
