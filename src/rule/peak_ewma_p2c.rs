//! Power of two choices over peak-EWMA cost (Mitzenmacher, "The power of
//! two choices in randomized load balancing", IEEE TPDS 2001; Finagle's
//! `P2CPeakEwma`, Linkerd, and tower's `balance::p2c` with `load::PeakEwma`).
//!
//! Each pick draws two distinct eligible endpoints at random (the first
//! uniformly from all `n`, the second from the other `n − 1`) and takes the
//! cheaper, the first on a tie. The cost of an endpoint is
//!
//! ```text
//! cost = peak EWMA latency (µs) × (requests in flight + 1)
//! ```
//!
//! with [`default_rtt`](PeakEwmaP2c::default_rtt) (30 ms) standing in for
//! the latency before the first sample. The peak EWMA
//! ([`EndpointStats::peak_ewma_us_at`](crate::stats::EndpointStats::peak_ewma_us_at))
//! jumps up at once on a slow response, decays toward zero while an
//! endpoint is idle (so it is tried again), and prices a failure as at
//! least 1 s, so an instance that fails fast does not look fast.
//!
//! Limit: the cost trades latency against load, and a failure counts as
//! 1 s, not as infinitely expensive. An instance answering errors fast
//! gets little traffic while the healthy ones have few requests in flight,
//! but once a healthy instance of latency `L` carries `1 s / L − 1`
//! requests (19 at 50 ms) the failing one looks as cheap and takes the
//! overflow. Under such load, put [`AvailabilityFiltering`](super::AvailabilityFiltering)
//! or an outlier ejection in front, or raise the stats' failure penalty.
//!
//! Draws skip endpoints that are excluded or whose breaker is tripped; a
//! draw is retried a few times and then replaced by a walk from a random
//! offset, so every pick is bounded by the list length. When every eligible
//! endpoint is tripped the same choice runs over the tripped ones (fail
//! open). Draws come from a lock-free seeded generator, so
//! [`PeakEwmaP2c::with_seed`] repeats.

use std::fmt;
use std::time::Duration;

use super::{PickContext, Rule};
use crate::discovery::Snapshot;
use crate::instance::Endpoint;
use crate::rng::AtomicRng;

/// Random draws per candidate before walking the list instead.
const DRAW_TRIES: usize = 8;

