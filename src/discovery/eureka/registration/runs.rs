//! A registration's runs: `start` registers and begins one, `shutdown`
//! ends it with its cancels (twice after a write some server may have
//! taken without answering: see [the late-write docs](super::late)), and
//! futures of either dropped midway leave the runs as awaited ones do.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Shared;
use super::late::REGISTRATION;
use crate::error::DiscoveryError;

/// How long after a late write's deadline the second cancel waits for
/// Eureka's peers to pass it on: a peer batches replication tasks for up to
/// 500 ms (`PeerEurekaNode`'s `maxBatchingDelay`), and a late heartbeat's
/// 404 at the other peer queues a registration, a second batch. At one
/// request timeout alone the second cancel came before that registration
/// (the shut-down instance served UP by the other peer for its lease).
const PEER_REPLICATION_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Puts `shut_down` back to `was` when dropped (a start failed or was
/// dropped); a start that registered sets `was` to false first.
struct RestoreShutDown<'a> {
    shared: &'a Shared,
    was: bool,
}

impl Drop for RestoreShutDown<'_> {
    fn drop(&mut self) {
        self.shared.shut_down.fetch_or(self.was, Ordering::AcqRel);
    }
}

/// The cancels a shutdown (or a failed start) still owes: all of them
/// until the first is answered (`second_at` none), then the second from
/// `second_at`. Dropped with one due, a task of its own (within a runtime)
/// sends what is due at its time, unless a start succeeded since (`runs`):
/// it takes `op`, marks the registration shut down, cancels, and when a
/// late write is armed then, cancels again [`Shared::second_cancel_at`].
pub(super) struct PendingCancel {
    shared: Arc<Shared>,
    /// A shutdown's (its task ends the run, as [`Shared::end_run`]); a
    /// failed start's leaves the run as it was (helper 151: its task
    /// stopped a running clone's renewals).
    ends_run: bool,
    runs_at: u64,
    second_at: Option<tokio::time::Instant>,
    done: bool,
}

impl Drop for PendingCancel {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (shared, runs_at, mut second_at) =
            (Arc::clone(&self.shared), self.runs_at, self.second_at);
        let ends_run = self.ends_run;
        let current = move |shared: &Shared| shared.runs.load(Ordering::Acquire) == runs_at;
        runtime.spawn(async move {
            if second_at.is_none() {
                let _op = shared.op.lock().await;
                if !current(&shared) {
                    return;
                }
                if ends_run {
                    // Also `ended` (helper 151: a restart after such a
                    // shutdown inherited its armed state).
                    shared.end_run();
                }
                shared.cancel_again_locked().await;
                second_at = shared.late_armed().then(|| shared.second_cancel_at());
            }
            if let Some(at) = second_at {
                tokio::time::sleep_until(at).await;
                let _op = shared.op.lock().await;
                if current(&shared) {
                    shared.cancel_again_locked().await;
                }
            }
        });
    }
}

impl Shared {
    /// The shutdown's cancels (`shutdown_locked`'s, with `op` held and
    /// `shut_down` set): the cancel, and when a registration or a heartbeat
    /// went unanswered (it may still land), a second one a request timeout
    /// and [`PEER_REPLICATION_SETTLE`] later (404 is success). A
    /// registration that timed out and landed after the cancel served the
    /// shut-down instance UP for its whole lease (21 of 32 reads over 10 s;
    /// helper 129), and a heartbeat so in a cluster (see
    /// [`Shared::note_late_heartbeat`]). One held longer than that still
    /// lands and expires with its lease. Returns the first cancel's result.
    ///
    /// Dropped before a cancel is sent (a caller bounding `shutdown` by less
    /// than it takes), that cancel is sent at its time by a task of its own
    /// unless a `start` ran since: before, a shutdown dropped during its
    /// first cancel left the instance registered for its lease, and one
    /// dropped during the wait lost the second (helpers 147, 149). The task
    /// needs the runtime to go on: a process that exits at once after
    /// dropping `shutdown` loses what was still due.
    pub(super) async fn cancel_twice_if_late_locked(
        this: &Arc<Self>,
        mut pending: PendingCancel,
    ) -> Result<(), DiscoveryError> {
        let cancelled = this.cancel_locked().await;
        if !this.late_armed() {
            pending.done = true;
            return cancelled;
        }
        let at = this.second_cancel_at();
        pending.second_at = Some(at);
        tokio::time::sleep_until(at).await;
        pending.done = true;
        this.cancel_again_locked().await;
        cancelled
    }

