//! Averages under steady traffic against the packed encoding's quantum
//! (helper 130, stop 49): at a record per millisecond each step of a
//! decaying average (a weight of about 10⁻⁴ at τ = 10 s) was smaller than
//! half the 24-bit encoding's quantum whenever the average was within
//! about 4 % of its samples, and rounded to nearest it was lost: a
//! success rate stuck at 0.962 under 200 s of successes (the same as an
//! instance failing 5 %), and a mean of 10 ms stayed at 10 ms after 200 s
//! of 11.5 ms answers. Updates now round stochastically (`stats::decaying`).

use std::time::Duration;

use tokio::time::Instant;
use tower_ribbon::stats::{EndpointStats, Outcome};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One attempt of `latency_ms` finishing at `t0 + finish_ms`.
fn attempt(s: &EndpointStats, t0: Instant, outcome: Outcome, latency_ms: u64, finish_ms: u64) {
    let end = t0 + ms(finish_ms);
    let start = end.checked_sub(ms(latency_ms)).unwrap_or(end);
    s.start_at(start).finish_at(outcome, end);
}

/// `n` records one every `spacing_us`, from `t0 + from_us`: `fail(i)` ones
/// are 500s, all take `latency_us`. Returns the time after the last.
fn steady(
    s: &EndpointStats,
    t0: Instant,
    from_us: u64,
    n: u64,
    spacing_us: u64,
    latency_us: u64,
    fail: impl Fn(u64) -> bool,
) -> u64 {
    let mut t = from_us;
    for i in 0..n {
        t += spacing_us;
        let end = t0 + Duration::from_micros(t);
        let o = if fail(i) {
            Outcome::FailureStatus(500)
        } else {
            Outcome::Success
        };
        s.start_at(end - Duration::from_micros(latency_us))
            .finish_at(o, end);
    }
    t
}

/// An instance whose first answer was a 500, then 200 s of successes at
/// 1 000 per second (one per ms): its success rate should be 1.0 to within
/// 1e-9 (1 − e^−20). It stops at 0.96215 after about 33 s and never moves
/// again: each success should add (1 − v)·(1 − e^(−1 ms / 10 s)) ≈
/// (1 − v)·1e-4, and below 1 − v = 0.038 that is under half the encoding's
/// quantum near 1 (2^−17 ≈ 7.6e-6), so `Decaying::observe` rounds it to
/// no change. The same instance failing 5 % of its requests reads 0.96205
/// too: at this rate the success rate cannot tell 0 % failures from 5 %.
#[tokio::test(start_paused = true)]
async fn the_success_rate_recovers_under_steady_traffic() {
    let t0 = Instant::now();
    let healthy = EndpointStats::new();
    attempt(&healthy, t0, Outcome::FailureStatus(500), 10, 1);
    steady(&healthy, t0, 1_000, 200_000, 1_000, 10_000, |_| false);
    let failing = EndpointStats::new();
    attempt(&failing, t0, Outcome::FailureStatus(500), 10, 1);
    steady(&failing, t0, 1_000, 200_000, 1_000, 10_000, |i| i % 20 == 0);
    let (h, f) = (
        healthy.success_rate().unwrap(),
        failing.success_rate().unwrap(),
    );
    // Measured before the fix: healthy 0.96215, failing (5 %) 0.96215
    // (both stuck).
    assert!(
        h > 0.99 && h - f > 0.02,
        "after 200 s at 1 000 rps: all successes {h}, 5 % failures {f}"
    );
}

/// Weighted response time reads the decaying mean (τ = 30 s). An instance
/// answering in 10 ms for 100 s, then in 11.5 ms for 200 s, at one response
/// per ms: the mean should reach 11.5 ms (within 1e-3 after 200 s = 6.7 τ).
/// Each step should move it by 1.5 ms × 3.3e-5 = 0.05 µs, under half the
/// quantum at 10 ms (0.0625 µs), so it stays at exactly 10 ms: at 1 000
/// rps a shift of up to 1.87 ms around 10 ms (or 15 ms around 100 ms)
/// never reaches the weights.
#[tokio::test(start_paused = true)]
async fn the_mean_response_time_follows_a_latency_shift_under_steady_traffic() {
    let t0 = Instant::now();
    let s = EndpointStats::new();
    let t = steady(&s, t0, 0, 100_000, 1_000, 10_000, |_| false);
    steady(&s, t0, t, 200_000, 1_000, 11_500, |_| false);
    let mean = s.mean_response_time().unwrap();
    // Measured before the fix: 10 ms (and the EWMA, τ = 10 s, 10.88 ms).
    assert!(
        mean >= Duration::from_micros(11_400),
        "mean {mean:?}, ewma {:?} after 200 s of 11.5 ms answers",
        s.ewma()
    );
}
