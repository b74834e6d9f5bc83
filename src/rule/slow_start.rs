//! Slow start for instances new to the list, after Envoy's
//! `slow_start_config` (load balancing docs, "Slow start mode"), in front
//! of any rule: round robin, the weighted rules, P2C.
//!
//! An instance is in slow start for [`window`](SlowStartConfig::window)
//! after it was first seen ([`EndpointStats::first_seen`], which survives
//! refreshes that keep the instance), and again after active health checks
//! find it healthy after failing ([`EndpointStats::slow_start_since`]; the
//! balancer rebuilds the picker when a verdict changes). Its share of traffic is scaled by
//!
//! `factor = max(min_weight_percent / 100, time_factor^(1 / aggression))`,
//! `time_factor = max(elapsed, 1 ms) / window`
//!
//! as Envoy scales its weight. Instances of the first fetched list the
//! rule builds for (the first list with a version above 0, or any
//! non-empty one; the empty list a service holds before its first fetch
//! does not count) are not in slow start: Envoy starts slow start only for
//! hosts added by a membership update after the load balancer exists.
//! Neither is any instance once its window has passed.
//!
//! How the share is scaled: the wrapped picker picks as usual; a pick of an
//! instance in slow start is *accepted* at the rate `factor / f_max`
//! (`f_max` is 1 while some instance is out of slow start, else the
//! largest factor), otherwise the wrapped picker picks again. With a
//! deterministic credit per instance (it gains `factor / f_max` per offer
//! and is accepted each time the credit reaches 1), an instance that the
//! wrapped rule would give the share `p` gets `p·f / (p·f + 1 − p)`:
//! exactly Envoy's weight scaling (`w·f / (w·f + Σ others)`) for round
//! robin, smooth weighted round robin and random, and for P2C the same
//! scaling applied to what P2C would give it, for any number of new and
//! old instances. A build carries each instance's credit over from the
//! last picker the rule built, found by identity, so a rebuild (a new
//! list, a changed active-check verdict) keeps the offers it gathered:
//! started from 0 at every build, an instance at factor 0.1 got nothing
//! while rebuilds came every 5 picks, where Envoy gives it 1/11.
//!
//! A wrapped picker that chooses the same instance again while the state
//! stays (least loaded: best available, and P2C over two instances, or a
//! tier of two; see
//! [`Picker::repeats_choice`]) is asked again past the instances this
//! pick refused, among the healthy others first, so an instance in slow
//! start that is the least loaded is offered once per pick and gets
//! `factor / f_max` of those picks. Re-asked plainly, it was offered until
//! its credit let it through: a new instance, which has nothing in
//! flight, got every pick while it was the least loaded (best available
//! over 3 old instances holding 4 requests each: 8 of 20 held picks at
//! factor 0.1, as without slow start; 2 now).
//!
//! A keyed pick of [`ConsistentHash`](super::ConsistentHash) offers the
//! key's instance every time, so it is passed
//! over in the same way: a refused key goes to its next instance on the
//! ring. An instance is offered only the keys it owns, so its keyed picks
//! are accepted at a rate raised to give Envoy's share of them (see
//! `SlowStartPicker::accept`; re-asked plainly, a new instance took its
//! whole share of keys at once: 0.25 of keyed picks where 0.032 was due).
//! During the window a key's requests are split between its instance and
//! the next one, as slow start's credit decides (Envoy has no slow start
//! for ring hash at all). The rate is exact for one new instance; several
//! new at once get less of the keyed picks than Envoy's share (a refused
//! key may pass to another new instance).
//!
//! The pass-over works within each tier of the wrappers the picker is
//! under (hint, zone, sticky, subset, availability filtering pass
//! [`repeats_choice`](Picker::repeats_choice) on): a tier offers its
//! members not refused first, then the refused ones, so a pick never
//! leaves the hint group, zone or filtered set a wrapper confines it to
//! (pass-over tiers of slow start's own, outside the wrapper's, sent a
//! hint group's picks out of the group; helper 206). Before, wrapped
//! least-loaded and keyed pickers were not passed over at all, and
//! `SlowStart(AvailabilityFiltering(BestAvailable))` gave a new instance
//! 8 of 20 held picks at factor 0.1, as without slow start (2 now; a
//! keyed one 1 120 of 20 000 against 118 unwrapped, now 118). In panic
//! mode the others first are any others, healthy or not: among healthy
//! others only, the few healthy instances took every pick slow start
//! passed on (27 and 27 of 70 against 9 each).
//!
//! Limits (helper 253): a wrapper answers `repeats_choice` for the
//! context slow start holds, without its own tier, so P2C over a hint
//! group, zone or subset of two is not passed over from outside (10 of 20
//! held picks to a newcomer, as without slow start; 2 with slow start
//! inside the wrapper); `SameInstancePreference` remembers a pick slow
//! start then refuses, so put it outside slow start; inside hint groups
//! and zones keyed picks take the plain rate (below Envoy's share).
//!
//! A pick gives up after `REJECTIONS_PER_ENDPOINT · min(n, 64) +
//! MAX_REJECTIONS + 1` rejections in a row (`4n + 9` for `n ≤ 64`
//! instances, 265 above) and goes, within the first tier of the wrappers
//! it is under that has one, to an eligible instance accepted at rate 1
//! (else one in slow start there, else the last candidate: it never
//! leaves a hint group, sticky target or zone; helper 253: 72 of 100
//! hinted picks left a group of new instances), so a pick never fails because of slow
//! start and costs at most 266 picks of the wrapped rule (each O(n) when
//! the request excludes instances or the health filter is on). On
//! average it costs `1 / A` of them, `A = Σ p·rate`
//! being the rate at which the wrapped rule's picks are accepted (round
//! robin with old instances: `n / (old + Σ factor)`, 8.8 for 1 old and 64
//! new at factor 0.1). Only giving up moves a share off Envoy's. Round
//! robin over at most 265 instances never gives up while its cycle is
//! neither shared with concurrent picks nor filtered: `n` picks in a row
//! pass an instance accepted at rate 1 (over more, a run of 265
//! rejections between two such instances gives up). Uniform random over
//! `n ≤ 64` gives up with probability below
//! `(1 − k/n)^(4n + 9) < e^(−4k)`, `k` the instances accepted at rate 1:
//! less than 1.8 % of a slow-start instance's share goes to them, and
//! their own share grows by less than 0.2 % of itself. (The bound was a
//! flat 8 rejections: when many instances joined at once most picks
//! reached it, and 1 old instance among 21 at factor 0.1 got 61 % of the
//! picks instead of Envoy's 1/3.)
//!
//! Differences from Envoy: Envoy applies slow start to round robin and
//! least request only, by EDF weights; here to any wrapped rule, by
//! acceptance. As in Envoy, a host back from failing active health checks
//! is in slow start again; one back from outlier ejection or a tripped
//! circuit breaker is not (Envoy's docs name active checks only).
//!
//! Cost: [`Rule::build`] is O(n) (and returns the wrapped picker itself
//! when no instance is in slow start), plus O(n log n) once per list to
//! find the carried credits in the last list by identity; a pick of an instance out of slow
//! start costs one table lookup more, one in slow start a `powf` (none
//! for aggression 1) and a compare-and-swap.
//!
//! ```
//! use std::time::Duration;
//! use tower_ribbon::rule::{RoundRobin, SlowStart, SlowStartConfig};
//!
//! // Envoy's defaults but a 60 s window: 10 % at first, linear to 100 %.
//! let config = SlowStartConfig::new(Duration::from_secs(60));
//! assert_eq!(config.factor(Duration::from_secs(30)), 0.5);
//! let rule = SlowStart::new(RoundRobin::new(), config);
//! # let _ = rule;
//! ```
//!
//! [`EndpointStats::first_seen`]: crate::stats::EndpointStats::first_seen
//! [`EndpointStats::slow_start_since`]: crate::stats::EndpointStats::slow_start_since

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

