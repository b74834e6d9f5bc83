//! Weighted response time: faster instances get a larger share (Ribbon
//! `WeightedResponseTimeRule`).
//!
//! The weight of instance `i` is the sum of all instances' mean response
//! times minus its own, `W(i) = Σ mean − mean(i)` (in ms), read from
//! [`EndpointStats::mean_response_time`](crate::stats::EndpointStats::mean_response_time)
//! (a decaying mean, τ = 30 s, in which a failure counts at least as the
//! failure penalty, 1 s by default, so failing instances already look slow).
//! A pick draws `u` uniformly from `[0, Σ W)` and takes the instance whose
//! half-open interval `[W(0) + … + W(i-1), W(0) + … + W(i))` holds it: with
//! means of 10, 30 and 60 ms the weights are 90, 70 and 40 ms and the shares
//! 45 %, 35 % and 20 %. An instance without stats counts as 0 ms, as in
//! Ribbon, so a new instance gets the largest share until it has responses.
//!
//! Weights are computed off the pick path: by [`Rule::build`] for each new
//! list (O(n)), and at most once per recompute interval (default 30 s,
//! Ribbon's `serverWeightTaskTimerInterval`) by the one pick that wins a
//! compare-and-swap on the time of the last recomputation, a clock the rule
//! shares with every picker it builds ([`WeightedResponseTime::recompute`]
//! makes the next pick recompute). That pick rewrites its picker's weights
//! in place (they are atomics), so even it takes no lock and allocates
//! nothing. A pick is a binary search, O(log n), while nothing is excluded.
//!
//! With exclusions (or inside a wrapper's tier) the draw is over the
//! eligible instances' weights only (O(n)). The picker falls back to round
//! robin over the eligible instances while their weights total less than
//! 0.001 ms (no stats yet, or a single instance).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::walk::{nth_member, rotate, step_in};
use super::{Domain, PickContext, Picker, Rule};
use crate::instance::Endpoint;
use crate::rng::AtomicRng;
use crate::snapshot::Snapshot;

/// Below this total weight (ms) the rule picks by round robin (Ribbon's bound).
const MIN_TOTAL_MS: f64 = 0.001;

/// Value of the recompute clock that makes the next pick recompute.
const DUE: u64 = u64::MAX;

/// Weighted response time: the share of an instance grows as its mean
/// response time falls below the others'.
pub struct WeightedResponseTime {
    shared: Arc<Shared>,
    interval: Duration,
}

/// What the rule shares with its pickers: the generator, the fallback
/// rotation and the recompute clock.
struct Shared {
    rng: AtomicRng,
    cursor: super::cursor::Cursor,
    epoch: Instant,
    /// Time of the last recomputation, in ms since `epoch`, or [`DUE`].
    last_ms: AtomicU64,
}

impl Shared {
    fn ms_since_epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX)
            .min(DUE - 1)
    }

    /// Whether this caller should recompute now: the interval has passed
    /// (or a recomputation was asked for) and it won the compare-and-swap.
    fn due(&self, now: Instant, interval: Duration) -> bool {
        let now_ms = self.ms_since_epoch(now);
        let last = self.last_ms.load(Ordering::Relaxed);
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        if last != DUE && now_ms.saturating_sub(last) < interval_ms {
            return false;
        }
        self.last_ms
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
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

impl WeightedResponseTime {
    /// Default lazy recompute interval: 30 s (Ribbon).
    pub const DEFAULT_RECOMPUTE_INTERVAL: Duration = Duration::from_secs(30);

    /// A rule seeded from the operating system's entropy, recomputing
    /// weights at most every 30 s from picks.
    pub fn new() -> Self {
        Self::from_parts(AtomicRng::from_entropy(), rand::random::<u64>() as usize)
    }

    /// A rule whose draws (and fallback rotation) are fixed by `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Self::from_parts(AtomicRng::with_seed(seed), seed as usize)
    }

    fn from_parts(rng: AtomicRng, start: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                rng,
                cursor: super::cursor::Cursor::new(start),
                epoch: Instant::now(),
                last_ms: AtomicU64::new(0),
            }),
            interval: Self::DEFAULT_RECOMPUTE_INTERVAL,
        }
    }

    /// Sets how often picks recompute the weights from the latest stats:
    /// at most once per `interval`, by one pick. Default 30 s. `Duration::ZERO`
    /// recomputes on every pick (O(n) each; for tests); `Duration::MAX`
    /// leaves recomputation to [`Rule::build`] and
    /// [`WeightedResponseTime::recompute`].
    pub fn with_recompute_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The lazy recompute interval (default 30 s).
    pub fn recompute_interval(&self) -> Duration {
        self.interval
    }

    /// Makes the next pick recompute its weights from the current stats
    /// (in place, no allocation), and restarts the interval from then.
    pub fn recompute(&self) {
        self.shared.last_ms.store(DUE, Ordering::Relaxed);
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
            .finish_non_exhaustive()
    }
}

