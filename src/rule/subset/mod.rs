//! Deterministic subsetting (Spring Cloud LoadBalancer's
//! `SubsetServiceInstanceListSupplier`, after the Google SRE book's
//! "Load Balancing in the Datacenter", chapter 20) in front of any other
//! rule: each client talks to at most [`size`](Subset::size) instances,
//! and many clients with different instance ids spread evenly over the
//! whole list.
//!
//! The algorithm is SCLB's, step for step, so a Rust client and a Java
//! client given the same instance id and the same list in the same order
//! choose the same subset ([`subset_indices`]): with `n` instances and
//! subset size `k`, all instances when `n ≤ k`; otherwise `id =
//! hashCode(instanceId) & 0x7fffffff` (Java's `String.hashCode`), `count =
//! n / k`, `round = id / count`; the list is shuffled with `new
//! java.util.Random(round)` by `Collections.shuffle`, and the subset is the
//! slice `[(id % count)·k, +k)`. Clients of one round share one shuffle
//! and take disjoint slices, so over many clients every instance is in
//! about as many subsets. The list order is the source's order (Eureka's,
//! as SCLB's discovery client reads it); the same list in the same order
//! gives the same subset on every refresh. A list that changes size
//! reshuffles, as in SCLB.
//!
//! Difference from SCLB: when no instance of the subset is eligible (all
//! excluded by a retry, or unhealthy), the pick goes to the other
//! instances instead of failing (SCLB would have no instance).
//!
//! Cost: [`Rule::build`] hashes the id and shuffles the indices, O(n); a
//! pick costs what the wrapped picker costs with one preferred tier whose
//! [`Domain`](super::Domain) is the subset (a round-robin picker steps
//! over the subset only).

mod java;

use std::fmt;
use std::sync::Arc;

use super::prefer::pick_preferring;
use super::{PickContext, Picker, Rule};
use crate::instance::Endpoint;
use crate::snapshot::Snapshot;

/// Talks to a deterministic subset of the instances. See the
/// [module docs](self).
pub struct Subset<R> {
    inner: R,
    instance_id: Box<str>,
    size: usize,
}

impl<R: Rule> Subset<R> {
    /// SCLB's default subset size (`spring.cloud.loadbalancer.subset.size`).
    pub const DEFAULT_SIZE: usize = 100;

    /// Subsetting over `inner` for the client `instance_id` (SCLB's
    /// `subset.instance-id`; Spring's default is the application's instance
    /// id, `${spring.application.name}:${server.port}` and variants), with
    /// subsets of 100.
    pub fn new(inner: R, instance_id: impl Into<String>) -> Self {
        Self {
            inner,
            instance_id: instance_id.into().into_boxed_str(),
            size: Self::DEFAULT_SIZE,
        }
    }

    /// The subset size (SCLB's `subset.size`), at least 1. Default 100.
    pub fn size(mut self, size: usize) -> Self {
        self.size = size.max(1);
        self
    }

    /// The client's instance id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The wrapped rule.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

impl<R: Rule> fmt::Debug for Subset<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subset")
            .field("inner", &self.inner)
            .field("instance_id", &self.instance_id)
            .field("size", &self.size)
            .finish()
    }
}

/// The positions (indices into a list of `n`) of the subset SCLB's
/// `SubsetServiceInstanceListSupplier` returns for `instance_id` and
/// subset size `size`, in SCLB's order: `0..n` when `n ≤ size` (or `size`
/// is 0, or `n` exceeds Java's list length).
pub fn subset_indices(instance_id: &str, n: usize, size: usize) -> Vec<usize> {
    let (Ok(n32), Ok(size32)) = (i32::try_from(n), i32::try_from(size)) else {
        return (0..n).collect();
    };
    if n32 <= size32 || size32 == 0 {
        return (0..n).collect();
    }
    let id = java::string_hash(instance_id) & i32::MAX;
    let count = n32 / size32;
    let round = id / count;
    let mut list: Vec<usize> = (0..n).collect();
    java::shuffle(&mut list, &mut java::JavaRandom::new(i64::from(round)));
    let start = usize::try_from((id % count) * size32).unwrap_or(0);
    list.into_iter().skip(start).take(size).collect()
}

impl<R: Rule> Rule for Subset<R> {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        let inner = self.inner.build(snapshot);
        let n = snapshot.len();
        if n <= self.size {
            return inner;
        }
        let mut members: Vec<u32> = subset_indices(&self.instance_id, n, self.size)
            .into_iter()
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        members.sort_unstable();
        let mut in_subset = vec![false; n];
        for &i in &members {
            if let Some(m) = in_subset.get_mut(i as usize) {
                *m = true;
            }
        }
        Arc::new(SubsetPicker {
            inner,
            members: members.into_boxed_slice(),
            in_subset: in_subset.into_boxed_slice(),
        })
    }

    fn name(&self) -> &'static str {
        "subset"
    }
}

/// The picker of [`Subset`] for a list longer than the subset.
struct SubsetPicker {
    inner: Arc<dyn Picker>,
    /// The subset's indices, ascending.
    members: Box<[u32]>,
    in_subset: Box<[bool]>,
}

impl fmt::Debug for SubsetPicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubsetPicker")
            .field("inner", &self.inner)
            .field("subset", &self.members)
            .finish()
    }
}

impl Picker for SubsetPicker {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint> {
        let in_subset = &*self.in_subset;
        pick_preferring(
            &*self.inner,
            ctx,
            &|i, _| in_subset.get(i).copied().unwrap_or(false),
            Some(&self.members),
        )
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
mod tests;
