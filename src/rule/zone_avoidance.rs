//! Zone avoidance and zone preference in front of any other rule (Ribbon
//! `ZoneAvoidanceRule` with its `ZoneAvoidancePredicate`, and
//! `ZoneAffinityServerListFilter`).
//!
//! An endpoint's zone is [`Instance::zone`](crate::instance::Instance::zone),
//! or `default` when it has none, compared ASCII-case-insensitively. The
//! rule counts, per zone, the instances whose breaker is not tripped
//! (*available*) and the requests in flight, and classifies zones:
//! - *blacked out*: no available instance (Ribbon's
//!   `triggeringBlackoutPercentage`, 0.99999, i.e. all tripped);
//! - *overloaded*: in flight per available instance at or above
//!   [`load_threshold`](ZoneAvoidance::load_threshold) (Ribbon's
//!   `triggeringLoadPerServerThreshold`, 0.2);
//! - *good*: neither.
//!
//! These zone counts and classes are global (the same for every request),
//! so they are not recounted per pick: they are cached and recomputed at
//! most once per [`stats_interval`](ZoneAvoidance::stats_interval) (default
//! 100 ms), and as soon as a pick reads a snapshot the cache does not
//! describe (after [`Rule::update`], or a newer version). Like Ribbon's
//! `ZoneAwareLoadBalancer`, which works from periodically refreshed
//! `LoadBalancerStats` zone snapshots, the classes may therefore be up to
//! `stats_interval` old. The one pick that wins a compare-and-swap on the
//! time of the last recomputation (read from
//! [`PickContext::now`], so paused-time tests drive it) walks the snapshot
//! and publishes new classes; that pick may allocate, every other pick
//! allocates nothing.
//!
//! The allowed zones are tried in tiers, first success wins: the
//! [preferred zone](ZoneAvoidance::preferred_zone) while it has an
//! available instance; else the good zones; else every zone that is not
//! blacked out; else all zones. Inside a tier the wrapped rule chooses: it
//! is asked up to `min(len, 10)` times and its first pick that is in an
//! allowed zone, eligible for this request and not tripped is returned;
//! then one walk from a rotating offset takes the first such endpoint. The
//! per-request facts (exclusions, the health filter) and the breaker state
//! at pick time are checked on each candidate, so when a tier has no
//! available eligible endpoint for this request (excluded, or tripped since
//! the last recomputation) the pick widens to the zones of the next tier,
//! and a pick is never ineligible and `None` only when nothing is eligible.
//! A tripped endpoint is returned only when no available eligible one is
//! left in any zone (fail open), so like Ribbon's `ZoneAvoidanceRule` (zone
//! predicate and availability predicate together) tripped instances are
//! skipped inside good zones too.
//!
//! Cost: a pick loads the cached classes once (an `ArcSwap` load) and then
//! costs what the wrapped rule and its filter cost, independent of the
//! number of instances while the first tier has an available eligible
//! endpoint; a tier without one costs a walk of the list. A recomputation
//! is O(n), at most once per `stats_interval`.
//!
//! Differences from Ribbon: Ribbon drops only the single worst zone per
//! pick (and one at random among equals); here every overloaded zone is
//! avoided while a good one remains. Ribbon's zone affinity has its own
//! thresholds (80 % tripped, 0.6 load); here the preferred zone is used
//! whenever it has an available eligible instance. For an in-flight limit
//! per instance, wrap [`AvailabilityFiltering`](super::AvailabilityFiltering).
//!
//! The zone of each endpoint is computed in [`Rule::update`] (or by the
//! recomputation) and kept with the snapshot's version, length and address.
//! A pick on a list the cache does not describe and may not rebuild for (an
//! older version, or the same version within the interval, or while another
//! pick is recomputing) counts per pick instead, comparing zone names and
//! still without allocating. Per-zone counts live in fixed arrays: with more
//! than 16 zones the rule applies no zone logic and just delegates.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use tokio::time::Instant;

