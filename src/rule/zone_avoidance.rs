//! Zone avoidance and zone preference in front of any other rule (Ribbon
//! `ZoneAvoidanceRule` with its `ZoneAvoidancePredicate`, and
//! `ZoneAffinityServerListFilter`).
//!
//! An endpoint's zone is [`Instance::zone`](crate::instance::Instance::zone),
//! or `default` when it has none, compared ASCII-case-insensitively. Each
//! pick counts, per zone, the instances whose breaker is not tripped
//! (*available*) and the requests in flight, and classifies zones:
//! - *blacked out*: no available instance (Ribbon's
//!   `triggeringBlackoutPercentage`, 0.99999, i.e. all tripped);
//! - *overloaded*: in flight per available instance at or above
//!   [`load_threshold`](ZoneAvoidance::load_threshold) (Ribbon's
//!   `triggeringLoadPerServerThreshold`, 0.2);
//! - *good*: neither.
//!
//! The allowed zones are, first match wins: the
//! [preferred zone](ZoneAvoidance::preferred_zone) while it has an
//! available eligible instance; else the good zones; else every zone that is
//! not blacked out; else all zones. Only zones with an available instance
//! that this request may use count. Inside the allowed zones the wrapped
//! rule chooses: it is asked up to `min(len, 10)` times and its first pick
//! that is in an allowed zone and not tripped is returned; then one walk
//! from a rotating offset takes the first such endpoint. A tripped endpoint
//! of an allowed zone is returned only when no available one is left (fail
//! open), so like Ribbon's `ZoneAvoidanceRule` (zone predicate and
//! availability predicate together) tripped instances are skipped inside
//! good zones too.
//!
//! Differences from Ribbon: Ribbon drops only the single worst zone per
//! pick (and one at random among equals); here every overloaded zone is
//! avoided while a good one remains. Ribbon's zone affinity has its own
//! thresholds (80 % tripped, 0.6 load); here the preferred zone is used
//! whenever it has an available eligible instance. For an in-flight limit
//! per instance, wrap [`AvailabilityFiltering`](super::AvailabilityFiltering).
//!
//! The zone of each endpoint is computed in [`Rule::update`] and kept with
//! the snapshot's version, length and address. A pick on a list the table
//! does not describe finds zones by comparing names instead, still without
//! allocating. Per-pick counts live in fixed arrays on the stack: with more
//! than 16 zones the rule applies no zone logic and just delegates.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use arc_swap::ArcSwap;

use super::support::first_passing;
use super::{PickContext, RoundRobin, Rule};
use crate::discovery::Snapshot;
use crate::instance::Endpoint;

/// Most zones the per-pick counts hold; beyond that, no zone logic.
const MAX_ZONES: usize = 16;
/// The zone of an instance that has none.
const DEFAULT_ZONE: &str = "default";

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
    fn describes(&self, snapshot: &Snapshot) -> bool {
        self.version == snapshot.version()
            && self.len == snapshot.len()
            && self.addr == snapshot.endpoints().as_ptr() as usize
    }
}

#[derive(Clone, Copy, Default)]
struct ZoneLoad {
    available: usize,
    usable: usize,
    in_flight: usize,
}

/// Avoids blacked-out and overloaded zones and prefers one zone; the
/// wrapped rule chooses inside the allowed zones.
///
/// Defaults: no preferred zone, load threshold 0.2 requests in flight per
/// available instance.
pub struct ZoneAvoidance<R> {
    inner: R,
    preferred: Option<Box<str>>,
    load_threshold: f64,
    table: ArcSwap<ZoneTable>,
    next: AtomicUsize,
}

impl<R: Rule> ZoneAvoidance<R> {
    /// Zone avoidance over `inner`, with no preferred zone and a load
    /// threshold of 0.2.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            preferred: None,
            load_threshold: 0.2,
            table: ArcSwap::from_pointee(ZoneTable {
                version: 0,
                len: 0,
                addr: 0,
                ids: Box::default(),
                names: Box::default(),
                preferred: None,
            }),
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

    /// The wrapped rule.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Asks the wrapped rule for an available pick whose index `allowed`
    /// accepts, then walks from a rotating offset; a tripped endpoint of an
    /// allowed zone only when no available one is left.
    fn select<'s>(
        &self,
        snapshot: &'s Snapshot,
        ctx: &PickContext<'_>,
        allowed: impl Fn(usize) -> bool,
    ) -> Option<&'s Endpoint> {
        let available = |e: &Endpoint| e.stats().is_available_at(ctx.now());
        first_passing(&self.inner, snapshot, ctx, &self.next, allowed, available)
            .map_or_else(|tripped| tripped, Some)
    }
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
        let table = self.table.load();
        f.debug_struct("ZoneAvoidance")
            .field("inner", &self.inner)
            .field("preferred_zone", &self.preferred)
            .field("load_threshold", &self.load_threshold)
            .field("zones", &table.names)
            .finish()
    }
}

impl<R: Rule> Rule for ZoneAvoidance<R> {
    fn choose<'s>(&self, snapshot: &'s Snapshot, ctx: &PickContext<'_>) -> Option<&'s Endpoint> {
        let endpoints = snapshot.endpoints();
        if endpoints.is_empty() {
            return None;
        }
        let now = ctx.now();
        let table = self.table.load();
        let cached = table.describes(snapshot);
        if cached && table.names.len() > MAX_ZONES {
            return self.select(snapshot, ctx, |_| true);
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
                    None => return self.select(snapshot, ctx, |_| true),
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
                if (l.in_flight as f64) < self.load_threshold * l.available as f64 {
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
            _ => return self.select(snapshot, ctx, |_| true),
        };
        self.select(snapshot, ctx, |i| {
            let z = if cached {
                usize::from(table.ids[i])
            } else {
                find_zone(endpoints, &reps[..zones], zone_name(&endpoints[i])).unwrap_or(0)
            };
            allowed & (1 << z) != 0
        })
    }

    fn update(&self, snapshot: &Snapshot) {
        self.inner.update(snapshot);
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
        let preferred = self
            .preferred
            .as_deref()
            .and_then(|p| by_name.get(&p.to_ascii_lowercase()).copied());
        self.table.store(Arc::new(ZoneTable {
            version: snapshot.version(),
            len: snapshot.len(),
            addr: snapshot.endpoints().as_ptr() as usize,
            ids,
            names: names.into(),
            preferred,
        }));
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
        // zone-b overloaded (1 in flight on 1 instance): the others take it.
        let _b = s.endpoints()[2].stats().start();
        assert_eq!(drive(&rule, &s, 10), [0, 0, 0, 5, 5]);
        // Every zone overloaded or blacked out: all but the blacked-out one.
        let _c = s.endpoints()[3].stats().start();
        let _d = s.endpoints()[4].stats().start();
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

    proptest! {
        /// Never an excluded or removed endpoint; `None` only when nothing
        /// is eligible; with zone logic on and some eligible endpoint
        /// available, the pick's zone has an available eligible instance,
        /// and it is the preferred zone whenever that one has; never a
        /// tripped one unless every eligible one is.
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
            let pref = preferred.map(|p| format!("zone-{p}"));
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
            for rule in [&plain as &dyn Rule, &filtered as &dyn Rule] {
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
