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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};

use super::client::{Connection, EurekaHttp};
use crate::discovery::TaskGuard;
use crate::error::{BuildError, DiscoveryError};
use crate::instance::InstanceStatus;

/// Configures an [`EurekaRegistration`].
#[must_use]
pub struct EurekaRegistrationBuilder {
    connection: Connection,
    app: String,
    instance_id: Option<String>,
    host_name: String,
    ip_addr: Option<String>,
    port: u16,
    secure_port: Option<u16>,
    health_path: String,
    status_path: String,
    metadata: BTreeMap<String, String>,
    renew_interval: Duration,
    lease_duration: Duration,
    initial_status: InstanceStatus,
}

impl std::fmt::Debug for EurekaRegistrationBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EurekaRegistrationBuilder")
            .field("urls", &self.connection.redacted_urls())
            .field("app", &self.app)
            .field("host_name", &self.host_name)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl EurekaRegistrationBuilder {
    connection_setters!();

    /// The instance id. Default `{host_name}:{app lower case}:{port}`
    /// (Spring Cloud's default form).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// The IP address registered as `ipAddr`. Default: the host name.
    pub fn ip_addr(mut self, ip: impl Into<String>) -> Self {
        self.ip_addr = Some(ip.into());
        self
    }

    /// Also register an enabled secure (https) port. Default: none.
    pub fn secure_port(mut self, port: u16) -> Self {
        self.secure_port = Some(port);
        self
    }

    /// Path of the health URL (`healthCheckUrl`). Default `/health`.
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.health_path = path.into();
        self
    }

    /// Path of the status page URL (`statusPageUrl`). Default `/info`.
    pub fn status_path(mut self, path: impl Into<String>) -> Self {
        self.status_path = path.into();
        self
    }

    /// Adds a metadata entry (`zone` is read by zone-aware callers).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Time between renewals. Spring key
    /// `eureka.instance.lease-renewal-interval-in-seconds`. Values under
    /// 100 ms are raised to 100 ms. Default 30 s.
    pub fn renew_interval(mut self, interval: Duration) -> Self {
        self.renew_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// How long the server keeps the lease without a renewal. Spring key
    /// `eureka.instance.lease-expiration-duration-in-seconds`; whole
    /// seconds, at least 1. Default 90 s.
    pub fn lease_duration(mut self, duration: Duration) -> Self {
        self.lease_duration = duration.max(Duration::from_secs(1));
        self
    }

    /// The status registered first. Default `UP`.
    pub fn initial_status(mut self, status: InstanceStatus) -> Self {
        self.initial_status = status;
        self
    }

    /// Builds the registration (nothing is sent until
    /// [`start`](EurekaRegistration::start)).
    ///
    /// # Errors
    /// [`BuildError::Invalid`] for missing or bad URLs, an empty app name,
    /// host or port 0.
    pub fn build(self) -> Result<EurekaRegistration, BuildError> {
        let invalid =
            |key: &str, reason: &str| BuildError::invalid(key.to_owned(), reason.to_owned());
        let app = self.app.trim().to_ascii_uppercase();
        let name_ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if !name_ok(&app) {
            return Err(invalid(
                "app name",
                &format!("`{app}`: use letters, digits, `-`, `_` and `.`"),
            ));
        }
        if self.lease_duration <= self.renew_interval {
            return Err(invalid(
                "lease duration",
                "must be longer than the renew interval, or the lease expires between renewals",
            ));
        }
        let host = self.host_name.trim().to_owned();
        crate::instance::Instance::new(&app, &host, self.port.max(1))?;
        if self.port == 0 {
            return Err(invalid("port", "port 0"));
        }
        let http = self.connection.build()?;
        let vip = app.to_ascii_lowercase();
        let id = self
            .instance_id
            .unwrap_or_else(|| format!("{host}:{vip}:{}", self.port));
        if id.trim().is_empty()
            || id == "."
            || id == ".."
            || id.contains('/')
            || id.contains('%')
            || id.chars().any(char::is_control)
        {
            return Err(invalid(
                "instance id",
                &format!("`{id}`: empty, `.`/`..`, or holds `/`, `%` or a control character"),
            ));
        }
        let slash = |p: String| {
            if p.starts_with('/') {
                p
            } else {
                format!("/{p}")
            }
        };
        let (health_path, status_path) = (slash(self.health_path), slash(self.status_path));
        let ip = self.ip_addr.unwrap_or_else(|| host.clone());
        let base = format!("http://{}:{}", authority_host(&host), self.port);
        let body = serde_json::json!({
            "instanceId": id,
            "hostName": host,
            "app": app,
            "ipAddr": ip,
            "vipAddress": vip,
            "secureVipAddress": vip,
            "status": self.initial_status.as_str(),
            "port": {"$": self.port, "@enabled": "true"},
            "securePort": {
                "$": self.secure_port.unwrap_or(443),
                "@enabled": if self.secure_port.is_some() { "true" } else { "false" },
            },
            "healthCheckUrl": format!("{base}{health_path}"),
            "statusPageUrl": format!("{base}{status_path}"),
            "homePageUrl": format!("{base}/"),
            "dataCenterInfo": {
                "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                "name": "MyOwn",
            },
            "leaseInfo": {
                "renewalIntervalInSecs": self.renew_interval.as_secs().max(1),
                "durationInSecs": self.lease_duration.as_secs().max(1),
            },
            "metadata": self.metadata,
        });
        let body = serde_json::to_vec(&serde_json::json!({ "instance": body }))
            .map_err(|e| invalid("registration body", &e.to_string()))?;
        Ok(EurekaRegistration {
            shared: Arc::new(Shared {
                http,
                app,
                id,
                body: Bytes::from(body),
                renew_interval: self.renew_interval,
                status: Mutex::new(self.initial_status),
                registrations: AtomicU64::new(0),
                renewals: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        })
    }
}

fn authority_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

struct Shared {
    http: EurekaHttp,
    app: String,
    id: String,
    body: Bytes,
    renew_interval: Duration,
    status: Mutex<InstanceStatus>,
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

    async fn register(&self) -> Result<(), DiscoveryError> {
        let answer = self
            .http
            .send(Method::POST, &self.app_path(), Some(self.body.clone()))
            .await?;
        expect(answer, &[StatusCode::NO_CONTENT, StatusCode::OK])?;
        self.registrations.fetch_add(1, Ordering::Relaxed);
        // A status set through `set_status` survives re-registration.
        let wanted = self.status();
        if wanted != InstanceStatus::Up {
            self.put_status(wanted).await?;
        }
        Ok(())
    }

    async fn put_status(&self, status: InstanceStatus) -> Result<(), DiscoveryError> {
        let path = format!("{}/status?value={}", self.path(), status.as_str());
        let answer = self.http.send(Method::PUT, &path, None).await?;
        expect(answer, &[StatusCode::OK])
    }

    /// Renews; registers again on 404.
    async fn renew(&self) -> Result<(), DiscoveryError> {
        let answer = self.http.send(Method::PUT, &self.path(), None).await?;
        if answer.0 == StatusCode::NOT_FOUND {
            tracing::info!(app = %self.app, id = %self.id, "Eureka lost the registration; registering again");
            return self.register().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn build(
        app: &str,
        f: impl FnOnce(EurekaRegistrationBuilder) -> EurekaRegistrationBuilder,
    ) -> Result<EurekaRegistration, BuildError> {
        f(EurekaRegistration::builder(app, "127.0.0.1", 8080)
            .server_urls("http://127.0.0.1:1/eureka"))
        .build()
    }

    #[test]
    fn bad_names_paths_and_leases_are_refused() {
        for app in ["", "..", "a#b", "a%2Fb", "my app", "a/b"] {
            assert!(build(app, |b| b).is_err(), "{app:?}");
        }
        assert!(build("user-api", |b| b.instance_id("..")).is_err());
        assert!(build("user-api", |b| b.instance_id("a/b")).is_err());
        assert!(build("user-api", |b| b.lease_duration(Duration::from_secs(30))).is_err());
        let ok = build("user-api", |b| b.health_path("health")).unwrap();
        let body = String::from_utf8_lossy(&ok.shared.body).into_owned();
        assert!(body.contains("http://127.0.0.1:8080/health"), "{body}");
        assert_eq!(ok.instance_id(), "127.0.0.1:user-api:8080");
        assert!(
            EurekaRegistration::builder("x", "127.0.0.1", 0)
                .server_urls("http://h/e")
                .build()
                .is_err()
        );
        assert!(
            EurekaRegistration::builder("x", "a b", 1)
                .server_urls("http://h/e")
                .build()
                .is_err()
        );
    }
}
