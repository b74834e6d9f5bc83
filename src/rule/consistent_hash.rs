//! Consistent hashing through a Maglev lookup table (Eisenbud et al.,
//! "Maglev: A Fast and Reliable Software Network Load Balancer", NSDI 2016,
//! §3.4).
//!
//! Each instance hashes its identity (instance id, host and port, with
//! FNV-1a 64, which is stable across processes and Rust versions) to an
//! `offset`, a `skip` and a `mask` in a table of `M` slots (`M` prime,
//! default 65 537). They give the instance's preference order of the
//! slots: slot `σ(p_j)` at step `j`, where `p_j = (offset + j·skip) mod M`
//! is the paper's affine walk and `σ` swaps `p` with `p XOR mask` when both
//! are below `M` (`mask` is below the largest power of two `≤ M`, so every
//! `p` below that power moves, unless `mask` is 0: then the walk is the
//! paper's, as for half the identities of a 2- or 3-slot table; helper
//! 245). `σ` is its own inverse, so the order is
//! still a permutation of the slots.
//!
//! [`Rule::build`] fills the table. A pick maps [`PickContext::hash_key`]
//! to a slot (the key goes through the SplitMix64 finaliser first, so
//! sequential keys spread) and returns that slot's instance. That is O(1),
//! with no lock and no allocation.
//!
//! One deliberate difference from the paper's table population. In the
//! paper, the instances take turns, and each claims its next *free* slot.
//! That balances the slots to within one entry. It is only nearly minimally
//! disruptive, though: in a simulation with 5 instances and `M` = 65 537,
//! removing one instance also moved 51 of the other instances' 52 430 slots.
//! Here the instances step through their preference orders in lockstep, and
//! a slot goes to the first instance to reach it (on a tie, the smaller
//! identity hash wins). So each slot has a fixed ranking of all possible
//! instances, and its owner is the best-ranked one present. This gives:
//! - removing an instance moves exactly the keys it held;
//! - adding one moves only keys onto it;
//! - the table depends only on the set of identities, not on list order or
//!   history, so every client sends a key to the same instance.
//!
//! The price is that slot counts are binomial rather than exact. The
//! relative spread per instance is about √(n/M): 0.9 % for 5 instances, and
//! 10 % at `M` = 100·n, the paper's smallest recommended table.
//!
//! A second difference: the mask in the preference orders. Affine walks
//! alone relate instances. Two whose skips are equal or in a small ratio
//! (±1, ±2, ±1/2, …) walk the same slots one behind the other, and under
//! the first-to-arrive fill the follower reaches almost every slot after
//! its leader, owns only what it took before catching up, and inherits
//! most of the leader's slots when the leader goes. With 127.0.0.1 ports
//! 1 to 32 and affine walks, port 5 owned 0.674 of a fair share of the
//! keys, and removing port 29 sent 2 451 of its 6 656 keys to port 5 (a
//! fair share: 215); of 100 lists of 32 random hosts, 6 had an instance
//! below 0.9 of its share (worst 0.378). Through two different masks the
//! leader no longer walks one fixed lag ahead: the lag at a slot depends
//! on the bits of the slot that the masks' difference flips, so it takes
//! up to `2^popcount(mask XOR mask')` values (about 2^8 for two random
//! 16-bit masks) spread over the table, and the pair splits its slots as
//! any two instances do. Now port 5 owns 1.057 of its share (port 20 the
//! least, 0.957), port 29's keys go at most 266 of 6 236 to one port
//! (fair: 201), and over 100 seeded lists each of 32 and 64 random hosts
//! the lowest instance owns 0.939 and 0.914 of its share of the slots,
//! as with keyed pseudo-random permutations of the slots (a Feistel
//! network, 6 to 10 times slower to build). A step costs an XOR, a
//! compare and a select more than the affine walk, and a walker takes 16
//! bytes (24 before): a build takes about 1.0 to 1.15 times as long.
//!
//! Requests without a hash key go by round robin (a cursor the rule shares
//! with its pickers, with the lanes of `rule::cursor`, so picks a preference
//! wrapper confines to a sticky instance or a hint group do not split the
//! rotation of the others; under the balancer's health filter, in O(log u)
//! as [`RoundRobin`](super::RoundRobin)). If the key's instance is excluded (or outside the
//! wrapper's tier), the key probes further slots with a stride of its own
//! (double hashing: slot `first + j·stride mod M`, at most `M` of them)
//! until one holds an eligible instance, so an excluded instance's keys
//! spread over the others in proportion to their slots (the next slot in
//! order belongs to an owner the lockstep fill correlates with the
//! excluded one's: with one of 3 instances excluded its keys split about
//! 63/37, 32 672 against 27 328 of 60 000 keys in all);
//! if none does (a table smaller than the list), round robin decides among
//! the eligible ones.
//!
//! A tier with a small [`Domain`] (at most 256 possible members: the sticky
//! instance, a hint group, a subset, a small zone) is not looked up in the
//! table: the walk from the key's slot to a slot of the tier's `m` members
//! takes about `n / m` steps, 20 000 for a one-instance hint group among
//! 20 000, and gives each member the gaps before its few slots, so the
//! spread inside the tier is as uneven as `n` is large against `M`.
//! Such a tier uses rendezvous (highest random weight) hashing instead
//! (Thaler and Ravishankar, "Using Name-Based Mappings to Increase Hit
//! Rates", IEEE/ACM Transactions on Networking 6(1), 1998): each member's
//! score is the SplitMix64 finaliser of the key's hash XOR the member's
//! identity hash, and the highest score wins. A pick tests each position
//! of the domain once, O(|domain|), and allocates nothing. A key's member
//! depends only on the key and the members' identities, so it stays the
//! same across picks and across refreshes that keep the tier (whatever
//! happens to the other instances, and in any list order); a member that
//! leaves the tier gives up only its own keys, spread over the rest. The
//! scores are independent and uniform, so each of the `m` members gets
//! `1/m` of the keys (within 1 % for 40 000 keys over 4 in the tests).
//! A tier with a larger domain (a big zone) or none keeps the table walk:
//! its members own a fair share of the slots, so the walk is short (about
//! `n / m` steps for `m` members, at most `n / 256` when every position of
//! the domain is a member) and checks that the tier has a member within
//! the domain only. The two map keys differently, so a tier whose domain
//! grows past 256 positions (or shrinks below 257) moves most of its keys
//! once, as a change of the whole ring would (an attack measured 19 925
//! of 20 000 keys moved from 256 to 257 members, against about 100 for a
//! change of one member on either side).
//!
//! Build cost: a sort of the identities, O(n log n), then the fill; the
//! walkers (one per identity hash: copies of one identity never take a
//! slot from the first) step in lockstep until every slot is taken, about
//! `M · ln M` steps when `n < M` (the coupon collector's bound) and `n`
//! steps plus a few rounds when `n ≥ M`. The fill stops after
//! `4 · M · (ln M + 1)` steps (plus the round under way, and at least
//! `min(M, 8)` rounds) whatever the
//! identities: hashes crafted so that walkers follow each other would
//! otherwise take `M` rounds; slots still empty then go to the walkers in
//! rank order. Memory: 4 bytes per slot and 8 per instance (its identity
//! hash).

