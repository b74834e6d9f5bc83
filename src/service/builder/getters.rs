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

    #[cfg(feature = "config")]
    /// A new rule as the builder makes one now (its `rule` factory).
    pub(crate) fn rule_factory(
        &self,
    ) -> std::sync::Arc<dyn Fn() -> std::sync::Arc<dyn crate::rule::Rule> + Send + Sync> {
        std::sync::Arc::clone(&self.make_rule)
    }

    #[cfg(feature = "config")]
    /// The stats and breaker settings set (or defaulted), likewise.
    pub(crate) fn stats_set(&self) -> &crate::stats::StatsConfig {
        &self.stats
    }
}
