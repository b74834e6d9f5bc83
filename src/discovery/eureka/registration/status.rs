//! The registrant's status calls, and which statuses this registration
//! ever sent or holds as an override.
//!
//! Eureka keeps the status of a status call (`PUT …/status?value=…`) as
//! the instance's override, whoever sent it: the registrant, or an
//! operator (`PUT /eureka/apps/APP/ID/status?value=OUT_OF_SERVICE`,
//! Spinnaker's or Asgard's "disable", Spring Boot Admin, the Eureka
//! dashboard's tooling), and serves it over the status a registration
//! carries (`OverrideExistsRule`), except DOWN and STARTING, served over
//! any override (`DownOrStartingRule`). So the registrant sends DOWN and
//! STARTING in a registration's body (as Java's client sends every
//! status: `register.rs`), OUT_OF_SERVICE (its drain) as a status call,
//! and UP in a registration's body, unless it holds an override of its
//! own (`Shared::held`: its drain, or one it found its own), which it
//! removes first (`DELETE …/status?value=UP`, then `PUT …/status?value=UP`:
//! an undrain leaves no override).
//!
//! An operator's override stays through the registrant's own status
//! changes, as with Java's client: a health flap (DOWN, then UP) is
//! served DOWN, then the operator's OUT_OF_SERVICE again; a start through
//! STARTING disabled by a deployer meanwhile is served OUT_OF_SERVICE once
//! UP (`tests/eureka_operator_override.rs`). Only the registrant's own
//! drain goes with its own `set_status(Up)`, and an operator's override set
//! over that drain (replacing it) goes with it; a drain over an
//! OUT_OF_SERVICE the server serves or holds as its override already (an
//! operator's set before it: the status call keeps it) is not held, nor
//! stamped (a raised stamp the server did not store made the next heartbeat
//! 404 and re-register, which held it), so that override stays. A
//! repeated `set_status` of the wanted status sends nothing (as Java's
//! `ApplicationInfoManager.setInstanceStatus` fires no change; except an
//! override the server held before this registration's first UP, which an
//! explicit `set_status(Up)` removes), a re-registration with UP sends UP
//! again only when the server that took it serves an override this
//! registration holds or left (one its undrain removed, stamped before
//! that undrain, at a peer that missed it), and so do the late-write
//! read-backs for the statuses of calls no server answered (`late.rs`).

use std::sync::atomic::Ordering;

use http::StatusCode;

use super::super::client::{Fetched, LeaseCall};
use super::first_up::Found;
use super::first_up::bit;
use super::{Shared, expect};
use crate::error::DiscoveryError;
use crate::instance::InstanceStatus;

impl Shared {
    /// Records that `status` was sent as an override (in a registration's
    /// body or a status call), whether or not a server answered.
    pub(super) fn note_sent(&self, status: InstanceStatus) {
        self.sent.fetch_or(bit(status), Ordering::AcqRel);
    }

    /// Notes `status` as an override this registration may hold at a
    /// server: its own change to UP removes it first.
    pub(super) fn hold(&self, status: InstanceStatus) {
        if status != InstanceStatus::Up {
            self.held.fetch_or(bit(status), Ordering::AcqRel);
        }
    }

    /// Whether this registration ever sent `status`.
    pub(super) fn was_sent(&self, status: InstanceStatus) -> bool {
        self.sent.load(Ordering::Acquire) & bit(status) != 0
    }

    /// Sends the wanted status, and marks it sent if the server took it
    /// and it is still the one wanted. Call with `op` held.
    /// DOWN and STARTING, and UP while this registration holds no
    /// override of its own, go in a registration's body (see the module
    /// docs); OUT_OF_SERVICE, and UP over its own override, as a status
    /// call.
    pub(super) async fn send_status_locked(&self) -> Result<(), DiscoveryError> {
        let status = self.status();
        let held = self.held.load(Ordering::Acquire);
        if super::register::in_body(status) || (status == InstanceStatus::Up && held == 0) {
            return Box::pin(self.register_locked(true)).await.and_then(|r| r);
        }
        let undrain_at = super::now_ms();
        // The server that served `status` already, its override then left
        // unheld (see `served_already_locked`).
        let mut unheld_at = None;
        if status == InstanceStatus::Up {
            self.clear_override_locked().await;
        } else if self.held.load(Ordering::Acquire) & bit(status) == 0 {
            unheld_at = self.served_already_locked(status).await;
            if unheld_at.is_none() {
                self.hold(status);
            }
        }
        // A drain's stamp is raised when it is sent, and only where the
        // call changes the override: over one the server holds already it
        // is a no-op that keeps the old stamp, and a raised one made the
        // next heartbeat 404 and re-register, which held the operator's
        // override as the drain's own (see `set_status`).
        if self.drain_dirty.swap(false, Ordering::AcqRel) && unheld_at.is_none() {
            self.mark_dirty();
        }
        let path = format!(
            "{}/status?value={}&lastDirtyTimestamp={}",
            self.path(),
            status.as_str(),
            self.dirty()
        );
        let call = self.sending(status);
        let answer = call.answered(self.http.send(LeaseCall::Status, &path, None).await)?;
        if unheld_at.is_some_and(|at| at != answer.server) {
            // Taken by another server than the one read: its own there.
            self.hold(status);
        }
        expect(&answer, &[StatusCode::OK])?;
        if status == InstanceStatus::Up {
            // Its overrides removed (or replaced by UP) where the call
            // went. A peer that missed it is the re-registrations' and
            // read-backs' to correct (`sent`, `undoable`).
            self.held.fetch_and(!held, Ordering::AcqRel);
            self.released.fetch_or(held, Ordering::AcqRel);
            self.released_at.store(undrain_at, Ordering::Release);
        }
        if self.status() == status {
            self.status_taken();
        }
        Ok(())
    }

