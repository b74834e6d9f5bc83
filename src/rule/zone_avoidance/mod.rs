//! Zone avoidance and zone preference in front of any other rule (Ribbon
//! `ZoneAvoidanceRule` with its `ZoneAvoidancePredicate`, and
//! `ZoneAffinityServerListFilter`).
//!
//! An endpoint's zone is [`Instance::zone`](crate::instance::Instance::zone),
//! or `default` when it has none, compared ASCII-case-insensitively. The
//! rule counts, per zone, the instances whose breaker is not tripped
//! (*available*) and the requests in flight *on those available instances*
//! (load on a tripped instance, which is avoided anyway, does not make its
//! zone look loaded); for picks under the health filter (not in panic
//! mode) it counts the healthy instances only, as ejected ones and those
//! failing active checks are skipped too. It classifies zones:
//! - *blacked out*: no available instance (Ribbon's
//!   `triggeringBlackoutPercentage`, 0.99999, i.e. all tripped);
//! - *overloaded*: in flight per available instance at or above
//!   [`load_threshold`](ZoneAvoidance::load_threshold) (Ribbon's
//!   `triggeringLoadPerServerThreshold`, 0.2 requests per instance);
//! - *good*: neither.
//!
//! [`Rule::build`] makes the zone table of the list (zone id per endpoint,
//! O(n)) and counts the zones at once. The counts and classes are global
//! (the same for every request), so picks do not recount them: the one
//! pick that wins a compare-and-swap on the time of the last count (read
//! from [`PickContext::now`], so paused-time tests drive it) recounts at
//! most once per [`stats_interval`](ZoneAvoidance::stats_interval) (default
//! 100 ms), in O(n) and without allocating; a new list is counted when its
//! picker is built. Classes that split the zones into good and overloaded
//! ones are counted again sooner, once the good zones took as many picks
//! as would bring them to the threshold (`load_threshold` × their
//! instances, at least 1 and at least `n / 64`: counts read at most 64
//! endpoints per pick, amortized), as Ribbon's `ZoneAvoidancePredicate`
//! takes a fresh zone snapshot (live active requests) for every server it
//! checks; and while they are split, the good tier's endpoints are given
//! to the wrapped rule from one of two places (the start and the middle of
//! their list), drawn at each pick, so a rotation's turns do not follow the
//! classes (rules that keep data per domain keep two per set of zones:
//! four places overflowed weighted round robin's 64 with 9 to 16 zones). Split classes held for an interval sent
//! every concurrent request to the good zones until the next count, which
//! then found them loaded and the avoided zone drained, and flipped all
//! traffic the other way, interval after interval; counted again at every
//! pick, they changed with the callers' own requests and a rotation in
//! step with them locked instances out. Classes that avoid no zone for
//! load (every zone good, or every zone overloaded) are held for the
//! interval.
//!
//! The allowed zones form tiers, first non-empty wins: the
//! [preferred zone](ZoneAvoidance::preferred_zone)'s healthy instances
//! (not ejected, not failing active health checks, so in panic mode a
//! preferred zone of unhealthy instances is not preferred, as the
//! preference wrappers treat their instances); the good zones; every
//! zone that is not blacked out; all zones; each tier holding only the
//! endpoints of its zones that are available at the pick time; and last
//! (fail open) every eligible endpoint, tripped ones included. In the
//! balancer's panic mode ([`PickContext::with_panic_mode`]) no tier skips a
//! tripped instance but the preferred zone's (health is ignored; the zone
//! classes stay as counted). The wrapped
//! rule's picker chooses, asked once per pick with these tiers (see
//! [`Tiers`](super::Tiers)): it steps its rotation once and takes from the
//! first tier that has an eligible endpoint for this request. So when a
//! zone fails over, the next zones' instances share its traffic evenly,
//! and a breaker tripped since the last count, an exclusion or the health
//! filter widen the pick to the next tier at once. A pick is never
//! ineligible and `None` only when nothing is eligible.
//!
//! Cost: a pick costs what the wrapped picker costs with the tiers. A tier
//! of one zone (the preferred zone, or a single good zone) tells the
//! wrapped picker its zone's endpoints ([`Domain`]), and a tier of several
//! zones (the good ones when some are avoided) their endpoints, kept per
//! set of zones from its first pick (up to 8 sets, 8 bytes per endpoint
//! each), so a round-robin picker steps over those zones only: O(1) while
//! its candidate is available and eligible, else one or two walks of the
//! zones. (Without a domain, a third of the picks walked the whole list
//! twice when one zone of three was avoided: 43 µs per pick over 10 000
//! instances for round robin, 72 µs for weighted round robin.) A tier of
//! every zone has none (the whole list). Build and recount: O(n).
//!
//! Differences from Ribbon: Ribbon drops only the single worst zone per
//! pick (and one at random among equals); here every overloaded zone is
//! avoided while a good one remains, and every zone is taken when all
//! are overloaded (Ribbon still drops the worst). So when one request
//! overloads a zone, zones share requests evenly, not load per instance:
//! three callers over zones of 1, 2 and 5 instances put about 5 times the
//! requests on the lone instance as on each of the five (helper 154).
//! Ribbon's zone affinity has its own
//! thresholds (80 % tripped, 0.6 load); here the preferred zone is used
//! whenever it has an available eligible instance. For an in-flight limit
//! per instance, wrap [`AvailabilityFiltering`](super::AvailabilityFiltering).
//! Per-zone counts live in fixed arrays: with more than 16 zones the rule
//! applies no zone logic, skips only tripped instances, and delegates.

