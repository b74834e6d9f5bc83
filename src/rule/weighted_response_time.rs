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
//! 45 %, 35 % and 20 %. An instance without responses yet counts as the
//! mean of the instances with some, so it starts at an average share (or
//! as the longest recent wait of its dropped attempts, a lower bound of
//! its latency decayed with the mean's τ, when that is longer); while no
//! instance has a response, all count alike. Its first answer sets its
//! mean to the longer of itself and that same decayed wait; later waits
//! raise the mean as answers that long would (by their time weight).
//! (Ribbon counts it as 0 ms, which gives it the whole sum as weight, and
//! an instance with responses beside only such ones a weight of 0: a
//! restarted instance beside one warm one took every pick, and the warm
//! one none, until the next recomputation, up to 30 s later.)
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
//! With exclusions, the health filter or inside a wrapper's tier, the
//! draw is over the eligible instances' (the tier's) weights only: first
//! up to 8 draws over the whole list until one is eligible (rejection
//! sampling: the same distribution, O(log n) each; for a tier with a
//! domain of more than 8 positions, draws over the domain from its prefix
//! sums of weights, which the picker keeps per domain until the weights
//! are recomputed, see `domain`), then, if all missed, one walk of the
//! members (O(n), or O(domain)). The walk alone took 5 ms per pick over
//! 100 000 instances with the health filter on, and 18 µs for a hint group
//! of 1 000. The picker falls back to round robin over the eligible
//! instances while their weights total less than 0.001 ms (no stats yet,
//! or a single instance).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::walk::{rotate, step_in};
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
    /// The time stored is the pick's, but never later than the clock's
    /// (read only when a pick finds the interval passed): a pick stamped
    /// an hour ahead through `PickContext::at` stored its time, and no pick
    /// of that hour was due (an instance 1 s slow kept 538 of 1 000 picks a
    /// minute later, 20 without it). A pick stamped ahead is due only
    /// once the clock is.
    fn due(&self, now: Instant, interval: Duration) -> bool {
        let now_ms = self.ms_since_epoch(now);
        let last = self.last_ms.load(Ordering::Relaxed);
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        if last != DUE && now_ms.saturating_sub(last) < interval_ms {
            return false;
        }
        let at = now_ms.min(self.ms_since_epoch(Instant::now()));
        if last != DUE && at.saturating_sub(last) < interval_ms {
            return false;
        }
        self.last_ms
            .compare_exchange(last, at, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// Whether a weight total (ms) supports a weighted draw.
fn usable(total: f64) -> bool {
    total.is_finite() && total >= MIN_TOTAL_MS
}

/// The mean in ms, 0 before the first response (for the tests).
#[cfg(test)]
fn mean_ms(e: &Endpoint) -> f64 {
    sampled_ms(e).unwrap_or(0.0)
}

/// The endpoint's mean response time in ms, `None` before its first
/// completed attempt (a mean made only of dropped attempts' waits is a
/// lower bound: see [`bound_ms`]).
fn sampled_ms(e: &Endpoint) -> Option<f64> {
    if !e.stats().has_latency_sample() {
        return None;
    }
    e.stats()
        .mean_response_time()
        .map(|d| d.as_secs_f64() * 1e3)
}

/// The lower bound in ms that dropped attempts' waits put on an
/// unsampled endpoint's latency at `now`: the longest of them, decayed
/// with the mean's τ (its peak EWMA, which holds only waits before a
/// completed attempt; 0 without one), as its first answer will read it. Read as a mean, a wait of 1 ms made an instance that
/// never answered the fastest: 902 of 1 000 picks beside one of 10 ms
/// (helper 161); a mean of the waits blended a 200 ms wait after a 1 ms
/// one to 2.3 ms (helper 164).
fn bound_ms(e: &Endpoint, now: Instant) -> f64 {
    e.stats().wait_bound_us_at(now).map_or(0.0, |us| us / 1e3)
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
            offset: (self.shared.cursor).anchor(snapshot.endpoints(), snapshot.len()),
            interval: self.interval,
            cumulative,
            domains: domain::DomainSums::default(),
        };
        let at = Instant::now();
        picker.fill(at);
        let now = self.shared.ms_since_epoch(at);
        self.shared.last_ms.store(now, Ordering::Relaxed);
        Arc::new(picker)
    }

    fn name(&self) -> &'static str {
        "weighted_response_time"
    }
}

/// Draws over the whole list before a pick among members walks them.
const REJECTION_DRAWS: usize = 8;

/// The picker of [`WeightedResponseTime`]: cumulative weights of one list.
struct WeightedResponseTimePicker {
    snapshot: Arc<Snapshot>,
    shared: Arc<Shared>,
    /// Added to every step of the fallback rotation (see `Cursor::anchor`).
    offset: usize,
    interval: Duration,
    /// `cumulative[i] = W(0) + … + W(i)` in ms, as `f64` bits.
    cumulative: Box<[AtomicU64]>,
    /// The prefix sums of the large domains picks brought (see `domain`).
    domains: domain::DomainSums,
}

impl fmt::Debug for WeightedResponseTimePicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightedResponseTimePicker")
            .field("instances", &self.snapshot.len())
            .finish_non_exhaustive()
    }
}

