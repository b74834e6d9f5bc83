//! Histories of one instance's attempts for weighted response time's
//! tests, on paused time: answers, attempts dropped by their caller, and
//! the share a picker over two instances gives the second.
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower_ribbon::instance::{Endpoint, Instance};
use tower_ribbon::rule::{PickContext, Rule, WeightedResponseTime};
use tower_ribbon::snapshot::Snapshot;
use tower_ribbon::stats::Outcome;

/// An endpoint of `svc` at 127.0.0.1:`port`, fresh stats.
pub fn ep(port: u16) -> Endpoint {
    Endpoint::new(Instance::new("svc", "127.0.0.1", port).unwrap())
}

/// A at port 9001 after 100 answers of 10 ms.
pub async fn warm_a() -> Endpoint {
    let a = ep(9001);
    for _ in 0..100 {
        answer(&a, 10).await;
    }
    a
}

/// One attempt on `e` dropped by its caller after `ms`.
pub async fn drop_after(e: &Endpoint, ms: u64) {
    let g = e.stats().start_at(Instant::now());
    tokio::time::advance(Duration::from_millis(ms)).await;
    drop(g);
}

/// One attempt on `e` answered after `ms`.
pub async fn answer(e: &Endpoint, ms: u64) {
    let g = e.stats().start_at(Instant::now());
    tokio::time::advance(Duration::from_millis(ms)).await;
    g.finish(Outcome::Success);
}

/// Of 1 000 picks now over `a` and `b` (seed 9), how many went to port 9002.
pub fn share_of_b_now(a: &Endpoint, b: &Endpoint) -> usize {
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

/// A seeded xorshift generator for the histories of property tests.
#[allow(dead_code)]
pub struct Rng(pub u64);

#[allow(dead_code)]
impl Rng {
    /// The next 64 bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Log-uniform in [1, max] ms.
    pub fn log_ms(&mut self, max: u64) -> u64 {
        let f = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((max as f64).powf(f)).round().max(1.0) as u64
    }
}
