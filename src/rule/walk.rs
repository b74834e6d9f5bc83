//! The walks the pickers share over one endpoint list: rotations, the
//! `k`-th eligible endpoint, and the tiered step that lets a wrapped
//! rotation advance exactly once per pick.
//!
//! Everything here runs on the pick path: no lock, and every walk is
//! bounded by a small multiple of the list length. The one allocation is
//! [`UnhealthyMemo`]'s, once per list and health epoch (and the list's
//! index by identity, once per list, at its first retry).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

use super::PickContext;
use super::context::Domain;
use crate::instance::Endpoint;
use crate::snapshot::Snapshot;

/// The unhealthy positions of one list as of one health epoch (see
/// [`PickContext::with_health_epoch`]), kept by a picker so that the
/// `k`-th eligible endpoint under the health filter costs O(log u) for
/// `u` unhealthy instances instead of two walks of the list: with one
/// instance ejected among 100 000, round robin took 2 ms per pick, every
/// pick, until the ejection ended. A retry's exclusions are skipped by
/// their positions in the list's index (`Snapshot::position`): two walks
/// per pick before, 17 µs over 10 000 instances, 350 µs under the health
/// filter.
#[derive(Default)]
pub(crate) struct UnhealthyMemo {
    memo: ArcSwapOption<Memo>,
}

struct Memo {
    epoch: u64,
    /// Ascending positions of the endpoints unhealthy when it was walked.
    at: Box<[u32]>,
}

impl UnhealthyMemo {
    /// [`nth_eligible`], from the memo when the pick has a health epoch
    /// (or no health filter) and at most [`SKIPPED`] exclusions: the
    /// `k`-th of the positions outside the memo and the excluded ones
    /// (found in the snapshot's index by identity), if that endpoint is
    /// eligible now. An endpoint that turned unhealthy since the walk (its
    /// change starts a new epoch at the next pick) or anything else falls
    /// back to the walks, so the answer is always [`nth_eligible`]'s while
    /// the memo holds.
    #[inline]
    pub(crate) fn nth_eligible<'s>(
        &self,
        snapshot: &'s Snapshot,
        ctx: &PickContext<'_>,
        k: usize,
    ) -> Option<&'s Endpoint> {
        let endpoints = snapshot.endpoints();
        let epoch = ctx.health_epoch();
        if !ctx.all_eligible()
            && (epoch != 0 || !ctx.health_filter())
            && ctx.excluded().len() <= SKIPPED
        {
            if let Some(e) = self.nth_outside(snapshot, ctx, epoch, k) {
                return Some(e);
            }
        }
        nth_eligible(endpoints, ctx, k)
    }

    /// The unhealthy positions of `epoch`, walked once per epoch.
    fn walk_memo(&self, endpoints: &[Endpoint], ctx: &PickContext<'_>, epoch: u64) -> Arc<Memo> {
        count_walk();
        // The health of the epoch, not of this pick's clock: a pick that
        // read the time before an ejection ended, then took the epoch of
        // the recount that counted the instance back, kept it out for the
        // rest of the epoch. The clock now is at least the recount's.
        let now = ctx.now().max(Instant::now());
        let at = endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.stats().is_healthy_at(now))
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect();
        let fresh = Arc::new(Memo { epoch, at });
        self.memo.store(Some(Arc::clone(&fresh)));
        count_memo_ref();
        fresh
    }

    fn nth_outside<'s>(
        &self,
        snapshot: &'s Snapshot,
        ctx: &PickContext<'_>,
        epoch: u64,
        k: usize,
    ) -> Option<&'s Endpoint> {
        let endpoints = snapshot.endpoints();
        // The kept memo is read through a guard, without a reference
        // count: a count up and down per pick (`load_full`) made every
        // core's picks write the memo's count, which cost more than the
        // two walks it replaced on a short list (about 150 ns per pick
        // from two threads over 3 instances).
        let held = ctx.health_filter().then(|| self.memo.load());
        let fresh;
        let at: &[u32] = match held.as_ref().map(|g| (**g).as_ref()) {
            None => &[],
            Some(Some(m)) if m.epoch == epoch => &m.at,
            Some(_) => {
                fresh = self.walk_memo(endpoints, ctx, epoch);
                &fresh.at
            }
        };
        // The excluded positions outside the memo, as numbers among the
        // positions outside it (`b` minus the memo's positions before it),
        // ascending and once each.
        let mut skipped = [0usize; SKIPPED];
        let mut len = 0;
        for e in ctx.excluded() {
            let Some(b) = snapshot.position(e)? else {
                continue;
            };
            let before = at.partition_point(|&a| (a as usize) < b);
            if at.get(before).is_some_and(|&a| a as usize == b) {
                continue;
            }
            let t = b - before;
            if !skipped[..len].contains(&t) {
                *skipped.get_mut(len)? = t;
                len += 1;
            }
        }
        let skipped = &mut skipped[..len];
        skipped.sort_unstable();
        let m = endpoints
            .len()
            .checked_sub(at.len() + len)
            .filter(|&m| m > 0)?;
        // The `r`-th number outside `skipped`, then that number's position
        // outside the memo.
        let mut r = k % m;
        for &t in &*skipped {
            if t <= r {
                r += 1;
            } else {
                break;
            }
        }
        // `at[j] - j` healthy positions lie before the j-th unhealthy one
        // (non-decreasing in j): the answer is `r` plus the unhealthy
        // positions with at most `r` healthy ones before them.
        let (mut lo, mut hi) = (0, at.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if (at[mid] as usize).saturating_sub(mid) <= r {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        endpoints.get(r + lo).filter(|e| ctx.is_eligible(e))
    }
}

