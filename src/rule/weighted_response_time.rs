//! Weighted response time: faster instances get a larger share (Ribbon
//! `WeightedResponseTimeRule`).
//!
//! The weight of instance `i` is the sum of all instances' mean response
//! times minus its own, `W(i) = Σ mean − mean(i)`, read from
//! [`EndpointStats::mean_response_time`](crate::stats::EndpointStats::mean_response_time)
//! (a decaying mean, τ = 30 s, in which a failure counts at least as the
//! failure penalty, 1 s by default, so failing instances already look slow).
//! A pick draws `u` uniformly from `[0, Σ W)` and takes the instance whose
//! half-open interval `[W(0) + … + W(i-1), W(0) + … + W(i))` holds it: with
//! means of 10, 30 and 60 ms the weights are 90, 70 and 40 ms and the shares
//! 45 %, 35 % and 20 %. An instance without stats counts as 0 ms, as in
//! Ribbon, so a new instance gets the largest share until it has responses.
//!
//! Weights are computed off the pick path: by [`Rule::update`] for each new
//! snapshot, by [`WeightedResponseTime::recompute`], and at most once per
//! recompute interval (default 30 s, Ribbon's `serverWeightTaskTimerInterval`)
//! by the one pick that wins a compare-and-swap on the time of the last
//! recomputation. That pick rewrites the weights in place (they are atomics),
//! so even it takes no lock and allocates nothing.
//!
//! With exclusions the draw is over the eligible instances' weights only.
//! The rule falls back to round robin over the eligible instances while the
//! weights total less than 0.001 ms (no stats yet, or a single instance) and
//! while the weights belong to another snapshot version than the one read.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::support::{Versioned, VersionedState};
use super::{PickContext, RoundRobin, Rule};
use crate::discovery::Snapshot;
use crate::instance::Endpoint;
use crate::rng::AtomicRng;

/// Below this total weight (ms) the rule picks by round robin (Ribbon's bound).
const MIN_TOTAL_MS: f64 = 0.001;

/// Weighted response time: the share of an instance grows as its mean
/// response time falls below the others'.
pub struct WeightedResponseTime {
    weights: VersionedState<Weights>,
    rng: AtomicRng,
    fallback: RoundRobin,
    interval: Duration,
    epoch: Instant,
    /// Time of the last recomputation, in ms since `epoch`.
    last_ms: AtomicU64,
}

/// Weights computed for the snapshot they are [`Versioned`] with.
struct Weights {
    /// `cumulative[i] = W(0) + … + W(i)` in ms, as `f64` bits.
    cumulative: Box<[AtomicU64]>,
}

/// Whether a weight total (ms) supports a weighted draw.
fn usable(total: f64) -> bool {
    total.is_finite() && total >= MIN_TOTAL_MS
}

fn mean_ms(e: &Endpoint) -> f64 {
    e.stats()
        .mean_response_time()
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

impl Weights {
    fn build(snapshot: &Snapshot) -> Versioned<Self> {
        let cumulative = snapshot
            .endpoints()
            .iter()
            .map(|_| AtomicU64::new(0))
            .collect();
        let weights = Versioned::new(snapshot, Self { cumulative });
        weights.fill();
        weights
    }
}

impl Versioned<Weights> {
    /// Recomputes the weights in place from the current stats.
    fn fill(&self) {
        let total: f64 = self.endpoints().iter().map(mean_ms).sum();
        let mut acc = 0.0;
        for (e, c) in self.endpoints().iter().zip(&*self.cumulative) {
            acc += (total - mean_ms(e)).max(0.0);
            c.store(acc.to_bits(), Ordering::Relaxed);
        }
    }

    fn cum(&self, i: usize) -> f64 {
        f64::from_bits(self.cumulative[i].load(Ordering::Relaxed))
    }

    /// A weighted draw, or `None` when the caller must fall back. Robust to
    /// a concurrent in-place [`fill`](Self::fill) (a torn array only skews one
    /// draw).
    fn pick<'s>(
        &self,
        snapshot: &'s Snapshot,
        ctx: &PickContext<'_>,
        rng: &AtomicRng,
    ) -> Option<&'s Endpoint> {
        let endpoints = snapshot.endpoints();
        let n = self.cumulative.len();
        if n < 2 || n != endpoints.len() {
            return None;
        }
        let i = if ctx.all_eligible() {
            let total = self.cum(n - 1);
            if !usable(total) {
                return None;
            }
            let u = rng.unit_f64() * total;
            // First i with u < cum(i): the half-open interval holding u.
            self.cumulative
                .partition_point(|c| f64::from_bits(c.load(Ordering::Relaxed)) <= u)
        } else {
            let weight = |i: usize, prev: &mut f64| {
                let c = self.cum(i);
                let w = (c - *prev).max(0.0);
                *prev = c;
                w
            };
            let (mut total, mut prev) = (0.0, 0.0);
            for (i, e) in endpoints.iter().enumerate() {
                let w = weight(i, &mut prev);
                if ctx.is_eligible(e) {
                    total += w;
                }
            }
            if !usable(total) {
                return None;
            }
            let u = rng.unit_f64() * total;
            let (mut acc, mut prev, mut found) = (0.0, 0.0, None);
            for (i, e) in endpoints.iter().enumerate() {
                let w = weight(i, &mut prev);
                if w > 0.0 && ctx.is_eligible(e) {
                    acc += w;
                    found = Some(i);
                    if u < acc {
                        break;
                    }
                }
            }
            found?
        };
        let e = endpoints.get(i)?;
        (self.endpoints()[i].same_identity(e) && ctx.is_eligible(e)).then_some(e)
    }
}

