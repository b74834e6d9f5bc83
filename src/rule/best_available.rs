//! Least requests in flight among the instances whose breaker is not
//! tripped (Ribbon `BestAvailableRule`; Envoy's and SCLB's "least
//! request" without the random sampling).
//!
//! One pass over the list finds the smallest in-flight count. Of the
//! endpoints that share it: when every endpoint ties (an idle list),
//! each takes one turn per round, in an order drawn at random each round,
//! so over `k · m` idle picks each of `m` takes exactly `k` and no pattern
//! of picks lines up with the order; when some endpoints carry more load,
//! a tie drawn at random. Draws come from the rule's generator, seeded at
//! random ([`BestAvailable::with_start`] fixes it), so a fleet of clients
//! started together does not send every first request to the first
//! instance, as Ribbon's rule does. (Every deterministic order tried lined
//! up with some loop of streams and calls and starved an instance, or
//! pinned every stream to one: 600, 0 and 1 200 of 1 800 by position,
//! 600, 0, 0 streams least recent first.) A pick whose ties are more or
//! fewer than those that began the round (a wrapper's filter, a domain,
//! a stream's holder left out) does not finish that round, whose
//! left-out members would be the only ones owed a turn: it begins a new
//! one. A retry takes its lane's turn by position.
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
//! then one or two more walks to find the drawn tie and a compare-and-swap
//! on its turn; inside a wrapper's tier with a domain (a sticky instance,
//! a hint group, a subset, one zone), a walk of that domain only.
//!
//! The rule sees only in-flight counts, not latency: an instance that fails
//! fast has few requests in flight and so draws *more* traffic. Use
//! [`PeakEwmaP2c`](super::PeakEwmaP2c) when instances differ in speed or
//! health.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{Domain, PickContext, Picker, Rule};
use crate::instance::Endpoint;
use crate::rng::AtomicRng;
use crate::snapshot::Snapshot;

/// Least in-flight requests among non-tripped eligible endpoints; ties
/// take turns in rounds of random order while all tie, else one is drawn
/// at random.
#[derive(Debug)]
pub struct BestAvailable {
    next: Arc<super::cursor::Cursor>,
    /// Draws ties for every picker of the rule (so a rebuilt picker does
    /// not repeat the last one's draws).
    rng: Arc<AtomicRng>,
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

    /// A rule whose tie draws are seeded with `start` (and whose retries
    /// start their turns at the `start`-th tie), for repeatable tests.
    pub fn with_start(start: usize) -> Self {
        Self {
            next: Arc::new(super::cursor::Cursor::new(start)),
            rng: Arc::new(AtomicRng::with_seed(start as u64)),
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
            offset: self.next.anchor(snapshot.endpoints(), snapshot.len()),
            stamps: (0..snapshot.len()).map(|_| AtomicU64::new(0)).collect(),
            round: AtomicU64::new(1),
            rng: Arc::clone(&self.rng),
            round_ties: AtomicUsize::new(0),
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
    /// Added to every retry's step (see `Cursor::anchor`).
    offset: usize,
    /// Per position, the round in which an idle pick last took it (0:
    /// none since this list).
    stamps: Box<[AtomicU64]>,
    /// The current round of idle picks (from 1): each tied member once per
    /// round, in a random order.
    round: AtomicU64,
    /// The rule's tie draws.
    rng: Arc<AtomicRng>,
    /// How many members tied in the pick that began the current round
    /// (0: none yet).
    round_ties: AtomicUsize,
}

impl fmt::Debug for BestAvailablePicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BestAvailablePicker")
            .field("instances", &self.snapshot.len())
            .finish_non_exhaustive()
    }
}

impl BestAvailablePicker {
    /// Begins the round after `round` (every tied member open in it),
    /// unless a concurrent pick did, noting that `ties` members began it.
    /// Returns the new round.
    fn begin_round(&self, round: u64, ties: usize) -> u64 {
        if self
            .round
            .compare_exchange(round, round + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.round_ties.store(ties, Ordering::Release);
        }
        round + 1
    }

