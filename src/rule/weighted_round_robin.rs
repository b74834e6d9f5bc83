//! Smooth weighted round robin over static weights (NGINX's
//! `ngx_http_upstream_get_peer`, commit "Upstream: smooth weighted
//! round-robin balancing", 2012).
//!
//! Each instance has the static weight [`Instance::weight`] (the registry's
//! metadata `weight`, default 1; a pure number, a share of picks). Per step
//! every instance's current weight grows by its weight, the largest (the
//! first one on a tie) is chosen and loses the total. For weights 5, 1, 1
//! this gives `a a b a c a a`, NGINX's documented example, instead of
//! `a a a a a b c`.
//!
//! The sequence is deterministic, so [`Rule::build`] computes one whole
//! cycle per list (weights are divided by their greatest common divisor
//! first; a cycle longer than [`WeightedRoundRobin::MAX_CYCLE`] is scaled
//! down proportionally, keeping every non-zero weight at least 1), and a
//! pick is an atomic cursor (shared by every picker of the rule) modulo the
//! cycle length. An excluded (or filtered) instance's turns are handed to
//! the eligible entries in turn, as round robin's hand-off, so the others
//! keep their weights' proportions (not all to the next entry): the
//! handed-on turns, numbered in cycle order, go out by a weighted rotation
//! over the eligible instances (as in a tier with a domain, below), so over
//! any `W` of them (`W` the eligible weight) each eligible instance gets
//! exactly its weight. Such a pick costs O(n), at most three walks of the
//! list: the filtered entries before its position are counted from
//! checkpoints of the cycle every `n` entries (walking the cycle cost
//! O(T), 65 663 membership tests for one pick over 200 instances weighing
//! 1 000 to 1 996, and 51 µs per pick on average over 1 000 instances with
//! every tenth one filtered; 1.5 µs now, round robin's 1.0 µs). A wrapper's tier of
//! one instance (a sticky or same-instance preference) is its instance in
//! O(1), and a tier with a [`Domain`](super::Domain) of several positions
//! (a hint group, a subset, a zone) is a weighted rotation over that
//! domain: over its total weight in picks each member gets exactly its
//! weight, its turns spread by a stride coprime to the total rather than
//! NGINX's interleaving (see `weighted_in`). For a domain of more than 8
//! positions the picker keeps its prefix sums of weights (per domain, up
//! to 64 domains), so a pick whose candidate is a member is a binary
//! search, O(log |domain|), and a filtered member's turn is handed on by
//! weight in two walks of the domain (see `domain`); a smaller domain is
//! walked twice per pick. Walking the domain on every pick cost 1.5 ms
//! per pick for a preferred zone of 33 000 instances; walking the whole
//! list's cycle cost 30 001 membership tests per sticky pick at 10 000
//! instances, and 9 908 per pick for a hint group of two.
//!
//! Build cost: after step `t` the current weight of instance `i` is
//! `(t + 1)·w(i) − T·c(i)` (`T` the total, `c(i)` its picks so far), so
//! among instances of equal weight the order never changes: they take
//! turns in list order. The build therefore groups instances by weight
//! (a sort, O(n log n)) and compares one head per group per step:
//! O(n log n + T·D) for a cycle of `T ≤ MAX_CYCLE + n` entries and `D`
//! distinct weights (NGINX's literal loop is O(T·n): 7.5 to 12.6 s for
//! 100 000 instances; this is milliseconds for a few distinct weights).
//! Memory: 8 bytes per cycle entry (the cycle and its checkpoints) and 4
//! per instance.
//!
//! Weight 0 means no share. If every weight is 0 or every instance with a
//! weight is excluded (or outside the wrapper's tier), the picker picks by
//! plain round robin over the eligible instances, so it returns `None` only
//! when nothing is eligible.
//!
//! [`Instance::weight`]: crate::instance::Instance::weight

mod domain;

use super::cursor::Cursor;
use std::fmt;
use std::sync::Arc;

use super::walk::{nth_member, rotate, step_in};
use super::{PickContext, Picker, Rule};
use crate::instance::Endpoint;
use crate::snapshot::Snapshot;

/// Smooth weighted round robin over the instances' static weights.
pub struct WeightedRoundRobin {
    cursor: Arc<Cursor>,
    spring: bool,
}

