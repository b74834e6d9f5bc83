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
//! A key claims one of 127 lanes by its whole value at its first pick (see
//! `Cursor::slot_of`). When a lane was chosen by a hash of the key (63
//! lanes), about 1 in 63 pairs of tiers shared one, and requests to two
//! hint groups in turn then piled on one member of each. Two tiers share a
//! lane now only while 16 slots from a key's home slot are all held by
//! others: with up to 32 tiers in use, never but for vanishing odds. With
//! more (sticky traffic to over 32 instances, each its own tier), a key
//! finding no room clears those slots and takes its home one, so keys of
//! tiers gone with an old list leave, and a pushed-out tier claims a lane
//! again at its next pick.
//!
//! Retries are a population too: a pick with exclusions (or a retry that
//! found every instance tried) is marked by `PickContext::retrying` and
//! steps a lane of its own. On one cursor each retry took the step after
//! its failed first pick, so with one failing instance of two every
//! request went to it first. That lane is reserved: no preferred tier's key
//! maps to it. A retry inside a preferred tier steps a lane of that tier
//! and the retry mark together.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::PickContext;
use super::context::RETRY_LANE;

/// Lanes for preferred tiers. A tier's key claims one of them by its whole
/// key (see `Cursor::slot_of`); with up to a quarter of them in use, a key
/// finds a free lane within [`PROBES`] slots but for vanishing odds.
const PREFERRED_LANES: usize = 127;

/// Slots a key looks at from its home slot before it takes its home slot
/// over. Bounds a pick's cost (at most this many loads, and as many stores
/// when the slots are cleared), and clears keys of tiers that no longer
/// exist (a list change moves a group's positions, so its key changes).
const PROBES: usize = 16;

/// Rotation positions: one lane for picks without a preference,
/// [`PREFERRED_LANES`] for preferred tiers, and one for retries without a
/// preference; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Cursor {
    lanes: Box<[AtomicUsize]>,
    /// The tier key holding each preferred lane (0: free).
    keys: Box<[AtomicU64]>,
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
            lanes: (0..PREFERRED_LANES + 2)
                .map(|_| AtomicUsize::new(start))
                .collect(),
            keys: (0..PREFERRED_LANES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The step for a pick in `ctx`'s lane, and moves it on.
    #[inline]
    pub(crate) fn step(&self, ctx: &PickContext<'_>) -> usize {
        let lane = match ctx.lane() {
            0 => 0,
            RETRY_LANE => PREFERRED_LANES + 1,
            key => 1 + self.slot_of(key),
        };
        self.lanes
            .get(lane)
            .map_or(0, |l| l.fetch_add(1, Ordering::Relaxed))
    }

    /// The preferred lane `key` holds, claimed on its first pick: the first
    /// of [`PROBES`] slots from its home slot that holds `key` or is free.
    /// When none is, those slots are cleared and `key` takes its home slot
    /// (keys of tiers gone with an old list leave this way; a live tier
    /// pushed out claims a slot again at its next pick). Races between
    /// pickers can at worst let two tiers share a lane for a while, as a
    /// hashed lane did; a pick never fails or loops. Kept out of line:
    /// picks without a preference, the common case, do not carry it.
    #[inline(never)]
    fn slot_of(&self, key: u64) -> usize {
        let home = (key % PREFERRED_LANES as u64) as usize;
        let slot = |i: usize| (home + i) % PREFERRED_LANES;
        for i in 0..PROBES {
            let Some(k) = self.keys.get(slot(i)) else {
                return home;
            };
            match k.load(Ordering::Relaxed) {
                held if held == key => return slot(i),
                0 => match k.compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return slot(i),
                    Err(held) if held == key => return slot(i),
                    Err(_) => {}
                },
                _ => {}
            }
        }
        for i in 1..PROBES {
            if let Some(k) = self.keys.get(slot(i)) {
                k.store(0, Ordering::Relaxed);
            }
        }
        if let Some(k) = self.keys.get(home) {
            k.store(key, Ordering::Relaxed);
        }
        home
    }

    /// The next step of the lane without a preference (for `Debug`).
    pub(crate) fn peek(&self) -> usize {
        self.lanes.first().map_or(0, |l| l.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(key: u64) -> PickContext<'static> {
        PickContext::new().preferring(key)
    }

    #[test]
    fn keys_with_one_home_slot_each_get_a_lane_of_their_own() {
        let c = Cursor::new(0);
        // PROBES keys whose hash lanes were all one: each rotates alone.
        let keys: Vec<u64> = (0..PROBES as u64).map(|i| 5 + 63 * i).collect();
        for round in 0..3 {
            for &k in &keys {
                assert_eq!(c.step(&ctx(k)), round, "key {k}");
            }
        }
        // Without a preference and for retries: lanes of their own too.
        assert_eq!(c.step(&PickContext::new()), 0);
        assert_eq!(c.step(&PickContext::new().retrying()), 0);
        assert_eq!(c.peek(), 1);
    }

    #[test]
    fn a_key_finding_no_free_slot_takes_its_home_over_and_the_others_come_back() {
        let c = Cursor::new(0);
        let lanes = PREFERRED_LANES as u64;
        let keys: Vec<u64> = (0..=PROBES as u64).map(|i| 7 + lanes * i).collect();
        for &k in &keys[..PROBES] {
            assert_eq!(c.step(&ctx(k)), 0);
        }
        // One more on the same home: its slots are cleared, it takes the home
        // lane (which the first key had stepped once).
        let last = keys[PROBES];
        assert_eq!(c.step(&ctx(last)), 1);
        assert_eq!(c.keys[7].load(Ordering::Relaxed), last);
        assert!(
            c.keys[8..7 + PROBES]
                .iter()
                .all(|k| k.load(Ordering::Relaxed) == 0)
        );
        // A key pushed out claims the first free slot again (its old lane
        // here, stepped once) and keeps rotating there.
        assert_eq!(c.step(&ctx(keys[1])), 1);
        assert_eq!(c.step(&ctx(keys[1])), 2);
        assert_eq!(c.keys[8].load(Ordering::Relaxed), keys[1]);
        assert_eq!(c.step(&ctx(last)), 2);
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
                assert_eq!(c.step(&ctx(k)), round, "key {k:#x}");
            }
        }
    }
}
