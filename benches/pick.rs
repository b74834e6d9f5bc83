//! Pick cost of each rule over snapshots of 10 to 10 000 instances, on one
//! thread and on two threads at once, next to a naive baseline
//! (`Mutex<usize>` round robin) and the peer: tower's `balance::p2c` with
//! `load::PeakEwma` over the same number of endpoints (its `poll_ready`
//! picks and `call` dispatches to an always-ready endpoint).
//!
//! A pick here is what the request path does: one call of the picker the
//! rule built for the list ([`Rule::build`] runs once per list, outside the
//! measurement).
//!
//! Run: `cargo bench --bench pick`

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tower::Service;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma};
use tower_ribbon::instance::{Endpoint, Instance};
use tower_ribbon::rule::{self, PickContext, Rule};
use tower_ribbon::snapshot::Snapshot;

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

fn snapshot(n: usize) -> Arc<Snapshot> {
    let endpoints = (0..n)
        .map(|i| {
            let host = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
            let instance = Instance::new("svc", host, 8080)
                .expect("valid address")
                .with_zone(["zone-a", "zone-b", "zone-c"][i % 3])
                .with_weight(1 + (i % 3) as u32);
            Endpoint::new(instance)
        })
        .collect();
    Arc::new(Snapshot::new("svc", endpoints, 1))
}

/// Every rule of the crate, freshly made, with fixed seeds.
fn rules() -> Vec<(&'static str, Box<dyn Rule>)> {
    vec![
        ("round_robin", Box::new(rule::RoundRobin::with_start(0))),
        ("random", Box::new(rule::Random::with_seed(1))),
        (
            "weighted_response_time",
            Box::new(rule::WeightedResponseTime::with_seed(1)),
        ),
        (
            "weighted_round_robin",
            Box::new(rule::WeightedRoundRobin::new()),
        ),
        ("consistent_hash", Box::new(rule::ConsistentHash::new())),
        ("best_available", Box::new(rule::BestAvailable::new())),
        ("peak_ewma_p2c", Box::new(rule::PeakEwmaP2c::with_seed(1))),
        (
            "availability_filtering_rr",
            Box::new(rule::AvailabilityFiltering::new(
                rule::RoundRobin::with_start(0),
            )),
        ),
        (
            "zone_avoidance_rr",
            Box::new(rule::ZoneAvoidance::new(rule::RoundRobin::with_start(0))),
        ),
        (
            "zone_avoidance_rr_preferred_zone",
            Box::new(
                rule::ZoneAvoidance::new(rule::RoundRobin::with_start(0))
                    .preferred_zone(Some("zone-a")),
            ),
        ),
    ]
}

/// Gives each endpoint some latency samples so latency-aware rules work on
/// real stats.
fn warm(snap: &Snapshot) {
    let t0 = tokio::time::Instant::now();
    for (i, e) in snap.endpoints().iter().enumerate() {
        let g = e.stats().start_at(t0);
        g.finish_at(
            tower_ribbon::stats::Outcome::Success,
            t0 + Duration::from_micros(500 + (i as u64 % 7) * 100),
        );
    }
}

fn bench_one_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_1_thread");
    for n in SIZES {
        let snap = snapshot(n);
        warm(&snap);
        for (name, rule) in rules() {
            let picker = rule.build(&snap);
            let ctx = PickContext::new();
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(black_box(&picker).pick(&ctx).is_some()))
            });
        }
        let naive = Mutex::new(0usize);
        group.bench_with_input(BenchmarkId::new("baseline_mutex_rr", n), &n, |b, _| {
            b.iter(|| {
                let mut next = naive.lock().unwrap_or_else(|e| e.into_inner());
                *next = (*next + 1) % n;
                black_box(&snap.endpoints()[*next]);
            })
        });
        bench_tower_p2c(&mut group, n);
    }
    group.finish();
}

type Ready =
    tower::util::ServiceFn<fn(()) -> std::future::Ready<Result<(), std::convert::Infallible>>>;

fn ready_endpoint() -> Ready {
    tower::service_fn(|()| std::future::ready(Ok(())))
}

fn bench_tower_p2c(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    n: usize,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let endpoints: Vec<PeakEwma<Ready>> = (0..n)
        .map(|_| {
            PeakEwma::new(
                ready_endpoint(),
                Duration::from_millis(30),
                Duration::from_secs(10).as_nanos() as f64,
                CompleteOnResponse::default(),
            )
        })
        .collect();
    let mut balance = tower::balance::p2c::Balance::new(ServiceList::new(endpoints));
    let mut cx = Context::from_waker(Waker::noop());
    group.bench_with_input(BenchmarkId::new("tower_p2c_peak_ewma", n), &n, |b, _| {
        b.iter(|| {
            match balance.poll_ready(&mut cx) {
                Poll::Ready(Ok(())) => {}
                other => panic!("tower balance not ready: {other:?}"),
            }
            drop(black_box(balance.call(())));
        })
    });
}

fn bench_two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_2_threads");
    for n in SIZES {
        let snap = snapshot(n);
        warm(&snap);
        for (name, rule) in rules() {
            let picker = rule.build(&snap);
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                // Both threads pick `iters` times; the time reported is the
                // wall time per pick of one thread while the other also picks.
                b.iter_custom(|iters| {
                    std::thread::scope(|s| {
                        let other = s.spawn(|| {
                            let ctx = PickContext::new();
                            for _ in 0..iters {
                                black_box(black_box(&picker).pick(&ctx).is_some());
                            }
                        });
                        let ctx = PickContext::new();
                        let start = Instant::now();
                        for _ in 0..iters {
                            black_box(black_box(&picker).pick(&ctx).is_some());
                        }
                        let elapsed = start.elapsed();
                        let _ = other.join();
                        elapsed
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800))
        .sample_size(20)
        .without_plots();
    targets = bench_one_thread, bench_two_threads
}
criterion_main!(benches);
