//! The breaker's own tests.

use super::*;

#[test]
fn a_declined_attempt_counts_once_a_second() {
    let b = Breaker::new();
    let counted: Vec<u64> = [0, 1, 500, 999, 1_000, 1_001, 1_999, 2_000, 5_000, 4_000]
        .into_iter()
        .filter(|&t| b.count_declined(t, 1_000))
        .collect();
    // An out-of-order 4 000 after 5 000 does not count (the window
    // only moves forward).
    assert_eq!(counted, [0, 1_000, 2_000, 5_000]);
}

#[test]
fn a_lost_stream_counts_once_per_connection_end() {
    let b = Breaker::new();
    // (sent µs, failed µs): three streams of one connection that ended
    // at 5 000 µs, in any order; then one sent after that, on the next
    // connection; then one sent before the last counted end.
    let counted: Vec<bool> = [
        (1_000, 5_100),
        (900, 5_000),
        (4_000, 5_200),
        (5_300, 9_000),
        (5_200, 9_100),
    ]
    .into_iter()
    .map(|(sent, failed)| b.count_lost(None, sent, failed, failed / 1_000, 1_000))
    .collect();
    assert_eq!(counted, [true, false, false, true, false]);
    // A declined attempt at 10 ms explains the connection ends of the
    // next second; one at 1 010 ms counts again.
    b.saw_declined(10);
    assert!(!b.count_lost(None, 20_000, 30_000, 30, 1_000));
    assert!(!b.count_lost(None, 20_000, 1_009_000, 1_009, 1_000));
    assert!(b.count_lost(None, 20_000, 1_010_000, 1_010, 1_000));
}

#[test]
fn a_lost_stream_sent_at_or_before_the_endpoints_creation_counts() {
    // Its own clock: a stream sent at the very instant the endpoint's
    // stats were created (or, out of order, before) is no "never".
    let created = tokio::time::Instant::now();
    let stats = super::super::EndpointStats::new();
    let before = created
        .checked_sub(std::time::Duration::from_millis(5))
        .unwrap_or(created);
    let failed = created + std::time::Duration::from_millis(3);
    assert!(stats.count_lost(before, failed, None));
    // The same connection's other streams do not count again.
    assert!(!stats.count_lost(before, failed + std::time::Duration::from_millis(1), None));
}

#[test]
fn of_racing_lost_streams_of_one_connection_exactly_one_counts() {
    for round in 0..50u64 {
        let b = std::sync::Arc::new(Breaker::new());
        let counted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u64)
                .map(|i| {
                    let b = std::sync::Arc::clone(&b);
                    // Sent before the connection ended at 10 000 µs;
                    // each fails a little later.
                    s.spawn(move || {
                        usize::from(b.count_lost(None, round * 10 + i, 10_000 + i, 10, 1_000))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(counted, 1, "round {round}");
    }
}

#[test]
fn of_racing_declined_attempts_exactly_one_counts() {
    for round in 0..50u64 {
        let b = std::sync::Arc::new(Breaker::new());
        let counted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let b = std::sync::Arc::clone(&b);
                    s.spawn(move || usize::from(b.count_declined(round * 7, 1_000)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(counted, 1, "round {round}");
    }
}

#[test]
fn a_stale_failure_never_shortens_and_a_stale_response_never_closes() {
    let c = StatsConfig::default();
    let b = Breaker::new();
    for t in [1_000, 1_001] {
        b.record(&c, Outcome::ConnectFailure, t, false, false, 0);
    }
    assert_eq!(
        b.record(&c, Outcome::ConnectFailure, 1_002, false, false, 0),
        BreakerTransition::Tripped
    );
    assert_eq!(b.until_ms(), 11_002);
    // A fourth failure stamped 0 (out of order) blacks out 20 s from 0.
    b.record(&c, Outcome::ReadTimeout, 0, true, false, 0);
    assert_eq!(b.until_ms(), 20_000);
    b.record(&c, Outcome::ConnectFailure, 1_002, false, false, 0);
    assert_eq!(b.until_ms(), 31_002);
    // An older failure whose blackout would end sooner moves nothing.
    b.record(&c, Outcome::ConnectFailure, 0, true, false, 0);
    assert_eq!(b.until_ms(), 31_002);
    // A success from before the last failure is stale.
    assert_eq!(
        b.record(&c, Outcome::Success, 900, true, false, 0),
        BreakerTransition::None
    );
    assert_eq!(b.successive(), 6);
    assert!(matches!(b.state(1_500), BreakerState::Open { .. }));
    assert_eq!(
        b.record(&c, Outcome::FailureStatus(500), 1_500, false, false, 0),
        BreakerTransition::Recovered
    );
    assert_eq!(b.state(1_500), BreakerState::Closed);
}
