//! Same-instance preference (Spring Cloud LoadBalancer's
//! `SameInstancePreferenceServiceInstanceListSupplier`) in front of any
//! other rule.
//!
//! The rule remembers the instance it returned last (one memory per rule,
//! so per service and shared by every caller, as SCLB's supplier is) and
//! prefers it while it is in the list and eligible; otherwise the wrapped
//! rule picks, and its pick becomes the new memory. The memory is the
//! endpoint's identity (its shared [`EndpointStats`]), so it survives
//! refreshes that keep the instance and never matches a removed instance
//! that comes back as new.
//!
//! Cost: a pick loads the memory (one lock-free `ArcSwap` load) and finds
//! its index from a per-picker cache (O(1); O(n) once per list); it stores
//! a new memory (a reference-count increment, no allocation) only when the
//! pick changes instance.
//!
//! [`EndpointStats`]: crate::stats::EndpointStats

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwapOption;

use super::prefer::{index_of, pick_preferring};
use super::{PickContext, Picker, Rule};
use crate::instance::Endpoint;
use crate::snapshot::Snapshot;
use crate::stats::EndpointStats;

/// Prefers the instance chosen last time. See the [module docs](self).
pub struct SameInstancePreference<R> {
    inner: R,
    last: Arc<ArcSwapOption<EndpointStats>>,
}

impl<R: Rule> SameInstancePreference<R> {
    /// Same-instance preference over `inner`, with no memory yet.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            last: Arc::new(ArcSwapOption::empty()),
        }
    }

    /// The wrapped rule.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

impl<R: Rule> fmt::Debug for SameInstancePreference<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SameInstancePreference")
            .field("inner", &self.inner)
            .field("remembers", &self.last.load().is_some())
            .finish()
    }
}

impl<R: Rule> Rule for SameInstancePreference<R> {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        Arc::new(SamePicker {
            inner: self.inner.build(snapshot),
            last: Arc::clone(&self.last),
            cached: AtomicUsize::new(usize::MAX),
        })
    }

    fn name(&self) -> &'static str {
        "same_instance_preference"
    }
}

/// The picker of [`SameInstancePreference`].
struct SamePicker {
    inner: Arc<dyn Picker>,
    last: Arc<ArcSwapOption<EndpointStats>>,
    /// Index of the remembered endpoint in this list, as last found.
    cached: AtomicUsize,
}

impl fmt::Debug for SamePicker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.cached.load(Ordering::Relaxed);
        f.debug_struct("SamePicker")
            .field("inner", &self.inner)
            .field("cached", &(cached != usize::MAX).then_some(cached))
            .finish()
    }
}

impl SamePicker {
    /// The index of the endpoint whose stats are `stats` in this list.
    fn index_of(&self, stats: &Arc<EndpointStats>) -> Option<usize> {
        let endpoints = self.inner.snapshot().endpoints();
        let cached = self.cached.load(Ordering::Relaxed);
        if endpoints
            .get(cached)
            .is_some_and(|e| Arc::ptr_eq(e.stats_handle(), stats))
        {
            return Some(cached);
        }
        let i = endpoints
            .iter()
            .position(|e| Arc::ptr_eq(e.stats_handle(), stats))?;
        self.cached.store(i, Ordering::Relaxed);
        Some(i)
    }
}

impl Picker for SamePicker {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<&Endpoint> {
        let last = self.last.load();
        let preferred = last.as_ref().and_then(|l| self.index_of(l));
        let e = match preferred.and_then(|i| Some((i, u32::try_from(i).ok()?))) {
            Some((i, i32)) => {
                let domain = [i32];
                pick_preferring(&*self.inner, ctx, &|j, _| j == i, Some(&domain))
            }
            None => self.inner.pick(ctx),
        }?;
        if !last
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(l, e.stats_handle()))
        {
            self.last.store(Some(Arc::clone(e.stats_handle())));
            // The new memory's index is known from its address: the next
            // pick finds it in O(1) instead of walking the list.
            if let Some(i) = index_of(self.inner.snapshot().endpoints(), e) {
                self.cached.store(i, Ordering::Relaxed);
            }
        }
        Some(e)
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
mod tests {
    use super::super::RoundRobin;
    use super::super::test_support::{endpoints, index};
    use super::*;