use super::support::first_passing;
use super::{PickContext, RoundRobin, Rule};
use crate::discovery::Snapshot;
use crate::instance::Endpoint;

/// Most zones the per-zone counts hold; beyond that, no zone logic.
const MAX_ZONES: usize = 16;
/// The zone of an instance that has none.
const DEFAULT_ZONE: &str = "default";
/// Value of [`ZoneAvoidance::counted_ms`] that makes the next pick
/// recompute (set by [`Rule::update`] and at construction).
const STALE: u64 = u64::MAX;

fn zone_name(e: &Endpoint) -> &str {
    e.instance().zone().unwrap_or(DEFAULT_ZONE)
}

/// The zone id of each endpoint of one snapshot.
struct ZoneTable {
    version: u64,
    len: usize,
    addr: usize,
    ids: Box<[u16]>,
    names: Box<[Box<str>]>,
    preferred: Option<u16>,
}

impl ZoneTable {
    /// A table that describes no snapshot with endpoints.
    fn empty() -> Self {
        Self {
            version: 0,
            len: 0,
            addr: 0,
            ids: Box::default(),
            names: Box::default(),
            preferred: None,
        }
    }

    /// The zones of `snapshot`'s endpoints (allocates).
    fn build(snapshot: &Snapshot, preferred: Option<&str>) -> Self {
        let mut by_name: HashMap<String, u16> = HashMap::new();
        let mut names: Vec<Box<str>> = Vec::new();
        let ids = snapshot
            .endpoints()
            .iter()
            .map(|e| {
                let key = zone_name(e).to_ascii_lowercase();
                *by_name.entry(key).or_insert_with_key(|key| {
                    names.push(key.as_str().into());
                    u16::try_from(names.len() - 1).unwrap_or(u16::MAX)
                })
            })
            .collect();
        let preferred = preferred.and_then(|p| by_name.get(&p.to_ascii_lowercase()).copied());
        Self {
            version: snapshot.version(),
            len: snapshot.len(),
            addr: snapshot.endpoints().as_ptr() as usize,
            ids,
            names: names.into(),
            preferred,
        }
    }

    fn describes(&self, snapshot: &Snapshot) -> bool {
        self.version == snapshot.version()
            && self.len == snapshot.len()
            && self.addr == snapshot.endpoints().as_ptr() as usize
    }
}

/// Per-zone counts of one pick (slow path), `usable` for this request.
#[derive(Clone, Copy, Default)]
struct ZoneLoad {
    available: usize,
    usable: usize,
    in_flight: usize,
}

/// Per-zone counts of one recomputation, for every request.
#[derive(Clone, Copy, Default, Debug)]
struct ZoneCount {
    available: usize,
    in_flight: usize,
}

/// The cached zone state: the table and, once counted, the classes.
struct ZoneState {
    table: Arc<ZoneTable>,
    /// Whether the counts and masks below were computed for `table`
    /// (`false` right after [`Rule::update`] until a pick recomputes).
    counted: bool,
    counts: [ZoneCount; MAX_ZONES],
    /// Zones with an available instance (not blacked out), bit per zone id.
    available: u32,
    /// Available zones under the load threshold.
    good: u32,
}

