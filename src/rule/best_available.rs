//! Least requests in flight among the instances whose breaker is not
//! tripped (Ribbon `BestAvailableRule`; Envoy's and SCLB's "least
//! request" without the random sampling).
//!
//! One pass over the list finds the smallest in-flight count; of the
//! endpoints that share it, the one a first pick took least recently goes
//! (each picker keeps a pick stamp per position), so endpoints with equal
//! load take turns, each its own, whatever pattern of loads moves the tied
//! set (a rotating counter by position skipped one instance in every round
//! under some: 450, 0 and 450 of 900, or 600, 0 and 1 200). Of endpoints
//! never picked on this list, the first from a rotating start goes; the
//! start is random (as round robin's cursor at a random offset;
//! [`BestAvailable::with_start`] fixes it), so a fleet
//! of clients started together does not send every first request to the
//! first instance, as Ribbon's rule does. Retries do not stamp (a retry
//! away from a failing instance would send it the next first pick).
//! Endpoints tripped at the pick time
//! ([`EndpointStats::is_tripped_at`](crate::stats::EndpointStats::is_tripped_at))
//! are skipped, except in the balancer's panic mode
//! ([`PickContext::with_panic_mode`]: health ignored, breakers included);
//! when every eligible endpoint is tripped, the least loaded
//! of them is returned (Ribbon falls back to round robin over all).
//! Wrapped, the same choice runs inside the wrapper's first non-empty tier.
//!
//! Build: O(n) (a zeroed stamp per position); the rotating counter is
//! shared by every picker of the rule. Pick: one walk of the list, O(n),
//! and one compare-and-swap on the chosen stamp; inside a wrapper's tier with a domain (a sticky instance,
//! a hint group, a subset, one zone), a walk of that domain only.
//!
//! The rule sees only in-flight counts, not latency: an instance that fails
//! fast has few requests in flight and so draws *more* traffic. Use
//! [`PeakEwmaP2c`](super::PeakEwmaP2c) when instances differ in speed or
//! health.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::context::RETRY_LANE;
use super::{Domain, PickContext, Picker, Rule};
use crate::instance::Endpoint;
use crate::snapshot::Snapshot;

/// Least in-flight requests among non-tripped eligible endpoints; of
/// ties, the least recently picked, and on a fresh list the first from a
/// random start.
#[derive(Debug)]
pub struct BestAvailable {
    next: Arc<super::cursor::Cursor>,
}

impl BestAvailable {
    /// A rule whose tie-breaking rotation starts at a random tie, as round
    /// robin's cursor does, so clients started together do not all send
    /// their first requests (every instance idle, all tied) to the first
    /// instance of the list. (It started at the first tie: 64 clients
    /// each sent their first request to instance 0 of 8.)
    pub fn new() -> Self {
        Self::with_start(rand::random::<u64>() as usize)
    }

    /// A rule whose first pick among `m` tied endpoints is the
    /// `start`-th (mod `m`), for repeatable tests.
    pub fn with_start(start: usize) -> Self {
        Self {
            next: Arc::new(super::cursor::Cursor::new(start)),
        }
    }
}

impl Default for BestAvailable {
    fn default() -> Self {
        Self::new()
    }
}

impl Rule for BestAvailable {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        Arc::new(BestAvailablePicker {
            snapshot: Arc::clone(snapshot),
            next: Arc::clone(&self.next),
            stamps: (0..snapshot.len()).map(|_| AtomicU64::new(0)).collect(),
            seq: AtomicU64::new(1),
        })
    }

    fn name(&self) -> &'static str {
        "best_available"
    }
}

/// Looks for a least recent tie a first pick may claim, at most: a claim
/// lost to a concurrent pick looks again.
const CLAIMS: usize = 4;

/// The picker of [`BestAvailable`] for one list.
struct BestAvailablePicker {
    snapshot: Arc<Snapshot>,
    next: Arc<super::cursor::Cursor>,
    /// Per position, the sequence number of the last first pick that took
    /// it (0: none since this list).
    stamps: Box<[AtomicU64]>,
    /// The next sequence number (from 1).
    seq: AtomicU64,
}

impl fmt::Debug for BestAvailablePicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BestAvailablePicker")
            .field("instances", &self.snapshot.len())
            .finish_non_exhaustive()
    }
}

