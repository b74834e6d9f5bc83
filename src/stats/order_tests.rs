//! Property: no stat jumps for an out-of-order record.
//!
//! **Definition.** Take a history `H` of attempts whose finish times never
//! decrease, the last one finishing at `t`, each followed by the outlier
//! check the request path runs. Add one more attempt `r` (an outcome and
//! a latency) finishing at `t − δ`, `δ > 0` (out of order). Compare three
//! stats: `A` = `H`, `B` = `H` then `r` finishing at `t` (in order),
//! `C` = `H` then `r` finishing at `t − δ`. A stat does not jump when, read
//! at the same time `T ≥ t`, `C`'s value lies within `[min(A, B), max(A,
//! B)]` (for a yes/no state: equals `A`'s or `B`'s). Checked for the EWMA,
//! the peak EWMA, the decaying mean, the success rate (raw and recovered),
//! the three failure counters, the breaker (available, remaining
//! blackout), ejection (ejected, times ejected).
//!
//! The wrapping clock this replaces failed it at once: `C`'s success rate
//! after a late failure was 0 where `A` and `B` were 0.9998.
//!
//! A second property: reads are monotone in the read time (peak EWMA never
//! grows, the recovered success rate never falls as `T` grows), so a pick
//! with an older timestamp sees at most the stored value.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::{EndpointStats, Outcome};
use crate::discovery::Snapshot;
use crate::health::OutlierDetection;
use crate::instance::{Endpoint, Instance};

const OUTCOMES: [Outcome; 6] = [
    Outcome::Success,
    Outcome::ConnectFailure,
    Outcome::ReadTimeout,
    Outcome::FailureStatus(500),
    Outcome::FailureStatus(503),
    Outcome::FailureStatus(429),
];

/// One attempt: ms after the previous finish, outcome index, latency ms.
type Step = (u64, usize, u64);

struct Run {
    snapshot: Snapshot,
    detection: OutlierDetection,
    t0: Instant,
}

impl Run {
    fn new(t0: Instant) -> Self {
        let e = Endpoint::with_stats(
            Instance::new("s", "127.0.0.1", 1000).unwrap(),
            Arc::new(EndpointStats::new()),
        );
        let detection = OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_failure: 2,
            base_ejection_time: Duration::from_millis(700),
            interval: Duration::from_millis(300),
            max_ejection_percent: 100,
            ..OutlierDetection::default()
        };
        Self {
            snapshot: Snapshot::new("s", vec![e], 1),
            detection,
            t0,
        }
    }

    fn stats(&self) -> &EndpointStats {
        self.snapshot.endpoints()[0].stats()
    }

    /// An attempt finishing at `finish_ms`, then the outlier check.
    fn attempt(&self, outcome: Outcome, latency_ms: u64, finish_ms: u64) {
        let end = self.t0 + Duration::from_millis(finish_ms);
        let start = end
            .checked_sub(Duration::from_millis(latency_ms))
            .unwrap_or(end);
        self.stats().start_at(start).finish_at(outcome, end);
        let e = &self.snapshot.endpoints()[0];
        let _ = self.detection.observe(&self.snapshot, e, end);
    }

    /// Every compared value at `at`, numbers first, then yes/no states.
    fn values(&self, at: Instant) -> (Vec<f64>, Vec<bool>) {
        let s = self.stats();
        let d = |d: Option<Duration>| d.map_or(-1.0, |d| d.as_secs_f64());
        let remaining = match s.breaker_state_at(at) {
            super::BreakerState::Open { remaining } => remaining.as_secs_f64(),
            _ => 0.0,
        };
        let numbers = vec![
            d(s.ewma()),
            s.peak_ewma_us_at(at).unwrap_or(-1.0),
            d(s.mean_response_time()),
            s.success_rate().unwrap_or(-1.0),
            s.success_rate_at(at).unwrap_or(-1.0),
            f64::from(s.consecutive_server_errors()),
            f64::from(s.consecutive_gateway_errors()),
            f64::from(s.successive_connection_failures()),
            remaining,
            f64::from(s.times_ejected()),
        ];
        (numbers, vec![s.is_available_at(at), s.is_ejected_at(at)])
    }
}

fn within(c: f64, a: f64, b: f64) -> bool {
    let slack = 1e-9 * a.abs().max(b.abs());
    c >= a.min(b) - slack && c <= a.max(b) + slack
}

