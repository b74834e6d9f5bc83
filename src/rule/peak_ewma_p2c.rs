//! Power of two choices over peak-EWMA cost (Mitzenmacher, "The power of
//! two choices in randomized load balancing", IEEE TPDS 2001; Finagle's
//! `P2CPeakEwma`, Linkerd, and tower's `balance::p2c` with `load::PeakEwma`).
//!
//! Each pick draws two distinct eligible endpoints at random (the first
//! uniformly from all `n`, the second from the other `n − 1`) and takes the
//! cheaper, the first on a tie. The cost of an endpoint at the pick time is
//!
//! ```text
//! cost = peak_ewma_us × (in_flight + 1) / max(success_rate, 0.05)
//! ```
//!
//! - `peak_ewma_us`: the peak EWMA of the latency in µs
//!   ([`EndpointStats::peak_ewma_us_at`](crate::stats::EndpointStats::peak_ewma_us_at)),
//!   or [`default_rtt`](PeakEwmaP2c::default_rtt) (30 ms) before the first
//!   sample. It jumps up at once on a slower response, decays toward faster
//!   ones with τ = [`StatsConfig::ewma_decay`](crate::stats::StatsConfig::ewma_decay)
//!   (10 s), decays toward zero while the endpoint is idle (so it is tried
//!   again), and prices a failure as at least the failure penalty (1 s).
//! - `in_flight`: requests started on the endpoint and not yet finished.
//! - `success_rate`: the decaying share of successes in `0..=1`
//!   ([`EndpointStats::success_rate_at`](crate::stats::EndpointStats::success_rate_at),
//!   τ = `ewma_decay`), which drifts back toward 1 while no outcome is
//!   recorded, so an instance that failed and has since recovered is probed
//!   again; 1 before the first outcome. The floor of 0.05 keeps the cost
//!   finite: a failing endpoint costs at most 20 × latency × load.
//!
//! The unit is µs × requests; only the order of two costs matters.
//! Latency × (in flight + 1) is the peak-EWMA load of Finagle and Linkerd
//! (tower's `PeakEwma` computes the same product). The division by the
//! success rate is this crate's own addition, not taken from them.
//!
//! Why the success rate: a failure priced at 1 s is not infinitely
//! expensive. By latency × load alone, an instance answering errors in
//! 1 ms looks as cheap as a healthy 50 ms instance carrying `1 s / 50 ms −
//! 1` = 19 requests, so at 1 000 requests per second it drew 61 % of the
//! traffic. Divided by its success rate (near the floor), it looks like
//! 20 s × (in flight + 1) right after a failure: the healthy instance must
//! carry 399 requests to look as expensive. As the failing one stays idle,
//! its peak EWMA decays and its success rate drifts back up, so it is
//! probed again, against a 50 ms instance with 50 in flight after about
//! 3 s. `tests/latency_aware.rs` measures the shares.
//!
//! Limit: the cost still trades health against load. An instance that
//! fails every request is avoided only until a healthy one carries about
//! `20 × penalty / latency` requests; an instance failing a fraction `f` of
//! requests is priced at only `1 / (1 − f)` times its (penalty-raised)
//! latency. To take failing instances out entirely, put
//! [`AvailabilityFiltering`](super::AvailabilityFiltering) or an outlier
//! ejection in front.
//!
//! Draws skip endpoints that are excluded or whose breaker is tripped; a
//! draw is retried a few times and then replaced by a walk from a random
//! offset, so every pick is bounded by the list length. When every eligible
//! endpoint is tripped the same choice runs over the tripped ones (fail
//! open). Wrapped, all of this runs inside the wrapper's first non-empty
//! tier. Draws come from a lock-free seeded generator shared by every
//! picker of the rule, so [`PeakEwmaP2c::with_seed`] repeats.
//!
//! Build: O(1). Pick: O(1) expected (a few draws and two cost
//! evaluations), at most two walks of the list.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Domain, PickContext, Picker, Rule};
use crate::instance::Endpoint;
use crate::rng::AtomicRng;
use crate::snapshot::Snapshot;

/// Random draws per candidate before walking the list instead.
const DRAW_TRIES: usize = 8;

/// Least success rate the cost divides by: a failing endpoint costs at most
/// 20 times a healthy one with the same latency and load.
const MIN_SUCCESS_RATE: f64 = 0.05;

