//! [`EurekaRegistration`]: register the running service in Eureka, so Java
//! callers (Spring Cloud Gateway `lb://` routes, Feign, Ribbon) reach it.
//!
//! Follows the Java client's lease protocol:
//! - `POST /apps/{APP}` with the instance (expects 204);
//! - `PUT /apps/{APP}/{id}?status=…&lastDirtyTimestamp=…` every renew
//!   interval (default 30 s); a 404 means the server forgot the instance (a
//!   restart, an eviction) or holds a copy older than the instance's last
//!   change (it missed a status change its peer took), so it is registered
//!   again at once, with the status wanted now and a `lastDirtyTimestamp`
//!   raised to the time (as Java's client does), so the server takes it
//!   over a copy it holds;
//! - `PUT /apps/{APP}/{id}/status?value=OUT_OF_SERVICE` to drain (kept,
//!   and sent again after a re-registration). Eureka does not always
//!   serve the status a registration carries (over an existing UP lease,
//!   its `LeaseExistsRule` keeps UP; an override it kept wins), so a drain
//!   lives in the server only once this call succeeds: until one does,
//!   every renewal sends it again, and a
//!   [`start`](EurekaRegistration::start) or a re-registration whose
//!   drain cannot be set cancels the registration it made, so a draining
//!   instance is never left UP. DOWN and STARTING go in a registration's
//!   body (`POST /apps/{APP}`, as Java's client sends them), which Eureka
//!   serves over any override and which leaves the override in place, so
//!   an operator's OUT_OF_SERVICE is served again once the app is UP. UP
//!   goes in a registration's body too, unless the registration holds an
//!   override of its own (its drain): that is removed first
//!   (`DELETE /apps/{APP}/{id}/status?value=UP`, as Spring Cloud's
//!   `CANCEL_OVERRIDE`, then a status call to UP), so an undrain leaves
//!   none that a peer cut off during a later drain would serve over it. A
//!   registration with UP sends UP as a status call too only over an
//!   override the registration itself left at that server; an operator's
//!   override (a status this registration never sent, or one set after
//!   its own undrain) is never undone by a heartbeat, a re-registration,
//!   the app's own status changes, nor by a repeated `set_status` of the
//!   wanted status (see `status.rs`);
//! - `DELETE /apps/{APP}/{id}` on graceful shutdown.
//!
//! Each call tries the configured servers in order, starting at the one
//! that answered the last lease call, until one answers it,
//! as the Java client does: a 2xx, or a 404 to a registration or
//! heartbeat. Any other answer (transport error, timeout, 3xx, 4xx such as
//! a 429, 5xx) moves on to the next server, so one peer that rate-limits
//! or refuses does not cost the lease while another is healthy. A
//! cancel's 404 moves on too (a server that restarted empty does not hold
//! an instance its peers still serve); 404 from every server is "already
//! gone".
//!
//! A register or status call that timed out (or failed after connecting)
//! at a server may still land there later: a hung server (a paused JVM)
//! applies it when it wakes, and replicates it. For the next 10 renewals
//! the registration then reads the instance back from the server that took
//! the heartbeat, and sends the wanted status again when that server
//! serves another (see `late.rs`).
//!
//! Over an existing lease Eureka keeps its copy when that copy is stamped
//! later than the registration (by a clock ahead of this host's: a
//! previous run's, an operator's). Every registration reads the instance
//! back from the server that took it and, over such a copy, registers once
//! more stamped past it (see `kept.rs`).
//!
//! Renewals go on through a Eureka outage (each failure is logged and
//! counted), and the instance is registered again when the server is back.
//!
//! ```no_run
//! use tower_ribbon::discovery::eureka::EurekaRegistration;
//! use tower_ribbon::InstanceStatus;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registration = EurekaRegistration::builder("user-api", "127.0.0.1", 8088)
//!     .server_urls("http://127.0.0.1:8761/eureka")
//!     .metadata("zone", "zone-a")
//!     .build()?;
//! let handle = registration.start().await?;
//! // ... serve ...
//! handle.set_status(InstanceStatus::OutOfService).await?;
//! handle.shutdown().await?;
//! # Ok(()) }
//! ```

