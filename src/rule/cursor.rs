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
//! list of one (spring-cloud-commons#1144); here such a pick does not reach
//! the wrapped rule at all, and picks that do go through a preferred tier
//! step their own lane.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::PickContext;

/// Two rotation positions; see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    main: AtomicUsize,
    preferred: AtomicUsize,
}

impl Cursor {
    /// Both lanes at `start`.
    pub(crate) fn new(start: usize) -> Self {
        Self {
            main: AtomicUsize::new(start),
            preferred: AtomicUsize::new(start),
        }
    }

    /// The step for a pick in `ctx`'s lane, and moves it on.
    #[inline]
    pub(crate) fn step(&self, ctx: &PickContext<'_>) -> usize {
        let lane = if ctx.is_preferring() {
            &self.preferred
        } else {
            &self.main
        };
        lane.fetch_add(1, Ordering::Relaxed)
    }

    /// The next step of the lane without a preference (for `Debug`).
    pub(crate) fn peek(&self) -> usize {
        self.main.load(Ordering::Relaxed)
    }
}