    /// Before its drain (a status call to `status`, OUT_OF_SERVICE):
    /// reads the instance at the server lease calls try first, and returns
    /// that server if it serves `status` already or holds it as the
    /// override (`overriddenStatus`: an operator's disable served DOWN
    /// while the app reports DOWN). Eureka's `statusUpdate` keeps the
    /// override there whoever's it was (an operator's disable set before
    /// the drain), and the drain is not held: the undrain then goes in a
    /// registration's body, which leaves it (before, the undrain deleted an
    /// operator's OUT_OF_SERVICE set before the app's own drain: served UP
    /// 5 of 5 renewals; helper 228; and one set before a DOWN the app
    /// drained from: attack 62e). A failed read holds the drain, as before.
    /// Cost: one GET per drain. Call with `op` held.
    async fn served_already_locked(&self, status: InstanceStatus) -> Option<String> {
        let server = self.http.lease_server()?.to_owned();
        let path = self.path();
        let read = self.http.get_at(&server, &path, |body, at| {
            let (served, _) = super::first_up::decode_served(body, at)?;
            Ok((served, super::kept::decode_dirty(body, at)?.1))
        });
        match read.await {
            Ok(Fetched::Found((served, overridden)))
                if served == status || overridden == Some(status) =>
            {
                tracing::info!(app = %self.app, id = %self.id, served = served.as_str(), %server, "Eureka serves the drain's status already (an operator's override); the drain leaves it as it is");
                Some(server)
            }
            _ => None,
        }
    }

    /// Before a status call to UP: removes the server's override
    /// (`DELETE …/status?value=UP`, as Spring Cloud's `CANCEL_OVERRIDE`),
    /// which sets UP where an override existed and leaves none; the status
    /// call after it is then a no-op there (Eureka's `statusUpdate` keeps
    /// an override only when the status changes), and sets UP, as an
    /// override, only where none was removed (a drain that came in a
    /// registration's body). Without the removal an undrain left an UP
    /// override at every peer, and a peer cut off during a later drain
    /// kept it over the drained registration it then took from its peer,
    /// serving the drained instance UP for good (a real two-peer cluster,
    /// a 45 s partition, one peer restarted: 40 of 40 reads UP; helper
    /// 176, `tests/eureka_drain_partition.rs`). Sent only over an override
    /// this registration holds (`Shared::held`): an operator's override
    /// set over its drain (replacing it) goes with it; one set while it
    /// held none stays (UP then goes in a registration's body). A
    /// failed removal leaves the status call to do what it did before;
    /// one unanswered arms the late-write read-backs as an UP call does
    /// (landing after a later drain, it serves the instance UP).
    async fn clear_override_locked(&self) {
        let path = format!(
            "{}/status?value=UP&lastDirtyTimestamp={}",
            self.path(),
            self.dirty()
        );
        let call = self.sending(InstanceStatus::Up);
        let sent = self.http.send(LeaseCall::ClearOverride, &path, None).await;
        if let Err(e) = call.answered(sent) {
            tracing::debug!(app = %self.app, id = %self.id, error = %e, "could not remove the status override before sending UP");
        }
    }