fn check(
    history: &[Step],
    late: Step,
    delta_ms: u64,
    reads_ms: &[u64],
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _guard = rt.enter();
    let t0 = Instant::now() + Duration::from_secs(1);
    let runs = [Run::new(t0), Run::new(t0), Run::new(t0)];
    let mut t = 0;
    for &(gap, outcome, latency) in history {
        t += gap;
        for run in &runs {
            run.attempt(OUTCOMES[outcome], latency, t);
        }
    }
    let (_, outcome, latency) = late;
    runs[1].attempt(OUTCOMES[outcome], latency, t);
    runs[2].attempt(OUTCOMES[outcome], latency, t.saturating_sub(delta_ms));
    for &read in reads_ms {
        let at = t0 + Duration::from_millis(t + read);
        let (a, b, c) = (runs[0].values(at), runs[1].values(at), runs[2].values(at));
        for (k, ((a, b), c)) in a.0.iter().zip(&b.0).zip(&c.0).enumerate() {
            prop_assert!(
                within(*c, *a, *b),
                "value {k} at +{read} ms: late {c}, without {a}, in order {b}"
            );
        }
        for (k, ((a, b), c)) in a.1.iter().zip(&b.1).zip(&c.1).enumerate() {
            prop_assert!(
                c == a || c == b,
                "state {k} at +{read} ms: late {c}, without {a}, in order {b}"
            );
        }
    }
    Ok(())
}

fn step() -> impl Strategy<Value = Step> {
    (0u64..400, 0usize..OUTCOMES.len(), 0u64..2_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, rng_seed: proptest::test_runner::RngSeed::Fixed(10), ..ProptestConfig::default() })]

    /// Late by at most 1 s (`streak::LATE_MAX_MS`): a record further
    /// behind the latest failure is taken at its own time, in order, since
    /// the failure's stamp may be the wrong one (stamped far ahead through
    /// `finish_at`, which froze every reset for as long;
    /// `a_failure_stamped_far_ahead_keeps_no_response_from_resetting`).
    #[test]
    fn no_stat_jumps_for_an_out_of_order_record(
        history in prop::collection::vec(step(), 1..40),
        late in step(),
        delta_ms in 1u64..=super::streak::LATE_MAX_MS,
    ) {
        check(&history, late, delta_ms, &[0, 1, 250, 1_000, 20_000])?;
    }

    #[test]
    fn reads_are_monotone_in_the_read_time(
        history in prop::collection::vec(step(), 1..20),
        reads in prop::collection::vec(0u64..60_000, 2..6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let _guard = rt.enter();
        let t0 = Instant::now();
        let run = Run::new(t0);
        let mut t = 0;
        for &(gap, outcome, latency) in &history {
            t += gap;
            run.attempt(OUTCOMES[outcome], latency, t);
        }
        let mut reads = reads;
        reads.sort_unstable();
        let s = run.stats();
        let stored = s.peak_ewma_us_at(t0 + Duration::from_millis(t)).unwrap();
        let mut last = (stored, 0.0);
        for r in reads {
            // Reads from before the last record (a stale pick) included.
            let at = t0 + Duration::from_millis(r);
            let peak = s.peak_ewma_us_at(at).unwrap();
            let rate = s.success_rate_at(at).unwrap();
            prop_assert!(peak <= last.0 && rate >= last.1, "at {r} ms: {peak} / {rate} after {last:?}");
            last = (peak, rate);
        }
    }
}

/// The numbers: 10 000 successes of 20 ms one per ms, then one
/// failure recorded 2 ms out of order. The wrapping clock gave a success
/// rate of 0.0002 and a mean of 2 s; now nothing moves.
#[tokio::test(start_paused = true)]
async fn a_failure_2_ms_late_moves_nothing() {
    let s = EndpointStats::new();
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    for n in 20..10_020 {
        s.start_at(ms(n - 20)).finish_at(Outcome::Success, ms(n));
    }
    s.start_at(ms(10_000))
        .finish_at(Outcome::FailureStatus(500), ms(10_017));
    assert_eq!(s.success_rate(), Some(1.0));
    assert_eq!(s.mean_response_time(), Some(Duration::from_millis(20)));
    assert_eq!(s.ewma(), Some(Duration::from_millis(20)));
    // The peak still takes the (penalty-priced) failure, as in order.
    assert_eq!(s.peak_ewma_at(ms(10_019)), Some(Duration::from_secs(1)));
    // A success in order 1 ms later is not stale: the EWMA moves normally.
    s.start_at(ms(10_000))
        .finish_at(Outcome::Success, ms(10_020));
    let rate = s.success_rate().unwrap();
    assert!((rate - 1.0).abs() < 1e-12, "{rate}");
}

