//! The registry's fetching: the background loop, full fetches, deltas
//! checked against the copy's bounds and reconciled by hash, and the
//! record of failures that services see.

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use std::collections::HashSet;

use super::copy::{self, Registry, apply, hash_of};
use super::failover::{self, Confirmed, Failover, Kept};
use super::RegistryStale;
use super::stale::Failing;
use super::{Inner, wire};
use crate::discovery::eureka::client::{Answered, Fetched};
use crate::discovery::eureka::wire::Applications;
use crate::error::DiscoveryError;

/// A failed fetch, and whether the copy took part of it: a delta applied
/// before the full fetch its hash mismatch called for failed.
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) error: DiscoveryError,
    /// The copy holds the delta: it is newer than before the fetch, so
    /// services read it (as the Java client's `reconcileAndLogDifference`
    /// keeps its updated copy when the full fetch fails).
    pub(super) applied: bool,
}

impl From<DiscoveryError> for Failed {
    fn from(error: DiscoveryError) -> Self {
        Self {
            error,
            applied: false,
        }
    }
}

pub(super) async fn run(weak: Weak<Inner>, interval: Duration) {
    let mut have_full = false;
    // Failed fetches before the first success: until one succeeds the
    // copy is empty and every service read fails, so the next try comes
    // sooner (1 s, 2 s, 4 s, ... up to the interval), as a service's own
    // refresh retries a first list.
    let mut failures_before_first = 0u32;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        // Joined with `refresh_now`'s fetches (see `flight`); counted and
        // noted there.
        if inner.fetch_joined(false).await.is_ok() {
            have_full = true;
        }
        drop(inner);
        let delay = if have_full {
            interval
        } else {
            failures_before_first = failures_before_first.saturating_add(1);
            let backoff = Duration::from_secs(1 << (failures_before_first - 1).min(16));
            backoff.min(interval)
        };
        tokio::time::sleep(delay).await;
    }
}

impl Inner {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_failing(&self) -> std::sync::MutexGuard<'_, Failing> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a fetch's outcome: `None` for a success (the failures are
    /// cleared), else its error.
    pub(super) fn note(&self, error: Option<Arc<DiscoveryError>>) {
        let mut failing = self.lock_failing();
        match error {
            None => *failing = Failing::default(),
            Some(e) => {
                failing.consecutive += 1;
                failing.last_error = Some(e);
            }
        }
    }

    /// The registry's failure, if its last fetch failed.
    pub(super) fn stale(&self) -> Option<RegistryStale> {
        let failing = self.lock_failing();
        let last_error = Arc::clone(failing.last_error.as_ref()?);
        let since_last_success = self
            .last_success
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed());
        Some(RegistryStale {
            consecutive_failures: failing.consecutive,
            since_last_success,
            last_error,
            copy: None,
        })
    }

    /// `GET {path}` (`apps` or `apps/delta`). For the full registry, an
    /// answer with no instance at all asks the next server (see
    /// `EurekaHttp::get`): a peer restarted on its own serves an empty
    /// registry until the instances renew. An empty delta is the usual
    /// "nothing changed".
    ///
    /// Also says which server answered (see `failover`).
    async fn get(&self, path: &str) -> Result<(Applications, Option<Answered>), DiscoveryError> {
        let options = self.options;
        let lists_nothing: fn(&Applications) -> bool = if path == "apps" {
            Applications::lists_nothing
        } else {
            |_| false
        };
        // A 404 here is a wrong base path or a disabled endpoint, never an
        // empty registry (that is a 200 with no application).
        match self
            .http
            .get_answered(path, false, lists_nothing, move |body, deadline| {
                wire::decode_applications(body, options, Some(deadline))
            })
            .await?
        {
            (Fetched::Found(apps), answered) => Ok((apps, answered)),
            (Fetched::NotFound, _) => Err(DiscoveryError::Status {
                server: path.to_owned(),
                status: 404,
            }),
        }
    }