impl WeightedResponseTime {
    /// Default lazy recompute interval: 30 s (Ribbon).
    pub const DEFAULT_RECOMPUTE_INTERVAL: Duration = Duration::from_secs(30);

    /// A rule seeded from the operating system's entropy, recomputing
    /// weights at most every 30 s from picks.
    pub fn new() -> Self {
        Self::build(AtomicRng::from_entropy(), RoundRobin::new())
    }

    /// A rule whose draws (and fallback rotation) are fixed by `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Self::build(
            AtomicRng::with_seed(seed),
            RoundRobin::with_start(seed as usize),
        )
    }

    fn build(rng: AtomicRng, fallback: RoundRobin) -> Self {
        Self {
            weights: VersionedState::empty(),
            rng,
            fallback,
            interval: Self::DEFAULT_RECOMPUTE_INTERVAL,
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Sets how often picks recompute the weights from the latest stats:
    /// at most once per `interval`, by one pick. Default 30 s. `Duration::ZERO`
    /// recomputes on every pick (O(n) each; for tests); `Duration::MAX`
    /// leaves recomputation to [`Rule::update`] and
    /// [`WeightedResponseTime::recompute`].
    pub fn with_recompute_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The lazy recompute interval (default 30 s).
    pub fn recompute_interval(&self) -> Duration {
        self.interval
    }

    /// Recomputes the weights of `snapshot` from its endpoints' current stats
    /// now, and restarts the interval. In place (no allocation) if the
    /// weights already belong to this snapshot; otherwise builds them for
    /// it, unless they belong to a newer snapshot version (then nothing).
    pub fn recompute(&self, snapshot: &Snapshot) {
        match self.weights.load().as_deref() {
            Some(w) if w.is_for(snapshot) => w.fill(),
            Some(w) if w.version() > snapshot.version() => return,
            _ => self.weights.store(Weights::build(snapshot)),
        }
        self.restart_interval();
    }

    fn restart_interval(&self) {
        self.last_ms
            .store(self.ms_since_epoch(Instant::now()), Ordering::Relaxed);
    }

    fn ms_since_epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Recomputes in place if the interval has passed and this caller wins
    /// the compare-and-swap. Never allocates.
    fn maybe_recompute(&self, now: Instant) {
        let now_ms = self.ms_since_epoch(now);
        let last = self.last_ms.load(Ordering::Relaxed);
        let interval_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        if now_ms.saturating_sub(last) < interval_ms {
            return;
        }
        if self
            .last_ms
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            if let Some(w) = self.weights.load().as_deref() {
                w.fill();
            }
        }
    }
}

impl Default for WeightedResponseTime {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for WeightedResponseTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightedResponseTime")
            .field("recompute_interval", &self.interval)
            .field("version", &self.weights.version())
            .finish_non_exhaustive()
    }
}

impl Rule for WeightedResponseTime {
    fn choose<'s>(&self, snapshot: &'s Snapshot, ctx: &PickContext<'_>) -> Option<&'s Endpoint> {
        if snapshot.is_empty() {
            return None;
        }
        self.maybe_recompute(ctx.now());
        if let Some(w) = self.weights.load().as_deref() {
            if w.version() == snapshot.version() {
                if let Some(e) = w.pick(snapshot, ctx, &self.rng) {
                    return Some(e);
                }
            }
        }
        self.fallback.choose(snapshot, ctx)
    }

    fn update(&self, snapshot: &Snapshot) {
        self.weights.store(Weights::build(snapshot));
        self.restart_interval();
    }

    fn name(&self) -> &'static str {
        "weighted_response_time"
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::rule::test_support::{
        check_changing_lists, endpoints, feed, index, list_steps, masked,
    };
    use crate::stats::Outcome;