mod builder;
mod first_up;
mod kept;
mod late;
mod register;
mod replay;
mod runs;
mod status;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;

pub use builder::{EurekaRegistrationBuilder, MAX_LEASE_PATH_BYTES};

use super::client::{Connection, EurekaHttp, LeaseAnswer, LeaseCall};
use crate::discovery::TaskGuard;
use crate::error::DiscoveryError;
use crate::instance::InstanceStatus;

struct Shared {
    http: EurekaHttp,
    app: String,
    id: String,
    /// The `instance` object without `status`.
    body: serde_json::Value,
    renew_interval: Duration,
    /// The status wanted now: registered with, and set again after, every
    /// (re-)registration.
    status: Mutex<InstanceStatus>,
    /// Whether the server may not hold the wanted status: a status change
    /// or a (re-)registration with a status other than UP whose status
    /// call has not succeeded. Every renewal sends the status until one
    /// does (Eureka would serve the instance UP meanwhile).
    status_unsent: AtomicBool,
    /// The statuses this registration ever sent as an override (a bit
    /// each, see `status.rs`; DOWN and STARTING go in a registration's
    /// body and leave none): a served status it never sent is no
    /// previous run's nor late write of its own.
    sent: AtomicU8,
    /// The overrides of this registration's own a server may hold now (an
    /// OUT_OF_SERVICE it sent, one it found its own and is undoing): its
    /// own change to UP removes them (`DELETE …/status`) before its UP
    /// call; with none, UP goes in a registration's body, which an
    /// operator's override outlives (see `status.rs`).
    held: AtomicU8,
    /// The overrides its last undrain removed (`held` then), and when
    /// that undrain was sent (ms, this host's clock): a re-registration
    /// undoes one a peer that missed the undrain still serves, if it was
    /// stamped well before that (see `status.rs`).
    released: AtomicU8,
    released_at: AtomicU64,
    /// When a change after an undrain was made, to be sent again (ms,
    /// this host's clock; 0: none), and the resends done (see `replay.rs`).
    replay_from: AtomicU64,
    replays: AtomicU32,
    /// When a server last took the wanted status (ms, this host's clock).
    taken_ms: AtomicU64,
    /// The instance's `lastDirtyTimestamp` (ms since the epoch): set at build, raised by every
    /// status change and (re-)registration, sent with every registration, status update and
    /// heartbeat, as the Java client does. A server whose copy is older (it missed a status change:
    /// a peer took it and went down before replicating it) answers the heartbeat 404, so the
    /// instance registers there again with the status wanted now.
    dirty: AtomicU64,
    /// A change to OUT_OF_SERVICE whose timestamp is still to be raised:
    /// its status call raises it, unless the server serves that override
    /// already (the call is a no-op there and keeps the old stamp, so a
    /// raised one cost a 404 and a re-registration; see `status.rs`).
    drain_dirty: AtomicBool,
    /// Held for the whole of every exchange with the server (register,
    /// renew, status, cancel), so they never overlap: a cancel waits for a
    /// registration in flight instead of racing it.
    op: tokio::sync::Mutex<()>,
    /// Set by a shutdown (under `op`), cleared by a start: a registration
    /// started twice (from clones) shares its instance, and the other
    /// handle's renewals must not register it again after the cancel.
    shut_down: AtomicBool,
    /// Renewals left that read the instance back, for a late write: set to
    /// `late::LATE_WRITE_CHECKS` (10) by a register or status call some
    /// server may have taken without answering.
    late_checks: AtomicU32,
    /// Renewals left after a heartbeat no server answered (`note_late_heartbeat`).
    late_beats: AtomicU32,
    /// Starts that registered: a cancel a dropped shutdown owes is for its run only.
    runs: AtomicU64,
    /// Set by a shutdown, cleared by a start, which then drops what was armed.
    ended: AtomicBool,
    /// The statuses (bits, see `status.rs`) the armed read-backs may undo
    /// when a server serves one: those of calls no server answered, and
    /// after a re-registration whose read-back failed, the overrides this
    /// registration left. Cleared with the last read-back.
    undoable: AtomicU8,
    /// The run's first registration with UP (see `first_up.rs`).
    first_up: first_up::FirstUp,
    registrations: AtomicU64,
    renewals: AtomicU64,
    failures: AtomicU64,
}

