//! The three pieces of Java that Spring Cloud LoadBalancer's deterministic
//! subsetting uses, so a Rust client and a Java client with the same
//! instance id compute the same subset: `String.hashCode`,
//! `java.util.Random` (the 48-bit linear congruential generator of its
//! specification, Knuth TAOCP vol. 2 §3.2.1) and `Collections.shuffle`
//! (Durstenfeld's Fisher-Yates, from the last position down).

/// Java's `String.hashCode`: `s[0]·31^(n−1) + … + s[n−1]` over the UTF-16
/// code units, wrapping in 32 bits.
pub(crate) fn string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

const MULTIPLIER: u64 = 0x5_DEEC_E66D;
const ADDEND: u64 = 0xB;
const MASK: u64 = (1 << 48) - 1;

/// `java.util.Random`, as specified in its Javadoc.
#[derive(Debug)]
pub(crate) struct JavaRandom {
    seed: u64,
}

impl JavaRandom {
    /// `new Random(seed)`.
    pub(crate) fn new(seed: i64) -> Self {
        Self {
            seed: (seed as u64 ^ MULTIPLIER) & MASK,
        }
    }

    /// `next(bits)`, `bits` in 1..=32.
    fn next(&mut self, bits: u32) -> i32 {
        self.seed = self.seed.wrapping_mul(MULTIPLIER).wrapping_add(ADDEND) & MASK;
        (self.seed >> (48 - bits)) as i32
    }

    /// `nextInt(bound)` for `bound > 0` (0 for any other bound, where Java
    /// throws; callers never pass one).
    pub(crate) fn next_int(&mut self, bound: i32) -> i32 {
        if bound <= 0 {
            return 0;
        }
        let mut r = self.next(31);
        let m = bound - 1;
        if bound & m == 0 {
            return ((i64::from(bound) * i64::from(r)) >> 31) as i32;
        }
        let mut u = r;
        loop {
            r = u % bound;
            if u.wrapping_sub(r).wrapping_add(m) >= 0 {
                return r;
            }
            u = self.next(31);
        }
    }
}

/// `Collections.shuffle(list, rnd)`: for `i` from the size down to 2, swap
/// positions `i − 1` and `rnd.nextInt(i)`. Lists longer than `i32::MAX`
/// are left as they are (Java's lists cannot be that long).
pub(crate) fn shuffle<T>(list: &mut [T], rnd: &mut JavaRandom) {
    let Ok(len) = i32::try_from(list.len()) else {
        return;
    };
    for i in (2..=len).rev() {
        let j = rnd.next_int(i);
        if let (Ok(a), Ok(b)) = (usize::try_from(i - 1), usize::try_from(j)) {
            list.swap(a, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_java() {
        // Printed by OpenJDK 17: new Random(42).nextInt(7) ×5, nextInt(16)
        // ×3, nextInt(Integer.MAX_VALUE).
        let mut r = JavaRandom::new(42);
        let got: Vec<i32> = [7, 7, 7, 7, 7, 16, 16, 16, i32::MAX]
            .iter()
            .map(|b| r.next_int(*b))
            .collect();
        assert_eq!(got, [1, 5, 6, 3, 5, 15, 4, 11, 1_429_255_519]);
        assert_eq!(string_hash("client-1"), 908_407_471);
        assert_eq!(string_hash("gateway:8080"), -636_057_754);
        assert_eq!(string_hash("ünïcode-☃"), -1_471_483_744);
        assert_eq!(string_hash(""), 0);
        assert_eq!(JavaRandom::new(1).next_int(0), 0);
    }
}
