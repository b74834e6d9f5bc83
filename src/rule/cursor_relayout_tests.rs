//! A tier laid out anew by each list (the cursor's preferred lanes).

use std::sync::Arc;

use http::HeaderMap;

use crate::instance::Endpoint;
use crate::rule::test_support::instance;
use crate::rule::{HintBased, PickContext, RoundRobin, Rule};
use crate::snapshot::Snapshot;

/// A hint group whose positions change with each list (instances
/// added, removed and moved around by a rolling deploy) is a new tier
/// to the cursor at each layout. Its lane started at the cursor's
/// start, so the first pick after each change went to the group's
/// first member: the two members of a group, `:9001` always listed
/// before `:9002`, over lists of 12 with every pair of positions (66
/// layouts), one hinted request per list, got 66 and 0; a new lane now
/// starts at a position mixed from its key.
#[test]
fn a_tier_laid_out_anew_by_each_list_does_not_restart_at_one_member() {
    let rule = HintBased::new(RoundRobin::with_start(0));
    let mut h = HeaderMap::new();
    h.insert("x-sc-lb-hint", "h".parse().unwrap());
    let ctx = PickContext::new().with_headers(&h);
    let (mut first, mut second, mut layouts) = (0u32, 0u32, 0);
    let n = 12u16;
    for a in 0..n {
        for b in a + 1..n {
            let endpoints = (0..n)
                .map(|i| {
                    let e = if i == a {
                        instance("127.0.0.1", 9001).with_metadata("hint", "h")
                    } else if i == b {
                        instance("127.0.0.1", 9002).with_metadata("hint", "h")
                    } else {
                        instance("127.0.0.1", 1000 + i)
                    };
                    Endpoint::new(e)
                })
                .collect();
            let picker = rule.build(&Arc::new(Snapshot::new("s", endpoints, 1)));
            match picker.pick(&ctx).map(|e| e.instance().port()) {
                Some(9001) => first += 1,
                Some(9002) => second += 1,
                other => panic!("picked {other:?} outside the group"),
            }
            layouts += 1;
        }
    }
    assert_eq!(layouts, 66);
    // Each layout's members differ (the others' ports move with the
    // group), so each list also starts at an offset drawn from the
    // rule's seeded generator (`Cursor::anchor`): 36 and 30, where the
    // key's mix alone gave 33 each.
    assert_eq!(first + second, 66);
    assert!(first.abs_diff(second) <= 12, "{first}, {second}");
}