impl ZoneState {
    fn uncounted(table: Arc<ZoneTable>) -> Self {
        Self {
            table,
            counted: false,
            counts: [ZoneCount::default(); MAX_ZONES],
            available: 0,
            good: 0,
        }
    }
}

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
    /// `interval` in ms, rounded up.
    interval_ms: u64,
    state: ArcSwap<ZoneState>,
    /// The origin of `counted_ms`.
    base: Instant,
    /// Time of the last recomputation in ms since `base`, or [`STALE`].
    counted_ms: AtomicU64,
    next: AtomicUsize,
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
            interval_ms: millis_ceil(Self::DEFAULT_STATS_INTERVAL),
            state: ArcSwap::from_pointee(ZoneState::uncounted(Arc::new(ZoneTable::empty()))),
            base: Instant::now(),
            counted_ms: AtomicU64::new(STALE),
            next: AtomicUsize::new(0),
        }
    }

    /// Sends requests only to `zone` (case-insensitive; `default` names
    /// instances without a zone) while it has an available eligible
    /// instance. Ribbon's `ZoneAffinityServerListFilter` with the client's
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
    /// milliseconds, rounded up), and at once when it reads a snapshot they
    /// were not counted for. Like Ribbon's `ZoneAwareLoadBalancer`, which
    /// works from periodically refreshed `LoadBalancerStats` zone
    /// snapshots. Default 100 ms. A breaker tripped since the last count
    /// is still skipped at pick time (the pick widens to the next tier of
    /// zones); a zone's load and recovery are seen with this delay.
    /// `Duration::ZERO` recounts on every pick (O(n) and allocating; for
    /// tests); `Duration::MAX` recounts only for new snapshots.
    pub fn stats_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self.interval_ms = millis_ceil(interval);
        self
    }

    /// The wrapped rule.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Asks the wrapped rule for an available pick whose index `allowed`
    /// accepts, then walks from a rotating offset; `Err` with a tripped
    /// endpoint of an allowed zone (or none) when no available one is left.
    fn select<'s>(
        &self,
        snapshot: &'s Snapshot,
        ctx: &PickContext<'_>,
        allowed: impl Fn(usize) -> bool,
    ) -> Result<&'s Endpoint, Option<&'s Endpoint>> {
        let available = |e: &Endpoint| e.stats().is_available_at(ctx.now());
        first_passing(&self.inner, snapshot, ctx, &self.next, allowed, available)
    }

    /// [`Self::select`] with its fail-open fallback.
    fn select_or_tripped<'s>(
        &self,
        snapshot: &'s Snapshot,
        ctx: &PickContext<'_>,
        allowed: impl Fn(usize) -> bool,
    ) -> Option<&'s Endpoint> {
        self.select(snapshot, ctx, allowed)
            .map_or_else(|tripped| tripped, Some)
    }

    fn ms_since_base(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.base).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX).min(STALE - 1)
    }

    /// Whether a zone with these counts is good (not blacked out, under
    /// the load threshold).
    fn is_good(&self, available: usize, in_flight: usize) -> bool {
        available > 0 && (in_flight as f64) < self.load_threshold * available as f64
    }

    /// The cached zone state, recomputed first if it is due (interval
    /// passed, or made stale by [`Rule::update`]) or describes an older
    /// snapshot than `snapshot`, and this caller wins the compare-and-swap
    /// on the time of the last recomputation. The caller checks that the
    /// result is counted and describes `snapshot`.
    #[inline]
    fn current(&self, snapshot: &Snapshot, now: Instant) -> Guard<Arc<ZoneState>> {
        let state = self.state.load();
        let now_ms = self.ms_since_base(now);
        let last = self.counted_ms.load(Ordering::Acquire);
        let due = last == STALE || now_ms.saturating_sub(last) >= self.interval_ms;
        let fits = state.table.describes(snapshot);
        if fits && due {
            return self.recompute(state, snapshot, now, last, now_ms);
        }
        if !fits {
            let newer = snapshot.version() > state.table.version;
            let same = snapshot.version() == state.table.version;
            // A newer snapshot: at once, but once per millisecond (a pick
            // in this millisecond may be recomputing it). The same version
            // with another list: when due. An older one: never.
            if (newer && (due || last != now_ms)) || (same && due) {
                return self.recompute(state, snapshot, now, last, now_ms);
            }
        }
        state
    }

    /// Recounts (and rebuilds the table if it does not describe `snapshot`)
    /// if this caller moves the time of the last recomputation from `last`
    /// to `now_ms`; publishes and returns the new state. Allocates.
    #[cold]
    fn recompute(
        &self,
        state: Guard<Arc<ZoneState>>,
        snapshot: &Snapshot,
        now: Instant,
        last: u64,
        now_ms: u64,
    ) -> Guard<Arc<ZoneState>> {
        if self
            .counted_ms
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return state;
        }
        let table = if state.table.describes(snapshot) {
            Arc::clone(&state.table)
        } else {
            Arc::new(ZoneTable::build(snapshot, self.preferred.as_deref()))
        };
        drop(state);
        let mut counted = ZoneState::uncounted(table);
        let zones = counted.table.names.len();
        if zones <= MAX_ZONES {
            for (e, &z) in snapshot.endpoints().iter().zip(&*counted.table.ids) {
                let stats = e.stats();
                let c = &mut counted.counts[usize::from(z)];
                c.in_flight += stats.in_flight();
                c.available += usize::from(stats.is_available_at(now));
            }
            for (z, c) in counted.counts.iter().enumerate().take(zones) {
                if c.available > 0 {
                    counted.available |= 1 << z;
                    if self.is_good(c.available, c.in_flight) {
                        counted.good |= 1 << z;
                    }
                }
            }
        }
        counted.counted = true;
        self.state.store(Arc::new(counted));
        self.state.load()
    }

    /// A pick that counts the zones itself, for a snapshot the cache does
    /// not describe (or before the first count): O(n), no allocation.
    fn choose_counting<'s>(
        &self,
        snapshot: &'s Snapshot,
        ctx: &PickContext<'_>,
        table: &ZoneTable,
    ) -> Option<&'s Endpoint> {
        let endpoints = snapshot.endpoints();
        let now = ctx.now();
        let cached = table.describes(snapshot);
        if cached && table.names.len() > MAX_ZONES {
            return self.select_or_tripped(snapshot, ctx, |_| true);
        }
        // Without a table: the first endpoint seen of each zone stands for it.
        let mut reps = [0usize; MAX_ZONES];
        let mut zones = 0;
        let mut load = [ZoneLoad::default(); MAX_ZONES];
        for (i, e) in endpoints.iter().enumerate() {
            let z = if cached {
                usize::from(table.ids[i])
            } else {
                match find_zone(endpoints, &reps[..zones], zone_name(e)) {
                    Some(z) => z,
                    None if zones < MAX_ZONES => {
                        reps[zones] = i;
                        zones += 1;
                        zones - 1
                    }
                    None => return self.select_or_tripped(snapshot, ctx, |_| true),
                }
            };
            let stats = e.stats();
            let l = &mut load[z];
            l.in_flight += stats.in_flight();
            if stats.is_available_at(now) {
                l.available += 1;
                l.usable += usize::from(ctx.is_eligible(e));
            }
        }
        if cached {
            zones = table.names.len();
        }
        let (mut usable, mut good) = (0u32, 0u32);
        for (z, l) in load.iter().enumerate().take(zones) {
            if l.usable > 0 {
                usable |= 1 << z;
                if self.is_good(l.available, l.in_flight) {
                    good |= 1 << z;
                }
            }
        }
        let preferred = if cached {
            table.preferred.map(usize::from)
        } else {
            let p = self.preferred.as_deref();
            p.and_then(|p| find_zone(endpoints, &reps[..zones], p))
        };
        let allowed = match preferred {
            Some(p) if usable & (1 << p) != 0 => 1 << p,
            _ if good != 0 => good,
            _ if usable != 0 => usable,
            _ => return self.select_or_tripped(snapshot, ctx, |_| true),
        };
        self.select_or_tripped(snapshot, ctx, |i| {
            let z = if cached {
                usize::from(table.ids[i])
            } else {
                find_zone(endpoints, &reps[..zones], zone_name(&endpoints[i])).unwrap_or(0)
            };
            allowed & (1 << z) != 0
        })
    }
}

