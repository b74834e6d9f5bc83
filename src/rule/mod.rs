//! Rules: how one instance is chosen per request (Ribbon's `IRule`), at two
//! levels.
//!
//! - A [`Rule`] is configuration plus the state that must outlive one
//!   instance list (a round-robin cursor, a recompute clock, a seeded
//!   generator). Whenever the list changes, the service layer calls
//!   [`Rule::build`] with the new [`Snapshot`], off the request path; the
//!   rule does everything that sorts, hashes or allocates there (weights,
//!   hash rings, zone tables) and returns a [`Picker`].
//! - A [`Picker`] is immutable for its list and answers
//!   [`Picker::pick`] on the request path: no lock, no allocation. State
//!   shared with later pickers (the cursor, the clock) is held through an
//!   `Arc` the rule handed it, so a refresh that brings the same list does
//!   not reset a rotation.
//! - The wrapping rules ([`AvailabilityFiltering`], [`ZoneAvoidance`],
//!   and the Spring Cloud LoadBalancer policies [`HintBased`],
//!   [`StickySession`], [`SameInstancePreference`], [`Subset`])
//!   wrap the inner rule's *picker*, and pass their filters to it as
//!   [`Tiers`] in the [`PickContext`]: the inner picker steps its own
//!   rotation once and takes from the first non-empty tier, so a pick that
//!   falls back (everything filtered, zone failover, panic mode, a retry's
//!   exclusions) spreads evenly over what remains.
//!
//! | rule | when to use it | counterpart |
//! |---|---|---|
//! | [`RoundRobin`] | equal instances, even spread; the default | Ribbon `RoundRobinRule`, SCLB `RoundRobinLoadBalancer` |
//! | [`Random`] | many clients, no coordination wanted | Ribbon `RandomRule`, SCLB `RandomLoadBalancer` |
//! | [`AvailabilityFiltering`] | wrap another rule to skip tripped or overloaded instances | Ribbon `AvailabilityFilteringRule` |
//! | [`BestAvailable`] | few clients, requests of similar cost; least in flight | Ribbon `BestAvailableRule` |
//! | [`ZoneAvoidance`] | instances in several zones; avoid failing or loaded zones, prefer your own | Ribbon `ZoneAvoidanceRule`, `ZoneAffinityServerListFilter` |
//! | [`PeakEwmaP2c`] | instances that differ in latency or health; latency-aware | Finagle `P2CPeakEwma`, tower `p2c` + `PeakEwma` |
//! | [`WeightedResponseTime`] | instances of unequal speed; share falls as mean latency rises | Ribbon `WeightedResponseTimeRule` |
//! | [`WeightedRoundRobin`] | static capacities from metadata `weight`; smooth, deterministic | NGINX smooth weighted round robin |
//! | [`ConsistentHash`] | affinity: the same key to the same instance (caches, sessions) | Maglev hashing (NSDI 2016), with a fill that moves only a removed instance's keys; rendezvous hashing inside a small tier (a hint group, a subset) |
//! | [`HintBased`] | wrap another rule: prefer instances whose metadata `hint` matches the request's `X-SC-LB-Hint` header or the configured hint | SCLB `HintBasedServiceInstanceListSupplier` |
//! | [`StickySession`] | wrap another rule: prefer the instance named by the `sc-lb-instance-id` cookie | SCLB `RequestBasedStickySessionServiceInstanceListSupplier` |
//! | [`SameInstancePreference`] | wrap another rule: keep going to the instance chosen last time | SCLB `SameInstancePreferenceServiceInstanceListSupplier` |
//! | [`Subset`] | wrap another rule: talk to a deterministic subset, the same one SCLB picks for the same instance id | SCLB `SubsetServiceInstanceListSupplier` (Google SRE book, ch. 20) |
//! | [`SlowStart`] | wrap another rule: ramp a new instance's share up over a window | Envoy `slow_start_config` |
//!
//! Build cost is O(n log n) or less in the number of instances `n` for
//! every rule (see each module); a pick is O(1) for round robin, random,
//! smooth weighted round robin and consistent hashing while nothing is
//! excluded, O(log n) for weighted response time, O(n) for best available
//! and for any pick that must count the eligible endpoints. Under the
//! balancer's health filter, round robin (and consistent hashing's keyless
//! picks) stay O(log u) for `u` unhealthy instances, from the unhealthy
//! positions kept per health epoch; random and weighted response time
//! draw until one is eligible (rejection sampling) before they count. A
//! wrapper's tier costs the wrapped rule O(1) while its candidate is in
//! the tier; a candidate outside it is handed on by counting the tier's
//! domain (the list when the tier has none) while it holds at most 512
//! positions, and by probing random positions beyond (about `n / m` tests
//! for `m` members: with a third of 10 000 instances tripped,
//! availability filtering over round robin averaged 59 µs per pick when
//! it counted).
//!
//! ```
//! use std::sync::Arc;
//! use tower_ribbon::instance::{Endpoint, Instance};
//! use tower_ribbon::rule::{PickContext, RoundRobin, Rule};
//! use tower_ribbon::snapshot::Snapshot;
//!
//! let endpoints = (1..=3)
//!     .map(|p| Endpoint::new(Instance::new("svc", "127.0.0.1", 8080 + p).unwrap()))
//!     .collect();
//! let snapshot = Arc::new(Snapshot::new("svc", endpoints, 1));
//! let rule = RoundRobin::with_start(0);
//! let picker = rule.build(&snapshot); // once per list, off the request path
//! let ports: Vec<u16> = (0..4)
//!     .map(|_| picker.pick(&PickContext::new()).unwrap().instance().port())
//!     .collect();
//! assert_eq!(ports, [8081, 8082, 8083, 8081]);
//! ```

