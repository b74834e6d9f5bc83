//! Round robin over the eligible instances (Ribbon `RoundRobinRule`, Spring
//! Cloud LoadBalancer `RoundRobinLoadBalancer`).
//!
//! One atomic counter per rule; pick `k` goes to the `(start + k) mod m`-th
//! of the `m` eligible endpoints. Two things differ from Ribbon on purpose:
//! - the rotation is over the *eligible* endpoints, so an excluded
//!   endpoint's share is spread over all others instead of falling on its
//!   neighbour ("dogpiling");
//! - the counter starts at a random offset (as SCLB does), so many clients
//!   do not all begin on the first instance.
//!
//! The counter wraps on overflow and lives in the rule, not the snapshot, so
//! a refresh that brings the same list does not reset the rotation.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::support::nth_eligible;
use super::{PickContext, Rule};
use crate::discovery::Snapshot;
use crate::instance::Endpoint;

/// Round robin over eligible endpoints, starting at a random offset.
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A rule starting at a random offset.
    pub fn new() -> Self {
        Self::with_start(rand::random::<u64>() as usize)
    }

    /// A rule whose first pick is the `start`-th eligible endpoint (mod the
    /// count), for repeatable tests.
    pub fn with_start(start: usize) -> Self {
        Self {
            next: AtomicUsize::new(start),
        }
    }
}

impl Default for RoundRobin {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RoundRobin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoundRobin")
            .field("next", &self.next.load(Ordering::Relaxed))
            .finish()
    }
}

impl Rule for RoundRobin {
    #[inline]
    fn choose<'s>(&self, snapshot: &'s Snapshot, ctx: &PickContext<'_>) -> Option<&'s Endpoint> {
        if snapshot.is_empty() {
            return None;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        nth_eligible(snapshot.endpoints(), ctx, k)
    }

    fn name(&self) -> &'static str {
        "round_robin"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::test_support::{port, snapshot};

    #[test]
    fn rotates_and_wraps() {
        let s = snapshot(3);
        let rr = RoundRobin::with_start(usize::MAX - 1);
        let ctx = PickContext::new();
        let got: Vec<u16> = (0..4).map(|_| port(rr.choose(&s, &ctx))).collect();
        // usize::MAX - 1 ≡ 2 (mod 3 on 64-bit), usize::MAX ≡ 0, then wraps to 0.
        assert_eq!(got, [1002, 1000, 1000, 1001]);
    }

    #[test]
    fn skips_excluded_without_dogpiling() {
        let s = snapshot(4);
        let excluded = [s.endpoints()[1].clone()];
        let ctx = PickContext::new().with_excluded(&excluded);
        let rr = RoundRobin::with_start(0);
        let mut counts = [0u32; 4];
        for _ in 0..300 {
            counts[(port(rr.choose(&s, &ctx)) - 1000) as usize] += 1;
        }
        assert_eq!(counts, [100, 0, 100, 100]);
    }

    #[test]
    fn none_when_empty_or_all_excluded() {
        let rr = RoundRobin::new();
        assert!(
            rr.choose(&Snapshot::empty("s"), &PickContext::new())
                .is_none()
        );
        let s = snapshot(2);
        let all = s.endpoints().to_vec();
        assert!(
            rr.choose(&s, &PickContext::new().with_excluded(&all))
                .is_none()
        );
    }

    #[test]
    fn identical_refresh_keeps_position() {
        let rr = RoundRobin::with_start(0);
        let ctx = PickContext::new();
        let a = snapshot(3);
        assert_eq!(port(rr.choose(&a, &ctx)), 1000);
        let b = snapshot(3);
        assert_eq!(port(rr.choose(&b, &ctx)), 1001);
    }
}
