//! A status change replicated ahead of the undrain before it.
//!
//! An undrain removes the drain's override (`DELETE …/status?value=UP`,
//! see `status.rs`). A replicating Eureka server queues each change for
//! its peers keyed by kind and instance (`Register#…`, `StatusUpdate#…`,
//! `DeleteStatusOverride#…`) and sends them in batches (every 500 ms); a
//! newer change of a kind already queued replaces the queued one in its
//! place (`AcceptorExecutor`, Netflix/eureka
//! `eureka-core/.../cluster/ReplicationTaskProcessor.java` and
//! `eureka-core/.../util/batcher/AcceptorExecutor.java`). So statuses
//! changed quickly after an undrain (a health flap DOWN, UP, the drain,
//! the undrain, a flap DOWN, a drain again) reach the peer as the last
//! registration, the last status update, and then the undrain's removal,
//! which sets UP there. Both servers then hold the same
//! `lastDirtyTimestamp`, so replicated heartbeats get 200, and the
//! read-backs (`late.rs`) go to the server that took the heartbeat: the
//! peer served the draining instance UP for good (a real two-peer
//! cluster: 1 to 4 of 6 apps, 10 of 10 reads UP 20 s later; helper 249).
//!
//! Here a change to a status other than UP within [`REPLICATION_WINDOW_MS`] (30 s)
//! of an undrain is sent again at the first renewals at least
//! [`REPLAY_AFTER_MS`] (1 s, 5 s and 20 s) later (past the batching delay,
//! and again should a loaded server have sent its batch late): a status update,
//! which the server replicates even when it changes nothing, or a
//! registration with a raised `lastDirtyTimestamp` for a status that goes
//! in a registration's body (DOWN, STARTING), which the peer takes over
//! its copy. The peer then serves the wanted status from such a renewal on
//! (at most one renew interval, 30 s by default, after the change; with a
//! 500 ms interval under load, a resend 1 s after the change was once
//! queued ahead of the removal still, so there are three). A replication
//! outage longer than 20 s still queues the resends behind the removal;
//! not covered. A resend is skipped when a server took the wanted status
//! again since it was due (a late-write read-back's correction in the same
//! renewal, which runs first). Cost: up to three status calls or registrations per such
//! change.

use std::sync::atomic::Ordering;

use super::Shared;
use crate::error::DiscoveryError;
use crate::instance::InstanceStatus;

/// How long after an undrain a change may be replicated ahead of it:
/// Eureka's `maxTimeForReplication` default (30 000 ms), how long a
/// queued change waits for its batch.
pub(super) const REPLICATION_WINDOW_MS: u64 = 30_000;

/// How long after such a change its resends wait at least: past
/// Eureka's 500 ms batching delay (`maxBatchingDelay`), so a resend is
/// queued after the removal was sent, and twice more for a server whose
/// batch went out late.
pub(super) const REPLAY_AFTER_MS: [u64; 3] = [1_000, 5_000, 20_000];

impl Shared {
    /// A server took the wanted status (a status call or a registration
    /// carrying it): sent, and, for a resend due before now, sent again.
    pub(super) fn status_taken(&self) {
        self.status_unsent.store(false, Ordering::Release);
        self.taken_ms.store(super::now_ms(), Ordering::Release);
    }

    /// The app changed its status to `status` at `now_ms`: one within
    /// the replication window of the last undrain is to be sent again.
    pub(super) fn note_replayable(&self, status: InstanceStatus, now_ms: u64) {
        let undrain = self.released_at.load(Ordering::Acquire);
        let replay = status != InstanceStatus::Up
            && undrain != 0
            && now_ms.saturating_sub(undrain) < REPLICATION_WINDOW_MS;
        // The change's time; the resends done so far are `replays`.
        self.replay_from.store(if replay { now_ms } else { 0 }, Ordering::Release);
        self.replays.store(0, Ordering::Release);
    }

    /// After a renewal the server answered: sends the wanted status again
    /// when a resend is due (see the module docs). Call with `op` held.
    pub(super) async fn replay_locked(&self, now_ms: u64) -> Result<(), DiscoveryError> {
        let from = self.replay_from.load(Ordering::Acquire);
        let done = self.replays.load(Ordering::Acquire) as usize;
        let Some(due_at) = REPLAY_AFTER_MS.get(done).map(|after| from.saturating_add(*after)) else {
            return Ok(());
        };
        if from == 0 || now_ms < due_at {
            return Ok(());
        }
        // Past every offset already passed: one resend per renewal.
        let passed = REPLAY_AFTER_MS
            .iter()
            .filter(|after| now_ms >= from.saturating_add(**after))
            .count();
        self.replays.store(passed as u32, Ordering::Release);
        let status = self.status();
        // Taken again since it was due (the late-write read-back's
        // correction in this renewal, a change's own call): replicated
        // after the removal already.
        if status == InstanceStatus::Up || self.taken_ms.load(Ordering::Acquire) >= due_at {
            return Ok(());
        }
        tracing::info!(app = %self.app, id = %self.id, status = status.as_str(), "sending the status again past the replication of an undrain before it");
        if super::register::in_body(status) {
            // A registration the peer takes over its copy only if newer.
            self.mark_dirty();
        }
        self.status_unsent.store(true, Ordering::Release);
        self.send_status_locked().await
    }
}