    /// Records `status` as wanted and sends it; nothing when it is the
    /// status wanted already and the server took it, or once the
    /// registration is shut down (by another handle's `shutdown`).
    pub(super) async fn set_status(&self, status: InstanceStatus) -> Result<(), DiscoveryError> {
        let was = std::mem::replace(
            &mut *self.status.lock().unwrap_or_else(|e| e.into_inner()),
            status,
        );
        if was == status {
            // No change: the server holds it, or an override someone set
            // since (an operator's OUT_OF_SERVICE), which a call would
            // undo. Unless a call for it has not succeeded yet, or it is UP
            // over an override the server held before this run, still
            // served.
            let stale = status == InstanceStatus::Up && self.override_from_before_run().await;
            if !stale && !self.status_unsent.load(Ordering::Acquire) {
                return Ok(());
            }
            if stale {
                self.first_up.forget();
            }
        } else {
            // The app's own change: an override found at the start is no
            // longer removed by a repeated UP (replaced by its drain, or
            // kept through a flap as any operator's override is).
            self.first_up.forget();
            // Only a change raises the timestamp: a server that holds the
            // status takes the update as a no-op and keeps its timestamp,
            // so a raised one would cost a registration at the next
            // heartbeat. A drain's is raised when it is sent, unless the
            // server holds that override already (`send_status_locked`).
            self.note_replayable(status, super::now_ms());
            let drain = status == InstanceStatus::OutOfService;
            self.drain_dirty.store(drain, Ordering::Release);
            if !drain {
                self.mark_dirty();
            }
        }
        self.status_unsent.store(true, Ordering::Release);
        let _op = self.op.lock().await;
        if self.shut_down.load(Ordering::Acquire) {
            // Cancelled by another handle's shutdown: kept for the next
            // start, sent now it would register the instance again, with
            // nothing left to renew or cancel it (served for its lease,
            // about 240 s; attack 64c).
            return Ok(());
        }
        // The status wanted when the lock is ours: of two racing changes,
        // the last one asked for is the last one sent.
        self.send_status_locked().await
    }

    /// After a registration with UP that `server` took: sends UP as a
    /// status call too when `server` serves an override this registration
    /// left (`OverrideExistsRule` turns the UP registration into it): one
    /// it holds (`held`), one of a call no server answered (`undoable`),
    /// or one its last undrain removed that `server` kept after missing
    /// that undrain (`stale`, read before the registration: see
    /// [`Shared::missed_undrain_locked`]). Any other is kept: an
    /// operator's, even of a status this registration once sent (before,
    /// every status ever sent counted, and a flap's UP that failed once
    /// re-registered over an operator's OUT_OF_SERVICE set after the app's
    /// own undrain and deleted it: served UP 5 of 5 renewals; helper 228).
    /// When it holds none of these, nothing is read. A failed read sends nothing: it arms the late-write
    /// read-backs (`late.rs`), so the next renewals read the instance
    /// again and undo an override of its own then. (It sent UP before: a
    /// read timing out at a peer just restarted, under load, undid an
    /// operator's OUT_OF_SERVICE at both peers.) Call with `op` held.
    ///
    /// At this registration's first UP, a served DOWN or STARTING it never
    /// sent is a previous run's (a run of the same instance id that went
    /// DOWN and died without cancelling): Eureka's rules take those two as
    /// the instance's own report (`DownOrStartingRule`), never an
    /// operator's override, and Java's client sends them in the
    /// registration body, leaving no override. It is undone: a new run was
    /// served DOWN (or STARTING) with every heartbeat until the old lease
    /// expired, and a repeated `set_status(Up)` sent nothing. This is the
    /// one read a start costs when nothing else was sent.
    ///
    /// After the app's own change to UP (`change`), sent in a registration
    /// because this registration held no override of its own, only the
    /// first UP's rules apply: a status it once sent is no override of its
    /// own then (its undrain removed that), and an operator's set since
    /// stays (a drain, an undrain, an operator's OUT_OF_SERVICE and a
    /// DOWN/UP flap keep the operator's). A first UP that is such a change
    /// (a run started STARTING) cannot tell an override from before the
    /// run by its stamp (the registration restamped the record): a served
    /// DOWN or STARTING it never sent is a previous run's as above, any
    /// override the server already held when the run registered (its
    /// `overriddenStatus` then: a crashed run's drain) goes, as the app
    /// asked UP; any other is kept as an operator's (a deployer's disable
    /// while the instance was STARTING), not noted.
    pub(super) async fn undo_own_override_locked(
        &self,
        server: &str,
        change: bool,
        stale: u8,
    ) -> Result<(), DiscoveryError> {
        let own = if change {
            self.held.load(Ordering::Acquire)
        } else {
            self.held.load(Ordering::Acquire)
                | (self.undoable.load(Ordering::Acquire) & !bit(InstanceStatus::Up))
        };
        // An override its undrain removed, still served by `server` (a
        // peer that missed the undrain) as before it (`missed_undrain`).
        let own = own | stale;
        // A run's first UP, or the first read since its read failed.
        let first_up = self.first_up.take() | self.first_up.take_pending();
        let kept = if own == 0 && !first_up {
            true
        } else {
            let read = self
                .http
                .get_at(server, &self.path(), super::first_up::decode_served)
                .await;
            let read = read.map(|fetched| match fetched {
                Fetched::Found((served, stamp)) => {
                    self.first_up.seen(served, stamp);
                    Fetched::Found((served, stamp))
                }
                Fetched::NotFound => Fetched::NotFound,
            });
            match read {
                Ok(Fetched::Found((InstanceStatus::Up, _))) => true,
                Ok(Fetched::Found((served, stamp)))
                    if first_up
                        && !self.was_sent(served)
                        && self.first_up.before_run(stamp)
                        && (!change || super::register::in_body(served)) =>
                {
                    let kept = matches!(self.first_up_found(served, stamp, server), Found::Kept);
                    if !kept {
                        self.hold(served);
                    }
                    kept
                }
                Ok(Fetched::Found((served, _)))
                    if first_up && change && self.first_up.at_start(served) =>
                {
                    tracing::info!(app = %self.app, id = %self.id, served = served.as_str(), %server, "Eureka serves an override held before this run registered; the app's `set_status(Up)` removes it");
                    self.hold(served);
                    false
                }
                Ok(Fetched::Found((served, _))) if own & bit(served) == 0 => {
                    tracing::info!(app = %self.app, id = %self.id, served = served.as_str(), %server, "Eureka keeps an override this registration does not hold (an operator's); left as it is");
                    true
                }
                Ok(Fetched::Found((served, _))) => {
                    // Its own, stale: removed before UP.
                    self.hold(served);
                    false
                }
                Ok(Fetched::NotFound) | Err(_) => {
                    tracing::debug!(app = %self.app, id = %self.id, %server, "could not read the instance back after registering; the next renewals read it");
                    // The read-backs may undo an override of its own, and
                    // the first that succeeds applies the first UP's rules
                    // (before, a failed read left a previous run's DOWN
                    // served for good; helper 200).
                    if first_up {
                        self.first_up.read_failed();
                    }
                    self.arm_late_checks(own);
                    true
                }
            }
        };
        if kept {
            // The registration delivered the UP (a pending UP from a failed
            // call included): the renewals must not send it over the
            // override either. Unless a change raced in.
            if self.status() == InstanceStatus::Up {
                self.status_taken();
            }
            return Ok(());
        }
        self.status_unsent.store(true, Ordering::Release);
        self.send_status_locked().await
    }