use super::context::Passed;
use super::prefer::index_of;
use super::{PickContext, Picker, Rule};
use crate::instance::Endpoint;
use crate::snapshot::Snapshot;

/// Rejections in one pick beyond [`REJECTIONS_PER_ENDPOINT`] per endpoint
/// of the list; at the next one the pick leaves slow-start instances.
pub const MAX_REJECTIONS: usize = 8;

/// Rejections allowed per endpoint of the list before a pick gives up: a
/// bound that grows with the list, so round robin's full cycle (which
/// passes an instance accepted at rate 1) always fits and a random draw
/// gives up rarely.
pub const REJECTIONS_PER_ENDPOINT: usize = 4;

/// Endpoints counted for [`REJECTIONS_PER_ENDPOINT`] at most: a pick gives
/// up after at most `4 · 64 + 9` rejections, whatever the list's size.
/// Each wrapped pick costs O(n) when the request excludes instances (a
/// retry) or the health filter is on, so a bound growing with the list
/// made such a pick O(n²): 1.2 s at 16 000 instances.
pub const REJECTION_ENDPOINTS_MAX: usize = 64;

/// Instances a pick passes over after refusing them, at most (for a
/// wrapped picker that repeats its choice); refused ones beyond them are
/// offered again, gathering credit.
const PASSED: usize = 16;

