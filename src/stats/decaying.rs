//! Decaying averages packed in one atomic word, so value and time always
//! match and the request path never locks.
//!
//! **Layout.** The high 24 bits hold the value, the low 40 bits the time of
//! the last observation in milliseconds since the stats were created.
//! - The value is a non-negative `f32` with its sign bit dropped and its
//!   mantissa cut to 16 bits (a quantum of at most 2⁻¹⁶ ≈ 1.5·10⁻⁵ of
//!   the value: a latency of 100 ms is kept to within 2 µs). An update
//!   rounds stochastically: up with the probability the dropped bits make
//!   of a quantum, so the kept value is the computed one on average, and
//!   steps smaller than a quantum still move it. Rounded to nearest, they
//!   were lost: at a record per millisecond (a weight of 10⁻⁴ at τ =
//!   10 s) any average within about 4 % of its samples stayed put, so a
//!   success rate stuck at 0.962 under 200 s of successes, and a mean of
//!   10 ms did not follow a move to 11.5 ms (helper 130). The rounding's
//!   draw is a hash of the old word, the sample and the time: repeatable.
//! - 40 bits of milliseconds last 34.8 years. A later time saturates at
//!   the largest one: the clock then stops and values stop decaying, but
//!   nothing wraps. (The 32-bit field this replaces wrapped after 49.7
//!   days, and any elapsed time was computed with wrapping subtraction.)
//!
//! **Time runs forward only.** The elapsed time of an observation or a
//! read is `now − last`, saturating at zero: a timestamp older than the
//! stored one (a record or a pick that raced with a newer one) counts as
//! no time elapsed, and the stored time never moves backwards. This is
//! Finagle's `PeakEwma` rule (`td = max(now − stamp, 0)`); without it an
//! observation 2 ms out of order read as 49 days and threw the history
//! away.
//!
//! **Update.** With weight `w = exp(−Δt/τ)`, an observation `x` moves the
//! value `v` to `v·w + x·(1 − w)`; in peak mode a larger `x` replaces `v`
//! at once (Finagle / Linkerd peak EWMA). Consequence of the weight: an
//! observation with `Δt = 0` (same millisecond, or out of order) leaves an
//! EWMA unchanged, except that a peak still rises.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the time field.
const TIME_BITS: u32 = 40;
/// Largest time the field holds, in ms (34.8 years).
pub(crate) const MAX_MS: u64 = (1 << TIME_BITS) - 1;
/// Largest encoded value: the biggest finite `f32`, 24 bits.
const MAX_VALUE_BITS: u32 = 0x00FE_FFFF;
/// Never produced by [`pack`]: its value bits would be a NaN.
const EMPTY: u64 = u64::MAX;

/// Encodes a value in 24 bits (see the module doc), rounding to nearest.
/// Negative, NaN and infinite inputs are clamped to `0` and `f32::MAX`.
fn encode(value: f64) -> u64 {
    encode_with(value, 0x40)
}

/// Encodes a value in 24 bits, adding `r` (below 128) to the 7 dropped
/// mantissa bits before cutting them: 64 rounds to nearest; a uniform
/// draw rounds up with the probability the dropped bits make of a
/// quantum (a carry into the exponent is the correct rounding).
fn encode_with(value: f64, r: u32) -> u64 {
    let v = if value > 0.0 {
        value.min(f64::from(f32::MAX)) as f32
    } else {
        0.0
    };
    let bits = (v.to_bits() + (r & 0x7f)) >> 7;
    u64::from(bits.min(MAX_VALUE_BITS))
}

fn decode(bits: u64) -> f64 {
    f64::from(f32::from_bits(((bits >> TIME_BITS) as u32) << 7))
}

fn pack(value: f64, at_ms: u64) -> u64 {
    (encode(value) << TIME_BITS) | at_ms.min(MAX_MS)
}

/// [`pack`] rounding stochastically, the draw taken from `noise`.
fn pack_dithered(value: f64, at_ms: u64, noise: u64) -> u64 {
    (encode_with(value, (noise >> 57) as u32) << TIME_BITS) | at_ms.min(MAX_MS)
}

fn unpack(bits: u64) -> (f64, u64) {
    (decode(bits), bits & MAX_MS)
}

/// `exp(−Δt/τ)` for `Δt = now − at` saturating at zero.
#[inline]
pub(crate) fn weight(now_ms: u64, at_ms: u64, tau_ms: f64) -> f64 {
    (-(now_ms.saturating_sub(at_ms) as f64) / tau_ms).exp()
}

