//! A rotating rule's cursor, in lanes: one for picks without a
//! preference, one for each tier a preference wrapper
//! ([`HintBased`](super::HintBased), [`Subset`](super::Subset),
//! [`StickySession`](super::StickySession),
//! [`SameInstancePreference`](super::SameInstancePreference)) confines
//! picks to, and one for retries.
//!
//! With one cursor, requests of two populations in turn split its steps:
//! hinted requests to a group of two among four instances, alternating
//! with requests without a hint, all got the even steps, so every hinted
//! request went to one member of the group and the others to every other
//! instance. The same happened with a one-instance tier (a sticky cookie),
//! which Spring Cloud LoadBalancer fixed by not moving its position for a
//! list of one (spring-cloud-commons#1144). Here every pick confined to a
//! preferred tier steps a lane of that tier, named by a key (its wrapper's
//! key, mixed with the keys of wrappers outside it), so hinted requests
//! inside a subset, two hint groups in turn, or sticky requests next to
//! hinted ones each rotate on their own.
//!
//! A key claims one of 509 lanes by its whole value at its first pick (see
//! `Cursor::step_preferred`). When a lane was chosen by a hash of the key (63
//! lanes), about 1 in 63 pairs of tiers shared one, and requests to two
//! hint groups in turn then piled on one member of each. A key looks at 16
//! slots from its home slot; with up to 200 tiers in use it finds its own
//! or a free one (tested with 100, 120, 200 and 300 hint groups in turn, each
//! split exactly). The table (about 8.6 KB) is allocated at a cursor's
//! first preferred pick, so services without preferences do not pay it.
//!
//! A tier of one instance (a sticky cookie, a same-instance preference)
//! whose instance is in the pick's first tier claims no lane: every rule
//! picks that instance whatever the step, so the pick takes step 0. Only
//! when its instance is not there (unhealthy, excluded by a retry) does its
//! key step a lane, for the fallback's rotation over the others. Before,
//! sticky traffic to 400 instances claimed 400 lanes, and 100 hint groups
//! in turn beside it lost exact turns (one group split 110 to 90).
//!
//! The table is bounded, so more tiers than it holds (hundreds of hint
//! groups or subsets, or sticky tiers whose instance is down) must share
//! it. A key finding
//! no room evicts one of its 16 slots by a second-chance sweep (each slot
//! has a bit set at every pick; the sweep clears set bits and takes the
//! first slot found clear), so keys of tiers gone with an old list, never
//! picked again, leave first. The lane it takes over starts from a
//! position mixed from its key and the lane's count, not from the count
//! the evicted tier left: with 127 lanes and a plain takeover, tiers
//! beyond capacity evicted one another in turn and each continued the
//! other's count, so tiers of two picked in turn got every other step
//! (120 hint groups of two in turn: one group split 67 to 133 of 200; a
//! simulation with random keys, 198 to 2). Beyond the table, picks in a
//! tier spread like random ones (1 000 groups: every split within 70 to
//! 130 of 200).
//!
//! Retries are a population too: a pick with exclusions (or a retry that
//! found every instance tried) is marked by `PickContext::retrying` and
//! steps a lane of its own. On one cursor each retry took the step after
//! its failed first pick, so with one failing instance of two every
//! request went to it first. That lane is reserved: no preferred tier's key
//! maps to it. A retry inside a preferred tier steps a lane of that tier
//! and the retry mark together.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::PickContext;
use super::context::RETRY_LANE;
use crate::instance::Endpoint;
use crate::rng::AtomicRng;

/// Lanes for preferred tiers (a prime, so keys spread over the home slots
/// whatever their low bits). A tier's key claims one of them by its whole
/// key (see `Cursor::step_preferred`); with up to 200 in use, a key finds its own
/// or a free lane within [`PROBES`] slots.
const PREFERRED_LANES: usize = 509;

/// Slots a key looks at from its home slot before it evicts one. Bounds a
/// pick's cost: at most this many loads, and as many stores when it
/// sweeps.
const PROBES: usize = 16;

/// The preferred lanes, their keys and their second-chance bits.
struct Table {
    lanes: Box<[AtomicUsize]>,
    /// The tier key holding each lane (0: free).
    keys: Box<[AtomicU64]>,
    /// Set at each pick in the lane; cleared by an evicting key's sweep.
    used: Box<[AtomicBool]>,
}

impl Table {
    fn new(start: usize) -> Self {
        Self {
            lanes: (0..PREFERRED_LANES)
                .map(|_| AtomicUsize::new(start))
                .collect(),
            keys: (0..PREFERRED_LANES).map(|_| AtomicU64::new(0)).collect(),
            used: (0..PREFERRED_LANES)
                .map(|_| AtomicBool::new(false))
                .collect(),
        }
    }
}