/// Several late connection failures behind one newer response (found by
/// helper 110): stamped at 97, 98 and 99 ms, recorded after a success at
/// 100 ms. In order, the success reset their count (breaker closed); late,
/// they counted 3 and opened the breaker for 10 s. Now a connection
/// failure older than the latest recorded response counts as a failure
/// but not toward a trip; newer ones still trip it. The property above
/// checks one late record; this is three behind one response.
#[tokio::test(start_paused = true)]
async fn late_connection_failures_behind_a_newer_response_do_not_trip() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let read = |s: &EndpointStats| {
        (
            s.breaker_state_at(ms(101)),
            s.successive_connection_failures(),
            s.failures(),
        )
    };
    let failures = |s: &EndpointStats, from: u64| {
        for n in from..from + 3 {
            s.start_at(ms(n - 1))
                .finish_at(Outcome::ConnectFailure, ms(n));
        }
    };
    let in_order = EndpointStats::new();
    failures(&in_order, 97);
    in_order
        .start_at(ms(90))
        .finish_at(Outcome::Success, ms(100));
    let late = EndpointStats::new();
    late.start_at(ms(90)).finish_at(Outcome::Success, ms(100));
    failures(&late, 97);
    assert_eq!(read(&in_order), (super::BreakerState::Closed, 0, 3));
    assert_eq!(read(&late), read(&in_order));
    // Failures after the response trip it, as before.
    failures(&late, 101);
    assert!(
        matches!(
            late.breaker_state_at(ms(103)),
            super::BreakerState::Open { .. }
        ),
        "{:?}",
        late.breaker_state_at(ms(103))
    );
    assert_eq!(late.successive_connection_failures(), 3);
    // A response older than a failure (stale: it resets nothing) still
    // marks what came before it: a failure older than that response is
    // not counted, as in order.
    let s = EndpointStats::new();
    s.start_at(ms(97))
        .finish_at(Outcome::ConnectFailure, ms(98));
    s.start_at(ms(90)).finish_at(Outcome::Success, ms(95));
    s.start_at(ms(80))
        .finish_at(Outcome::ConnectFailure, ms(90));
    assert_eq!(s.successive_connection_failures(), 1);
    // A response stamped an hour ahead (through `finish_at`; found by
    // helper 111) hides failures at most 1 s older than it: failures one
    // per second from the start trip the breaker at the third, as before.
    let s = EndpointStats::new();
    s.start_at(ms(0)).finish_at(Outcome::Success, ms(3_600_000));
    for n in 1..=3u64 {
        s.start_at(ms(n * 1000 - 1))
            .finish_at(Outcome::ConnectFailure, ms(n * 1000));
    }
    assert_eq!(s.successive_connection_failures(), 3);
    assert!(!s.is_available_at(ms(3001)));
}

/// Late outlier errors behind a newer response (found by helper 115): a
/// success at 100 ms, then errors stamped 96 to 99 ms recorded after it,
/// counted 4 consecutive errors where in order (and without them) the
/// count is 0; through the outlier check, late errors and one fresh one
/// ejected an instance that in order was not. Now an error at most 1 s
/// older than the latest record resetting its counter is not counted.
#[tokio::test(start_paused = true)]
async fn late_errors_behind_a_newer_response_count_toward_no_ejection() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    for outcome in [
        Outcome::FailureStatus(500),
        Outcome::FailureStatus(503),
        Outcome::ConnectFailure,
        Outcome::ReadTimeout,
    ] {
        let s = EndpointStats::new();
        s.start_at(ms(90)).finish_at(Outcome::Success, ms(100));
        for n in 96..100 {
            s.start_at(ms(n - 1)).finish_at(outcome, ms(n));
        }
        let counts = |s: &EndpointStats| {
            (
                s.consecutive_server_errors(),
                s.consecutive_gateway_errors(),
            )
        };
        assert_eq!(counts(&s), (0, 0), "{outcome:?}");
        assert_eq!(s.failures(), 4, "{outcome:?}");
        // A fresh one counts, as in order.
        s.start_at(ms(100)).finish_at(outcome, ms(101));
        let (server, gateway) = outcome.outlier_errors();
        assert_eq!(
            counts(&s),
            (u32::from(server), u32::from(gateway)),
            "{outcome:?}"
        );
    }
    // Through the outlier check (3 consecutive 5xx eject): two late 503s
    // behind a success and one fresh 503 no longer eject.
    let run = Run::new(t0);
    run.attempt(Outcome::Success, 5, 100);
    run.attempt(Outcome::FailureStatus(503), 5, 98);
    run.attempt(Outcome::FailureStatus(503), 5, 99);
    run.attempt(Outcome::FailureStatus(503), 5, 101);
    assert_eq!(run.stats().consecutive_server_errors(), 1);
    assert!(!run.stats().is_ejected_at(ms(102)));
    // In order, three 503s after the success eject it, as before.
    run.attempt(Outcome::FailureStatus(503), 5, 102);
    run.attempt(Outcome::FailureStatus(503), 5, 103);
    assert!(run.stats().is_ejected_at(ms(104)));
}

