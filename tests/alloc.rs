//! Picks allocate nothing: every rule, over snapshots of 1, 10 and 1 000
//! instances with zones, weights, warmed stats, tripped breakers and
//! requests in flight, under every kind of pick context.
//!
//! A counting global allocator wraps the system allocator and counts
//! allocations (`alloc`, `alloc_zeroed`, `realloc`) per thread, so the
//! harness's other test threads do not disturb a measurement. Each test runs
//! on a current-thread runtime with paused time, so its body stays on one
//! thread.
//!
//! Every context gets 10 000 measured picks, except over 1 000 instances:
//! 2 000 (see `LARGE_LIST_PICKS`), and "all of 1 000 excluded", whose
//! picks are quadratic, 20 (see `QUADRATIC_PICKS`);
//! `TOWER_RIBBON_ALLOC_FULL=1 cargo test --release --test alloc` runs
//! 10 000 there too.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_ribbon::instance::{Endpoint, Instance};
use tower_ribbon::rule::{
    AllFilteredPolicy, AvailabilityFiltering, BestAvailable, ConsistentHash, PeakEwmaP2c,
    PickContext, Random, RoundRobin, Rule, WeightedResponseTime, WeightedRoundRobin, ZoneAvoidance,
};
use tower_ribbon::snapshot::Snapshot;
use tower_ribbon::stats::{InFlightGuard, Outcome};

// ---------------------------------------------------------------------------
// Counting allocator.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocs;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// Allocations this thread makes while running `f`.
fn allocs_during(f: impl FnOnce()) -> u64 {
    let before = allocs();
    f();
    allocs() - before
}

// ---------------------------------------------------------------------------
// Fixtures.

const SIZES: [usize; 3] = [1, 10, 1_000];
const WARM_UP_PICKS: usize = 16;
const PICKS: usize = 10_000;
/// Contexts that exclude more than this many (endpoint, excluded) pairs
/// (all of 1 000 excluded) make every pick cost O(n × excluded) identity
/// comparisons, about 500 000; 10 000 such picks take minutes per rule in a
/// debug build (100 took 40 of the file's 55 s). They get `QUADRATIC_PICKS`
/// measured picks instead, unless `TOWER_RIBBON_ALLOC_FULL` is set: every
/// such pick returns `None` the same way, so an allocation shows at the
/// first.
const QUADRATIC_WORK: usize = 100_000;
const QUADRATIC_PICKS: usize = 20;
/// Measured picks per context over 1 000 instances, unless
/// `TOWER_RIBBON_ALLOC_FULL` is set: their picks are O(n) for several
/// rules in a debug build. A
/// path that allocates shows at its first pick; the periodic ones (zone
/// avoidance's amortized count, every 125th pick here; weighted response
/// time recomputing at every pick) come many times within 2 000.
const LARGE_LIST_PICKS: usize = 2_000;
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

/// `n` endpoints in zones a/b/c (round robin over the index) with weights
/// 1..=3.
fn snapshot(n: usize, version: u64) -> Arc<Snapshot> {
    let endpoints = (0..n)
        .map(|i| {
            let instance = Instance::new(
                "svc",
                format!("10.0.{}.{}", i / 250, i % 250 + 1),
                8080 + (i % 7) as u16,
            )
            .unwrap()
            .with_zone(ZONES[i % 3])
            .with_weight(1 + (i % 3) as u32);
            Endpoint::new(instance)
        })
        .collect();
    Arc::new(Snapshot::new("svc", endpoints, version))
}

/// Endpoints whose breaker is tripped at [`Times::open`]: every 4th,
/// starting with the first (so a 1-instance snapshot is all tripped).
fn is_tripped(i: usize) -> bool {
    i % 4 == 0
}

/// Endpoints that carry one request in flight during the picks.
fn is_loaded(i: usize) -> bool {
    i % 5 == 2
}

/// Pick times.
#[derive(Clone, Copy)]
struct Times {
    /// Breakers of tripped endpoints are open.
    open: Instant,
    /// Their blackout is over: half-open, probe free.
    half_open: Instant,
}