impl Shared {
    fn app_path(&self) -> String {
        format!(
            "apps/{}",
            percent_encoding::utf8_percent_encode(&self.app, super::PATH_SEGMENT)
        )
    }

    fn path(&self) -> String {
        format!(
            "{}/{}",
            self.app_path(),
            percent_encoding::utf8_percent_encode(&self.id, super::PATH_SEGMENT)
        )
    }

    fn status(&self) -> InstanceStatus {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dirty(&self) -> u64 {
        self.dirty.load(Ordering::Acquire)
    }

    /// Raises the dirty timestamp to now, and at least by one, but never
    /// past the latest stamp Eureka parses (a Java `long`): after a
    /// re-registration over a copy stamped there, one more past it made
    /// every status call and renewal an error 500 (the drain never
    /// reached the server, and the lease ran out).
    fn mark_dirty(&self) {
        let _ = self
            .dirty
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |was| {
                Some(now_ms().max(was.saturating_add(1)).min(kept::MAX_STAMP))
            });
    }

    /// Renews; registers again on 404 (the server forgot the instance, or
    /// its copy is older than the dirty timestamp); sends the wanted
    /// status again if the server may not hold it.
    async fn renew(&self) -> Result<(), DiscoveryError> {
        let _op = self.op.lock().await;
        if self.shut_down.load(Ordering::Acquire) {
            // Cancelled by another handle's shutdown: nothing to renew,
            // and a 404 must not register it again.
            return Ok(());
        }
        let path = format!(
            "{}?status={}&lastDirtyTimestamp={}",
            self.path(),
            self.status().as_str(),
            self.dirty()
        );
        let beat = self.beating();
        let answer = beat.answered(self.http.send(LeaseCall::Renew, &path, None).await)?;
        if answer.status == StatusCode::NOT_FOUND {
            tracing::info!(app = %self.app, id = %self.id, "Eureka lost the registration or holds an older copy; registering again");
            let registered = self.register_locked(false).await?;
            if registered.is_err() && self.status() != InstanceStatus::Up {
                // Taken without its status, the registration is served UP:
                // cancelled, as `start` does, so a draining instance is
                // gone rather than UP until the next renewal registers it
                // again (and sends the status again).
                if let Err(cancel) = self.cancel_locked().await {
                    tracing::warn!(app = %self.app, id = %self.id, error = %cancel, "could not cancel a re-registration whose status was not set; Eureka serves it UP until the next renewal");
                }
            }
            return registered;
        }
        expect(&answer, &[StatusCode::OK])?;
        self.renewals.fetch_add(1, Ordering::Relaxed);
        if self.status_unsent.load(Ordering::Acquire) {
            tracing::info!(app = %self.app, id = %self.id, status = self.status().as_str(), "sending the instance status again");
            self.send_status_locked().await?;
        }
        self.check_late_write_locked(&answer.server).await?;
        self.replay_locked(now_ms()).await
    }

