//! Weighted round robin inside a tier with a [`Domain`](crate::rule::Domain)
//! of many positions (a zone, a subset, a hint group): the rotation of
//! `weighted_in`, with the domain's prefix sums of weights kept per
//! domain, so a pick whose candidate is a member costs a binary search
//! instead of two walks of the domain.
//!
//! Step `k` over a domain of total weight `W` targets `t = (k mod W)·s mod
//! W` (`s` = `stride(W)`, coprime to `W`) and its candidate is the position
//! whose share of the prefix sums holds `t`. A member candidate takes its
//! own turn: over `W` steps each member gets exactly its weight, as
//! before. A filtered candidate's turn is handed on, numbered in rotation
//! order across rounds, `j = round·F + (filtered targets before this step
//! in the round)` (`F` the filtered weight), and `weighted_at` gives number
//! `j` to the members by the same rotation over their weight `M`: over any
//! `M` successive hand-offs each member gets exactly its weight, as the
//! whole list's hand-off does. The filtered targets before step `r` of a
//! round are counted per filtered position from a floor sum (the steps
//! `x < r` with `x·s mod W` in its range), O(log W) each, so a hand-off
//! costs two walks of the domain.
//!
//! Before, every pick walked the domain twice: 1.5 ms per pick for a
//! preferred zone of 33 000 instances (a third of 100 000), 3 µs for one
//! of 100.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{stride, weighted_at};
use crate::instance::Endpoint;
use crate::rule::context::domain_key;
use crate::rule::walk::{EXACT_HAND_OFF, probes};

/// A filtered cycle entry's turn over a list of more than
/// [`EXACT_HAND_OFF`] instances: up to 64 cycle entries drawn
/// pseudo-randomly from the step `k`; the first that is a member takes the
/// turn. An entry is a member with its weight's odds, so the turns go out
/// by weight on average (rather than in exact turns), in about `W / M`
/// probes (`M` of the weight `W` left). `None` when the list is short or
/// all probes missed: the exact hand-off then counts. The count walked
/// the list three times per hand-off: with a third of 10 000 instances
/// tripped, 286 µs per pick in a hint group's fallback.
pub(super) fn probe<'s>(
    endpoints: &'s [Endpoint],
    cycle: &[u32],
    is_member: &dyn Fn(usize) -> bool,
    k: usize,
) -> Option<&'s Endpoint> {
    if endpoints.len() <= EXACT_HAND_OFF || cycle.is_empty() {
        return None;
    }
    let seed = (k as u64).rotate_left(31) ^ 0x2545_f491;
    probes(seed, cycle.len() as u64).find_map(|pos| {
        let i = *cycle.get(pos as usize)? as usize;
        is_member(i).then(|| endpoints.get(i)).flatten()
    })
}

/// Domains of at most this many positions are walked (cheap enough, and
/// sticky or same-instance tiers come as one-position arrays on the
/// stack).
pub(super) const WALKED: usize = 8;

/// Most domains whose sums a picker keeps (zones are at most 16; hint
/// groups of one list beyond this are summed per pick).
const KEPT: usize = 64;

/// The prefix sums of one domain's weights.
struct Sums {
    /// The domain's address, length and first, middle and last entries:
    /// the built-in wrappers hand the same slice, owned by their picker,
    /// to every pick of one list.
    key: [usize; 5],
    /// `prefix[p]`: the weights of positions `0..=p`.
    prefix: Box<[u64]>,
}

impl Sums {
    fn new(domain: &[u32], weights: &[u64]) -> Self {
        let mut acc = 0u64;
        let prefix = domain
            .iter()
            .map(|&i| {
                acc = acc.saturating_add(weights.get(i as usize).copied().unwrap_or(0));
                acc
            })
            .collect();
        Self {
            key: domain_key(domain),
            prefix,
        }
    }

    fn total(&self) -> u64 {
        self.prefix.last().copied().unwrap_or(0)
    }
}

/// The prefix sums a picker keeps, one entry per domain it has seen.
#[derive(Default)]
pub(super) struct DomainSums {
    kept: ArcSwap<Vec<Arc<Sums>>>,
}

