//! [`EurekaRegistration`]: register the running service in Eureka, so Java
//! callers (Spring Cloud Gateway `lb://` routes, Feign, Ribbon) reach it.
//!
//! Follows the Java client's lease protocol:
//! - `POST /apps/{APP}` with the instance (expects 204);
//! - `PUT /apps/{APP}/{id}` every renew interval (default 30 s); a 404 means
//!   the server forgot the instance (a restart, an eviction), so it is
//!   registered again at once;
//! - `PUT /apps/{APP}/{id}/status?value=OUT_OF_SERVICE` to change the
//!   status (kept, and sent again after a re-registration);
//! - `DELETE /apps/{APP}/{id}` on graceful shutdown.
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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};

pub use builder::EurekaRegistrationBuilder;

use super::client::{Connection, EurekaHttp};
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
    /// Held for the whole of every exchange with the server (register,
    /// renew, status, cancel), so they never overlap: a cancel waits for a
    /// registration in flight instead of racing it.
    op: tokio::sync::Mutex<()>,
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

    /// The registration body with `status`.
    fn body_with(&self, status: InstanceStatus) -> Result<Bytes, DiscoveryError> {
        let mut instance = self.body.clone();
        if let Some(fields) = instance.as_object_mut() {
            fields.insert("status".to_owned(), status.as_str().into());
        }
        serde_json::to_vec(&serde_json::json!({ "instance": instance }))
            .map(Bytes::from)
            .map_err(|e| DiscoveryError::Other(Box::new(e)))
    }

    /// Registers with the status wanted now, so a re-registration after a
    /// registry restart keeps it (UP stays UP, OUT_OF_SERVICE stays
    /// OUT_OF_SERVICE); a status other than UP is also set as the
    /// server's override, as `set_status` does. Call with `op` held.
    async fn register_locked(&self) -> Result<(), DiscoveryError> {
        let wanted = self.status();
        let body = self.body_with(wanted)?;
        let answer = self
            .http
            .send(Method::POST, &self.app_path(), Some(body))
            .await?;
        expect(answer, &[StatusCode::NO_CONTENT, StatusCode::OK])?;
        self.registrations.fetch_add(1, Ordering::Relaxed);
        if wanted != InstanceStatus::Up {
            self.put_status_locked(wanted).await?;
        }
        Ok(())
    }

    async fn register(&self) -> Result<(), DiscoveryError> {
        let _op = self.op.lock().await;
        self.register_locked().await
    }

    async fn put_status(&self, status: InstanceStatus) -> Result<(), DiscoveryError> {
        let _op = self.op.lock().await;
        self.put_status_locked(status).await
    }

    async fn put_status_locked(&self, status: InstanceStatus) -> Result<(), DiscoveryError> {
        let path = format!("{}/status?value={}", self.path(), status.as_str());
        let answer = self.http.send(Method::PUT, &path, None).await?;
        expect(answer, &[StatusCode::OK])
    }

    /// Renews; registers again on 404.
    async fn renew(&self) -> Result<(), DiscoveryError> {
        let _op = self.op.lock().await;
        let answer = self.http.send(Method::PUT, &self.path(), None).await?;
        if answer.0 == StatusCode::NOT_FOUND {
            tracing::info!(app = %self.app, id = %self.id, "Eureka lost the registration; registering again");
            return self.register_locked().await;
        }
        expect(answer, &[StatusCode::OK])?;
        self.renewals.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// `Ok` if the answer's status is one of `ok`, else a `Status` error naming
/// the server that answered.
fn expect((code, server): (StatusCode, String), ok: &[StatusCode]) -> Result<(), DiscoveryError> {
    if ok.contains(&code) {
        Ok(())
    } else {
        Err(DiscoveryError::Status {
            server,
            status: code.as_u16(),
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
    /// The first registration's [`DiscoveryError`]; nothing runs then.
    pub async fn start(self) -> Result<RegistrationHandle, DiscoveryError> {
        self.shared.register().await?;
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
    /// Successful registrations (the first, and every re-registration).
    pub registrations: u64,
    /// Successful renewals.
    pub renewals: u64,
    /// Failed renewals or re-registrations.
    pub failures: u64,
}

/// A running registration. [`shutdown`](Self::shutdown) cancels it in
/// Eureka; dropping the handle only stops renewing (the lease then expires
/// after its duration, 90 s by default).
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
    /// kept for re-registrations.
    ///
    /// # Errors
    /// [`DiscoveryError`] if no server accepted it (the wanted status is
    /// still kept and sent with the next re-registration).
    pub async fn set_status(&self, status: InstanceStatus) -> Result<(), DiscoveryError> {
        *self.shared.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
        self.shared.put_status(status).await
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

    /// Stops renewing and cancels the registration (`DELETE`), so callers
    /// stop routing here at their next fetch.
    ///
    /// # Errors
    /// [`DiscoveryError`] if no server accepted the cancel (the lease then
    /// expires by itself). A 404 (already gone) is success.
    pub async fn shutdown(mut self) -> Result<(), DiscoveryError> {
        // Wait for an exchange in flight (a renewal that re-registers) to
        // finish, then stop the renewals while holding the lock, so no
        // registration can land after the cancel.
        let _op = self.shared.op.lock().await;
        self.task.take();
        let answer = self
            .shared
            .http
            .send(Method::DELETE, &self.shared.path(), None)
            .await?;
        if answer.0 == StatusCode::NOT_FOUND {
            return Ok(());
        }
        expect(answer, &[StatusCode::OK])
    }
}