/// Power of two choices over peak-EWMA latency × (in flight + 1) ÷ success
/// rate.
///
/// Defaults: seeded from entropy, default RTT 30 ms.
pub struct PeakEwmaP2c {
    rng: Arc<AtomicRng>,
    default_rtt_us: f64,
}

impl PeakEwmaP2c {
    /// A rule seeded from the operating system's entropy.
    pub fn new() -> Self {
        Self::from_rng(AtomicRng::from_entropy())
    }

    /// A rule whose draws are fixed by `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Self::from_rng(AtomicRng::with_seed(seed))
    }

    fn from_rng(rng: AtomicRng) -> Self {
        Self {
            rng: Arc::new(rng),
            default_rtt_us: 30_000.0,
        }
    }

    /// The latency assumed for an endpoint with no sample yet. Default
    /// 30 ms (tower's and Finagle's usual starting estimate).
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.default_rtt_us = rtt.as_secs_f64() * 1e6;
        self
    }
}

impl Default for PeakEwmaP2c {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PeakEwmaP2c {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeakEwmaP2c")
            .field("default_rtt_us", &self.default_rtt_us)
            .finish_non_exhaustive()
    }
}

impl Rule for PeakEwmaP2c {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        Arc::new(P2cPicker {
            snapshot: Arc::clone(snapshot),
            rng: Arc::clone(&self.rng),
            default_rtt_us: self.default_rtt_us,
        })
    }

    fn name(&self) -> &'static str {
        "peak_ewma_p2c"
    }
}

/// The picker of [`PeakEwmaP2c`] for one list.
struct P2cPicker {
    snapshot: Arc<Snapshot>,
    rng: Arc<AtomicRng>,
    default_rtt_us: f64,
}

impl fmt::Debug for P2cPicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P2cPicker")
            .field("instances", &self.snapshot.len())
            .field("default_rtt_us", &self.default_rtt_us)
            .finish_non_exhaustive()
    }
}

impl P2cPicker {
    /// A random position of `domain` (its indices into `endpoints`; every
    /// index when `None`) other than `skip` whose endpoint `usable`
    /// accepts: up to [`DRAW_TRIES`] uniform draws, then a uniform draw
    /// among the usable positions (two walks). Drawing inside the tier's domain keeps a pick in a
    /// small tier (a sticky instance, a hint group, a subset) O(1) and
    /// uniform over it, instead of walking the list from a random offset
    /// (O(n), and biased to the member after the longest gap).
    #[inline]
    fn draw(
        &self,
        endpoints: &[Endpoint],
        usable: &impl Fn(usize, &Endpoint) -> bool,
        skip: Option<usize>,
        domain: Domain<'_>,
    ) -> Option<usize> {
        let n = domain.map_or(endpoints.len(), <[u32]>::len);
        let m = n - usize::from(skip.is_some());
        if m == 0 {
            return None;
        }
        let shift = |k: usize| match skip {
            Some(s) if k >= s => k + 1,
            _ => k,
        };
        let ok = |p: usize| {
            let i = at(domain, p);
            endpoints.get(i).is_some_and(|e| usable(i, e))
        };
        for _ in 0..DRAW_TRIES.min(m) {
            let p = shift(self.rng.below(m));
            if ok(p) {
                return Some(p);
            }
        }
        // Few usable positions: a uniform draw among them (one pass to
        // count, one to find). The first usable one after a random offset
        // would give the member after a long run of unusable ones that
        // whole run's draws.
        let usable = |p: &usize| Some(*p) != skip && ok(*p);
        let count = (0..n).filter(usable).count();
        if count == 0 {
            return None;
        }
        (0..n).filter(usable).nth(self.rng.below(count))
    }

    /// `peak_ewma_us × (in_flight + 1) / max(success_rate, 0.05)` at the
    /// pick time (see the module documentation).
    #[inline]
    fn cost(&self, e: &Endpoint, ctx: &PickContext<'_>) -> f64 {
        let stats = e.stats();
        let now = ctx.now();
        let rtt = match stats.peak_ewma_us_at(now) {
            // Only lower bounds (dropped requests' waits): at least the default.
            Some(peak) if !stats.has_latency_sample() => peak.max(self.default_rtt_us),
            Some(peak) => peak,
            None => self.default_rtt_us,
        };
        let success = stats
            .success_rate_at(now)
            .unwrap_or(1.0)
            .max(MIN_SUCCESS_RATE);
        rtt * (stats.in_flight() as f64 + 1.0) / success
    }

