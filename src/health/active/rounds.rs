//! The checking task of one service: scheduled rounds over the whole
//! list, and, beside them, a first probe for each instance that joins.
//!
//! The two run side by side in one task. Before, they took turns: an
//! instance that joined while a scheduled round waited on hung instances
//! (a round of `n` of them takes `ceil(n / max_concurrent_probes)`
//! timeouts) stayed unhealthy, with no traffic, until that round ended.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use tokio::sync::Notify;

use super::probe::{ProbeClient, probe};
use super::{ActiveHealthCheck, CheckHooks, after, jittered};
use crate::discovery::TaskGuard;
use crate::instance::{Endpoint, InstanceKey};

/// Instances already warned about (one warning per instance), shared by
/// both loops; locked only between awaits.
type Warned = Mutex<HashSet<InstanceKey>>;

/// Starts the checking task of one service; it ends once
/// `hooks.snapshot` returns `None`.
pub(crate) fn spawn_health_checks(
    hooks: CheckHooks,
    config: ActiveHealthCheck,
    handle: &tokio::runtime::Handle,
) -> TaskGuard {
    TaskGuard::new(handle.spawn(async move {
        let client = ProbeClient::new(&config);
        let warned = Mutex::new(HashSet::new());
        let early = Notify::new();
        // Whichever loop sees the service gone ends the task.
        tokio::select! {
            () = scheduled(&hooks, &config, &client, &warned, &early) => {}
            () = joining(&hooks, &config, &client, &warned, &early) => {}
        }
    }))
}

/// Full rounds: the first after `initial_delay`, then each `interval`
/// (plus jitter) after the previous one ended, or at once when `early` is
/// notified (see `joining`).
async fn scheduled(
    hooks: &CheckHooks,
    config: &ActiveHealthCheck,
    client: &ProbeClient,
    warned: &Warned,
    early: &Notify,
) {
    let rng = crate::rng::AtomicRng::from_entropy();
    let first = jittered(config.initial_delay, config.interval_jitter, &rng);
    tokio::time::sleep_until(after(first)).await;
    // From now on, endpoints new to a list wait unhealthy for their first
    // probe (see `joining`).
    hooks.wait_for_probe.store(true, Ordering::Release);
    loop {
        if round(hooks, config, client, warned, false).await.is_none() {
            return;
        }
        // A wait past the clock's range (an interval of `Duration::MAX`:
        // no more full rounds) is the farthest time tokio's own `sleep`
        // takes (see `after`).
        let wait = jittered(config.interval, config.interval_jitter, &rng);
        tokio::select! {
            () = tokio::time::sleep_until(after(wait)) => {}
            () = early.notified() => {}
        }
    }
}

/// First probes: once rounds began, each published list's endpoints that
/// wait for their first probe are probed at once (Envoy checks a host as
/// it is added), whether or not a scheduled round is running.
///
/// A list may also hold endpoints no round listed: made before the checks
/// began (so they wait for no probe) and published after the first round
/// took its list. They went unprobed until the next round, an `interval`
/// later (`health::active::tests`); now they bring the next full round
/// forward (`early`). Probed here instead, in this loop's round, hung ones
/// among them held up the first probe of an instance joining after them
/// (about `ceil(hung / max_concurrent_probes) × timeout`; helper 179).
async fn joining(
    hooks: &CheckHooks,
    config: &ActiveHealthCheck,
    client: &ProbeClient,
    warned: &Warned,
    early: &Notify,
) {
    loop {
        hooks.published.notified().await;
        if !hooks.wait_for_probe.load(Ordering::Acquire) {
            // No endpoint waits before the first round.
            continue;
        }
        let unlisted = (hooks.snapshot)().is_some_and(|list| {
            list.endpoints()
                .iter()
                .any(|e| e.stats().is_active_unlisted())
        });
        if unlisted {
            early.notify_one();
        }
        if round(hooks, config, client, warned, true).await.is_none() {
            return;
        }
    }
}

/// A probe's endpoint, whether it passed, and when it was sent.
type Probed = (Endpoint, bool, tokio::time::Instant, u32);

/// At most one rebuild per this long while verdicts keep changing within
/// a round (a list of 10 000 instances flipping at once would rebuild the
/// picker 10 000 times).
const REBUILD_GAP: std::time::Duration = std::time::Duration::from_millis(10);

/// The verdict changes of a round, applied (`hooks.changed`: the picker
/// rebuilt, health recounted) as they come, not when the round ends: a
/// round waits on its slowest probe (up to `timeout`, or
/// `ceil(n / max_concurrent_probes)` of them), and meanwhile an instance
/// found unhealthy kept its share (43 of 173 requests over 1.5 s; helper
/// 199) and one found healthy again got nothing. Changes closer than
/// [`REBUILD_GAP`] to the last rebuild wait for it, by a timer.
struct Changes<'h> {
    hooks: &'h CheckHooks,
    pending: bool,
    last: Option<tokio::time::Instant>,
}

impl Changes<'_> {
    fn note(&mut self, changed: bool) {
        self.pending |= changed;
        if self.pending && self.last.is_none_or(|t| t.elapsed() >= REBUILD_GAP) {
            self.apply();
        }
    }

    fn apply(&mut self) {
        if std::mem::take(&mut self.pending) {
            (self.hooks.changed)();
            self.last = Some(tokio::time::Instant::now());
        }
    }

    /// The next probe's result; applies a waiting change when its gap has
    /// passed meanwhile.
    async fn join_next(
        &mut self,
        checks: &mut tokio::task::JoinSet<Probed>,
    ) -> Option<Result<Probed, tokio::task::JoinError>> {
        loop {
            let due = self.last.map(|t| t + REBUILD_GAP);
            tokio::select! {
                joined = checks.join_next() => return joined,
                () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)),
                    if self.pending => self.apply(),
            }
        }
    }
}