use std::fmt;
use std::sync::Arc;

use super::context::{Domain, Member};
use super::cursor::Cursor;
use super::walk::{UnhealthyMemo, rotate, step_in};
use super::{PickContext, Picker, Rule};
use crate::hash::mix64;
use crate::instance::Endpoint;
use crate::snapshot::Snapshot;

const EMPTY: u32 = u32::MAX;

/// Salt of a key's probe stride (independent of its slot).
const PROBE_SALT: u64 = 0x2545_f491_4f6c_dd1d;

/// The largest tier domain picked by rendezvous hashing rather than by the
/// table walk (see the module docs).
const RENDEZVOUS_MAX: usize = 256;

/// Consistent hashing of [`PickContext::hash_key`] onto the instances.
pub struct ConsistentHash {
    table_size: usize,
    cursor: Arc<Cursor>,
}

fn next_prime(n: usize) -> usize {
    let is_prime = |n: usize| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0);
    let mut n = n.max(2);
    while !is_prime(n) {
        n += 1;
    }
    n
}

/// The filled lookup table of `endpoints` (whose identity hashes are
/// `hashes`): slot → index into `endpoints`; and the fill's steps.
fn fill_table(endpoints: &[Endpoint], hashes: &[u64], size: usize) -> (Vec<u32>, u64) {
    let m = if endpoints.is_empty() { 0 } else { size };
    // A fixed, set-independent rank: identity hash, then identity.
    let mut order: Vec<(u64, usize)> = hashes
        .iter()
        .enumerate()
        .take(EMPTY as usize)
        .map(|(i, &h)| (h, i))
        .collect();
    // Stable: equal identities keep list order.
    order.sort_by(|&(ha, a), &(hb, b)| {
        let (a, b) = (endpoints[a].instance(), endpoints[b].instance());
        ha.cmp(&hb)
            .then_with(|| (a.id(), a.host(), a.port()).cmp(&(b.id(), b.host(), b.port())))
            // One identity over http and https: http ranks first, in any
            // list order.
            .then_with(|| a.is_secure().cmp(&b.is_secure()))
    });
    // Endpoints with one identity hash (one identity listed twice, or its
    // http and https entries) walk one preference order in lockstep, and
    // the first of them in rank reaches each slot first: the others never
    // take one. Walking them anyway made the fill take all `M` rounds over
    // every copy (64 000 copies of one instance: 5 s).
    order.dedup_by_key(|&mut (h, _)| h);
    let walkers = order
        .iter()
        .map(|&(h, i)| Walker::new(h, m, i as u32))
        .collect();
    fill(walkers, m)
}