impl DomainSums {
    /// Step `k` of the weighted rotation over the members of `domain`
    /// (more than [`WALKED`] positions), `None` when no member has a
    /// weight.
    pub(super) fn pick<'s>(
        &self,
        endpoints: &'s [Endpoint],
        weights: &[u64],
        is_member: &dyn Fn(usize) -> bool,
        domain: &[u32],
        k: u64,
    ) -> Option<&'s Endpoint> {
        let key = domain_key(domain);
        // Read through the guard, without a reference count per pick (a
        // write to the sums' count that every core's picks share).
        let kept = self.kept.load();
        let fresh;
        let sums: &Sums = match kept.iter().find(|s| s.key == key) {
            Some(s) => s,
            None => {
                let sums = Arc::new(Sums::new(domain, weights));
                if kept.len() < KEPT {
                    self.kept.rcu(|v| {
                        let mut v = Vec::clone(v);
                        if v.len() < KEPT && !v.iter().any(|s| s.key == key) {
                            v.push(Arc::clone(&sums));
                        }
                        v
                    });
                }
                crate::rule::walk::count_memo_ref();
                fresh = sums;
                &fresh
            }
        };
        let total = sums.total();
        if total == 0 || sums.prefix.len() != domain.len() {
            return None;
        }
        let s = stride(total);
        let r = k % total;
        let target = (u128::from(r) * u128::from(s) % u128::from(total)) as u64;
        let pos = sums.prefix.partition_point(|&c| c <= target);
        let candidate = *domain.get(pos)? as usize;
        if is_member(candidate) {
            return endpoints.get(candidate);
        }
        // Handed on: over a long domain, probes of random targets first
        // (each a member with its weight's odds), then the count.
        if domain.len() > EXACT_HAND_OFF {
            let drawn = probes(k.rotate_left(31) ^ 0x5bd1_e995, total).find_map(|t| {
                let i = *domain.get(sums.prefix.partition_point(|&c| c <= t))? as usize;
                is_member(i).then(|| endpoints.get(i)).flatten()
            });
            if drawn.is_some() {
                return drawn;
            }
        }
        // Handed on: count the filtered targets before step `r`.
        let (mut members, mut filtered, mut before) = (0u64, 0u64, 0u64);
        let mut low = 0u64;
        for (&i, &high) in domain.iter().zip(&*sums.prefix) {
            let w = high - low;
            if w > 0 {
                if is_member(i as usize) {
                    members = members.saturating_add(w);
                } else {
                    filtered = filtered.saturating_add(w);
                    before = before.saturating_add(steps_in(r, total, s, low, high));
                }
            }
            low = high;
        }
        let j = (k / total).wrapping_mul(filtered).wrapping_add(before);
        let positions = domain.iter().map(|&i| i as usize);
        weighted_at(endpoints, weights, is_member, positions, members, j)
    }
}

/// The steps `x < r` whose target `x·s mod w` lies in `[low, high)`
/// (`high ≤ w`).
fn steps_in(r: u64, w: u64, s: u64, low: u64, high: u64) -> u64 {
    // `x·s mod w ≥ c` exactly when ⌊(x·s + w − c)/w⌋ − ⌊x·s/w⌋ is 1.
    let at_least = |c: u64| {
        let (r, w, s) = (u128::from(r), u128::from(w), u128::from(s));
        floor_sum(r, w, s, w - u128::from(c)) - floor_sum(r, w, s, 0)
    };
    (at_least(low) - at_least(high)) as u64
}

/// `Σ_{x=0}^{n−1} ⌊(a·x + b)/m⌋` for `m > 0`, in O(log m) (the Euclid-like
/// reduction of AtCoder Library's `floor_sum`). Here `n, m ≤ 2^33`, so
/// nothing overflows `u128`.
fn floor_sum(mut n: u128, mut m: u128, mut a: u128, mut b: u128) -> u128 {
    let mut sum = 0u128;
    loop {
        if n == 0 || m == 0 {
            return sum;
        }
        if a >= m {
            sum += n * (n - 1) / 2 * (a / m);
            a %= m;
        }
        if b >= m {
            sum += n * (b / m);
            b %= m;
        }
        let y = a * n + b;
        if y < m {
            return sum;
        }
        n = y / m;
        b = y % m;
        std::mem::swap(&mut m, &mut a);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A domain's kept sums are read through the guard: only the pick
    /// that sums the domain holds them (its fresh sums). Every pick took a
    /// reference before (a count up and down, a write every core's picks
    /// share): 90 for 90 picks in a preferred zone of 10, 1 now.
    #[tokio::test(start_paused = true)]
    async fn kept_sums_are_read_without_taking_a_reference() {
        use crate::rule::test_support::{BASE_PORT, index, instance};
        use crate::rule::{PickContext, Rule, WeightedRoundRobin, ZoneAvoidance};
        use crate::snapshot::Snapshot;
        let eps = (0..30u16)
            .map(|i| {
                let i_ = instance("127.0.0.1", BASE_PORT + i)
                    .with_zone(["a", "b", "c"][usize::from(i % 3)])
                    .with_weight(1 + u32::from(i % 2));
                Endpoint::new(i_)
            })
            .collect();
        let s = Arc::new(Snapshot::new("s", eps, 1));
        let p = ZoneAvoidance::new(WeightedRoundRobin::with_start(0))
            .preferred_zone(Some("b"))
            .build(&s);
        let ctx = PickContext::new();
        crate::rule::walk::MEMO_REFS.with(|r| r.set(0));
        let mut counts = [0u32; 30];
        for _ in 0..15 * 6 {
            counts[index(p.pick(&ctx).unwrap())] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let want = match (i % 3, i % 2) {
                (1, 0) => 6,
                (1, _) => 12,
                _ => 0,
            };
            assert_eq!(c, want, "{counts:?}");
        }
        assert_eq!(crate::rule::walk::MEMO_REFS.with(|r| r.get()), 1);
    }

    proptest! {
        #[test]
        fn floor_sum_is_the_sum(n in 0u128..200, m in 1u128..300, a in 0u128..1000, b in 0u128..1000) {
            let direct: u128 = (0..n).map(|x| (a * x + b) / m).sum();
            prop_assert_eq!(floor_sum(n, m, a, b), direct);
        }

        #[test]
        fn steps_in_counts_targets(w in 1u64..500, r0 in 0u64..500, low0 in 0u64..500, len in 0u64..500) {
            let s = stride(w);
            let r = r0 % (w + 1);
            let low = low0 % (w + 1);
            let high = (low + len).min(w);
            let direct = (0..r).filter(|x| (x * s % w) >= low && (x * s % w) < high).count() as u64;
            prop_assert_eq!(steps_in(r, w, s, low, high), direct);
        }
    }
}
