//! Smooth weighted round robin over static weights (NGINX's
//! `ngx_http_upstream_get_peer`, commit "Upstream: smooth weighted
//! round-robin balancing", 2012).
//!
//! Each instance has the static weight [`Instance::weight`] (the registry's
//! metadata `weight`, default 1). Per step every instance's current weight
//! grows by its weight, the largest (the first one on a tie) is chosen and
//! loses the total. For weights 5, 1, 1 this gives `a a b a c a a`, NGINX's
//! documented example, instead of `a a a a a b c`.
//!
//! The sequence is deterministic, so [`Rule::update`] computes one whole
//! cycle per snapshot (weights are divided by their greatest common divisor
//! first; a cycle longer than [`WeightedRoundRobin::MAX_CYCLE`] is scaled
//! down proportionally, keeping every non-zero weight at least 1), and a
//! pick is an atomic counter modulo the cycle length. Building a cycle takes
//! (cycle length × weighted instances) steps and 4 bytes per entry. An
//! excluded instance's turn goes to the next eligible entry of the cycle.
//!
//! Weight 0 means no share. If every weight is 0, every instance with a
//! weight is excluded, or the cycle belongs to another snapshot version, the
//! rule picks by plain round robin over the eligible instances, so it
//! returns `None` only when nothing is eligible.
//!
//! [`Instance::weight`]: crate::instance::Instance::weight

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::support::{Versioned, VersionedState, nth_eligible};
use super::{PickContext, Rule};
use crate::discovery::Snapshot;
use crate::instance::Endpoint;

/// Smooth weighted round robin over the instances' static weights.
pub struct WeightedRoundRobin {
    cycle: VersionedState<Cycle>,
    next: AtomicUsize,
}

/// One precomputed cycle for the snapshot it is [`Versioned`] with.
struct Cycle {
    /// Effective (reduced, scaled) weight per endpoint.
    weights: Box<[u64]>,
    /// Indices into the snapshot's endpoints, one cycle long; empty if all
    /// weights are 0.
    sequence: Box<[u32]>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Effective weights (reduced by their gcd, scaled to at most `cap` in sum)
/// and one cycle of the smooth weighted round-robin sequence.
fn smooth_cycle(weights: &[u32], cap: u64) -> (Vec<u64>, Vec<u32>) {
    let mut w: Vec<u64> = weights
        .iter()
        .enumerate()
        // An index must fit the u32 sequence; beyond that, no share.
        .map(|(i, &w)| {
            if u32::try_from(i).is_ok() {
                u64::from(w)
            } else {
                0
            }
        })
        .collect();
    let reduce = |w: &mut Vec<u64>| {
        let g = w.iter().fold(0, |g, &x| gcd(g, x));
        if g > 1 {
            w.iter_mut().for_each(|x| *x /= g);
        }
    };
    reduce(&mut w);
    let sum: u64 = w.iter().sum();
    if sum > cap {
        // x ≤ u32::MAX and cap ≤ 2^16, so x * cap fits.
        w.iter_mut()
            .filter(|x| **x > 0)
            .for_each(|x| *x = (*x * cap / sum).max(1));
        reduce(&mut w);
    }
    let total: u64 = w.iter().sum();
    let active: Vec<usize> = (0..w.len()).filter(|&i| w[i] > 0).collect();
    let mut current = vec![0i64; w.len()];
    let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = active[0];
        for &i in &active {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        sequence.push(best as u32);
    }
    (w, sequence)
}

impl Cycle {
    fn build(snapshot: &Snapshot) -> Versioned<Self> {
        let raw: Vec<u32> = snapshot
            .endpoints()
            .iter()
            .map(|e| e.instance().weight())
            .collect();
        let (weights, sequence) = smooth_cycle(&raw, WeightedRoundRobin::MAX_CYCLE as u64);
        Versioned::new(
            snapshot,
            Self {
                weights: weights.into(),
                sequence: sequence.into(),
            },
        )
    }
}

impl Versioned<Cycle> {
    /// The `k`-th entry of the cycle, or the next eligible one; `None` when
    /// the caller must fall back to plain round robin.
    fn pick<'s>(
        &self,
        snapshot: &'s Snapshot,
        ctx: &PickContext<'_>,
        k: usize,
    ) -> Option<&'s Endpoint> {
        if self.sequence.is_empty() || !self.aligned_with(snapshot) {
            return None;
        }
        if !ctx.all_eligible()
            && !self
                .weights
                .iter()
                .zip(snapshot.endpoints())
                .any(|(&w, e)| w > 0 && ctx.is_eligible(e))
        {
            return None;
        }
        self.first_eligible(&self.sequence, k, snapshot, ctx)
    }
}

impl WeightedRoundRobin {
    /// Longest precomputed cycle (sum of the reduced weights), in picks:
    /// 65 536. Larger sums are scaled down proportionally; a cycle then has
    /// at most `MAX_CYCLE` + (number of instances) entries.
    pub const MAX_CYCLE: usize = 65_536;

    /// A rule starting at a random position of the cycle.
    pub fn new() -> Self {
        Self::with_start(rand::random::<u64>() as usize)
    }

    /// A rule whose first pick is entry `start` (mod the cycle length) of
    /// the cycle, for repeatable tests.
    pub fn with_start(start: usize) -> Self {
        Self {
            cycle: VersionedState::empty(),
            next: AtomicUsize::new(start),
        }
    }
}

impl Default for WeightedRoundRobin {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for WeightedRoundRobin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cycle = self.cycle.load();
        f.debug_struct("WeightedRoundRobin")
            .field("next", &self.next.load(Ordering::Relaxed))
            .field("version", &cycle.as_deref().map(Versioned::version))
            .field("cycle_len", &cycle.as_deref().map(|c| c.sequence.len()))
            .finish()
    }
}

