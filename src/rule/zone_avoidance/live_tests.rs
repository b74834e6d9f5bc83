//! Zone classes under requests held by concurrent callers: split classes
//! counted live, at an amortized cost, without locking a rotation out of a
//! zone (helpers 153 and 154).

use std::sync::Arc;
use std::time::Duration;

use super::tests::{STATS_INTERVAL, index, zoned};
use super::zones::zone_name;
use super::*;
use crate::stats::Outcome;
use tokio::time::Instant;

/// Requests held by concurrent callers, each started right after its pick:
/// classes held for an interval that avoid a loaded zone sent every pick
/// to the other zone for the whole interval (helper 153: through the
/// balancer, two callers over two zones of three instances had 55 of 78
/// windows of 25 ms with 95 % or more of their requests in one zone,
/// flipping every 100 ms). Classes that split the zones are counted again
/// at each pick, as Ribbon's `ZoneAvoidancePredicate` reads live loads.
#[tokio::test(start_paused = true)]
async fn held_requests_do_not_send_an_interval_of_picks_to_one_zone() {
    let s = zoned(&["a", "a", "a", "b", "b", "b"], 1);
    let picker = ZoneAvoidance::new(RoundRobin::with_start(0)).build(&s);
    let eps = s.endpoints();
    let zone_of = |e: &Endpoint| usize::from(zone_name(e) == "b");
    let first = eps[0].stats().start();
    tokio::time::advance(STATS_INTERVAL).await;
    let mut held = Vec::new();
    let mut per_zone = [0u32; 2];
    for _ in 0..30 {
        let e = picker.pick(&PickContext::new()).unwrap();
        per_zone[zone_of(e)] += 1;
        held.push((zone_of(e), e.stats().start()));
    }
    // Zone b first (a is loaded), then both loaded: round robin over all.
    assert!(per_zone[0].abs_diff(per_zone[1]) <= 2, "{per_zone:?}");
    assert!(per_zone[0] >= 14, "{per_zone:?}");

    // Zone b drains; once counted, it takes picks until it is loaded too.
    held.retain(|(zone, _)| *zone == 0);
    tokio::time::advance(STATS_INTERVAL).await;
    let mut per_zone = [0u32; 2];
    for _ in 0..12 {
        let e = picker.pick(&PickContext::new()).unwrap();
        per_zone[zone_of(e)] += 1;
        held.push((zone_of(e), e.stats().start()));
    }
    assert!(per_zone[0].abs_diff(per_zone[1]) <= 2, "{per_zone:?}");
    drop((first, held));
}

/// Closed-loop callers at the picker: `callers` requests always in flight;
/// each step (1 ms of paused time) the oldest finishes and a new pick is
/// held. Picks per endpoint.
async fn closed_loop(p: &Arc<dyn Picker>, callers: usize, steps: usize) -> Vec<u32> {
    let s = Arc::clone(p.snapshot());
    let mut c = vec![0; s.len()];
    let mut q = std::collections::VecDeque::new();
    for step in 0..callers + steps {
        if step >= callers {
            tokio::time::advance(Duration::from_millis(1)).await;
            let done: crate::stats::InFlightGuard<'_> = q.pop_front().unwrap();
            done.finish_at(Outcome::Success, Instant::now());
        }
        let e = p.pick(&PickContext::at(Instant::now())).unwrap();
        c[index(&s, e)] += 1;
        q.push_back(e.stats().start());
    }
    c
}

/// Split classes counted at every pick change the good zones from pick to
/// pick; round robin stepping over their endpoints (the tier's domain) in
/// step with those changes took the same instances each time: three zones
/// of one instance and two callers gave 1 484, 34 and 1 484 of 3 000
/// picks, four zones 992, 26, 991, 993 (helper 154). While split, the good
/// tier's endpoints start at one of two places: within 20 %.
#[tokio::test(start_paused = true)]
async fn live_split_classes_do_not_lock_a_rotation_out_of_a_zone() {
    for (zones, picks) in [
        (&["a", "b", "c"][..], 1_000u32),
        (&["a", "b", "c", "d"][..], 750),
    ] {
        let s = zoned(zones, 1);
        let p = ZoneAvoidance::new(RoundRobin::with_start(0)).build(&s);
        let c = closed_loop(&p, 2, 3_000 - 2).await;
        assert!(
            c.iter().all(|&n| n.abs_diff(picks) <= picks / 5),
            "{zones:?}: {c:?}"
        );
    }
}