    /// The cheaper of two draws among the members of one tier: available
    /// ones first, else any (fail open).
    #[inline]
    fn choose_in<'s>(
        &self,
        endpoints: &'s [Endpoint],
        ctx: &PickContext<'_>,
        member: &impl Fn(usize, &Endpoint) -> bool,
        domain: Domain<'_>,
    ) -> Option<&'s Endpoint> {
        let now = ctx.now();
        let available = |i: usize, e: &Endpoint| member(i, e) && e.stats().is_available_at(now);
        let (p, first_available) = match self.draw(endpoints, &available, None, domain) {
            Some(p) => (p, true),
            None => (self.draw(endpoints, member, None, domain)?, false),
        };
        let second = if first_available {
            self.draw(endpoints, &available, Some(p), domain)
        } else {
            self.draw(endpoints, member, Some(p), domain)
        };
        let a = endpoints.get(at(domain, p))?;
        let Some(b) = second.and_then(|q| endpoints.get(at(domain, q))) else {
            return Some(a);
        };
        if self.cost(a, ctx) <= self.cost(b, ctx) {
            Some(a)
        } else {
            Some(b)
        }
    }
}

/// The index at position `p` of `domain` (`p` itself without one).
#[inline]
fn at(domain: Domain<'_>, p: usize) -> usize {
    domain.map_or(p, |d| d.get(p).map_or(usize::MAX, |&i| i as usize))
}

impl Picker for P2cPicker {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint> {
        let endpoints = self.snapshot.endpoints();
        if endpoints.is_empty() {
            return None;
        }
        if !ctx.has_tiers() {
            return self.choose_in(endpoints, ctx, &|_, e: &Endpoint| ctx.is_eligible(e), None);
        }
        ctx.find_tier_in(&mut |member, domain| self.choose_in(endpoints, ctx, &member, domain))
    }

    /// Over two endpoints both are drawn on every pick, so the cheaper
    /// one wins again while costs stay as they are.
    fn repeats_choice(&self) -> bool {
        self.snapshot.len() <= 2
    }

    fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::BestAvailable;
    use crate::rule::test_support::{port, sample, simulate, snapshot, trip};
    use crate::stats::Outcome;
    use proptest::prelude::*;
    use tokio::time::Instant;

    /// Endpoint 0 answers 500 after 1 ms, endpoint 1 answers 200 after
    /// 50 ms, on a virtual clock. With `gap` `None` requests run one after
    /// the other (each finishes before the next is picked); with
    /// `Some(gap)` one arrives every `gap` and each finishes when its
    /// latency has passed, so requests overlap. Returns the failing
    /// endpoint's share of the requests after a 200-request warm-up.
    fn failing_share(rule: &dyn Rule, gap: Option<Duration>) -> f64 {
        let picker = rule.build(&snapshot(2));
        let respond = |i| match i {
            0 => (Duration::from_millis(1), Outcome::FailureStatus(500)),
            _ => (Duration::from_millis(50), Outcome::Success),
        };
        let counts = simulate(&*picker, respond, gap, 2_000, 200);
        f64::from(counts[0]) / 1_800.0
    }

