//! A dropped request's wait is a lower bound of its instance's latency: it
//! may raise what is known, never invent a fast sample for an instance
//! with no latency history. Peak EWMA P2C prices an unsampled instance at
//! its default RTT (30 ms); a 1 ms cancel on it must not make it cheaper
//! than that (it priced it at 1 ms, below a real 10 ms instance).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_ribbon::rule::{PeakEwmaP2c, PickContext, Rule};
use tower_ribbon::snapshot::Snapshot;
use tower_ribbon::stats::Outcome;
use tower_ribbon::{Endpoint, Instance};

/// Two instances on ports 1000 and 1001: the first answered once in
/// 10 ms at `t0`, the second's only request, started at `t0`, dropped
/// after `wait_ms` (paused time advanced by it).
async fn after_a_cancel(wait_ms: u64) -> (Arc<Snapshot>, Instant) {
    let eps = (0..2u16)
        .map(|p| Endpoint::new(Instance::new("s", "127.0.0.1", 1000 + p).unwrap()))
        .collect();
    let s = Arc::new(Snapshot::new("s", eps, 1));
    let t0 = Instant::now();
    s.endpoints()[0]
        .stats()
        .start_at(t0)
        .finish_at(Outcome::Success, t0 + Duration::from_millis(10));
    let guard = s.endpoints()[1].stats().start_at(t0);
    tokio::time::advance(Duration::from_millis(wait_ms)).await;
    drop(guard);
    (s, t0)
}

#[tokio::test(start_paused = true)]
async fn a_short_cancel_does_not_make_an_unsampled_instance_look_fast() {
    // A request to the unsampled instance dropped after 1 ms.
    let (s, t0) = after_a_cancel(1).await;
    let unsampled = &s.endpoints()[1];
    // Nothing was learnt that lowers its price below the default 30 ms.
    let rule = PeakEwmaP2c::with_seed(3).build(&s);
    let ctx = PickContext::at(t0 + Duration::from_millis(10));
    let to_unsampled = (0..50)
        .filter(|_| rule.pick(&ctx).unwrap().instance().port() == 1001)
        .count();
    assert_eq!(to_unsampled, 0);
    // No EWMA sample exists for it yet.
    assert_eq!(unsampled.stats().ewma(), None);
}

/// A long wait still counts on an unsampled instance: 100 ms without an
/// answer prices it above a real 10 ms instance and its default 30 ms.
#[tokio::test(start_paused = true)]
async fn a_long_cancel_still_prices_an_unsampled_instance_up() {
    let (s, _) = after_a_cancel(100).await;
    let unsampled = &s.endpoints()[1];
    let peak = unsampled.stats().peak_ewma_at(Instant::now()).unwrap();
    assert!(peak.as_micros().abs_diff(100_000) <= 2, "{peak:?}");
    // The mean (weighted response time's input, 0 when empty) rises too.
    let mean = unsampled.stats().mean_response_time().unwrap();
    assert!(mean.as_micros().abs_diff(100_000) <= 2, "{mean:?}");
    let rule = PeakEwmaP2c::with_seed(3).build(&s);
    let ctx = PickContext::at(Instant::now());
    assert!((0..50).all(|_| rule.pick(&ctx).unwrap().instance().port() == 1000));
}