/// Rotation positions: one lane for picks without a preference, one for
/// retries without a preference, and a table of [`PREFERRED_LANES`] for
/// preferred tiers; see the [module docs](self).
pub(crate) struct Cursor {
    plain: AtomicUsize,
    retry: AtomicUsize,
    /// Where the preferred lanes start.
    start: usize,
    preferred: OnceLock<Table>,
    /// A fingerprint of the members of the last non-empty list a picker
    /// was anchored on (0: none yet), and that picker's offset.
    membership: AtomicU64,
    offset: AtomicUsize,
    /// Draws the offset of a list whose members changed (seeded by
    /// `start`, so repeatable).
    draws: AtomicRng,
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("next", &self.peek())
            .field("preferred_lanes", &self.preferred.get().is_some())
            .finish()
    }
}

impl Default for Cursor {
    fn default() -> Self {
        Self::new(0)
    }
}

impl Cursor {
    /// Every lane at `start`.
    pub(crate) fn new(start: usize) -> Self {
        Self {
            plain: AtomicUsize::new(start),
            retry: AtomicUsize::new(start),
            start,
            preferred: OnceLock::new(),
            membership: AtomicU64::new(0),
            offset: AtomicUsize::new(0),
            draws: AtomicRng::with_seed(start as u64),
        }
    }

    /// The offset a new picker over `endpoints` adds to every step, below
    /// `modulus` (the length of what its steps rotate over).
    ///
    /// A list with the members of the last one (a refresh that changed
    /// nothing, or the version only) keeps the last offset, so the
    /// rotation goes on where it was, and the first list keeps 0 (the
    /// rule's start). A list whose members changed starts at a position
    /// drawn at random in it, as gRPC's round robin does on each new
    /// picker (grpc-java#4462: Netflix measured 3 to 4 times the load on
    /// some nodes during deployments with pickers starting at 0;
    /// grpc-go#2579). The cursor outlives its lists, and carried over
    /// lists whose length changed between picks its steps locked onto
    /// positions: an instance that left and rejoined between picks
    /// ({0, 1, 2} and {0, 1} in turn, one pick each) left 400 of 600 to
    /// instance 1 and 100 to each other one under round robin, 0 to the
    /// rejoining one under weighted round robin (helper 131). Now about
    /// 250, 250 and 100. Members are compared with their order (id, host
    /// and port in list order; a refresh keeps the order of the instances
    /// it keeps). O(n): one pass over the list's identities.
    pub(crate) fn anchor(&self, endpoints: &[Endpoint], modulus: usize) -> usize {
        if endpoints.is_empty() {
            return self.offset.load(Ordering::Relaxed);
        }
        // The instance identities (id, host and port) in their order: a
        // list laid out anew is a change too (compared as a set, the same
        // members in a rotating layout kept the offset in step with the
        // layout and every pick on one instance; helper 133).
        let members = endpoints.iter().fold(mix(endpoints.len() as u64), |h, e| {
            mix(h ^ e.instance().identity_hash())
        }) | 1;
        match self.membership.swap(members, Ordering::AcqRel) {
            same if same == members => self.offset.load(Ordering::Relaxed),
            // The first list: the rule's start.
            0 => 0,
            _ => {
                let offset = self.draws.below(modulus.max(1));
                self.offset.store(offset, Ordering::Relaxed);
                offset
            }
        }
    }

    /// The step for a pick in `ctx`'s lane over `endpoints` (the picker's
    /// list), and moves it on.
    ///
    /// A preferred tier of one instance (a sticky or same-instance
    /// preference) whose instance is in the pick's first tier gets step 0
    /// and claims no lane: every rule picks that instance whatever the
    /// step. Only when it is not (unhealthy, excluded) does the tier's key
    /// step a lane, for the fallback's rotation over the others.
    #[inline]
    pub(crate) fn step(&self, ctx: &PickContext<'_>, endpoints: &[Endpoint]) -> usize {
        match ctx.lane() {
            0 => self.plain.fetch_add(1, Ordering::Relaxed),
            RETRY_LANE => self.retry.fetch_add(1, Ordering::Relaxed),
            _ if sole_first(ctx, endpoints) => 0,
            key => self.step_preferred(key),
        }
    }