    #[test]
    fn sticks_until_the_instance_leaves_or_is_excluded() {
        let list = endpoints(3);
        let s = Arc::new(Snapshot::new("s", list.clone(), 1));
        let rule = SameInstancePreference::new(RoundRobin::with_start(1));
        let p = rule.build(&s);
        let ctx = PickContext::new();
        for _ in 0..4 {
            assert_eq!(index(p.pick(&ctx).unwrap()), 1);
        }
        // Excluded: another one, which becomes the memory.
        let excluded = [list[1].clone()];
        let other = index(p.pick(&ctx.with_excluded(&excluded)).unwrap());
        assert_ne!(other, 1);
        assert_eq!(index(p.pick(&ctx).unwrap()), other);
        // A refresh that keeps it (other order): still preferred.
        let reordered: Vec<Endpoint> = list.iter().rev().cloned().collect();
        let p2 = rule.build(&Arc::new(Snapshot::new("s", reordered, 2)));
        assert_eq!(index(p2.pick(&ctx).unwrap()), other);
        // A refresh without it: the rotation picks and is remembered.
        let rest: Vec<Endpoint> = list.iter().filter(|e| index(e) != other).cloned().collect();
        let p3 = rule.build(&Arc::new(Snapshot::new("s", rest, 3)));
        let next = index(p3.pick(&ctx).unwrap());
        assert_ne!(next, other);
        assert_eq!(index(p3.pick(&ctx).unwrap()), next);
        assert!(format!("{rule:?}").contains("remembers: true"));
    }

    #[test]
    fn racing_pickers_respect_exclusions_and_agree_afterwards() {
        // Four threads, one retry in seven excluding some instance: no pick
        // goes to its excluded instance, and once they stop every pick
        // goes to the one remembered instance.
        let s = Arc::new(Snapshot::new("s", endpoints(8), 1));
        let p = SameInstancePreference::new(RoundRobin::with_start(0)).build(&s);
        std::thread::scope(|scope| {
            for t in 0..4usize {
                let (p, s) = (&p, &s);
                scope.spawn(move || {
                    for i in 0..5_000usize {
                        let ctx = PickContext::new();
                        if (i + t) % 7 == 0 {
                            let ex = [s.endpoints()[(i * 3 + t) % 8].clone()];
                            let e = p.pick(&ctx.with_excluded(&ex)).unwrap();
                            assert!(!e.same_identity(&ex[0]));
                        } else {
                            assert!(p.pick(&ctx).is_some());
                        }
                    }
                });
            }
        });
        let ctx = PickContext::new();
        let first = index(p.pick(&ctx).unwrap());
        assert!((0..100).all(|_| index(p.pick(&ctx).unwrap()) == first));
    }

    #[test]
    fn a_changed_memory_is_found_without_a_walk() {
        // A retry moves the memory; the next pick must not walk the list to
        // find it (O(n) per retry on a 100 000-instance list).
        let s = Arc::new(Snapshot::new("s", endpoints(5), 1));
        let rule = SameInstancePreference::new(RoundRobin::with_start(1));
        let p = rule.build(&s);
        let ctx = PickContext::new();
        assert_eq!(index(p.pick(&ctx).unwrap()), 1);
        assert!(format!("{p:?}").ends_with("cached: Some(1) }"), "{p:?}");
        let excluded = [s.endpoints()[1].clone()];
        let moved = index(p.pick(&ctx.with_excluded(&excluded)).unwrap());
        assert_ne!(moved, 1);
        let cached = format!("cached: Some({moved}) }}");
        assert!(format!("{p:?}").ends_with(&cached), "{p:?}");
    }
}