/// Power of two choices over peak-EWMA latency × (in flight + 1).
///
/// Defaults: seeded from entropy, default RTT 30 ms.
pub struct PeakEwmaP2c {
    rng: AtomicRng,
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
            rng,
            default_rtt_us: 30_000.0,
        }
    }

    /// The latency assumed for an endpoint with no sample yet. Default
    /// 30 ms (tower's and Finagle's usual starting estimate).
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.default_rtt_us = rtt.as_secs_f64() * 1e6;
        self
    }

    #[inline]
    fn usable(e: &Endpoint, ctx: &PickContext<'_>, need_available: bool) -> bool {
        ctx.is_eligible(e) && (!need_available || e.stats().is_available_at(ctx.now()))
    }

    /// A random usable index other than `skip`: up to [`DRAW_TRIES`]
    /// uniform draws, then a walk from a random offset.
    fn draw(
        &self,
        endpoints: &[Endpoint],
        ctx: &PickContext<'_>,
        skip: Option<usize>,
        need_available: bool,
    ) -> Option<usize> {
        let n = endpoints.len();
        let m = n - usize::from(skip.is_some());
        if m == 0 {
            return None;
        }
        let shift = |k: usize| match skip {
            Some(s) if k >= s => k + 1,
            _ => k,
        };
        for _ in 0..DRAW_TRIES.min(m) {
            let k = shift(self.rng.below(m));
            if Self::usable(&endpoints[k], ctx, need_available) {
                return Some(k);
            }
        }
        let start = self.rng.below(n);
        (0..n)
            .map(|step| (start + step) % n)
            .find(|&k| Some(k) != skip && Self::usable(&endpoints[k], ctx, need_available))
    }

    #[inline]
    fn cost(&self, e: &Endpoint, ctx: &PickContext<'_>) -> f64 {
        let stats = e.stats();
        let rtt = stats
            .peak_ewma_us_at(ctx.now())
            .unwrap_or(self.default_rtt_us);
        rtt * (stats.in_flight() as f64 + 1.0)
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
    fn choose<'s>(&self, snapshot: &'s Snapshot, ctx: &PickContext<'_>) -> Option<&'s Endpoint> {
        let endpoints = snapshot.endpoints();
        let (i, available) = match self.draw(endpoints, ctx, None, true) {
            Some(i) => (i, true),
            None => (self.draw(endpoints, ctx, None, false)?, false),
        };
        let Some(j) = self.draw(endpoints, ctx, Some(i), available) else {
            return Some(&endpoints[i]);
        };
        let (a, b) = (&endpoints[i], &endpoints[j]);
        if self.cost(a, ctx) <= self.cost(b, ctx) {
            Some(a)
        } else {
            Some(b)
        }
    }

    fn name(&self) -> &'static str {
        "peak_ewma_p2c"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::Instance;
    use crate::rule::BestAvailable;
    use crate::stats::{InFlightGuard, Outcome};
    use proptest::prelude::*;
    use tokio::time::Instant;

    fn snapshot(n: u16) -> Snapshot {
        let eps = (0..n)
            .map(|p| Endpoint::new(Instance::new("s", "127.0.0.1", 1000 + p).unwrap()))
            .collect();
        Snapshot::new("s", eps, 1)
    }

    fn trip(e: &Endpoint, now: Instant) {
        for _ in 0..3 {
            e.stats()
                .start_at(now)
                .finish_at(Outcome::ConnectFailure, now);
        }
    }

    fn sample(e: &Endpoint, at: Instant, ms: u64) {
        e.stats()
            .start_at(at)
            .finish_at(Outcome::Success, at + Duration::from_millis(ms));
    }

    fn port(e: Option<&Endpoint>) -> u16 {
        e.map(|e| e.instance().port()).unwrap_or(0)
    }

    /// Endpoint 0 answers 500 after 1 ms, endpoint 1 answers 200 after
    /// 50 ms, on a virtual clock. With `gap` `None` requests run one after
    /// the other (each finishes before the next is picked); with
    /// `Some(gap)` one arrives every `gap` and each finishes when its
    /// latency has passed, so requests overlap. Returns the failing
    /// endpoint's share of the requests after a 200-request warm-up.
    fn failing_share(rule: &dyn Rule, gap: Option<Duration>) -> f64 {
        let s = snapshot(2);
        let mut now = Instant::now();
        let mut pending: Vec<(Instant, InFlightGuard<'_>, Outcome)> = Vec::new();
        let mut failing = 0u32;
        for k in 0..2_000 {
            let (done, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|p| p.0 <= now);
            pending = rest;
            for (at, guard, outcome) in done {
                guard.finish_at(outcome, at);
            }
            let e = rule.choose(&s, &PickContext::at(now)).unwrap();
            let (latency, outcome) = if e.instance().port() == 1000 {
                failing += u32::from(k >= 200);
                (Duration::from_millis(1), Outcome::FailureStatus(500))
            } else {
                (Duration::from_millis(50), Outcome::Success)
            };
            let guard = e.stats().start_at(now);
            pending.push((now + latency, guard, outcome));
            now += gap.unwrap_or(latency);
        }
        f64::from(failing) / 1_800.0
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
        // failing one's 1 s × 1: the documented limit, measured, not asserted.
        for gap_ms in [1, 2] {
            let gap = Some(Duration::from_millis(gap_ms));
            let p2c = failing_share(&PeakEwmaP2c::with_seed(7), gap);
            let best = failing_share(&BestAvailable::new(), gap);
            println!("one every {gap_ms} ms: failing share p2c {p2c:.4}, best_available {best:.4}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cheaper_of_two_distinct_wins() {
        let s = snapshot(2);
        let now = Instant::now();
        sample(&s.endpoints()[0], now, 40);
        sample(&s.endpoints()[1], now, 10);
        let later = now + Duration::from_millis(40);
        let rule = PeakEwmaP2c::with_seed(1);
        let ctx = PickContext::at(later);
        // Two endpoints: both are always drawn, so the cheaper always wins.
        assert!((0..50).all(|_| port(rule.choose(&s, &ctx)) == 1001));
        // 10 ms × (4 + 1) > 40 ms × 1.
        let _held: Vec<_> = (0..4)
            .map(|_| s.endpoints()[1].stats().start_at(later))
            .collect();
        assert!((0..50).all(|_| port(rule.choose(&s, &ctx)) == 1000));
    }

    #[tokio::test(start_paused = true)]
    async fn default_rtt_prices_unsampled_endpoints() {
        let s = snapshot(2);
        let now = Instant::now();
        sample(&s.endpoints()[0], now, 20);
        let ctx = PickContext::at(now + Duration::from_millis(20));
        let optimistic = PeakEwmaP2c::with_seed(3).default_rtt(Duration::from_millis(1));
        assert!((0..20).all(|_| port(optimistic.choose(&s, &ctx)) == 1001));
        let pessimistic = PeakEwmaP2c::with_seed(3);
        assert!((0..20).all(|_| port(pessimistic.choose(&s, &ctx)) == 1000));
    }

    #[tokio::test(start_paused = true)]
    async fn seeded_spread_skips_tripped_and_excluded() {
        let s = snapshot(5);
        let now = Instant::now();
        trip(&s.endpoints()[0], now);
        let excluded = [s.endpoints()[1].clone()];
        let ctx = PickContext::at(now).with_excluded(&excluded);
        let (a, b) = (PeakEwmaP2c::with_seed(11), PeakEwmaP2c::with_seed(11));
        let mut counts = [0u32; 5];
        for _ in 0..3_000 {
            let x = port(a.choose(&s, &ctx));
            assert_eq!(x, port(b.choose(&s, &ctx)));
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
        assert!(a.choose(&s, &ctx).is_some_and(|e| ctx.is_eligible(e)));
        assert!(a.choose(&Snapshot::empty("s"), &ctx).is_none());
        let all = s.endpoints().to_vec();
        assert!(
            a.choose(&s, &PickContext::at(now).with_excluded(&all))
                .is_none()
        );
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
            let rule = PeakEwmaP2c::with_seed(seed);
            let now = Instant::now();
            for n in sizes {
                let s = snapshot(n);
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
                    match rule.choose(&s, &ctx) {
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
}