    #[tokio::test(start_paused = true)]
    async fn fast_failing_instance_gets_little_traffic() {
        let p2c = failing_share(&PeakEwmaP2c::with_seed(7), None);
        let best = failing_share(&BestAvailable::new(), None);
        println!("one at a time: failing share p2c {p2c:.4}, best_available {best:.4}");
        assert!(p2c < 0.2, "p2c sent {p2c} to the failing instance");
        // About 5 requests in flight on the healthy instance.
        let p2c = failing_share(&PeakEwmaP2c::with_seed(7), Some(Duration::from_millis(10)));
        println!("one every 10 ms: failing share p2c {p2c:.4}");
        assert!(p2c < 0.2, "p2c sent {p2c} to the failing instance");
        // Past 19 in flight on the healthy one, 50 ms × (19 + 1) reaches the
        // failing one's 1 s × 1; the success-rate factor keeps it away.
        for gap_ms in [1, 2] {
            let gap = Some(Duration::from_millis(gap_ms));
            let p2c = failing_share(&PeakEwmaP2c::with_seed(7), gap);
            let best = failing_share(&BestAvailable::new(), gap);
            println!("one every {gap_ms} ms: failing share p2c {p2c:.4}, best_available {best:.4}");
            assert!(p2c < 0.2, "p2c sent {p2c} to the failing instance");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cheaper_of_two_distinct_wins() {
        let s = snapshot(2);
        let now = Instant::now();
        sample(&s.endpoints()[0], now, 40);
        sample(&s.endpoints()[1], now, 10);
        let later = now + Duration::from_millis(40);
        let rule = PeakEwmaP2c::with_seed(1).build(&s);
        let ctx = PickContext::at(later);
        // Two endpoints: both are always drawn, so the cheaper always wins.
        assert!((0..50).all(|_| port(rule.pick(&ctx)) == 1001));
        // 10 ms × (4 + 1) > 40 ms × 1.
        let _held: Vec<_> = (0..4)
            .map(|_| s.endpoints()[1].stats().start_at(later))
            .collect();
        assert!((0..50).all(|_| port(rule.pick(&ctx)) == 1000));
    }

    #[tokio::test(start_paused = true)]
    async fn success_rate_prices_failures_and_drifts_back_while_idle() {
        let s = snapshot(2);
        let (failing, healthy) = (&s.endpoints()[0], &s.endpoints()[1]);
        let t0 = Instant::now();
        failing
            .stats()
            .start_at(t0)
            .finish_at(Outcome::FailureStatus(500), t0 + Duration::from_millis(1));
        sample(healthy, t0, 50);
        let t1 = t0 + Duration::from_millis(50);
        let rule = PeakEwmaP2c::with_seed(5).build(&s);
        let ctx = PickContext::at(t1);
        // Success rate 0, floored at 0.05: 20 × the 1 s penalty × 1.
        let peak = failing.stats().peak_ewma_us_at(t1).unwrap();
        let p2c = P2cPicker {
            snapshot: Arc::clone(&s),
            rng: Arc::new(AtomicRng::with_seed(5)),
            default_rtt_us: 30_000.0,
        };
        assert_eq!(p2c.cost(failing, &ctx), peak / MIN_SUCCESS_RATE);
        // 50 ms × (29 + 1) = 1.5 s is more than the failing one's 1 s × 1,
        // but less than its 20 s.
        let _held: Vec<_> = (0..29).map(|_| healthy.stats().start_at(t1)).collect();
        assert!((0..50).all(|_| port(rule.pick(&ctx)) == 1001));
        // 30 s (3 τ) without outcomes: the success rate is back to 0.95 and
        // the failing instance is tried again (by the undecayed rate of 0,
        // it would cost 20 × and stay shunned).
        let later = t1 + Duration::from_secs(30);
        let ctx = PickContext::at(later);
        let rate = failing.stats().success_rate_at(later).unwrap();
        assert!((rate - 0.95).abs() < 0.01, "{rate}");
        assert!((0..50).all(|_| port(rule.pick(&ctx)) == 1000));
    }

    #[tokio::test(start_paused = true)]
    async fn default_rtt_prices_unsampled_endpoints() {
        let s = snapshot(2);
        let now = Instant::now();
        sample(&s.endpoints()[0], now, 20);
        let ctx = PickContext::at(now + Duration::from_millis(20));
        let optimistic = PeakEwmaP2c::with_seed(3)
            .default_rtt(Duration::from_millis(1))
            .build(&s);
        assert!((0..20).all(|_| port(optimistic.pick(&ctx)) == 1001));
        let pessimistic = PeakEwmaP2c::with_seed(3).build(&s);
        assert!((0..20).all(|_| port(pessimistic.pick(&ctx)) == 1000));
    }

    #[tokio::test(start_paused = true)]
    async fn seeded_spread_skips_tripped_and_excluded() {
        let s = snapshot(5);
        let now = Instant::now();
        trip(&s.endpoints()[0], now);
        let excluded = [s.endpoints()[1].clone()];
        let ctx = PickContext::at(now).with_excluded(&excluded);
        let (a, b) = (
            PeakEwmaP2c::with_seed(11).build(&s),
            PeakEwmaP2c::with_seed(11).build(&s),
        );
        let mut counts = [0u32; 5];
        for _ in 0..3_000 {
            let x = port(a.pick(&ctx));
            assert_eq!(x, port(b.pick(&ctx)));
            counts[usize::from(x - 1000)] += 1;
        }
        assert_eq!(counts[..2], [0, 0]);
        // Equal unsampled costs: the first draw wins, uniformly.
        assert!(
            counts[2..].iter().all(|c| (900..=1_100).contains(c)),
            "{counts:?}"
        );
        // All tripped: fail open among the eligible.
        s.endpoints()[2..].iter().for_each(|e| trip(e, now));
        assert!(a.pick(&ctx).is_some_and(|e| ctx.is_eligible(e)));
        let empty = Arc::new(Snapshot::empty("s"));
        assert!(PeakEwmaP2c::new().build(&empty).pick(&ctx).is_none());
        let all = s.endpoints().to_vec();
        assert!(a.pick(&PickContext::at(now).with_excluded(&all)).is_none());
    }

    proptest! {
        /// Never an excluded, tripped (while an eligible one is available)
        /// or removed endpoint; `None` only when nothing is eligible; on
        /// lists that change from pick to pick.
        #[test]
        fn eligible_available_members(
            sizes in proptest::collection::vec(0u16..24, 1..6),
            mask in proptest::collection::vec(0u8..16, 24),
            seed in any::<u64>(),
        ) {
            let shared = PeakEwmaP2c::with_seed(seed);
            let now = Instant::now();
            for n in sizes {
                let s = snapshot(n);
                let rule = shared.build(&s);
                let mut guards = Vec::new();
                for (k, (e, bits)) in s.endpoints().iter().zip(&mask).enumerate() {
                    if bits & 1 != 0 { trip(e, now); }
                    if bits & 2 != 0 { guards.push(e.stats().start_at(now)); }
                    if bits & 8 != 0 { sample(e, now, k as u64); }
                }
                let excluded: Vec<Endpoint> = s.endpoints().iter().zip(&mask)
                    .filter(|(_, bits)| *bits & 4 != 0).map(|(e, _)| e.clone()).collect();
                let ctx = PickContext::at(now).with_excluded(&excluded);
                let any_eligible = s.endpoints().iter().any(|e| ctx.is_eligible(e));
                let any_available = s.endpoints().iter()
                    .any(|e| ctx.is_eligible(e) && e.stats().is_available_at(now));
                for _ in 0..20 {
                    match rule.pick(&ctx) {
                        Some(e) => {
                            prop_assert!(s.endpoints().iter().any(|x| std::ptr::eq(x, e)));
                            prop_assert!(ctx.is_eligible(e));
                            prop_assert!(!any_available || e.stats().is_available_at(now));
                        }
                        None => prop_assert!(!any_eligible),
                    }
                }
                drop(guards);
            }
        }
    }

    #[test]
    fn a_small_tier_is_drawn_from_its_domain_uniformly() {
        // Ten members, nine adjacent and one after a gap of 9 000: drawn
        // from the domain, each gets about a tenth (a walk from a random
        // offset gave the one after the gap about 90 %), and no pick
        // tests more than a few endpoints.
        let s = snapshot(10_000);
        let p = PeakEwmaP2c::with_seed(7).build(&s);
        let domain: Vec<u32> = (0..9).chain([9_000]).collect();
        let calls = std::cell::Cell::new(0usize);
        let member = |i: usize, _: &Endpoint| {
            calls.set(calls.get() + 1);
            domain.binary_search(&(i as u32)).is_ok()
        };
        let tiers: [crate::rule::Tier<'_>; 1] = [&member];
        let domains = [Some(&domain[..])];
        let mut link = None;
        let base = PickContext::new();
        let ctx = base.with_tiers_in(&mut link, &tiers, &domains);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..10_000 {
            calls.set(0);
            *counts.entry(port(p.pick(&ctx))).or_insert(0usize) += 1;
            assert!(calls.get() <= 4, "{}", calls.get());
        }
        assert_eq!(counts.len(), 10);
        for (port, c) in &counts {
            assert!((850..=1150).contains(c), "{port}: {counts:?}");
        }
    }
}
