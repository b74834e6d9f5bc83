//! A lease write that lands late.
//!
//! A register or status call that timed out at a server (or failed after
//! connecting) may still reach that server's registry: a server that hangs
//! (a paused JVM, a stop-the-world pause) reads the request when it wakes
//! and applies it, after later calls went to the next server. Eureka
//! applies a status update whatever its `lastDirtyTimestamp`
//! (`AbstractInstanceRegistry.statusUpdate` sets the status with
//! `setStatusWithoutDirty`, and only raises the stored timestamp), and a
//! replicating server passes it on to its peers. So an UP that timed out at
//! a hung server, then a drain to DOWN taken by the next one, ends with the
//! draining instance served UP once the hung server wakes; heartbeats carry
//! the same `lastDirtyTimestamp` as the stored copy, so they get 200
//! (`InstanceResource.validateDirtyTimestamp`) and nothing corrects it.
//! Java's client has the same gap: its `RetryableEurekaHttpClient` moves
//! on from a time-out, and neither `DiscoveryClient` nor Spring Cloud's
//! `EurekaServiceRegistry` reads the instance back (Netflix/eureka,
//! `eureka-core/.../registry/AbstractInstanceRegistry.java`,
//! `eureka-core/.../resources/InstanceResource.java`,
//! `eureka-client/.../shared/transport/decorator/RetryableEurekaHttpClient.java`).
//!
//! Here such a call arms [`LATE_WRITE_CHECKS`] read-backs: each of the next
//! 10 successful renewals also reads the instance (`GET
//! {base}/apps/{APP}/{id}`, JSON) from the server that took the heartbeat,
//! and, when that server serves a status other than the one wanted, raises
//! the dirty timestamp and sends the status again (a status update, which
//! the server applies over the late one and replicates; a registration
//! would not do: over an existing lease Eureka keeps the stored copy when
//! its timestamp is not older, and its `LeaseExistsRule` keeps UP). A
//! late write landing after these renewals (5 minutes at the default 30 s
//! interval) is not corrected. Cost: one GET per renewal while armed only;
//! none otherwise. A served status that no unanswered call of this
//! registration carried is no late write of its own (an operator's
//! override, even of a status this registration once sent in a call a
//! server answered): it is kept.

use std::sync::atomic::Ordering;

use super::super::client::{Fetched, LeaseAnswer};
use super::Shared;
use crate::error::DiscoveryError;
use super::first_up::{bit, decode_served};
use crate::instance::InstanceStatus;

/// How many renewals after a register or status call that some server may
/// have taken without answering also read the instance back (10: five
/// minutes at the default 30 s renew interval).
pub(super) const LATE_WRITE_CHECKS: u32 = 10;

/// In `Shared::undoable`: an unanswered call was a registration, which a
/// server may still apply after the shutdown's cancel (no status's bit).
pub(super) const REGISTRATION: u8 = 32;

/// A register or status call on its way: dropped before its answer (the
/// caller's future dropped mid-call, as a `tokio::time::timeout` around
/// `set_status` does), it arms the read-backs, as a call that timed out
/// does: the request may be at a server, which applies it later. Without
/// it a `set_status(Up)` dropped while a slow server held it, then a drain
/// the server answered, left the draining instance served UP for good
/// (20 of 20 reads over 41 renewals; helper 125).
pub(super) struct Sending<'a> {
    shared: &'a Shared,
    /// The statuses the call may make a server serve (bits, see `bit`).
    undoable: u8,
    answered: bool,
}

impl Sending<'_> {
    /// The call's answer: arms the read-backs when the call may have
    /// reached a server that did not answer (see
    /// [`Shared::note_late_write`]).
    pub(super) fn answered(
        mut self,
        answer: Result<LeaseAnswer, DiscoveryError>,
    ) -> Result<LeaseAnswer, DiscoveryError> {
        self.answered = true;
        self.shared.note_late_write(self.undoable, answer)
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.arm_late_checks(self.undoable);
        }
    }
}

/// A heartbeat on its way (see [`Shared::beating`]).
pub(super) struct Beat<'a> {
    shared: &'a Shared,
    answered: bool,
}

impl Beat<'_> {
    /// The heartbeat's answer (see [`Shared::note_late_heartbeat`]).
    pub(super) fn answered(
        mut self,
        answer: Result<LeaseAnswer, DiscoveryError>,
    ) -> Result<LeaseAnswer, DiscoveryError> {
        self.answered = true;
        self.shared.note_late_heartbeat(answer)
    }
}

impl Drop for Beat<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.late_beats.store(LATE_WRITE_CHECKS, Ordering::Release);
        }
    }
}

