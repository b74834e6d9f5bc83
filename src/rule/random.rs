//! Uniformly random choice among the eligible instances (Ribbon
//! `RandomRule`, Spring Cloud LoadBalancer `RandomLoadBalancer`).
//!
//! The draw is over the eligible endpoints of the same list it then indexes
//! (Ribbon drew over one list and read another). Draws come from a
//! lock-free seeded generator, so `Random::with_seed` gives repeatable
//! sequences in tests.

use std::fmt;

use super::support::nth_eligible;
use super::{PickContext, Rule};
use crate::discovery::Snapshot;
use crate::instance::Endpoint;
use crate::rng::AtomicRng;

/// Uniform random choice among eligible endpoints.
pub struct Random {
    rng: AtomicRng,
}

impl Random {
    /// A rule seeded from the operating system's entropy.
    pub fn new() -> Self {
        Self {
            rng: AtomicRng::from_entropy(),
        }
    }

    /// A rule whose draws are fixed by `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            rng: AtomicRng::with_seed(seed),
        }
    }
}

impl Default for Random {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Random {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Random").finish_non_exhaustive()
    }
}

impl Rule for Random {
    #[inline]
    fn choose<'s>(&self, snapshot: &'s Snapshot, ctx: &PickContext<'_>) -> Option<&'s Endpoint> {
        let endpoints = snapshot.endpoints();
        if endpoints.is_empty() {
            return None;
        }
        let k = if ctx.all_eligible() {
            self.rng.below(endpoints.len())
        } else {
            let eligible = endpoints.iter().filter(|e| ctx.is_eligible(e)).count();
            if eligible == 0 {
                return None;
            }
            self.rng.below(eligible)
        };
        nth_eligible(endpoints, ctx, k)
    }

    fn name(&self) -> &'static str {
        "random"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::test_support::{index, snapshot};

    #[test]
    fn seeded_spread_is_even_and_repeatable() {
        let s = snapshot(4);
        let excluded = [s.endpoints()[3].clone()];
        let ctx = PickContext::new().with_excluded(&excluded);
        let (a, b) = (Random::with_seed(9), Random::with_seed(9));
        let mut counts = [0u32; 4];
        for _ in 0..30_000 {
            let x = index(a.choose(&s, &ctx).unwrap());
            assert_eq!(x, index(b.choose(&s, &ctx).unwrap()));
            counts[x] += 1;
        }
        assert_eq!(counts[3], 0);
        for c in &counts[..3] {
            assert!((9_700..=10_300).contains(c), "{counts:?}");
        }
        assert!(
            a.choose(&Snapshot::empty("s"), &PickContext::new())
                .is_none()
        );
    }
}
