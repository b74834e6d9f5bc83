//! Invariants of the rules, checked with proptest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use proptest::prelude::*;
use tower_ribbon::discovery::Snapshot;
use tower_ribbon::instance::{Endpoint, Instance};
use tower_ribbon::rule::{PickContext, Random, RoundRobin, Rule};

fn snapshot(ports: &[u16], version: u64) -> Snapshot {
    let endpoints = ports
        .iter()
        .map(|p| Endpoint::new(Instance::new("svc", "127.0.0.1", *p).unwrap()))
        .collect();
    Snapshot::new("svc", endpoints, version)
}

/// The endpoints of `snap` whose `mask` entry is true.
fn masked(snap: &Snapshot, mask: &[bool]) -> Vec<Endpoint> {
    snap.endpoints()
        .iter()
        .zip(mask)
        .filter(|(_, ex)| **ex)
        .map(|(e, _)| e.clone())
        .collect()
}

fn rules(seed: u64) -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(RoundRobin::with_start(seed as usize)),
        Box::new(Random::with_seed(seed)),
    ]
}

proptest! {
    /// Every pick is a member of the snapshot it read and never an excluded
    /// endpoint; `None` only when nothing is eligible.
    #[test]
    fn picks_are_members_and_never_excluded(
        n in 0usize..40,
        excluded_mask in proptest::collection::vec(any::<bool>(), 40),
        seed in any::<u64>(),
        picks in 1usize..200,
    ) {
        let ports: Vec<u16> = (1..=n as u16).collect();
        let snap = snapshot(&ports, 1);
        let excluded = masked(&snap, &excluded_mask);
        let eligible = n - excluded.len();
        let ctx = PickContext::new().with_excluded(&excluded);
        for rule in rules(seed) {
            for _ in 0..picks {
                match rule.choose(&snap, &ctx) {
                    Some(e) => {
                        prop_assert!(snap.endpoints().iter().any(|x| std::ptr::eq(x, e)));
                        prop_assert!(!excluded.iter().any(|x| x.same_identity(e)));
                    }
                    None => prop_assert_eq!(eligible, 0, "{} returned None", rule.name()),
                }
            }
        }
    }

    /// k sequential round-robin picks over n eligible endpoints give each
    /// ⌊k/n⌋ or ⌈k/n⌉, whatever the start and the exclusions.
    #[test]
    fn round_robin_is_fair(
        n in 1usize..30,
        excluded_mask in proptest::collection::vec(any::<bool>(), 30),
        start in any::<usize>(),
        k in 0usize..500,
    ) {
        let ports: Vec<u16> = (1..=n as u16).collect();
        let snap = snapshot(&ports, 1);
        let mut excluded = masked(&snap, &excluded_mask);
        if excluded.len() == n {
            excluded.pop();
        }
        let m = n - excluded.len();
        let ctx = PickContext::new().with_excluded(&excluded);
        // Keep clear of the wrap, where the rotation restarts once.
        let rr = RoundRobin::with_start(start % (usize::MAX / 2));
        let mut counts = vec![0usize; n];
        for _ in 0..k {
            let e = rr.choose(&snap, &ctx).expect("an eligible endpoint");
            counts[(e.instance().port() - 1) as usize] += 1;
        }
        for (i, e) in snap.endpoints().iter().enumerate() {
            let c = counts[i];
            if excluded.iter().any(|x| x.same_identity(e)) {
                prop_assert_eq!(c, 0);
            } else {
                prop_assert!(c == k / m || c == k.div_ceil(m), "count {} for k={} m={}", c, k, m);
            }
        }
    }
}

/// Picking while another thread swaps lists never panics and never returns
/// an endpoint absent from the snapshot the pick read.
#[test]
fn picking_while_lists_are_swapped() {
    let lists: Vec<Arc<Snapshot>> = (0..8u16)
        .map(|v| {
            let ports: Vec<u16> = (0..(v * 3 % 7)).map(|p| 1000 * (v + 1) + p).collect();
            Arc::new(snapshot(&ports, u64::from(v)))
        })
        .collect();
    let current = Arc::new(ArcSwap::new(Arc::clone(&lists[0])));
    let stop = Arc::new(AtomicBool::new(false));

    let swapper = {
        let (current, stop, lists) = (Arc::clone(&current), Arc::clone(&stop), lists.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i = (i + 1) % lists.len();
                current.store(Arc::clone(&lists[i]));
                swaps += 1;
            }
            swaps
        })
    };
    let pickers: Vec<_> = (0..2u64)
        .map(|seed| {
            let current = Arc::clone(&current);
            std::thread::spawn(move || {
                let rules = rules(seed);
                let mut checked = 0u64;
                for _ in 0..200_000 {
                    let snap = current.load();
                    for rule in &rules {
                        if let Some(e) = rule.choose(&snap, &PickContext::new()) {
                            assert!(snap.contains(e));
                            // Ports encode the version they were listed in.
                            assert_eq!(u64::from(e.instance().port() / 1000 - 1), snap.version());
                            checked += 1;
                        } else {
                            assert!(snap.is_empty());
                        }
                    }
                }
                checked
            })
        })
        .collect();
    let checked: u64 = pickers.into_iter().map(|p| p.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(checked > 0);
    assert!(swaps > 0);
}
