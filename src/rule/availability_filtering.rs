//! Skips tripped and overloaded instances in front of any other rule
//! (Ribbon `AvailabilityFilteringRule` with its `AvailabilityPredicate`;
//! Envoy's outlier ejection plays the same part).
//!
//! An endpoint is *filtered* when its circuit breaker is tripped at the pick
//! time ([`EndpointStats::is_tripped_at`](crate::stats::EndpointStats::is_tripped_at):
//! open, or half-open with its probe taken) or when it already has
//! [`max_in_flight`](AvailabilityFiltering::max_in_flight) requests in flight.
//! In the balancer's panic mode ([`PickContext::with_panic_mode`]: fewer
//! than the panic threshold of the instances healthy, health ignored) a
//! tripped breaker filters nothing, so the picks spread over every
//! instance as they do without this wrapper; the in-flight limit still
//! applies. (Before, three tripped instances of four left every pick to
//! the fourth while round robin alone spread over all.) The limit is
//! checked at the pick: concurrent picks may each see room for one more
//! and pass together, as Ribbon's `ActiveConnectionsLimit` check does, so
//! under concurrency an instance can briefly hold more than the limit
//! (2 at a limit of 1 with 16 callers on 4 threads). For a hard cap per
//! instance, put a concurrency limit in the inner service.
//!
//! The rule wraps the inner rule's picker (built for the same list) and
//! asks it exactly once per pick, passing two [`Tiers`](super::Tiers):
//! the unfiltered endpoints, then (with [`AllFilteredPolicy::FailOpen`],
//! Ribbon's fallback to all servers) every eligible endpoint. The inner
//! picker steps its rotation once and takes from the first non-empty tier,
//! so with a round-robin inner rule and `m` unfiltered endpoints, `N · m`
//! picks give each of them `N` up to 2 (on average over more than 512
//! endpoints), and when every endpoint is filtered
//! the fail-open picks spread evenly over all of them (Ribbon asked the
//! inner rule up to 10 times per pick, which piled a filtered endpoint's
//! turns, or all of them, onto one neighbour). With
//! [`AllFilteredPolicy::Error`] the pick is `None` when every eligible
//! endpoint is filtered.
//!
//! Build: the inner rule's build. Pick: the inner picker's cost plus one
//! filter test per endpoint it considers (O(1) for a round-robin inner
//! rule while its candidate passes).

use std::sync::Arc;

use super::{PickContext, Picker, RoundRobin, Rule, Tier};
use crate::instance::Endpoint;
use crate::snapshot::Snapshot;

/// What [`AvailabilityFiltering`] returns when every eligible endpoint is
/// filtered out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AllFilteredPolicy {
    /// Return the inner rule's pick anyway, ignoring the filter (Ribbon's
    /// fallback to all servers). The default: a tripped instance may still
    /// answer, and no request is refused by the balancer alone.
    #[default]
    FailOpen,
    /// Return `None`: the request fails at once with "no instance".
    Error,
}

/// Wraps an inner rule and skips endpoints whose breaker is tripped or
/// whose in-flight count has reached a limit.
///
/// Defaults: no in-flight limit (Ribbon's `ActiveConnectionsLimit` is
/// `Integer.MAX_VALUE`), [`AllFilteredPolicy::FailOpen`].
#[derive(Debug)]
pub struct AvailabilityFiltering<R> {
    inner: R,
    filter: Filter,
}

/// The filter settings, copied into each picker.
#[derive(Debug, Clone, Copy)]
struct Filter {
    max_in_flight: Option<usize>,
    policy: AllFilteredPolicy,
}

impl Filter {
    #[inline]
    fn passes(&self, e: &Endpoint, ctx: &PickContext<'_>) -> bool {
        // Tripped instances pass in panic mode (health is ignored), the
        // in-flight limit still holds.
        ctx.is_available(e) && self.max_in_flight.is_none_or(|m| e.stats().in_flight() < m)
    }
}