/// `d` in whole milliseconds, rounded up (saturating).
fn millis_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The index in `reps` of the zone named `name`.
fn find_zone(endpoints: &[Endpoint], reps: &[usize], name: &str) -> Option<usize> {
    reps.iter()
        .position(|&r| zone_name(&endpoints[r]).eq_ignore_ascii_case(name))
}

impl Default for ZoneAvoidance<RoundRobin> {
    /// Zone avoidance over round robin, no preferred zone.
    fn default() -> Self {
        Self::new(RoundRobin::new())
    }
}

impl<R: Rule> fmt::Debug for ZoneAvoidance<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.load();
        let zones = state.table.names.len().min(MAX_ZONES);
        f.debug_struct("ZoneAvoidance")
            .field("inner", &self.inner)
            .field("preferred_zone", &self.preferred)
            .field("load_threshold", &self.load_threshold)
            .field("stats_interval", &self.interval)
            .field("zones", &state.table.names)
            .field("counted", &state.counted)
            .field("zone_counts", &&state.counts[..zones])
            .finish()
    }
}

impl<R: Rule> Rule for ZoneAvoidance<R> {
    fn choose<'s>(&self, snapshot: &'s Snapshot, ctx: &PickContext<'_>) -> Option<&'s Endpoint> {
        if snapshot.is_empty() {
            return None;
        }
        let state = self.current(snapshot, ctx.now());
        let table = &*state.table;
        if !state.counted || !table.describes(snapshot) {
            return self.choose_counting(snapshot, ctx, table);
        }
        let zones = table.names.len();
        if zones > MAX_ZONES {
            return self.select_or_tripped(snapshot, ctx, |_| true);
        }
        let all = u32::MAX >> (32 - zones);
        let preferred = table.preferred.map_or(0, |p| 1 << p) & state.available;
        let ids = &*table.ids;
        // Each tier adds the zones the earlier ones lacked; a tier whose
        // zones have no available eligible endpoint for this request widens
        // to the next.
        let mut tried = 0u32;
        let mut tripped = None;
        for tier in [preferred, state.good, state.available, all] {
            let allowed = tier & !tried;
            if allowed == 0 {
                continue;
            }
            tried |= allowed;
            match self.select(snapshot, ctx, |i| allowed & (1 << ids[i]) != 0) {
                Ok(e) => return Some(e),
                Err(first) => tripped = tripped.or(first),
            }
        }
        tripped
    }