    /// Cancels the registration (`DELETE`) at the first server that holds
    /// it; 404 from every server (already gone) is success. Call with `op`
    /// held.
    pub(super) async fn cancel_locked(&self) -> Result<(), DiscoveryError> {
        match self.http.send(LeaseCall::Cancel, &self.path(), None).await {
            Ok(_) => Ok(()),
            Err(e) if all_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether every server answered 404.
fn all_not_found(e: &DiscoveryError) -> bool {
    match e {
        DiscoveryError::Status { status, .. } => *status == 404,
        DiscoveryError::AllServersFailed(all) => !all.is_empty() && all.iter().all(all_not_found),
        _ => false,
    }
}

/// `Ok` if the answer's status is one of `ok`, else a `Status` error naming
/// the server that answered.
fn expect(answer: &LeaseAnswer, ok: &[StatusCode]) -> Result<(), DiscoveryError> {
    if ok.contains(&answer.status) {
        Ok(())
    } else {
        Err(DiscoveryError::Status {
            server: answer.server.clone(),
            status: answer.status.as_u16(),
        })
    }
}

/// A registration of the running service, ready to [`start`](Self::start).
#[derive(Clone)]
pub struct EurekaRegistration {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EurekaRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EurekaRegistration")
            .field("app", &self.shared.app)
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

impl EurekaRegistration {
    /// Starts configuring the registration of `app` reachable at
    /// `host_name:port`.
    pub fn builder(
        app: impl Into<String>,
        host_name: impl Into<String>,
        port: u16,
    ) -> EurekaRegistrationBuilder {
        EurekaRegistrationBuilder {
            connection: Connection::default(),
            app: app.into(),
            instance_id: None,
            host_name: host_name.into(),
            ip_addr: None,
            port,
            secure_port: None,
            health_path: "/health".to_owned(),
            status_path: "/info".to_owned(),
            metadata: BTreeMap::new(),
            renew_interval: Duration::from_secs(30),
            lease_duration: Duration::from_secs(90),
            initial_status: InstanceStatus::Up,
        }
    }

    /// The app name (upper case).
    pub fn app(&self) -> &str {
        &self.shared.app
    }

    /// The instance id.
    pub fn instance_id(&self) -> &str {
        &self.shared.id
    }

    /// Registers, then renews in the background until the handle is shut
    /// down or dropped.
    ///
    /// # Errors
    /// The first registration's [`DiscoveryError`]; nothing runs then. With
    /// an initial status other than UP, an error setting it cancels the
    /// registration the server took (Eureka would serve it UP), so a
    /// failed start leaves nothing registered.
    pub async fn start(self) -> Result<RegistrationHandle, DiscoveryError> {
        {
            let _op = self.shared.op.lock().await;
            Shared::start_locked(&self.shared).await?;
        }
        let weak = Arc::downgrade(&self.shared);
        let interval = self.shared.renew_interval;
        let task = TaskGuard::new(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(shared) = weak.upgrade() else { return };
                if let Err(e) = shared.renew().await {
                    shared.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(app = %shared.app, id = %shared.id, error = %e, "Eureka renewal failed; retrying next interval");
                }
            }
        }));
        Ok(RegistrationHandle {
            shared: self.shared,
            task: Some(task),
        })
    }
}

/// Counts of what a registration has done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistrationStats {
    /// Successful registrations (the first, every re-registration, and
    /// each one sent again over a copy stamped later; see the module docs).
    /// A status change sent in a registration's body is not counted.
    pub registrations: u64,
    /// Successful renewals.
    pub renewals: u64,
    /// Failed renewals or re-registrations.
    pub failures: u64,
}

/// A running registration. [`shutdown`](Self::shutdown) cancels it in
/// Eureka; a dropped handle stops renewing, and Eureka keeps a renewed
/// lease about **twice** its duration (`Lease.isExpired` adds it again),
/// then evicts within 60 s: up to about 240 s at the default 90 s lease.
#[must_use = "a dropped handle stops renewing: keep it while serving, then call `shutdown`"]
pub struct RegistrationHandle {
    shared: Arc<Shared>,
    task: Option<TaskGuard>,
}