/// Envoy's `slow_start_config`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct SlowStartConfig {
    /// `slow_start_window`: how long a new instance is in slow start. No
    /// default in Envoy (it is what turns slow start on); zero turns it
    /// off.
    pub window: Duration,
    /// `aggression`: the ramp's curvature, `> 0` (1 is linear, larger
    /// ramps faster early). Default 1.0. A value that is not a positive
    /// number (NaN, 0, negative) is read as 1.0, as Envoy does; infinity
    /// gives the full share at once (`time_factor^0`), as in Envoy.
    pub aggression: f64,
    /// `min_weight_percent`: the least share, in percent of the full one,
    /// 0 to 100. Default 10.
    pub min_weight_percent: f64,
}

impl SlowStartConfig {
    /// Slow start over `window`, aggression 1.0, minimum weight 10 %.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            aggression: 1.0,
            min_weight_percent: 10.0,
        }
    }

    /// Sets [`aggression`](Self::aggression).
    pub fn aggression(mut self, aggression: f64) -> Self {
        self.aggression = aggression;
        self
    }

    /// Sets [`min_weight_percent`](Self::min_weight_percent).
    pub fn min_weight_percent(mut self, percent: f64) -> Self {
        self.min_weight_percent = percent;
        self
    }

    /// The factor of an instance `elapsed` after it was first seen: 1 at
    /// or after the window, else Envoy's formula (see the
    /// [module docs](self)). Always in `(0, 1]` for a minimum above 0.
    pub fn factor(&self, elapsed: Duration) -> f64 {
        if elapsed >= self.window || self.window.is_zero() {
            return 1.0;
        }
        // Envoy reads a NaN or non-positive aggression as 1; an infinite
        // one gives `time^0 = 1`, the full share at once.
        let aggression = if self.aggression > 0.0 {
            self.aggression
        } else {
            1.0
        };
        let window_ms = self.window.as_secs_f64() * 1000.0;
        let time = (elapsed.as_secs_f64() * 1000.0).max(1.0) / window_ms;
        let ramp = if aggression == 1.0 {
            time
        } else {
            time.powf(1.0 / aggression)
        };
        let min = (self.min_weight_percent / 100.0).clamp(0.0, 1.0);
        let min = if min.is_nan() { 0.1 } else { min };
        ramp.max(min).min(1.0)
    }
}

/// Slow start in front of `R`. See the [module docs](self).
pub struct SlowStart<R> {
    inner: R,
    config: SlowStartConfig,
    /// When the first list was built: instances first seen by then are not
    /// in slow start.
    origin: Arc<OnceLock<Instant>>,
    /// The credits of the last picker built, which the next build carries
    /// over by identity (see [`Credits`]).
    last: ArcSwapOption<Credits>,
}

