//! Consistent hashing's table gives every instance about its share of the
//! keys, and a removed instance's keys spread over the others.
//!
//! Found by an attack on the lockstep Maglev fill with the paper's affine
//! preference orders, `(offset + j·skip) mod M`: two identities whose
//! skips are equal (or in a small ratio such as ±2) walk the same slots
//! one behind the other, so the follower reaches almost every slot after
//! its leader and owns only what it took before catching up, and it
//! inherits most of the leader's slots when the leader goes. With
//! 127.0.0.1 ports 1 to 32 and 200 000 keys, port 5 owned 0.674 of a fair
//! share, and removing port 29 sent 2 451 of its 6 656 keys to port 5 (a
//! fair share is 215). Over 100 lists of 32 random `10.x.y.z` hosts, 6 had
//! an instance below 0.9 of its share (worst 0.378); of 64, 16 (worst
//! 0.619). Each identity's walk now goes through a swap of each slot with
//! its XOR by a mask of its own, so two walks are no longer one lag apart.
//! Keyed picks depend only on the identities: no RNG or timing here (the
//! random lists come from a seeded generator).

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tower_ribbon::instance::{Endpoint, Instance};
use tower_ribbon::rule::{ConsistentHash, PickContext, Picker, Rule};
use tower_ribbon::snapshot::Snapshot;

const KEYS: u64 = 200_000;

fn key(k: u64) -> u64 {
    k.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn ports() -> Vec<Endpoint> {
    (1..=32u16)
        .map(|p| Endpoint::new(Instance::new("svc", "127.0.0.1", p).unwrap()))
        .collect()
}

fn build(list: &[Endpoint]) -> Arc<dyn Picker> {
    ConsistentHash::new().build(&Arc::new(Snapshot::new("svc", list.to_vec(), 1)))
}

/// The keys of `0..keys` each endpoint of `list` gets, by position.
fn counts(list: &[Endpoint], picker: &dyn Picker, keys: u64) -> Vec<u64> {
    let mut per = vec![0u64; list.len()];
    for k in 0..keys {
        let e = picker
            .pick(&PickContext::new().with_hash_key(key(k)))
            .unwrap();
        per[list.iter().position(|a| a.same_identity(e)).unwrap()] += 1;
    }
    per
}

/// The smallest count of `per` against a fair share, and its position.
fn lowest(per: &[u64]) -> (f64, usize) {
    let mean = per.iter().sum::<u64>() as f64 / per.len() as f64;
    per.iter()
        .enumerate()
        .map(|(i, &c)| (c as f64 / mean, i))
        .fold((f64::MAX, 0), |a, b| if b.0 < a.0 { b } else { a })
}

/// Port 5 owned 0.674 of a fair share (port 20 now owns the least, 0.957);
/// the documented spread is about √(n/M), 2.2 % here, plus 1.2 % of
/// sampling noise over 200 000 keys.
#[test]
fn every_port_owns_about_its_share_of_keys() {
    let list = ports();
    let per = counts(&list, &*build(&list), KEYS);
    let (low, at) = lowest(&per);
    println!("32 ports: lowest share {low:.3} (port {})", at + 1);
    assert!(low > 0.9, "port {} owns {low:.3} of a fair share", at + 1);
}

/// Removing port 29 sent 2 451 of its 6 656 keys to port 5, where a fair
/// share of them is 215: each of the 31 others now gets under 2× a fair
/// share of them (at most 266 of 6 236, fair 201), and the keys of the
/// others stay where they were.
#[test]
fn a_removed_ports_keys_spread_over_the_others() {
    let list = ports();
    let before = build(&list);
    let kept: Vec<Endpoint> = list
        .iter()
        .filter(|e| e.instance().port() != 29)
        .cloned()
        .collect();
    let after = build(&kept);
    let mut moved = BTreeMap::<u16, u64>::new();
    let mut held = 0;
    for k in 0..KEYS {
        let ctx = PickContext::new().with_hash_key(key(k));
        let (b, a) = (before.pick(&ctx).unwrap(), after.pick(&ctx).unwrap());
        if b.instance().port() == 29 {
            held += 1;
            *moved.entry(a.instance().port()).or_default() += 1;
        } else {
            assert!(
                a.same_identity(b),
                "key {k} moved off port {}",
                b.instance().port()
            );
        }
    }
    let fair = held as f64 / 31.0;
    let (most, port) = moved.iter().map(|(p, c)| (*c, *p)).max().unwrap();
    println!("port 29's {held} keys: most {most} to port {port} (fair {fair:.0})");
    assert!(
        (most as f64) < 2.0 * fair,
        "port {port} took {most} of port 29's {held} keys (fair: {fair:.0})"
    );
}

/// `n` random hosts `10.x.y.z:8080`, distinct.
fn random_list(rng: &mut SmallRng, n: usize) -> Vec<Endpoint> {
    let mut hosts = std::collections::BTreeSet::new();
    while hosts.len() < n {
        let [a, b, c] = [rng.random::<u8>(), rng.random::<u8>(), rng.random::<u8>()];
        hosts.insert(format!("10.{a}.{b}.{c}"));
    }
    hosts
        .into_iter()
        .map(|h| Endpoint::new(Instance::new("svc", h, 8080).unwrap()))
        .collect()
}

/// The inverse of SplitMix64's finaliser, which a pick applies to its key
/// before taking it modulo the table size (see the module docs): key
/// `unmix(s)` for `s` in `0..M` looks up slot `s`, so counting the picks
/// of these `M` keys counts each instance's slots exactly, without the
/// sampling noise of arbitrary keys (3.1 % at 64 instances and `M` keys).
fn unmix(mut z: u64) -> u64 {
    // The inverse of an odd multiplier modulo 2^64 (Newton's iteration).
    let inverse = |a: u64| {
        (0..6).fold(a, |x, _| {
            x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)))
        })
    };
    z ^= (z >> 31) ^ (z >> 62);
    z = z.wrapping_mul(inverse(0x94d0_49bb_1331_11eb));
    z ^= (z >> 27) ^ (z >> 54);
    z = z.wrapping_mul(inverse(0xbf58_476d_1ce4_e5b9));
    z ^ (z >> 30) ^ (z >> 60)
}

