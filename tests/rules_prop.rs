//! Invariants of the rules, checked with proptest: membership and
//! exclusions, exact round-robin fairness, even spreading on every
//! wrapper and fallback path, pickers read while lists are swapped, and
//! the cost of building a picker over 100 000 instances.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use proptest::prelude::*;
use tokio::time::Instant;
use tower_ribbon::instance::{Endpoint, Instance};
use tower_ribbon::rule::{
    AllFilteredPolicy, AvailabilityFiltering, BestAvailable, ConsistentHash, PeakEwmaP2c,
    PickContext, Picker, Random, RoundRobin, Rule, WeightedResponseTime, WeightedRoundRobin,
    ZoneAvoidance,
};
use tower_ribbon::snapshot::Snapshot;
use tower_ribbon::stats::Outcome;

fn snapshot(ports: &[u16], version: u64) -> Arc<Snapshot> {
    let endpoints = ports
        .iter()
        .map(|p| Endpoint::new(Instance::new("svc", "127.0.0.1", *p).unwrap()))
        .collect();
    Arc::new(Snapshot::new("svc", endpoints, version))
}

/// `n` endpoints on ports 1, 2, …, in zones `zone(i)`.
fn zoned(n: usize, zone: impl Fn(usize) -> &'static str) -> Arc<Snapshot> {
    let endpoints = (0..n)
        .map(|i| {
            let instance = Instance::new("svc", "127.0.0.1", i as u16 + 1)
                .unwrap()
                .with_zone(zone(i));
            Endpoint::new(instance)
        })
        .collect();
    Arc::new(Snapshot::new("svc", endpoints, 1))
}

/// The endpoints of `snap` whose `mask` entry is true.
fn masked(snap: &Snapshot, mask: &[bool]) -> Vec<Endpoint> {
    snap.endpoints()
        .iter()
        .zip(mask)
        .filter(|(_, ex)| **ex)
        .map(|(e, _)| e.clone())
        .collect()
}

/// Trips `e`'s breaker at `now` (three connect failures).
fn trip(e: &Endpoint, now: Instant) {
    for _ in 0..3 {
        e.stats()
            .start_at(now)
            .finish_at(Outcome::ConnectFailure, now);
    }
}

fn rules(seed: u64) -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(RoundRobin::with_start(seed as usize)),
        Box::new(Random::with_seed(seed)),
    ]
}

/// Trips the endpoints of `s` whose `mask` entry is true, at `now`.
fn trip_masked(s: &Snapshot, mask: &[bool], now: Instant) {
    for (e, _) in s.endpoints().iter().zip(mask).filter(|(_, t)| **t) {
        trip(e, now);
    }
}

/// A retry's exclusions over `fresh`: the endpoints `mask` marks, at least
/// one left out; and which indices are kept.
fn exclusions(fresh: &Snapshot, mask: &[bool]) -> (Vec<Endpoint>, Vec<bool>) {
    let n = fresh.len();
    let mut excluded = masked(fresh, &mask[..n]);
    if excluded.len() == n {
        excluded.pop();
    }
    let kept = (0..n)
        .map(|i| {
            !excluded
                .iter()
                .any(|x| x.same_identity(&fresh.endpoints()[i]))
        })
        .collect();
    (excluded, kept)
}

/// `picks` picks of `picker` under `ctx`: the count per endpoint index.
fn counts(picker: &dyn Picker, ctx: &PickContext<'_>, picks: usize) -> Vec<usize> {
    let s = picker.snapshot();
    let mut counts = vec![0; s.len()];
    for _ in 0..picks {
        let e = picker.pick(ctx).expect("an endpoint");
        let i = s.endpoints().iter().position(|x| std::ptr::eq(x, e));
        counts[i.expect("a member of the picker's list")] += 1;
    }
    counts
}