/// Salt of an identity's skip (independent of its offset).
const SKIP_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// Salt of an identity's mask (independent of its offset and skip).
const MASK_SALT: u64 = 0x6a09_e667_f3bc_c909;

/// One identity's walk through its preference order of the slots (see the
/// module docs): at each step it looks at slot `σ(pos)` (`pos XOR mask`
/// when that is below `M`, else `pos`), then moves `pos` on by `skip`
/// modulo `M`. 16 bytes, so a fill's walkers stay in cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Walker {
    /// The affine walk's position, `offset + j·skip mod M` at step `j`.
    pos: u32,
    /// In `1..M` (`M ≥ 2` is prime).
    skip: u32,
    /// Below the largest power of two `≤ M`.
    mask: u32,
    /// The endpoint's index in the list.
    index: u32,
}

impl Walker {
    /// The walker of identity hash `h` in a table of `m ≥ 2` slots (at most
    /// 2^25: the table size is capped at 2^24 and rounded up to a prime),
    /// before its first step.
    fn new(h: u64, m: usize, index: u32) -> Self {
        let m64 = m as u64;
        // The largest power of two ≤ M.
        let below = 1u64 << (63 - m64.max(1).leading_zeros());
        Self {
            pos: (mix64(h) % m64) as u32,
            skip: (mix64(h ^ SKIP_SALT) % (m64 - 1).max(1) + 1) as u32,
            mask: (mix64(h ^ MASK_SALT) & (below - 1)) as u32,
            index,
        }
    }

    /// The slot this step looks at, and the walker moved on one step.
    #[inline]
    fn step(&mut self, m: u32) -> usize {
        let masked = self.pos ^ self.mask;
        let slot = if masked < m { masked } else { self.pos };
        self.pos += self.skip;
        if self.pos >= m {
            self.pos -= m;
        }
        slot as usize
    }
}

/// Most steps [`fill`] takes before the slots still empty are dealt out by
/// rank (after at least `min(M, 8)` rounds: in `M` rounds every walker
/// visits every slot, and a list longer than the budget would otherwise
/// stop after one round with slots left; helper 186 found 1 such table in
/// 440 at `M` = 2): four times the coupon collector's `M · (ln M + 1)`. Walkers whose
/// preference orders are independent fill the table in about `M · ln M`
/// steps and leave a slot empty past this bound with a probability of
/// about `M^-3`; walkers crafted to share a skip and a mask and follow
/// each other through them (identity hashes chosen for that) would
/// otherwise step about `M` rounds of `n` steps.
fn step_budget(m: usize) -> u64 {
    let m = m as f64;
    (4.0 * m * (m.max(1.0).ln() + 1.0)) as u64
}

