//! Weighted response time and dropped attempts: a dropped attempt's wait is
//! a lower bound of the instance's latency, not a sampled mean. Read as a
//! mean, an instance that never answered, whose only attempt was dropped
//! after 1 ms, got 902 of 1 000 picks beside one of 10 ms (helper 161);
//! now it counts as the average of the sampled instances (498), or as the
//! bound when that is longer (a wait of 200 ms: about 48). Paused time, the
//! picker alone.
//!
//! Peer: Netflix/ribbon#39 (<https://github.com/Netflix/ribbon/issues/39>),
//! fixed by PR #41 (<https://github.com/Netflix/ribbon/pull/41>): with no
//! response times yet the rule's weights were unusable; Ribbon falls back
//! to round robin until it has statistics, and counts a server without
//! any as 0 ms (the whole sum as its weight), which this rule replaced
//! with the average; a dropped attempt's wait is not a statistic either.
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_ribbon::instance::{Endpoint, Instance};
use tower_ribbon::rule::{PickContext, Rule, WeightedResponseTime};
use tower_ribbon::snapshot::Snapshot;
use tower_ribbon::stats::Outcome;

fn ep(port: u16) -> Endpoint {
    Endpoint::new(Instance::new("svc", "127.0.0.1", port).unwrap())
}

async fn share_of_b(b_history: u8) -> (usize, Option<Duration>) {
    let (a, b) = (ep(9001), ep(9002));
    // A: 100 responses of 10 ms.
    for _ in 0..100 {
        let g = a.stats().start_at(Instant::now());
        tokio::time::advance(Duration::from_millis(10)).await;
        g.finish(Outcome::Success);
    }
    match b_history {
        // One attempt dropped by its caller after 1 ms (no answer yet).
        1 => {
            let g = b.stats().start_at(Instant::now());
            tokio::time::advance(Duration::from_millis(1)).await;
            drop(g);
        }
        // One attempt dropped by its caller after 200 ms.
        3 => {
            let g = b.stats().start_at(Instant::now());
            tokio::time::advance(Duration::from_millis(200)).await;
            drop(g);
        }
        // One attempt timed out after 200 ms.
        2 => {
            let g = b.stats().start_at(Instant::now());
            tokio::time::advance(Duration::from_millis(200)).await;
            g.finish(Outcome::ReadTimeout);
        }
        _ => {}
    }
    let snap = Arc::new(Snapshot::new("svc", vec![a, b.clone()], 1));
    let picker = WeightedResponseTime::with_seed(9).build(&snap);
    let now = Instant::now();
    let to_b = (0..1000)
        .filter(|_| {
            picker
                .pick(&PickContext::at(now))
                .unwrap()
                .instance()
                .port()
                == 9002
        })
        .count();
    (to_b, b.stats().mean_response_time())
}

#[tokio::test(start_paused = true)]
async fn a_dropped_attempt_gives_an_unanswered_instance_more_than_an_average_share() {
    let fresh = share_of_b(0).await;
    let dropped = share_of_b(1).await;
    let timed_out = share_of_b(2).await;
    let dropped_late = share_of_b(3).await;
    println!(
        "B never tried: {fresh:?}; one attempt dropped after 1 ms: {dropped:?}; one timed out: {timed_out:?}"
    );
    // Documented: "An instance without responses yet counts as the mean of
    // the instances with some, so it starts at an average share"; and a
    // dropped attempt's wait only "raises the latency averages it exceeds".
    assert!((400..=600).contains(&fresh.0), "{fresh:?}");
    assert!(
        dropped.0 <= 600,
        "B, which never answered (one attempt dropped after 1 ms), got {} of 1000 picks (mean read {:?}); never tried: {}",
        dropped.0,
        dropped.1,
        fresh.0
    );
    // A wait longer than the others' mean is a bound that holds: 200 ms
    // against A's 10 ms weighs 10 against 200 (about 48 of 1 000).
    assert!((20..=80).contains(&dropped_late.0), "{dropped_late:?}");
    assert!(timed_out.0 <= 20, "{timed_out:?}");
}

fn share_of_b_now(a: &Endpoint, b: &Endpoint) -> usize {
    let snap = Arc::new(Snapshot::new("svc", vec![a.clone(), b.clone()], 1));
    let picker = WeightedResponseTime::with_seed(9).build(&snap);
    let now = Instant::now();
    (0..1000)
        .filter(|_| {
            picker
                .pick(&PickContext::at(now))
                .unwrap()
                .instance()
                .port()
                == 9002
        })
        .count()
}

/// A: 100 answers of 10 ms. B: one attempt dropped by its caller after
/// 1 ms (the fix: B gets an average share, ~500), then one answer of
/// 100 ms. Docs: B's mean is its decaying mean of response times, and a
/// dropped wait "raises the latency averages it exceeds"; B's only answer
/// took 100 ms, ten times A's, so about 10/110 ≈ 91 of 1 000 picks.
/// Before, the 1 ms wait had seeded the mean and the answer moved it by
/// 1 − e^(−Δt/30 s): mean 1.66 ms and 853 picks, its slow answer raised
/// its share from 498 (helper 163, against my first version). Now the
/// first answer replaces the waits.
#[tokio::test(start_paused = true)]
async fn a_slow_first_answer_after_a_short_drop_counts_as_it_is() {
    let (a, b) = (ep(9001), ep(9002));
    for _ in 0..100 {
        let g = a.stats().start_at(Instant::now());
        tokio::time::advance(Duration::from_millis(10)).await;
        g.finish(Outcome::Success);
    }
    let g = b.stats().start_at(Instant::now());
    tokio::time::advance(Duration::from_millis(1)).await;
    drop(g);
    let unanswered = share_of_b_now(&a, &b);
    tokio::time::advance(Duration::from_millis(100)).await;
    let g = b.stats().start_at(Instant::now());
    tokio::time::advance(Duration::from_millis(100)).await;
    g.finish(Outcome::Success);
    let answered = share_of_b_now(&a, &b);
    println!(
        "B unanswered (1 ms drop): {unanswered}; after one 100 ms answer: {answered}, mean {:?}, ewma {:?}",
        b.stats().mean_response_time(),
        b.stats().ewma()
    );
    assert!((400..=600).contains(&unanswered));
    assert!(
        answered <= 200,
        "B, whose only answer took 100 ms (A: 10 ms), got {answered} of 1000 picks (mean read {:?}; {unanswered} before that answer)",
        b.stats().mean_response_time()
    );
}
