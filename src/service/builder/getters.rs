//! What a [`Builder`] holds, read back.

use std::time::Duration;

use super::Builder;

impl Builder {
    /// The connect timeout set (or defaulted) on this builder.
    pub fn get_connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// The per-try (read) timeout set (or defaulted) on this builder.
    pub fn get_read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    #[cfg(feature = "config")]
    /// The refresh set (or defaulted), for a configuration file's keys to
    /// change one setting of.
    pub(crate) fn refresh_set(&self) -> &crate::discovery::RefreshConfig {
        &self.refresh
    }

    /// The rule factory before any configuration file wrapped it (the one
    /// set in code, or the default), so a second file's wrapper keys wrap
    /// that, not the first file's wrappers again (helper 205: slow start
    /// applied twice gave a new instance factor 0.01 for 0.1).
    #[cfg(feature = "config")]
    pub(crate) fn rule_factory(&self) -> super::MakeRule {
        std::sync::Arc::clone(self.rule_before_config.as_ref().unwrap_or(&self.make_rule))
    }

    /// `make` as the rule, wrapping `base` (from [`Self::rule_factory`]).
    #[cfg(feature = "config")]
    pub(crate) fn rule_over_base<R, F>(mut self, base: super::MakeRule, make: F) -> Self
    where
        R: crate::rule::Rule,
        F: Fn() -> R + Send + Sync + 'static,
    {
        self = self.rule(make);
        self.rule_before_config = Some(base);
        self
    }

    #[cfg(feature = "config")]
    /// The active health check set on this builder, if any.
    #[cfg(feature = "hyper-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "hyper-util")))]
    pub fn get_active_health_check(&self) -> Option<&crate::health::ActiveHealthCheck> {
        self.active_health.as_ref()
    }

    /// The retry policy set (or defaulted) on this builder.
    pub fn get_retry_policy(&self) -> &crate::retry::RetryPolicy {
        &self.retry
    }

    /// The stats and breaker settings set (or defaulted), likewise.
    #[cfg(feature = "config")]
    pub(crate) fn stats_set(&self) -> &crate::stats::StatsConfig {
        &self.stats
    }
}
