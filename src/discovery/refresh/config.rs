//! [`RefreshConfig`]: how often a service's list is fetched, with what
//! jitter, timeout and first-fetch wait.

use std::time::Duration;

use crate::error::BuildError;
use crate::rng::AtomicRng;

/// How the instance list of each service is refreshed.
///
/// Plain data: set the public fields on [`RefreshConfig::default`]; the
/// values are checked once, when the balancer is built
/// ([`BuildError::Invalid`] naming the field).
///
/// ```
/// use std::time::Duration;
/// use tower_ribbon::discovery::RefreshConfig;
///
/// let mut config = RefreshConfig::default();
/// config.interval = Duration::from_secs(5);
/// config.jitter = 0.0;
/// config.first_fetch_wait = Duration::from_secs(2);
/// assert!(config.validate().is_ok());
/// config.jitter = 0.9;
/// assert!(config.validate().is_err());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RefreshConfig {
    /// Time between two fetches of one service. Ribbon key
    /// `ServerListRefreshInterval`. At least 1 ms. Default is 30 s.
    pub interval: Duration,
    /// Fraction of the interval by which each wait is randomly lengthened
    /// or shortened, in `0.0..=0.5`. Default is 0.1 (±10 %).
    pub jitter: f64,
    /// Bound on one fetch, whatever the source does inside; a fetch that
    /// takes longer counts as a failed refresh ([`DiscoveryError::Timeout`](crate::error::DiscoveryError::Timeout)).
    /// A safety net for sources without timeouts of their own: keep it
    /// above the source's worst case (for Eureka, servers × request
    /// timeout, so failover can reach the last server). More than zero.
    /// Default is 60 s.
    pub fetch_timeout: Duration,
    /// How long a request may wait for the first fetch of its service to
    /// finish before failing with a discovery timeout
    /// ([`Error`](crate::Error)). Zero means "never wait". Default is 5 s.
    pub first_fetch_wait: Duration,
    /// What to do when a fetch succeeds but lists no instance at all while
    /// the current list is not empty. `false` (Ribbon's behaviour): apply
    /// the empty list; requests fail with "no instances" until a later
    /// fetch brings instances back. `true`: keep the current list and count
    /// the fetch as failed, guarding against a registry that suddenly
    /// forgets everything. A fetch that lists instances, none of them `UP`
    /// (all OUT_OF_SERVICE, DOWN or STARTING), is applied either way: the
    /// registry has not forgotten them, they are being drained, and a
    /// draining instance never gets traffic. Default is `false`.
    ///
    /// With Eureka, consider `true`: a server restarted on its own (or a
    /// cluster whose peers all restarted before syncing) lists nothing
    /// until the instances renew and register again, up to one renewal
    /// interval (30 s with Spring's defaults) plus this refresh's
    /// interval, and every request fails meanwhile although every instance
    /// is alive. The Eureka sources ask every server before they take an
    /// answer that lists nothing, and fail the fetch (keeping the list)
    /// while one of the servers cannot be asked, for up to their
    /// `absence_hold` (90 s); this flag covers the case where every server
    /// answers so.
    pub keep_last_on_empty: bool,
    /// Seeds the jitter, for repeatable tests. Default `None`: seeded from
    /// entropy.
    pub seed: Option<u64>,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            jitter: 0.1,
            fetch_timeout: Duration::from_secs(60),
            first_fetch_wait: Duration::from_secs(5),
            keep_last_on_empty: false,
            seed: None,
        }
    }
}

impl RefreshConfig {
    /// Checks every field (the balancer's builder calls this once).
    ///
    /// # Errors
    /// [`BuildError::Invalid`] naming the first field out of range:
    /// `refresh.interval` under 1 ms, `refresh.jitter` outside
    /// `0.0..=0.5` (or not finite), `refresh.fetch_timeout` zero.
    pub fn validate(&self) -> Result<(), BuildError> {
        let invalid =
            |key: &'static str, reason: &'static str| Err(BuildError::invalid(key, reason));
        if self.interval < Duration::from_millis(1) {
            return invalid("refresh.interval", "must be at least 1 ms");
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            return invalid("refresh.jitter", "must be a fraction in 0.0..=0.5");
        }
        if self.fetch_timeout.is_zero() {
            return invalid("refresh.fetch_timeout", "must be more than zero");
        }
        Ok(())
    }

    pub(super) fn next_delay(
        &self,
        rng: &AtomicRng,
        ok: bool,
        failures_before_first_success: u32,
    ) -> Duration {
        let interval = self.interval.max(Duration::from_millis(1));
        if !ok && failures_before_first_success > 0 {
            // Never had a list: retry sooner (1 s, 2 s, 4 s, ... up to the interval).
            let backoff = Duration::from_secs(1 << (failures_before_first_success - 1).min(16));
            return backoff.min(interval);
        }
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 0.5)
        } else {
            0.0
        };
        if jitter == 0.0 {
            return interval;
        }
        let factor = 1.0 + jitter * (2.0 * rng.unit_f64() - 1.0);
        Duration::try_from_secs_f64(interval.as_secs_f64() * factor).unwrap_or(interval)
    }
}