/// An instance's weight as Spring Cloud LoadBalancer's
/// `WeightedServiceInstanceListSupplier.metadataWeightFunction` reads it:
/// metadata `weight` parsed as a Java `int` (`Integer.parseInt`: an
/// optional sign and digits, no spaces); a value ≤ 0 or one that does not
/// parse gives 1. Without the metadata key, [`Instance::weight`](crate::instance::Instance::weight) (1 unless
/// the source set it), at least 1.
pub fn spring_weight(instance: &crate::instance::Instance) -> u32 {
    match instance.metadata().get("weight") {
        Some(w) => w
            .parse::<i32>()
            .ok()
            .and_then(|w| u32::try_from(w).ok())
            .filter(|w| *w > 0)
            .unwrap_or(1),
        None => instance.weight().max(1),
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Effective weights: reduced by their gcd and scaled to at most `cap` in
/// sum (every non-zero weight staying at least 1); an index beyond `u32`
/// gets no share.
fn effective_weights(weights: &[u32], cap: u64) -> Vec<u64> {
    let mut w: Vec<u64> = weights
        .iter()
        .enumerate()
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
    w
}

/// Instances of one weight, in list order, and where their turn is.
struct Group {
    weight: i64,
    members: Vec<u32>,
    /// The member whose turn is next (index into `members`).
    next: usize,
    /// `−T · c`, where `c` is how often the next member was picked.
    offset: i64,
}

/// Effective weights and one cycle of the smooth weighted round-robin
/// sequence (indices into `weights`), in O(n log n + T·D) (see the module
/// documentation).
fn smooth_cycle(weights: &[u32], cap: u64) -> (Vec<u64>, Vec<u32>) {
    let w = effective_weights(weights, cap);
    let total: u64 = w.iter().sum();
    // total ≤ cap + n and every weight ≤ max(cap, u32::MAX), so
    // (t + 1) · w ≤ total · w fits an i64 for any list that fits memory.
    let t_total = i64::try_from(total).unwrap_or(i64::MAX);
    let mut order: Vec<u32> = (0..w.len())
        .filter(|&i| w[i] > 0)
        .map(|i| i as u32)
        .collect();
    order.sort_by_key(|&i| (w[i as usize], i));
    let mut groups: Vec<Group> = Vec::new();
    for i in order {
        let weight = i64::try_from(w[i as usize]).unwrap_or(i64::MAX);
        match groups.last_mut() {
            Some(g) if g.weight == weight => g.members.push(i),
            _ => groups.push(Group {
                weight,
                members: vec![i],
                next: 0,
                offset: 0,
            }),
        }
    }
    let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for t in 1..=t_total {
        // The current weight of each group's next member after step t − 1
        // is t · w − T · c; the largest wins, the smaller index on a tie.
        let mut best: Option<(i64, u32, usize)> = None;
        for (g, group) in groups.iter().enumerate() {
            let current = t.saturating_mul(group.weight).saturating_add(group.offset);
            let member = group.members[group.next];
            if best.is_none_or(|(c, m, _)| current > c || (current == c && member < m)) {
                best = Some((current, member, g));
            }
        }
        let Some((_, member, g)) = best else { break };
        let group = &mut groups[g];
        group.next += 1;
        if group.next == group.members.len() {
            group.next = 0;
            group.offset = group.offset.saturating_sub(t_total);
        }
        sequence.push(member);
    }
    (w, sequence)
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
            cursor: Arc::new(Cursor::new(start)),
            spring: false,
        }
    }

    /// Reads weights as Spring Cloud LoadBalancer's `weighted`
    /// configuration does ([`spring_weight`]: metadata `weight`, a value
    /// ≤ 0 or unparsable is 1) instead of [`Instance::weight`](crate::instance::Instance::weight) (where 0
    /// means no share). SCLB expands the list by weight and indexes it
    /// round robin (A:3, B:1 gives `A B A A`); this rule's smooth order
    /// (`A A B A`) gives the same shares per cycle.
    pub fn spring_weights(mut self) -> Self {
        self.spring = true;
        self
    }
}

impl Default for WeightedRoundRobin {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for WeightedRoundRobin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightedRoundRobin")
            .field("next", &self.cursor.peek())
            .field("spring_weights", &self.spring)
            .finish()
    }
}

