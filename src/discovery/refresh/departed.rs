//! The stats of instances that left the list: which the refresh keeps for
//! an instance listed again (see `Refresh::departed`).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::MAX_DEPARTED;
use crate::instance::InstanceKey;
use crate::stats::EndpointStats;

/// The service's stats are forgotten with it: their ejections end for
/// `ribbon_ejection_returns_total`. Run when the last reference to the
/// service's state goes, so an ejection made by a request still running
/// at an eviction counts too (helper 189).
impl Drop for super::Refresh {
    fn drop(&mut self) {
        self.forget_ejections();
    }
}

impl super::Refresh {
    /// The departed stats, those no longer needed dropped (see
    /// [`retain`]; the ejection returns it finds recorded), run at every
    /// refresh. The ended ejections of listed instances are recorded too:
    /// otherwise only a pick's health recount found them, and an ejection
    /// that ended on a service gone idle read as on for as long as it
    /// stayed idle (59 s after a 1 s ejection; helper 199). Now at most a
    /// refresh interval late.
    pub(super) fn retained_departed(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<InstanceKey, Arc<EndpointStats>>> {
        let now = Instant::now();
        let mut departed = self.departed.lock().unwrap_or_else(|e| e.into_inner());
        let returns = retain(&mut departed, now);
        let listed = (self.current.load().endpoints().iter()).fold(0u32, |n, e| {
            n.saturating_add(e.stats().end_expired_ejections(now))
        });
        crate::metrics::record_ejection_returns(&self.service_id, returns.saturating_add(listed));
        departed
    }

    /// Reports every ejection not reported over yet, of the listed
    /// instances and the departed ones kept: the service's state is
    /// dropped (its on-demand service evicted, or the balancer dropped,
    /// once the last request holding it ended) and its stats forgotten
    /// (see `EndpointStats::forget_ejections`).
    fn forget_ejections(&self) {
        let departed = self.departed.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load();
        let returns = (current
            .endpoints()
            .iter()
            .map(crate::instance::Endpoint::stats))
        .chain(departed.values().map(AsRef::as_ref))
        .fold(0u32, |n, stats| n.saturating_add(stats.forget_ejections()));
        crate::metrics::record_ejection_returns(&self.service_id, returns);
    }
}

/// Keeps the departed stats still needed at `now`: only while a request of
/// theirs lasts, or while their breaker or an ejection marks them down. An
/// instance dropped for one refresh (DOWN then UP again, a lease expired
/// and registered again) came back with fresh stats, and took its share of
/// requests until it failed enough to be marked down again. The map stays
/// as small as the requests in flight on instances that left, plus the
/// instances the last refresh removed, plus (up to `MAX_DEPARTED`)
/// departed instances marked down.
///
/// Marked down includes a breaker half-open after its blackout, for
/// `breaker_max` more: no response has closed it, so the instance comes
/// back one failure from a longer blackout, not with three fresh ones to
/// spend (helper 158: a dead instance removed after its blackout and
/// listed again took 3 attempts where one probe was due); kept until a
/// response, the map filled under churn and its overflow purge dropped
/// open breakers too (helper 159).
///
/// Past `MAX_DEPARTED`, the excess goes, marks ending soonest first;
/// requests in flight always stay. Dropping every mark instead forgot a
/// mass outage's open breakers: past 4 096 tripped departures, a flapper
/// listed again 0.4 s later came back closed (helper 171).
///
/// Returns the departed instances' ejections over at `now` and not
/// reported before, and those of the stats it drops (see
/// [`EndpointStats::forget_ejections`]): the service's recount walks only
/// the listed instances, so an ejection that ended while its instance was
/// away was never counted in `ribbon_ejection_returns_total` (helper 188:
/// ejections 1, returns 0 for good).
pub(super) fn retain(departed: &mut HashMap<InstanceKey, Arc<EndpointStats>>, now: Instant) -> u32 {
    let mut returns = 0u32;
    departed.retain(|_, stats| {
        let keep = stats.in_flight() > 0 || stats.breaker_holds_at(now) || stats.is_ejected_at(now);
        let over = if keep {
            stats.end_expired_ejections(now)
        } else {
            stats.forget_ejections()
        };
        returns = returns.saturating_add(over);
        keep
    });
    if departed.len() <= MAX_DEPARTED {
        return returns;
    }
    let mut ending: Vec<(u64, InstanceKey)> = (departed.iter())
        .filter(|(_, stats)| stats.in_flight() == 0)
        .map(|(key, stats)| (stats.marked_down_for_ms(now), key.clone()))
        .collect();
    let excess = (departed.len() - MAX_DEPARTED).min(ending.len());
    if excess == 0 {
        return returns;
    }
    ending.select_nth_unstable_by_key(excess - 1, |(ms, _)| *ms);
    for (_, key) in &ending[..excess] {
        if let Some(stats) = departed.remove(key) {
            returns = returns.saturating_add(stats.forget_ejections());
        }
    }
    returns
}
