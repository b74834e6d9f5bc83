//! Unit tests of `stats::ejection`.

use super::*;

const T: EjectionTimes = EjectionTimes {
    base: Duration::from_secs(30),
    max: Duration::from_secs(300),
    interval: Duration::from_secs(10),
};

/// A pending endpoint is unhealthy until its first probe, which alone
/// decides whatever the thresholds; a failed first probe needs
/// `healthy_threshold` passes after it.
#[test]
fn a_pending_endpoint_is_decided_by_its_first_probe() {
    let a = ActiveChecks::new();
    a.start_pending();
    assert!(a.is_unhealthy() && a.is_pending());
    assert!(a.record(true, 3, 3), "one pass is enough");
    assert!(!a.is_unhealthy() && !a.is_pending());

    let b = ActiveChecks::new();
    b.start_pending();
    assert!(!b.record(false, 3, 3), "still unhealthy: no change");
    assert!(b.is_unhealthy() && !b.is_pending());
    assert!(!b.record(true, 2, 3));
    assert!(b.record(true, 2, 3), "then healthy_threshold passes");

    let c = ActiveChecks::new();
    c.start_pending();
    assert!(c.clear_pending());
    assert!(!c.is_unhealthy() && !c.clear_pending());
}

/// A relisted instance keeps its stats, streaks included: its first
/// probe decides alone and starts both streaks afresh, as a new
/// instance's does. Before, the other streak stayed, and one probe
/// after the first changed the verdict (helper 191).
#[test]
fn a_relisted_instances_first_probe_forgets_its_old_streaks() {
    // Healthy with two failures (threshold 3); relisted; passes.
    let a = ActiveChecks::new();
    assert!(!a.record(false, 2, 3));
    assert!(!a.record(false, 2, 3));
    a.start_pending();
    assert!(a.record(true, 2, 3));
    assert!(!a.record(false, 2, 3), "one failure of three");
    assert!(!a.is_unhealthy());
    // Unhealthy with one pass (threshold 2); relisted; fails.
    let b = ActiveChecks::new();
    for _ in 0..3 {
        b.record(false, 2, 3);
    }
    assert!(b.is_unhealthy());
    assert!(!b.record(true, 2, 3));
    b.start_pending();
    assert!(!b.record(false, 2, 3));
    assert!(!b.record(true, 2, 3), "one pass of two");
    assert!(b.is_unhealthy());
}

/// An instance ejected again before a recount saw its first ejection
/// end returns twice: a bare flag reported one return for the two
/// (`ribbon_ejection_returns_total` one short per such pair). The
/// first is reported at the next recount, during the second.
#[test]
fn every_ejection_returns_once_also_when_a_recount_missed_one() {
    let e = Ejection::new();
    assert_eq!(e.eject(0, 0, T), Some(Duration::from_secs(30)));
    assert_eq!(e.take_returns(29_999), 0, "still ejected");
    // Back at 30 s, unseen; ejected again at 31 s for 60 s.
    assert_eq!(e.eject(31_000, 31_000, T), Some(Duration::from_secs(60)));
    assert_eq!(e.take_returns(90_999), 1, "the first is over");
    assert_eq!(e.take_returns(90_999), 0, "the second is on");
    assert_eq!(e.take_returns(91_000), 1);
    assert_eq!(e.take_returns(91_000), 0, "each once");
    assert_eq!(e.eject(100_000, 100_000, T), Some(Duration::from_secs(90)));
    assert_eq!(e.take_returns(190_000), 1);
}

#[test]
fn the_multiplier_grows_caps_and_decays_per_healthy_interval() {
    let e = Ejection::new();
    assert_eq!(e.eject(0, 0, T), Some(Duration::from_secs(30)));
    assert_eq!(e.eject(29_999, 29_999, T), None);
    assert_eq!(e.eject(30_000, 30_000, T), Some(Duration::from_secs(60)));
    let mut t = 90_000;
    for m in 3..=10 {
        assert_eq!(e.eject(t, t, T), Some(Duration::from_secs(30 * m)));
        t += 30_000 * m;
    }
    // Capped at max / base = 10: it stays at 300 s.
    assert_eq!(e.eject(t, t, T), Some(Duration::from_secs(300)));
    t += 300_000;
    assert_eq!(e.multiplier(t, T.interval), 10);
    // 9.999 intervals healthy: 9 steps down; then one more.
    assert_eq!(e.multiplier(t + 99_999, T.interval), 1);
    assert_eq!(e.multiplier(t + 100_000, T.interval), 0);
    assert_eq!(
        e.eject(t + 40_000, t + 40_000, T),
        Some(Duration::from_secs(210))
    );
    assert_eq!(e.times(), 12);
}

#[test]
fn an_unhealthy_verdict_needs_its_threshold_in_a_row() {
    let a = ActiveChecks::new();
    let changes: usize = (0..20)
        .map(|i| usize::from(a.record(i % 2 == 0, 2, 2)))
        .sum();
    assert_eq!(changes, 0);
    // The last probe failed: two more failures reach 3 in a row.
    assert!(!a.record(false, 2, 3));
    assert!(a.record(false, 2, 3));
    assert!(a.is_unhealthy());
    assert!(!a.record(true, 2, 3));
    assert!(a.record(true, 2, 3));
    assert!(!a.is_unhealthy());
}