impl Rule for WeightedResponseTime {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        let cumulative = snapshot
            .endpoints()
            .iter()
            .map(|_| AtomicU64::new(0))
            .collect();
        let picker = WeightedResponseTimePicker {
            snapshot: Arc::clone(snapshot),
            shared: Arc::clone(&self.shared),
            interval: self.interval,
            cumulative,
        };
        picker.fill();
        let now = self.shared.ms_since_epoch(Instant::now());
        self.shared.last_ms.store(now, Ordering::Relaxed);
        Arc::new(picker)
    }

    fn name(&self) -> &'static str {
        "weighted_response_time"
    }
}

/// The picker of [`WeightedResponseTime`]: cumulative weights of one list.
struct WeightedResponseTimePicker {
    snapshot: Arc<Snapshot>,
    shared: Arc<Shared>,
    interval: Duration,
    /// `cumulative[i] = W(0) + … + W(i)` in ms, as `f64` bits.
    cumulative: Box<[AtomicU64]>,
}

impl fmt::Debug for WeightedResponseTimePicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightedResponseTimePicker")
            .field("instances", &self.snapshot.len())
            .finish_non_exhaustive()
    }
}

impl WeightedResponseTimePicker {
    /// Recomputes the weights in place from the current stats.
    fn fill(&self) {
        let endpoints = self.snapshot.endpoints();
        let total: f64 = endpoints.iter().map(mean_ms).sum();
        let mut acc = 0.0;
        for (e, c) in endpoints.iter().zip(&*self.cumulative) {
            acc += (total - mean_ms(e)).max(0.0);
            c.store(acc.to_bits(), Ordering::Relaxed);
        }
    }

    fn cum(&self, i: usize) -> f64 {
        f64::from_bits(self.cumulative[i].load(Ordering::Relaxed))
    }

    /// A draw over all endpoints (binary search), or `None` when the
    /// weights total too little.
    fn draw_all(&self) -> Option<usize> {
        let n = self.cumulative.len();
        let total = self.cum(n.checked_sub(1)?);
        if !usable(total) {
            return None;
        }
        let u = self.shared.rng.unit_f64() * total;
        // First i with u < cum(i): the half-open interval holding u.
        let i = self
            .cumulative
            .partition_point(|c| f64::from_bits(c.load(Ordering::Relaxed)) <= u);
        Some(i.min(n - 1))
    }

