//! Preference wrappers nested in each other or around other wrappers:
//! each preferred population rotates on its own lane, and a preferred
//! instance an inner wrapper filters out (a hard in-flight cap) is not
//! picked. Both failed with a shortcut and a single preferred lane tried
//! first: a one-instance preferred tier returned its instance past an
//! inner availability filter's cap (10 of 10 picks), hinted requests
//! inside a subset all went to one member ({1002: 100}), and two hint
//! groups in turn piled on one member each ({1000: 100, 1003: 100}).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderMap;
use tower_ribbon::rule::{
    AllFilteredPolicy, AvailabilityFiltering, HintBased, PickContext, RoundRobin, Rule,
    StickySession, Subset,
};
use tower_ribbon::snapshot::Snapshot;
use tower_ribbon::{Endpoint, Instance};

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

fn hint() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-sc-lb-hint", "canary".parse().unwrap());
    h
}

/// HintBased(Subset(RR)): subset of 4 among 8, hint group = 2 subset
/// members; hinted and unhinted requests in turn. Both populations run
/// on the preferred lane (Subset marks every pick preferring), so the
/// split rotation of the 1144 fix is back.
#[test]
fn nested_hint_over_subset_hinted_requests_take_turns() {
    // Find the subset empirically.
    let plain = Subset::new(RoundRobin::with_start(0), "client-a").size(4);
    let p = plain.build(&list(8, &[]));
    let mut subset: Vec<u16> = (0..40)
        .map(|_| p.pick(&PickContext::new()).unwrap().instance().port() - 1000)
        .collect();
    subset.sort();
    subset.dedup();
    assert_eq!(subset.len(), 4, "{subset:?}");
    let canary = [subset[0], subset[1]];
    let rule = HintBased::new(Subset::new(RoundRobin::with_start(0), "client-a").size(4));
    let picker = rule.build(&list(8, &canary));
    let (h, free) = (hint(), HeaderMap::new());
    let (mut pins, mut frees) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..100 {
        let a = picker.pick(&PickContext::new().with_headers(&h)).unwrap();
        *pins.entry(a.instance().port()).or_insert(0usize) += 1;
        let b = picker
            .pick(&PickContext::new().with_headers(&free))
            .unwrap();
        *frees.entry(b.instance().port()).or_insert(0usize) += 1;
    }
    eprintln!("subset {subset:?} canary {canary:?} hinted {pins:?} free {frees:?}");
    let want: BTreeMap<u16, usize> = canary.iter().map(|&c| (1000 + c, 50)).collect();
    assert_eq!(pins, want, "hinted picks; free {frees:?}");
    let want_free: BTreeMap<u16, usize> = subset.iter().map(|&c| (1000 + c, 25)).collect();
    assert_eq!(frees, want_free);
}

/// Same with Subset(HintBased(RR)).
#[test]
fn nested_subset_over_hint_hinted_requests_take_turns() {
    let plain = Subset::new(RoundRobin::with_start(0), "client-a").size(4);
    let p = plain.build(&list(8, &[]));
    let mut subset: Vec<u16> = (0..40)
        .map(|_| p.pick(&PickContext::new()).unwrap().instance().port() - 1000)
        .collect();
    subset.sort();
    subset.dedup();
    let canary = [subset[0], subset[1]];
    let rule = Subset::new(HintBased::new(RoundRobin::with_start(0)), "client-a").size(4);
    let picker = rule.build(&list(8, &canary));
    let (h, free) = (hint(), HeaderMap::new());
    let (mut pins, mut frees) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..100 {
        let a = picker.pick(&PickContext::new().with_headers(&h)).unwrap();
        *pins.entry(a.instance().port()).or_insert(0usize) += 1;
        let b = picker
            .pick(&PickContext::new().with_headers(&free))
            .unwrap();
        *frees.entry(b.instance().port()).or_insert(0usize) += 1;
    }
    eprintln!("subset {subset:?} canary {canary:?} hinted {pins:?} free {frees:?}");
    let want: BTreeMap<u16, usize> = canary.iter().map(|&c| (1000 + c, 50)).collect();
    assert_eq!(pins, want, "hinted picks; free {frees:?}");
    let want_free: BTreeMap<u16, usize> = subset.iter().map(|&c| (1000 + c, 25)).collect();
    assert_eq!(frees, want_free);
}

