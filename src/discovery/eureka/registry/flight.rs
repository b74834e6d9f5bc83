//! One registry fetch at a time: [`refresh_now`](super::EurekaRegistry::refresh_now)
//! callers and the background loop join a fetch rather than each sending
//! their own.
//!
//! Every caller takes a ticket as it asks. Fetches run one after another;
//! a caller whose ticket was handed out before the last fetch started
//! takes that fetch's result (the fetch saw everything the registry held
//! when the caller asked), and the first caller whose ticket is newer
//! starts the next fetch, which covers every ticket handed out by then.
//! So however many callers ask at once, at most two fetches run for them:
//! the one in flight and one after it. Before, sixteen concurrent
//! `refresh_now` calls sent sixteen full `GET /apps` fetches and held the
//! sixteen answers at once (a 577 KiB registry: +23.6 MiB at the peak,
//! against +1.8 MiB for one call; helper 219).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Inner;
use super::fetch::Failed;
use crate::error::DiscoveryError;

/// The fetches' tickets and the last fetch's result.
#[derive(Debug, Default)]
pub(super) struct Flight {
    /// Tickets handed out so far.
    requested: AtomicU64,
    /// Held for a fetch's whole run.
    done: tokio::sync::Mutex<Done>,
}

/// What the last fetch covered and how it ended.
#[derive(Debug, Default)]
struct Done {
    /// The newest ticket handed out before the last fetch started.
    covered: u64,
    /// The last fetch's result; `None` before any.
    last: Option<Result<(), Arc<DiscoveryError>>>,
}

/// A failed fetch as its callers see it: the error every caller shares,
/// and, for the caller that ran the fetch and asked for it, the error
/// itself.
pub(super) struct Joined {
    pub(super) shared: Arc<DiscoveryError>,
    pub(super) own: Option<DiscoveryError>,
}

impl Inner {
    /// Fetches (a delta once a full fetch has succeeded, else a full
    /// fetch), or takes the result of a fetch that started after this call
    /// asked (see the module docs), and notes the outcome for services and
    /// [`ready`](super::EurekaRegistry::ready): the last error while no
    /// fetch of the background loop has succeeded (not the first one
    /// only: a 503 followed by 401s kept reporting the 503; helper 219), a
    /// delta applied before a
    /// failed full fetch counted as a failure but not shown to services
    /// (they read the newer copy).
    ///
    /// `keep_own`: the caller that runs the fetch gets its error itself
    /// (services see a copy of its text); else services see the error.
    pub(super) async fn fetch_joined(&self, keep_own: bool) -> Result<(), Joined> {
        let ticket = self
            .flight
            .requested
            .fetch_add(1, Ordering::AcqRel)
            .wrapping_add(1);
        let mut done = self.flight.done.lock().await;
        if done.covered >= ticket {
            if let Some(last) = &done.last {
                return last.clone().map_err(|shared| Joined { shared, own: None });
            }
        }
        let covers = self.flight.requested.load(Ordering::Acquire);
        let result = if self.full_fetches.load(Ordering::Relaxed) > 0 {
            self.delta().await
        } else {
            self.full().await.map_err(Failed::from)
        };
        let result = self.noted(result, keep_own);
        done.covered = covers;
        done.last = Some(result.as_ref().map_err(|j| Arc::clone(&j.shared)).copied());
        result
    }

    /// Counts and notes a fetch's outcome (see [`fetch_joined`](Self::fetch_joined)).
    fn noted(&self, result: Result<(), Failed>, keep_own: bool) -> Result<(), Joined> {
        let failed = match result {
            Ok(()) => {
                self.note(None);
                // A failed first fetch no longer holds readers back.
                self.first.send_replace(Some(Ok(())));
                return Ok(());
            }
            Err(failed) => failed,
        };
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %failed.error, "Eureka registry fetch failed; keeping the local copy");
        let (shared, own) = if keep_own {
            let seen = DiscoveryError::Other(failed.error.to_string().into());
            (Arc::new(seen), Some(failed.error))
        } else {
            (Arc::new(failed.error), None)
        };
        // A delta applied before its reconciling full fetch failed: the
        // copy is newer, and services read it.
        self.note((!failed.applied).then(|| Arc::clone(&shared)));
        // Until a fetch succeeds, `ready` and the services waiting on it
        // report the background loop's latest failure, typed (a
        // `refresh_now` failure has only a copy of its text to share, and
        // its caller has the error itself: helper 227).
        if !keep_own {
            self.first.send_if_modified(|first| {
                if matches!(first, Some(Ok(()))) {
                    return false;
                }
                *first = Some(Err(Arc::clone(&shared)));
                true
            });
        }
        Err(Joined { shared, own })
    }
}
