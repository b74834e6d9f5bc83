//! Rules: how one instance is chosen per request (Ribbon's `IRule`).
//!
//! A [`Rule`] reads a [`Snapshot`] and a [`PickContext`] and returns one of
//! the snapshot's endpoints, or `None` when no endpoint is eligible. Picks run
//! on the request path: they take no lock and allocate nothing. Work that
//! sorts or allocates (weights, rings) belongs in [`Rule::update`], which
//! the refresh calls with every new snapshot.
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
//! | [`ConsistentHash`] | affinity: the same key to the same instance (caches, sessions) | Maglev hashing (NSDI 2016), with a fill that moves only a removed instance's keys |
//!
//! ```
//! use tower_ribbon::discovery::Snapshot;
//! use tower_ribbon::instance::{Endpoint, Instance};
//! use tower_ribbon::rule::{PickContext, RoundRobin, Rule};
//!
//! let endpoints = (1..=3)
//!     .map(|p| Endpoint::new(Instance::new("svc", "127.0.0.1", 8080 + p).unwrap()))
//!     .collect();
//! let snapshot = Snapshot::new("svc", endpoints, 1);
//! let rule = RoundRobin::with_start(0);
//! let ports: Vec<u16> = (0..4)
//!     .map(|_| rule.choose(&snapshot, &PickContext::new()).unwrap().instance().port())
//!     .collect();
//! assert_eq!(ports, [8081, 8082, 8083, 8081]);
//! ```

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use crate::discovery::Snapshot;
use crate::instance::Endpoint;

mod availability_filtering;
mod best_available;
mod consistent_hash;
mod peak_ewma_p2c;
mod random;
mod round_robin;
mod support;
#[cfg(test)]
mod test_support;
mod weighted_response_time;
mod weighted_round_robin;
mod zone_avoidance;

pub use availability_filtering::{AllFilteredPolicy, AvailabilityFiltering};
pub use best_available::BestAvailable;
pub use consistent_hash::ConsistentHash;
pub use peak_ewma_p2c::PeakEwmaP2c;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted_response_time::WeightedResponseTime;
pub use weighted_round_robin::WeightedRoundRobin;
pub use zone_avoidance::ZoneAvoidance;

/// Chooses one endpoint per request.
///
/// Implementations must return an endpoint of `snapshot` that
/// [`PickContext::is_eligible`] accepts, or `None`; they must not panic on
/// an empty snapshot or one that changes between calls.
pub trait Rule: Send + Sync + fmt::Debug + 'static {
    /// Chooses an endpoint for one request.
    fn choose<'s>(&self, snapshot: &'s Snapshot, ctx: &PickContext<'_>) -> Option<&'s Endpoint>;

    /// Called by the refresh with each new snapshot, before it is published.
    /// Precompute here; a pick may still see the previous snapshot for a
    /// moment, so key precomputed state by [`Snapshot::version`]. Default:
    /// nothing.
    fn update(&self, snapshot: &Snapshot) {
        let _ = snapshot;
    }

    /// A short name for logs and tables (`round_robin`, `random`, ...).
    fn name(&self) -> &'static str;
}

/// Implements [`Rule`] for a smart pointer to a rule by forwarding every
/// method, so `Box<dyn Rule>` and `Arc<dyn Rule>` can be wrapped by
/// [`AvailabilityFiltering`] or [`ZoneAvoidance`].
macro_rules! forward_rule {
    ($($pointer:ident),*) => {$(
        impl<R: Rule + ?Sized> Rule for $pointer<R> {
            #[inline]
            fn choose<'s>(
                &self,
                snapshot: &'s Snapshot,
                ctx: &PickContext<'_>,
            ) -> Option<&'s Endpoint> {
                (**self).choose(snapshot, ctx)
            }

            fn update(&self, snapshot: &Snapshot) {
                (**self).update(snapshot);
            }

            fn name(&self) -> &'static str {
                (**self).name()
            }
        }
    )*};
}

forward_rule!(Box, Arc);

/// Per-request facts a rule may use.
///
/// `excluded` holds endpoints this request must not be sent to (those a
/// retry already tried); they are compared by identity.
/// `now` is read once per request, so time-aware rules (breaker state,
/// decayed latencies) agree within one pick and tests can pause time.
/// With the health filter on (the balancer turns it on while some instance
/// is unhealthy and the service is not in panic mode), unhealthy endpoints
/// (breaker open, ejected, failing active checks) are not eligible either.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    excluded: &'a [Endpoint],
    hash_key: Option<u64>,
    now: Instant,
    health_filter: bool,
}

impl Default for PickContext<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> PickContext<'a> {
    /// A context at the current time, with nothing excluded and no hash key.
    pub fn new() -> Self {
        Self::at(Instant::now())
    }

    /// A context at `now`, with nothing excluded and no hash key.
    pub fn at(now: Instant) -> Self {
        Self {
            excluded: &[],
            hash_key: None,
            now,
            health_filter: false,
        }
    }

    /// The time of the pick.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Excludes `endpoints` (by identity).
    pub fn with_excluded(mut self, endpoints: &'a [Endpoint]) -> Self {
        self.excluded = endpoints;
        self
    }

    /// Sets a hash key for rules that route by key.
    pub fn with_hash_key(mut self, key: u64) -> Self {
        self.hash_key = Some(key);
        self
    }

    /// Makes unhealthy endpoints ineligible (see
    /// [`EndpointStats::is_healthy_at`](crate::stats::EndpointStats::is_healthy_at)).
    pub fn with_health_filter(mut self) -> Self {
        self.health_filter = true;
        self
    }

    /// Whether unhealthy endpoints are ineligible.
    pub fn health_filter(&self) -> bool {
        self.health_filter
    }

    /// The excluded endpoints.
    pub fn excluded(&self) -> &'a [Endpoint] {
        self.excluded
    }

    /// The hash key, if any.
    pub fn hash_key(&self) -> Option<u64> {
        self.hash_key
    }

    /// Whether `endpoint` may be chosen for this request.
    #[inline]
    pub fn is_eligible(&self, endpoint: &Endpoint) -> bool {
        !self.excluded.iter().any(|e| e.same_identity(endpoint))
            && (!self.health_filter || endpoint.stats().is_healthy_at(self.now))
    }

    /// Whether every endpoint is eligible without checking (fast path).
    #[inline]
    pub(crate) fn all_eligible(&self) -> bool {
        self.excluded.is_empty() && !self.health_filter
    }
}

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
        let ports: Vec<u16> = (0..4).map(|_| port(boxed.choose(&s, &ctx))).collect();
        assert_eq!(ports, [1000, 1001, 1002, 1000]);
        assert_eq!(boxed.inner().name(), "round_robin");

        let shared: Arc<dyn Rule> = Arc::new(RoundRobin::with_start(1));
        let zoned = ZoneAvoidance::new(Arc::clone(&shared));
        zoned.update(&s);
        assert_eq!(port(zoned.choose(&s, &ctx)), 1001);
        // The wrapper and the other handle share one rotation.
        assert_eq!(port(shared.choose(&s, &ctx)), 1002);
        assert_eq!(port(zoned.choose(&s, &ctx)), 1000);
        assert_eq!(zoned.inner().name(), "round_robin");
    }
}