impl WeightedResponseTimePicker {
    /// Recomputes the weights in place from the stats at `now`.
    fn fill(&self, now: Instant) {
        // Odd while rewriting: domain sums read meanwhile are not kept.
        self.domains.generation.fetch_add(1, Ordering::AcqRel);
        self.fill_weights(now);
        self.domains.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn fill_weights(&self, now: Instant) {
        let endpoints = self.snapshot.endpoints();
        // An endpoint without responses counts as the mean of those with
        // some (0 when none has): counted as 0 ms, as Ribbon does, it
        // weighed the whole sum and an endpoint with responses beside only
        // unsampled ones weighed nothing, so a restarted instance beside
        // one warm one took every pick until the next recomputation.
        let (sum, sampled) = endpoints
            .iter()
            .filter_map(sampled_ms)
            .fold((0.0, 0u32), |(s, n), m| (s + m, n + 1));
        // Unsampled, an endpoint counts as the average or as its bound when
        // that is longer; with none sampled, all alike (round robin), not
        // by their bounds (a 1 ms wait beside an instance never tried
        // took every pick; helper 164).
        let unsampled = |e: &Endpoint| match sampled {
            0 => 0.0,
            n => (sum / f64::from(n)).max(bound_ms(e, now)),
        };
        let mean = |e: &Endpoint| sampled_ms(e).unwrap_or_else(|| unsampled(e));
        let total: f64 = endpoints.iter().map(mean).sum();
        let mut acc = 0.0;
        for (e, c) in endpoints.iter().zip(&*self.cumulative) {
            acc += (total - mean(e)).max(0.0);
            c.store(acc.to_bits(), Ordering::Relaxed);
        }
    }

    /// Endpoint `i`'s weight: its step of the cumulative sums.
    fn weight(&self, i: usize) -> f64 {
        if i >= self.cumulative.len() {
            return 0.0;
        }
        let before = i.checked_sub(1).map_or(0.0, |p| self.cum(p));
        (self.cum(i) - before).max(0.0)
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
    /// `k`: the pick's rotation position (stepped once per pick, however
    /// many tiers are tried).
    fn draw_members<'s>(
        &self,
        endpoints: &'s [Endpoint],
        member: &dyn Fn(usize, &Endpoint) -> bool,
        domain: Domain<'_>,
        k: &dyn Fn() -> usize,
    ) -> Option<&'s Endpoint> {
        // Most tiers hold most of the list (the health filter, a retry's
        // exclusions, availability filtering, a zone): draws over the
        // whole list until one is a member (rejection sampling, the same
        // distribution as the walk's draw over the members) before the
        // walk, which took 5 ms per pick over 100 000 instances.
        // The members' weights total no more than the list's: a list whose
        // weights total too little to draw by (no stats yet) goes straight
        // to round robin, whose member candidate costs O(1) (the members'
        // total was walked first, then the k-th member counted: two walks
        // per pick, 4 ms over 100 000 instances).
        if !usable(self.cum_total()) {
            return step_in(endpoints, member, domain, k());
        }
        let drawn = match domain {
            Some(d) if d.len() > domain::WALKED => self.domains.draw(self, endpoints, member, d),
            Some(_) => None,
            None => self.draw_rejecting(endpoints, member),
        };
        if drawn.is_some() {
            return drawn;
        }
        match domain {
            Some(d) => self.draw_in(endpoints, member, d.iter().map(|&i| i as usize)),
            None => self.draw_in(endpoints, member, 0..endpoints.len()),
        }
        .unwrap_or_else(|| step_in(endpoints, member, domain, k()))
    }

    /// Steps the rotation: the position of a pick by round robin.
    fn step(&self, ctx: &PickContext<'_>, endpoints: &[Endpoint]) -> usize {
        self.shared
            .cursor
            .step(ctx, endpoints)
            .wrapping_add(self.offset)
    }

    /// The weights' total over the whole list (0 for an empty one).
    fn cum_total(&self) -> f64 {
        self.cumulative
            .len()
            .checked_sub(1)
            .map_or(0.0, |last| self.cum(last))
    }

    /// Up to [`REJECTION_DRAWS`] draws over the whole list ([`Self::draw_all`]):
    /// the first that `member` accepts, or `None` when all missed.
    fn draw_rejecting<'s>(
        &self,
        endpoints: &'s [Endpoint],
        member: &dyn Fn(usize, &Endpoint) -> bool,
    ) -> Option<&'s Endpoint> {
        if endpoints.len() < 2 {
            return None;
        }
        for _ in 0..REJECTION_DRAWS {
            let i = self.draw_all()?;
            let e = endpoints.get(i)?;
            if member(i, e) {
                return Some(e);
            }
        }
        None
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
        super::walk::count_walk();
        let n = self.cumulative.len();
        let weight = |i: usize| self.weight(i);
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
            // Bounds read at the clock at the latest, as `due` stores it: a
            // pick stamped an hour ahead decayed a 20 s wait to nothing
            // and gave its instance half the picks (helper 166).
            self.fill(ctx.now().min(Instant::now()));
        }
        if endpoints.len() < 2 || (ctx.all_eligible() && !ctx.has_tiers()) {
            if endpoints.len() >= 2 {
                if let Some(i) = self.draw_all() {
                    return endpoints.get(i);
                }
            }
            return rotate(endpoints, ctx, self.step(ctx, endpoints));
        }
        // The rotation position is stepped once per pick, however many
        // tiers are tried. Stepped once per tier, a wrapper's fallback
        // without weights yet (no samples: round robin) moved it two or
        // three places per pick (availability filtering's fail-open, a
        // sticky or hinted instance excluded by a retry, a zone or subset
        // down): with two instances availability filtering's fail-open
        // sent 100 of 100 picks to one, over 64 a sticky retry skipped
        // every other one (helper 136).
        let step = std::cell::Cell::new(None);
        let k = || match step.get() {
            Some(k) => k,
            None => {
                let k = self.step(ctx, endpoints);
                step.set(Some(k));
                k
            }
        };
        ctx.find_tier_in(&mut |member, domain| self.draw_members(endpoints, member, domain, &k))
    }

    fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }
}

mod domain;

#[cfg(test)]
mod tests;
