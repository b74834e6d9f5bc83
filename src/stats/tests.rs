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

/// An instance whose half-open probe is out is due for another look
/// `PROBE_RECHECK` from now, never at its blackout's end (in the past):
/// that made the health view recount the whole list on every pick while a
/// probe was in flight (2-3 ms per request at 20 000 instances against
/// 15-25 µs). A response to the probe (its headers) closes the breaker and
/// frees the probe at once.
#[tokio::test(start_paused = true)]
async fn a_probing_instance_is_due_again_after_the_recheck_and_a_response_closes_it() {
    let s = EndpointStats::new();
    let t0 = Instant::now();
    for _ in 0..3 {
        s.start_at(t0).finish_at(Outcome::ConnectFailure, t0);
    }
    let over = t0 + Duration::from_secs(10);
    assert_eq!(s.healthy_again_at(t0), Some(over));
    let probe_at = over + Duration::from_millis(5);
    let mut probe = s.start_detached(probe_at);
    assert!(probe.is_probe());
    assert!(!s.is_healthy_at(probe_at));
    let later = probe_at + Duration::from_secs(7);
    assert_eq!(
        s.healthy_again_at(later),
        Some(later + breaker::PROBE_RECHECK)
    );
    // A second attempt is not a probe.
    let other = s.start_detached(later);
    assert!(!other.is_probe());
    s.cancel_detached(other);
    // The probe's response headers arrive: closed, probe freed, in flight
    // until its body ends.
    assert_eq!(
        s.record_response_detached(&mut probe),
        BreakerTransition::Recovered
    );
    assert!(!probe.is_probe());
    assert_eq!(s.breaker_state(), BreakerState::Closed);
    assert!(s.is_healthy_at(Instant::now()));
    assert_eq!(s.in_flight(), 1);
    // A healthy instance's response reads no clock and changes nothing.
    assert_eq!(
        s.record_response_detached(&mut probe),
        BreakerTransition::None
    );
    s.cancel_detached(probe);
    assert_eq!(s.in_flight(), 0);
}

/// A latency too large for a `Duration` reads as `Duration::MAX`, never as
/// zero: with `failure_penalty = Duration::MAX` one failure's mean, EWMA
/// and peak read 0 s, the fastest an instance can look (weighted response
/// time then gave the failing instance the largest weight).
#[tokio::test(start_paused = true)]
async fn a_latency_beyond_duration_saturates_instead_of_reading_zero() {
    let config = StatsConfig {
        failure_penalty: Duration::MAX,
        ..StatsConfig::default()
    };
    let s = EndpointStats::with_config(config);
    let now = Instant::now();
    s.start_at(now).finish_at(Outcome::OtherError, now);
    assert_eq!(s.mean_response_time(), Some(Duration::MAX));
    assert_eq!(s.ewma(), Some(Duration::MAX));
    assert_eq!(s.peak_ewma_at(now), Some(Duration::MAX));
}

/// A cancelled attempt's wait is a lower bound of the latency: it raises
/// an average below it and leaves one above it, and counts as no outcome.
#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_only_raises_the_latency_averages() {
    let s = EndpointStats::new();
    let t0 = Instant::now();
    s.start_at(t0)
        .finish_at(Outcome::Success, t0 + Duration::from_millis(50));
    let t1 = t0 + Duration::from_millis(50);
    // Waited 10 ms, below the 50 ms known: nothing moves.
    let short = s.start_detached(t1);
    s.cancel_unanswered(short, t1 + Duration::from_millis(10));
    assert_eq!(s.peak_ewma_at(t1), Some(Duration::from_millis(50)));
    // Waited 200 ms: the peak takes it at once.
    let long = s.start_detached(t1);
    s.cancel_unanswered(long, t1 + Duration::from_millis(200));
    let peak = s.peak_ewma_at(t1 + Duration::from_millis(200)).unwrap();
    assert!(peak.as_micros().abs_diff(200_000) <= 2, "{peak:?}");
    assert_eq!((s.in_flight(), s.requests(), s.failures()), (0, 3, 0));
    assert_eq!(s.success_rate(), Some(1.0));
}

/// A guard dropped without a result notes its wait as the balancer's
/// cancelled attempts do: 300 ms raises a 50 ms peak, no outcome counts.
#[tokio::test(start_paused = true)]
async fn a_dropped_guard_notes_its_wait_as_a_lower_bound() {
    let s = EndpointStats::new();
    let t0 = Instant::now();
    s.start_at(t0)
        .finish_at(Outcome::Success, t0 + Duration::from_millis(50));
    let guard = s.start();
    tokio::time::advance(Duration::from_millis(300)).await;
    drop(guard);
    let peak = s.peak_ewma_at(Instant::now()).unwrap();
    assert!(peak.as_micros().abs_diff(300_000) <= 2, "{peak:?}");
    assert_eq!((s.in_flight(), s.requests(), s.failures()), (0, 2, 0));
}