/// One round over the current list (with `only_pending`, over the
/// endpoints waiting for their first probe), each changed verdict applied
/// as it comes (see [`Changes`]); `None` once the service is gone.
async fn round(
    hooks: &CheckHooks,
    config: &ActiveHealthCheck,
    client: &ProbeClient,
    warned: &Warned,
    only_pending: bool,
) -> Option<()> {
    let snapshot = (hooks.snapshot)()?;
    let service = hooks.service.as_str();
    {
        let mut warned = warned.lock().unwrap_or_else(|e| e.into_inner());
        if !warned.is_empty() {
            // Forget instances that left, so the set stays bounded by the
            // list.
            let current: HashSet<InstanceKey> = snapshot
                .endpoints()
                .iter()
                .map(|e| e.instance().key())
                .collect();
            warned.retain(|k| current.contains(k));
        }
    }
    // At most `max_concurrent_probes` probes in flight per round: a round
    // spawned one per instance at once, and a list larger than the
    // process's descriptor limit failed every healthy instance (EMFILE).
    let limit = config.max_concurrent_probes.max(1);
    if !only_pending {
        // Listed at once, so a round of first probes beside this one does
        // not bring another round forward for those not reached yet.
        for endpoint in snapshot.endpoints() {
            endpoint.stats().list_for_active_checks();
        }
    }
    let mut checks = tokio::task::JoinSet::new();
    let mut changes = Changes {
        hooks,
        pending: false,
        last: None,
    };
    // Each endpoint's join count as the round found it: a probe spawned
    // late (behind `max_concurrent_probes`) for an instance that left and
    // joined again meanwhile probes its old listing's URL, and must not
    // give the new listing its first verdict (helper 229).
    let listed: Vec<_> = (snapshot.endpoints().iter())
        .map(|e| (e.clone(), e.stats().active_joins()))
        .collect();
    for (endpoint, joins) in listed {
        if only_pending {
            if !endpoint.stats().is_active_pending() {
                continue;
            }
            endpoint.stats().list_for_active_checks();
        }
        let target = config.target_of(endpoint.instance());
        if let Some(warning) = target.warning {
            let first = warned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(endpoint.instance().key());
            if first {
                tracing::warn!(service = %service, instance = %endpoint, %warning, "health-check target");
            }
        }
        let Some(url) = target.url.filter(|u| client.can_probe(u)) else {
            // Never probed: it keeps its passive health only, and does not
            // wait for a first probe.
            changes.note(endpoint.stats().clear_active_pending());
            continue;
        };
        while checks.len() >= limit {
            match changes.join_next(&mut checks).await {
                Some(joined) => changes.note(record(joined, hooks, config)),
                None => break,
            }
        }
        let (client, timeout) = (client.clone(), config.timeout);
        checks.spawn(async move {
            let sent = tokio::time::Instant::now();
            let passed = probe(&client, &url, timeout).await;
            (endpoint, passed, sent, joins)
        });
    }
    while let Some(joined) = changes.join_next(&mut checks).await {
        changes.note(record(joined, hooks, config));
    }
    changes.apply();
    Some(())
}

/// Records one probe's verdict; `true` if it changed, or if it was an
/// instance's first probe (see below). A probe task that
/// panicked or was cancelled gives no verdict, and the round goes on
/// collecting the others (it stopped at the first before).
fn record(
    joined: Result<Probed, tokio::task::JoinError>,
    hooks: &CheckHooks,
    config: &ActiveHealthCheck,
) -> bool {
    let service = hooks.service.as_str();
    let Ok((endpoint, passed, sent, joins)) = joined else {
        tracing::warn!(service = %service, "health-check probe task ended without a verdict");
        return false;
    };
    if endpoint.stats().active_joins() != joins {
        // Sent before the instance left the list and joined again: news
        // of the process it was then, not of the one listed now (a late
        // pass let a failing restart in, 10 of 20 requests answered 503;
        // a late failure held a healthy one out for a whole interval;
        // helper 222). Its first verdict waits for a probe of its own.
        return false;
    }
    let result = if passed { "healthy" } else { "unhealthy" };
    metrics::counter!(crate::metrics::HEALTH_CHECKS, "service" => service.to_owned(), "result" => result)
        .increment(1);
    let stats = endpoint.stats();
    // A first probe that fails leaves the verdict (unhealthy while it
    // waited) but moves the instance into the panic threshold's count
    // (`HealthView::recount` leaves waiting instances out), so the view
    // must recount: before, three joining instances failing their first
    // probes left the service out of panic with 2 of 6 healthy until an
    // unrelated change (helper 189).
    let was_pending = stats.is_active_pending();
    // Envoy's `successful_active_health_check_uneject_host`: a passing
    // probe sent after the ejection began ends it (helper 199; one sent
    // before it is older news than the failures that ejected: with a
    // 300 ms health endpoint every ejection ended within 170 ms, helper
    // 202).
    let unejected = passed && hooks.uneject_on_pass && stats.end_ejection(sent, tokio::time::Instant::now());
    if unejected {
        tracing::info!(service = %service, instance = %endpoint, "passed an active health check; ejection ended");
    }
    if stats.record_active_check(passed, config.healthy_threshold, config.unhealthy_threshold) {
        let healthy = !stats.is_active_unhealthy();
        tracing::info!(service = %service, instance = %endpoint, healthy, "active health check changed");
        return true;
    }
    was_pending || unejected
}