/// Fills `m` slots with `walkers` (in rank order) stepping in lockstep;
/// returns the slots and the steps taken.
/// Past [`step_budget`] (checked after each round), each slot still empty
/// goes to the walker at its index modulo the walkers' count: a choice
/// that depends only on the set, like the walk's.
fn fill(mut walkers: Vec<Walker>, m: usize) -> (Vec<u32>, u64) {
    let mut slots = vec![EMPTY; m];
    // At most next_prime(2^24) (see `with_table_size`).
    let m32 = u32::try_from(m).unwrap_or(u32::MAX);
    let budget = step_budget(m);
    let mut filled = 0;
    let mut steps = 0u64;
    // M is prime and 0 < skip < M, and the mask's swap is a bijection:
    // every walker visits all M slots in M steps.
    let min_rounds = m.min(8);
    for round in 1..=m {
        for walker in &mut walkers {
            let slot = &mut slots[walker.step(m32)];
            if *slot == EMPTY {
                *slot = walker.index;
                filled += 1;
            }
        }
        steps += walkers.len() as u64;
        if filled == m || (steps >= budget && round >= min_rounds) {
            break;
        }
    }
    if filled < m && !walkers.is_empty() {
        for (at, slot) in slots.iter_mut().enumerate() {
            if *slot == EMPTY {
                *slot = walkers[at % walkers.len()].index;
            }
        }
    }
    (slots, steps)
}

impl ConsistentHash {
    /// Default table size `M`: 65 537 slots (a prime; the paper's size).
    pub const DEFAULT_TABLE_SIZE: usize = 65_537;

    /// A rule with a table of 65 537 slots (4 bytes each) and a round-robin
    /// fallback starting at a random offset.
    pub fn new() -> Self {
        Self {
            table_size: Self::DEFAULT_TABLE_SIZE,
            cursor: Arc::new(Cursor::new(rand::random::<u64>() as usize)),
        }
    }

    /// Sets the table size in slots, rounded up to the next prime (at least
    /// 2; sizes above 2^24 count as 2^24). Default 65 537. Keep it at least
    /// 100 × the number of instances for an even spread; a build takes about
    /// `M · ln M` steps, and each slot takes 4 bytes.
    pub fn with_table_size(mut self, slots: usize) -> Self {
        self.table_size = next_prime(slots.min(1 << 24));
        self
    }

    /// The table size in slots (a prime; default 65 537).
    pub fn table_size(&self) -> usize {
        self.table_size
    }
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ConsistentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsistentHash")
            .field("table_size", &self.table_size)
            .finish_non_exhaustive()
    }
}

impl Rule for ConsistentHash {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        let endpoints = snapshot.endpoints();
        let hashes: Box<[u64]> = endpoints
            .iter()
            .map(|e| e.instance().identity_hash())
            .collect();
        Arc::new(ConsistentHashPicker {
            slots: fill_table(endpoints, &hashes, self.table_size).0.into(),
            hashes,
            snapshot: Arc::clone(snapshot),
            cursor: Arc::clone(&self.cursor),
            offset: self.cursor.anchor(snapshot.endpoints(), snapshot.len()),
            unhealthy: UnhealthyMemo::default(),
        })
    }

    fn name(&self) -> &'static str {
        "consistent_hash"
    }
}

/// The picker of [`ConsistentHash`]: the filled table of one list.
struct ConsistentHashPicker {
    snapshot: Arc<Snapshot>,
    cursor: Arc<Cursor>,
    /// Added to every keyless step (see `Cursor::anchor`).
    offset: usize,
    /// Slot → index into the snapshot's endpoints.
    slots: Box<[u32]>,
    /// The identity hash of each endpoint, by index.
    hashes: Box<[u64]>,
    /// The unhealthy positions of the keyless round robin's health epoch.
    unhealthy: UnhealthyMemo,
}