/// Split classes are counted again once the good zones took their split
/// budget of picks: `load_threshold` × their instances (here 0.2 × 997:
/// 200, so 5 counts in 1 000 picks), at least `n / 64`; counting at every
/// split pick cost 15 to 23 µs per pick over 1 000 instances (helper 154).
/// A preferred zone does not stop the counts: its tier may be excluded or
/// unhealthy for a pick, which then followed stale classes (helper 155).
#[tokio::test(start_paused = true)]
async fn split_classes_are_counted_at_an_amortized_cost() {
    let live = || super::LIVE_COUNTS.with(std::cell::Cell::get);
    let mut names = vec!["a"; 3];
    names.extend(std::iter::repeat_n("b", 997));
    let s = zoned(&names, 1);
    let _load = s.endpoints()[0].stats().start();
    for preferred in [None, Some("b")] {
        let p = ZoneAvoidance::new(RoundRobin::with_start(0))
            .preferred_zone(preferred)
            .build(&s);
        let before = live();
        for _ in 0..1_000 {
            let e = p.pick(&PickContext::new()).unwrap();
            assert_ne!(zone_name(e), "a");
        }
        assert_eq!(live() - before, 5, "preferred {preferred:?}");
    }
    // A good zone of three: a budget of 1 (0.6 rounded up), every pick.
    let small = zoned(&["a", "a", "a", "b", "b", "b"], 2);
    let _small_load = small.endpoints()[0].stats().start();
    let p = ZoneAvoidance::new(RoundRobin::with_start(0)).build(&small);
    let before = live();
    for _ in 0..10 {
        p.pick(&PickContext::new()).unwrap();
    }
    assert_eq!(live() - before, 10);
}

/// Panic mode (health ignored): a preferred zone whose instances are all
/// ejected is not preferred (its tier takes healthy instances only), but
/// they are available, so my second version, which skipped the counts of
/// split classes under an available preferred zone, held them for good:
/// 52 of 120 windows of 25 picks gave zone a or b none (helper 155).
/// Zones p (7 instances, all ejected: 6 of 13 healthy, panic), a and b
/// (3 each); two closed-loop callers.
#[tokio::test(start_paused = true)]
async fn an_ejected_preferred_zone_in_panic_mode_does_not_hold_split_classes() {
    let mut names = vec!["p"; 7];
    names.extend(["a", "a", "a", "b", "b", "b"]);
    let mut results = Vec::new();
    for preferred in [None, Some("p")] {
        let s = zoned(&names, 1);
        let now = Instant::now();
        let times = crate::stats::EjectionTimes {
            base: Duration::from_secs(30),
            max: Duration::from_secs(300),
            interval: Duration::from_secs(10),
        };
        for e in &s.endpoints()[..7] {
            e.stats().eject(now, times).unwrap();
        }
        let p = ZoneAvoidance::new(RoundRobin::with_start(0))
            .preferred_zone(preferred)
            .build(&s);
        let mut q = std::collections::VecDeque::new();
        let mut windows = Vec::new();
        let mut win = [0u32; 3];
        for step in 0..2 + 3_000 {
            if step >= 2 {
                tokio::time::advance(Duration::from_millis(1)).await;
                let done: crate::stats::InFlightGuard<'_> = q.pop_front().unwrap();
                done.finish_at(Outcome::Success, Instant::now());
            }
            let ctx = PickContext::at(Instant::now()).with_panic_mode();
            let e = p.pick(&ctx).unwrap();
            let z = match zone_name(e) {
                "p" => 0,
                "a" => 1,
                _ => 2,
            };
            if step >= 2 {
                win[z] += 1;
                if (step - 1) % 25 == 0 {
                    windows.push(std::mem::take(&mut win));
                }
            }
            q.push_back(e.stats().start());
        }
        // Windows of 25 picks in which a zone of a or b got none.
        let starved = windows.iter().filter(|w| w[1] == 0 || w[2] == 0).count();
        results.push((preferred, starved, windows.len()));
    }
    for (preferred, starved, n) in results {
        assert!(starved * 4 < n, "preferred {preferred:?}: {starved} of {n}");
    }
}