impl Shared {
    /// Marks `status` sent (see `status.rs`) for a register or status call
    /// about to go out; give the call's answer to
    /// [`Sending::answered`].
    pub(super) fn sending(&self, status: InstanceStatus) -> Sending<'_> {
        self.note_sent(status);
        Sending {
            shared: self,
            undoable: bit(status),
            answered: false,
        }
    }

    /// As [`Shared::sending`], for a registration carrying `status`: one
    /// that lands late over an UP lease this registration left at a server
    /// is served UP (Eureka's `LeaseExistsRule` keeps the lease's status),
    /// not `status`, so UP is undoable too once this registration sent UP.
    /// (A re-registration carrying OUT_OF_SERVICE after a 404, dropped or
    /// timed out at a peer holding the UP lease, landed there later and the
    /// draining instance was served UP for good: 12 of 12 reads, 100 of 100
    /// requests; helper 127.) A registration that never sent UP leaves an
    /// UP someone else set alone: made undoable for every registration, a
    /// start dropped before its answer undid an operator's enable of an
    /// instance registered OUT_OF_SERVICE (0 of 12 renewals served UP, a
    /// Spinnaker-style rollout; helper 129).
    ///
    /// DOWN and STARTING in a registration's body leave no override, so
    /// they are not noted sent (an override of either served later is not
    /// this registration's), only undoable while they may land late.
    pub(super) fn registering(&self, status: InstanceStatus) -> Sending<'_> {
        let up_sent = self.was_sent(InstanceStatus::Up);
        let mut call = if super::register::in_body(status) {
            Sending {
                shared: self,
                undoable: bit(status),
                answered: false,
            }
        } else {
            self.sending(status)
        };
        call.undoable |= REGISTRATION;
        if up_sent {
            call.undoable |= bit(InstanceStatus::Up);
        }
        call
    }

    /// Arms the read-backs when a register or status call carrying
    /// `status` may have reached a server that did not answer (a time-out,
    /// a transport error after connecting), whether another server
    /// answered or none did: `status` may land late, and the read-backs
    /// may undo it.
    pub(super) fn note_late_write(
        &self,
        undoable: u8,
        answer: Result<LeaseAnswer, DiscoveryError>,
    ) -> Result<LeaseAnswer, DiscoveryError> {
        let late = match &answer {
            Ok(answer) => answer.unanswered,
            Err(e) => super::super::client::maybe_delivered(e),
        };
        if late {
            self.arm_late_checks(undoable);
        }
        answer
    }

    /// A heartbeat about to go out; give its answer to [`Beat::answered`].
    /// Dropped before its answer (a `tokio::time::timeout` around
    /// `renew_now`), it may still land, and arms the second cancel as an
    /// unanswered one does (helper 147).
    pub(super) fn beating(&self) -> Beat<'_> {
        Beat {
            shared: self,
            answered: false,
        }
    }

    /// A heartbeat's answer: one some server may have taken without
    /// answering (`Shared::late_beats`) arms the shutdown's second cancel
    /// for the next [`LATE_WRITE_CHECKS`] renewals; each answered renewal
    /// counts one down.
    ///
    /// Such a heartbeat landing at a peer after the shutdown's cancel
    /// reached the other peer brings the instance back there: the late
    /// peer replicates the heartbeat, its partner answers 404, and
    /// Eureka's `PeerEurekaNode.heartbeat` failure handler registers the
    /// late peer's copy, UP (a two-peer cluster served the shut-down
    /// instance UP in 19 of 23 reads over 6 s, and for its whole lease;
    /// helper 145). It arms nothing else: a heartbeat sets no status, and
    /// re-arming the read-backs kept the statuses of an old drain
    /// undoable, so an operator's OUT_OF_SERVICE was undone at the next
    /// renewal however long after that drain (helper 146).
    pub(super) fn note_late_heartbeat(
        &self,
        answer: Result<LeaseAnswer, DiscoveryError>,
    ) -> Result<LeaseAnswer, DiscoveryError> {
        let late = match &answer {
            Ok(answer) => answer.unanswered,
            Err(e) => super::super::client::maybe_delivered(e),
        };
        if late {
            self.late_beats.store(LATE_WRITE_CHECKS, Ordering::Release);
        } else if answer.is_ok() {
            let _ = (self.late_beats).fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                n.checked_sub(1)
            });
        }
        answer
    }

    /// Arms the read-backs, which may undo a served status of `undoable`
    /// (bits, see `status.rs`) besides those armed before.
    pub(super) fn arm_late_checks(&self, undoable: u8) {
        self.undoable.fetch_or(undoable, Ordering::AcqRel);
        self.late_checks.store(LATE_WRITE_CHECKS, Ordering::Release);
    }

    /// While read-backs are armed, reads the instance from `server` (the
    /// one that took the heartbeat) and sends the wanted status again if it
    /// serves another. A failed read is logged and left (the next renewal
    /// reads again while armed). Call with `op` held.
    pub(super) async fn check_late_write_locked(&self, server: &str) -> Result<(), DiscoveryError> {
        let Ok(left) = self
            .late_checks
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(1)
            })
        else {
            return Ok(());
        };
        let undoable = if left == 1 {
            // The last read-back: nothing stays armed after it.
            self.undoable.swap(0, Ordering::AcqRel)
        } else {
            self.undoable.load(Ordering::Acquire)
        };
        let read = self.http.get_at(server, &self.path(), decode_served).await;
        if left == 1 && !matches!(read, Ok(Fetched::Found(_))) {
            // The last read-back failed: a first-UP decision still pending
            // lapses with it.
            self.first_up.take_pending();
        }
        let (served, stamp) = match read {
            Ok(Fetched::Found(served)) => served,
            Ok(Fetched::NotFound) => return Ok(()),
            Err(e) => {
                tracing::debug!(app = %self.app, id = %self.id, error = %e, "could not read the instance back");
                return Ok(());
            }
        };
        self.first_up.seen(served, stamp);
        // After a failed first-UP read, the first read that succeeds
        // applies the first UP's rules (see `first_up.rs`).
        let first_up = self.first_up.take_pending();
        let wanted = self.status();
        if served == wanted {
            return Ok(());
        }
        let previous_run = first_up
            && wanted == InstanceStatus::Up
            && !self.was_sent(served)
            && self.first_up.before_run(stamp)
            && matches!(
                self.first_up_found(served, stamp, server),
                super::first_up::Found::PreviousRun
            );
        if !previous_run && undoable & bit(served) == 0 {
            // Not a write of this registration landing late: an override
            // someone else set (an operator's), kept (see `status.rs`).
            // Also when this registration once sent that status in a call
            // a server answered: such a call lands no later (before, an
            // operator's OUT_OF_SERVICE was undone at the next heartbeat
            // when the registration had once drained itself).
            tracing::info!(app = %self.app, id = %self.id, served = served.as_str(), %server, "Eureka serves a status no unanswered call of this registration carried (an operator's override); left as it is");
            return Ok(());
        }
        tracing::warn!(app = %self.app, id = %self.id, served = served.as_str(), wanted = wanted.as_str(), %server, "Eureka serves another status than the one wanted (a write that timed out landed late); sending it again");
        if wanted == InstanceStatus::Up && (previous_run || !super::register::in_body(served)) {
            // Its own override (or a previous run's): removed before UP.
            // A late DOWN or STARTING registration of its own left none:
            // an UP registration replaces it.
            self.hold(served);
        }
        self.mark_dirty();
        self.status_unsent.store(true, Ordering::Release);
        self.send_status_locked().await
    }
}