impl fmt::Debug for ConsistentHashPicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsistentHashPicker")
            .field("instances", &self.snapshot.len())
            .field("table_size", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl ConsistentHashPicker {
    /// The member of `domain` with the highest rendezvous score for `key`
    /// (ties: the higher identity hash, then the later position). One
    /// membership test per position of `domain`.
    fn rendezvous(&self, member: Member<'_>, domain: &[u32], key: u64) -> Option<&Endpoint> {
        let endpoints = self.snapshot.endpoints();
        let k = mix64(key);
        domain
            .iter()
            .map(|&i| i as usize)
            .filter_map(|i| Some((i, endpoints.get(i)?, *self.hashes.get(i)?)))
            .filter(|&(i, e, _)| member(i, e))
            .max_by_key(|&(_, _, h)| (mix64(k ^ h), h))
            .map(|(_, e, _)| e)
    }

    /// The first member in the key's probe sequence of the table (slot
    /// `first`, then steps of the key's own stride), after checking (inside
    /// `domain` when given) that the tier has one; round robin over the
    /// domain when no slot holds a member (a table smaller than the list).
    fn walk(
        &self,
        ctx: &PickContext<'_>,
        member: Member<'_>,
        domain: Domain<'_>,
        first: usize,
        key: u64,
    ) -> Option<&Endpoint> {
        let endpoints = self.snapshot.endpoints();
        let is_member = |i: usize| endpoints.get(i).is_some_and(|e| member(i, e));
        let any = match domain {
            Some(d) => d.iter().any(|&i| is_member(i as usize)),
            None => (0..endpoints.len()).any(is_member),
        };
        if !any {
            return None;
        }
        // Each key steps by a stride of its own (double hashing), so the
        // keys of a slot whose owner is not a member spread over the
        // members in proportion to their slots. With one stride (the next
        // slot), they went to whoever owns the slots after that owner's:
        // the lockstep fill makes that owner depend on the skips, and with
        // one of 3 instances excluded its keys split about 63/37.
        // M is prime, so any stride in 1..M visits every slot in M steps.
        let m = self.slots.len();
        let stride =
            usize::try_from(mix64(key ^ PROBE_SALT) % (m as u64 - 1).max(1)).map_or(1, |s| s + 1);
        let mut at = first;
        (0..m)
            .map(|_| {
                let slot = self.slots.get(at).map_or(usize::MAX, |&i| i as usize);
                at = (at + stride) % m;
                slot
            })
            .find(|&i| is_member(i))
            .and_then(|i| endpoints.get(i))
            .or_else(|| {
                let k = self.cursor.step(ctx, endpoints).wrapping_add(self.offset);
                step_in(endpoints, member, domain, k)
            })
    }
}

impl Picker for ConsistentHashPicker {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint> {
        let endpoints = self.snapshot.endpoints();
        let m = self.slots.len();
        let Some(key) = ctx.hash_key().filter(|_| m > 0) else {
            let k = self.cursor.step(ctx, endpoints).wrapping_add(self.offset);
            if ctx.has_tiers() {
                return rotate(endpoints, ctx, k);
            }
            return self.unhealthy.nth_eligible(&self.snapshot, ctx, k);
        };
        let first = (mix64(key) % m as u64) as usize;
        if ctx.all_eligible() && !ctx.has_tiers() {
            return endpoints.get(self.slots[first] as usize);
        }
        ctx.find_tier_in(&mut |member, domain| match domain {
            Some(d) if d.len() <= RENDEZVOUS_MAX => self.rendezvous(member, d, key),
            _ => self.walk(ctx, member, domain, first, key),
        })
    }

    /// A keyed pick chooses the key's instance every time.
    fn repeats_choice(&self, ctx: &PickContext<'_>) -> bool {
        ctx.hash_key().is_some()
    }

    fn keyed_choice(&self, ctx: &PickContext<'_>) -> bool {
        ctx.hash_key().is_some()
    }

    fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }
}

#[cfg(test)]
mod tests;