/// Each endpoint `expected` accepts got `n` picks ± 2 % (at least ± 1),
/// every other endpoint none.
fn assert_even(
    counts: &[usize],
    expected: impl Fn(usize) -> bool,
    n: usize,
    path: &str,
) -> Result<(), TestCaseError> {
    let tolerance = (n * 2).div_ceil(100).max(1);
    for (i, &c) in counts.iter().enumerate() {
        if expected(i) {
            prop_assert!(
                c.abs_diff(n) <= tolerance,
                "{}: endpoint {} got {} of N = {} ± {}: {:?}",
                path,
                i,
                c,
                n,
                tolerance,
                counts
            );
        } else {
            prop_assert_eq!(c, 0, "{}: endpoint {} not eligible: {:?}", path, i, counts);
        }
    }
    Ok(())
}

/// N: picks per eligible endpoint in the spreading property.
const N: usize = 100;

proptest! {
    /// Every pick is a member of the snapshot it read and never an excluded
    /// endpoint; `None` only when nothing is eligible.
    #[test]
    fn picks_are_members_and_never_excluded(
        n in 0usize..40,
        excluded_mask in proptest::collection::vec(any::<bool>(), 40),
        seed in any::<u64>(),
        picks in 1usize..200,
    ) {
        let ports: Vec<u16> = (1..=n as u16).collect();
        let snap = snapshot(&ports, 1);
        let excluded = masked(&snap, &excluded_mask);
        let eligible = n - excluded.len();
        let ctx = PickContext::new().with_excluded(&excluded);
        for rule in rules(seed) {
            let picker = rule.build(&snap);
            for _ in 0..picks {
                match picker.pick(&ctx) {
                    Some(e) => {
                        prop_assert!(snap.endpoints().iter().any(|x| std::ptr::eq(x, e)));
                        prop_assert!(!excluded.iter().any(|x| x.same_identity(e)));
                    }
                    None => prop_assert_eq!(eligible, 0, "{} returned None", rule.name()),
                }
            }
        }
    }

    /// k sequential round-robin picks over n eligible endpoints give each
    /// ⌊k/n⌋ or ⌈k/n⌉, whatever the start and the exclusions.
    #[test]
    fn round_robin_is_fair(
        n in 1usize..30,
        excluded_mask in proptest::collection::vec(any::<bool>(), 30),
        start in any::<usize>(),
        k in 0usize..500,
    ) {
        let ports: Vec<u16> = (1..=n as u16).collect();
        let snap = snapshot(&ports, 1);
        let mut excluded = masked(&snap, &excluded_mask);
        if excluded.len() == n {
            excluded.pop();
        }
        let m = n - excluded.len();
        let ctx = PickContext::new().with_excluded(&excluded);
        // Keep clear of the wrap, where the rotation restarts once.
        let rr = RoundRobin::with_start(start % (usize::MAX / 2)).build(&snap);
        let mut counts = vec![0usize; n];
        for _ in 0..k {
            let e = rr.pick(&ctx).expect("an eligible endpoint");
            counts[(e.instance().port() - 1) as usize] += 1;
        }
        for (i, e) in snap.endpoints().iter().enumerate() {
            let c = counts[i];
            if excluded.iter().any(|x| x.same_identity(e)) {
                prop_assert_eq!(c, 0);
            } else {
                prop_assert!(c == k / m || c == k.div_ceil(m), "count {} for k={} m={}", c, k, m);
            }
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Issue 10: every wrapper and every fallback path spreads evenly over
    /// what remains. With a round-robin inner rule, `m` endpoints left and
    /// `N · m` picks, each gets N ± 2 %, for lists of 1 to 64: availability
    /// filtering (some filtered; all filtered, failing open), zone avoidance
    /// (zone failover; nested over availability filtering), the health
    /// filter (outside panic mode) and a retry's exclusions, plain and
    /// wrapped. (64 cases: each runs about 60 000 picks.)
    #[test]
    fn every_fallback_path_spreads_evenly(
        n in 1usize..=64,
        tripped_mask in proptest::collection::vec(any::<bool>(), 64),
        excluded_mask in proptest::collection::vec(any::<bool>(), 64),
        zone_mask in proptest::collection::vec(any::<bool>(), 64),
        start in 0usize..1 << 40,
    ) {
        let now = Instant::now();
        let zone = |i: usize| if zone_mask[i] { "local" } else { "other" };
        let s = zoned(n, zone);
        let tripped = |i: usize| tripped_mask[i];
        trip_masked(&s, &tripped_mask, now);
        let ctx = PickContext::at(now);
        let rr = || RoundRobin::with_start(start);
        let all = |_: usize| true;
        let open = |i: usize| !tripped(i);
        let any_open = (0..n).any(open);

        // Availability filtering: the unfiltered ones, or all (fail open).
        let af = AvailabilityFiltering::new(rr()).build(&s);
        let expect_af = |i: usize| if any_open { open(i) } else { all(i) };
        let m = (0..n).filter(|&i| expect_af(i)).count();
        assert_even(&counts(&*af, &ctx, N * m), expect_af, N, "availability filtering")?;

        // Zone avoidance preferring `local`: the local zone's available
        // instances; else (failover) every available instance; else all.
        let za = ZoneAvoidance::new(rr()).preferred_zone(Some("local")).build(&s);
        let local_open = (0..n).any(|i| zone_mask[i] && open(i));
        let expect_za = |i: usize| {
            if local_open { zone_mask[i] && open(i) } else if any_open { open(i) } else { true }
        };
        let m = (0..n).filter(|&i| expect_za(i)).count();
        assert_even(&counts(&*za, &ctx, N * m), expect_za, N, "zone avoidance")?;

        // Nested: zone avoidance over availability filtering.
        let nested = ZoneAvoidance::new(AvailabilityFiltering::new(rr()))
            .preferred_zone(Some("local"))
            .build(&s);
        assert_even(&counts(&*nested, &ctx, N * m), expect_za, N, "zone avoidance(availability filtering)")?;

        // A retry's exclusions (some excluded, at least one left), plain
        // and wrapped, with nothing tripped in a fresh list.
        let fresh = zoned(n, zone);
        let (excluded, kept) = exclusions(&fresh, &excluded_mask);
        let kept = |i: usize| kept[i];
        let m = (0..n).filter(|&i| kept(i)).count();
        let retry = PickContext::at(now).with_excluded(&excluded);
        for (name, picker) in [
            ("round robin, retry", rr().build(&fresh)),
            ("availability filtering, retry", AvailabilityFiltering::new(rr()).build(&fresh)),
            ("zone avoidance, retry", ZoneAvoidance::new(rr()).build(&fresh)),
        ] {
            assert_even(&counts(&*picker, &retry, N * m), kept, N, name)?;
        }

        // The health filter (tripped instances unhealthy), as the balancer
        // sets it outside panic mode; in panic mode it is off (all).
        if any_open {
            let healthy = PickContext::at(now).with_health_filter();
            let m = (0..n).filter(|&i| open(i)).count();
            for (name, picker) in [
                ("round robin, health filter", rr().build(&s)),
                ("availability filtering, health filter", AvailabilityFiltering::new(rr()).build(&s)),
            ] {
                assert_even(&counts(&*picker, &healthy, N * m), open, N, name)?;
            }
        }
        let panic = rr().build(&s);
        assert_even(&counts(&*panic, &ctx, N * n), all, N, "round robin, panic mode")?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Retries interleaved with first picks do not move the first picks'
    /// rotation: with one failing endpoint of `n`, whose every request is
    /// retried once on another, `N · n` requests give each endpoint N ± 2 %
    /// of the first picks, and the retries spread over the other endpoints
    /// (counts differ by at most 2: exact turns for round robin, a filtered
    /// turn handed on for the wrappers). Before retries stepped the rotation of
    /// first picks, so with 2 endpoints every request went first to the
    /// failing one (2 000 of 2 000 instead of 1 000), with 3 every other one.
    /// The sibling of spring-cloud-commons#1144 (sticky picks moving the
    /// round robin of the others), for retries.
    #[test]
    fn retries_do_not_move_the_rotation_of_first_picks(
        n in 2usize..=64,
        failing in 0usize..64,
        start in 0usize..1 << 40,
    ) {
        let failing = failing % n;
        let s = zoned(n, |_| "local");
        let rr = || RoundRobin::with_start(start);
        for (name, picker) in [
            ("round robin", rr().build(&s)),
            ("availability filtering", AvailabilityFiltering::new(rr()).build(&s)),
            ("zone avoidance", ZoneAvoidance::new(rr()).preferred_zone(Some("local")).build(&s)),
            ("best available", BestAvailable::new().build(&s)),
            ("weighted round robin", WeightedRoundRobin::with_start(start).build(&s)),
        ] {
            let index = |e: &Endpoint| {
                s.endpoints().iter().position(|x| x.same_identity(e)).expect("a member")
            };
            let mut first = vec![0; n];
            let mut retried = vec![0; n];
            for _ in 0..N * n {
                let now = Instant::now();
                let e = picker.pick(&PickContext::at(now)).expect("an endpoint").clone();
                let i = index(&e);
                first[i] += 1;
                if i == failing {
                    let tried = [e];
                    let ctx = PickContext::at(now).with_excluded(&tried);
                    let r = picker.pick(&ctx).expect("another endpoint");
                    retried[index(r)] += 1;
                }
            }
            assert_even(&first, |_| true, N, &format!("{name}: first picks"))?;
            let others: Vec<usize> = (0..n).filter(|&i| i != failing).map(|i| retried[i]).collect();
            let (lo, hi) = (others.iter().min(), others.iter().max());
            prop_assert!(
                hi.zip(lo).is_some_and(|(h, l)| h - l <= 2) && retried[failing] == 0,
                "{}: retries {:?} (failing: {})", name, retried, failing
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Best available with every request finished (equal loads): ties take
    /// turns over the eligible endpoints alone, on every fallback path,
    /// plain and wrapped. Found by an attack: ties went to the first least
    /// loaded endpoint after a rotating offset, so the endpoint after a run
    /// of tripped or excluded ones took that run's turns (4 endpoints, 2
    /// tripped: [1000, 0, 0, 3000]; 8 with 6 excluded: [1000, 0 × 6, 7000]).
    #[test]
    fn best_available_ties_spread_over_what_remains(
        n in 1usize..=64,
        tripped_mask in proptest::collection::vec(any::<bool>(), 64),
        excluded_mask in proptest::collection::vec(any::<bool>(), 64),
    ) {
        let now = Instant::now();
        let s = zoned(n, |_| "z");
        let tripped = |i: usize| tripped_mask[i];
        trip_masked(&s, &tripped_mask, now);
        let ctx = PickContext::at(now);
        let open = |i: usize| !tripped(i);
        let any_open = (0..n).any(open);
        // Tripped ones only when nothing else is left (as Ribbon falls
        // back); availability filtering fails open the same way.
        let expect = |i: usize| if any_open { open(i) } else { true };
        let m = (0..n).filter(|&i| expect(i)).count();
        for (name, picker) in [
            ("best available, tripped", BestAvailable::new().build(&s)),
            ("availability filtering(best available)", AvailabilityFiltering::new(BestAvailable::new()).build(&s)),
            ("zone avoidance(best available)", ZoneAvoidance::new(BestAvailable::new()).build(&s)),
        ] {
            assert_even(&counts(&*picker, &ctx, N * m), expect, N, name)?;
        }
        if any_open {
            let healthy = PickContext::at(now).with_health_filter();
            let m = (0..n).filter(|&i| open(i)).count();
            let picker = BestAvailable::new().build(&s);
            assert_even(&counts(&*picker, &healthy, N * m), open, N, "best available, health filter")?;
        }

        let fresh = zoned(n, |_| "z");
        let (excluded, kept) = exclusions(&fresh, &excluded_mask);
        let kept = |i: usize| kept[i];
        let m = (0..n).filter(|&i| kept(i)).count();
        let retry = PickContext::at(now).with_excluded(&excluded);
        for (name, picker) in [
            ("best available, retry", BestAvailable::new().build(&fresh)),
            ("availability filtering(best available), retry", AvailabilityFiltering::new(BestAvailable::new()).build(&fresh)),
        ] {
            assert_even(&counts(&*picker, &retry, N * m), kept, N, name)?;
        }
    }
}

/// Peak EWMA P2C with equal costs: after its random draws miss, the backup
/// draw is uniform over what remains, not the first usable endpoint after a
/// random offset. Found by an attack: 64 endpoints with 3..=62 tripped
/// gave [4366, 4435, 4342, 26857] of 40 000 picks (67 % to the endpoint
/// after the run). Seeded, so the counts are exact for the seed; the bound
/// (each survivor within 8 % of an even share) is far from the defect.
#[tokio::test(start_paused = true)]
async fn p2c_backup_draws_spread_over_what_remains() {
    let now = Instant::now();
    let within = |got: &[usize], members: &[usize], picks: usize, path: &str| {
        let share = picks / members.len();
        let mine: Vec<usize> = members.iter().map(|&i| got[i]).collect();
        eprintln!("{path}: {mine:?} of {picks}");
        for &i in members {
            assert!(
                got[i].abs_diff(share) * 100 <= share * 8,
                "{path}: endpoint {i} got {} of {share}: {got:?}",
                got[i]
            );
        }
        assert_eq!(
            members.iter().map(|&i| got[i]).sum::<usize>(),
            picks,
            "{path}: {got:?}"
        );
    };
    // A run of tripped endpoints, plain, wrapped and with the health filter.
    let s = zoned(64, |_| "z");
    s.endpoints()[3..63].iter().for_each(|e| trip(e, now));
    let survivors = [0, 1, 2, 63];
    for (name, picker, ctx) in [
        (
            "p2c, tripped",
            PeakEwmaP2c::with_seed(1).build(&s),
            PickContext::at(now),
        ),
        (
            "availability filtering(p2c)",
            AvailabilityFiltering::new(PeakEwmaP2c::with_seed(2)).build(&s),
            PickContext::at(now),
        ),
        (
            "p2c, health filter",
            PeakEwmaP2c::with_seed(3).build(&s),
            PickContext::at(now).with_health_filter(),
        ),
    ] {
        within(&counts(&*picker, &ctx, 40_000), &survivors, 40_000, name);
    }
    // A retry excluding a run.
    let fresh = zoned(64, |_| "z");
    let excluded: Vec<Endpoint> = fresh.endpoints()[1..62].to_vec();
    let retry = PickContext::at(now).with_excluded(&excluded);
    let picker = PeakEwmaP2c::with_seed(4).build(&fresh);
    within(
        &counts(&*picker, &retry, 30_000),
        &[0, 62, 63],
        30_000,
        "p2c, retry",
    );
}

/// The exact cases of issue 10: 4 (and 12) instances all filtered, 1 200
/// picks: 300 (100) each; the local zone failed over to the other zone's
/// two instances: an even split.
#[tokio::test(start_paused = true)]
async fn issue_10_fallback_cases() {
    let now = Instant::now();
    for n in [4usize, 12] {
        let s = zoned(n, |_| "z");
        s.endpoints().iter().for_each(|e| trip(e, now));
        let picker = AvailabilityFiltering::new(RoundRobin::with_start(0))
            .when_all_filtered(AllFilteredPolicy::FailOpen)
            .build(&s);
        let got = counts(&*picker, &PickContext::at(now), 1_200);
        assert_eq!(got, vec![1_200 / n; n], "all {n} filtered");
    }
    let s = zoned(4, |i| if i < 2 { "local" } else { "other" });
    trip(&s.endpoints()[0], now);
    trip(&s.endpoints()[1], now);
    let picker = ZoneAvoidance::new(RoundRobin::with_start(0))
        .preferred_zone(Some("local"))
        .build(&s);
    assert_eq!(counts(&*picker, &PickContext::at(now), 100), [0, 0, 50, 50]);
}

/// Building each rule's picker over 100 000 instances stays under 2 s in a
/// debug build (smooth weighted round robin's build took 7.5 to 12.6 s in
/// release before, being quadratic), also for many distinct weights.
#[test]
fn build_over_100_000_instances_is_bounded() {
    const BOUND: Duration = Duration::from_secs(2);
    let list = |weight: &dyn Fn(usize) -> u32| {
        let endpoints = (0..100_000usize)
            .map(|i| {
                let host = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
                let instance = Instance::new("svc", host, 8080)
                    .unwrap()
                    .with_zone(["zone-a", "zone-b", "zone-c"][i % 3])
                    .with_weight(weight(i));
                Endpoint::new(instance)
            })
            .collect();
        Arc::new(Snapshot::new("svc", endpoints, 1))
    };
    let lists = [
        ("weights 1..=3", list(&|i| 1 + (i % 3) as u32)),
        // Many distinct weights: 1 000 instances weigh 100..1 100.
        (
            "weights 1 and 100..1 100",
            list(&|i| if i < 1_000 { 100 + i as u32 } else { 1 }),
        ),
    ];
    let rules: Vec<Box<dyn Rule>> = vec![
        Box::new(RoundRobin::with_start(0)),
        Box::new(Random::with_seed(1)),
        Box::new(WeightedResponseTime::with_seed(1)),
        Box::new(WeightedRoundRobin::with_start(0)),
        Box::new(ConsistentHash::new()),
        Box::new(BestAvailable::new()),
        Box::new(PeakEwmaP2c::with_seed(1)),
        Box::new(AvailabilityFiltering::new(RoundRobin::with_start(0))),
        Box::new(ZoneAvoidance::new(RoundRobin::with_start(0)).preferred_zone(Some("zone-b"))),
    ];
    let mut slow = Vec::new();
    for (what, s) in &lists {
        for rule in &rules {
            let started = std::time::Instant::now();
            let picker = rule.build(s);
            let took = started.elapsed();
            println!("build {} over 100 000 ({what}): {took:?}", rule.name());
            assert!(picker.pick(&PickContext::new()).is_some());
            if took >= BOUND {
                slow.push(format!("{} ({what}): {took:?}", rule.name()));
            }
        }
    }
    assert!(slow.is_empty(), "builds over {BOUND:?}: {slow:?}");
}

/// Picking while another thread swaps pickers never panics and never
/// returns an endpoint absent from the picker's own list.
#[test]
fn picking_while_lists_are_swapped() {
    let lists: Vec<Arc<Snapshot>> = (0..8u16)
        .map(|v| {
            let ports: Vec<u16> = (0..(v * 3 % 7)).map(|p| 1000 * (v + 1) + p).collect();
            snapshot(&ports, u64::from(v))
        })
        .collect();
    let rule = Arc::new(RoundRobin::with_start(0));
    let pickers: Vec<Arc<dyn Picker>> = lists.iter().map(|s| rule.build(s)).collect();
    let current = Arc::new(ArcSwap::from_pointee(Arc::clone(&pickers[0])));
    let stop = Arc::new(AtomicBool::new(false));

    let swapper = {
        let (current, stop, lists) = (Arc::clone(&current), Arc::clone(&stop), lists.clone());
        let random = Random::with_seed(3);
        std::thread::spawn(move || {
            let mut i = 0usize;
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i = (i + 1) % lists.len();
                // A fresh build each time, as a refresh does.
                let picker = if i % 2 == 0 {
                    rule.build(&lists[i])
                } else {
                    random.build(&lists[i])
                };
                current.store(Arc::new(picker));
                swaps += 1;
            }
            swaps
        })
    };
    let threads: Vec<_> = (0..2u64)
        .map(|_| {
            let current = Arc::clone(&current);
            std::thread::spawn(move || {
                let mut checked = 0u64;
                for _ in 0..200_000 {
                    let picker = current.load();
                    let snap = picker.snapshot();
                    if let Some(e) = picker.pick(&PickContext::new()) {
                        assert!(snap.contains(e));
                        // Ports encode the version they were listed in.
                        assert_eq!(u64::from(e.instance().port() / 1000 - 1), snap.version());
                        checked += 1;
                    } else {
                        assert!(snap.is_empty());
                    }
                }
                checked
            })
        })
        .collect();
    let checked: u64 = threads.into_iter().map(|p| p.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(checked > 0);
    assert!(swaps > 0);
    drop(pickers);
}
