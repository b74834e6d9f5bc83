//! Acceptance check for the latency-aware rules: "A failing instance that
//! answers 500 in 1 ms and a healthy one that answers in 50 ms: every
//! latency-aware rule sends the failing one under 20 % of traffic after
//! warm-up."
//!
//! Each run drives one rule on a virtual clock (tokio's paused
//! `Instant`, times computed, nothing sleeps): one request arrives every
//! `gap`, is picked with `PickContext::at(arrival)`, started at the arrival
//! and finished at arrival + latency. Pending completions sit in a min-heap
//! by finish time; those due by an arrival finish, at their own time,
//! before it is picked. The failing share counts the requests after the
//! warm-up. Run with `cargo test --test latency_aware -- --nocapture` for
//! the table.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_ribbon::instance::{Endpoint, Instance};
use tower_ribbon::rule::{
    AvailabilityFiltering, BestAvailable, PeakEwmaP2c, PickContext, RoundRobin, Rule,
    WeightedResponseTime, ZoneAvoidance,
};
use tower_ribbon::snapshot::Snapshot;
use tower_ribbon::stats::{InFlightGuard, Outcome};

/// Requests per run.
const REQUESTS: usize = 4_000;
/// Requests before the share is counted.
const WARMUP: usize = 400;
/// The most traffic the failing instance may get.
const MAX_FAILING_SHARE: f64 = 0.20;
/// Gaps between arrivals: 20, 100, 500 and 1 000 requests per second.
const GAPS_MS: [u64; 4] = [50, 10, 2, 1];
/// How often the weighted-response-time weights are recomputed.
const RECOMPUTE_EVERY: Duration = Duration::from_millis(1_000);

/// Index 0 of the snapshot fails fast, index 1 is healthy.
const FAILING: usize = 0;

fn respond(index: usize) -> (Duration, Outcome) {
    if index == FAILING {
        (Duration::from_millis(1), Outcome::FailureStatus(500))
    } else {
        (Duration::from_millis(50), Outcome::Success)
    }
}

fn snapshot() -> Arc<Snapshot> {
    let endpoints = [8081, 8082]
        .into_iter()
        .map(|port| Endpoint::new(Instance::new("svc", "127.0.0.1", port).unwrap()))
        .collect();
    Arc::new(Snapshot::new("svc", endpoints, 1))
}

/// Something done every [`RECOMPUTE_EVERY`] of virtual time.
type Periodic = Box<dyn Fn()>;

/// One rule under test: a fresh instance per run.
struct Case {
    name: &'static str,
    /// Whether the acceptance bound applies (latency-aware rules only).
    asserted: bool,
    make: fn() -> (Arc<dyn Rule>, Option<Periodic>),
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "peak_ewma_p2c",
            asserted: true,
            make: || (Arc::new(PeakEwmaP2c::with_seed(7)), None),
        },
        Case {
            name: "weighted_response_time",
            asserted: true,
            make: || {
                // Recomputed only from here, every RECOMPUTE_EVERY.
                let rule = Arc::new(
                    WeightedResponseTime::with_seed(7).with_recompute_interval(Duration::MAX),
                );
                let handle = Arc::clone(&rule);
                let recompute: Periodic = Box::new(move || handle.recompute());
                (rule, Some(recompute))
            },
        },
        Case {
            name: "availability_filtering(peak_ewma_p2c)",
            asserted: true,
            make: || {
                let rule = AvailabilityFiltering::new(PeakEwmaP2c::with_seed(7));
                (Arc::new(rule), None)
            },
        },
        Case {
            name: "zone_avoidance(peak_ewma_p2c)",
            asserted: true,
            make: || {
                (
                    Arc::new(ZoneAvoidance::new(PeakEwmaP2c::with_seed(7))),
                    None,
                )
            },
        },
        Case {
            name: "round_robin (reference)",
            asserted: false,
            make: || (Arc::new(RoundRobin::with_start(0)), None),
        },
        Case {
            name: "best_available (reference)",
            asserted: false,
            make: || (Arc::new(BestAvailable::new()), None),
        },
    ]
}

/// The failing instance's share of the requests after the warm-up, with
/// one arrival every `gap`.
fn failing_share(rule: &dyn Rule, periodic: Option<&Periodic>, gap: Duration) -> f64 {
    let s = snapshot();
    let picker = rule.build(&s);
    let start = Instant::now();
    let mut next_periodic = start + RECOMPUTE_EVERY;
    // (finish time, request number) → the request's guard and outcome.
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut pending: Vec<Option<(InFlightGuard<'_>, Outcome)>> = Vec::with_capacity(REQUESTS);
    let mut failing = 0u32;
    for k in 0..REQUESTS {
        let now = start + gap * k as u32;
        while let Some(&Reverse((at, j))) = due.peek() {
            if at > now {
                break;
            }
            due.pop();
            let (guard, outcome) = pending[j].take().unwrap();
            guard.finish_at(outcome, at);
        }
        if let Some(periodic) = periodic {
            while next_periodic <= now {
                periodic();
                next_periodic += RECOMPUTE_EVERY;
            }
        }
        let e = picker.pick(&PickContext::at(now)).unwrap();
        let index = s
            .endpoints()
            .iter()
            .position(|x| std::ptr::eq(x, e))
            .unwrap();
        if k >= WARMUP && index == FAILING {
            failing += 1;
        }
        let (latency, outcome) = respond(index);
        pending.push(Some((e.stats().start_at(now), outcome)));
        due.push(Reverse((now + latency, k)));
    }
    f64::from(failing) / (REQUESTS - WARMUP) as f64
}

#[tokio::test(start_paused = true)]
async fn failing_instance_gets_under_a_fifth_of_traffic() {
    println!("failing share after {WARMUP} of {REQUESTS} requests (500 in 1 ms vs 200 in 50 ms)");
    let header: Vec<String> = GAPS_MS.iter().map(|g| format!("1 per {g} ms")).collect();
    println!("| rule | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(GAPS_MS.len()));
    let mut failures = Vec::new();
    for case in cases() {
        let mut row = Vec::new();
        for gap_ms in GAPS_MS {
            let (rule, periodic) = (case.make)();
            let share = failing_share(&*rule, periodic.as_ref(), Duration::from_millis(gap_ms));
            row.push(format!("{:.2} %", share * 100.0));
            if case.asserted && share >= MAX_FAILING_SHARE {
                failures.push(format!("{} at 1 per {gap_ms} ms: {share:.4}", case.name));
            }
        }
        println!("| {} | {} |", case.name, row.join(" | "));
    }
    assert!(
        failures.is_empty(),
        "failing share not under {MAX_FAILING_SHARE}: {failures:?}"
    );
}
