//! Fixtures for the rules' unit tests: endpoints and snapshots, stats
//! driven on a paused clock, and the changing-lists property every rule
//! with precomputed state must keep.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tokio::time::Instant;

use super::{PickContext, Picker, Rule};
use crate::instance::{Endpoint, Instance};
use crate::snapshot::Snapshot;
use crate::stats::{InFlightGuard, Outcome};

/// The first port of [`endpoints`]; an endpoint's index is its port minus
/// this.
pub(crate) const BASE_PORT: u16 = 1000;

/// Instance `host:port` of service `s`.
pub(crate) fn instance(host: &str, port: u16) -> Instance {
    Instance::new("s", host, port).unwrap()
}

/// `n` endpoints `127.0.0.1:1000`, `:1001`, …
pub(crate) fn endpoints(n: u16) -> Vec<Endpoint> {
    (0..n)
        .map(|p| Endpoint::new(instance("127.0.0.1", BASE_PORT + p)))
        .collect()
}

/// A snapshot of [`endpoints`]`(n)`, version 1.
pub(crate) fn snapshot(n: u16) -> Arc<Snapshot> {
    Arc::new(Snapshot::new("s", endpoints(n), 1))
}

/// The port of a pick, 0 for `None`.
pub(crate) fn port(e: Option<&Endpoint>) -> u16 {
    e.map_or(0, |e| e.instance().port())
}

/// The index of a pick of [`endpoints`] (its port minus 1000).
pub(crate) fn index(e: &Endpoint) -> usize {
    usize::from(e.instance().port() - BASE_PORT)
}

/// Trips `e`'s breaker at `now` (three connect failures).
pub(crate) fn trip(e: &Endpoint, now: Instant) {
    for _ in 0..3 {
        e.stats()
            .start_at(now)
            .finish_at(Outcome::ConnectFailure, now);
    }
}

/// One success of `ms` started at `at`.
pub(crate) fn sample(e: &Endpoint, at: Instant, ms: u64) {
    e.stats()
        .start_at(at)
        .finish_at(Outcome::Success, at + Duration::from_millis(ms));
}

/// `samples` successes of exactly `ms` each, started now.
pub(crate) fn feed(e: &Endpoint, ms: u64, samples: usize) {
    for _ in 0..samples {
        sample(e, Instant::now(), ms);
    }
}

/// A request in flight on the virtual clock, ordered by finish time (the
/// earliest first in a `BinaryHeap`), then by start order.
struct Pending<'a> {
    at: Instant,
    seq: usize,
    guard: InFlightGuard<'a>,
    outcome: Outcome,
}

impl Pending<'_> {
    fn key(&self) -> (Instant, usize) {
        (self.at, self.seq)
    }
}

impl PartialEq for Pending<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Pending<'_> {}

impl PartialOrd for Pending<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// Drives `picker` over its list on a virtual clock starting now: a request
/// arrives every `gap`, or with `None` as soon as the previous one has
/// finished; endpoint `i` answers after `respond(i).0` with `respond(i).1`.
/// Before each pick, the requests due by then finish at their own time.
/// Returns the picks per endpoint after the first `warmup` requests.
pub(crate) fn simulate(
    picker: &dyn Picker,
    respond: impl Fn(usize) -> (Duration, Outcome),
    gap: Option<Duration>,
    requests: usize,
    warmup: usize,
) -> Vec<u32> {
    let mut now = Instant::now();
    let mut pending = BinaryHeap::new();
    let mut counts = vec![0u32; picker.snapshot().len()];
    for seq in 0..requests {
        while pending.peek().is_some_and(|p: &Pending<'_>| p.at <= now) {
            let p = pending.pop().unwrap();
            p.guard.finish_at(p.outcome, p.at);
        }
        let e = picker.pick(&PickContext::at(now)).unwrap();
        let i = index(e);
        if seq >= warmup {
            counts[i] += 1;
        }
        let (latency, outcome) = respond(i);
        pending.push(Pending {
            at: now + latency,
            seq,
            guard: e.stats().start_at(now),
            outcome,
        });
        now += gap.unwrap_or(latency);
    }
    counts
}

/// The members of `pool` that `mask` selects.
pub(crate) fn masked(pool: &[Endpoint], mask: &[bool]) -> Vec<Endpoint> {
    pool.iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(e, _)| e.clone())
        .collect()
}

/// One list of a changing-lists run: which of the first `n` pool members
/// it holds, its version (from a few, so versions collide), and whether a
/// picker of the list before it keeps picking too.
pub(crate) type ListStep = (Vec<bool>, usize, u64, bool);

/// 1 to 5 [`ListStep`]s over a pool of `pool` endpoints.
pub(crate) fn list_steps(pool: usize) -> impl Strategy<Value = Vec<ListStep>> {
    prop::collection::vec(
        (
            prop::collection::vec(any::<bool>(), pool),
            0..=pool,
            0u64..3,
            any::<bool>(),
        ),
        1..6,
    )
}

/// The changing-lists property of a rule: for each step's list, a picker
/// built for it (and, when the step says so, the previous list's picker,
/// which a request may still hold), with and without `excluded`, and with
/// each of `keys` as hash key: `picks` picks, each an eligible member of
/// the picker's own list, and `None` only when nothing is eligible. No
/// panic on colliding versions or pickers of replaced lists.
pub(crate) fn check_changing_lists(
    rule: &dyn Rule,
    pool: &[Endpoint],
    steps: &[ListStep],
    excluded: &[Endpoint],
    keys: &[Option<u64>],
    picks: usize,
) -> Result<(), TestCaseError> {
    let mut previous: Option<Arc<dyn Picker>> = None;
    for (mask, n, version, keep_old) in steps {
        let snap = Arc::new(Snapshot::new("s", masked(&pool[..*n], mask), *version));
        let picker = rule.build(&snap);
        prop_assert!(Arc::ptr_eq(picker.snapshot(), &snap));
        let old = previous.as_ref().filter(|_| *keep_old);
        for p in std::iter::once(&picker).chain(old) {
            let s = p.snapshot();
            for key in keys {
                for ctx in [
                    PickContext::new(),
                    PickContext::new().with_excluded(excluded),
                ] {
                    let ctx = match key {
                        Some(k) => ctx.with_hash_key(*k),
                        None => ctx,
                    };
                    let eligible = s.endpoints().iter().filter(|e| ctx.is_eligible(e)).count();
                    for _ in 0..picks {
                        match p.pick(&ctx) {
                            Some(e) => {
                                prop_assert!(s.endpoints().iter().any(|x| std::ptr::eq(x, e)));
                                prop_assert!(ctx.is_eligible(e));
                            }
                            None => prop_assert_eq!(eligible, 0),
                        }
                    }
                }
            }
        }
        previous = Some(picker);
    }
    Ok(())
}