impl std::fmt::Debug for RegistrationHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationHandle")
            .field("app", &self.shared.app)
            .field("id", &self.shared.id)
            .field("stats", &self.stats())
            .finish()
    }
}

impl RegistrationHandle {
    /// Changes the registered status (`UP`, `OUT_OF_SERVICE`, `DOWN`, ...);
    /// kept for re-registrations. The status wanted already, once a
    /// server took it, sends nothing (as Java's `setInstanceStatus`): an
    /// operator's override set since is kept; one held before this
    /// registration's first UP registration (a previous run's drain, or an
    /// operator's), kept at the start as Java's client keeps it, is removed
    /// by `set_status(Up)` until the app's own status changes. A change
    /// keeps an operator's override too (a DOWN/UP flap is served DOWN,
    /// then the override again; a start through STARTING disabled
    /// meanwhile is served OUT_OF_SERVICE once UP): only this
    /// registration's own drain goes with its change to UP. Once a clone's
    /// handle has shut the registration down, it sends nothing and returns
    /// `Ok`: the status is kept for the next `start` (sent, it registered
    /// the cancelled instance again, with nothing to renew or cancel it).
    ///
    /// # Errors
    /// [`DiscoveryError`] if no server accepted it; the wanted status is
    /// still kept, and sent again with every renewal (and re-registration)
    /// until the server takes it. A server that timed out may apply the
    /// call later, over a newer status: then each of the next 10 renewals
    /// also reads the instance back (one `GET`) and sends the status again
    /// if the server that took the heartbeat serves another.
    /// [`DiscoveryError::Other`] at once for `UNKNOWN` (nothing changes):
    /// Eureka 404s every heartbeat of an `UNKNOWN` instance, so it would
    /// register again at every renewal (`AbstractInstanceRegistry.renew`).
    pub async fn set_status(&self, status: InstanceStatus) -> Result<(), DiscoveryError> {
        if status == InstanceStatus::Unknown {
            return Err(DiscoveryError::Other(builder::UNKNOWN_REFUSED.into()));
        }
        self.shared.set_status(status).await
    }

    /// The status last asked for.
    pub fn status(&self) -> InstanceStatus {
        self.shared.status()
    }

    /// Renews now (registering again on 404), outside the schedule.
    ///
    /// # Errors
    /// [`DiscoveryError`] if no server accepted it.
    pub async fn renew_now(&self) -> Result<(), DiscoveryError> {
        self.shared.renew().await
    }

    /// What the registration has done.
    pub fn stats(&self) -> RegistrationStats {
        RegistrationStats {
            registrations: self.shared.registrations.load(Ordering::Relaxed),
            renewals: self.shared.renewals.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
        }
    }

    /// Stops renewing and cancels the registration (`DELETE`), so callers stop routing here at
    /// their next fetch; after a registration or heartbeat that went unanswered (it may land late;
    /// a late heartbeat in a cluster registers it again), again a request timeout and 2 s later.
    /// Handles of it started from clones stop renewing too (they would register it), until restarted.
    /// Dropped before it returns (a caller's time limit), the cancels still due are sent at their time
    /// by a task of its own, unless the registration is started again; that needs the runtime to run
    /// on, so give `shutdown` its time before the process exits.
    ///
    /// # Errors
    /// [`DiscoveryError`] if no server accepted the cancel (the lease then expires by itself, after
    /// about twice its duration: see [`RegistrationHandle`]). A
    /// 404 moves on to the next server, which may hold the instance; 404 from every one is success.
    pub async fn shutdown(mut self) -> Result<(), DiscoveryError> {
        // Wait for an exchange in flight (a renewal that re-registers) to finish, then stop the
        // renewals while holding the lock, so no registration can land after the cancel.
        let pending = Shared::pending_cancel(&self.shared, true);
        let _op = self.shared.op.lock().await;
        self.task.take();
        self.shared.end_run();
        Shared::cancel_twice_if_late_locked(&self.shared, pending).await
    }
}