impl BestAvailablePicker {
    /// The least loaded member, non-tripped first; of equally loaded ones
    /// the one a first pick took least recently (its stamp, 0 for never),
    /// and of those the first in the walk's order turned by `start`
    /// positions (a fresh list's first round, in list order from the
    /// rotation's start). One pass.
    ///
    /// Least recently picked, so no pattern of loads starves a member that
    /// ties: a member tied at a pick goes before every tied member picked
    /// since it last went. Counted by position instead (the `start % m`-th
    /// tie), ties that moved with the picks skipped one instance in every
    /// round: 450, 0 and 450 requests over three instances when each
    /// request was still in flight at the next pick (helper 119), and with
    /// the turn shifted each round, periodic loads still lined up with it:
    /// 600, 0 and 1 200 for "stream, call, close, call" (helper 123).
    ///
    /// The chosen member's stamp is claimed with a compare-and-swap: of two
    /// concurrent picks that saw the same least recent member, the second
    /// looks again (up to [`CLAIMS`] looks), so concurrent first picks of
    /// an idle list go to different members. A retry's pick (with
    /// exclusions, or in the retry lane) stamps nothing and takes the
    /// `start % m`-th of the `m` least loaded in list order (its lane's
    /// turns): stamping, a retry away from a failing instance made that
    /// instance the least recent and sent it the next first pick (every
    /// first pick to the failing one of two); by stamps alone, a retry
    /// skipping an excluded instance sent the one after it twice its turns.
    ///
    /// Only the positions of `domain` (a wrapper's tier: the sticky
    /// instance, a hint group, a subset, a zone) are considered when it is
    /// given: a sticky pick tested all 10 000 endpoints of a list.
    #[inline]
    fn best_in<'e>(
        &self,
        endpoints: &'e [Endpoint],
        ctx: &PickContext<'_>,
        start: usize,
        member: impl Fn(usize, &Endpoint) -> bool,
        domain: Domain<'_>,
    ) -> Option<&'e Endpoint> {
        let len = domain.map_or(endpoints.len(), <[u32]>::len);
        if len == 0 {
            return None;
        }
        let shift = start % len;
        let positions = || {
            let all = domain.is_none().then_some(0..endpoints.len());
            let listed = domain.unwrap_or_default().iter().map(|&i| i as usize);
            all.into_iter().flatten().chain(listed)
        };
        let members = || {
            positions()
                .filter_map(|i| endpoints.get(i).map(|e| (i, e)))
                .filter(|(i, e)| member(*i, e))
        };
        // None tripped in panic mode (health ignored).
        let class = |e: &Endpoint| (!ctx.is_available(e), e.stats().in_flight());
        if !(ctx.excluded().is_empty() && ctx.lane() != RETRY_LANE) {
            // A retry's pick: the `start % m`-th of the `m` least loaded in
            // list order (its own lane's turns; it stamps nothing).
            let least = members().map(|(_, e)| class(e)).min()?;
            let ties = members().filter(|(_, e)| class(e) == least).count();
            return members()
                .filter(|(_, e)| class(e) == least)
                .nth(start % ties.max(1))
                .map(|(_, e)| e);
        }
        let stamp = |i: usize| self.stamps.get(i).map_or(0, |s| s.load(Ordering::Acquire));
        for attempt in 0..CLAIMS {
            // (tripped, load, stamp) of the best so far, with its position.
            let mut best: Option<((bool, usize, u64), usize, &'e Endpoint)> = None;
            // Members of the best (tripped, load) class seen.
            let mut ties = 0usize;
            for i in positions().skip(shift).chain(positions().take(shift)) {
                let Some(e) = endpoints.get(i) else { continue };
                if !member(i, e) {
                    continue;
                }
                let (tripped, load) = class(e);
                let key = (tripped, load, stamp(i));
                match best {
                    Some((k, _, _)) if (k.0, k.1) == (tripped, load) => ties += 1,
                    Some((k, _, _)) if (k.0, k.1) < (tripped, load) => continue,
                    _ => ties = 1,
                }
                if best.is_none_or(|(k, _, _)| key < k) {
                    best = Some((key, i, e));
                }
            }
            let ((_, _, seen), i, e) = best?;
            // Only a choice among ties stamps: a forced one (a sticky
            // tier of one, a sole least loaded member) would order the
            // ties of other picks by its own traffic (sticky picks on each
            // member of a hint group in list order made the group's first
            // member the older at every hinted pick: 200 and 0).
            let Some(slot) = self.stamps.get(i).filter(|_| ties > 1) else {
                return Some(e);
            };
            let now = self.seq.fetch_add(1, Ordering::Relaxed);
            if slot
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
                || attempt + 1 == CLAIMS
            {
                slot.fetch_max(now, Ordering::AcqRel);
                return Some(e);
            }
        }
        None
    }
}

