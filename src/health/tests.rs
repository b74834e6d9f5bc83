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
    assert!(e.stats().end_expired_ejection(t1));
    for _ in 0..5 {
        fail(e, t1, Outcome::ConnectFailure);
    }
    assert_eq!(d.observe(&s, e, t1), Some(Duration::from_secs(60)));
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