/// Most exclusions (a retry's tried instances) [`UnhealthyMemo`] skips by
/// position; more are walked.
const SKIPPED: usize = 16;

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

#[cfg(test)]
thread_local! {
    /// Walks of whole lists this thread made ([`members`] and memo builds).
    pub(crate) static WALKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
thread_local! {
    /// Owned references this thread's picks took to state a picker keeps
    /// (an [`UnhealthyMemo`]'s memo, a domain's prefix sums; tests only).
    pub(crate) static MEMO_REFS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts one owned reference a pick took to kept state (tests only).
#[inline]
pub(crate) fn count_memo_ref() {
    #[cfg(test)]
    MEMO_REFS.with(|w| w.set(w.get() + 1));
}

/// Counts one walk of a whole list (tests only).
#[inline]
pub(crate) fn count_walk() {
    #[cfg(test)]
    WALKS.with(|w| w.set(w.get() + 1));
}

/// How many endpoints `member` accepts.
#[inline]
pub(crate) fn members(endpoints: &[Endpoint], member: &dyn Fn(usize, &Endpoint) -> bool) -> usize {
    count_walk();
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
/// costs O(1); a hand-off walks the domain up to twice per tier. Over more
/// than 512 positions a hand-off probes random positions instead (about
/// `L / m` tests; see `probe_hand_off`), so the shares are even on
/// average rather than within 2.
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
    if l > EXACT_HAND_OFF {
        if let Some(e) = probe_hand_off(endpoints, member, &at, l, p0, k) {
            return Some(e);
        }
    }
    count_walk();
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

/// Domains (or lists) of up to this many positions hand a turn on
/// exactly, by counting their members; longer ones probe.
pub(crate) const EXACT_HAND_OFF: usize = 512;

/// Probes a long hand-off makes before it counts.
const HAND_OFF_PROBES: u64 = 64;

/// The hand-off of [`step_in`] over more than [`EXACT_HAND_OFF`]
/// positions: positions drawn pseudo-randomly from the round (`k / l`),
/// the candidate's position and the probe number, up to 64, until one
/// holds a member. Each probe is uniform over the positions, so the first
/// member found is uniform over the members: a filtered position's turns
/// spread evenly over them on average (about `l / m` probes for `m`
/// members) rather than in exact turns; if all 64 miss, the exact count.
/// The exact hand-off walked the domain twice: with a third of 10 000
/// instances tripped, availability filtering over round robin averaged
/// 59 µs per pick (envoy#12284 asks picking to stay O(1) with many
/// unhealthy endpoints). A stride from the candidate instead of random
/// probes piled the turns onto the members after each run of filtered
/// positions a stride walks (824 picks for one member where 300 were due).
fn probe_hand_off<'s>(
    endpoints: &'s [Endpoint],
    member: &dyn Fn(usize, &Endpoint) -> bool,
    at: &dyn Fn(usize) -> usize,
    l: usize,
    p0: usize,
    k: usize,
) -> Option<&'s Endpoint> {
    let seed = ((k / l) as u64).rotate_left(29) ^ p0 as u64;
    probes(seed, l as u64).find_map(|pos| {
        let i = at(pos as usize);
        endpoints.get(i).filter(|e| member(i, e))
    })
}

/// The positions a long hand-off probes: up to 64 pseudo-random numbers
/// below `bound` (each uniform), fixed by `seed`.
pub(crate) fn probes(seed: u64, bound: u64) -> impl Iterator<Item = u64> {
    let seed = crate::hash::mix64(seed);
    (0..HAND_OFF_PROBES).map(move |j| {
        let r = crate::hash::mix64(seed.wrapping_add(j.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        ((u128::from(r) * u128::from(bound)) >> 64) as u64
    })
}

#[cfg(test)]
mod tests;