    /// The least loaded member, non-tripped first. Of `m > 1` equally
    /// loaded ones:
    /// - every member of its class tied (an idle list, or all equally
    ///   busy): in rounds, each tied member once per round, the order
    ///   within a round drawn at random (each picker keeps the round a
    ///   position was last taken in); so over `k · m` such picks each takes
    ///   exactly `k`, and no pattern of picks lines up with the order;
    /// - some members of its class carry more load: one of the ties at
    ///   random;
    /// - a retry's pick: the `start % m`-th in list order (its lane's
    ///   turns), taking no turn of a round.
    ///
    /// Draws come from the rule's seeded generator, shared by its pickers.
    /// Every deterministic order lined up with some pattern of loads: by
    /// position (the `start % m`-th tie), "stream, call, close, call" over
    /// three instances gave 600, 0 and 1 200 of 1 800 (helper 123); least
    /// recent first, "open a stream, make three calls, close it" pinned
    /// every stream to one instance (helper 126), and so did a loop whose
    /// idle picks per cycle were a multiple of the list's length, or the
    /// same loop with the holder filtered by an in-flight limit (helper
    /// 128). A position's turn is claimed by compare-and-swap, so
    /// concurrent picks take different members (a loser looks again, up
    /// to [`CLAIMS`] times). A sole least loaded member (a sticky tier of
    /// one) is no choice and takes no turn.
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
        let turn = |i: usize| {
            self.stamps
                .get(i)
                .map_or(u64::MAX, |s| s.load(Ordering::Acquire))
        };
        let retry = ctx.is_retry();
        for attempt in 0..CLAIMS {
            let round = self.round.load(Ordering::Acquire);
            // One walk: the least class and its first member, how many tie
            // in it and how many of those have not taken this round's turn,
            // and how many members each tripped class has.
            let mut best: Option<((bool, usize), &'e Endpoint)> = None;
            let (mut ties, mut open, mut in_class) = (0usize, 0usize, [0usize; 2]);
            for (i, e) in members() {
                let c = class(e);
                in_class[usize::from(c.0)] += 1;
                match best {
                    Some((b, _)) if b < c => continue,
                    Some((b, _)) if b == c => ties += 1,
                    _ => {
                        best = Some((c, e));
                        (ties, open) = (1, 0);
                    }
                }
                if !retry && turn(i) < round {
                    open += 1;
                }
            }
            let (least, first) = best?;
            let tied = || members().filter(move |(_, e)| class(e) == least);
            // Loads move under concurrent requests: if the chosen tie is
            // gone, the first one seen is as good.
            if ties == 1 {
                return Some(first);
            }
            if retry {
                return tied().nth(start % ties).map(|(_, e)| e).or(Some(first));
            }
            if ties < in_class[usize::from(least.0)] {
                match tied().nth(self.rng.below(ties)) {
                    Some((_, e)) => return Some(e),
                    // The ties changed since the walk: look again.
                    None if attempt + 1 < CLAIMS => continue,
                    None => return Some(first),
                }
            }
            // A pick whose ties are more or fewer than those that began
            // the round does not finish it: the members the other tier
            // left out would be the only ones owed a turn. Calls whose
            // tier filtered out a stream's holder began the rounds, and
            // every stream went back to it (0, 0, 600 of 600 through an
            // in-flight limit; also with a fourth instance tripped, or
            // inside a hint group or subset: helper 133); plain picks
            // after hinted ones in a round a plain pick began leaned 2 to
            // 1 away from the group.
            let same = self.round_ties.load(Ordering::Acquire) == ties;
            let round = if open == 0 || !same {
                open = ties;
                self.begin_round(round, ties)
            } else {
                round
            };
            let Some((i, e)) = tied()
                .filter(|(i, _)| turn(*i) < round)
                .nth(self.rng.below(open))
            else {
                continue;
            };
            let Some(slot) = self.stamps.get(i) else {
                return Some(e);
            };
            // The member's turn in this round, unless a concurrent pick took
            // it first (then look again; the last look takes it anyway).
            if slot.fetch_max(round, Ordering::AcqRel) < round || attempt + 1 == CLAIMS {
                return Some(e);
            }
        }
        members()
            .find(|(_, e)| ctx.is_available(e))
            .or_else(|| members().next())
            .map(|(_, e)| e)
    }
}

impl Picker for BestAvailablePicker {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint> {
        let endpoints = self.snapshot.endpoints();
        if endpoints.is_empty() {
            return None;
        }
        let start = self.next.step(ctx, endpoints).wrapping_add(self.offset);
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
    /// instances (helper 119); now each takes about its share, whatever
    /// the start.
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
                // 60 each, drawn at random among the ties (seeded): within
                // a quarter (before: 0 for one instance of three).
                assert!(
                    counts.iter().all(|&c| (45..=75).contains(&c)),
                    "{n} instances, {held} held, start {start}: {counts:?}"
                );
            }
        }
    }

    /// Beside a run of tripped instances, a request in flight at each
    /// pick: by position turns the untripped three of eight took 394, 112
    /// and 394 of 900 (helper 120, stop 47); drawn, about 300 each.
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
            // Drawn at random among the ties (seeded): within a tenth.
            assert!(
                free.iter().all(|&c| (270..=330).contains(&c)),
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