impl Picker for BestAvailablePicker {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint> {
        let endpoints = self.snapshot.endpoints();
        if endpoints.is_empty() {
            return None;
        }
        let start = self.next.step(ctx, endpoints);
        if !ctx.has_tiers() {
            return self.best_in(endpoints, ctx, start, |_, e| ctx.is_eligible(e), None);
        }
        ctx.find_tier_in(&mut |member, domain| self.best_in(endpoints, ctx, start, member, domain))
    }

    /// The least loaded endpoint wins again while loads stay as they are.
    fn repeats_choice(&self, _: &PickContext<'_>) -> bool {
        true
    }

    fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::test_support::{index, port, snapshot, trip};
    use proptest::prelude::*;
    use tokio::time::Instant;

    /// Clients started together (each with its own rule, every instance
    /// idle, so all tied) do not all send their first request to one
    /// instance: the tie counter started at the first tie in every
    /// process, 64 of 64 first picks on instance 0 of 8.
    #[test]
    fn fresh_rules_start_their_ties_at_different_instances() {
        let s = snapshot(8);
        let mut counts = [0u32; 8];
        for _ in 0..64 {
            let rule = BestAvailable::new().build(&s);
            counts[index(rule.pick(&PickContext::new()).unwrap())] += 1;
        }
        // 8 expected per instance (binomial, sd 2.6); 25 or more has odds
        // under 1e-7.
        assert!(counts.iter().all(|&c| c <= 24), "{counts:?}");
        assert_eq!(counts.iter().sum::<u32>(), 64);
    }

    #[tokio::test(start_paused = true)]
    async fn least_in_flight_wins_and_ties_rotate() {
        let s = snapshot(3);
        let now = Instant::now();
        let ctx = PickContext::at(now);
        let rule = BestAvailable::new().build(&s);
        let mut counts = [0u32; 3];
        for _ in 0..300 {
            counts[(port(rule.pick(&ctx)) - 1000) as usize] += 1;
        }
        // All idle: every round in list order, exact over any window.
        assert_eq!(counts, [100, 100, 100]);
        let _a = s.endpoints()[0].stats().start_at(now);
        let _b = s.endpoints()[2].stats().start_at(now);
        assert!((0..10).all(|_| port(rule.pick(&ctx)) == 1001));
        // Held requests pile up on the least loaded one until loads level.
        let held: Vec<_> = (0..6)
            .map(|_| rule.pick(&ctx).unwrap().stats().start_at(now))
            .collect();
        let loads: Vec<usize> = s
            .endpoints()
            .iter()
            .map(|e| e.stats().in_flight())
            .collect();
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(
            max - min <= 1 && loads.iter().sum::<usize>() == 8,
            "{loads:?}"
        );
        drop(held);
    }

    /// Each request still in flight at the next `held` picks (a request
    /// every 9 ms, each taking 10 ms): the ties are all instances but the
    /// last ones picked. Counted in list order, those ties skipped the
    /// same instance in every round: 450, 0 and 450 of 900 over three
    /// instances (helper 119); now each takes its share, whatever the
    /// start.
    #[tokio::test(start_paused = true)]
    async fn ties_moving_with_the_picks_starve_no_instance() {
        let now = Instant::now();
        for (n, held) in [(3u16, 1), (5, 1), (5, 2), (8, 3), (7, 5)] {
            let s = snapshot(n);
            let n = usize::from(n);
            for start in [0, 1, 2, 7, usize::MAX] {
                let rule = BestAvailable::with_start(start).build(&s);
                let mut counts = vec![0u32; n];
                let mut open = std::collections::VecDeque::new();
                for _ in 0..60 * n {
                    let e = rule.pick(&PickContext::at(now)).unwrap();
                    counts[index(e)] += 1;
                    open.push_back(e.stats().start_at(now));
                    if open.len() > held {
                        open.pop_front();
                    }
                }
                // 60 each; a shifted round's ends give or take one.
                assert!(
                    counts.iter().all(|&c| (58..=62).contains(&c)),
                    "{n} instances, {held} held, start {start}: {counts:?}"
                );
            }
        }
    }

