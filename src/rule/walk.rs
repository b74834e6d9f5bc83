//! The walks the pickers share over one endpoint list: rotations, the
//! `k`-th eligible endpoint, and the tiered step that lets a wrapped
//! rotation advance exactly once per pick.
//!
//! Everything here runs on the pick path: no lock, no allocation, and every
//! walk is bounded by a small multiple of the list length.

use super::PickContext;
use super::context::Domain;
use crate::instance::Endpoint;

/// The `k`-th (0-based, modulo their count) endpoint that `member` accepts,
/// walking the list at most twice. `None` if none is accepted.
#[inline]
pub(crate) fn nth_member<'s>(
    endpoints: &'s [Endpoint],
    member: &dyn Fn(usize, &Endpoint) -> bool,
    k: usize,
) -> Option<&'s Endpoint> {
    let count = members(endpoints, member);
    if count == 0 {
        return None;
    }
    endpoints
        .iter()
        .enumerate()
        .filter(|(i, e)| member(*i, e))
        .nth(k % count)
        .map(|(_, e)| e)
}

/// How many endpoints `member` accepts.
#[inline]
pub(crate) fn members(endpoints: &[Endpoint], member: &dyn Fn(usize, &Endpoint) -> bool) -> usize {
    endpoints
        .iter()
        .enumerate()
        .filter(|(i, e)| member(*i, e))
        .count()
}

/// The `k`-th (modulo the count) eligible endpoint, ignoring tiers: exact
/// round robin over the eligible endpoints, so `k` consecutive steps give
/// each of `m` eligible endpoints ⌊k/m⌋ or ⌈k/m⌉ picks.
#[inline]
pub(crate) fn nth_eligible<'s>(
    endpoints: &'s [Endpoint],
    ctx: &PickContext<'_>,
    k: usize,
) -> Option<&'s Endpoint> {
    if ctx.all_eligible() {
        return match endpoints.len() {
            0 => None,
            n => endpoints.get(k % n),
        };
    }
    nth_member(endpoints, &|_, e| ctx.is_eligible(e), k)
}

/// Step `k` of a rotation over `endpoints` under `ctx`: the pick of a
/// round-robin (or random, with a random `k`) picker.
///
/// Without tiers: [`nth_eligible`]. With tiers (a wrapping picker's
/// filters), from this one step, over the `L` positions of the tier's
/// [`Domain`](super::context::Domain) (its possible members; the whole list
/// when it has none): the candidate at position `k mod L` if it is in the
/// first non-empty tier; otherwise the candidate's turn is handed on, and
/// the hand-offs of successive rounds (`k / L`) walk the tier's `m`
/// members in turn: member number `(round · (L − m) + r) mod m`, where `r`
/// counts the non-members at positions before the candidate. Over any `L`
/// successive steps each member gets its own turn plus an even share of
/// the others', so `N · m` steps give each member `N` picks up to about 2,
/// and no member inherits a filtered neighbour's share. A member-candidate
/// costs O(1); a hand-off walks the domain up to twice per tier.
pub(crate) fn rotate<'s>(
    endpoints: &'s [Endpoint],
    ctx: &PickContext<'_>,
    k: usize,
) -> Option<&'s Endpoint> {
    if !ctx.has_tiers() {
        return nth_eligible(endpoints, ctx, k);
    }
    let n = endpoints.len();
    let at = |domain: Domain<'_>, pos: usize| match domain {
        Some(d) => d[pos] as usize,
        None => pos,
    };
    let len = |domain: Domain<'_>| domain.map_or(n, <[u32]>::len);
    let first = ctx.first_domain();
    if let Some(pos) = k.checked_rem(len(first)) {
        let i = at(first, pos);
        if let Some(e) = endpoints.get(i).filter(|e| ctx.in_first_tier(i, e)) {
            return Some(e);
        }
    }
    ctx.find_tier_in(&mut |member, domain| step_in(endpoints, member, domain, k))
}

