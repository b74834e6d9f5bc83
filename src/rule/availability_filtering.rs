//! Skips tripped and overloaded instances in front of any other rule
//! (Ribbon `AvailabilityFilteringRule` with its `AvailabilityPredicate`;
//! Envoy's outlier ejection plays the same part).
//!
//! An endpoint is *filtered* when its circuit breaker is tripped at the pick
//! time ([`EndpointStats::is_tripped_at`](crate::stats::EndpointStats::is_tripped_at):
//! open, or half-open with its probe taken) or when it already has
//! [`max_in_flight`](AvailabilityFiltering::max_in_flight) requests in flight.
//!
//! The inner rule cannot be told about extra exclusions without allocating,
//! so the pick works as Ribbon's does: ask the inner rule up to
//! `min(len, 10)` times and return its first unfiltered pick; then walk the
//! whole list once from a rotating offset for an eligible, unfiltered
//! endpoint. When every eligible endpoint is filtered,
//! [`AllFilteredPolicy`] decides: fail open with the inner rule's pick
//! (Ribbon's behaviour, the default), or return `None`.
//!
//! As in Ribbon, a round-robin inner rule hands a filtered endpoint's turn
//! to the next endpoint it yields, so that neighbour gets a double share
//! while the other is filtered.

use std::sync::atomic::AtomicUsize;

use super::support::first_passing;
use super::{PickContext, Rule};
use crate::discovery::Snapshot;
use crate::instance::Endpoint;
use crate::rule::RoundRobin;

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
    max_in_flight: Option<usize>,
    policy: AllFilteredPolicy,
    next: AtomicUsize,
}

impl<R: Rule> AvailabilityFiltering<R> {
    /// Filters the picks of `inner`, with no in-flight limit and
    /// [`AllFilteredPolicy::FailOpen`].
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            max_in_flight: None,
            policy: AllFilteredPolicy::FailOpen,
            next: AtomicUsize::new(0),
        }
    }

    /// Skips an endpoint that has `limit` or more requests in flight, so at
    /// most `limit` run on one endpoint at once (unless the policy fails
    /// open). Ribbon key `ActiveConnectionsLimit`. Default: no limit.
    pub fn max_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = Some(limit);
        self
    }

    /// What to return when every eligible endpoint is filtered. Default:
    /// [`AllFilteredPolicy::FailOpen`].
    pub fn when_all_filtered(mut self, policy: AllFilteredPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The inner rule.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    #[inline]
    fn passes(&self, e: &Endpoint, ctx: &PickContext<'_>) -> bool {
        let stats = e.stats();
        !stats.is_tripped_at(ctx.now()) && self.max_in_flight.is_none_or(|m| stats.in_flight() < m)
    }
}

impl Default for AvailabilityFiltering<RoundRobin> {
    /// Ribbon's default: availability filtering over round robin.
    fn default() -> Self {
        Self::new(RoundRobin::new())
    }
}

impl<R: Rule> Rule for AvailabilityFiltering<R> {
    fn choose<'s>(&self, snapshot: &'s Snapshot, ctx: &PickContext<'_>) -> Option<&'s Endpoint> {
        let passes = |e: &Endpoint| self.passes(e, ctx);
        match first_passing(&self.inner, snapshot, ctx, &self.next, |_| true, passes) {
            Ok(e) => Some(e),
            // The inner rule's first valid pick, else the walk's.
            Err(first) => match self.policy {
                AllFilteredPolicy::FailOpen => first,
                AllFilteredPolicy::Error => None,
            },
        }
    }

    fn update(&self, snapshot: &Snapshot) {
        self.inner.update(snapshot);
    }

    fn name(&self) -> &'static str {
        "availability_filtering"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::support::position;
    use crate::rule::test_support::{endpoints, port, trip};
    use proptest::prelude::*;
    use tokio::time::Instant;

    fn snapshot(n: u16, version: u64) -> Snapshot {
        Snapshot::new("s", endpoints(n), version)
    }

    #[tokio::test(start_paused = true)]
    async fn all_tripped_fails_open_or_errors() {
        let s = snapshot(3, 1);
        let now = Instant::now();
        s.endpoints().iter().for_each(|e| trip(e, now));
        let ctx = PickContext::at(now);
        let open = AvailabilityFiltering::new(RoundRobin::with_start(0));
        assert_eq!(port(open.choose(&s, &ctx)), 1000);
        let strict = AvailabilityFiltering::new(RoundRobin::with_start(0))
            .when_all_filtered(AllFilteredPolicy::Error);
        assert!(strict.choose(&s, &ctx).is_none());
        // After the blackout the half-open instances are available again.
        let later = PickContext::at(now + std::time::Duration::from_secs(10));
        assert!(strict.choose(&s, &later).is_some());
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
        let rule = AvailabilityFiltering::new(RoundRobin::with_start(0)).max_in_flight(2);
        let ctx = PickContext::at(now);
        let mut counts = [0u32; 4];
        for _ in 0..300 {
            counts[(port(rule.choose(&s, &ctx)) - 1000) as usize] += 1;
        }
        assert_eq!(counts[1] + counts[2], 0, "{counts:?}");
        assert_eq!(counts[0] + counts[3], 300);
        drop(busy);
        assert!((0..8).any(|_| port(rule.choose(&s, &ctx)) == 1002));
    }

    #[test]
    fn excluded_and_empty() {
        let rule = AvailabilityFiltering::<RoundRobin>::default();
        assert!(
            rule.choose(&Snapshot::empty("s"), &PickContext::new())
                .is_none()
        );
        let s = snapshot(2, 1);
        let all = s.endpoints().to_vec();
        assert!(
            rule.choose(&s, &PickContext::new().with_excluded(&all))
                .is_none()
        );
        let one = [s.endpoints()[0].clone()];
        let ctx = PickContext::new().with_excluded(&one);
        assert!((0..10).all(|_| port(rule.choose(&s, &ctx)) == 1001));
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
                rule.update(&a); // stale precomputed state must not matter
                for _ in 0..40 {
                    match rule.choose(&b, &ctx) {
                        Some(e) => {
                            prop_assert!(position(b.endpoints(), e).is_some());
                            prop_assert!(ctx.is_eligible(e));
                            if !rule.passes(e, &ctx) {
                                prop_assert_eq!(open, 0);
                                prop_assert_eq!(policy, AllFilteredPolicy::FailOpen);
                            }
                        }
                        None => prop_assert!(
                            eligible == 0 || (open == 0 && policy == AllFilteredPolicy::Error)
                        ),
                    }
                }
                prop_assert!(rule.choose(&a, &PickContext::at(now)).is_some() || n == 0);
            }
            drop(guards);
        }
    }
}