    /// Before a re-registration with UP: the bit of an override its last
    /// undrain removed (`released`) that the server the registration goes
    /// to (the one lease calls try first) still serves, last changed more
    /// than [`CLOCK_SKEW_MS`] before that undrain was sent: a peer that
    /// missed the undrain (the registration restamps the record, so its
    /// read-back cannot tell). One changed since is an operator's, kept. 0
    /// when nothing was released or the read fails. Call with `op` held.
    ///
    /// [`CLOCK_SKEW_MS`]: super::first_up::CLOCK_SKEW_MS
    pub(super) async fn missed_undrain_locked(&self) -> (u8, Option<String>) {
        let released = self.released.load(Ordering::Acquire);
        let server = match self.http.lease_server() {
            Some(server) if released != 0 && self.status() == InstanceStatus::Up => server.to_owned(),
            _ => return (0, None),
        };
        let path = self.path();
        let read = self.http.get_at(&server, &path, super::first_up::decode_served);
        let at = self.released_at.load(Ordering::Acquire);
        let stale = match read.await {
            Ok(Fetched::Found((served, stamp)))
                if stamp
                    .updated
                    .is_some_and(|u| u.saturating_add(super::first_up::CLOCK_SKEW_MS) < at) =>
            {
                released & bit(served)
            }
            _ => 0,
        };
        (stale, Some(server))
    }

    /// Whether `set_status(Up)` of the status wanted already is to send
    /// UP over an override from before this run: one noted at the run's
    /// first UP and still served as then (same status, same
    /// `lastUpdatedTimestamp`: an operator's set since, even of the same
    /// status, is kept; helper 203), or, when the first UP's read failed,
    /// any status this registration never sent served at this first read
    /// that succeeds. No server answering sends nothing (it may be an
    /// operator's).
    async fn override_from_before_run(&self) -> bool {
        let pending = self.first_up.take_pending();
        if self.first_up.found() == 0 && !pending {
            return false;
        }
        let read = (self.http)
            .get(&self.path(), true, |_| false, super::first_up::decode_served)
            .await;
        let stale = match read {
            Ok(Fetched::Found((served, stamp))) if pending => {
                served != InstanceStatus::Up
                    && !self.was_sent(served)
                    && self.first_up.before_run(stamp)
            }
            Ok(Fetched::Found((served, stamp))) => self.first_up.still_served(served, stamp),
            Ok(Fetched::NotFound) => false,
            Err(_) => {
                if pending {
                    self.first_up.read_failed();
                }
                false
            }
        };
        if let (true, Ok(Fetched::Found((served, _)))) = (stale, read) {
            // Removed before the UP call.
            self.hold(served);
        }
        stale
    }
}