mod zones;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use self::zones::{MAX_ZONES, STARTS, ZoneTable, classify, count, instances_in};
use super::{Domain, PickContext, Picker, RoundRobin, Rule, Tier};
use crate::instance::Endpoint;
use crate::rng::AtomicRng;
use crate::snapshot::Snapshot;

/// Avoids blacked-out and overloaded zones and prefers one zone; the
/// wrapped rule chooses inside the allowed zones.
///
/// Defaults: no preferred zone, load threshold 0.2 requests in flight per
/// available instance, zone classes recomputed at most every 100 ms.
pub struct ZoneAvoidance<R> {
    inner: R,
    preferred: Option<Box<str>>,
    load_threshold: f64,
    interval: Duration,
}

impl<R: Rule> ZoneAvoidance<R> {
    /// Default [`stats_interval`](Self::stats_interval): 100 ms.
    pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_millis(100);

    /// Zone avoidance over `inner`, with no preferred zone and a load
    /// threshold of 0.2.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            preferred: None,
            load_threshold: 0.2,
            interval: Self::DEFAULT_STATS_INTERVAL,
        }
    }

    /// Sends requests only to `zone` (case-insensitive; `default` names
    /// instances without a zone) while it has a healthy eligible instance
    /// (breaker available, not ejected, not failing active checks). Ribbon's `ZoneAffinityServerListFilter` with the client's
    /// own zone. Default: `None`, no preference. `Some("")` means `None`.
    pub fn preferred_zone(mut self, zone: Option<&str>) -> Self {
        self.preferred = zone.filter(|z| !z.is_empty()).map(Box::from);
        self
    }

    /// In-flight requests per available instance at or above which a zone
    /// is avoided while a good zone remains. Ribbon key
    /// `ZoneAwareNIWSDiscoveryLoadBalancer.triggeringLoadPerServerThreshold`.
    /// Default 0.2. `NaN` or a value ≤ 0 makes every zone overloaded, which
    /// turns load avoidance off.
    pub fn load_threshold(mut self, requests_per_instance: f64) -> Self {
        self.load_threshold = requests_per_instance;
        self
    }

    /// How old the per-zone counts and classes (available instances,
    /// requests in flight, good / overloaded / blacked out) may get: one
    /// pick recounts them at most once per `interval` (in whole
    /// milliseconds, rounded up); a new list is counted when its picker is
    /// built. Classes that split the zones into good and overloaded ones
    /// are counted again sooner (see the module docs). Default 100 ms. A
    /// breaker tripped since the last count is still skipped at pick time
    /// (the pick widens to the next tier of zones); a zone's load and
    /// recovery are seen with this delay. `Duration::ZERO` recounts on
    /// every pick (O(n); for tests); `Duration::MAX` counts only at build.
    pub fn stats_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The wrapped rule.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

