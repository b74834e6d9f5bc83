//! A seedable random source that many threads can draw from without a lock.
//!
//! `rand` has fast generators, but none that is `Sync` without a mutex; a
//! rule is shared by every request task, so it draws from this: an atomic
//! counter advanced by the golden-ratio increment and finished with the
//! SplitMix64 mixer (Steele, Lea, Flood: "Fast splittable pseudorandom
//! number generators", OOPSLA 2014). Sequential draws from one seed are
//! exactly repeatable, which makes randomized rules testable.

use std::sync::atomic::{AtomicU64, Ordering};

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A lock-free, seedable source of uniform `u64`s.
#[derive(Debug)]
pub(crate) struct AtomicRng {
    state: AtomicU64,
}

impl AtomicRng {
    /// A generator whose draws are fixed by `seed`.
    pub(crate) fn with_seed(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A generator seeded from the operating system's entropy (via `rand`).
    pub(crate) fn from_entropy() -> Self {
        Self::with_seed(rand::random())
    }

    /// The next uniform `u64`.
    pub(crate) fn next_u64(&self) -> u64 {
        crate::hash::mix64(
            self.state
                .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
                .wrapping_add(GOLDEN_GAMMA),
        )
    }

    /// A uniform index in `0..n` (Lemire's multiply-shift; `n` must be > 0).
    pub(crate) fn below(&self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A uniform `f64` in `[0, 1)`.
    #[allow(dead_code)]
    pub(crate) fn unit_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_draws_repeat_and_stay_in_range() {
        let a = AtomicRng::with_seed(7);
        let b = AtomicRng::with_seed(7);
        for _ in 0..1000 {
            let (x, y) = (a.below(10), b.below(10));
            assert_eq!(x, y);
            assert!(x < 10);
        }
        let u = a.unit_f64();
        assert!((0.0..1.0).contains(&u));
    }

    #[test]
    fn below_is_roughly_uniform() {
        let r = AtomicRng::with_seed(1);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[r.below(4)] += 1;
        }
        for c in counts {
            assert!((9_600..=10_400).contains(&c), "{counts:?}");
        }
    }
}
