//! [`EurekaRegistrationBuilder`]: what is registered, validated once, and
//! the registration body (Eureka's `InstanceInfo` JSON) built from it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The least body limit of a registration's read-back of its own
/// instance record, in bytes (1 MiB; see [`read_back_limit`]).
const READ_BACK_MAX_BYTES: usize = 1024 * 1024;

/// The body limit of a registration's read-back of its own record (gzip
/// inflation stops there too): twice the record it registers plus 64 KiB
/// (the server adds its own fields, and serves the metadata as sent), at
/// least 1 MiB, at most the builder's `max_body_bytes`. With the registry's
/// 128 MiB a 16 KB gzip answer inflated to 16 MiB and more (helper 208); a
/// fixed 1 MiB then refused the real answer of an instance registered with
/// 1.1 MiB of metadata, and every read-back decision was lost (a new run
/// served DOWN for good; helper 215).
fn read_back_limit(max_body_bytes: usize, registered: usize) -> usize {
    let own = registered.saturating_mul(2).saturating_add(64 * 1024);
    max_body_bytes.min(READ_BACK_MAX_BYTES.max(own))
}

mod checks;

pub use checks::MAX_LEASE_PATH_BYTES;
use checks::{check_app, check_id, check_lease_path, check_metadata, check_xml_text};

use super::super::client::Connection;
use super::{EurekaRegistration, Shared};
use crate::error::BuildError;
use crate::instance::InstanceStatus;

/// The longest lease duration Eureka can hold, in seconds: `i32::MAX /
/// 1000`. The server keeps a lease as `durationInSecs * 1000` computed in
/// a Java `int` (`com.netflix.eureka.lease.Lease`), so a longer one wraps
/// (30 days to a negative duration) and the server evicts the instance at
/// its next eviction run, again after every re-registration.
const MAX_LEASE_SECS: u64 = 2_147_483;