    fn shares(
        rule: &WeightedResponseTime,
        s: &Snapshot,
        ctx: &PickContext<'_>,
        picks: u32,
    ) -> Vec<f64> {
        let mut counts = vec![0u32; s.len()];
        for _ in 0..picks {
            counts[index(rule.choose(s, ctx).unwrap())] += 1;
        }
        counts
            .iter()
            .map(|&c| f64::from(c) / f64::from(picks))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn shares_follow_ribbon_weights() {
        let eps = endpoints(3);
        for (e, ms) in eps.iter().zip([10, 30, 60]) {
            feed(e, ms, 50);
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        let s = Snapshot::new("s", eps, 1);
        for (e, ms) in s.endpoints().iter().zip([10.0, 30.0, 60.0]) {
            assert!((mean_ms(e) - ms).abs() < 1e-3, "{}", mean_ms(e));
        }
        let rule = WeightedResponseTime::with_seed(42);
        rule.recompute(&s);
        let got = shares(&rule, &s, &PickContext::new(), 100_000);
        eprintln!("weighted_response_time shares for 10/30/60 ms: {got:?}");
        for (g, want) in got.iter().zip([0.45, 0.35, 0.20]) {
            assert!((g - want).abs() <= 0.02, "{got:?}");
        }
        // Excluding the fastest: the others split 70:40.
        let excluded = [s.endpoints()[0].clone()];
        let got = shares(
            &rule,
            &s,
            &PickContext::new().with_excluded(&excluded),
            30_000,
        );
        assert_eq!(got[0], 0.0);
        assert!((got[1] - 70.0 / 110.0).abs() <= 0.02, "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_until_stats_then_lazy_recompute() {
        let s = Snapshot::new("s", endpoints(3), 1);
        let rule = WeightedResponseTime::with_seed(0);
        rule.update(&s);
        let ctx = PickContext::new();
        let ports: Vec<u16> = (0..6)
            .map(|_| rule.choose(&s, &ctx).unwrap().instance().port())
            .collect();
        assert_eq!(ports, [1000, 1001, 1002, 1000, 1001, 1002]);

        // Stats arrive; within the interval the weights stay as computed.
        for (e, ms) in s.endpoints().iter().zip([10, 10, 980]) {
            feed(e, ms, 5);
        }
        tokio::time::advance(Duration::from_secs(29)).await;
        let got = shares(&rule, &s, &PickContext::new(), 3_000);
        assert!(got.iter().all(|g| (g - 1.0 / 3.0).abs() < 0.01), "{got:?}");

        // After 30 s the next pick recomputes: weights 990, 990, 20.
        tokio::time::advance(Duration::from_secs(1)).await;
        let got = shares(&rule, &s, &PickContext::new(), 20_000);
        assert!(got[2] < 0.02, "{got:?}");
    }

    #[test]
    fn one_instance_empty_and_stale_versions_are_safe() {
        let rule = WeightedResponseTime::with_seed(1);
        assert!(
            rule.choose(&Snapshot::empty("s"), &PickContext::new())
                .is_none()
        );
        let one = Snapshot::new("s", endpoints(1), 1);
        feed(&one.endpoints()[0], 5, 3);
        rule.update(&one);
        assert_eq!(
            rule.choose(&one, &PickContext::new())
                .unwrap()
                .instance()
                .port(),
            1000
        );
        let all = one.endpoints().to_vec();
        assert!(
            rule.choose(&one, &PickContext::new().with_excluded(&all))
                .is_none()
        );

        // Weights computed for version 2; a pick still reading version 1.
        let old = Snapshot::new("s", endpoints(3), 1);
        let new = Snapshot::new("s", endpoints(2), 2);
        rule.update(&new);
        for _ in 0..10 {
            assert!(old.contains(rule.choose(&old, &PickContext::new()).unwrap()));
        }
    }

    proptest! {
        /// Never an excluded endpoint or one outside the snapshot read, None
        /// only when nothing is eligible, no panic on changing lists, stale
        /// or colliding versions, random latencies and failures.
        #[test]
        fn picks_are_members_and_never_excluded(
            lists in list_steps(30),
            latencies in prop::collection::vec(prop::option::of((0u64..2_000, any::<bool>())), 30),
            excluded_mask in prop::collection::vec(any::<bool>(), 30),
            seed in any::<u64>(),
            lazy in any::<bool>(),
        ) {
            let pool = endpoints(30);
            for (e, l) in pool.iter().zip(&latencies) {
                if let Some((ms, ok)) = *l {
                    let t = Instant::now();
                    let outcome = if ok { Outcome::Success } else { Outcome::OtherError };
                    e.stats().start_at(t).finish_at(outcome, t + Duration::from_millis(ms));
                }
            }
            let excluded = masked(&pool, &excluded_mask);
            let interval = if lazy { Duration::ZERO } else { Duration::MAX };
            let rule = WeightedResponseTime::with_seed(seed).with_recompute_interval(interval);
            check_changing_lists(&rule, &pool, &lists, &excluded, &[None], 20)?;
        }
    }
}