/// Step `k` of a rotation over the positions of `domain` (indices into
/// `endpoints`, in any order, repeats allowed; `None`: every index once)
/// that takes `member`s only: the candidate at position `k mod L` if it is
/// a member (O(1)), else the hand-off of [`rotate`] (member number
/// `(round · (L − m) + r) mod m` over the `m` member positions), so the
/// turns of non-members spread over the members in proportion to their
/// positions instead of going to the next member. `None` when no position
/// holds a member.
pub(crate) fn step_in<'s>(
    endpoints: &'s [Endpoint],
    member: &dyn Fn(usize, &Endpoint) -> bool,
    domain: Domain<'_>,
    k: usize,
) -> Option<&'s Endpoint> {
    let at = |pos: usize| match domain {
        Some(d) => d[pos] as usize,
        None => pos,
    };
    let l = domain.map_or(endpoints.len(), <[u32]>::len);
    let p0 = k.checked_rem(l)?;
    // A member candidate needs no count: O(1) (a retry whose preferred
    // tier is excluded must not walk a long list on the fallback tier).
    let i0 = at(p0);
    let candidate = endpoints.get(i0)?;
    if member(i0, candidate) {
        return Some(candidate);
    }
    let (mut m, mut before) = (0usize, 0usize);
    for pos in 0..l {
        let i = at(pos);
        if endpoints.get(i).is_some_and(|e| member(i, e)) {
            m += 1;
        } else if pos < p0 {
            before += 1;
        }
    }
    if m == 0 {
        return None;
    }
    let turn = (k / l).wrapping_mul(l - m).wrapping_add(before) % m;
    (0..l)
        .map(at)
        .filter(|&i| endpoints.get(i).is_some_and(|e| member(i, e)))
        .nth(turn)
        .and_then(|i| endpoints.get(i))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::rule::Tier;
    use crate::rule::test_support::endpoints;

    #[test]
    fn a_member_candidate_of_a_fallback_tier_costs_no_walk() {
        // A sticky-like first tier of one excluded endpoint, then all: the
        // fallback's candidate is eligible, so no tier is walked.
        let eps = endpoints(1000);
        let excluded = [eps[5].clone()];
        let calls = Cell::new(0usize);
        let only = |i: usize, _: &Endpoint| i == 5;
        let any = |_: usize, _: &Endpoint| {
            calls.set(calls.get() + 1);
            true
        };
        let tiers: [Tier<'_>; 2] = [&only, &any];
        let domain = [5u32];
        let domains = [Some(&domain[..]), None];
        let mut link = None;
        let base = PickContext::new().with_excluded(&excluded);
        let ctx = base.with_tiers_in(&mut link, &tiers, &domains);
        for k in [0usize, 7, 999, 1006] {
            calls.set(0);
            let e = rotate(&eps, &ctx, k).unwrap();
            assert_eq!(usize::from(e.instance().port() - 1000), k % 1000);
            assert_eq!(calls.get(), 1, "k {k}");
        }
    }

    #[test]
    fn hand_offs_spread_evenly() {
        let eps = endpoints(7);
        for filtered in [
            [1usize, 2, 3].as_slice(),
            &[0, 6],
            &[5],
            &[0, 1, 2, 3, 4, 5],
        ] {
            let f = |i: usize, _: &Endpoint| !filtered.contains(&i);
            let tiers: [Tier<'_>; 1] = [&f];
            let mut link = None;
            let base = PickContext::new();
            let ctx = base.with_tiers(&mut link, &tiers);
            let m = 7 - filtered.len();
            let mut counts = [0usize; 7];
            for k in 0..m * 7 * 30 {
                let e = rotate(&eps, &ctx, k).unwrap();
                counts[usize::from(e.instance().port() - 1000)] += 1;
            }
            for (i, c) in counts.iter().enumerate() {
                let want = if filtered.contains(&i) { 0 } else { 7 * 30 };
                assert!(c.abs_diff(want) <= 2, "{filtered:?}: {counts:?}");
            }
        }
    }
}