    /// Beside a run of tripped instances, a request in flight at each
    /// pick: by position turns the untripped three of eight took 394, 112
    /// and 394 of 900 (helper 120, stop 47); least recent first, 300 each.
    #[tokio::test(start_paused = true)]
    async fn ties_beside_a_run_of_tripped_instances_share_evenly() {
        let now = Instant::now();
        let s = snapshot(8);
        for e in &s.endpoints()[1..6] {
            trip(e, now);
        }
        for start in [0, 3, 5, usize::MAX] {
            let rule = BestAvailable::with_start(start).build(&s);
            let mut counts = [0u32; 8];
            let mut open = None;
            for _ in 0..900 {
                let e = rule.pick(&PickContext::at(now)).unwrap();
                counts[index(e)] += 1;
                open = Some(e.stats().start_at(now));
            }
            drop(open);
            let free = [counts[0], counts[6], counts[7]];
            assert!(
                free.iter().all(|&c| (298..=302).contains(&c)),
                "start {start}: {counts:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tripped_skipped_unless_all_tripped() {
        let s = snapshot(3);
        let now = Instant::now();
        trip(&s.endpoints()[0], now);
        let _busy = s.endpoints()[1].stats().start_at(now);
        let rule = BestAvailable::new().build(&s);
        let ctx = PickContext::at(now);
        assert!((0..10).all(|_| port(rule.pick(&ctx)) == 1002));
        trip(&s.endpoints()[1], now);
        trip(&s.endpoints()[2], now);
        // All tripped: least in flight among the eligible (0 or 2).
        let excluded = [s.endpoints()[2].clone()];
        let ctx = PickContext::at(now).with_excluded(&excluded);
        assert!((0..10).all(|_| port(rule.pick(&ctx)) == 1000));
        let empty = Arc::new(Snapshot::empty("s"));
        assert!(BestAvailable::new().build(&empty).pick(&ctx).is_none());
        let all = s.endpoints().to_vec();
        assert!(
            rule.pick(&PickContext::at(now).with_excluded(&all))
                .is_none()
        );
    }

    proptest! {
        /// The pick is an eligible member of the snapshot read, never
        /// tripped unless every eligible endpoint is, with the least load
        /// of its class; `None` only when nothing is eligible.
        #[test]
        fn least_loaded_eligible_member(
            n in 0u16..24,
            mask in proptest::collection::vec(0u8..32, 24),
            picks in 1usize..40,
        ) {
            let now = Instant::now();
            let s = snapshot(n);
            let mut guards = Vec::new();
            for (e, bits) in s.endpoints().iter().zip(&mask) {
                if bits & 1 != 0 { trip(e, now); }
                guards.extend((0..(bits >> 3)).map(|_| e.stats().start_at(now)));
            }
            let excluded: Vec<Endpoint> = s.endpoints().iter().zip(&mask)
                .filter(|(_, bits)| *bits & 4 != 0).map(|(e, _)| e.clone()).collect();
            let ctx = PickContext::at(now).with_excluded(&excluded);
            let eligible: Vec<&Endpoint> =
                s.endpoints().iter().filter(|e| ctx.is_eligible(e)).collect();
            let open: Vec<&&Endpoint> =
                eligible.iter().filter(|e| !e.stats().is_tripped_at(now)).collect();
            let shared = BestAvailable::new();
            let rule = shared.build(&s);
            for _ in 0..picks {
                match rule.pick(&ctx) {
                    Some(e) => {
                        prop_assert!(s.endpoints().iter().any(|x| std::ptr::eq(x, e)));
                        prop_assert!(ctx.is_eligible(e));
                        let class: Vec<usize> = if open.is_empty() {
                            eligible.iter().map(|e| e.stats().in_flight()).collect()
                        } else {
                            prop_assert!(!e.stats().is_tripped_at(now));
                            open.iter().map(|e| e.stats().in_flight()).collect()
                        };
                        prop_assert_eq!(Some(e.stats().in_flight()), class.into_iter().min());
                    }
                    None => prop_assert!(eligible.is_empty()),
                }
                // A changed list: the rule holds no per-list state.
                prop_assert!(shared.build(&snapshot(n / 2)).pick(&PickContext::at(now)).is_some() || n < 2);
            }
            drop(guards);
        }
    }
}