    /// A ticket for a fetch about to be sent (see `Inner::applied_ticket`).
    fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::AcqRel).wrapping_add(1)
    }

    /// Whether the answer of the fetch holding `ticket` is to be applied:
    /// `true` (and the copy's generation bumped) if it was sent after the
    /// last one applied, `false` if a newer answer was applied first. Call
    /// with the registry lock held, so answers are applied in send order.
    fn take_turn(&self, ticket: u64) -> bool {
        if ticket <= self.applied_ticket.load(Ordering::Acquire) {
            tracing::info!("an older Eureka answer arrived after a newer one was applied; dropped");
            return false;
        }
        self.applied_ticket.store(ticket, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// The copy's text is bounded by the response body bound: a copy no
    /// full payload could carry is refused (deltas each within the body
    /// bound could otherwise pile up long values without bound): its
    /// metadata text alone, then all its text (metadata, ids, hosts,
    /// health check URLs, zones, statuses, service names).
    fn check_text_bytes(&self, held: &copy::Footprint) -> Result<(), DiscoveryError> {
        let limit = self.http.max_body_bytes();
        if held.metadata_bytes > limit {
            return Err(DiscoveryError::RegistryMetadataTooLarge {
                limit,
                would_hold: held.metadata_bytes,
            });
        }
        if held.text_bytes > limit {
            return Err(DiscoveryError::RegistryTextTooLarge {
                limit,
                would_hold: held.text_bytes,
            });
        }
        Ok(())
    }

    pub(super) fn lock_failover(&self) -> std::sync::MutexGuard<'_, Failover> {
        self.failover.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Home's answer to `GET /apps`, asked to confirm a failover answer's
    /// absences (see `failover`): within one request timeout, a body
    /// listing nothing counted as no answer.
    async fn confirm(&self, home: usize) -> Confirmed {
        let options = self.options;
        let answer = self.http.get_from(home, "apps", move |body, deadline| {
            wire::decode_applications(body, options, Some(deadline))
        });
        match answer.await {
            Ok(Fetched::Found(apps)) if !apps.lists_nothing() => Confirmed::Answered(apps),
            Ok(_) => Confirmed::Unanswered,
            Err(e) => {
                tracing::info!(error = %e, "the Eureka server that failed still does not answer; holding the apps a failover answer lacks");
                Confirmed::Unanswered
            }
        }
    }

    /// Puts the apps `kept` back into `registry` (a full answer applied)
    /// if the copy stays within its bounds; else takes the answer as it
    /// is. `true` when nothing was put back: the copy is the server's.
    fn put_back(&self, registry: &mut Registry, kept: Kept) -> bool {
        if kept.is_empty() {
            return true;
        }
        let keys: Vec<String> = kept.iter().map(|(key, _)| key.clone()).collect();
        registry.extend(kept);
        let held = copy::footprint(registry);
        let limit = self.http.max_body_bytes();
        if held.records > self.options.max_instances
            || held.metadata > self.options.max_metadata_entries
            || held.metadata_bytes > limit
            || held.text_bytes > limit
        {
            tracing::warn!(apps = keys.len(), "apps absent from a failover Eureka answer would take the copy past its bounds; taking the answer as it is");
            for key in &keys {
                registry.remove(key);
            }
            return true;
        }
        false
    }

    /// Marks the copy complete as of `sent`, when the fetch that made it
    /// so was sent.
    fn mark_complete(&self, sent: Instant) {
        *self.complete_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(sent);
    }

    /// Whether a delta can still carry every change since the copy was
    /// last complete: the server keeps a change in its delta queue for
    /// `delta_retention` only.
    fn delta_covers(&self, now: Instant) -> bool {
        let complete_at = *self.complete_at.lock().unwrap_or_else(|e| e.into_inner());
        complete_at.is_some_and(|at| now.saturating_duration_since(at) < self.delta_retention)
    }

    pub(super) async fn full(&self) -> Result<(), DiscoveryError> {
        let sent = Instant::now();
        let started = self.ticket();
        // Whether an empty registry beside a failed server is held: by the
        // copy as deltas left it, not by the last full fetch's answer.
        let holds = self.lock().values().any(|records| !records.is_empty());
        self.http.note_copy("apps", holds);
        let (apps, answered) = self.get("apps").await?;
        // The decoder bounds the payload's metadata already; what the copy
        // would keep is checked too, so the bound holds however it counts.
        let limit = self.options.max_metadata_entries;
        let would = copy::footprint_of(&apps);
        if would.metadata > limit {
            return Err(DiscoveryError::RegistryMetadataFull {
                limit,
                would_hold: would.metadata,
            });
        }
        self.check_text_bytes(&would)?;
        // Apps a failover answer lacks: confirmed at home, or held (see
        // `failover`).
        let hold = self.http.absence_hold();
        let home = self.lock_failover().answered(answered, Instant::now(), hold);
        let missing = match home {
            Some(_) => failover::missing(&self.lock(), &apps),
            None => HashSet::new(),
        };
        // Home is not asked about apps whose hold is spent.
        let ask_home = self.lock_failover().holds_any(&missing);
        let confirmed = match home {
            Some(home) if ask_home => self.confirm(home).await,
            _ => Confirmed::Unanswered,
        };
        let complete = {
            let mut registry = self.lock();
            if !self.take_turn(started) {
                return Ok(());
            }
            let kept = (self.lock_failover()).kept(&registry, &missing, confirmed, Instant::now(), hold);
            apply(&mut registry, &apps, true);
            self.put_back(&mut registry, kept)
        };
        // A copy holding apps the answer lacked is not the server's.
        if complete {
            self.mark_complete(sent);
        }
        self.full_fetches.fetch_add(1, Ordering::Relaxed);
        *self.last_success.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(())
    }

    /// A delta fetch, reconciled by hash; a full fetch instead when the
    /// copy is older than the server's delta queue (the delta is still
    /// applied if that full fetch fails).
    pub(super) async fn delta(&self) -> Result<(), Failed> {
        let sent = Instant::now();
        let mut full_failed = None;
        if !self.delta_covers(sent) {
            // The copy was last complete longer ago than the server keeps
            // changes (an outage): a delta would lack the first ones, and
            // its hash can still match (an instance replaced by another of
            // the same status), which would keep the gone one for good.
            tracing::info!("Eureka copy older than the server's delta queue; fetching the full registry");
            match self.full().await {
                Ok(()) => return Ok(()),
                // A delta is still better than nothing: a drain it carries
                // reaches the copy while full fetches fail.
                Err(e) => {
                    tracing::info!(error = %e, "Eureka full fetch failed; applying a delta meanwhile");
                    full_failed = Some(e);
                }
            }
        }
        let started = self.ticket();
        let delta = match self.get("apps/delta").await {
            Ok((delta, answered)) => {
                let hold = self.http.absence_hold();
                let mut failover = self.lock_failover();
                failover.answered(answered, Instant::now(), hold);
                failover.listed_by(&delta);
                drop(failover);
                delta
            }
            Err(e) => {
                if let Some(error) = full_failed {
                    // Both failed: the delta counted here, the full fetch
                    // by the caller.
                    tracing::info!(error = %e, "Eureka delta fetch failed too");
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    return Err(error.into());
                }
                // Like the Java client: no server able to answer (timeout,
                // transport error, 5xx, 429 from each) fails the refresh,
                // without asking the same servers for the full registry,
                // the heaviest answer, at once: that would cost a second
                // request timeout per server on every refresh.
                if unavailable(&e) {
                    // Counted by the caller, as every failed fetch.
                    tracing::info!(error = %e, "Eureka delta fetch failed; no server answered");
                    return Err(e.into());
                }
                self.failures.fetch_add(1, Ordering::Relaxed);
                // A refused or unusable delta (`disableDelta`'s 403, a body
                // that does not decode) means a full fetch.
                tracing::info!(error = %e, "Eureka delta fetch failed; fetching the full registry");
                return Ok(self.full().await?);
            }
        };
        let Some(matches) = self.apply_delta(started, &delta)? else {
            return Ok(());
        };
        self.delta_fetches.fetch_add(1, Ordering::Relaxed);
        if let Some(error) = full_failed {
            // Applied, but a delta cannot make this copy complete: the full
            // fetch's failure stands, and the next fetch tries it again.
            return Err(Failed {
                error,
                applied: true,
            });
        }
        if matches {
            self.mark_complete(sent);
            *self.last_success.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            return Ok(());
        }
        self.hash_mismatches.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            // Registry text: quoted, so a 1 MiB hash is not a 1 MiB line.
            expected = %delta.apps_hashcode.as_deref().map_or_else(|| "none".to_owned(), crate::error::quote),
            "Eureka delta hash mismatch; fetching the full registry"
        );
        // The delta stays applied whatever the full fetch does: the copy is
        // newer than before it (a draining instance it marks is no longer
        // served UP while full fetches fail).
        self.full().await.map_err(|error| Failed {
            error,
            applied: true,
        })
    }

    /// Applies `delta` if the copy stays within its bounds and no fetch sent
    /// after this one (its ticket `started`) was applied: `Some(whether the
    /// copy's hash matches the delta's)`, `None` if a newer answer was
    /// applied first (this one is dropped).
    fn apply_delta(&self, started: u64, delta: &Applications) -> Result<Option<bool>, DiscoveryError> {
        let mut registry = self.lock();
        let after = copy::footprint_after(&registry, delta);
        let limit = self.options.max_instances;
        if after.records > limit {
            return Err(DiscoveryError::RegistryFull {
                limit,
                would_hold: after.records,
            });
        }
        let limit = self.options.max_metadata_entries;
        if after.metadata > limit {
            return Err(DiscoveryError::RegistryMetadataFull {
                limit,
                would_hold: after.metadata,
            });
        }
        self.check_text_bytes(&after)?;
        // A fetch sent after this one was applied: its answer is newer
        // than this delta, which is dropped.
        if !self.take_turn(started) {
            return Ok(None);
        }
        apply(&mut registry, delta, false);
        // A delta without a hash cannot be checked: it is not taken as
        // consistent (the Java client's reconcile needs the hash too).
        Ok(Some(
            delta
                .apps_hashcode
                .as_deref()
                .is_some_and(|expected| hash_of(&registry) == expected),
        ))
    }
}

/// Whether `e` says no server was able to answer: a timeout, a transport
/// error, a 5xx or a 429 (from every server tried).
fn unavailable(e: &DiscoveryError) -> bool {
    match e {
        DiscoveryError::Timeout { .. } | DiscoveryError::Transport { .. } => true,
        DiscoveryError::Status { status, .. } => *status >= 500 || *status == 429,
        DiscoveryError::AllServersFailed(errors) => {
            !errors.is_empty() && errors.iter().all(unavailable)
        }
        _ => false,
    }
}