    /// A shutdown ends the run (with `op` held): renewals of every handle
    /// stop, and the next start begins with nothing armed.
    pub(super) fn end_run(&self) {
        self.shut_down.store(true, Ordering::Release);
        self.ended.store(true, Ordering::Release);
    }

    /// The cancels a shutdown of the current run owes, until
    /// [`Shared::cancel_twice_if_late_locked`] sends them: made before the
    /// shutdown waits for `op`, so one dropped while a renewal holds it
    /// still cancels (helper 150: 0 DELETEs, the instance registered for
    /// its lease with no handle).
    pub(super) fn pending_cancel(this: &Arc<Self>, ends_run: bool) -> PendingCancel {
        PendingCancel {
            shared: Arc::clone(this),
            ends_run,
            runs_at: this.runs.load(Ordering::Acquire),
            second_at: None,
            done: false,
        }
    }

    /// Whether a write some server may have taken without answering can
    /// still land: a heartbeat in the last [`LATE_WRITE_CHECKS`] renewals,
    /// or a registration with read-backs armed.
    fn late_armed(&self) -> bool {
        self.late_beats.load(Ordering::Acquire) > 0
            || (self.late_checks.load(Ordering::Acquire) > 0
                && self.undoable.load(Ordering::Acquire) & REGISTRATION != 0)
    }

    /// When the second cancel is due, from now (after the first).
    fn second_cancel_at(&self) -> tokio::time::Instant {
        let deadline = self.http.deadline();
        deadline
            .checked_add(PEER_REPLICATION_SETTLE)
            .unwrap_or(deadline)
    }

    /// The second cancel. Best effort: the first cancel's result stands (a
    /// server still hung then fails this one too).
    async fn cancel_again_locked(&self) {
        if let Err(e) = self.cancel_locked().await {
            tracing::debug!(app = %self.app, id = %self.id, error = %e, "the second cancel after an unanswered registration or heartbeat failed");
        }
    }

    /// Starts a run (`start`, with `op` held): registers, and with an
    /// initial status other than UP whose call failed, cancels what the
    /// server took (it would serve it UP). A registration that was shut
    /// down starts with nothing armed: what an earlier run armed is its own
    /// (inherited, a restarted registration cancelled twice after renewals
    /// all answered, and an old run's unanswered OUT_OF_SERVICE let a
    /// read-back undo an operator's OUT_OF_SERVICE in the new one; helper
    /// 147). One started beside a running handle of it (a clone) keeps
    /// that handle's (helper 149), and one after a failed start keeps what
    /// that start armed (its registration may still land; helper 150). A
    /// failed start leaves it shut down as it was, and cancels what the
    /// servers may hold: at once when its status call failed, and when its
    /// registration went unanswered, also twice as a shutdown does, from a
    /// task of its own (before, a registration taken late by a hung server
    /// after a failed start stayed for its lease; helper 150).
    pub(super) async fn start_locked(this: &Arc<Self>) -> Result<(), DiscoveryError> {
        // Failed or dropped (helper 151: a start dropped mid-registration
        // let a clone stopped by the shutdown renew and register again), a
        // start leaves the registration shut down as it was.
        let mut restore = RestoreShutDown {
            shared: this,
            was: this.shut_down.swap(false, Ordering::AcqRel),
        };
        if this.ended.swap(false, Ordering::AcqRel) {
            this.late_beats.store(0, Ordering::Release);
            this.late_checks.store(0, Ordering::Release);
            this.undoable.store(0, Ordering::Release);
            // Overrides it held were the last run's: its drain held at its
            // shutdown made the next run's `set_status(Up)` delete a
            // deployer's disable (helper 228).
            this.held.store(0, Ordering::Release);
            this.released.store(0, Ordering::Release);
            this.replay_from.store(0, Ordering::Release);
            // A new run: its own first UP decides (helper 203).
            this.first_up.reset();
        }
        let (failed, taken) = match this.register_locked(false).await {
            Ok(Ok(())) => {
                this.runs.fetch_add(1, Ordering::AcqRel);
                restore.was = false;
                return Ok(());
            }
            Ok(Err(e)) => (e, true),
            Err(e) => (e, false),
        };
        if taken {
            if let Err(cancel) = this.cancel_locked().await {
                tracing::warn!(app = %this.app, id = %this.id, error = %cancel, "could not cancel a registration whose status was not set; Eureka serves it UP until its lease expires");
            }
        }
        if this.late_armed() {
            // Its registration may still land: cancelled now and again
            // later by a task of its own, so the start fails at once (in
            // line, a start against a hung server took a cancel, a wait
            // and a cancel more to fail).
            drop(Self::pending_cancel(this, false));
        }
        Err(failed)
    }
}