/// StickySession(AvailabilityFiltering(RR, max_in_flight 1, Error)):
/// the sticky instance is at its in-flight limit, so the wrapped
/// availability filter rejects it and (policy Error: no fail-open tier)
/// the tiered pick goes to another instance. The one-member shortcut
/// returns the overloaded sticky instance without asking the filter.
#[test]
fn a_sticky_instance_an_inner_hard_cap_filters_is_not_picked() {
    let rule = StickySession::new(
        AvailabilityFiltering::new(RoundRobin::with_start(0))
            .max_in_flight(1)
            .when_all_filtered(AllFilteredPolicy::Error),
    );
    let s = list(3, &[]);
    let picker = rule.build(&s);
    let _busy = s.endpoints()[0].stats().start();
    assert_eq!(s.endpoints()[0].stats().in_flight(), 1);
    let mut h = HeaderMap::new();
    h.insert(
        http::header::COOKIE,
        "sc-lb-instance-id=127.0.0.1:1000".parse().unwrap(),
    );
    let mut counts = BTreeMap::new();
    for _ in 0..10 {
        let e = picker.pick(&PickContext::new().with_headers(&h)).unwrap();
        *counts.entry(e.instance().port()).or_insert(0usize) += 1;
    }
    eprintln!("sticky at limit: {counts:?}");
    assert_eq!(counts.get(&1000), None, "{counts:?}");
}

/// Same with a one-instance hint group.
#[test]
fn a_one_instance_hint_group_an_inner_hard_cap_filters_is_not_picked() {
    let rule = HintBased::new(
        AvailabilityFiltering::new(RoundRobin::with_start(0))
            .max_in_flight(1)
            .when_all_filtered(AllFilteredPolicy::Error),
    );
    let s = list(3, &[0]);
    let picker = rule.build(&s);
    let _busy = s.endpoints()[0].stats().start();
    let h = hint();
    let mut counts = BTreeMap::new();
    for _ in 0..10 {
        let e = picker.pick(&PickContext::new().with_headers(&h)).unwrap();
        *counts.entry(e.instance().port()).or_insert(0usize) += 1;
    }
    eprintln!("hint at limit: {counts:?}");
    assert_eq!(counts.get(&1000), None, "{counts:?}");
}

/// Control: the same setup with a two-member hint group, both at their
/// in-flight limit: the tiered pick respects the filter (no pick to
/// either); only the one-member shortcut ignores it.
#[test]
fn a_two_instance_hint_group_at_an_inner_hard_cap_is_not_picked() {
    let rule = HintBased::new(
        AvailabilityFiltering::new(RoundRobin::with_start(0))
            .max_in_flight(1)
            .when_all_filtered(AllFilteredPolicy::Error),
    );
    let s = list(4, &[0, 1]);
    let picker = rule.build(&s);
    let _b0 = s.endpoints()[0].stats().start();
    let _b1 = s.endpoints()[1].stats().start();
    let h = hint();
    let mut counts = BTreeMap::new();
    for _ in 0..10 {
        let e = picker.pick(&PickContext::new().with_headers(&h)).unwrap();
        *counts.entry(e.instance().port()).or_insert(0usize) += 1;
    }
    eprintln!("two-member group at limit: {counts:?}");
    assert_eq!(counts.get(&1000), None);
    assert_eq!(counts.get(&1001), None);
}

/// Two hint groups of two ("a" = 1000,1001; "b" = 1002,1003), requests
/// hinted a and b in turn: both populations share the one preferred lane,
/// so every a-request goes to one member of a and every b-request to one
/// member of b.
#[test]
fn two_hint_groups_in_turn_each_take_turns() {
    let eps = (0..4u16)
        .map(|p| {
            let g = if p < 2 { "a" } else { "b" };
            Endpoint::new(
                Instance::new("s", "127.0.0.1", 1000 + p)
                    .unwrap()
                    .with_metadata("hint", g),
            )
        })
        .collect();
    let s = Arc::new(Snapshot::new("s", eps, 1));
    let picker = HintBased::new(RoundRobin::with_start(0)).build(&s);
    let mut ha = HeaderMap::new();
    ha.insert("x-sc-lb-hint", "a".parse().unwrap());
    let mut hb = HeaderMap::new();
    hb.insert("x-sc-lb-hint", "b".parse().unwrap());
    let mut counts = BTreeMap::new();
    for _ in 0..100 {
        for h in [&ha, &hb] {
            let e = picker.pick(&PickContext::new().with_headers(h)).unwrap();
            *counts.entry(e.instance().port()).or_insert(0usize) += 1;
        }
    }
    eprintln!("two groups in turn: {counts:?}");
    assert_eq!(
        counts,
        BTreeMap::from([(1000, 50), (1001, 50), (1002, 50), (1003, 50)])
    );
}