/// Records latency samples on every endpoint, trips the breakers of a few
/// (3 × connect failure) and starts one request on some; returns the
/// in-flight guards, which must live through the picks.
fn warm(snapshot: &Snapshot) -> (Times, Vec<InFlightGuard<'_>>) {
    let t0 = Instant::now();
    for (i, e) in snapshot.endpoints().iter().enumerate() {
        for s in 0..5u64 {
            let start = t0 + Duration::from_millis(s * 100);
            let latency = Duration::from_millis(5 + (i as u64 % 7) * 10 + s);
            e.stats()
                .start_at(start)
                .finish_at(Outcome::Success, start + latency);
        }
    }
    let t1 = t0 + Duration::from_secs(1);
    for (i, e) in snapshot.endpoints().iter().enumerate() {
        if is_tripped(i) {
            for _ in 0..3 {
                e.stats()
                    .start_at(t1)
                    .finish_at(Outcome::ConnectFailure, t1);
            }
            assert!(e.stats().is_tripped_at(t1 + Duration::from_secs(1)));
        }
    }
    let guards = snapshot
        .endpoints()
        .iter()
        .enumerate()
        .filter(|(i, _)| is_loaded(*i))
        .map(|(_, e)| e.stats().start_at(t1))
        .collect();
    let times = Times {
        open: t1 + Duration::from_secs(1),
        half_open: t1 + Duration::from_secs(15),
    };
    for (i, e) in snapshot.endpoints().iter().enumerate() {
        assert_eq!(e.stats().is_tripped_at(times.open), is_tripped(i));
        assert!(!e.stats().is_tripped_at(times.half_open));
    }
    (times, guards)
}

/// Excluded sets: nothing, a few, everything.
fn exclusions(snapshot: &Snapshot) -> Vec<(&'static str, Vec<Endpoint>)> {
    let all = snapshot.endpoints();
    let n = all.len();
    let mut some: Vec<usize> = [1, n / 2, n.saturating_sub(1)]
        .into_iter()
        .filter(|&i| i < n)
        .collect();
    some.sort_unstable();
    some.dedup();
    vec![
        ("none excluded", Vec::new()),
        (
            "some excluded",
            some.iter().map(|&i| all[i].clone()).collect(),
        ),
        ("all excluded", all.to_vec()),
    ]
}

// ---------------------------------------------------------------------------
// The check.

/// For each size: a fresh rule, `build` (may allocate), then for every
/// context a few warm-up picks and `PICKS` measured picks (`QUADRATIC_PICKS`
/// for all of 1 000 excluded, see there) that must not allocate.
fn check(make: fn() -> Box<dyn Rule>) {
    check_with(make, false);
}