/// The mirror of the response stamped an hour ahead (found by helper 119):
/// one failure stamped an hour ahead made every response of that hour
/// stale, so none reset the breaker's count or the outlier counters. After
/// 1 000 successes the breaker stayed half-open with 3 failures counted,
/// and 10 rounds of 100 successes and one 503 counted 11 consecutive 5xx
/// (5 eject a healthy instance). A response older than the latest failure
/// by more than 1 s now counts in order.
#[tokio::test(start_paused = true)]
async fn a_failure_stamped_far_ahead_keeps_no_response_from_resetting() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let s = EndpointStats::new();
    s.start_at(ms(0))
        .finish_at(Outcome::FailureStatus(503), ms(3_600_000));
    for round in 0..10u64 {
        for n in 0..100 {
            let at = 1 + round * 1_000 + n;
            s.start_at(ms(at - 1)).finish_at(Outcome::Success, ms(at));
        }
        let at = 500 + round * 1_000;
        s.start_at(ms(at - 1))
            .finish_at(Outcome::FailureStatus(503), ms(at));
    }
    assert_eq!(s.consecutive_server_errors(), 1);
    assert_eq!(s.consecutive_gateway_errors(), 1);
    // Connection failures trip the breaker; later responses close it.
    for n in 20_000..20_003u64 {
        s.start_at(ms(n - 1))
            .finish_at(Outcome::ConnectFailure, ms(n));
    }
    assert!(!s.is_available_at(ms(20_003)));
    s.start_at(ms(40_000))
        .finish_at(Outcome::Success, ms(40_001));
    assert_eq!(s.successive_connection_failures(), 0);
    assert_eq!(s.breaker_state_at(ms(40_002)), super::BreakerState::Closed);
    // A failure response (503) resets the breaker's count too (helper
    // 120): behind a 503 stamped an hour ahead, connection failures with
    // 503s between them counted 3 and tripped; in order, 1.
    let s = EndpointStats::new();
    s.start_at(ms(0))
        .finish_at(Outcome::FailureStatus(503), ms(3_600_000));
    for (n, outcome) in [
        Outcome::ConnectFailure,
        Outcome::FailureStatus(503),
        Outcome::ConnectFailure,
        Outcome::FailureStatus(503),
        Outcome::ConnectFailure,
    ]
    .into_iter()
    .enumerate()
    {
        let at = 100 + n as u64;
        s.start_at(ms(at - 1)).finish_at(outcome, ms(at));
    }
    assert_eq!(s.successive_connection_failures(), 1);
    assert!(s.is_available_at(ms(105)));
    // The outlier counters too (helper 122): behind a 503 stamped an hour
    // ahead, six rounds of 429 and 503 counted 7 consecutive 5xx and 7
    // gateway errors (5 eject); in order, 1 each.
    let s = EndpointStats::new();
    s.start_at(ms(0))
        .finish_at(Outcome::FailureStatus(503), ms(3_600_000));
    for round in 0..6u64 {
        for (k, code) in [429, 503].into_iter().enumerate() {
            let at = 200 + round * 10 + k as u64;
            s.start_at(ms(at - 1))
                .finish_at(Outcome::FailureStatus(code), ms(at));
        }
    }
    assert_eq!(
        (
            s.consecutive_server_errors(),
            s.consecutive_gateway_errors()
        ),
        (1, 1)
    );
    // Within 1 s of the failure a response is late and resets nothing.
    let s = EndpointStats::new();
    s.start_at(ms(0))
        .finish_at(Outcome::FailureStatus(503), ms(5_000));
    s.start_at(ms(0)).finish_at(Outcome::Success, ms(4_000));
    assert_eq!(s.consecutive_server_errors(), 1);
}
