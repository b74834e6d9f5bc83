//! The stats of instances that left the list: which the refresh keeps for
//! an instance listed again (see `Refresh::departed`).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::MAX_DEPARTED;
use crate::instance::InstanceKey;
use crate::stats::EndpointStats;

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
pub(super) fn retain(departed: &mut HashMap<InstanceKey, Arc<EndpointStats>>, now: Instant) {
    departed.retain(|_, stats| {
        stats.in_flight() > 0 || stats.breaker_holds_at(now) || stats.is_ejected_at(now)
    });
    if departed.len() <= MAX_DEPARTED {
        return;
    }
    let mut ending: Vec<(u64, InstanceKey)> = (departed.iter())
        .filter(|(_, stats)| stats.in_flight() == 0)
        .map(|(key, stats)| (stats.marked_down_for_ms(now), key.clone()))
        .collect();
    let excess = (departed.len() - MAX_DEPARTED).min(ending.len());
    if excess == 0 {
        return;
    }
    ending.select_nth_unstable_by_key(excess - 1, |(ms, _)| *ms);
    for (_, key) in &ending[..excess] {
        departed.remove(key);
    }
}
