//! Slow start over consistent hashing's keyed picks (helper 199): a
//! keyed pick offers the key's instance every time, so slow start's credit
//! let a new instance through after about 1/factor offers within each
//! pick, and it took its whole share of keys from the first moment (0.25
//! of 20 000 keyed picks where Envoy's formula gives 0.1 / 3.1 = 0.032).
//! Keyed picks are now thinned by key: a draw of the key and the
//! instance's id below the factor keeps the key, others go to their next
//! instance on the ring, so a key keeps its instance while the factor
//! holds, and the new instance's keys only grow with its factor.
//! Unkeyed picks, Random, weighted response time and best available were
//! right already (0.032 to 0.038) and are checked beside it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_ribbon::instance::{Endpoint, Instance};
use tower_ribbon::rule::{
    AvailabilityFiltering, BestAvailable, ConsistentHash, PickContext, Picker, Random, Rule,
    SlowStart, SlowStartConfig, WeightedResponseTime, ZoneAvoidance,
};
use tower_ribbon::snapshot::Snapshot;

fn plain(n: usize) -> Arc<Snapshot> {
    let endpoints = (0..n)
        .map(|i| {
            Endpoint::new(
                Instance::new("svc", "127.0.0.1", i as u16 + 1)
                    .unwrap()
                    .with_id(format!("i{i}")),
            )
        })
        .collect();
    Arc::new(Snapshot::new("svc", endpoints, 1))
}

/// A picker over three instances and a fourth that joined at the returned
/// time, slow start with a 20 s window (factor 0.1 at first).
async fn joined(rule: impl Rule) -> (Arc<dyn Picker>, Endpoint) {
    let rule = SlowStart::new(rule, SlowStartConfig::new(Duration::from_secs(20)));
    let old = plain(3);
    let _ = rule.build(&old);
    tokio::time::advance(Duration::from_secs(3)).await;
    let new = Endpoint::new(Instance::new("svc", "127.0.0.1", 4).unwrap().with_id("i3"));
    let mut endpoints = old.endpoints().to_vec();
    endpoints.push(new.clone());
    let picker = rule.build(&Arc::new(Snapshot::new("svc", endpoints, 2)));
    (picker, new)
}

fn key(k: u64) -> u64 {
    k.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The keys of `0..n` the new instance takes at `at`.
fn taken(picker: &dyn Picker, new: &Endpoint, at: Instant, keyed: bool, n: u64) -> Vec<u64> {
    (0..n)
        .filter(|&k| {
            let ctx = PickContext::at(at);
            let ctx = if keyed {
                ctx.with_hash_key(key(k))
            } else {
                ctx
            };
            picker.pick(&ctx).unwrap().same_identity(new)
        })
        .collect()
}

async fn share_at_start(rule: impl Rule, keyed: bool) -> f64 {
    let (picker, new) = joined(rule).await;
    let at = new.stats().first_seen() + Duration::from_millis(1);
    taken(&*picker, &new, at, keyed, 20_000).len() as f64 / 20_000.0
}

#[tokio::test(start_paused = true)]
async fn keyed_consistent_hash_picks_ramp_like_the_others() {
    for (name, share) in [
        (
            "consistent hash, keyed",
            share_at_start(ConsistentHash::new(), true).await,
        ),
        (
            "zone avoidance over consistent hash, keyed",
            share_at_start(ZoneAvoidance::new(ConsistentHash::new()), true).await,
        ),
        (
            "availability filtering over consistent hash, keyed",
            share_at_start(AvailabilityFiltering::new(ConsistentHash::new()), true).await,
        ),
        (
            "consistent hash, no key",
            share_at_start(ConsistentHash::new(), false).await,
        ),
        ("random", share_at_start(Random::new(), false).await),
        (
            "weighted response time",
            share_at_start(WeightedResponseTime::new(), false).await,
        ),
        (
            "best available",
            share_at_start(BestAvailable::new(), false).await,
        ),
    ] {
        assert!((share - 0.032).abs() < 0.01, "{name}: {share}");
    }
}

/// A key keeps its instance while the factor holds (the same keys at the
/// same time, twice), and the keys the new instance takes only grow as
/// its factor does (at 1 ms, 5 s, 10 s and 19 s of its window); at the
/// end of the window it has its full quarter.
#[tokio::test(start_paused = true)]
async fn a_key_keeps_its_instance_and_the_new_ones_keys_only_grow() {
    let (picker, new) = joined(ConsistentHash::new()).await;
    let start = new.stats().first_seen();
    let mut before: Vec<u64> = Vec::new();
    for at_ms in [1u64, 5_000, 10_000, 19_000] {
        let at = start + Duration::from_millis(at_ms);
        let keys = taken(&*picker, &new, at, true, 4_000);
        assert_eq!(
            keys,
            taken(&*picker, &new, at, true, 4_000),
            "at {at_ms} ms"
        );
        assert!(
            before.iter().all(|k| keys.contains(k)),
            "a key left at {at_ms} ms"
        );
        assert!(keys.len() > before.len(), "at {at_ms} ms: {}", keys.len());
        before = keys;
    }
    let at = start + Duration::from_secs(21);
    let full = taken(&*picker, &new, at, true, 4_000).len();
    assert!(
        (900..=1_100).contains(&full),
        "{full} of 4 000 after the window"
    );
    assert!(
        before.len() < full,
        "{} before the end, {full} after",
        before.len()
    );
}
