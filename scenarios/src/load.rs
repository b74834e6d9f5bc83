//! Load generators, both bounded in request count and in time:
//!
//! - [`open_loop`]: a fixed arrival rate (requests start on schedule,
//!   whatever earlier ones are doing, as Linkerd's `slow_cooker` does), for
//!   the scenarios;
//! - [`closed_loop`]: a fixed number of requests in flight, each worker
//!   sending its next request when the last one ends, for the overhead
//!   measurement.
//!
//! Latency is measured from the moment a request is handed to the target
//! to the moment its whole response body has been read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::client::Target;

/// Status recorded for a request that failed or hit the hard timeout.
pub const FAILED: u16 = 0;

/// One request of an open-loop run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it started, µs after the run started.
    pub start_us: u32,
    /// How long it took, µs.
    pub latency_us: u32,
    /// Its status, or [`FAILED`].
    pub status: u16,
}

impl Sample {
    /// A 200 within `timeout`.
    pub fn ok_within(&self, timeout: Duration) -> bool {
        self.status == 200 && u128::from(self.latency_us) <= timeout.as_micros()
    }
}

/// An open-loop run's settings.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    /// Requests started per second.
    pub rate: f64,
    /// How long requests are started.
    pub duration: Duration,
    /// Bound on one request; past it the request counts as failed.
    pub hard_timeout: Duration,
    /// Requests in flight beyond which new ones are dropped (counted).
    pub max_in_flight: usize,
    /// Whether requests carry a random consistent-hash key.
    pub keys: bool,
    /// Seed of the keys.
    pub seed: u64,
}

/// What an open-loop run measured.
#[derive(Debug)]
pub struct OpenLoopResult {
    /// Every request started, in no particular order.
    pub samples: Vec<Sample>,
    /// Requests not started because too many were in flight.
    pub dropped: u64,
    /// Largest delay between a request's scheduled and actual start.
    pub max_lag: Duration,
}

/// Starts `rate × duration` requests at a constant rate from `start`, then
/// waits (at most `hard_timeout` more) for the last ones.
pub async fn open_loop<T: Target>(target: &T, cfg: OpenLoop, start: Instant) -> OpenLoopResult {
    let total = (cfg.rate * cfg.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(1e-3));
    let samples = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let mut dropped = 0;
    let mut max_lag = Duration::ZERO;
    let mut i = 0u64;
    while i < total {
        let due = start + interval.mul_f64(i as f64);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
            continue;
        }
        max_lag = max_lag.max(now - due);
        i += 1;
        let key = cfg.keys.then(|| rng.random::<u64>());
        if in_flight.load(Ordering::Relaxed) >= cfg.max_in_flight {
            dropped += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (target, samples, in_flight) =
            (target.clone(), Arc::clone(&samples), Arc::clone(&in_flight));
        let hard = cfg.hard_timeout;
        tokio::spawn(async move {
            let began = Instant::now();
            let status = tokio::time::timeout(hard, target.send(key))
                .await
                .ok()
                .flatten()
                .unwrap_or(FAILED);
            let sample = Sample {
                start_us: began.saturating_duration_since(start).as_micros() as u32,
                latency_us: began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32,
                status,
            };
            samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(sample);
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Every request ends within the hard timeout; wait a little beyond.
    let wait_until = Instant::now() + cfg.hard_timeout + Duration::from_millis(500);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    OpenLoopResult {
        samples,
        dropped,
        max_lag,
    }
}

/// What a closed-loop run measured.
#[derive(Debug, Default)]
pub struct ClosedLoopResult {
    /// Latencies (µs) of the successful requests.
    pub latencies_us: Vec<u32>,
    /// Failed requests.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl ClosedLoopResult {
    /// Adds another slice's figures.
    pub fn merge(&mut self, other: ClosedLoopResult) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.elapsed += other.elapsed;
    }
}

/// Most requests one closed-loop worker sends in one slice.
const MAX_PER_WORKER: usize = 2_000_000;

/// `concurrency` workers send back to back for `duration`.
pub async fn closed_loop<T: Target>(
    target: &T,
    concurrency: usize,
    duration: Duration,
) -> ClosedLoopResult {
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                let mut errors = 0u64;
                while latencies.len() + (errors as usize) < MAX_PER_WORKER
                    && Instant::now() < deadline
                {
                    let began = Instant::now();
                    match tokio::time::timeout(Duration::from_secs(5), target.send(None)).await {
                        Ok(Some(200)) => latencies.push(began.elapsed().as_micros() as u32),
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut result = ClosedLoopResult::default();
    for worker in workers {
        if let Ok((latencies, errors)) = worker.await {
            result.latencies_us.extend(latencies);
            result.errors += errors;
        }
    }
    result.elapsed = start.elapsed();
    result
}

/// The `p` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A distribution-free 95 % confidence interval of the `p` quantile of
/// sorted values: the order statistics at ranks `n·p ± 1.96·√(n·p·(1−p))`.
pub fn quantile_ci(sorted: &[u32], p: f64) -> (u32, u32) {
    if sorted.is_empty() {
        return (0, 0);
    }
    let n = sorted.len() as f64;
    let half = 1.96 * (n * p * (1.0 - p)).sqrt();
    let at = |rank: f64| sorted[(rank.ceil().max(1.0) as usize).min(sorted.len()) - 1];
    (at(n * p - half), at(n * p + half + 1.0))
}

/// p50, p90, p99 and p99.9 of `latencies_us`, in ms.
pub fn percentiles_ms(latencies_us: &[u32]) -> [f64; 4] {
    let mut sorted = latencies_us.to_vec();
    sorted.sort_unstable();
    [0.5, 0.9, 0.99, 0.999].map(|p| f64::from(quantile(&sorted, p)) / 1e3)
}

/// A 64-bit mix (SplitMix64) to derive independent seeds.
pub fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