impl Rule for WeightedRoundRobin {
    fn choose<'s>(&self, snapshot: &'s Snapshot, ctx: &PickContext<'_>) -> Option<&'s Endpoint> {
        if snapshot.is_empty() {
            return None;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.cycle.load().as_deref() {
            if let Some(e) = c.pick(snapshot, ctx, k) {
                return Some(e);
            }
        }
        nth_eligible(snapshot.endpoints(), ctx, k)
    }

    fn update(&self, snapshot: &Snapshot) {
        self.cycle.store(Cycle::build(snapshot));
    }

    fn name(&self) -> &'static str {
        "weighted_round_robin"
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::rule::test_support::{
        BASE_PORT, check_changing_lists, index, instance, list_steps, masked,
    };

    fn snapshot(weights: &[u32], version: u64) -> Snapshot {
        let eps = weights
            .iter()
            .zip(BASE_PORT..)
            .map(|(&w, p)| Endpoint::new(instance("127.0.0.1", p).with_weight(w)))
            .collect();
        Snapshot::new("s", eps, version)
    }

    fn letters(rule: &WeightedRoundRobin, s: &Snapshot, ctx: &PickContext<'_>, n: usize) -> String {
        (0..n)
            .map(|_| match rule.choose(s, ctx) {
                Some(e) => char::from(b'a' + index(e) as u8),
                None => '-',
            })
            .collect()
    }

    #[test]
    fn nginx_example_sequence() {
        let s = snapshot(&[5, 1, 1], 1);
        let rule = WeightedRoundRobin::with_start(0);
        rule.update(&s);
        let got = letters(&rule, &s, &PickContext::new(), 21);
        eprintln!("weighted_round_robin [5,1,1]: {got}");
        assert_eq!(got, "aabacaa".repeat(3));
        // Scaling the weights by a common factor keeps the sequence.
        let s = snapshot(&[50, 10, 10], 2);
        rule.update(&s);
        assert_eq!(letters(&rule, &s, &PickContext::new(), 7), "aabacaa");
    }

    #[test]
    fn zero_weights_and_exclusions() {
        let rule = WeightedRoundRobin::with_start(0);
        let s = snapshot(&[0, 2, 0, 1], 1);
        rule.update(&s);
        assert_eq!(letters(&rule, &s, &PickContext::new(), 6), "bdbbdb");
        // All weighted instances excluded: weight-0 ones still serve.
        let ex = [s.endpoints()[1].clone(), s.endpoints()[3].clone()];
        assert_eq!(
            letters(&rule, &s, &PickContext::new().with_excluded(&ex), 4),
            "acac"
        );
        let all = s.endpoints().to_vec();
        assert!(
            rule.choose(&s, &PickContext::new().with_excluded(&all))
                .is_none()
        );
        // All zero: plain round robin.
        let z = snapshot(&[0, 0, 0], 2);
        rule.update(&z);
        assert_eq!(letters(&rule, &z, &PickContext::new(), 6).len(), 6);
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[index(rule.choose(&z, &PickContext::new()).unwrap())] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        assert!(
            rule.choose(&Snapshot::empty("s"), &PickContext::new())
                .is_none()
        );
    }

    #[test]
    fn huge_weights_are_scaled_to_the_cap() {
        let (w, seq) = smooth_cycle(
            &[u32::MAX, 1, u32::MAX / 2],
            WeightedRoundRobin::MAX_CYCLE as u64,
        );
        assert!(
            seq.len() <= WeightedRoundRobin::MAX_CYCLE + 3,
            "{}",
            seq.len()
        );
        assert_eq!(w[1], 1);
        assert_eq!(seq.iter().filter(|&&i| i == 1).count(), 1);
        let a = seq.iter().filter(|&&i| i == 0).count() as f64;
        let c = seq.iter().filter(|&&i| i == 2).count() as f64;
        assert!((a / c - 2.0).abs() < 0.001, "{a} {c}");
    }

    proptest! {
        /// Never an excluded endpoint or one outside the snapshot read, None
        /// only when nothing is eligible, no panic on changing lists, stale
        /// or colliding versions and random weights; with nothing excluded
        /// and a current cycle, each weighted instance gets exactly its
        /// share over a cycle.
        #[test]
        fn picks_are_members_and_never_excluded(
            lists in list_steps(30),
            weights in prop::collection::vec(prop_oneof![99 => 0u32..8, 1 => any::<u32>()], 30),
            excluded_mask in prop::collection::vec(any::<bool>(), 30),
            start in any::<usize>(),
        ) {
            let pool = snapshot(&weights, 0);
            let excluded = masked(pool.endpoints(), &excluded_mask);
            let rule = WeightedRoundRobin::with_start(start);
            check_changing_lists(&rule, pool.endpoints(), &lists, &excluded, &[None], 20)?;
        }

        /// Over one whole cycle each instance is picked exactly its reduced
        /// weight times.
        #[test]
        fn one_cycle_gives_exact_shares(weights in prop::collection::vec(0u32..12, 1..12), start in 0usize..1 << 30) {
            let s = snapshot(&weights, 1);
            let rule = WeightedRoundRobin::with_start(start);
            rule.update(&s);
            let (w, seq) = smooth_cycle(&weights, WeightedRoundRobin::MAX_CYCLE as u64);
            prop_assume!(!seq.is_empty());
            let mut counts = vec![0u64; weights.len()];
            for _ in 0..seq.len() {
                counts[index(rule.choose(&s, &PickContext::new()).unwrap())] += 1;
            }
            prop_assert_eq!(counts, w);
        }
    }
}