/// The acceptance credits of one picker's list, per endpoint (in units of
/// [`ONE`]), and the list they belong to. A build carries each instance's
/// credit over from the last picker's, found by identity: a rebuild (a
/// new list, a changed active-check verdict) that started every credit
/// from 0 threw away the offers an instance had gathered, so when
/// rebuilds came more often than `1 / rate` offers, an instance in slow
/// start got none of its share.
struct Credits {
    snapshot: Arc<Snapshot>,
    credits: Box<[AtomicU64]>,
}

impl Credits {
    /// The credit `e` (by identity) holds here, if it is listed.
    fn of(&self, e: &Endpoint) -> Option<u64> {
        let at = self.snapshot.position(e)??;
        Some(self.credits.get(at)?.load(Ordering::Relaxed))
    }
}

impl<R: Rule> SlowStart<R> {
    /// Slow start over `inner` with `config`.
    pub fn new(inner: R, config: SlowStartConfig) -> Self {
        Self {
            inner,
            config,
            origin: Arc::new(OnceLock::new()),
            last: ArcSwapOption::empty(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SlowStartConfig {
        &self.config
    }

    /// The wrapped rule.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

impl<R: Rule> fmt::Debug for SlowStart<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlowStart")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

/// One unit of credit.
const ONE: u64 = 1 << 32;

impl<R: Rule> Rule for SlowStart<R> {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        let inner = self.inner.build(snapshot);
        if snapshot.is_empty() && snapshot.version() == 0 {
            return inner;
        }
        let now = Instant::now();
        let origin = *self.origin.get_or_init(|| now);
        let window = self.config.window;
        let since: Vec<Option<Instant>> = snapshot
            .endpoints()
            .iter()
            .map(|e| {
                let seen = e.stats().slow_start_since();
                (seen > origin && now.saturating_duration_since(seen) < window).then_some(seen)
            })
            .collect();
        if since.iter().all(Option::is_none) {
            self.last.store(None);
            return inner;
        }
        let all_new = since.iter().all(Option::is_some);
        let earliest = since.iter().flatten().min().copied();
        let last = self.last.load_full();
        let credits = snapshot
            .endpoints()
            .iter()
            .zip(&since)
            .map(|(e, since)| {
                let carried = since
                    .and(last.as_deref())
                    .and_then(|last| last.of(e))
                    .unwrap_or(0);
                AtomicU64::new(carried)
            })
            .collect();
        let credits = Arc::new(Credits {
            snapshot: Arc::clone(snapshot),
            credits,
        });
        self.last.store(Some(Arc::clone(&credits)));
        Arc::new(SlowStartPicker {
            inner,
            config: self.config,
            since: since.into_boxed_slice(),
            credits,
            oldest: if all_new { earliest } else { None },
        })
    }

    fn name(&self) -> &'static str {
        "slow_start"
    }
}

/// The picker of [`SlowStart`] for a list with instances in slow start.
struct SlowStartPicker {
    inner: Arc<dyn Picker>,
    config: SlowStartConfig,
    /// Per endpoint, when its slow start began if it is in slow start.
    since: Box<[Option<Instant>]>,
    /// Per endpoint, its acceptance credit (in units of [`ONE`]), shared
    /// with the rule for the next build to carry over.
    credits: Arc<Credits>,
    /// When every instance is in slow start: the oldest first-seen time,
    /// whose factor is `f_max`.
    oldest: Option<Instant>,
}

impl fmt::Debug for SlowStartPicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlowStartPicker")
            .field("inner", &self.inner)
            .field("in_slow_start", &self.since.iter().flatten().count())
            .finish()
    }
}