    /// A draw over the endpoints `member` accepts; round robin among them
    /// when their weights total too little. Robust to a concurrent in-place
    /// [`fill`](Self::fill) (a torn array only skews one draw). Walks the
    /// tier's domain (the sticky instance, the hint group, the subset) when
    /// it has one, so a small tier costs O(its size) instead of O(n).
    fn draw_members<'s>(
        &self,
        ctx: &PickContext<'_>,
        endpoints: &'s [Endpoint],
        member: &dyn Fn(usize, &Endpoint) -> bool,
        domain: Domain<'_>,
    ) -> Option<&'s Endpoint> {
        let k = || self.shared.cursor.step(ctx, endpoints);
        match domain {
            Some(d) => self
                .draw_in(endpoints, member, d.iter().map(|&i| i as usize))
                .unwrap_or_else(|| step_in(endpoints, member, domain, k())),
            None => self
                .draw_in(endpoints, member, 0..endpoints.len())
                .unwrap_or_else(|| nth_member(endpoints, member, k())),
        }
    }

    /// [`Self::draw_members`] over the indices `at`, ascending: `Some` of
    /// the draw (`None` inside when no index holds a member), or `None`
    /// when the members' weights total too little to draw by.
    fn draw_in<'s>(
        &self,
        endpoints: &'s [Endpoint],
        member: &dyn Fn(usize, &Endpoint) -> bool,
        at: impl Iterator<Item = usize> + Clone,
    ) -> Option<Option<&'s Endpoint>> {
        let n = self.cumulative.len();
        // Endpoint i's weight: its step of the cumulative sums.
        let weight = |i: usize| {
            let before = i.checked_sub(1).map_or(0.0, |p| self.cum(p));
            (self.cum(i) - before).max(0.0)
        };
        let members = at
            .filter(|&i| i < n)
            .filter_map(|i| Some((i, endpoints.get(i)?)))
            .filter(|(i, e)| member(*i, e));
        let (mut total, mut any) = (0.0, false);
        for (i, _) in members.clone() {
            total += weight(i);
            any = true;
        }
        if !any {
            return Some(None);
        }
        if !usable(total) {
            // Round robin among the members: over the tier's domain when
            // it has one (a sticky pick walked the whole list twice, 20 001
            // membership tests at 10 000 instances before any stats).
            return None;
        }
        let u = self.shared.rng.unit_f64() * total;
        let (mut acc, mut found) = (0.0, None);
        for (i, e) in members {
            let w = weight(i);
            if w > 0.0 {
                acc += w;
                found = Some(e);
                if u < acc {
                    break;
                }
            }
        }
        Some(found)
    }
}

impl Picker for WeightedResponseTimePicker {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint> {
        let endpoints = self.snapshot.endpoints();
        if endpoints.is_empty() {
            return None;
        }
        if self.shared.due(ctx.now(), self.interval) {
            self.fill();
        }
        if endpoints.len() < 2 || (ctx.all_eligible() && !ctx.has_tiers()) {
            if endpoints.len() >= 2 {
                if let Some(i) = self.draw_all() {
                    return endpoints.get(i);
                }
            }
            let k = self.shared.cursor.step(ctx, endpoints);
            return rotate(endpoints, ctx, k);
        }
        ctx.find_tier_in(&mut |member, domain| self.draw_members(ctx, endpoints, member, domain))
    }

    fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
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