impl super::EndpointStats {
    /// `us` decayed toward zero for the time since these stats were
    /// created (τ = `ewma_decay`): a starting estimate for an endpoint
    /// with no sample, which tower's `PeakEwma` decays from its creation.
    #[inline]
    pub(crate) fn decayed_since_seen(&self, us: f64, now: tokio::time::Instant) -> f64 {
        us * weight(self.ms_at(now), 0, Self::tau_ms(self.config.ewma_decay))
    }

    /// The peak EWMA in µs as of `now`, decayed toward `us` (not toward
    /// zero) for the time since its last observation: for an endpoint with
    /// requests in flight, whose streams give no sample until they end, so
    /// an old sample fades into the default rather than into "instant".
    /// `None` before any observation.
    #[inline]
    pub(crate) fn peak_toward_us(&self, us: f64, now: tokio::time::Instant) -> Option<f64> {
        let (value, at) = self.peak_ewma_us.load()?;
        let w = weight(self.ms_at(now), at, Self::tau_ms(self.config.ewma_decay));
        Some(value * w + us * (1.0 - w))
    }

    /// `us` decayed toward zero for the time since the peak EWMA's last
    /// observation (a dropped request's wait, for an endpoint with no
    /// sample), or since creation before any.
    #[inline]
    pub(crate) fn decayed_since_peak(&self, us: f64, now: tokio::time::Instant) -> f64 {
        let at = self.peak_ewma_us.load().map_or(0, |(_, at)| at);
        us * weight(self.ms_at(now), at, Self::tau_ms(self.config.ewma_decay))
    }
}

