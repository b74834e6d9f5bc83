//! Registrations (`POST /apps/{APP}`): the first, a re-registration after
//! a heartbeat's 404, and a status change sent in a registration's body.
//!
//! DOWN and STARTING always go in a registration's body, as Java's client
//! sends every status: Eureka serves them over any override
//! (`DownOrStartingRule`) and leaves its override map alone, so an
//! operator's OUT_OF_SERVICE is served again once the app is UP. Sent as
//! a status call (`PUT …/status?value=DOWN`), a health flap's DOWN
//! replaced the operator's override (Eureka's `statusUpdate`), and the UP
//! after it deleted it: the disabled instance was served UP again
//! (`tests/eureka_operator_override.rs`). UP goes in a registration's
//! body too, unless the registration holds an override of its own to
//! remove first (see `status.rs`).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::StatusCode;

use super::super::client::LeaseCall;
use super::first_up::bit;
use super::{Shared, expect};
use crate::error::DiscoveryError;
use crate::instance::InstanceStatus;

/// Whether `status` is sent in a registration's body alone (no status
/// call after it): DOWN and STARTING, which Eureka serves over any
/// override (`DownOrStartingRule`) without touching it.
pub(super) fn in_body(status: InstanceStatus) -> bool {
    matches!(status, InstanceStatus::Down | InstanceStatus::Starting)
}

impl Shared {
    /// The registration body with `status`. OUT_OF_SERVICE is its
    /// `overriddenStatus` too: Eureka takes a registration's override
    /// where it holds none (`AbstractInstanceRegistry.register`), so a
    /// server that takes a drained re-registration (a peer restarted
    /// empty) keeps the drain over a replicated UP, and the undrain has an
    /// override to remove (`tests/eureka_registration/drain_partition.rs`).
    /// UP, DOWN and STARTING carry none: an override there would outlive
    /// them (UP), or replace nothing and be served over the next UP (DOWN,
    /// STARTING: Eureka serves both over any override anyway).
    pub(super) fn body_with(&self, status: InstanceStatus) -> Result<Bytes, DiscoveryError> {
        let mut instance = self.body.clone();
        if let Some(fields) = instance.as_object_mut() {
            fields.insert("status".to_owned(), status.as_str().into());
            if status == InstanceStatus::OutOfService {
                fields.insert("overriddenStatus".to_owned(), status.as_str().into());
            }
            fields.insert("lastDirtyTimestamp".to_owned(), self.dirty().to_string().into());
        }
        serde_json::to_vec(&serde_json::json!({ "instance": instance }))
            .map(Bytes::from)
            .map_err(|e| DiscoveryError::Other(Box::new(e)))
    }

    /// Registers with the status wanted now, so a re-registration after a
    /// registry restart keeps it (UP stays UP, OUT_OF_SERVICE stays
    /// OUT_OF_SERVICE); OUT_OF_SERVICE is also sent as a status call, as
    /// `set_status` does (over a server's older override, and Eureka's
    /// `LeaseExistsRule` keeps an UP lease UP over a registration's
    /// OUT_OF_SERVICE). `Ok(Err(_))` if the server took the registration
    /// but not the status (it then serves the instance UP; the status
    /// stays unsent). `change`: the registration carries the app's own
    /// status change (`send_status_locked`), not counted in the stats, and
    /// after which only an override it holds is undone. Call with `op`
    /// held.
    pub(super) async fn register_locked(
        &self,
        change: bool,
    ) -> Result<Result<(), DiscoveryError>, DiscoveryError> {
        // Stamped with the time, as Java's client does before it registers
        // again (`setIsDirtyWithTime`): over an existing lease Eureka keeps
        // its copy when that is newer, and an operator's status call
        // stamped with their clock (a cleared override leaves the instance
        // UNKNOWN, its heartbeats 404) would otherwise win every time.
        self.mark_dirty();
        let wanted = self.status();
        // The status (call) after it is due from now: a registration
        // dropped or timed out first leaves it for the next renewal
        // (helper 127).
        self.status_unsent
            .fetch_or(wanted != InstanceStatus::Up, Ordering::AcqRel);
        let (stale, read_at) = if change {
            (0, None)
        } else {
            self.missed_undrain_locked().await
        };
        let mut again = true;
        let answer = loop {
            let sent = self.dirty();
            let body = self.body_with(wanted)?;
            let call = self.registering(wanted);
            if wanted == InstanceStatus::OutOfService {
                self.held.fetch_or(bit(wanted), Ordering::AcqRel);
            }
            let answer = self
                .http
                .send(LeaseCall::Register, &self.app_path(), Some(body))
                .await;
            let answer = call.answered(answer)?;
            expect(&answer, &[StatusCode::NO_CONTENT, StatusCode::OK])?;
            if !change {
                self.registrations.fetch_add(1, Ordering::Relaxed);
            }
            // A copy stamped by a clock ahead of this host's is kept over
            // the registration (see `kept.rs`): once more, stamped past it.
            if !(again && self.kept_newer_copy_locked(&answer.server, sent).await) {
                break answer;
            }
            again = false;
        };
        if wanted == InstanceStatus::Up {
            // Served UP, unless the server keeps an override (see
            // `status.rs`): one this registration left is undone.
            // A peer's missed undrain counts where it was read only.
            let stale = if read_at.as_deref() == Some(&*answer.server) {
                stale
            } else {
                0
            };
            return Ok(self.undo_own_override_locked(&answer.server, change, stale).await);
        }
        if in_body(wanted) {
            // Served as it is (`DownOrStartingRule`). Unless a change
            // raced in.
            if self.status() == wanted {
                self.status_taken();
            }
            return Ok(Ok(()));
        }
        self.status_unsent.store(true, Ordering::Release);
        Ok(self.send_status_locked().await)
    }
}