    fn update(&self, snapshot: &Snapshot) {
        self.inner.update(snapshot);
        let table = ZoneTable::build(snapshot, self.preferred.as_deref());
        self.state
            .store(Arc::new(ZoneState::uncounted(Arc::new(table))));
        self.counted_ms.store(STALE, Ordering::Release);
    }

    fn name(&self) -> &'static str {
        "zone_avoidance"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rule::support::position;
    use crate::rule::test_support::{BASE_PORT, instance, trip};
    use crate::rule::{AllFilteredPolicy, AvailabilityFiltering};
    use crate::stats::Outcome;
    use proptest::prelude::*;
    use tokio::time::Instant;

    const STATS_INTERVAL: Duration = ZoneAvoidance::<RoundRobin>::DEFAULT_STATS_INTERVAL;

    fn zoned(zones: &[&str], version: u64) -> Snapshot {
        let eps = zones
            .iter()
            .zip(BASE_PORT..)
            .map(|(z, p)| Endpoint::new(instance("127.0.0.1", p).with_zone(*z)))
            .collect();
        Snapshot::new("s", eps, version)
    }

    /// `picks` requests at the (paused) current time, each finished at once
    /// with a success; the count per endpoint.
    fn drive<R: Rule>(rule: &R, s: &Snapshot, picks: usize) -> Vec<u32> {
        let mut counts = vec![0; s.len()];
        for _ in 0..picks {
            let e = rule.choose(s, &PickContext::new()).unwrap();
            counts[position(s.endpoints(), e).unwrap()] += 1;
            e.stats()
                .start()
                .finish_at(Outcome::Success, Instant::now());
        }
        counts
    }

