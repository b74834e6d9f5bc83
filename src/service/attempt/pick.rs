//! The pick of an attempt: the same instance again for a same-instance
//! retry while it is listed and healthy, else the rule's pick avoiding the
//! instances tried, under the service's health filter or panic mode.

use tokio::time::Instant;

use crate::instance::Endpoint;
use crate::rule::PickContext;
use crate::service::ServiceState;

/// `endpoint` as the current list holds it (same identity, so the same
/// stats), if it is still listed: O(log n) by the list's index of
/// identities (a walk only when an identity is listed twice).
pub(super) fn listed(state: &ServiceState, endpoint: &Endpoint) -> Option<Endpoint> {
    state.picker().snapshot().find(endpoint).cloned()
}

/// `endpoint` for a same-instance retry: still listed and healthy at `now`
/// (breaker available, not ejected, not failing active checks).
pub(super) fn still_usable(
    state: &ServiceState,
    endpoint: &Endpoint,
    now: Instant,
) -> Option<Endpoint> {
    listed(state, endpoint).filter(|e| e.stats().is_healthy_at(now))
}

/// Picks an endpoint not in `tried` if one is eligible, else one other
/// than `last` (the previous attempt's), else any.
pub(super) fn pick(
    state: &ServiceState,
    tried: &[Endpoint],
    last: Option<&Endpoint>,
    hash_key: Option<u64>,
    now: Instant,
    headers: &http::HeaderMap,
) -> Option<Endpoint> {
    let picker = state.picker();
    let mut ctx = PickContext::at(now).with_headers(headers);
    if let Some(key) = hash_key {
        ctx = ctx.with_hash_key(key);
    }
    if state.health().filter(picker.snapshot(), ctx.now()) {
        ctx = ctx.with_health_epoch(state.health().epoch());
    } else if state.health().in_panic() {
        ctx = ctx.with_panic_mode();
    }
    if !tried.is_empty() {
        if let Some(e) = picker.pick(&ctx.with_excluded(tried)) {
            return Some(e.clone());
        }
        // Every instance tried: a retry picks from all, still in the
        // retries' rotation, and steps once more past the previous
        // attempt's instance. (Taking it,
        // 40 of 60 requests over three failing instances sent their fourth
        // attempt where the third had just failed; with two instances
        // every fourth: a next-instance retry made a same-instance one
        // `max_same` did not allow; helper 124.)
        ctx = ctx.retrying();
        let first = picker.pick(&ctx)?;
        if let Some(last) = last.filter(|l| tried.len() > 1 && first.same_identity(l)) {
            // The rotation's next step, past that instance, if another is
            // eligible. (Excluding it from the first pick instead gave the
            // instance after it the turns of both: 60, 160 and 140
            // attempts over three.)
            let other = picker.pick(&ctx.with_excluded(std::slice::from_ref(last)));
            return Some(other.unwrap_or(first).clone());
        }
        return Some(first.clone());
    }
    picker.pick(&ctx).cloned()
}