/// Each instance's slots in the default table, by position in `list`.
fn slots(list: &[Endpoint], picker: &dyn Picker) -> Vec<u64> {
    let mut per = vec![0u64; list.len()];
    for s in 0..ConsistentHash::DEFAULT_TABLE_SIZE as u64 {
        let ctx = PickContext::new().with_hash_key(unmix(s));
        let e = picker.pick(&ctx).unwrap();
        per[list.iter().position(|a| a.same_identity(e)).unwrap()] += 1;
    }
    per
}

/// The slot counts are exact: `unmix` inverts the finaliser.
#[test]
fn unmix_inverts_the_finaliser() {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for z in [0, 1, 65_536, 0xdead_beef, u64::MAX] {
        assert_eq!(mix(unmix(z)), z);
    }
    let list = ports();
    let per = slots(&list, &*build(&list));
    assert_eq!(per.iter().sum::<u64>(), 65_537);
}

/// 100 seeded lists each of 32 and of 64 random hosts: every instance
/// owns at least 0.9 of a fair share of the slots (lowest 0.939 and
/// 0.914; the spread is about √(n/M), 2.2 % and 3.1 %). Before, 6 lists
/// of 32 had an instance below 0.9 (worst 0.378), and 16 of 64 (worst
/// 0.619). In the first 25 lists of each, a removed instance's slots (the
/// list's first) go to no other instance more than 2× a fair share of
/// them at 32 (1.40×), 2.75× at 64, where a fair share is 16 slots and
/// the counts are noisier (2.31×; over 100 such removals, keyed
/// pseudo-random permutations of the slots reach 2.23× and affine walks
/// 5.13×), and no other slot moves.
#[test]
fn random_lists_give_every_instance_its_share() {
    for n in [32usize, 64] {
        let mut rng = SmallRng::seed_from_u64(0x5eed + n as u64);
        let (mut worst, mut worst_moved) = (f64::MAX, 0.0f64);
        for at in 0..100 {
            let list = random_list(&mut rng, n);
            let picker = build(&list);
            let (low, _) = lowest(&slots(&list, &*picker));
            worst = worst.min(low);
            if at >= 25 {
                continue;
            }
            let after = build(&list[1..]);
            let mut moved = vec![0u64; n];
            for s in 0..ConsistentHash::DEFAULT_TABLE_SIZE as u64 {
                let ctx = PickContext::new().with_hash_key(unmix(s));
                let (b, a) = (picker.pick(&ctx).unwrap(), after.pick(&ctx).unwrap());
                if b.same_identity(&list[0]) {
                    moved[list.iter().position(|e| e.same_identity(a)).unwrap()] += 1;
                } else {
                    assert!(a.same_identity(b));
                }
            }
            let fair = moved.iter().sum::<u64>() as f64 / (n - 1) as f64;
            worst_moved = worst_moved.max(*moved.iter().max().unwrap() as f64 / fair);
        }
        println!(
            "{n} instances: lowest share {worst:.3}; most of a removed \
             instance's slots on one: {worst_moved:.2}× a fair share"
        );
        assert!(
            worst >= 0.9,
            "{n}: an instance owns {worst:.3} of its share"
        );
        let bound = if n == 32 { 2.0 } else { 2.75 };
        assert!(worst_moved < bound, "{n}: {worst_moved:.2}× a fair share");
    }
}
