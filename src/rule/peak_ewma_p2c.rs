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
//!   sample. An endpoint with no sample and nothing in flight, drawn
//!   against one that has a sample, is priced at the default RTT decayed
//!   from when it was first seen (or from its last dropped request), as
//!   tower's `PeakEwma` starts a new endpoint. A constant 30 ms would let
//!   three warm 10 ms instances win every draw against a fourth that
//!   joined: 0 of 3 000 picks over 60 s at half a request in flight. Two
//!   draws without a sample cost the same.
//!
//!   So under light, sequential load P2C sends nearly every request to the
//!   fastest instance (of two idle instances, the one answering first
//!   keeps winning while the other's unmeasured price, the decaying
//!   default RTT, stays above its own): that is the rule working, not a
//!   failure to spread. Use round robin where an even
//!   spread matters more than latency.
//!
//!   The cost jumps up at once on a slower response, decays toward faster
//!   ones with τ = [`StatsConfig::ewma_decay`](crate::stats::StatsConfig::ewma_decay)
//!   (10 s), decays toward zero while the endpoint is idle (so it is tried
//!   again) and toward the default RTT while requests are in flight (a
//!   stream gives no sample until it ends, so an old sample fades into
//!   the prior, not into "instant"), and prices a failure as at least the
//!   failure penalty (1 s).
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
//! Draws skip endpoints that are excluded or whose breaker is tripped (no
//! breaker in the balancer's panic mode, [`PickContext::with_panic_mode`]); a
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

    /// The latency assumed for an endpoint with no sample yet, decayed
    /// toward zero from when the endpoint was first seen (τ =
    /// [`StatsConfig::ewma_decay`](crate::stats::StatsConfig::ewma_decay)),
    /// so an idle newcomer is tried. Default 30 ms (tower's and Finagle's
    /// usual starting estimate).
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
    /// pick time (see the module documentation). Without a sample, the
    /// default RTT; decayed since the endpoint was first seen when `decay`
    /// (the other draw has a sample; two endpoints without one compare at
    /// the same default, or the one seen first would win every draw
    /// between them) and the endpoint has nothing in flight (decayed from
    /// its last dropped wait, if any): a decayed estimate times the requests in flight
    /// stays near zero, so an endpoint listed long before it became
    /// eligible took 659 of the next 2 000 picks, all waiting on its 2 s
    /// first answers, and one whose requests were only ever dropped 44 %
    /// of all picks (helper 120).
    #[inline]
    fn cost(&self, e: &Endpoint, ctx: &PickContext<'_>, decay: bool) -> f64 {
        let stats = e.stats();
        let now = ctx.now();
        let in_flight = stats.in_flight();
        let idle = decay && in_flight == 0;
        let rtt = match stats.peak_ewma_us_at(now) {
            // Only lower bounds (dropped requests' waits): at least the
            // default, decayed from the last drop when idle (a constant
            // floor kept a newcomer whose one attempt was dropped out for
            // good beside warm 1 ms instances: 0 of 1 200 picks in 120 s;
            // helper 122).
            Some(peak) if !stats.has_latency_sample() => peak.max(if idle {
                stats.decayed_since_peak(self.default_rtt_us, now)
            } else {
                self.default_rtt_us
            }),
            // Requests in flight: decayed toward the default, not toward
            // zero (streams give no sample until they end). Toward zero, an
            // estimate decayed since an old sample times the streams in
            // flight stayed near zero: after one old 10 ms call an instance
            // took 39 of 40 streams, and one whose only sample was a closed
            // stream 40 of 40 (helper 123). A floor of the time since the
            // last sample, capped at the default, starved a fast instance
            // holding a WebSocket beside a slow idle one (0 of 300 calls;
            // helper 126); a fresh sample barely moves now.
            Some(peak) if in_flight > 0 => stats
                .peak_toward_us(self.default_rtt_us, now)
                .unwrap_or(peak),
            Some(peak) => peak,
            None if idle => stats.decayed_since_seen(self.default_rtt_us, now),
            None => self.default_rtt_us,
        };
        let success = stats
            .success_rate_at(now)
            .unwrap_or(1.0)
            .max(MIN_SUCCESS_RATE);
        rtt * (in_flight as f64 + 1.0) / success
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
        let available = |i: usize, e: &Endpoint| member(i, e) && ctx.is_available(e);
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
        let decay = a.stats().has_latency_sample() || b.stats().has_latency_sample();
        if self.cost(a, ctx, decay) <= self.cost(b, ctx, decay) {
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

    /// Over two endpoints (the list, or the first tier's domain: a zone,
    /// a hint group or a subset of two) both are drawn on every pick, so
    /// the cheaper one wins again while costs stay as they are.
    fn repeats_choice(&self, ctx: &PickContext<'_>) -> bool {
        self.snapshot.len() <= 2 || ctx.first_domain().is_some_and(|d| d.len() <= 2)
    }

    fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }
}

#[cfg(test)]
mod tests;