impl Default for ZoneAvoidance<RoundRobin> {
    /// Zone avoidance over round robin, no preferred zone.
    fn default() -> Self {
        Self::new(RoundRobin::new())
    }
}

impl<R: Rule> fmt::Debug for ZoneAvoidance<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZoneAvoidance")
            .field("inner", &self.inner)
            .field("preferred_zone", &self.preferred)
            .field("load_threshold", &self.load_threshold)
            .field("stats_interval", &self.interval)
            .finish()
    }
}

impl<R: Rule> Rule for ZoneAvoidance<R> {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        let table = ZoneTable::build(snapshot.endpoints(), self.preferred.as_deref());
        let picker = ZonePicker {
            inner: self.inner.build(snapshot),
            table,
            load_threshold: self.load_threshold,
            interval_ms: millis_ceil(self.interval),
            base: Instant::now(),
            classes: AtomicU64::new(0),
            counted_ms: AtomicU64::new(0),
            split_picks: AtomicU64::new(0),
            budgets: AtomicU64::new(0),
            rng: AtomicRng::with_seed(snapshot.version() ^ snapshot.len() as u64),
        };
        picker.recount(Instant::now());
        Arc::new(picker)
    }

    fn name(&self) -> &'static str {
        "zone_avoidance"
    }
}

/// The picker of [`ZoneAvoidance`]: the wrapped picker, the list's zone
/// table and its cached zone classes.
struct ZonePicker {
    inner: Arc<dyn Picker>,
    table: ZoneTable,
    load_threshold: f64,
    interval_ms: u64,
    /// The origin of `counted_ms`.
    base: Instant,
    /// By zone id, as of the last count, 16 bits each from the low end:
    /// zones with an available instance, good zones, and the same two
    /// counted over healthy instances only.
    classes: AtomicU64,
    /// Time of the last count in ms since `base`.
    counted_ms: AtomicU64,
    /// Picks made since the last count while the classes split the zones
    /// (see `masks_at`).
    split_picks: AtomicU64,
    /// The split budgets of the last count, 32 bits each from the low end:
    /// over all available instances, and over the healthy ones.
    budgets: AtomicU64,
    /// Offsets of the good tier's domain while the classes split the zones.
    /// Seeded from the list's version and length (repeatable).
    rng: AtomicRng,
}

impl fmt::Debug for ZonePicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (available, good) = self.masks(false);
        f.debug_struct("ZonePicker")
            .field("inner", &self.inner)
            .field("zones", &self.table.names)
            .field("available_zones", &format_args!("{available:#b}"))
            .field("good_zones", &format_args!("{good:#b}"))
            .finish()
    }
}

