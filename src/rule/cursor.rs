//! A rotating rule's cursor, in two lanes: one for picks without a
//! preference, one for picks a preference wrapper
//! ([`HintBased`](super::HintBased), [`Subset`](super::Subset),
//! [`StickySession`](super::StickySession),
//! [`SameInstancePreference`](super::SameInstancePreference)) confines to
//! its preferred tier.
//!
//! With one cursor, requests of two populations in turn split its steps:
//! hinted requests to a group of two among four instances, alternating
//! with requests without a hint, all got the even steps, so every hinted
//! request went to one member of the group and the others to every other
//! instance. The same happened with a one-instance tier (a sticky cookie),
//! which Spring Cloud LoadBalancer fixed by not moving its position for a
//! list of one (spring-cloud-commons#1144). Here every pick confined to a
//! preferred tier steps a lane chosen by that tier (its wrapper's key,
//! mixed with the keys of wrappers outside it), so hinted requests inside
//! a subset, two hint groups in turn, or sticky requests next to hinted
//! ones each rotate on their own.
//!
//! Retries are a population too: a pick with exclusions (or a retry that
//! found every instance tried) is marked by `PickContext::retrying` and
//! steps a lane of its own. On one cursor each retry took the step after
//! its failed first pick, so with one failing instance of two every
//! request went to it first. That lane is reserved: no preferred tier's key
//! maps to it (as one more hashed key it shared a lane with about 1 in 63
//! hint groups, whose rotation retries then moved). A retry inside a
//! preferred tier steps a hashed lane of that tier and the retry mark.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::PickContext;
use super::context::RETRY_LANE;

/// Lanes for preferred tiers; a tier's key picks one. Two groups share a
/// lane only when their keys collide (about 1 in 63 pairs).
const PREFERRED_LANES: usize = 63;

/// Rotation positions: one lane for picks without a preference,
/// [`PREFERRED_LANES`] for preferred tiers, and one for retries without a
/// preference; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Cursor {
    lanes: Box<[AtomicUsize]>,
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
        }
    }

    /// The step for a pick in `ctx`'s lane, and moves it on.
    #[inline]
    pub(crate) fn step(&self, ctx: &PickContext<'_>) -> usize {
        let lane = match ctx.lane() {
            0 => 0,
            RETRY_LANE => PREFERRED_LANES + 1,
            key => 1 + (key % PREFERRED_LANES as u64) as usize,
        };
        self.lanes
            .get(lane)
            .map_or(0, |l| l.fetch_add(1, Ordering::Relaxed))
    }

    /// The next step of the lane without a preference (for `Debug`).
    pub(crate) fn peek(&self) -> usize {
        self.lanes.first().map_or(0, |l| l.load(Ordering::Relaxed))
    }
}
