//! Picks confined by a preference wrapper (sticky session, hint, subset,
//! same instance) do not split the rotation of the requests without a
//! preference, whatever rotating rule they wrap.
//!
//! Before the fix a request pinned to one instance stepped the wrapped
//! round robin's cursor, so with pinned and unpinned requests in turn every
//! unpinned one went to the same instance (spring-cloud-commons#1144, which
//! Spring fixed for lists of one); and hinted requests to a group of two
//! among four, in turn with unhinted ones, all got the cursor's even steps:
//! every hinted request went to one member of the group. A first fix
//! (a shortcut for one-instance tiers and one shared preferred lane) passed
//! over an inner availability filter's hard in-flight cap (10 of 10
//! picks), sent hinted requests inside a subset all to one member
//! ({1002: 100}) and piled two hint groups in turn on one member each.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Request, Response};
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::{
    AllFilteredPolicy, AvailabilityFiltering, BestAvailable, ConsistentHash, HintBased,
    PickContext, RoundRobin, Rule, StickySession, Subset, WeightedRoundRobin,
};
use tower_ribbon::snapshot::Snapshot;
use tower_ribbon::{Endpoint, Instance, LoadBalancer};

/// `n` instances on ports 1000.., those in `canary` with metadata
/// `hint=canary`.
fn list(n: u16, canary: &[u16]) -> Arc<Snapshot> {
    let eps = (0..n)
        .map(|p| {
            let mut i = Instance::new("s", "127.0.0.1", 1000 + p).unwrap();
            if canary.contains(&p) {
                i = i.with_metadata("hint", "canary");
            }
            Endpoint::new(i)
        })
        .collect();
    Arc::new(Snapshot::new("s", eps, 1))
}

/// 100 rounds of a pick with `pinned` headers and one without; the ports
/// each kind got.
fn alternate(
    rule: &dyn Rule,
    pinned: &HeaderMap,
    n: u16,
    canary: &[u16],
) -> (BTreeMap<u16, usize>, BTreeMap<u16, usize>) {
    let picker = rule.build(&list(n, canary));
    let free = HeaderMap::new();
    let (mut pins, mut frees) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..100 {
        let p = picker
            .pick(&PickContext::new().with_headers(pinned))
            .unwrap();
        *pins.entry(p.instance().port()).or_insert(0) += 1;
        let f = picker
            .pick(&PickContext::new().with_headers(&free))
            .unwrap();
        *frees.entry(f.instance().port()).or_insert(0) += 1;
    }
    (pins, frees)
}

fn cookie(port: u16) -> HeaderMap {
    let mut h = HeaderMap::new();
    let value = format!("sc-lb-instance-id=127.0.0.1:{port}");
    h.insert(http::header::COOKIE, value.parse().unwrap());
    h
}

fn hint() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-sc-lb-hint", "canary".parse().unwrap());
    h
}

fn even(ports: std::ops::Range<u16>, each: usize) -> BTreeMap<u16, usize> {
    ports.map(|p| (p, each)).collect()
}

/// For round robin and for consistent hashing's round robin of requests
/// without a hash key (which shared one cursor between both kinds: every
/// stateless call went to one instance of two, {1000: 100}).
#[test]
fn sticky_requests_do_not_move_the_round_robin_of_the_others() {
    for n in [2u16, 4] {
        let rules: [(&str, Box<dyn Rule>); 2] = [
            (
                "round_robin",
                Box::new(StickySession::new(RoundRobin::with_start(0))),
            ),
            (
                "consistent_hash",
                Box::new(StickySession::new(ConsistentHash::new())),
            ),
        ];
        for (name, rule) in rules {
            let (pins, frees) = alternate(&*rule, &cookie(1000), n, &[]);
            assert_eq!(pins, BTreeMap::from([(1000, 100)]), "{name}");
            assert_eq!(
                frees,
                even(1000..1000 + n, 100 / n as usize),
                "{name}: {n} instances"
            );
        }
    }
}