/// Configures an [`EurekaRegistration`].
#[must_use]
pub struct EurekaRegistrationBuilder {
    pub(super) connection: Connection,
    pub(super) app: String,
    pub(super) instance_id: Option<String>,
    pub(super) host_name: String,
    pub(super) ip_addr: Option<String>,
    pub(super) port: u16,
    pub(super) secure_port: Option<u16>,
    pub(super) health_path: String,
    pub(super) status_path: String,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) renew_interval: Duration,
    pub(super) lease_duration: Duration,
    pub(super) initial_status: InstanceStatus,
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
    ///
    /// It is a path segment of every heartbeat, status and cancel call,
    /// percent-encoded (a byte outside `A-Za-z0-9-._~` takes 3), so
    /// [`build`](Self::build) refuses an id whose longest lease call would
    /// pass [`MAX_LEASE_PATH_BYTES`] (7 KiB) against a configured server
    /// URL: with `http://host:8761/eureka` and app `USER-API`, 7 079 plain
    /// bytes at most, or 2 358 bytes of two-byte UTF-8 characters. Eureka's
    /// server refuses a longer request line (8 KiB with the headers) with
    /// 400, so the instance registered and then vanished.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// The IP address registered as `ipAddr`. Default: the host name.
    /// Checked at [`build`](Self::build) as the host name is (readers
    /// with `preferIpAddress` connect to it).
    pub fn ip_addr(mut self, ip: impl Into<String>) -> Self {
        self.ip_addr = Some(ip.into());
        self
    }

    /// Also register an enabled secure (https) port. Default: none. Port
    /// 0 is refused at [`build`](Self::build).
    pub fn secure_port(mut self, port: u16) -> Self {
        self.secure_port = Some(port);
        self
    }

    /// Path of the health URL (`healthCheckUrl`). Default `/health`. One
    /// holding a character XML 1.0 forbids is refused at [`build`](Self::build).
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.health_path = path.into();
        self
    }

    /// Path of the status page URL (`statusPageUrl`). Default `/info`. One
    /// holding a character XML 1.0 forbids is refused at [`build`](Self::build).
    pub fn status_path(mut self, path: impl Into<String>) -> Self {
        self.status_path = path.into();
        self
    }

    /// Adds a metadata entry (`zone` is read by zone-aware callers).
    ///
    /// Eureka writes each key as an XML element name, and each value as
    /// its text, in its XML registry (`GET /apps/`, one document for every
    /// app), so [`build`](Self::build) refuses a key that is not an XML
    /// name without `:` (a letter or `_` first, then letters, digits, `-`,
    /// `_` or `.`: `zone`, `management.port`) and a value holding a
    /// character XML 1.0 forbids (a control character U+0000 to U+001F
    /// other than tab, LF and CR; U+FFFE, U+FFFF). Before, an empty key
    /// (`<>`) or a NUL (`&#x0;`) made the whole registry's XML malformed
    /// for every XML reader, other apps' records included. The error
    /// names the key, never the value.
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
    /// seconds (rounded down, as it is sent), at least 1 and at most
    /// 2 147 483 s (24.8 days: Eureka keeps it in milliseconds in a Java
    /// `int`; longer is refused at [`build`](Self::build)). Default 90 s.
    /// A lease that stops being renewed is kept about twice this long by
    /// the Eureka server, then evicted at its next eviction run (every
    /// 60 s by default): see [`RegistrationHandle`](super::RegistrationHandle).
    pub fn lease_duration(mut self, duration: Duration) -> Self {
        self.lease_duration = Duration::from_secs(duration.as_secs().max(1));
        self
    }

    /// The status registered first. Default `UP`. `UNKNOWN` is refused at
    /// [`build`](Self::build) (see [`RegistrationHandle::set_status`](super::RegistrationHandle::set_status)).
    pub fn initial_status(mut self, status: InstanceStatus) -> Self {
        self.initial_status = status;
        self
    }

    /// Builds the registration (nothing is sent until
    /// [`start`](EurekaRegistration::start)).
    ///
    /// # Errors
    /// [`BuildError::Invalid`] for missing or bad URLs, an empty app name,
    /// a bad host or `ip_addr` (one [`Instance::new`](crate::Instance::new)
    /// refuses), port 0 or secure port 0 (registered as an enabled
    /// `securePort` of 0, nothing a client can connect to), a lease
    /// duration longer than 2 147 483 s or not longer than the
    /// renew interval, or an initial status of `UNKNOWN`. Also, naming the
    /// key (`instance id`, `app name`, `metadata`, `health path`, `status
    /// path`) and, for lengths, the percent-encoded length and the limit: an
    /// instance id that is empty, `.`, `..` or holds `/`, `%`, `\`, a
    /// control character, U+FFFE or U+FFFF (Eureka's server answers every
    /// lease call of an id with `\` 400, and writes the id into its XML
    /// registry); a health or status path holding a character XML 1.0
    /// forbids (a C0 control but tab, LF and CR; U+FFFE; U+FFFF); an instance id
    /// or app name whose longest lease call (`…/apps/{APP}/{id}/status?
    /// value=OUT_OF_SERVICE&lastDirtyTimestamp=` and 19 digits, after the
    /// longest server URL path) passes [`MAX_LEASE_PATH_BYTES`] once
    /// percent-encoded (`app name` when the app leaves no room for an id or
    /// the id is the default one); a metadata key that is not an XML name
    /// or a value holding a character XML 1.0 forbids (see
    /// [`metadata`](Self::metadata)).
    pub fn build(self) -> Result<EurekaRegistration, BuildError> {
        let app = self.app.trim().to_ascii_uppercase();
        check_app(&app)?;
        let lease = self.lease_duration.as_secs();
        if lease > MAX_LEASE_SECS {
            return Err(invalid(
                "lease duration",
                &format!(
                    "{lease} s is longer than {MAX_LEASE_SECS} s (Eureka keeps a lease in \
                     milliseconds in a Java int, which a longer one overflows: the server \
                     evicts the instance at once)"
                ),
            ));
        }
        if self.initial_status == InstanceStatus::Unknown {
            return Err(invalid("initial status", UNKNOWN_REFUSED));
        }
        if self.lease_duration <= self.renew_interval {
            return Err(invalid(
                "lease duration",
                "must be longer than the renew interval, or the lease expires between renewals",
            ));
        }
        let host = self.host_name.trim().to_owned();
        crate::instance::Instance::new(&app, &host, self.port.max(1))?;
        // Readers that prefer the IP address (`preferIpAddress`) take it as
        // the host: one they would skip must not be registered either.
        if let Some(ip) = &self.ip_addr {
            crate::instance::Instance::new(&app, ip.trim(), self.port.max(1))?;
        }
        if self.port == 0 {
            return Err(invalid("port", "port 0"));
        }
        if self.secure_port == Some(0) {
            return Err(invalid("secure port", "port 0"));
        }
        let vip = app.to_ascii_lowercase();
        let id = self
            .instance_id
            .clone()
            .unwrap_or_else(|| format!("{host}:{vip}:{}", self.port));
        check_id(&id)?;
        check_lease_path(&self.connection.urls, &app, &id, self.instance_id.is_some())?;
        check_metadata(&self.metadata)?;
        check_xml_text("health path", &self.health_path)?;
        check_xml_text("status path", &self.status_path)?;
        let body = self.body(&app, &host, &vip, &id);
        // The registration reads back only its own record.
        let registered = serde_json::to_vec(&body).map_or(0, |b| b.len());
        let mut connection = self.connection;
        connection.settings.max_body_bytes =
            read_back_limit(connection.settings.max_body_bytes, registered);
        Ok(EurekaRegistration {
            shared: Arc::new(Shared {
                http: connection.build()?,
                app,
                id,
                body,
                renew_interval: self.renew_interval,
                status: Mutex::new(self.initial_status),
                status_unsent: AtomicBool::new(false),
                sent: AtomicU8::new(0),
                held: AtomicU8::new(0),
                released: AtomicU8::new(0),
                released_at: AtomicU64::new(0),
                replay_from: AtomicU64::new(0),
                replays: AtomicU32::new(0),
                taken_ms: AtomicU64::new(0),
                drain_dirty: AtomicBool::new(false),
                dirty: AtomicU64::new(super::now_ms()),
                op: tokio::sync::Mutex::new(()),
                shut_down: AtomicBool::new(false),
                late_checks: AtomicU32::new(0),
                late_beats: AtomicU32::new(0),
                runs: AtomicU64::new(0),
                ended: AtomicBool::new(false),
                undoable: AtomicU8::new(0),
                first_up: super::first_up::FirstUp::new(),
                registrations: AtomicU64::new(0),
                renewals: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        })
    }

    /// The registration body without its status (set at each
    /// registration from the status wanted then).
    fn body(&self, app: &str, host: &str, vip: &str, id: &str) -> serde_json::Value {
        let slash = |p: &str| {
            if p.starts_with('/') {
                p.to_owned()
            } else {
                format!("/{p}")
            }
        };
        let ip = self.ip_addr.as_deref().map_or(host, str::trim).to_owned();
        let base = format!("http://{}:{}", authority_host(host), self.port);
        serde_json::json!({
            "instanceId": id,
            "hostName": host,
            "app": app,
            "ipAddr": ip,
            "vipAddress": vip,
            "secureVipAddress": vip,
            "port": {"$": self.port, "@enabled": "true"},
            "securePort": {
                "$": self.secure_port.unwrap_or(443),
                "@enabled": if self.secure_port.is_some() { "true" } else { "false" },
            },
            "healthCheckUrl": format!("{base}{}", slash(&self.health_path)),
            "statusPageUrl": format!("{base}{}", slash(&self.status_path)),
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
        })
    }
}

/// Why `UNKNOWN` is refused as a registrant's status.
pub(super) const UNKNOWN_REFUSED: &str = "UNKNOWN is not a status to register: Eureka answers \
     every heartbeat of an instance it serves as UNKNOWN with 404 (a cleared override), so it \
     would register again at every renewal; use DOWN, OUT_OF_SERVICE or STARTING";

fn invalid(key: &'static str, reason: &str) -> BuildError {
    BuildError::invalid(key, reason.to_owned())
}

fn authority_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_back_limit_follows_the_registered_record() {
        const MIB: usize = 1024 * 1024;
        assert_eq!(read_back_limit(128 * MIB, 2_000), MIB);
        assert_eq!(read_back_limit(128 * MIB, 1_100_000), 2_200_000 + 64 * 1024);
        assert_eq!(read_back_limit(512 * 1024, 2_000), 512 * 1024);
        assert_eq!(read_back_limit(3 * MIB, usize::MAX), 3 * MIB);
    }

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
        // The longest id of the docs' example (`/eureka`, `USER-API`).
        assert!(build("user-api", |b| b.instance_id("i".repeat(7_079))).is_ok());
        assert!(build("user-api", |b| b.instance_id("i".repeat(7_080))).is_err());
        assert!(build("user-api", |b| b.instance_id("é".repeat(1_179))).is_ok());
        assert!(build("user-api", |b| b.instance_id("é".repeat(1_180))).is_err());
        // Metadata Eureka would write into its XML registry malformed.
        assert!(build("user-api", |b| b.metadata("", "v")).is_err());
        assert!(build("user-api", |b| b.metadata("zone", "a\u{0}b")).is_err());
        assert!(build("user-api", |b| b.metadata("management.port", "8081\n")).is_ok());
        assert!(build("user-api", |b| b.lease_duration(Duration::from_secs(30))).is_err());
        // The lease is sent in whole seconds: 1.9 s is a lease of 1 s,
        // shorter than renewals every 1.5 s (it built before, and the
        // server let the lease lapse between renewals).
        let short = |b: EurekaRegistrationBuilder| {
            b.lease_duration(Duration::from_millis(1_900))
                .renew_interval(Duration::from_millis(1_500))
        };
        assert!(build("user-api", short).is_err());
        let whole = |b: EurekaRegistrationBuilder| {
            b.lease_duration(Duration::from_millis(2_900))
                .renew_interval(Duration::from_millis(1_500))
        };
        assert!(build("user-api", whole).is_ok());
        let ok = build("user-api", |b| b.health_path("health")).unwrap();
        let body = ok.shared.body_with(InstanceStatus::Up).expect("body");
        let body = String::from_utf8_lossy(&body).into_owned();
        assert!(body.contains("http://127.0.0.1:8080/health"), "{body}");
        assert_eq!(ok.instance_id(), "127.0.0.1:user-api:8080");
        assert!(
            EurekaRegistration::builder("x", "127.0.0.1", 0)
                .server_urls("http://h/e")
                .build()
                .is_err()
        );
        // `ipAddr` is a host to readers that prefer it: checked the same.
        for ip in ["a b", "10.0.0.1\r\nX", "010.0.0.1", "a..b", ""] {
            assert!(build("user-api", |b| b.ip_addr(ip)).is_err(), "{ip:?}");
        }
        let ok = build("user-api", |b| b.ip_addr(" 10.0.0.2 ")).unwrap();
        let body = ok.shared.body_with(InstanceStatus::Up).expect("body");
        let body = String::from_utf8_lossy(&body).into_owned();
        assert!(body.contains(r#""ipAddr":"10.0.0.2""#), "{body}");
        assert!(
            EurekaRegistration::builder("x", "a b", 1)
                .server_urls("http://h/e")
                .build()
                .is_err()
        );
    }
}
