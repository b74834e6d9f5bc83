//! Many preferred tiers in turn: each keeps a rotation of its own while
//! they fit a rotating rule's lane table, and none piles up beyond it.
//!
//! A tier's key claims one of the cursor's preferred lanes (`rule::cursor`).
//! With 127 lanes, a key finding none of 16 slots free took its home slot
//! over and went on from the count the evicted tier had left there. Beyond
//! about 100 live tiers they evicted one another in turn and each continued
//! the other's count, so tiers of two picked in turn got every other step:
//! with 120 hint groups of two in turn, one group's 200 requests split
//! 198 to 2.

use std::sync::Arc;

use http::HeaderMap;
use tower_ribbon::rule::{HintBased, PickContext, RoundRobin, Rule, WeightedRoundRobin};
use tower_ribbon::snapshot::Snapshot;
use tower_ribbon::{Endpoint, Instance};

/// `groups` hint groups of two: instances `2g` and `2g + 1` (ports 1000..)
/// carry `hint=g{g}`. Each group gets one hinted pick per round for
/// `rounds` rounds, groups in turn; the picks of each group per member.
fn in_turn(groups: usize, rounds: usize) -> Vec<[usize; 2]> {
    let eps = (0..2 * groups)
        .map(|p| {
            let i = Instance::new("s", "127.0.0.1", 1000 + p as u16).unwrap();
            Endpoint::new(i.with_metadata("hint", format!("g{}", p / 2)))
        })
        .collect();
    let s = Arc::new(Snapshot::new("s", eps, 1));
    let picker = HintBased::new(RoundRobin::with_start(0)).build(&s);
    let headers: Vec<HeaderMap> = (0..groups)
        .map(|g| {
            let mut h = HeaderMap::new();
            h.insert("x-sc-lb-hint", format!("g{g}").parse().unwrap());
            h
        })
        .collect();
    let mut counts = vec![[0usize; 2]; groups];
    for _ in 0..rounds {
        for (g, h) in headers.iter().enumerate() {
            let e = picker.pick(&PickContext::new().with_headers(h)).unwrap();
            let i = usize::from(e.instance().port() - 1000);
            assert_eq!(i / 2, g, "a hinted pick left its group");
            counts[g][i % 2] += 1;
        }
    }
    counts
}

/// The worst split of any group: (group, its counts).
fn worst(counts: &[[usize; 2]]) -> (usize, [usize; 2]) {
    counts
        .iter()
        .copied()
        .enumerate()
        .max_by_key(|(_, c)| c[0].abs_diff(c[1]))
        .unwrap()
}

#[test]
fn up_to_three_hundred_hint_groups_in_turn_each_take_exact_turns() {
    for groups in [100, 120, 200, 300] {
        let counts = in_turn(groups, 200);
        assert_eq!(worst(&counts).1, [100, 100], "{groups} groups");
    }
}

/// Beyond the table a tier may lose its lane at any pick; the lane it takes
/// over starts from a position mixed from its key, not the count another
/// tier left, so its picks spread like random ones (each group's 200 picks
/// within 70..=130 of a member; a pile-up gives 200 to 0 or near).
#[test]
fn beyond_the_lane_table_no_group_piles_on_one_member() {
    let counts = in_turn(1000, 200);
    let (g, c) = worst(&counts);
    assert!(c[0].abs_diff(c[1]) <= 60, "group {g}: {c:?}");
    let total: usize = counts.iter().map(|c| c[0]).sum();
    // The first members' share over all groups: half, within 1 %.
    assert!(total.abs_diff(100_000) <= 1_000, "first members: {total}");
}