#[test]
fn hinted_requests_to_a_one_instance_group_do_not_move_the_round_robin() {
    let rule = HintBased::new(RoundRobin::with_start(0));
    let (pins, frees) = alternate(&rule, &hint(), 2, &[0]);
    assert_eq!(pins, BTreeMap::from([(1000, 100)]));
    assert_eq!(frees, even(1000..1002, 50));
}

/// A group of two among four, for every rotating rule: hinted requests
/// take turns inside the group, the others over all four.
#[test]
fn hinted_requests_to_a_group_of_two_take_turns_and_leave_the_others_even() {
    let rules: Vec<(&str, Box<dyn Rule>)> = vec![
        (
            "round_robin",
            Box::new(HintBased::new(RoundRobin::with_start(0))),
        ),
        (
            "weighted_round_robin",
            Box::new(HintBased::new(WeightedRoundRobin::with_start(0))),
        ),
        (
            "best_available",
            Box::new(HintBased::new(BestAvailable::with_start(7))),
        ),
        (
            "consistent_hash without a key",
            Box::new(HintBased::new(ConsistentHash::new())),
        ),
    ];
    for (name, rule) in rules {
        let (pins, frees) = alternate(&*rule, &hint(), 4, &[1, 2]);
        if name == "best_available" {
            // Idle ties take one turn each per round, in an order drawn
            // from the rule's seeded generator. A pick whose ties are more
            // or fewer than those that began the round begins a new one
            // (stop 49), so with hinted and plain picks in turn each draws
            // at random: the group about even (seed 7: 42 and 58), the
            // others over all four. Before, the plain picks leaned to the
            // two instances the group leaves (38, 14, 10, 38), and through
            // an in-flight limit that lean pinned every stream to one
            // instance (tests/tie_rounds.rs). The seed is fixed: with a
            // random one ci116 failed a bound of 5 on a share then.
            assert!(
                pins.len() == 2
                    && pins.keys().all(|p| [1001, 1002].contains(p))
                    && pins.values().all(|c| c.abs_diff(50) <= 12),
                "{name}: {pins:?}"
            );
            assert!(
                frees.len() == 4 && frees.values().all(|&c| c.abs_diff(25) <= 12),
                "{name}: {frees:?}"
            );
            continue;
        }
        assert_eq!(pins, BTreeMap::from([(1001, 50), (1002, 50)]), "{name}");
        assert_eq!(frees, even(1000..1004, 25), "{name}");
    }
}

