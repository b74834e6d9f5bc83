use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::instance::Endpoint;
use crate::instance::Instance;
use crate::stats::Outcome;

fn snapshot(n: u16) -> Snapshot {
    let eps = (0..n)
        .map(|p| Endpoint::new(Instance::new("s", "127.0.0.1", 1000 + p).unwrap()))
        .collect();
    Snapshot::new("s", eps, 1)
}

fn fail(e: &Endpoint, now: Instant, outcome: Outcome) {
    e.stats().start_at(now).finish_at(outcome, now);
}

#[tokio::test(start_paused = true)]
async fn five_5xx_eject_for_base_times_count() {
    let s = snapshot(4);
    let d = OutlierDetection::default();
    let e = &s.endpoints()[0];
    let t0 = Instant::now();
    for i in 0..5 {
        assert_eq!(d.observe(&s, e, t0), None, "after {i}");
        fail(e, t0, Outcome::FailureStatus(500));
    }
    assert_eq!(d.observe(&s, e, t0), Some(Duration::from_secs(30)));
    assert!(e.stats().is_ejected_at(t0 + Duration::from_millis(29_999)));
    assert!(!e.stats().is_ejected_at(t0 + Duration::from_secs(30)));
    // The second ejection lasts 60 s.
    let t1 = t0 + Duration::from_secs(30);
    assert_eq!(e.stats().end_expired_ejections(t1), 1);
    for _ in 0..5 {
        fail(e, t1, Outcome::ConnectFailure);
    }
    assert_eq!(d.observe(&s, e, t1), Some(Duration::from_secs(60)));
    assert_eq!(e.stats().times_ejected(), 2);
}