impl<R: Rule> AvailabilityFiltering<R> {
    /// Filters the picks of `inner`, with no in-flight limit and
    /// [`AllFilteredPolicy::FailOpen`].
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            filter: Filter {
                max_in_flight: None,
                policy: AllFilteredPolicy::FailOpen,
            },
        }
    }

    /// Skips an endpoint that has `limit` or more requests in flight, so at
    /// most `limit` run on one endpoint at once (unless the policy fails
    /// open). Ribbon key `ActiveConnectionsLimit`. Default: no limit.
    pub fn max_in_flight(mut self, limit: usize) -> Self {
        self.filter.max_in_flight = Some(limit);
        self
    }

    /// What to return when every eligible endpoint is filtered. Default:
    /// [`AllFilteredPolicy::FailOpen`].
    pub fn when_all_filtered(mut self, policy: AllFilteredPolicy) -> Self {
        self.filter.policy = policy;
        self
    }

    /// The inner rule.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

impl Default for AvailabilityFiltering<RoundRobin> {
    /// Ribbon's default: availability filtering over round robin.
    fn default() -> Self {
        Self::new(RoundRobin::new())
    }
}

impl<R: Rule> Rule for AvailabilityFiltering<R> {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        Arc::new(AvailabilityPicker {
            inner: self.inner.build(snapshot),
            filter: self.filter,
        })
    }

    fn name(&self) -> &'static str {
        "availability_filtering"
    }
}

/// The picker of [`AvailabilityFiltering`]: the inner picker and the filter.
#[derive(Debug)]
struct AvailabilityPicker {
    inner: Arc<dyn Picker>,
    filter: Filter,
}