/// `us` microseconds; beyond `Duration::MAX` saturates (it read as zero,
/// the fastest latency), a NaN or negative value is zero.
pub(crate) fn us_to_duration(us: f64) -> std::time::Duration {
    use std::time::Duration;
    Duration::try_from_secs_f64(us / 1e6).unwrap_or(if us > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

/// A decaying average packed in one `AtomicU64`, updated with a CAS loop.
pub(crate) struct Decaying(AtomicU64);

impl Decaying {
    pub(crate) const fn new() -> Self {
        Self(AtomicU64::new(EMPTY))
    }

    /// Adds observation `x` at `now_ms` with decay `tau_ms`. With `peak`,
    /// a larger observation replaces the value at once.
    pub(crate) fn observe(&self, x: f64, now_ms: u64, tau_ms: f64, peak: bool) {
        let now_ms = now_ms.min(MAX_MS);
        let mut old = self.0.load(Ordering::Relaxed);
        loop {
            let new = if old == EMPTY {
                pack(x, now_ms)
            } else {
                let (v, at) = unpack(old);
                if peak && x > v {
                    pack(x, at.max(now_ms))
                } else if now_ms <= at {
                    // No time elapsed: weight 1 keeps the value (and the
                    // time) as they are, without computing it.
                    return;
                } else {
                    let w = weight(now_ms, at, tau_ms);
                    // The time spread over the word first: XORed as it is
                    // into the old word, whose time is the last
                    // millisecond, it cancelled (`(t − 1) ^ t` takes few
                    // values) and the same draw came back at every record.
                    let spread = now_ms.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let noise = crate::hash::mix64(old ^ spread ^ x.to_bits().rotate_left(23));
                    pack_dithered(v * w + x * (1.0 - w), now_ms, noise)
                }
            };
            if new == old {
                return;
            }
            match self
                .0
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => old = seen,
            }
        }
    }

    /// [`observe`](Self::observe) (not in peak mode) with `tau_ms`, or,
    /// for a first answer over waits (`first`: the longest recent wait,
    /// see `EndpointStats::first_answer_bound`), sets the value to the
    /// longer of the answer and that wait.
    pub(crate) fn observe_mean(&self, x: f64, now_ms: u64, (tau_ms, first): (f64, Option<f64>)) {
        match first {
            Some(bound) => self.set(x.max(bound), now_ms),
            None => self.observe(x, now_ms, tau_ms, false),
        }
    }

    /// Sets the value to `x` at `now_ms` (the stored time does not move
    /// back).
    fn set(&self, x: f64, now_ms: u64) {
        let now_ms = now_ms.min(MAX_MS);
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                let at = if old == EMPTY { now_ms } else { unpack(old).1 };
                Some(pack(x, at.max(now_ms)))
            });
    }

    /// The value and the time of the last observation, or `None` before
    /// the first observation.
    #[inline]
    pub(crate) fn load(&self) -> Option<(f64, u64)> {
        match self.0.load(Ordering::Relaxed) {
            EMPTY => None,
            bits => Some(unpack(bits)),
        }
    }

    /// The value, or `None` before the first observation.
    pub(crate) fn get(&self) -> Option<f64> {
        self.load().map(|(v, _)| v)
    }

    /// The value decayed toward zero for the time since the last
    /// observation (tower's peak EWMA does the same, so an idle instance
    /// is tried again). An older `now_ms` decays nothing.
    #[inline]
    pub(crate) fn get_decayed(&self, now_ms: u64, tau_ms: f64) -> Option<f64> {
        self.load()
            .map(|(v, at)| v * weight(now_ms.min(MAX_MS), at, tau_ms))
    }

    /// The value drifted toward 1.0 for the time since the last
    /// observation: `1 − (1 − v)·w` (a success rate forgiving an idle
    /// instance). An older `now_ms` drifts nothing.
    #[inline]
    pub(crate) fn get_recovered(&self, now_ms: u64, tau_ms: f64) -> Option<f64> {
        self.load()
            .map(|(v, at)| 1.0 - (1.0 - v) * weight(now_ms.min(MAX_MS), at, tau_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_values_to_7_6_ppm() {
        for x in [0.0, 1.0, 0.9998, 0.0002, 20_000.0, 36_787.944, 1e6, 3.3e9] {
            let back = decode(pack(x, 5));
            assert!((back - x).abs() <= x * 7.7e-6, "{x} -> {back}");
        }
        assert_eq!(decode(pack(100_000.0, 0)), 100_000.0);
        assert_eq!(decode(pack(-5.0, 0)), 0.0);
        assert_eq!(decode(pack(f64::NAN, 0)), 0.0);
        let top = decode(pack(f64::INFINITY, 0));
        assert!(top.is_finite() && top > 3.4e38, "{top}");
        assert_ne!(pack(f64::INFINITY, u64::MAX), EMPTY);
    }

    #[test]
    fn an_older_timestamp_is_no_time_and_never_moves_the_clock_back() {
        let d = Decaying::new();
        d.observe(20_000.0, 1_000, 10_000.0, false);
        d.observe(2_000_000.0, 998, 10_000.0, false);
        // Out of order by 2 ms: weight 1, the EWMA keeps its value.
        assert_eq!(d.load(), Some((20_000.0, 1_000)));
        // A read from the past decays nothing.
        assert_eq!(d.get_decayed(0, 10_000.0), Some(20_000.0));
        // Peak mode still rises at once, and keeps the newer time.
        d.observe(2_000_000.0, 998, 10_000.0, true);
        assert_eq!(d.load(), Some((2_000_000.0, 1_000)));
    }

    #[test]
    fn the_clock_passes_49_7_days_without_wrapping() {
        let tau = 10_000.0;
        let d = Decaying::new();
        let t = u64::from(u32::MAX) - 5; // where the old 32-bit field wrapped
        d.observe(100_000.0, t, tau, false);
        let after = d.get_decayed(t + 10_000, tau).unwrap();
        assert!(
            (after - 100_000.0 / std::f64::consts::E).abs() < 0.5,
            "{after}"
        );
        d.observe(0.0, t + 10, tau, false);
        assert_eq!(d.load().unwrap().1, t + 10);
    }

    #[test]
    fn the_clock_saturates_after_34_years() {
        let d = Decaying::new();
        d.observe(5.0, MAX_MS - 1, 1.0, false);
        d.observe(7.0, u64::MAX, 1.0, false);
        let (v, at) = d.load().unwrap();
        assert_eq!(at, MAX_MS);
        let w = (-1f64).exp();
        assert!((v - (5.0 * w + 7.0 * (1.0 - w))).abs() < 1e-4, "{v}");
        // Stopped: no further decay, no wrap.
        assert!((d.get_decayed(u64::MAX, 1.0).unwrap() - v).abs() < 1e-12);
    }

    /// Steps smaller than a quantum still move the value, on average by
    /// their size: 20 000 successes a millisecond apart (τ = 10 s, each a
    /// step of about 4·10⁻⁶ where the quantum near 1 is 7.6·10⁻⁶) take a
    /// success rate of 0.96 to 1 − 0.04·e⁻² = 0.99459. Rounded to nearest,
    /// it stayed at 0.96 (helper 130).
    #[test]
    fn steps_below_a_quantum_move_the_value_on_average() {
        let d = Decaying::new();
        d.observe(0.96, 1, 10_000.0, false);
        for t in 2..=20_001u64 {
            d.observe(1.0, t, 10_000.0, false);
        }
        let v = d.get().unwrap();
        let want = 1.0 - 0.04 * (-2f64).exp();
        assert!((v - want).abs() < 2e-4, "{v} against {want}");
        // Repeatable: the rounding's draws are a hash of the inputs.
        let again = Decaying::new();
        again.observe(0.96, 1, 10_000.0, false);
        for t in 2..=20_001u64 {
            again.observe(1.0, t, 10_000.0, false);
        }
        assert_eq!(again.get(), Some(v));
    }
}