/// Requests in flight when an instance dies fail together, after its
/// breaker tripped: their failures extend the blackout (Ribbon's count
/// goes on) but are no new trip. Before, each failure past the threshold
/// reported `Tripped`: 8 concurrent failures counted 6 trips in
/// `ribbon_breaker_trips_total` (and made the health view recount 6
/// times); now 1. A failed half-open probe is a trip again (a re-trip).
#[tokio::test(start_paused = true)]
async fn failures_while_the_breaker_is_open_are_no_new_trips() {
    let s = EndpointStats::new();
    let t0 = Instant::now();
    let failed = t0 + Duration::from_millis(1);
    let in_flight: Vec<_> = (0..8).map(|_| s.start_at(t0)).collect();
    let trips = in_flight
        .into_iter()
        .map(|g| g.finish_at(Outcome::ConnectFailure, failed))
        .filter(|t| *t == BreakerTransition::Tripped)
        .count();
    assert_eq!(trips, 1);
    // Ribbon's blackout for 8 failures: min(2^5 × 10 s, 30 s).
    assert_eq!(
        s.breaker_state_at(failed),
        BreakerState::Open {
            remaining: Duration::from_secs(30)
        }
    );
    // A late failure (recorded out of order) while open: no trip either.
    assert_eq!(
        s.start_at(t0).finish_at(Outcome::ConnectFailure, t0),
        BreakerTransition::None
    );
    // Half-open: the probe fails, a re-trip.
    let t1 = failed + Duration::from_secs(30);
    let probe = s.start_at(t1);
    assert!(probe.is_probe());
    assert_eq!(
        probe.finish_at(Outcome::ConnectFailure, t1),
        BreakerTransition::Tripped
    );
}

/// A cancelled wait below the EWMA and the mean leaves them as they are
/// after idle time too: they are read as stored, not decayed, so the bound
/// is compared with that. Compared with their values decayed toward zero,
/// a 50 ms wait 30 s after a 100 ms response passed as a raise and pulled
/// the EWMA to 52.5 ms and the mean to 68.4 ms.
#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_below_the_averages_leaves_them_after_idle_time() {
    let s = EndpointStats::new();
    let t0 = Instant::now();
    s.start_at(t0)
        .finish_at(Outcome::Success, t0 + Duration::from_millis(100));
    let t1 = t0 + Duration::from_secs(30);
    let short = s.start_detached(t1);
    s.cancel_unanswered(short, t1 + Duration::from_millis(50));
    assert_eq!(s.ewma(), Some(Duration::from_millis(100)));
    assert_eq!(s.mean_response_time(), Some(Duration::from_millis(100)));
    // A wait above them still raises both, from 100 ms at 0.1 s: 400 ms
    // at 60.4 s weighs 1 - exp(-60.3 / 10) in the EWMA (399.278 ms) and
    // 1 - exp(-60.3 / 30) in the mean (359.803 ms).
    let t2 = t1 + Duration::from_secs(30);
    let long = s.start_detached(t2);
    s.cancel_unanswered(long, t2 + Duration::from_millis(400));
    let (ewma, mean) = (s.ewma().unwrap(), s.mean_response_time().unwrap());
    assert!(ewma.as_micros().abs_diff(399_278) <= 5, "{ewma:?}");
    assert!(mean.as_micros().abs_diff(359_803) <= 5, "{mean:?}");
    assert_eq!((s.in_flight(), s.requests(), s.failures()), (0, 3, 0));
}

/// A half-open probe that outlives its blackout episode (the breaker
/// closed by another request's response, then tripped again) does not
/// hold the next episode's probe: after the new blackout the instance is
/// available and one new probe may go. Before, the old probe's flag
/// stayed set, so the instance stayed unavailable (half-open, "probing")
/// for as long as that hung request lasted, and its end freed the new
/// episode's probe, letting a second one out.
#[tokio::test(start_paused = true)]
async fn a_probe_of_an_earlier_blackout_does_not_hold_the_next_one() {
    let s = EndpointStats::new();
    let t0 = Instant::now();
    let early = s.start_at(t0);
    for _ in 0..3 {
        s.start_at(t0).finish_at(Outcome::ConnectFailure, t0);
    }
    let t1 = t0 + Duration::from_secs(11);
    let hung = s.start_at(t1);
    assert!(hung.is_probe());
    // Another request's response closes the breaker.
    early.finish_at(Outcome::Success, t1);
    assert_eq!(s.breaker_state_at(t1), BreakerState::Closed);
    // Tripped again; its 10 s blackout passes while the old probe hangs.
    let t2 = t1 + Duration::from_secs(1);
    for _ in 0..3 {
        s.start_at(t2).finish_at(Outcome::ConnectFailure, t2);
    }
    let t3 = t2 + Duration::from_secs(11);
    assert_eq!(
        s.breaker_state_at(t3),
        BreakerState::HalfOpen { probing: false }
    );
    assert!(s.is_available_at(t3));
    let probe = s.start_at(t3);
    assert!(probe.is_probe());
    // The old probe ends: the new one is still out, no second probe.
    drop(hung);
    assert!(!s.is_available_at(t3));
    assert!(!s.start_at(t3).is_probe());
    drop(probe);
    assert!(s.is_available_at(t3));
}

/// Slow start's restart time only moves forward: a restart carrying a
/// time older than the stored one (a relisting that read the clock
/// before an active check's return was stored) keeps the later start.
/// Before, the older time replaced it and the ramp ran 5 s ahead.
#[tokio::test(start_paused = true)]
async fn a_late_slow_start_restart_keeps_the_later_start() {
    let s = EndpointStats::new();
    let t0 = Instant::now();
    let (t1, t2) = (t0 + Duration::from_secs(5), t0 + Duration::from_secs(10));
    s.restart_slow_start(t2);
    s.restart_slow_start(t1);
    assert_eq!(s.slow_start_since(), t2);
}