/// In panic mode an ejected instance still takes traffic. Its errors
/// during the ejection must not carry over: once back, it needs five fresh
/// consecutive errors again (they counted, and its first error back
/// re-ejected it at once, for 60 s).
#[tokio::test(start_paused = true)]
async fn errors_while_ejected_do_not_re_eject_at_the_first_error_back() {
    let s = snapshot(4);
    let d = OutlierDetection::default();
    let e = &s.endpoints()[0];
    let t0 = Instant::now();
    for _ in 0..5 {
        fail(e, t0, Outcome::FailureStatus(500));
    }
    assert_eq!(d.observe(&s, e, t0), Some(Duration::from_secs(30)));
    let during = t0 + Duration::from_secs(10);
    for _ in 0..7 {
        fail(e, during, Outcome::FailureStatus(503));
        fail(e, during, Outcome::ConnectFailure);
    }
    assert_eq!(e.stats().consecutive_server_errors(), 0);
    assert_eq!(e.stats().consecutive_gateway_errors(), 0);
    let back = t0 + Duration::from_secs(30);
    for i in 1..5 {
        fail(e, back, Outcome::FailureStatus(500));
        assert_eq!(d.observe(&s, e, back), None, "error {i} back");
    }
    fail(e, back, Outcome::FailureStatus(500));
    assert_eq!(d.observe(&s, e, back), Some(Duration::from_secs(60)));
    assert_eq!(e.stats().times_ejected(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_and_429_is_not_a_5xx() {
    let s = snapshot(2);
    let d = OutlierDetection::default();
    let e = &s.endpoints()[0];
    let t0 = Instant::now();
    for _ in 0..4 {
        fail(e, t0, Outcome::FailureStatus(503));
    }
    fail(e, t0, Outcome::Success);
    fail(e, t0, Outcome::FailureStatus(503));
    assert_eq!(e.stats().consecutive_server_errors(), 1);
    fail(e, t0, Outcome::FailureStatus(429));
    assert_eq!(e.stats().consecutive_server_errors(), 0);
    assert_eq!(d.observe(&s, e, t0), None);
}

#[tokio::test(start_paused = true)]
async fn at_most_the_max_share_is_ejected_but_always_one() {
    let d = OutlierDetection::default();
    let t0 = Instant::now();
    let s = snapshot(5);
    for e in s.endpoints() {
        for _ in 0..5 {
            fail(e, t0, Outcome::FailureStatus(502));
        }
    }
    let ejected = s
        .endpoints()
        .iter()
        .filter(|e| d.observe(&s, e, t0).is_some())
        .count();
    assert_eq!(ejected, 2); // 50 % of 5, rounded down
    let one = snapshot(1);
    for _ in 0..5 {
        fail(&one.endpoints()[0], t0, Outcome::FailureStatus(502));
    }
    assert!(d.observe(&one, &one.endpoints()[0], t0).is_some());
    let off = OutlierDetection::disabled();
    let s = snapshot(2);
    for _ in 0..9 {
        fail(&s.endpoints()[0], t0, Outcome::FailureStatus(500));
    }
    assert_eq!(off.observe(&s, &s.endpoints()[0], t0), None);
}

#[tokio::test(start_paused = true)]
async fn the_view_filters_until_panic_and_recounts_when_ejections_end() {
    let d = OutlierDetection {
        max_ejection_percent: 100,
        ..OutlierDetection::default()
    };
    let view = HealthView::new(50);
    let s = snapshot(4);
    let t0 = Instant::now();
    assert!(!view.filter(&s, t0));
    let eject = |i: usize, at: Instant| {
        for _ in 0..5 {
            fail(&s.endpoints()[i], at, Outcome::FailureStatus(500));
        }
        assert!(d.observe(&s, &s.endpoints()[i], at).is_some());
        view.invalidate();
    };
    eject(0, t0);
    assert!(view.filter(&s, t0)); // 3 of 4 healthy: filter
    eject(1, t0);
    assert!(view.filter(&s, t0)); // 2 of 4 = 50 %: still filter
    eject(2, t0);
    assert!(!view.filter(&s, t0)); // 1 of 4 < 50 %: panic, no filter
    assert!(view.in_panic());
    // 30 s later every ejection has ended; the view notices by itself.
    assert!(!view.filter(&s, t0 + Duration::from_secs(30)));
    assert!(!view.in_panic());
    assert!(
        s.endpoints()
            .iter()
            .all(|e| e.stats().is_healthy_at(t0 + Duration::from_secs(30)))
    );
}

/// Five 5xx at now, then the outlier check.
fn five_5xx(d: &OutlierDetection, s: &Snapshot, e: &Endpoint) -> Option<Duration> {
    let now = Instant::now();
    for _ in 0..5 {
        fail(e, now, Outcome::FailureStatus(500));
    }
    d.observe(s, e, now)
}

#[tokio::test(start_paused = true)]
async fn the_ejection_time_grows_to_the_max_and_the_multiplier_decays_while_healthy() {
    let s = snapshot(2);
    let d = OutlierDetection::default(); // 30 s base, 300 s max, 10 s interval
    let e = &s.endpoints()[0];
    let secs = Duration::from_secs;
    // Ejected again the moment each ejection ends: 30, 60, ... 300 s.
    for m in 1..=10 {
        assert_eq!(five_5xx(&d, &s, e), Some(secs(30 * m)), "ejection {m}");
        tokio::time::advance(secs(30 * m) - Duration::from_millis(1)).await;
        assert!(e.stats().is_ejected_at(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!e.stats().is_ejected_at(Instant::now()));
    }
    // The max: the multiplier stops at 300 s / 30 s = 10.
    assert_eq!(five_5xx(&d, &s, e), Some(secs(300)));
    tokio::time::advance(secs(300)).await;
    assert_eq!(
        e.stats().ejection_multiplier_at(Instant::now(), d.interval),
        10
    );
    // Healthy for 59.999 s: 5 full intervals, multiplier 5, next time 6 × 30 s.
    tokio::time::advance(secs(60) - Duration::from_millis(1)).await;
    assert_eq!(
        e.stats().ejection_multiplier_at(Instant::now(), d.interval),
        5
    );
    assert_eq!(five_5xx(&d, &s, e), Some(secs(180)));
    // Ejected time does not count as healthy.
    tokio::time::advance(secs(179)).await;
    assert_eq!(
        e.stats().ejection_multiplier_at(Instant::now(), d.interval),
        6
    );
    // Healthy for 100 s after it ends: forgiven, back to the base time.
    tokio::time::advance(secs(1 + 100)).await;
    assert_eq!(
        e.stats().ejection_multiplier_at(Instant::now(), d.interval),
        0
    );
    assert_eq!(five_5xx(&d, &s, e), Some(secs(30)));
    assert_eq!(e.stats().times_ejected(), 13);
}

#[tokio::test(start_paused = true)]
async fn a_shorter_interval_forgives_sooner_and_the_max_bounds_a_long_base() {
    let s = snapshot(1);
    let e = &s.endpoints()[0];
    let d = OutlierDetection {
        interval: Duration::from_secs(1),
        base_ejection_time: Duration::from_secs(7),
        max_ejection_time: Duration::from_secs(10),
        ..OutlierDetection::default()
    };
    assert_eq!(five_5xx(&d, &s, e), Some(Duration::from_secs(7)));
    tokio::time::advance(Duration::from_secs(7)).await;
    // 2 × 7 s = 14 s, capped at 10 s; the multiplier stops at ⌈10 / 7⌉ = 2.
    assert_eq!(five_5xx(&d, &s, e), Some(Duration::from_secs(10)));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(five_5xx(&d, &s, e), Some(Duration::from_secs(10)));
    tokio::time::advance(Duration::from_secs(10 + 1)).await;
    // One healthy second: 2 -> 1, so 2 × 7 s again capped at 10 s; two: base.
    assert_eq!(
        e.stats().ejection_multiplier_at(Instant::now(), d.interval),
        1
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(five_5xx(&d, &s, e), Some(Duration::from_secs(7)));
}

#[test]
fn outlier_detection_validate_names_the_field() {
    assert_eq!(OutlierDetection::default().validate(), Ok(()));
    let bad = |d: OutlierDetection| d.validate().unwrap_err().field();
    let d = OutlierDetection::default;
    assert_eq!(
        bad(OutlierDetection {
            max_ejection_percent: 101,
            ..d()
        }),
        "OutlierDetection::max_ejection_percent"
    );
    assert_eq!(
        bad(OutlierDetection {
            panic_threshold_percent: 150,
            ..d()
        }),
        "OutlierDetection::panic_threshold_percent"
    );
    assert_eq!(
        bad(OutlierDetection {
            interval: Duration::ZERO,
            ..d()
        }),
        "OutlierDetection::interval"
    );
    assert_eq!(
        bad(OutlierDetection {
            max_ejection_time: Duration::from_secs(1),
            ..d()
        }),
        "OutlierDetection::max_ejection_time"
    );
}

/// Two threads ejecting at once never take more than the max share between
/// them: each counted the others' ejections, then ejected, so both could
/// pass the count at one below the cap (400 instances, cap 200: 201 and
/// more were ejected).
#[test]
fn concurrent_ejections_never_exceed_the_max_share() {
    let d = OutlierDetection::default(); // max_ejection_percent 50
    for round in 0..20 {
        let s = snapshot(400);
        let now = Instant::now();
        for e in s.endpoints() {
            for _ in 0..5 {
                fail(e, now, Outcome::FailureStatus(500));
            }
        }
        let barrier = std::sync::Barrier::new(2);
        let ejected: usize = std::thread::scope(|scope| {
            let halves: Vec<_> = s
                .endpoints()
                .chunks(200)
                .map(|half| {
                    let (d, s, barrier) = (&d, &s, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        half.iter()
                            .filter(|e| d.observe(s, e, now).is_some())
                            .count()
                    })
                })
                .collect();
            halves.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        let now_ejected = s
            .endpoints()
            .iter()
            .filter(|e| e.stats().is_ejected_at(now))
            .count();
        assert_eq!((ejected, now_ejected), (200, 200), "round {round}");
    }
}

/// A pick that loaded the list before a refresh replaced it, and reaches
/// the view after the refresh's invalidation, recounts the old list: that
/// count must not stand for the new one. Before, it took the invalidation
/// and the new list's picks used the old list's count (no instance
/// unhealthy, so no filter) until the next event: an instance new in the
/// list and already unhealthy (here ejected; with active checks, one
/// waiting for its first probe, whose failed first probe changes no
/// verdict) kept its full share.
#[tokio::test(start_paused = true)]
async fn a_recount_of_a_replaced_list_does_not_stand_for_the_new_one() {
    let d = OutlierDetection {
        max_ejection_percent: 100,
        ..OutlierDetection::default()
    };
    let view = HealthView::new(50);
    let old = snapshot(2);
    let t0 = Instant::now();
    assert!(!view.filter(&old, t0));
    let mut endpoints = old.endpoints().to_vec();
    endpoints.push(Endpoint::new(
        Instance::new("s", "127.0.0.1", 2000).unwrap(),
    ));
    let new = Snapshot::new("s", endpoints, old.version() + 1);
    assert!(five_5xx(&d, &new, &new.endpoints()[2]).is_some());
    // The refresh publishes `new` and invalidates; a pick holding `old`
    // reaches the view first.
    view.invalidate();
    assert!(!view.filter(&old, t0));
    // Picks over `new`: 2 of 3 healthy, so the ejected one is skipped.
    assert!(view.filter(&new, t0));
    assert!(!view.in_panic());
}

/// Instances waiting for their first active probe are out of the panic
/// threshold's count (Envoy's `ignore_new_hosts_until_first_hc`): counted
/// as unhealthy, three of them beside two healthy instances put the
/// service in panic until their first probes answered, and panic mode
/// sent requests to an instance failing its checks (helper 187).
#[cfg(feature = "hyper-util")]
#[tokio::test(start_paused = true)]
async fn instances_waiting_for_a_first_probe_do_not_count_towards_panic() {
    let t0 = Instant::now();
    // 0, 1 healthy; 2 failing its checks; 3, 4, 5 waiting for a first probe.
    let s = snapshot(6);
    let e = s.endpoints();
    assert!(e[2].stats().record_active_check(false, 1, 1));
    for joined in &e[3..] {
        joined.stats().start_active_pending();
    }
    let view = HealthView::new(50);
    assert!(view.filter(&s, t0), "2 of 3 probed are healthy: filtered");
    assert!(!view.in_panic());
    let ctx = crate::rule::PickContext::at(t0).with_health_filter();
    let eligible: Vec<u16> = e
        .iter()
        .filter(|x| ctx.is_eligible(x))
        .map(|x| x.instance().port())
        .collect();
    assert_eq!(
        eligible,
        [1000, 1001],
        "neither the failing nor the unprobed"
    );

    // Only unprobed and failing instances: panic spreads over all.
    let s = Snapshot::new("s", e[2..].to_vec(), 2);
    let view = HealthView::new(50);
    assert!(!view.filter(&s, t0));
    assert!(view.in_panic());
    // Only unprobed ones: panic too, unless panic mode is off.
    let s = Snapshot::new("s", e[3..].to_vec(), 3);
    let view = HealthView::new(50);
    assert!(!view.filter(&s, t0));
    assert!(view.in_panic());
    let view = HealthView::new(0);
    assert!(view.filter(&s, t0));
    assert!(!view.in_panic());

    // The first probes pass: 5 of 6 healthy, no panic, the failing one out.
    for joined in &e[3..] {
        assert!(joined.stats().record_active_check(true, 1, 1));
    }
    let s = snapshot_of(e, 4);
    let view = HealthView::new(50);
    assert!(view.filter(&s, t0));
    assert!(!view.in_panic());
    // Then they fail: 3 of 6 healthy is not below 50 %, 2 of 6 is.
    assert!(e[4].stats().record_active_check(false, 1, 1));
    assert!(e[5].stats().record_active_check(false, 1, 1));
    let view = HealthView::new(50);
    assert!(view.filter(&s, t0));
    assert!(!view.in_panic());
    assert!(e[3].stats().record_active_check(false, 1, 1));
    let view = HealthView::new(50);
    assert!(!view.filter(&s, t0), "2 of 6 healthy: panic");
    assert!(view.in_panic());
}

fn snapshot_of(endpoints: &[Endpoint], version: u64) -> Snapshot {
    Snapshot::new("s", endpoints.to_vec(), version)
}
