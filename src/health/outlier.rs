//! Outlier ejection (passive health checking), after Envoy's outlier
//! detection.
//!
//! - **Triggers**, inline on every finished attempt: `consecutive_5xx`
//!   (default 5) successive 5xx or connection-level failures, or
//!   `consecutive_gateway_failure` (default 5) successive 502/503/504 or
//!   connection-level failures. Any other response resets a counter.
//! - **Ejection time** `min(base_ejection_time × m, max_ejection_time)`
//!   (defaults 30 s and 300 s), `m` the ejection multiplier: one more than
//!   before at each ejection (stopping once the time reaches the max), and
//!   **one less per full `interval`** (default 10 s) the host stays
//!   un-ejected, so a host ejected once long ago is forgiven (Envoy lowers
//!   it the same way at each detection sweep; here the decrement is counted
//!   from the end of the last ejection, without a sweep task).
//! - **Cap**: never more than `max_ejection_percent` (default 50 %) of the
//!   instances are ejected at once, but at least one may be (Envoy's
//!   default is 10 % with `always_eject_one_host` off; this crate serves
//!   smaller fleets).
//! - An ejected instance comes back by itself when its time ends; the
//!   [panic threshold](OutlierDetection::panic_threshold_percent) still
//!   applies.
//!
//! Sources: Envoy `config/cluster/v3/outlier_detection.proto` and the
//! architecture overview "Outlier detection".

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::discovery::Snapshot;
use crate::instance::Endpoint;
use crate::stats::{EjectionTimes, InvalidConfig, check};

/// Outlier ejection and panic-threshold settings (Envoy's
/// `outlier_detection` and `healthy_panic_threshold`).
///
/// Set the public fields on [`OutlierDetection::default`]; the builder
/// calls [`OutlierDetection::validate`] once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutlierDetection {
    /// Whether ejection runs at all (the breaker and the panic threshold
    /// apply either way). Default `true`.
    pub enabled: bool,
    /// Successive 5xx or connection-level failures that eject; 0 turns this
    /// trigger off. Envoy `consecutive_5xx`. Default 5.
    pub consecutive_5xx: u32,
    /// Successive 502/503/504 or connection-level failures that eject; 0
    /// turns this trigger off. Envoy `consecutive_gateway_failure`.
    /// Default 5.
    pub consecutive_gateway_failure: u32,
    /// Each full interval an instance stays un-ejected lowers its ejection
    /// multiplier by one; at least 1 ms. Envoy `interval`. Default 10 s.
    pub interval: Duration,
    /// Ejection time per unit of the multiplier; at least 1 ms. Envoy
    /// `base_ejection_time`. Default 30 s.
    pub base_ejection_time: Duration,
    /// Longest ejection; at least `base_ejection_time`. Envoy
    /// `max_ejection_time`. Default 300 s.
    pub max_ejection_time: Duration,
    /// Most instances ejected at once, in percent, `0..=100` (at least one
    /// is always allowed). Envoy `max_ejection_percent`. Default 50.
    pub max_ejection_percent: u32,
    /// Below this share of healthy instances, in percent, `0..=100`,
    /// health is ignored; 0 disables panic mode. Envoy
    /// `healthy_panic_threshold`. Default 50. Instances waiting for their
    /// first active probe are out of the share (as Envoy's
    /// `ignore_new_hosts_until_first_hc`), so a scale-up does not put the
    /// service in panic; when only they and unhealthy ones are listed,
    /// panic mode spreads over all.
    pub panic_threshold_percent: u32,
    /// Whether a passing active health probe sent after an ejection began
    /// ends it at once (the multiplier is kept). Envoy
    /// `successful_active_health_check_uneject_host`. Default `true`, as
    /// Envoy's: an instance ejected for a burst of 5xx that passed 58
    /// probes meanwhile stayed out for its whole 3 s. With a health
    /// endpoint that passes while requests fail (a shallow `/health`),
    /// each ejection lasts only until the next probe: turn this off then.
    /// Without active checks it does nothing.
    pub successful_active_health_check_uneject_host: bool,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
            panic_threshold_percent: 50,
            successful_active_health_check_uneject_host: true,
        }
    }
}

impl OutlierDetection {
    /// No ejection (the breaker and the panic threshold still apply).
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`InvalidConfig`] naming the first field out of range (see each
    /// field's doc).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let ms = Duration::from_millis(1);
        check(
            self.interval >= ms,
            "OutlierDetection::interval",
            "must be at least 1 ms",
        )?;
        check(
            self.base_ejection_time >= ms,
            "OutlierDetection::base_ejection_time",
            "must be at least 1 ms",
        )?;
        check(
            self.max_ejection_time >= self.base_ejection_time,
            "OutlierDetection::max_ejection_time",
            "must be at least base_ejection_time",
        )?;
        check(
            self.max_ejection_percent <= 100,
            "OutlierDetection::max_ejection_percent",
            "must be at most 100",
        )?;
        check(
            self.panic_threshold_percent <= 100,
            "OutlierDetection::panic_threshold_percent",
            "must be at most 100",
        )
    }

    fn times(&self) -> EjectionTimes {
        EjectionTimes {
            base: self.base_ejection_time,
            max: self.max_ejection_time,
            interval: self.interval,
        }
    }

    /// Ejects `endpoint` if its consecutive errors reached a trigger and
    /// the share of ejected instances allows it. Returns the ejection time.
    pub(crate) fn observe(
        &self,
        snapshot: &Snapshot,
        endpoint: &Endpoint,
        now: Instant,
    ) -> Option<Duration> {
        let stats = endpoint.stats();
        let hit = |limit: u32, count: u32| limit > 0 && count >= limit;
        if !self.enabled
            || !(hit(self.consecutive_5xx, stats.consecutive_server_errors())
                || hit(
                    self.consecutive_gateway_failure,
                    stats.consecutive_gateway_errors(),
                ))
            || !snapshot.contains(endpoint)
        {
            return None;
        }
        // Whether this endpoint is ejected already is decided by `eject`
        // at the endpoint's own clock, so a late record sees it right.
        let percent = self.max_ejection_percent.min(100) as usize;
        let cap = (snapshot.len() * percent / 100).max(1);
        let me = endpoint.stats_handle();
        let others_ejected = || {
            snapshot
                .endpoints()
                .iter()
                .filter(|e| !Arc::ptr_eq(e.stats_handle(), me) && e.stats().is_ejected_at(now))
                .count()
        };
        // At the cap already: no lock (a failure storm on a capped fleet
        // keeps calling this).
        if others_ejected() >= cap {
            return None;
        }
        // Count and eject under one lock: two instances counted at one
        // below the cap at once each ejected, exceeding it (400 instances
        // at 50 %: 201 ejected).
        let _serial = EJECTING.lock().unwrap_or_else(PoisonError::into_inner);
        if others_ejected() >= cap {
            return None;
        }
        stats.eject(now, self.times())
    }
}

/// Serialises the count and the ejection of [`OutlierDetection::observe`]
/// (taken only when an instance reached a trigger under the cap).
static EJECTING: Mutex<()> = Mutex::new(());