use std::fmt;
use std::sync::Arc;

use crate::instance::Endpoint;
use crate::snapshot::Snapshot;

pub mod availability_filtering;
pub mod best_available;
pub mod consistent_hash;
mod context;
mod cursor;
pub mod hint;
pub mod peak_ewma_p2c;
mod prefer;
pub mod random;
pub mod round_robin;
pub mod same_instance;
pub mod slow_start;
pub mod sticky_session;
pub mod subset;
#[cfg(test)]
mod test_support;
mod walk;
pub mod weighted_response_time;
pub mod weighted_round_robin;
pub mod zone_avoidance;

pub use availability_filtering::{AllFilteredPolicy, AvailabilityFiltering};
pub use best_available::BestAvailable;
pub use consistent_hash::ConsistentHash;
pub use context::{Domain, PickContext, Tier, Tiers};
pub use hint::HintBased;
pub use peak_ewma_p2c::PeakEwmaP2c;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use same_instance::SameInstancePreference;
pub use slow_start::{SlowStart, SlowStartConfig};
pub use sticky_session::StickySession;
pub use subset::Subset;
pub use weighted_response_time::WeightedResponseTime;
pub use weighted_round_robin::WeightedRoundRobin;
pub use zone_avoidance::ZoneAvoidance;

/// Builds a [`Picker`] for each instance list.
///
/// Implementations keep in the rule only what must outlive one list, and
/// share it with the pickers they build through an `Arc`.
pub trait Rule: Send + Sync + fmt::Debug + 'static {
    /// Builds the picker of `snapshot`: called off the request path, once
    /// per published list. May sort, hash and allocate; must not panic on
    /// any list (empty included). Cost: O(n log n) or less. A panic here
    /// anyway, during a refresh, fails that refresh
    /// ([`DiscoveryError::Panicked`](crate::DiscoveryError::Panicked)) and
    /// keeps the last list and its picker; during a rebuild after an active
    /// check's verdict, it keeps the current picker.
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker>;

    /// A short name for logs and tables (`round_robin`, `random`, ...).
    fn name(&self) -> &'static str;
}

/// Chooses one endpoint of one list per request.
///
/// Implementations must return an endpoint of [`Picker::snapshot`] that
/// [`PickContext::is_eligible`] accepts, from the first non-empty tier of
/// the context's [`Tiers`], or `None` when no eligible endpoint is in any
/// tier; they take no lock, allocate nothing and never panic.
pub trait Picker: Send + Sync + fmt::Debug + 'static {
    /// Chooses an endpoint for one request.
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint>;

    /// The list this picker was built for.
    fn snapshot(&self) -> &Arc<Snapshot>;

    /// Whether picking again for `ctx` in the same state chooses the same
    /// endpoint (a choice by load, as least in flight, rather than a draw
    /// or a rotation). [`SlowStart`], which thins an instance's share by
    /// refusing some of its picks and picking again, then passes over the
    /// refused instance for the rest of the pick: re-asked, such a picker
    /// only offered it again until its credit let it through, so an
    /// instance in slow start that was the least loaded got every pick.
    /// Default `false`.
    fn repeats_choice(&self, ctx: &PickContext<'_>) -> bool {
        let _ = ctx;
        false
    }

    /// Whether the choice for `ctx` is the key's (a keyed
    /// [`ConsistentHash`] pick): an instance is offered only the keys it
    /// owns, about `1/n` of picks, so [`SlowStart`] accepts them at a rate
    /// that gives Envoy's share (see its docs). Default `false`.
    fn keyed_choice(&self, ctx: &PickContext<'_>) -> bool {
        let _ = ctx;
        false
    }
}

/// Implements [`Rule`] for a smart pointer to a rule by forwarding every
/// method, so `Box<dyn Rule>` and `Arc<dyn Rule>` can be wrapped by
/// [`AvailabilityFiltering`] or [`ZoneAvoidance`].
macro_rules! forward_rule {
    ($($pointer:ident),*) => {$(
        impl<R: Rule + ?Sized> Rule for $pointer<R> {
            fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
                (**self).build(snapshot)
            }

            fn name(&self) -> &'static str {
                (**self).name()
            }
        }
    )*};
}

forward_rule!(Box, Arc);

#[cfg(test)]
mod tests {
    use super::test_support::{port, snapshot};
    use super::*;

    #[test]
    fn boxed_and_shared_rules_can_be_wrapped() {
        let s = snapshot(3);
        let ctx = PickContext::new();
        let boxed =
            AvailabilityFiltering::new(Box::new(RoundRobin::with_start(0)) as Box<dyn Rule>);
        let picker = boxed.build(&s);
        let ports: Vec<u16> = (0..4).map(|_| port(picker.pick(&ctx))).collect();
        assert_eq!(ports, [1000, 1001, 1002, 1000]);
        assert_eq!(boxed.inner().name(), "round_robin");

        let shared: Arc<dyn Rule> = Arc::new(RoundRobin::with_start(1));
        let zoned = ZoneAvoidance::new(Arc::clone(&shared));
        let (zp, sp) = (zoned.build(&s), shared.build(&s));
        assert_eq!(port(zp.pick(&ctx)), 1001);
        // The wrapper and the other handle share one rotation.
        assert_eq!(port(sp.pick(&ctx)), 1002);
        assert_eq!(port(zp.pick(&ctx)), 1000);
        assert_eq!(zoned.inner().name(), "round_robin");
        assert!(Arc::ptr_eq(zp.snapshot(), &s));
    }
}