impl SlowStartPicker {
    /// Whether the pick of endpoint `i` at `now` is accepted (spending its
    /// credit).
    ///
    /// `keyed_of` (`n`, a keyed choice over `n` instances): an instance is
    /// offered only the keys it owns, about `1/n` of picks, not every pick
    /// a rotation or a draw could give it, so `r = factor / f_max` is
    /// raised to `n·r / (r + n − 1)`, which gives it Envoy's share
    /// `r / (r + n − 1)` of keyed picks (accepted at `r`, a new instance of
    /// two took 0.050 of keyed picks at factor 0.1 where 0.090 is due;
    /// helper 202).
    fn accept(&self, i: usize, now: Instant, f_max: f64, keyed_of: Option<usize>) -> bool {
        let (Some(Some(since)), Some(credit)) = (self.since.get(i), self.credits.credits.get(i))
        else {
            return true;
        };
        let mut rate = self.config.factor(now.saturating_duration_since(*since)) / f_max;
        if let Some(n) = keyed_of.filter(|n| *n > 1) {
            let n = n as f64;
            rate = n * rate / (rate + n - 1.0);
        }
        if rate >= 1.0 || rate.is_nan() {
            return true;
        }
        // In (0, ONE]: the credit stays below 2·ONE.
        // Rounded up: `n` offers at rate `1/n` (1/6, 1/7) reach one unit
        // on the `n`-th offer, where truncation needed one offer more.
        let gain = (rate * ONE as f64).ceil() as u64;
        let mut accepted = false;
        let _ = credit.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            let c = c.saturating_add(gain);
            accepted = c >= ONE;
            Some(if accepted { c - ONE } else { c })
        });
        accepted
    }
}

impl Picker for SlowStartPicker {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint> {
        let now = ctx.now();
        let f_max = self.oldest.map_or(1.0, |oldest| {
            self.config.factor(now.saturating_duration_since(oldest))
        });
        let endpoints = self.inner.snapshot().endpoints();
        let mut last = None;
        let bound = endpoints
            .len()
            .min(REJECTION_ENDPOINTS_MAX)
            .saturating_mul(REJECTIONS_PER_ENDPOINT)
            .saturating_add(MAX_REJECTIONS);
        // A picker that chooses the same endpoint again (by load) is asked
        // again past the ones it was refused, within each of its tiers
        // among the others (healthy ones, outside panic mode) first:
        // re-asked plainly, it offered the refused one until its credit
        // let it through, so a new instance that was the least loaded got
        // every pick whatever its factor. A refused one it still offers
        // (a wrapper's tier confines the pick to it, or no other is
        // eligible) gathers credit as before.
        let repeats = self.inner.repeats_choice(ctx);
        let keyed_of = self.inner.keyed_choice(ctx).then_some(endpoints.len());
        let mut passed = [usize::MAX; PASSED];
        let mut n_passed = 0;
        for _ in 0..=bound {
            let e = if n_passed == 0 {
                self.inner.pick(ctx)?
            } else {
                let refused = |i: usize| passed[..n_passed].contains(&i);
                self.inner.pick(&ctx.passing_over(Passed(&refused)))?
            };
            let i = index_of(endpoints, e);
            if i.is_none_or(|i| self.accept(i, now, f_max, keyed_of)) {
                return Some(e);
            }
            last = Some(e);
            if let Some(i) = i.filter(|i| repeats && n_passed < PASSED && !passed.contains(i)) {
                passed[n_passed] = i;
                n_passed += 1;
            }
        }
        // Given up: within each tier, the instances accepted at rate 1
        // first: those out of slow start, or, when every instance is in
        // it, the oldest (`oldest` is `None` exactly when some instance is
        // out of slow start). As tiers of slow start's own outside the
        // wrapped picker's, "full, anywhere" came before a hint group's,
        // sticky target's or zone's members in slow start: 72 of 100
        // hinted picks left their group of new instances (helper 253).
        let (since, oldest) = (&*self.since, self.oldest);
        let slow = |i: usize| since.get(i).is_some_and(|s| *s != oldest);
        self.inner.pick(&ctx.passing_over(Passed(&slow))).or(last)
    }

    fn snapshot(&self) -> &Arc<Snapshot> {
        self.inner.snapshot()
    }
}

#[cfg(test)]
mod tests;
