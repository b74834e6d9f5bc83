//! [`StatsConfig`] and the error every config type of `stats` and
//! `health` reports from its `validate()`.

use std::fmt;
use std::time::Duration;

/// A setting that cannot work, named by its field.
///
/// Returned by the `validate()` of [`StatsConfig`],
/// [`OutlierDetection`](crate::health::OutlierDetection) and
/// [`ActiveHealthCheck`](crate::health::ActiveHealthCheck); the builder
/// calls it once and refuses the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    field: &'static str,
    reason: &'static str,
}

impl InvalidConfig {
    pub(crate) const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }

    /// The field, as `Type::field` (`"OutlierDetection::interval"`).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why the value cannot work.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidConfig {}

/// `Err` naming `field` unless `ok`.
pub(crate) fn check(
    ok: bool,
    field: &'static str,
    reason: &'static str,
) -> Result<(), InvalidConfig> {
    if ok {
        Ok(())
    } else {
        Err(InvalidConfig::new(field, reason))
    }
}

/// Tuning of the statistics and the circuit breaker.
///
/// Set the public fields on [`StatsConfig::default`]; the builder calls
/// [`StatsConfig::validate`] once.
///
/// ```
/// use std::time::Duration;
/// use tower_ribbon::stats::StatsConfig;
///
/// let mut config = StatsConfig::default();
/// config.breaker_threshold = 5;
/// config.breaker_max = Duration::from_secs(60);
/// assert!(config.validate().is_ok());
/// config.breaker_threshold = 0;
/// assert_eq!(config.validate().unwrap_err().field(), "StatsConfig::breaker_threshold");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsConfig {
    /// Decay τ of the latency EWMA, the peak EWMA and the success rate;
    /// at least 1 ms. Default 10 s (Finagle).
    pub ewma_decay: Duration,
    /// Decay τ of the mean response time used by weighted response time;
    /// at least 1 ms. Default 30 s.
    pub mean_decay: Duration,
    /// Least latency a failed attempt is recorded as. Default 1 s.
    pub failure_penalty: Duration,
    /// Successive connection-class failures that trip the breaker; at
    /// least 1. Ribbon key `connectionFailureCountThreshold`. Default 3.
    pub breaker_threshold: u32,
    /// Blackout after the threshold is reached, doubled per further
    /// failure. Ribbon key `circuitTripTimeoutFactorSeconds` (which takes
    /// 1 to 86 400 s). Default 10 s. Zero is taken (from code only): no
    /// blackout, but a tripped instance is half-open at once, so it takes
    /// one request at a time until a response closes the breaker; it does
    /// not turn the breaker off as a zero factor does in Ribbon (raise
    /// `breaker_threshold` for that).
    pub breaker_base: Duration,
    /// Longest blackout; at least `breaker_base`. Ribbon key
    /// `circuitTripMaxTimeoutSeconds`. Default 30 s.
    pub breaker_max: Duration,
    /// How often at most a [`Declined`](super::Outcome::Declined) attempt
    /// of one instance counts, as a connect failure, and how long after
    /// one a [`ConnectionLost`](super::Outcome::ConnectionLost) attempt of
    /// that instance counts not at all (its `GOAWAY` closed the connection
    /// for this client's traffic); at least 1 ms. Default 1 s. One
    /// connection's `GOAWAY` fails every stream above its last id at once,
    /// and a caller's burst of oversized requests is one burst, so either
    /// counts once; a server that declines everything still trips its
    /// breaker (three in a row, no response between) within a few seconds
    /// instead of never.
    pub declined_counted_every: Duration,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            ewma_decay: Duration::from_secs(10),
            mean_decay: Duration::from_secs(30),
            failure_penalty: Duration::from_secs(1),
            breaker_threshold: 3,
            breaker_base: Duration::from_secs(10),
            breaker_max: Duration::from_secs(30),
            declined_counted_every: Duration::from_secs(1),
        }
    }
}

impl StatsConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`InvalidConfig`] naming the first field out of range: a decay or
    /// `declined_counted_every` under 1 ms, a breaker threshold of 0, or
    /// `breaker_max < breaker_base`.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let ms = Duration::from_millis(1);
        check(
            self.ewma_decay >= ms,
            "StatsConfig::ewma_decay",
            "must be at least 1 ms",
        )?;
        check(
            self.mean_decay >= ms,
            "StatsConfig::mean_decay",
            "must be at least 1 ms",
        )?;
        check(
            self.declined_counted_every >= ms,
            "StatsConfig::declined_counted_every",
            "must be at least 1 ms",
        )?;
        check(
            self.breaker_threshold >= 1,
            "StatsConfig::breaker_threshold",
            "must be at least 1",
        )?;
        check(
            self.breaker_max >= self.breaker_base,
            "StatsConfig::breaker_max",
            "must be at least breaker_base",
        )
    }

    /// The blackout after `failures` successive connection failures, or
    /// `None` below the threshold: `min(2^(failures - threshold) × base, max)`.
    pub fn blackout(&self, failures: u32) -> Option<Duration> {
        let threshold = self.breaker_threshold.max(1);
        if failures < threshold {
            return None;
        }
        let exp = (failures - threshold).min(20);
        Some(
            self.breaker_base
                .saturating_mul(1 << exp)
                .min(self.breaker_max),
        )
    }
}