/// As [`check`]; with `may_refuse`, `None` is accepted when something is
/// eligible (a rule that fails closed when all eligible endpoints are
/// filtered).
fn check_with(make: fn() -> Box<dyn Rule>, may_refuse: bool) {
    // The counter must see an allocation on this thread, or the zeros below
    // mean nothing.
    let seen = allocs_during(|| drop(black_box(Vec::<u8>::with_capacity(1))));
    assert_eq!(
        seen, 1,
        "the counting allocator missed Vec::with_capacity(1)"
    );

    let full = std::env::var_os("TOWER_RIBBON_ALLOC_FULL").is_some();
    let mut failures = Vec::new();
    for (version, n) in SIZES.into_iter().enumerate() {
        let snap = snapshot(n, version as u64 + 1);
        let (times, guards) = warm(&snap);
        let rule = make();
        let picker = rule.build(&snap);
        for (ex_name, excluded) in exclusions(&snap) {
            let expect_some = excluded.len() < n;
            let picks = if excluded.len() * n > QUADRATIC_WORK && !full {
                QUADRATIC_PICKS
            } else if n >= 1_000 && !full {
                LARGE_LIST_PICKS
            } else {
                PICKS
            };
            for (t_name, now) in [
                ("breakers open", times.open),
                ("half-open", times.half_open),
            ] {
                for hashed in [false, true] {
                    let ctx = |k: usize| {
                        let ctx = PickContext::at(now).with_excluded(&excluded);
                        if hashed {
                            ctx.with_hash_key((k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
                        } else {
                            ctx
                        }
                    };
                    let pick = |k: usize| {
                        let ctx = ctx(k);
                        let got = picker.pick(black_box(&ctx));
                        match got {
                            Some(e) => assert!(
                                expect_some && ctx.is_eligible(e),
                                "{}: ineligible pick",
                                rule.name()
                            ),
                            None => assert!(!expect_some || may_refuse, "{}: no pick", rule.name()),
                        }
                        black_box(got);
                    };
                    for k in 0..WARM_UP_PICKS {
                        pick(k);
                    }
                    let count = allocs_during(|| {
                        for k in 0..picks {
                            pick(WARM_UP_PICKS + k);
                        }
                    });
                    if count != 0 {
                        failures.push(format!(
                            "{} ({:?}): n={n}, {ex_name}, {t_name}, hash key: {hashed}: \
                             {count} allocations in {picks} picks ({:.3} per pick)",
                            rule.name(),
                            picker,
                            count as f64 / picks as f64,
                        ));
                    }
                }
            }
        }
        drop(guards);
    }
    assert!(
        failures.is_empty(),
        "picks allocated:\n{}",
        failures.join("\n")
    );
}

/// The check itself can fail: a "rule" that allocates per pick is caught.
#[test]
fn the_counter_sees_allocations_on_this_thread() {
    assert_eq!(
        allocs_during(|| drop(black_box(Vec::<u8>::with_capacity(1)))),
        1
    );
    let n = allocs_during(|| {
        for _ in 0..10 {
            drop(black_box(Box::new(black_box(1u64))));
        }
    });
    assert_eq!(n, 10);
    // Another thread's allocations are not counted here.
    let handle = std::thread::spawn(|| drop(black_box(vec![0u8; 64])));
    let n = allocs_during(|| {
        std::thread::sleep(Duration::from_millis(20));
    });
    handle.join().unwrap();
    assert_eq!(n, 0);
}

macro_rules! no_alloc {
    ($($name:ident => $make:expr;)*) => {$(
        #[tokio::test(start_paused = true)]
        async fn $name() {
            check(|| Box::new($make));
        }
    )*};
}

no_alloc! {
    round_robin => RoundRobin::with_start(7);
    random => Random::with_seed(7);
    weighted_response_time => WeightedResponseTime::with_seed(7);
    weighted_response_time_recomputing_every_pick =>
        WeightedResponseTime::with_seed(7).with_recompute_interval(Duration::ZERO);
    weighted_round_robin => WeightedRoundRobin::new();
    consistent_hash => ConsistentHash::new();
    best_available => BestAvailable::new();
    peak_ewma_p2c => PeakEwmaP2c::with_seed(7);
    availability_filtering_round_robin => AvailabilityFiltering::new(RoundRobin::with_start(7));
    availability_filtering_p2c => AvailabilityFiltering::new(PeakEwmaP2c::with_seed(7));
    zone_avoidance => ZoneAvoidance::new(RoundRobin::with_start(7));
    zone_avoidance_preferred_zone =>
        ZoneAvoidance::new(RoundRobin::with_start(7)).preferred_zone(Some("zone-b"));
    zone_avoidance_over_availability_filtering => ZoneAvoidance::new(
        AvailabilityFiltering::new(RoundRobin::with_start(7)).max_in_flight(1),
    )
    .preferred_zone(Some("zone-a"));
    zone_avoidance_over_weighted_round_robin =>
        ZoneAvoidance::new(WeightedRoundRobin::with_start(7)).preferred_zone(Some("zone-c"));
}

#[tokio::test(start_paused = true)]
async fn availability_filtering_in_flight_limit_failing_closed() {
    check_with(
        || {
            Box::new(
                AvailabilityFiltering::new(RoundRobin::with_start(7))
                    .max_in_flight(1)
                    .when_all_filtered(AllFilteredPolicy::Error),
            )
        },
        true,
    );
}