/// The `status` of a `GET /apps/{APP}/{id}` JSON answer
/// (`{"instance":{"status":"UP",…}}`); a status this crate does not know is
/// `Unknown`.
#[cfg(test)]
pub(super) fn decode_status(
    body: &[u8],
    at: std::time::Instant,
) -> Result<InstanceStatus, super::super::wire::WireError> {
    decode_served(body, at).map(|(status, _)| status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_read_from_an_instance_answer() {
        let at = std::time::Instant::now();
        let body = br#"{"instance":{"instanceId":"a:b:1","status":"OUT_OF_SERVICE","port":{"$":1}}}"#;
        assert_eq!(
            decode_status(body, at).unwrap(),
            InstanceStatus::OutOfService
        );
        let odd = br#"{"instance":{"status":"PAUSED"}}"#;
        assert_eq!(decode_status(odd, at).unwrap(), InstanceStatus::Unknown);
        assert!(decode_status(b"<instance/>", at).is_err());
        assert!(decode_status(br#"{"application":{}}"#, at).is_err());
        for (updated, read) in [("1700000000123", Some(1_700_000_000_123)), ("\"17\"", Some(17)), ("null", None), ("-1", None)] {
            let body = format!(r#"{{"instance":{{"status":"UP","lastUpdatedTimestamp":{updated}}}}}"#);
            let (status, stamp) = decode_served(body.as_bytes(), at).unwrap();
            assert_eq!((status, stamp.updated), (InstanceStatus::Up, read));
        }
    }
}