impl Picker for AvailabilityPicker {
    #[inline]
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint> {
        let passes = |_: usize, e: &Endpoint| self.filter.passes(e, ctx);
        let any = |_: usize, _: &Endpoint| true;
        let tiers: [Tier<'_>; 2] = [&passes, &any];
        let used = match self.filter.policy {
            AllFilteredPolicy::FailOpen => &tiers[..],
            AllFilteredPolicy::Error => &tiers[..1],
        };
        let mut link = None;
        self.inner.pick(&ctx.with_tiers(&mut link, used))
    }

    /// The wrapped picker's: [`SlowStart`](super::SlowStart) outside this
    /// wrapper passes over refused instances within the tiers it adds
    /// (see `PickContext::passing_over`), so `SlowStart(AvailabilityFiltering(BestAvailable))`
    /// thins a new instance's share as `SlowStart(BestAvailable)` does
    /// (2 of 20 held picks at factor 0.1, where 8 of 20, no slow start at
    /// all, before).
    fn repeats_choice(&self, ctx: &PickContext<'_>) -> bool {
        self.inner.repeats_choice(ctx)
    }

    /// The wrapped picker's: the filter confines no keyed pick to a part
    /// of the list, so an instance is still offered about `1/n` of keys.
    fn keyed_choice(&self, ctx: &PickContext<'_>) -> bool {
        self.inner.keyed_choice(ctx)
    }

    fn snapshot(&self) -> &Arc<Snapshot> {
        self.inner.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::test_support::{endpoints, index, port, trip};
    use proptest::prelude::*;
    use tokio::time::Instant;

    fn snapshot(n: u16, version: u64) -> Arc<Snapshot> {
        Arc::new(Snapshot::new("s", endpoints(n), version))
    }

    #[tokio::test(start_paused = true)]
    async fn all_tripped_fails_open_or_errors() {
        let s = snapshot(3, 1);
        let now = Instant::now();
        s.endpoints().iter().for_each(|e| trip(e, now));
        let ctx = PickContext::at(now);
        let open = AvailabilityFiltering::new(RoundRobin::with_start(0)).build(&s);
        assert_eq!(port(open.pick(&ctx)), 1000);
        let strict = AvailabilityFiltering::new(RoundRobin::with_start(0))
            .when_all_filtered(AllFilteredPolicy::Error)
            .build(&s);
        assert!(strict.pick(&ctx).is_none());
        // After the blackout the half-open instances are available again.
        let later = PickContext::at(now + std::time::Duration::from_secs(10));
        assert!(strict.pick(&later).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn all_filtered_fail_open_spreads_evenly() {
        // Issue 10: 4 instances, all tripped, 1 200 picks: 300 each (Ribbon
        // spreads so); before, all 1 200 went to one instance.
        for n in [4u16, 12] {
            let s = snapshot(n, 1);
            let now = Instant::now();
            s.endpoints().iter().for_each(|e| trip(e, now));
            let picker = AvailabilityFiltering::new(RoundRobin::with_start(0)).build(&s);
            let mut counts = vec![0u32; usize::from(n)];
            for _ in 0..1_200 {
                counts[index(picker.pick(&PickContext::at(now)).unwrap())] += 1;
            }
            let each = 1_200 / u32::from(n);
            assert!(counts.iter().all(|&c| c == each), "{counts:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn skips_tripped_and_full_endpoints() {
        let s = snapshot(4, 1);
        let now = Instant::now();
        trip(&s.endpoints()[1], now);
        let busy = [
            s.endpoints()[2].stats().start_at(now),
            s.endpoints()[2].stats().start_at(now),
        ];
        let rule = AvailabilityFiltering::new(RoundRobin::with_start(0))
            .max_in_flight(2)
            .build(&s);
        let ctx = PickContext::at(now);
        let mut counts = [0u32; 4];
        for _ in 0..300 {
            counts[(port(rule.pick(&ctx)) - 1000) as usize] += 1;
        }
        assert_eq!(counts[1] + counts[2], 0, "{counts:?}");
        assert_eq!(counts[0] + counts[3], 300);
        // And evenly: no neighbour inherits the filtered ones' turns.
        assert_eq!(counts[0], 150);
        drop(busy);
        assert!((0..8).any(|_| port(rule.pick(&ctx)) == 1002));
    }

    #[test]
    fn excluded_and_empty() {
        let rule = AvailabilityFiltering::<RoundRobin>::default();
        let empty = Arc::new(Snapshot::empty("s"));
        assert!(rule.build(&empty).pick(&PickContext::new()).is_none());
        let s = snapshot(2, 1);
        let picker = rule.build(&s);
        let all = s.endpoints().to_vec();
        assert!(
            picker
                .pick(&PickContext::new().with_excluded(&all))
                .is_none()
        );
        let one = [s.endpoints()[0].clone()];
        let ctx = PickContext::new().with_excluded(&one);
        assert!((0..10).all(|_| port(picker.pick(&ctx)) == 1001));
        assert_eq!(rule.name(), "availability_filtering");
    }

    proptest! {
        /// Never an excluded or removed endpoint; a filtered one only when
        /// every eligible endpoint is filtered and the policy fails open;
        /// `None` exactly when the policy allows nothing.
        #[test]
        fn never_excluded_filtered_or_removed(
            n in 0u16..24,
            m in 0u16..24,
            mask in proptest::collection::vec(0u8..8, 24),
            limit in 1usize..3,
            start in any::<usize>(),
        ) {
            let now = Instant::now();
            let (a, b) = (snapshot(n, 1), snapshot(m, 2));
            let mut guards = Vec::new();
            for (e, bits) in b.endpoints().iter().zip(&mask) {
                if bits & 1 != 0 { trip(e, now); }
                if bits & 2 != 0 { guards.extend((0..limit).map(|_| e.stats().start_at(now))); }
            }
            let excluded: Vec<Endpoint> = b.endpoints().iter().zip(&mask)
                .filter(|(_, bits)| *bits & 4 != 0).map(|(e, _)| e.clone()).collect();
            let ctx = PickContext::at(now).with_excluded(&excluded);
            let eligible = b.endpoints().len() - excluded.len();
            let open = b.endpoints().iter().zip(&mask).filter(|(_, m)| *m & 7 == 0).count();
            for policy in [AllFilteredPolicy::FailOpen, AllFilteredPolicy::Error] {
                let rule = AvailabilityFiltering::new(RoundRobin::with_start(start))
                    .max_in_flight(limit)
                    .when_all_filtered(policy);
                let old = rule.build(&a); // another list's picker must not matter
                let picker = rule.build(&b);
                for _ in 0..40 {
                    match picker.pick(&ctx) {
                        Some(e) => {
                            prop_assert!(b.endpoints().iter().any(|x| std::ptr::eq(x, e)));
                            prop_assert!(ctx.is_eligible(e));
                            if !rule.filter.passes(e, &ctx) {
                                prop_assert_eq!(open, 0);
                                prop_assert_eq!(policy, AllFilteredPolicy::FailOpen);
                            }
                        }
                        None => prop_assert!(
                            eligible == 0 || (open == 0 && policy == AllFilteredPolicy::Error)
                        ),
                    }
                }
                prop_assert!(old.pick(&PickContext::at(now)).is_some() || n == 0);
            }
            drop(guards);
        }
    }
}
