//! Pick cost of each rule over snapshots of 10 to 10 000 instances, next to
//! a naive baseline (`Mutex<usize>` round robin).
//!
//! Run: `cargo bench --bench pick`

use std::hint::black_box;
use std::sync::Mutex;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tower_ribbon::discovery::Snapshot;
use tower_ribbon::instance::{Endpoint, Instance};
use tower_ribbon::rule::{PickContext, Random, RoundRobin, Rule};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

fn snapshot(n: usize) -> Snapshot {
    let endpoints = (0..n)
        .map(|i| {
            let host = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
            Endpoint::new(Instance::new("svc", host, 8080).expect("valid address"))
        })
        .collect();
    Snapshot::new("svc", endpoints, 1)
}

fn bench_rules(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in SIZES {
        let snap = snapshot(n);
        let ctx = PickContext::new();
        let rules: [(&str, Box<dyn Rule>); 2] = [
            ("round_robin", Box::new(RoundRobin::with_start(0))),
            ("random", Box::new(Random::with_seed(1))),
        ];
        for (name, rule) in &rules {
            group.bench_with_input(BenchmarkId::new(*name, n), &n, |b, _| {
                b.iter(|| black_box(rule.choose(black_box(&snap), &ctx).is_some()))
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
    }
    group.finish();
}

criterion_group!(benches, bench_rules);
criterion_main!(benches);