/// Four threads pick at once, each group in turn from each thread (120
/// groups of two, hinted, over round robin and weighted round robin): no
/// pick leaves its group, and every group's 400 picks split 200 to 200, as
/// each lane's steps are taken atomically and no lane is shared.
#[test]
fn threads_picking_at_once_keep_every_group_split_exactly() {
    let groups = 120;
    let eps: Vec<Endpoint> = (0..2 * groups)
        .map(|p| {
            let i = Instance::new("s", "127.0.0.1", 1000 + p as u16).unwrap();
            Endpoint::new(i.with_metadata("hint", format!("g{}", p / 2)))
        })
        .collect();
    let s = Arc::new(Snapshot::new("s", eps, 1));
    let headers: Vec<HeaderMap> = (0..groups)
        .map(|g| {
            let mut h = HeaderMap::new();
            h.insert("x-sc-lb-hint", format!("g{g}").parse().unwrap());
            h
        })
        .collect();
    let pickers = [
        HintBased::new(RoundRobin::with_start(0)).build(&s),
        HintBased::new(WeightedRoundRobin::with_start(0)).build(&s),
    ];
    for picker in &pickers {
        let counts: Vec<[usize; 2]> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let (picker, headers) = (picker, &headers);
                    scope.spawn(move || {
                        let mut counts = vec![[0usize; 2]; groups];
                        for _ in 0..100 {
                            for k in 0..groups {
                                let g = (k + 37 * t) % groups;
                                let ctx = PickContext::new().with_headers(&headers[g]);
                                let e = picker.pick(&ctx).unwrap();
                                let i = usize::from(e.instance().port() - 1000);
                                assert_eq!(i / 2, g, "a hinted pick left its group");
                                counts[g][i % 2] += 1;
                            }
                        }
                        counts
                    })
                })
                .collect();
            let mut total = vec![[0usize; 2]; groups];
            for h in handles {
                for (t, c) in total.iter_mut().zip(h.join().unwrap()) {
                    t[0] += c[0];
                    t[1] += c[1];
                }
            }
            total
        });
        assert_eq!(worst(&counts).1, [200, 200]);
    }
}

/// Sticky requests to each of 400 instances (a tier of one each) in turn
/// with hinted requests to 100 groups of two: a tier of one picks its
/// instance whatever the step, so it claims no lane, and the 100 hint
/// groups (well inside the table) keep exact turns. Before, the 400 sticky
/// tiers claimed lanes too, 500 tiers shared 509 lanes with evictions, and
/// the groups' turns spread like random ones. Over round robin, weighted
/// round robin and best available (ties rotate).
#[test]
fn sticky_tiers_of_one_claim_no_lane_and_leave_hint_groups_exact() {
    use tower_ribbon::rule::{BestAvailable, StickySession};
    let (groups, sticky) = (100, 400);
    let eps: Vec<Endpoint> = (0..sticky)
        .map(|p| {
            let i = Instance::new("s", "127.0.0.1", 1000 + p as u16).unwrap();
            // Groups of two among the first 200 instances.
            let hint = if p < 2 * groups {
                format!("g{}", p / 2)
            } else {
                "none".into()
            };
            Endpoint::new(i.with_metadata("hint", hint))
        })
        .collect();
    let s = Arc::new(Snapshot::new("s", eps, 1));
    let hinted: Vec<HeaderMap> = (0..groups)
        .map(|g| {
            let mut h = HeaderMap::new();
            h.insert("x-sc-lb-hint", format!("g{g}").parse().unwrap());
            h
        })
        .collect();
    let cookies: Vec<HeaderMap> = (0..sticky)
        .map(|p| {
            let mut h = HeaderMap::new();
            let cookie = format!("sc-lb-instance-id=127.0.0.1:{}", 1000 + p);
            h.insert(http::header::COOKIE, cookie.parse().unwrap());
            h
        })
        .collect();
    let rules: [(&str, Box<dyn Rule>); 3] = [
        (
            "round robin",
            Box::new(StickySession::new(HintBased::new(RoundRobin::with_start(
                0,
            )))),
        ),
        (
            "weighted round robin",
            Box::new(StickySession::new(HintBased::new(
                WeightedRoundRobin::with_start(0),
            ))),
        ),
        (
            "best available",
            Box::new(StickySession::new(HintBased::new(BestAvailable::new()))),
        ),
    ];
    for (name, rule) in rules {
        let picker = rule.build(&s);
        let mut counts = vec![[0usize; 2]; groups];
        for round in 0..200 {
            for (p, h) in cookies.iter().enumerate() {
                let e = picker.pick(&PickContext::new().with_headers(h)).unwrap();
                assert_eq!(usize::from(e.instance().port() - 1000), p, "{name}: sticky");
                // A hinted pick after every fourth sticky one.
                if p % 4 == 3 {
                    let g = (p / 4 + round) % groups;
                    let e = picker
                        .pick(&PickContext::new().with_headers(&hinted[g]))
                        .unwrap();
                    let i = usize::from(e.instance().port() - 1000);
                    assert_eq!(i / 2, g, "{name}: a hinted pick left its group");
                    counts[g][i % 2] += 1;
                }
            }
        }
        assert_eq!(worst(&counts).1, [100, 100], "{name}");
    }
}
