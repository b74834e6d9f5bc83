//! Pieces the rules share: walks over an endpoint list, the filtering loop
//! of the rules that wrap another rule, and state precomputed per snapshot.
//!
//! Everything here runs on the pick path, so none of it locks or
//! allocates.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::{ArcSwapOption, Guard};

use super::{PickContext, Rule};
use crate::discovery::Snapshot;
use crate::instance::Endpoint;

/// Most times a rule that wraps another asks it per pick (Ribbon tries
/// about 10).
pub(crate) const INNER_TRIES: usize = 10;

/// The indices `0..n` in the order of one walk that begins at `start % n`
/// and wraps around; empty when `n` is 0.
#[inline]
pub(crate) fn rotation(start: usize, n: usize) -> impl Iterator<Item = usize> {
    let start = start.checked_rem(n).unwrap_or(0);
    (start..n).chain(0..start)
}

/// The `k`-th (0-based, modulo the eligible count) eligible endpoint of
/// `endpoints`, walking the list at most twice. `None` if none is eligible.
#[inline]
pub(crate) fn nth_eligible<'s>(
    endpoints: &'s [Endpoint],
    ctx: &PickContext<'_>,
    k: usize,
) -> Option<&'s Endpoint> {
    if ctx.all_eligible() {
        return match endpoints.len() {
            0 => None,
            n => endpoints.get(k % n),
        };
    }
    let eligible = endpoints.iter().filter(|e| ctx.is_eligible(e)).count();
    if eligible == 0 {
        return None;
    }
    endpoints
        .iter()
        .filter(|e| ctx.is_eligible(e))
        .nth(k % eligible)
}

/// The index of `e` in `endpoints` if `e` points into that slice (O(1), by
/// address), else `None`.
#[inline]
pub(crate) fn position(endpoints: &[Endpoint], e: &Endpoint) -> Option<usize> {
    let range = endpoints.as_ptr_range();
    let p = e as *const Endpoint;
    if !range.contains(&p) {
        return None;
    }
    Some((p as usize - range.start as usize) / size_of::<Endpoint>())
}

/// The pick of a rule that filters another rule's picks (Ribbon's
/// predicate-based rules): asks `inner` up to `min(len, INNER_TRIES)` times,
/// then walks the list once from the next value of the rotating counter
/// `next` (advanced only when the inner rule's picks did not do).
///
/// A *candidate* is an eligible endpoint of `snapshot` whose index `allowed`
/// accepts. Returns `Ok` with the first candidate that `passes` accepts, or
/// `Err` with the first candidate seen (the inner rule's first, else the
/// walk's), for the caller's fail-open policy.
pub(crate) fn first_passing<'s, R: Rule + ?Sized>(
    inner: &R,
    snapshot: &'s Snapshot,
    ctx: &PickContext<'_>,
    next: &AtomicUsize,
    allowed: impl Fn(usize) -> bool,
    passes: impl Fn(&Endpoint) -> bool,
) -> Result<&'s Endpoint, Option<&'s Endpoint>> {
    let endpoints = snapshot.endpoints();
    let n = endpoints.len();
    if n == 0 {
        return Err(None);
    }
    let mut first = None;
    for _ in 0..n.min(INNER_TRIES) {
        let Some(e) = inner.choose(snapshot, ctx) else {
            break;
        };
        if position(endpoints, e).is_some_and(&allowed) && ctx.is_eligible(e) {
            if passes(e) {
                return Ok(e);
            }
            first.get_or_insert(e);
        }
    }
    for i in rotation(next.fetch_add(1, Ordering::Relaxed), n) {
        let e = &endpoints[i];
        if !allowed(i) || !ctx.is_eligible(e) {
            continue;
        }
        if passes(e) {
            return Ok(e);
        }
        first.get_or_insert(e);
    }
    Err(first)
}

/// State a rule precomputed in [`Rule::update`] for one snapshot, kept with
/// that snapshot's version and endpoints so a pick that reads another
/// snapshot can tell. Derefs to the state.
pub(crate) struct Versioned<T> {
    version: u64,
    /// The snapshot's endpoints, in its order (identities and stats).
    endpoints: Box<[Endpoint]>,
    data: T,
}

impl<T> Versioned<T> {
    /// `data`, computed for `snapshot`.
    pub(crate) fn new(snapshot: &Snapshot, data: T) -> Self {
        Self {
            version: snapshot.version(),
            endpoints: snapshot.endpoints().into(),
            data,
        }
    }

    /// The version of the snapshot the state was computed for.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The endpoints of the snapshot the state was computed for.
    pub(crate) fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Same version and length as `snapshot`: an index into
    /// [`Self::endpoints`] is one into `snapshot`'s (whose endpoint may
    /// still have another identity if a list changed under one version).
    #[inline]
    pub(crate) fn aligned_with(&self, snapshot: &Snapshot) -> bool {
        self.version == snapshot.version() && self.endpoints.len() == snapshot.len()
    }

    /// Computed for exactly `snapshot`: same version, same identities in
    /// the same order. O(n).
    pub(crate) fn is_for(&self, snapshot: &Snapshot) -> bool {
        self.aligned_with(snapshot)
            && self
                .endpoints
                .iter()
                .zip(snapshot.endpoints())
                .all(|(a, b)| a.same_identity(b))
    }

    /// Walks the table `indices` (into [`Self::endpoints`]) cyclically from
    /// entry `start % len`, at most once around, and returns `snapshot`'s
    /// endpoint at the first entry whose endpoint is eligible. `None` when
    /// none is, or as soon as an entry's index is out of `snapshot`'s range
    /// or its endpoint there has another identity than the one the table
    /// was built for (the caller then falls back).
    #[inline]
    pub(crate) fn first_eligible<'s>(
        &self,
        indices: &[u32],
        start: usize,
        snapshot: &'s Snapshot,
        ctx: &PickContext<'_>,
    ) -> Option<&'s Endpoint> {
        let endpoints = snapshot.endpoints();
        for j in rotation(start, indices.len()) {
            let i = indices[j] as usize;
            let e = endpoints.get(i)?;
            if !self.endpoints.get(i)?.same_identity(e) {
                return None;
            }
            if ctx.is_eligible(e) {
                return Some(e);
            }
        }
        None
    }
}

impl<T> Deref for Versioned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.data
    }
}

/// The latest [`Versioned`] state of a rule, swapped in by
/// [`Rule::update`] and read by picks without a lock.
pub(crate) struct VersionedState<T>(ArcSwapOption<Versioned<T>>);

impl<T> VersionedState<T> {
    /// No state yet.
    pub(crate) fn empty() -> Self {
        Self(ArcSwapOption::empty())
    }

    /// The current state, if any.
    #[inline]
    pub(crate) fn load(&self) -> Guard<Option<Arc<Versioned<T>>>> {
        self.0.load()
    }

    /// Replaces the state.
    pub(crate) fn store(&self, state: Versioned<T>) {
        self.0.store(Some(Arc::new(state)));
    }

    /// The version of the current state, for `Debug`.
    pub(crate) fn version(&self) -> Option<u64> {
        self.0.load().as_deref().map(Versioned::version)
    }
}