    fn shares(picker: &dyn Picker, ctx: &PickContext<'_>, picks: u32) -> Vec<f64> {
        let mut counts = vec![0u32; picker.snapshot().len()];
        for _ in 0..picks {
            counts[index(picker.pick(ctx).unwrap())] += 1;
        }
        counts
            .iter()
            .map(|&c| f64::from(c) / f64::from(picks))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_tier_walks_its_domain_only() {
        // A tier of 3 in 1 000 (a hint group): two passes over the 3, not
        // over the list; the draw stays weighted among them.
        let eps = endpoints(1000);
        for (i, e) in eps.iter().enumerate() {
            feed(e, [30, 60].get(i / 500).copied().unwrap_or(10), 5);
        }
        tokio::time::advance(Duration::from_millis(100)).await;
        let s = Arc::new(Snapshot::new("s", eps, 1));
        let p = WeightedResponseTime::with_seed(3).build(&s);
        let domain = [0u32, 500, 999];
        let calls = std::cell::Cell::new(0usize);
        let member = |i: usize, _: &Endpoint| {
            calls.set(calls.get() + 1);
            domain.contains(&(i as u32))
        };
        let tiers: [crate::rule::Tier<'_>; 1] = [&member];
        let domains = [Some(&domain[..])];
        let mut link = None;
        let base = PickContext::new();
        let ctx = base.with_tiers_in(&mut link, &tiers, &domains);
        let mut counts = [0usize; 3];
        for _ in 0..3_000 {
            calls.set(0);
            let i = index(p.pick(&ctx).unwrap());
            counts[domain.iter().position(|&d| d as usize == i).unwrap()] += 1;
            assert!(calls.get() <= 6, "{}", calls.get());
        }
        assert!(
            counts.iter().all(|c| (900..=1100).contains(c)),
            "{counts:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shares_follow_ribbon_weights() {
        let eps = endpoints(3);
        for (e, ms) in eps.iter().zip([10, 30, 60]) {
            feed(e, ms, 50);
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        let s = Arc::new(Snapshot::new("s", eps, 1));
        for (e, ms) in s.endpoints().iter().zip([10.0, 30.0, 60.0]) {
            assert!((mean_ms(e) - ms).abs() < 1e-3, "{}", mean_ms(e));
        }
        let rule = WeightedResponseTime::with_seed(42).build(&s);
        let got = shares(&*rule, &PickContext::new(), 100_000);
        eprintln!("weighted_response_time shares for 10/30/60 ms: {got:?}");
        for (g, want) in got.iter().zip([0.45, 0.35, 0.20]) {
            assert!((g - want).abs() <= 0.02, "{got:?}");
        }
        // Excluding the fastest: the others split 70:40.
        let excluded = [s.endpoints()[0].clone()];
        let got = shares(&*rule, &PickContext::new().with_excluded(&excluded), 30_000);
        assert_eq!(got[0], 0.0);
        assert!((got[1] - 70.0 / 110.0).abs() <= 0.02, "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_until_stats_then_lazy_recompute() {
        let s = Arc::new(Snapshot::new("s", endpoints(3), 1));
        let shared = WeightedResponseTime::with_seed(0);
        let rule = shared.build(&s);
        let ctx = PickContext::new();
        let ports: Vec<u16> = (0..6)
            .map(|_| rule.pick(&ctx).unwrap().instance().port())
            .collect();
        assert_eq!(ports, [1000, 1001, 1002, 1000, 1001, 1002]);

        // Stats arrive; within the interval the weights stay as computed.
        for (e, ms) in s.endpoints().iter().zip([10, 10, 980]) {
            feed(e, ms, 5);
        }
        tokio::time::advance(Duration::from_secs(29)).await;
        let got = shares(&*rule, &PickContext::new(), 3_000);
        assert!(got.iter().all(|g| (g - 1.0 / 3.0).abs() < 0.01), "{got:?}");

        // After 30 s the next pick recomputes: weights 990, 990, 20.
        tokio::time::advance(Duration::from_secs(1)).await;
        let got = shares(&*rule, &PickContext::new(), 20_000);
        assert!(got[2] < 0.02, "{got:?}");

        // Stats change again; `recompute` makes the next pick see them.
        for _ in 0..20 {
            feed(&s.endpoints()[0], 980, 1);
        }
        shared.recompute();
        let got = shares(&*rule, &PickContext::new(), 20_000);
        assert!(got[0] < got[1], "{got:?}");
    }

    #[test]
    fn one_instance_empty_and_replaced_lists_are_safe() {
        let rule = WeightedResponseTime::with_seed(1);
        let empty = Arc::new(Snapshot::empty("s"));
        assert!(rule.build(&empty).pick(&PickContext::new()).is_none());
        let one = Arc::new(Snapshot::new("s", endpoints(1), 1));
        feed(&one.endpoints()[0], 5, 3);
        let picker = rule.build(&one);
        assert_eq!(
            picker.pick(&PickContext::new()).unwrap().instance().port(),
            1000
        );
        let all = one.endpoints().to_vec();
        assert!(
            picker
                .pick(&PickContext::new().with_excluded(&all))
                .is_none()
        );

        // A picker of a replaced list keeps picking from its own list.
        let old = Arc::new(Snapshot::new("s", endpoints(3), 1));
        let old_picker = rule.build(&old);
        let _new = rule.build(&Arc::new(Snapshot::new("s", endpoints(2), 2)));
        for _ in 0..10 {
            assert!(old.contains(old_picker.pick(&PickContext::new()).unwrap()));
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