    /// The step of the preferred lane `key` holds, claimed on its first
    /// pick: the first of [`PROBES`] slots from its home slot that holds
    /// `key` or is free. When none is, a second-chance sweep over those
    /// slots picks one to take over (the first whose bit is clear, clearing
    /// the set bits it passes; the home slot when all were set), and the
    /// lane restarts from a position mixed from `key` and its count. Races
    /// between pickers can at worst let two tiers share a lane for a while;
    /// a pick never fails or loops. Kept out of line: picks without a
    /// preference, the common case, do not carry it.
    #[inline(never)]
    fn step_preferred(&self, key: u64) -> usize {
        let t = self.preferred.get_or_init(|| Table::new(self.start));
        let home = (key % PREFERRED_LANES as u64) as usize;
        let slot = |i: usize| (home + i) % PREFERRED_LANES;
        let step = |s: usize| {
            if let Some(u) = t.used.get(s) {
                if !u.load(Ordering::Relaxed) {
                    u.store(true, Ordering::Relaxed);
                }
            }
            // Each key's steps are offset by a position mixed from the key,
            // so a new lane does not start at the cursor's start: the keys
            // of a tier change with its positions, so from the start every
            // list change's first pick in the tier went to the same
            // member. Added to every step of the key, not stored once at
            // the claim, where a racing picker could step before the store
            // and shift the rotation by it.
            let offset = mix(key ^ self.start as u64) as usize;
            t.lanes
                .get(s)
                .map_or(0, |l| l.fetch_add(1, Ordering::Relaxed))
                .wrapping_add(offset)
        };
        for i in 0..PROBES {
            let s = slot(i);
            let Some(k) = t.keys.get(s) else {
                break;
            };
            match k.load(Ordering::Relaxed) {
                held if held == key => return step(s),
                0 => match k.compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return step(s),
                    Err(held) if held == key => return step(s),
                    Err(_) => {}
                },
                _ => {}
            }
        }
        let victim = (0..PROBES)
            .map(slot)
            .find(|&s| {
                t.used
                    .get(s)
                    .is_some_and(|u| !u.swap(false, Ordering::Relaxed))
            })
            .unwrap_or(home);
        if let (Some(k), Some(l)) = (t.keys.get(victim), t.lanes.get(victim)) {
            k.store(key, Ordering::Relaxed);
            let count = l.load(Ordering::Relaxed) as u64;
            l.store(mix(key ^ count) as usize, Ordering::Relaxed);
        }
        step(victim)
    }

    /// The next step of the lane without a preference (for `Debug`).
    pub(crate) fn peek(&self) -> usize {
        self.plain.load(Ordering::Relaxed)
    }
}

/// Whether the pick's first tier is one instance, in that tier: its domain
/// is one position and the endpoint there passes the tier and eligibility.
fn sole_first(ctx: &PickContext<'_>, endpoints: &[Endpoint]) -> bool {
    match ctx.first_domain() {
        Some(&[i]) => endpoints
            .get(i as usize)
            .is_some_and(|e| ctx.in_first_tier(i as usize, e)),
        _ => false,
    }
}

