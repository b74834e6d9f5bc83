//! What the preference wrappers ([`HintBased`](super::HintBased),
//! [`StickySession`](super::StickySession),
//! [`SameInstancePreference`](super::SameInstancePreference),
//! [`Subset`](super::Subset)) share: a pick from the wrapped picker that
//! prefers one set of endpoints and falls back to all, and the index of a
//! picked endpoint in its list.

use super::context::Domain;
use super::{PickContext, Picker, Tier};
use crate::instance::Endpoint;

/// Picks from `inner` with two tiers: the healthy endpoints `member`
/// accepts (all of them inside `domain`, ascending indices, when given),
/// else any eligible endpoint. The wrapped picker steps its own rotation
/// once.
///
/// A preferred endpoint that is unhealthy at the pick time (breaker open
/// or half-open with its probe out, ejected, failing active checks) is not
/// preferred: the request goes wherever the wrapped rule sends one without
/// a preference, as Spring Cloud LoadBalancer filters by health before
/// sticky, hint and same-instance choices. Without this the preference was
/// the major tier, and a wrapped rule's fail-open tier (availability
/// filtering, zone avoidance) let a tripped preferred instance take every
/// such request while healthy ones existed, in panic mode, where the
/// service-wide health filter is off.
///
/// A rotating wrapped rule steps a lane of its own for these picks, chosen
/// by the preferred tier (`rule::cursor`), so they do not split the
/// rotation of the requests without a preference, nor of other preferred
/// tiers.
#[inline]
pub(crate) fn pick_preferring<'p>(
    inner: &'p dyn Picker,
    ctx: &PickContext<'_>,
    member: &dyn Fn(usize, &Endpoint) -> bool,
    domain: Domain<'_>,
) -> Option<&'p Endpoint> {
    let now = ctx.now();
    let preferred = |i: usize, e: &Endpoint| member(i, e) && e.stats().is_healthy_at(now);
    let any = |_: usize, _: &Endpoint| true;
    let tiers: [Tier<'_>; 2] = [&preferred, &any];
    let domains = [domain, None];
    let mut link = None;
    let key = domain.map_or(1, lane_key);
    inner.pick(
        &ctx.with_tiers_in(&mut link, &tiers, &domains)
            .preferring(key),
    )
}

/// A key for the preferred tier `domain` (its size and first, middle and
/// last positions: O(1), and different for different groups of one list
/// but for rare collisions), which picks the rotation lane of a wrapped
/// rule (`rule::cursor`).
fn lane_key(domain: &[u32]) -> u64 {
    let at = |i: usize| domain.get(i).map_or(u64::MAX, |&v| u64::from(v));
    let n = domain.len();
    [n as u64, at(0), at(n / 2), at(n.wrapping_sub(1))]
        .into_iter()
        .fold(0x9e37_79b9_7f4a_7c15, |h, v| {
            (h ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(29)
        })
}

/// The index of `e` in `endpoints` when `e` is an element of that slice
/// (a picker returns references into its snapshot's list), found from the
/// addresses in O(1) without dereferencing anything; `None` for an
/// endpoint held elsewhere.
#[inline]
pub(crate) fn index_of(endpoints: &[Endpoint], e: &Endpoint) -> Option<usize> {
    let size = std::mem::size_of::<Endpoint>();
    let offset = (e as *const Endpoint as usize).checked_sub(endpoints.as_ptr() as usize)?;
    let i = offset / size.max(1);
    (offset % size.max(1) == 0 && i < endpoints.len() && std::ptr::eq(&endpoints[i], e))
        .then_some(i)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::super::test_support::{check_changing_lists, endpoints, list_steps, masked};
    use super::super::{
        HintBased, Rule, SameInstancePreference, SlowStart, SlowStartConfig, StickySession, Subset,
    };
    use super::*;
    use crate::rule::RoundRobin;

    proptest! {
        /// Every policy wrapper keeps the rules' changing-lists property:
        /// picks are members of their list, never excluded, `None` only
        /// when nothing is eligible, from new and old pickers alike.
        #[test]
        fn wrappers_keep_picks_members_and_eligible(
            lists in list_steps(12),
            excluded_mask in prop::collection::vec(any::<bool>(), 12),
            start in any::<usize>(),
        ) {
            let pool = endpoints(12);
            let excluded = masked(&pool, &excluded_mask);
            let rr = || RoundRobin::with_start(start);
            let rules: [Box<dyn Rule>; 5] = [
                Box::new(HintBased::new(rr()).hint("x")),
                Box::new(StickySession::new(rr())),
                Box::new(SameInstancePreference::new(rr())),
                Box::new(Subset::new(rr(), "c").size(3)),
                Box::new(SlowStart::new(rr(), SlowStartConfig::new(Duration::from_secs(9)))),
            ];
            for rule in &rules {
                check_changing_lists(&**rule, &pool, &lists, &excluded, &[None], 5)?;
            }
        }
    }

    #[test]
    fn a_retry_away_from_the_preferred_instances_spreads_evenly() {
        // The sticky instance, the hint group and the subset all excluded
        // (a retry): the others share the picks exactly, none piles up.
        let list: Vec<Endpoint> = endpoints(5)
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let hint = if i == 1 || i == 2 { "x" } else { "y" };
                Endpoint::new(e.instance().clone().with_metadata("hint", hint))
            })
            .collect();
        let s = std::sync::Arc::new(crate::snapshot::Snapshot::new("s", list, 1));
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "sc-lb-instance-id=127.0.0.1:1002".parse().unwrap(),
        );
        let subset = super::super::subset::subset_indices("c", 5, 2);
        let cases: [(Box<dyn Rule>, Vec<usize>); 3] = [
            (
                Box::new(StickySession::new(RoundRobin::with_start(0))),
                vec![2],
            ),
            (
                Box::new(HintBased::new(RoundRobin::with_start(0)).hint("x")),
                vec![1, 2],
            ),
            (
                Box::new(Subset::new(RoundRobin::with_start(0), "c").size(2)),
                subset,
            ),
        ];
        for (rule, excluded) in cases {
            let p = rule.build(&s);
            let ex: Vec<Endpoint> = excluded.iter().map(|&i| s.endpoints()[i].clone()).collect();
            let ctx = PickContext::new().with_headers(&h).with_excluded(&ex);
            let others = 5 - excluded.len();
            let mut counts = [0usize; 5];
            for _ in 0..others * 100 {
                counts[super::super::test_support::index(p.pick(&ctx).unwrap())] += 1;
            }
            for (i, c) in counts.iter().enumerate() {
                let want = if excluded.contains(&i) { 0 } else { 100 };
                assert!(c.abs_diff(want) <= 1, "{}: {counts:?}", rule.name());
            }
        }
    }

    #[test]
    fn index_of_finds_members_only() {
        let list = endpoints(4);
        for (i, e) in list.iter().enumerate() {
            assert_eq!(index_of(&list, e), Some(i));
        }
        let other = endpoints(1);
        assert_eq!(index_of(&list, &other[0]), None);
        assert_eq!(index_of(&[], &other[0]), None);
    }
}