    #[tokio::test(start_paused = true)]
    async fn blacked_out_zone_gets_no_traffic_until_it_recovers() {
        let s = zoned(&["zone-a", "zone-a", "zone-b", "ZONE-B"], 1);
        let rule = ZoneAvoidance::new(RoundRobin::with_start(0));
        rule.update(&s);
        trip(&s.endpoints()[2], Instant::now());
        trip(&s.endpoints()[3], Instant::now());
        assert_eq!(drive(&rule, &s, 200), [100, 100, 0, 0]);
        // Past the 10 s blackout: half-open, each probe succeeds and closes.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(drive(&rule, &s, 200), [50, 50, 50, 50]);
        let now = Instant::now();
        assert!(s.endpoints().iter().all(|e| !e.stats().is_tripped_at(now)));
    }

    #[tokio::test(start_paused = true)]
    async fn preferred_zone_then_good_zones_then_not_blacked_out() {
        let s = zoned(&["zone-a", "zone-a", "zone-b", "zone-c", ""], 1);
        let rule = ZoneAvoidance::new(RoundRobin::with_start(0)).preferred_zone(Some("Zone-A"));
        rule.update(&s);
        assert_eq!(drive(&rule, &s, 100), [50, 50, 0, 0, 0]);
        let unzoned = ZoneAvoidance::new(RoundRobin::new()).preferred_zone(Some("DEFAULT"));
        assert_eq!(drive(&unzoned, &s, 10), [0, 0, 0, 0, 10]); // no update: by name

        let now = Instant::now();
        trip(&s.endpoints()[0], now);
        assert_eq!(drive(&rule, &s, 10), [0, 10, 0, 0, 0]);
        trip(&s.endpoints()[1], now);
        assert_eq!(drive(&rule, &s, 90), [0, 0, 30, 30, 30]);
        // zone-b overloaded (1 in flight on 1 instance): the others take it
        // once the zone loads are recounted.
        let _b = s.endpoints()[2].stats().start();
        tokio::time::advance(STATS_INTERVAL).await;
        assert_eq!(drive(&rule, &s, 10), [0, 0, 0, 5, 5]);
        // Every zone overloaded or blacked out: all but the blacked-out one.
        let _c = s.endpoints()[3].stats().start();
        let _d = s.endpoints()[4].stats().start();
        tokio::time::advance(STATS_INTERVAL).await;
        assert_eq!(drive(&rule, &s, 30), [0, 0, 10, 10, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_table_many_zones_exclusions_and_empty() {
        let s = zoned(&["a", "a", "b", "b"], 1);
        trip(&s.endpoints()[0], Instant::now());
        trip(&s.endpoints()[1], Instant::now());
        let rule = ZoneAvoidance::new(RoundRobin::with_start(0));
        rule.update(&zoned(&["a", "b", "b", "a"], 1)); // same version, other list
        assert_eq!(drive(&rule, &s, 10), [0, 0, 5, 5]);
        let excluded = [s.endpoints()[2].clone()];
        let ctx = PickContext::new().with_excluded(&excluded);
        assert!((0..10).all(|_| rule.choose(&s, &ctx).unwrap().instance().port() == 1003));
        let all = s.endpoints().to_vec();
        assert!(
            rule.choose(&s, &PickContext::new().with_excluded(&all))
                .is_none()
        );
        assert!(
            rule.choose(&Snapshot::empty("s"), &PickContext::new())
                .is_none()
        );

        // 17 zones: no zone logic, only tripped instances are skipped.
        let names: Vec<String> = (0..17).map(|z| format!("z{z}")).collect();
        let many = zoned(&names.iter().map(String::as_str).collect::<Vec<_>>(), 2);
        trip(&many.endpoints()[0], Instant::now());
        for update in [false, true] {
            let rule = ZoneAvoidance::new(RoundRobin::with_start(0));
            if update {
                rule.update(&many);
            }
            let counts = drive(&rule, &many, 34);
            assert_eq!(counts[0], 0);
            assert!(
                counts[1..].iter().all(|c| (2..=3).contains(c)),
                "{counts:?}"
            );
        }
        assert!(format!("{rule:?}").contains("zones"));
        assert_eq!(rule.name(), "zone_avoidance");
    }

    #[tokio::test(start_paused = true)]
    async fn zone_loads_are_recounted_every_stats_interval_and_per_snapshot() {
        let s = zoned(&["a", "b"], 1);
        let rule = ZoneAvoidance::new(RoundRobin::with_start(0));
        rule.update(&s);
        assert_eq!(drive(&rule, &s, 10), [5, 5]);
        // Zone a overloaded: seen once the counts are a stats interval old.
        let _a = s.endpoints()[0].stats().start();
        assert_eq!(drive(&rule, &s, 10), [5, 5]);
        tokio::time::advance(STATS_INTERVAL - Duration::from_millis(1)).await;
        assert_eq!(drive(&rule, &s, 10), [5, 5]);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(drive(&rule, &s, 10), [0, 10]);
        let debug = format!("{rule:?}");
        assert!(debug.contains("stats_interval: 100ms"), "{debug}");

        // A new snapshot is counted at once, with or without `update`.
        let s2 = zoned(&["a", "b"], 2);
        let _b = s2.endpoints()[1].stats().start();
        rule.update(&s2);
        assert_eq!(drive(&rule, &s2, 10), [10, 0]);
        let s3 = zoned(&["a", "b"], 3);
        let _a3 = s3.endpoints()[0].stats().start();
        assert_eq!(drive(&rule, &s3, 10), [0, 10]);
        // An older one is counted per pick and leaves the cache alone.
        assert_eq!(drive(&rule, &s2, 10), [10, 0]);
        assert_eq!(drive(&rule, &s3, 10), [0, 10]);

        // A zero interval recounts on every pick.
        let eager = ZoneAvoidance::new(RoundRobin::with_start(0)).stats_interval(Duration::ZERO);
        let s4 = zoned(&["a", "b"], 4);
        eager.update(&s4);
        assert_eq!(drive(&eager, &s4, 10), [5, 5]);
        let _b4 = s4.endpoints()[1].stats().start();
        assert_eq!(drive(&eager, &s4, 10), [10, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_counts_widen_to_the_next_tier() {
        let s = zoned(&["a", "a", "b", "c"], 1);
        let rule = ZoneAvoidance::new(RoundRobin::with_start(0)).preferred_zone(Some("a"));
        rule.update(&s);
        assert_eq!(drive(&rule, &s, 10), [5, 5, 0, 0]);
        // The preferred zone excluded for one request: the good zones.
        let excluded = [s.endpoints()[0].clone(), s.endpoints()[1].clone()];
        let ctx = PickContext::new().with_excluded(&excluded);
        for _ in 0..10 {
            let e = rule.choose(&s, &ctx).unwrap();
            assert!(ctx.is_eligible(e) && zone_name(e) != "a");
        }
        // Zone a blacked out and zone b loaded since the last count: a is
        // skipped at once, b counts as good until the recount.
        let _b = s.endpoints()[2].stats().start();
        trip(&s.endpoints()[0], Instant::now());
        trip(&s.endpoints()[1], Instant::now());
        assert_eq!(drive(&rule, &s, 10), [0, 0, 5, 5]);
        tokio::time::advance(STATS_INTERVAL).await;
        assert_eq!(drive(&rule, &s, 10), [0, 0, 0, 10]);
        // Everything else tripped or excluded: a tripped one (fail open).
        trip(&s.endpoints()[3], Instant::now());
        let ctx = PickContext::new().with_excluded(&s.endpoints()[2..3]);
        let e = rule.choose(&s, &ctx).unwrap();
        assert!(ctx.is_eligible(e) && e.stats().is_tripped_at(Instant::now()));
    }

    proptest! {
        /// Never an excluded or removed endpoint; `None` only when nothing
        /// is eligible; with zone logic on and some eligible endpoint
        /// available, the pick's zone has an available eligible instance,
        /// and it is the preferred zone whenever that one has; never a
        /// tripped one unless every eligible one is. Also when the zone
        /// counts are older than these facts.
        #[test]
        fn zone_invariants(
            n in 0usize..30,
            zone_of in proptest::collection::vec(0usize..20, 30),
            mask in proptest::collection::vec(0u8..16, 30),
            preferred in proptest::option::of(0usize..4),
            refresh in 0u8..3,
            seed in any::<usize>(),
        ) {
            let names: Vec<String> = (0..n)
                .map(|i| if i % 2 == 0 { format!("zone-{}", zone_of[i]) } else { format!("ZONE-{}", zone_of[i]) })
                .collect();
            let s = zoned(&names.iter().map(String::as_str).collect::<Vec<_>>(), 3);
            let now = Instant::now();
            let pref = preferred.map(|p| format!("zone-{p}"));
            // Counted long before the picks (and never again): breakers
            // tripped then (bit 8) have recovered by `now`; the trips,
            // loads and exclusions below came later.
            let stale = ZoneAvoidance::new(RoundRobin::with_start(seed))
                .preferred_zone(pref.as_deref())
                .stats_interval(Duration::MAX);
            let old = now.checked_sub(Duration::from_secs(11)).unwrap_or(now);
            for (e, bits) in s.endpoints().iter().zip(&mask) {
                if bits & 8 != 0 { trip(e, old); }
            }
            stale.update(&s);
            let _ = stale.choose(&s, &PickContext::at(old));
            let mut guards = Vec::new();
            for (e, bits) in s.endpoints().iter().zip(&mask) {
                if bits & 1 != 0 { trip(e, now); }
                if bits & 2 != 0 { guards.push(e.stats().start_at(now)); }
            }
            let excluded: Vec<Endpoint> = s.endpoints().iter().zip(&mask)
                .filter(|(_, bits)| *bits & 4 != 0).map(|(e, _)| e.clone()).collect();
            let ctx = PickContext::at(now).with_excluded(&excluded);
            let zone = |e: &Endpoint| zone_name(e).to_ascii_lowercase();
            let usable = |z: &str| s.endpoints().iter()
                .any(|e| zone(e) == z && ctx.is_eligible(e) && e.stats().is_available_at(now));
            let mut distinct: Vec<String> = s.endpoints().iter().map(zone).collect();
            distinct.sort();
            distinct.dedup();
            let any_eligible = s.endpoints().iter().any(|e| ctx.is_eligible(e));
            let any_usable = distinct.iter().any(|z| usable(z));

            let plain = ZoneAvoidance::new(RoundRobin::with_start(seed)).preferred_zone(pref.as_deref());
            let filtered = ZoneAvoidance::new(
                AvailabilityFiltering::new(RoundRobin::with_start(seed))
                    .when_all_filtered(AllFilteredPolicy::FailOpen),
            ).preferred_zone(pref.as_deref());
            match refresh {
                0 => {}
                1 => { plain.update(&s); filtered.update(&s); }
                _ => { plain.update(&zoned(&["x"], 3)); filtered.update(&zoned(&["y", "z"], 3)); }
            }
            for rule in [&plain as &dyn Rule, &filtered as &dyn Rule, &stale as &dyn Rule] {
                for _ in 0..20 {
                    match rule.choose(&s, &ctx) {
                        Some(e) => {
                            prop_assert!(position(s.endpoints(), e).is_some());
                            prop_assert!(ctx.is_eligible(e));
                            if distinct.len() <= MAX_ZONES && any_usable {
                                prop_assert!(usable(&zone(e)));
                                if let Some(p) = pref.as_deref().filter(|p| usable(p)) {
                                    prop_assert_eq!(zone(e), p);
                                }
                            }
                            if e.stats().is_tripped_at(now) {
                                prop_assert!(!any_usable);
                            }
                        }
                        None => prop_assert!(!any_eligible),
                    }
                }
            }
            drop(guards);
        }
    }
}