/// A 64-bit finalizer (MurmurHash3's `fmix64`): a lane taken over starts
/// at a position no other tier's count predicts.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(key: u64) -> PickContext<'static> {
        PickContext::new().preferring(key)
    }

    /// The first step of a lane `key` claims free on a cursor started at
    /// `start`.
    fn claimed(key: u64, start: usize) -> usize {
        start.wrapping_add(mix(key ^ start as u64) as usize)
    }

    #[test]
    fn keys_with_one_home_slot_each_get_a_lane_of_their_own() {
        let c = Cursor::new(0);
        // PROBES keys whose hash lanes were all one: each rotates alone.
        let keys: Vec<u64> = (0..PROBES as u64).map(|i| 5 + 63 * i).collect();
        for round in 0..3 {
            for &k in &keys {
                assert_eq!(
                    c.step(&ctx(k), &[]),
                    claimed(k, 0).wrapping_add(round),
                    "key {k}"
                );
            }
        }
        // Without a preference and for retries: lanes of their own too.
        assert_eq!(c.step(&PickContext::new(), &[]), 0);
        assert_eq!(c.step(&PickContext::new().retrying(), &[]), 0);
        assert_eq!(c.peek(), 1);
    }

    /// Keys `7 + PREFERRED_LANES * i`: one home slot, 7.
    fn same_home(n: usize) -> Vec<u64> {
        (0..n as u64)
            .map(|i| 7 + PREFERRED_LANES as u64 * i)
            .collect()
    }

    #[test]
    fn a_key_finding_no_free_slot_evicts_one_not_picked_since_the_last_sweep() {
        let c = Cursor::new(0);
        let keys = same_home(PROBES + 2);
        for &k in &keys[..PROBES] {
            assert_eq!(c.step(&ctx(k), &[]), claimed(k, 0));
        }
        let t = c.preferred.get().unwrap();
        let held = |s: usize| t.keys[s].load(Ordering::Relaxed);
        // Every slot was picked since: the sweep clears all 16 bits and the
        // home slot is taken over, its lane restarting at a mixed position.
        let x = keys[PROBES];
        let first = c.step(&ctx(x), &[]);
        assert_eq!(held(7), x);
        // The lane's count: keys[0]'s one step from the start, 0.
        assert_eq!(first, (mix(x ^ 1) as usize).wrapping_add(claimed(x, 0)));
        assert_eq!(c.step(&ctx(x), &[]), first.wrapping_add(1));
        // x and keys[2] are picked again (their bits set); a new key y
        // passes slot 7 (x's) and evicts the first slot not picked since
        // the sweep, slot 8 (keys[1]'s), not slot 9 (keys[2]'s).
        assert_eq!(
            c.step(&ctx(keys[2]), &[]),
            claimed(keys[2], 0).wrapping_add(1)
        );
        let y = keys[PROBES + 1];
        let _ = c.step(&ctx(y), &[]);
        assert_eq!(held(8), y);
        assert_eq!(held(9), keys[2]);
        // The home slot's holder keeps its lane and count.
        assert_eq!(c.step(&ctx(x), &[]), first.wrapping_add(2));
    }

    #[test]
    fn a_cursor_allocates_its_preferred_lanes_at_the_first_preferred_pick() {
        let c = Cursor::new(3);
        assert_eq!(c.step(&PickContext::new(), &[]), 3);
        assert_eq!(c.step(&PickContext::new().retrying(), &[]), 3);
        assert!(c.preferred.get().is_none());
        assert_eq!(c.step(&ctx(42), &[]), claimed(42, 3));
        assert!(c.preferred.get().is_some());
        assert_eq!(c.peek(), 4);
    }

    #[test]
    fn sixty_three_live_tiers_rotate_on_their_own() {
        let c = Cursor::new(0);
        // Keys spread over the slots as a list's tier keys would.
        let keys: Vec<u64> = (1..=63u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        for round in 0..4 {
            for &k in &keys {
                assert_eq!(
                    c.step(&ctx(k), &[]),
                    claimed(k, 0).wrapping_add(round),
                    "key {k:#x}"
                );
            }
        }
    }

    /// A tier of one instance in the first tier takes step 0 and claims no
    /// lane (the table is not even allocated); the same tier with its
    /// instance excluded (a retry) or not in the first tier steps a lane of
    /// its own, for the fallback's rotation.
    #[test]
    fn a_tier_of_one_in_the_first_tier_claims_no_lane() {
        use crate::rule::Tier;
        use crate::rule::test_support::endpoints;
        let eps = endpoints(4);
        let c = Cursor::new(7);
        let only = |i: usize, _: &Endpoint| i == 2;
        let any = |_: usize, _: &Endpoint| true;
        let tiers: [Tier<'_>; 2] = [&only, &any];
        let one = [2u32];
        let domains = [Some(&one[..]), None];
        let base = PickContext::new();
        let mut link = None;
        let sticky = base
            .with_tiers_in(&mut link, &tiers, &domains)
            .preferring(5);
        for _ in 0..3 {
            assert_eq!(c.step(&sticky, &eps), 0);
        }
        assert!(c.preferred.get().is_none());
        // Its instance excluded: the fallback rotates in the tier's lane.
        let excluded = [eps[2].clone()];
        let retry = PickContext::new().with_excluded(&excluded);
        let mut link = None;
        let away = retry
            .with_tiers_in(&mut link, &tiers, &domains)
            .preferring(5);
        assert_eq!(c.step(&away, &eps), claimed(away.lane(), 7));
        assert_eq!(c.step(&away, &eps), claimed(away.lane(), 7).wrapping_add(1));
        // A domain of one whose position is outside the list: a lane too.
        let outside = [9u32];
        let domains = [Some(&outside[..]), None];
        let mut link = None;
        let stale = base
            .with_tiers_in(&mut link, &tiers, &domains)
            .preferring(6);
        assert_eq!(c.step(&stale, &eps), claimed(stale.lane(), 7));
        // Without a preference, the plain lane steps as before.
        assert_eq!(c.step(&PickContext::new(), &eps), 7);
    }
}

#[cfg(test)]
#[path = "cursor_relayout_tests.rs"]
mod relayout_tests;