/// Through the balancer: a client alternating a session call (cookie) and
/// a stateless call spreads the stateless calls over both instances.
#[tokio::test]
async fn through_the_balancer_stateless_calls_alternate() {
    let seen = Arc::new(Mutex::new(Vec::<u16>::new()));
    let log = Arc::clone(&seen);
    let inner = tower::service_fn(move |req: Request<String>| {
        let log = Arc::clone(&log);
        async move {
            log.lock().unwrap().push(req.uri().port_u16().unwrap());
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    });
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1000,127.0.0.1:1001")
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .rule(|| StickySession::new(RoundRobin::new()))
        .retry(RetryPolicy::none())
        .build(inner)
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let mut free = BTreeMap::new();
    for _ in 0..100 {
        let req = Request::get("http://svc/session")
            .header("cookie", "sc-lb-instance-id=127.0.0.1:1000")
            .body(String::new())
            .unwrap();
        lb.clone().oneshot(req).await.unwrap();
        assert_eq!(*seen.lock().unwrap().last().unwrap(), 1000);
        let req = Request::get("http://svc/stateless")
            .body(String::new())
            .unwrap();
        lb.clone().oneshot(req).await.unwrap();
        let port = *seen.lock().unwrap().last().unwrap();
        *free.entry(port).or_insert(0usize) += 1;
    }
    assert_eq!(free, even(1000..1002, 50), "stateless calls");
}

/// Hint groups inside a subset, nested either way: a subset of 4 among 8
/// and a hint group of 2 of its members; hinted requests take turns in the
/// group, the others over the subset.
#[test]
fn hinted_requests_inside_a_subset_take_turns_either_nesting() {
    let plain = Subset::new(RoundRobin::with_start(0), "client-a").size(4);
    let p = plain.build(&list(8, &[]));
    let mut subset: Vec<u16> = (0..40)
        .map(|_| p.pick(&PickContext::new()).unwrap().instance().port() - 1000)
        .collect();
    subset.sort_unstable();
    subset.dedup();
    assert_eq!(subset.len(), 4, "{subset:?}");
    let canary = [subset[0], subset[1]];
    let rules: [(&str, Box<dyn Rule>); 2] = [
        (
            "hint over subset",
            Box::new(HintBased::new(
                Subset::new(RoundRobin::with_start(0), "client-a").size(4),
            )),
        ),
        (
            "subset over hint",
            Box::new(Subset::new(HintBased::new(RoundRobin::with_start(0)), "client-a").size(4)),
        ),
    ];
    for (name, rule) in rules {
        let (pins, frees) = alternate(&*rule, &hint(), 8, &canary);
        let want: BTreeMap<u16, usize> = canary.iter().map(|&c| (1000 + c, 50)).collect();
        assert_eq!(pins, want, "{name}: hinted picks");
        let want: BTreeMap<u16, usize> = subset.iter().map(|&c| (1000 + c, 25)).collect();
        assert_eq!(frees, want, "{name}: other picks");
    }
}

/// A preferred instance that an inner availability filter with a hard
/// in-flight cap (`AllFilteredPolicy::Error`: no fail-open tier) excludes
/// is not picked: a sticky instance, a one-instance and a two-instance
/// hint group, each at its cap.
#[test]
fn a_preferred_instance_an_inner_hard_cap_excludes_is_not_picked() {
    let capped = || {
        AvailabilityFiltering::new(RoundRobin::with_start(0))
            .max_in_flight(1)
            .when_all_filtered(AllFilteredPolicy::Error)
    };
    type Case = (&'static str, Box<dyn Rule>, HeaderMap, &'static [u16]);
    let cases: [Case; 3] = [
        (
            "sticky",
            Box::new(StickySession::new(capped())),
            cookie(1000),
            &[],
        ),
        (
            "hint of one",
            Box::new(HintBased::new(capped())),
            hint(),
            &[0],
        ),
        (
            "hint of two",
            Box::new(HintBased::new(capped())),
            hint(),
            &[0, 1],
        ),
    ];
    for (name, rule, headers, canary) in cases {
        let s = list(4, canary);
        let picker = rule.build(&s);
        let _busy: Vec<_> = (0..canary.len().max(1))
            .map(|i| s.endpoints()[i].stats().start())
            .collect();
        for _ in 0..10 {
            let e = picker
                .pick(&PickContext::new().with_headers(&headers))
                .unwrap();
            let port = e.instance().port();
            assert!(
                port >= 1000 + canary.len().max(1) as u16,
                "{name}: picked {port} at its cap"
            );
        }
    }
}

/// Two hint groups of two, requests of each in turn: each group's
/// requests take turns over its members.
#[test]
fn two_hint_groups_in_turn_each_take_turns() {
    let eps = (0..4u16)
        .map(|p| {
            let group = if p < 2 { "a" } else { "b" };
            let i = Instance::new("s", "127.0.0.1", 1000 + p).unwrap();
            Endpoint::new(i.with_metadata("hint", group))
        })
        .collect();
    let s = Arc::new(Snapshot::new("s", eps, 1));
    let picker = HintBased::new(RoundRobin::with_start(0)).build(&s);
    let headers = ["a", "b"].map(|g| {
        let mut h = HeaderMap::new();
        h.insert("x-sc-lb-hint", g.parse().unwrap());
        h
    });
    let mut counts = BTreeMap::new();
    for _ in 0..100 {
        for h in &headers {
            let e = picker.pick(&PickContext::new().with_headers(h)).unwrap();
            *counts.entry(e.instance().port()).or_insert(0usize) += 1;
        }
    }
    assert_eq!(counts, even(1000..1004, 50));
}

/// A one-instance preferred tier (a sticky cookie, same-instance
/// preference) with its domain costs each rotating or weighted rule at
/// most two membership tests per pick (weighted response time sums, then
/// draws). Best available tested every endpoint of the list (10 000 per
/// pick). Smooth
/// weighted round robin walked its whole cycle (30 001 tests per pick at
/// 10 000 instances) and weighted response time the whole list twice
/// (20 001) before it had stats.
#[test]
fn a_one_instance_preferred_tier_costs_two_membership_tests_at_most() {
    use std::cell::Cell;
    use tower_ribbon::rule::Tier;
    let n = 10_000u32;
    let s = wide_list(n);
    for (name, rule) in every_rule() {
        let picker = rule.build(&s);
        for target in [0u32, 4_321, n - 1] {
            let calls = Cell::new(0usize);
            let only = |i: usize, _: &Endpoint| {
                calls.set(calls.get() + 1);
                i == target as usize
            };
            let any = |_: usize, _: &Endpoint| true;
            let tiers: [Tier<'_>; 2] = [&only, &any];
            let domain = [target];
            let domains = [Some(&domain[..]), None];
            let mut link = None;
            let base = PickContext::new();
            let ctx = base.with_tiers_in(&mut link, &tiers, &domains);
            for _ in 0..10 {
                let e = picker.pick(&ctx).unwrap();
                assert!(e.same_identity(&s.endpoints()[target as usize]), "{name}");
            }
            assert!(
                calls.get() <= 20,
                "{name}: {} membership tests in 10 picks",
                calls.get()
            );
        }
    }
}

/// A preferred tier of several instances with its domain (a hint group, a
/// subset, a zone) costs every rule at most two membership tests per
/// position of the domain per pick, and the rotating rules give each
/// member exactly its turn. Smooth weighted round robin walked the whole
/// list's cycle: 9 908 tests per pick for a group of two among 10 000
/// instances, 14 640 for a group of eight.
#[test]
fn a_preferred_tier_of_several_costs_its_own_size_per_pick() {
    use std::cell::Cell;
    use tower_ribbon::rule::Tier;
    let n = 10_000u32;
    let s = wide_list(n);
    for (name, rule) in every_rule() {
        // The random draws are spread, not exact.
        let exact = !matches!(name, "peak_ewma_p2c" | "random");
        let picker = rule.build(&s);
        for domain in [
            vec![5u32, 6],
            vec![100, 2000, 3000, 4000, 5000, 6000, 7000, n - 1],
        ] {
            let calls = Cell::new(0usize);
            let only = |i: usize, _: &Endpoint| {
                calls.set(calls.get() + 1);
                domain.contains(&(i as u32))
            };
            let any = |_: usize, _: &Endpoint| true;
            let tiers: [Tier<'_>; 2] = [&only, &any];
            let domains = [Some(&domain[..]), None];
            let mut link = None;
            let base = PickContext::new();
            let ctx = base.with_tiers_in(&mut link, &tiers, &domains);
            let picks = 100 * domain.len();
            let mut got = BTreeMap::new();
            for _ in 0..picks {
                let e = picker.pick(&ctx).unwrap();
                let i = s.endpoints().iter().position(|x| x.same_identity(e));
                *got.entry(i.unwrap() as u32).or_insert(0usize) += 1;
            }
            assert!(got.keys().all(|i| domain.contains(i)), "{name}: {got:?}");
            if exact {
                assert!(got.values().all(|&c| c == 100), "{name}: {got:?}");
            }
            let per_pick = calls.get() as f64 / picks as f64;
            assert!(
                per_pick <= 2.0 * domain.len() as f64,
                "{name}: {per_pick} membership tests per pick, domain of {}",
                domain.len()
            );
        }
    }
}

/// `n` instances of weight 1 on distinct hosts.
fn wide_list(n: u32) -> Arc<Snapshot> {
    let eps = (0..n)
        .map(|p| {
            let host = format!("10.0.{}.{}", p >> 8, p & 255);
            Endpoint::new(Instance::new("s", &host, 80).unwrap())
        })
        .collect();
    Arc::new(Snapshot::new("s", eps, 1))
}

/// Every rule that can be wrapped, seeded or started at 0.
fn every_rule() -> Vec<(&'static str, Box<dyn Rule>)> {
    use tower_ribbon::rule::{PeakEwmaP2c, Random, WeightedResponseTime};
    vec![
        ("round_robin", Box::new(RoundRobin::with_start(0))),
        ("best_available", Box::new(BestAvailable::new())),
        (
            "weighted_round_robin",
            Box::new(WeightedRoundRobin::with_start(0)),
        ),
        (
            "weighted_response_time",
            Box::new(WeightedResponseTime::with_seed(1)),
        ),
        ("peak_ewma_p2c", Box::new(PeakEwmaP2c::with_seed(1))),
        ("consistent_hash", Box::new(ConsistentHash::new())),
        ("random", Box::new(Random::with_seed(1))),
    ]
}

/// A tier without a domain (availability filtering's available instances,
/// a retry's exclusions) with every tenth instance filtered, over 200
/// instances of weights 1 000 to 1 996: a pick whose own turn falls on a
/// filtered instance hands it on in a few walks of the list, not of the
/// whole cycle. Smooth weighted round robin walked its cycle (65 438
/// entries) twice: up to 65 663 membership tests for one hand-off. Now
/// every rule stays within 3 per instance (round robin's hand-off 402,
/// weighted response time's draw 600), and weighted round robin's members
/// keep their weights' shares over four cycles within 1 % (0.36 %
/// measured, as with the walk of the cycle; numbering the handed-on turns
/// by an estimate instead of the exact count gave 2.3 to 3.1 %).
#[test]
fn a_filtered_tier_without_a_domain_hands_turns_on_in_a_few_walks_of_the_list() {
    use std::cell::Cell;
    use tower_ribbon::rule::Tier;
    let n = 200usize;
    let weight = |p: usize| 1_000 + (p * 37 % 997) as u32;
    let eps = (0..n)
        .map(|p| {
            let i = Instance::new("s", "127.0.0.1", 1000 + p as u16).unwrap();
            Endpoint::new(i.with_weight(weight(p)))
        })
        .collect();
    let s = Arc::new(Snapshot::new("s", eps, 1));
    let filtered = |i: usize| i % 10 == 0;
    let calls = Cell::new(0usize);
    let available = |i: usize, _: &Endpoint| {
        calls.set(calls.get() + 1);
        !filtered(i)
    };
    let any = |_: usize, _: &Endpoint| true;
    let tiers: [Tier<'_>; 2] = [&available, &any];
    let mut link = None;
    let base = PickContext::new();
    let ctx = base.with_tiers(&mut link, &tiers);
    // Picks of `picker`, per instance, and the most membership tests of one.
    let run = |picker: &dyn tower_ribbon::rule::Picker, picks: usize| {
        let mut got = vec![0usize; n];
        let mut worst = 0;
        for _ in 0..picks {
            calls.set(0);
            let e = picker.pick(&ctx).unwrap();
            worst = worst.max(calls.get());
            got[usize::from(e.instance().port() - 1000)] += 1;
        }
        assert!(got.iter().enumerate().all(|(i, &c)| !filtered(i) || c == 0));
        (got, worst)
    };
    for (name, rule) in every_rule() {
        let (_, worst) = run(&*rule.build(&s), 2_000);
        assert!(
            worst <= 3 * n,
            "{name}: {worst} membership tests in one pick"
        );
    }
    let picker = WeightedRoundRobin::with_start(0).build(&s);
    assert!(format!("{picker:?}").contains("cycle_len: 65438"));
    let picks = 4 * 65_438;
    let (got, _) = run(&*picker, picks);
    let total: usize = (0..n)
        .filter(|&i| !filtered(i))
        .map(|i| weight(i) as usize)
        .sum();
    for i in (0..n).filter(|&i| !filtered(i)) {
        let want = picks as f64 * f64::from(weight(i)) / total as f64;
        let off = (got[i] as f64 - want).abs() / want;
        assert!(off <= 0.01, "instance {i} got {} of {want:.0}", got[i]);
    }
}