impl ZonePicker {
    fn ms_since_base(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// The zones with an available instance and the good ones; with
    /// `healthy`, as counted over the healthy instances.
    fn masks(&self, healthy: bool) -> (u32, u32) {
        let packed = self.classes.load(Ordering::Acquire) >> if healthy { 32 } else { 0 };
        (packed as u32 & 0xFFFF, (packed >> 16) as u32 & 0xFFFF)
    }

    /// Counts the zones at `now` and publishes their classes and split
    /// budgets.
    fn recount(&self, now: Instant) {
        let (classes, budgets) = self.counted(now);
        self.publish(classes, budgets);
    }

    /// Stores what changed (a store per pick would make every core's picks
    /// fight over the cache line).
    fn publish(&self, classes: u64, budgets: u64) {
        if self.budgets.load(Ordering::Relaxed) != budgets {
            self.budgets.store(budgets, Ordering::Relaxed);
        }
        if self.classes.load(Ordering::Relaxed) != classes {
            self.classes.store(classes, Ordering::Release);
        }
    }

    /// The zones' classes at `now`, packed as in `classes`, and the split
    /// budgets, packed as in `budgets`.
    fn counted(&self, now: Instant) -> (u64, u64) {
        let counts = count(&self.table, self.inner.snapshot().endpoints(), now);
        let n = u64::try_from(self.table.ids.len()).unwrap_or(u64::MAX);
        let budget = |good: u32, healthy: bool| -> u64 {
            // Picks the good zones take before they could reach the
            // threshold (each pick one more request in flight); at least
            // `n / 64`, so a count reads 64 endpoints per pick at most.
            let capacity = self.load_threshold * instances_in(&counts, good, healthy) as f64;
            let capacity = if capacity >= 1.0 {
                capacity.ceil().min(f64::from(u32::MAX)) as u64
            } else {
                1
            };
            capacity.max(n / 64).min(u64::from(u32::MAX))
        };
        // Four 16-bit masks (at most `MAX_ZONES` = 16 zones get here).
        let (available, good) = classify(&counts, self.load_threshold, false);
        let (healthy, healthy_good) = classify(&counts, self.load_threshold, true);
        let classes = u64::from(available)
            | u64::from(good) << 16
            | u64::from(healthy) << 32
            | u64::from(healthy_good) << 48;
        (
            classes,
            budget(good, false) | budget(healthy_good, true) << 32,
        )
    }

    /// The zones with an available instance and the good ones for a pick
    /// at `now`, and whether they split the zones into good and overloaded
    /// ones. Split classes are counted again once the good zones took as
    /// many picks as would bring them to the threshold (the split budget:
    /// `load_threshold` × their instances, rounded up, at least 1 and at
    /// least `n / 64`), so between counts the good zones take about
    /// `load_threshold` more requests per instance, and counts read at
    /// most 64 endpoints per pick, amortized. Held split classes sent every
    /// pick to the good zones until the next count, which then found them
    /// loaded and the avoided zone drained, and avoided them instead: with
    /// two callers over two zones of three instances, 55 of 78 windows of
    /// 25 ms had 95 % or more of their requests in one zone, flipping every
    /// 100 ms (helper 153). Ribbon's `ZoneAvoidancePredicate.apply` takes a
    /// fresh `ZoneAvoidanceRule.createSnapshot` (live active requests) for
    /// every server it checks.
    fn masks_at(&self, now: Instant, healthy: bool) -> (u32, u32, bool) {
        let (available, good) = self.masks(healthy);
        if good == 0 || good == available {
            return (available, good, false);
        }
        let shift = if healthy { 32 } else { 0 };
        let every = (self.budgets.load(Ordering::Relaxed) >> shift) & 0xFFFF_FFFF;
        if self.split_picks.fetch_add(1, Ordering::Relaxed) + 1 < every {
            return (available, good, true);
        }
        self.split_picks.store(0, Ordering::Relaxed);
        count_live();
        let (classes, budgets) = self.counted(now);
        self.publish(classes, budgets);
        let packed = classes >> shift;
        let (available, good) = (packed as u32 & 0xFFFF, (packed >> 16) as u32 & 0xFFFF);
        (available, good, good != 0 && good != available)
    }

    /// Recounts if the interval has passed and this caller wins the
    /// compare-and-swap on the time of the last count. The time stored is
    /// never later than the clock's (read only when the interval passed
    /// by the pick's time): a pick stamped far ahead would otherwise hold
    /// the counts for as long.
    #[inline]
    fn maybe_recount(&self, now: Instant) {
        let now_ms = self.ms_since_base(now);
        let last = self.counted_ms.load(Ordering::Acquire);
        if now_ms.saturating_sub(last) < self.interval_ms {
            return;
        }
        let at = now_ms.min(self.ms_since_base(Instant::now()));
        if at.saturating_sub(last) < self.interval_ms {
            return;
        }
        if self
            .counted_ms
            .compare_exchange(last, at, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.recount(now);
        }
    }
}

impl Picker for ZonePicker {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint> {
        let now = ctx.now();
        let any = |_: usize, _: &Endpoint| true;
        let zones = self.table.zones();
        if zones == 0 {
            return None;
        }
        if zones > MAX_ZONES {
            let available = |_: usize, e: &Endpoint| ctx.is_available(e);
            let tiers: [Tier<'_>; 2] = [&available, &any];
            let mut link = None;
            return self.inner.pick(&ctx.with_tiers(&mut link, &tiers));
        }
        self.maybe_recount(now);
        // Under the health filter the zones' loads are those of their
        // healthy instances: ejected ones, counted, made a loaded zone
        // look idle and took every pick onto its few healthy instances.
        let (available, good, split) = self.masks_at(now, ctx.health_filter());
        let preferred = self.table.preferred.map_or(0, |p| 1 << p) & available;
        let all = u32::MAX >> (32 - zones);
        let ids = &*self.table.ids;
        // The preferred zone's tier takes its healthy instances only (not
        // ejected, not failing active checks), as the preference wrappers
        // do: in panic mode (no health filter) a preferred zone of ejected
        // instances took every pick from the healthy ones elsewhere.
        let in_zones = |mask: u32, healthy: bool| {
            move |i: usize, e: &Endpoint| {
                ids.get(i).is_some_and(|&z| mask & (1 << z) != 0)
                    && if healthy {
                        e.stats().is_healthy_at(now)
                    } else {
                        // Every instance in panic mode.
                        ctx.is_available(e)
                    }
            }
        };
        let masks = [preferred, good, available, all];
        let filters = [0, 1, 2, 3].map(|j| in_zones(masks[j], j == 0));
        let mut tiers: [Tier<'_>; 5] = [&any; 5];
        let mut domains: [Domain<'_>; 5] = [None; 5];
        let mut len = 0;
        for (j, (mask, filter)) in masks.iter().zip(&filters).enumerate() {
            // The preferred tier (healthy only) does not stand for a later
            // tier of the same zones.
            if *mask != 0 && !masks[1..j.max(1)].contains(mask) {
                tiers[len] = filter;
                // Split classes change the good zones from count to count,
                // with the callers' requests: a rotation stepping over the
                // good zones' endpoints from one place took the same few
                // instances each time (three zones of one instance, two
                // callers: 1 484, 34 and 1 484 of 3 000 picks; four zones of
                // four: 4 instances 781 picks each, 12 instances 6 or 7;
                // helpers 154 and 155). While split, the good tier's domain
                // starts at one of two places, drawn at each pick.
                let start = if j == 1 && split {
                    self.rng.below(STARTS)
                } else {
                    0
                };
                domains[len] = self.table.domain(*mask, start);
                len += 1;
            }
        }
        // Fail open: tripped endpoints too, when nothing available is left.
        tiers[len] = &any;
        let mut link = None;
        let inner = ctx.with_tiers_in(&mut link, &tiers[..=len], &domains[..=len]);
        self.inner.pick(&inner)
    }

    /// The wrapped picker's: slow start passes over within this wrapper's
    /// tiers. Not `keyed_choice`: a tier of `k` offers an instance `1/k`
    /// of keys, not the `1/n` slow start's keyed rate assumes.
    fn repeats_choice(&self, ctx: &PickContext<'_>) -> bool {
        self.inner.repeats_choice(ctx)
    }

    fn snapshot(&self) -> &Arc<Snapshot> {
        self.inner.snapshot()
    }
}

#[cfg(test)]
thread_local! {
    /// Live counts of split classes this thread made (tests only).
    static LIVE_COUNTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts one live count of split classes (tests only).
#[inline]
fn count_live() {
    #[cfg(test)]
    LIVE_COUNTS.with(|c| c.set(c.get() + 1));
}

/// `d` in whole milliseconds, rounded up (saturating).
fn millis_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod tests;