impl Rule for WeightedRoundRobin {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        let weight = |e: &Endpoint| match self.spring {
            true => spring_weight(e.instance()),
            false => e.instance().weight(),
        };
        let raw: Vec<u32> = snapshot.endpoints().iter().map(weight).collect();
        let (weights, sequence) = smooth_cycle(&raw, Self::MAX_CYCLE as u64);
        let counts_at = checkpoints(&sequence, weights.len());
        let offset = (self.cursor).anchor(snapshot.endpoints(), sequence.len().max(snapshot.len()));
        Arc::new(WeightedRoundRobinPicker {
            snapshot: Arc::clone(snapshot),
            cursor: Arc::clone(&self.cursor),
            offset,
            weights: weights.into(),
            sequence: sequence.into(),
            counts_at: counts_at.into(),
            domains: domain::DomainSums::default(),
        })
    }

    fn name(&self) -> &'static str {
        "weighted_round_robin"
    }
}

/// The picker of [`WeightedRoundRobin`]: one precomputed cycle.
struct WeightedRoundRobinPicker {
    snapshot: Arc<Snapshot>,
    cursor: Arc<Cursor>,
    /// Added to every step (see `Cursor::anchor`).
    offset: usize,
    /// Effective (reduced, scaled) weight per endpoint.
    weights: Box<[u64]>,
    /// Indices into the snapshot's endpoints, one cycle long; empty if all
    /// weights are 0.
    sequence: Box<[u32]>,
    /// Checkpoints of the cycle every `n` entries (`n` the list's length):
    /// row `r` holds, per instance, its entries before position `r·n`.
    /// About `T + n` counts; they count the filtered entries before a
    /// position in O(n) for the hand-off.
    counts_at: Box<[u32]>,
    /// The prefix sums of the large domains picks brought (see `domain`).
    domains: domain::DomainSums,
}

/// Per instance, its entries of `sequence` before each position that is a
/// multiple of `n` (rows of `n` counts, one row per started block of `n`
/// entries), in O(T + n) time and space.
fn checkpoints(sequence: &[u32], n: usize) -> Vec<u32> {
    let block = n.max(1);
    let mut rows = Vec::with_capacity(sequence.len().div_ceil(block).saturating_mul(n));
    let mut seen = vec![0u32; n];
    for (p, &i) in sequence.iter().enumerate() {
        if p % block == 0 {
            rows.extend_from_slice(&seen);
        }
        if let Some(c) = seen.get_mut(i as usize) {
            *c = c.saturating_add(1);
        }
    }
    rows
}

impl fmt::Debug for WeightedRoundRobinPicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightedRoundRobinPicker")
            .field("instances", &self.snapshot.len())
            .field("cycle_len", &self.sequence.len())
            .finish_non_exhaustive()
    }
}

impl Picker for WeightedRoundRobinPicker {
    #[inline]
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint> {
        let endpoints = self.snapshot.endpoints();
        if endpoints.is_empty() {
            return None;
        }
        let k = self.cursor.step(ctx, endpoints).wrapping_add(self.offset);
        let seq = &*self.sequence;
        if seq.is_empty() {
            return rotate(endpoints, ctx, k);
        }
        if ctx.all_eligible() && !ctx.has_tiers() {
            return endpoints.get(seq[k % seq.len()] as usize);
        }
        ctx.find_tier_in(&mut |member, domain| {
            let is_member = |i: usize| endpoints.get(i).is_some_and(|e| member(i, e));
            match domain {
                // A tier of one position (a sticky or same-instance
                // preference): its member whatever the weights, in O(1).
                Some(&[i]) => return is_member(i as usize).then(|| &endpoints[i as usize]),
                // A tier of many positions (a zone, a subset, a hint
                // group): its candidate by binary search over its prefix
                // sums, kept per domain (see `domain`).
                Some(d) if d.len() > domain::WALKED => {
                    return self
                        .domains
                        .pick(endpoints, &self.weights, &is_member, d, k as u64)
                        .or_else(|| step_in(endpoints, member, domain, k));
                }
                // A tier of a few positions: walked, O(|domain|).
                Some(d) => {
                    return weighted_in(
                        endpoints,
                        &self.weights,
                        &is_member,
                        d.iter().map(|&i| i as usize),
                        k as u64,
                    )
                    .or_else(|| step_in(endpoints, member, domain, k));
                }
                None => {}
            }
            // The cycle's own entry when it is a member: O(1).
            let total = seq.len() as u64;
            let p0 = (k as u64 % total) as usize;
            if let Some(&i) = seq.get(p0) {
                if is_member(i as usize) {
                    return endpoints.get(i as usize);
                }
            }
            // Over a long list, probes of random cycle entries first (each
            // a member with its weight's odds; see `domain::probe`).
            if let Some(e) = domain::probe(endpoints, seq, &is_member, k) {
                return Some(e);
            }
            // Its turn handed on, in O(n): at most three walks of the list.
            // (Walking the cycle, as round robin walks its list, cost O(T):
            // 65 663 membership tests for one pick over 200 instances
            // weighing 1 000 to 1 996.)
            //
            // The hand-offs are numbered in cycle order across rounds,
            // `j = round · f + (filtered entries before p0)`, `f` the
            // filtered entries per cycle, so successive hand-offs have
            // successive numbers, and `weighted_at` gives number `j` to the
            // member whose share of the members' weight `W` holds
            // `j · s mod W`: over any `W` successive hand-offs each member
            // gets exactly its weight, and the turns of one filtered
            // instance spread over the members.
            let n = endpoints.len();
            let block = n.max(1);
            let start = p0 - p0 % block;
            let row = self
                .counts_at
                .get(start / block * n..)
                .and_then(|r| r.get(..n))
                .unwrap_or(&[]);
            let w = &*self.weights;
            let (mut members, mut filtered, mut before) = (0u64, 0u64, 0u64);
            for i in 0..n {
                let wi = w.get(i).copied().unwrap_or(0);
                if wi == 0 {
                    continue;
                }
                if is_member(i) {
                    members = members.saturating_add(wi);
                } else {
                    filtered = filtered.saturating_add(wi);
                    before = before.saturating_add(row.get(i).copied().map_or(0, u64::from));
                }
            }
            if members > 0 {
                let rest = seq.get(start..p0).unwrap_or(&[]);
                let rest = rest.iter().filter(|&&i| !is_member(i as usize)).count() as u64;
                let j = (k as u64 / total)
                    .wrapping_mul(filtered)
                    .wrapping_add(before)
                    .wrapping_add(rest);
                let all = 0..n;
                if let Some(e) = weighted_at(endpoints, w, &is_member, all, members, j) {
                    return Some(e);
                }
            }
            // No member with a weight: round robin over those without.
            nth_member(endpoints, member, k)
        })
    }

    fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }
}

/// Step `k` of a weighted rotation over the members of `domain` that have
/// a weight, in O(|domain|) (two passes, each calling `is_member` once per
/// position); `None` when no member has one. Over any `W` consecutive
/// steps (`W` the members' total weight) each member gets exactly its
/// weight in picks: step `k` takes the member whose share of `0..W` holds
/// `(k mod W) · s mod W`, with `s` the first number from `0.618·W` up
/// that is coprime to `W` (a bijection of `0..W`), which spreads each
/// member's turns over the cycle instead of in one run. Walking the whole
/// list's cycle instead cost 9 908 membership tests per pick for a hint
/// group of two among 10 000 instances, and 14 640 for one of eight.
fn weighted_in<'s>(
    endpoints: &'s [Endpoint],
    weights: &[u64],
    is_member: &dyn Fn(usize) -> bool,
    domain: impl Iterator<Item = usize> + Clone,
    k: u64,
) -> Option<&'s Endpoint> {
    let total = domain.clone().fold(0u64, |t, i| {
        let w = weights.get(i).copied().unwrap_or(0);
        if w > 0 && is_member(i) {
            t.saturating_add(w)
        } else {
            t
        }
    });
    weighted_at(endpoints, weights, is_member, domain, total, k)
}

/// Step `k` of [`weighted_in`]'s rotation with the members' total weight
/// `total` known: one pass over `domain`; `None` when `total` is 0.
fn weighted_at<'s>(
    endpoints: &'s [Endpoint],
    weights: &[u64],
    is_member: &dyn Fn(usize) -> bool,
    mut domain: impl Iterator<Item = usize>,
    total: u64,
    k: u64,
) -> Option<&'s Endpoint> {
    if total == 0 {
        return None;
    }
    let target = (u128::from(k % total) * u128::from(stride(total)) % u128::from(total)) as u64;
    let mut acc = 0u64;
    domain
        .find(|&i| {
            let w = weights.get(i).copied().unwrap_or(0);
            if w == 0 || !is_member(i) {
                return false;
            }
            acc = acc.saturating_add(w);
            acc > target
        })
        .and_then(|i| endpoints.get(i))
}

/// The first number from `0.618·total` up that is coprime to `total`
/// (`total` ≥ 1): a step that visits every point of `0..total` once per
/// `total` steps and spreads consecutive steps apart.
fn stride(total: u64) -> u64 {
    let mut s = ((total as f64 * 0.618_033_988_749_895) as u64).clamp(1, total);
    while gcd(s, total) != 1 {
        s += 1;
    }
    s
}

#[cfg(test)]
mod tests;
