//! The retry budget's settings (Finagle's `RetryBudget`, tower's
//! [`TpsBudget`](tower::retry::budget::TpsBudget)).

use std::time::Duration;

use crate::error::BuildError;

/// The retry budget's settings (Finagle's `RetryBudget`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudgetConfig {
    ttl: Duration,
    min_per_sec: u32,
    ratio: f32,
    enabled: bool,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            ratio: 0.2,
            enabled: true,
        }
    }
}

impl RetryBudgetConfig {
    /// No budget: every retry the policy allows is made. Use with care.
    pub fn unlimited() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Window over which requests are counted, 1 s to 60 s. Default 10 s.
    ///
    /// A request counts once its first attempt is sent to an instance: one
    /// that reached none (its inner service not ready or failing its
    /// readiness, or refusing the call as the caller's
    /// [`RequestError`](crate::stats::Outcome::RequestError), as tower's
    /// `LoadShed` inside the balancer does; no instance to pick; the caller
    /// dropping it while it waited) put no load on the service, so it
    /// allows no retry. One dropped while its attempt is in flight counts.
    /// A retry refused so gives its withdrawal back.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Retries allowed per second regardless of traffic, on average: a
    /// reserve of `min_per_sec × ttl` retries (tower's and Finagle's
    /// `TpsBudget` accounting), each spent retry coming back `ttl` later,
    /// so the whole reserve may go in one burst (100 retries at once with
    /// the defaults, on a service with no traffic; helper 204). Default 10.
    pub fn min_per_sec(mut self, n: u32) -> Self {
        self.min_per_sec = n;
        self
    }

    /// Retries allowed per request in the window, 0.0 to 1000.0, counted
    /// to a millionth (0.7: 7 retries per 10 requests). Default 0.2 (20 %).
    pub fn ratio(mut self, ratio: f32) -> Self {
        self.ratio = ratio;
        self
    }

    pub(super) fn validate(&self) -> Result<(), BuildError> {
        let invalid = |reason: &'static str| BuildError::invalid("retry budget", reason);
        if !self.enabled {
            return Ok(());
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(60) {
            return Err(invalid("ttl must be between 1 s and 60 s"));
        }
        if !(0.0..=1000.0).contains(&self.ratio) {
            return Err(invalid("ratio must be between 0.0 and 1000.0"));
        }
        if self.min_per_sec >= i32::MAX as u32 {
            return Err(invalid("min_per_sec is too large"));
        }
        Ok(())
    }

    /// The budget, or `None` when unlimited.
    pub(crate) fn build(&self) -> Result<Option<super::tps::TpsBudget>, BuildError> {
        self.validate()?;
        Ok(self
            .enabled
            .then(|| super::tps::TpsBudget::new(self.ttl, self.min_per_sec, self.ratio)))
    }
}
