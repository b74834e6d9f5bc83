//! Each identity's preference order of the table's slots: a keyed
//! pseudo-random permutation of `0..M`, walked one slot a step.
//!
//! The order is a 4-round Feistel network keyed by the identity hash, over
//! mixed radices: a value is a pair `(hi, lo)` in `a × b`, `a = ⌈√M⌉`,
//! `b = ⌈M/a⌉` (257 × 256 for the default `M` = 65 537), and each round
//! adds its function of one half to the other modulo that half's range
//! (the generalized Feistel cipher of Black and Rogaway, "Ciphers with
//! Arbitrary Finite Domains", CT-RSA 2002). The values `≥ M` are skipped
//! (cycle walking over a counter): walker `h` visits `F_h(0), F_h(1), …`
//! restricted to `0..M`. A Feistel network is a bijection whatever its
//! round function (here the SplitMix64 finaliser of the round's key and
//! half), so a walker visits every slot exactly once in `M` steps, which
//! take at most `a·b` evaluations in all, fewer than `M + a + b` (65 792
//! for 65 537). The orders of two
//! identities are as unrelated as their keys: no two walk the same slots
//! one behind the other, as two with one Maglev `skip` did.

use crate::hash::mix64;

/// Salt of an identity's order key (independent of its other hashes).
const ORDER_SALT: u64 = 0x6a09_e667_f3bc_c909;

/// The Feistel network's rounds (even: the halves end in their ranges).
const ROUNDS: u64 = 4;

/// The permutations of `0..m`, one per key, over the grid `a × b ≥ m`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Orders {
    m: u64,
    /// Range of the high half (the first left half).
    a: u64,
    /// Range of the low half.
    b: u64,
}

/// One identity's walk through its order: the slot of step `j` is the
/// `j`-th value of the permutation that falls inside the table.
#[derive(Clone, Copy, Debug)]
pub(super) struct Walker {
    key: u64,
    /// The counter, `hi · b + lo`.
    hi: u64,
    lo: u64,
}

/// `h`'s high 32 bits scaled to `0..n` (Lemire's multiply-shift range).
fn below(h: u64, n: u64) -> u64 {
    ((h >> 32) * n) >> 32
}

impl Orders {
    /// The orders of a table of `m ≥ 1` slots.
    pub(super) fn new(m: usize) -> Self {
        let m = m.max(1) as u64;
        let a = m.isqrt() + u64::from(m.isqrt() * m.isqrt() < m);
        Self {
            m,
            a,
            b: m.div_ceil(a),
        }
    }

    /// The walker of identity hash `h`, before its first step.
    pub(super) fn walker(&self, h: u64) -> Walker {
        Walker {
            key: mix64(h ^ ORDER_SALT),
            hi: 0,
            lo: 0,
        }
    }

    /// The keyed bijection of `0..a·b`, as `(hi, lo)` with `hi < a` and
    /// `lo < b`: a Feistel network over mixed radices, whose halves swap
    /// ranges each round and add the round function modulo the range (an
    /// even count of rounds gives the input's ranges back).
    #[inline]
    fn permute(&self, key: u64, hi: u64, lo: u64) -> u64 {
        let (mut l, mut r) = (hi, lo);
        let (mut nl, mut nr) = (self.a, self.b);
        for round in 0..ROUNDS {
            let f = below(mix64(key ^ (r | (round << 32))), nl);
            let s = l + f;
            (l, r) = (r, if s >= nl { s - nl } else { s });
            (nl, nr) = (nr, nl);
        }
        l * self.b + r
    }

    /// The walker's next slot (`0..m`).
    #[inline]
    pub(super) fn next(&self, w: &mut Walker) -> usize {
        loop {
            let slot = self.permute(w.key, w.hi, w.lo);
            w.lo += 1;
            if w.lo == self.b {
                w.lo = 0;
                w.hi += 1;
                if w.hi == self.a {
                    w.hi = 0;
                }
            }
            if slot < self.m {
                return slot as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every walker visits every slot once in `m` steps, for tables of 2
    /// to 2^17 + 1 slots (squares, sizes just past and just below a square
    /// or a power of two), and again in the same order after that.
    #[test]
    fn a_walk_visits_every_slot_once() {
        for m in [
            2usize, 3, 4, 5, 7, 8, 9, 31, 1_009, 4_096, 65_535, 65_537, 131_073,
        ] {
            let orders = Orders::new(m);
            for h in [0u64, 1, 0xdead_beef, u64::MAX] {
                let mut w = orders.walker(h);
                let mut seen = vec![false; m];
                let first: Vec<usize> = (0..m).map(|_| orders.next(&mut w)).collect();
                for &s in &first {
                    assert!(!seen[s], "m {m}, h {h}: slot {s} twice");
                    seen[s] = true;
                }
                let again: Vec<usize> = (0..m.min(100)).map(|_| orders.next(&mut w)).collect();
                assert_eq!(again, first[..m.min(100)], "m {m}");
            }
        }
    }

    /// Two keys' orders are unrelated: over 100 pairs of walkers on the
    /// default table, the slot one walker visits at step `j` is visited by
    /// the other at step `j + d` for at most a handful of steps `j` (any
    /// lag `d`; a shared Maglev skip made it every step for one `d`).
    #[test]
    fn no_walker_follows_another() {
        let m = 65_537;
        let orders = Orders::new(m);
        let steps = 2_000;
        let walk = |h: u64| -> Vec<usize> {
            let mut w = orders.walker(h);
            (0..m).map(|_| orders.next(&mut w)).collect()
        };
        for pair in 0..100u64 {
            let a = walk(crate::hash::mix64(pair));
            let b = walk(crate::hash::mix64(pair + 1_000));
            let mut at_b = vec![0usize; m];
            for (j, &s) in b.iter().enumerate() {
                at_b[s] = j;
            }
            let mut lags = std::collections::HashMap::<isize, u32>::new();
            for (j, &s) in a.iter().take(steps).enumerate() {
                *lags.entry(at_b[s] as isize - j as isize).or_default() += 1;
            }
            let most = lags.values().copied().max().unwrap();
            assert!(
                most <= 4,
                "pair {pair}: one lag for {most} of {steps} steps"
            );
        }
    }
}
