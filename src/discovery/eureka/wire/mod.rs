//! Eureka's JSON wire format, decoded leniently per record and strictly per
//! payload, in bounded memory and time.
//!
//! Eureka's JSON is converted from XML, and it shows:
//! - a one-element list may arrive as an object, an absent list as a
//!   missing key (`application`, `instance`);
//! - ports look like `{"$": 8080, "@enabled": "true"}`, with `$` a number or
//!   a string and `@enabled` a string or a bool;
//! - empty metadata is `{"@class": "java.util.Collections$EmptyMap"}`, and
//!   that `@class` is not a metadata key;
//! - `overriddenStatus` is also spelled `overriddenstatus`.
//!
//! # Records and payloads
//!
//! A record that cannot be used (no host, no enabled port, a bad address)
//! is skipped, listed in [`Application::rejected`] with its
//! [`RecordError`] (list elements that are not objects are only counted),
//! and the rest of the list is kept; one warning per
//! payload counts the skipped records by reason (never one per record).
//! Records are judged one by one, as the Java client does: an application
//! whose only registrant is malformed (an enabled port `70000`, a host
//! `http://10.0.0.9`) loses that record, and every other application of
//! the same `/apps` or `/apps/delta` payload is still taken. A port that
//! cannot be used (an enabled `securePort` of `0`) leaves the record usable
//! on its other port.
//! A payload is refused as a whole ([`WireError`]) when it is not Eureka
//! JSON, when an `application` has no `name`
//! (`{"application":{"garbage":true}}`), when every record of the payload
//! is malformed (three records all with port `"9001x"`, and no other), or
//! when it exceeds a bound. An application that really has no instances
//! (`{"application":{"name":"A","instance":[]}}`) is a valid empty list.
//! A value the JSON grammar allows but Rust cannot hold costs that value
//! only: a number beyond `f64` (`1e400`) reads as `null` (a port so is no
//! port, a metadata value so is absent), a lone surrogate escape
//! (`"\ud800"`) as U+FFFD; the payload is then read a second time, from a
//! repaired copy of the body.
//!
//! # Bounds
//!
//! The decoder streams the JSON straight into typed records, borrowing
//! strings from the body (no intermediate `serde_json::Value` tree), and
//! turns each record into an [`Instance`] as it is read. Its time is linear
//! in the body (twice, for a body with a value to repair, which also
//! takes a copy of the body). Its memory, beside the body, is the result: the instances
//! and, per skipped object record, one [`Rejected`] entry; and, for an
//! application whose records come before its `name` (the real server
//! writes `name` first), those records held unconverted until the name,
//! about 500 bytes each (99 990 empty `{}` records in a 300 KB body
//! peaked at 73 MiB where name-first took 10 MiB; helper 208). All are
//! bounded by
//! [`ParseOptions::max_instances`] (default [`DEFAULT_MAX_INSTANCES`],
//! counting application objects too) and
//! [`MAX_METADATA_ENTRIES`] per record, and the metadata of all records
//! together by [`ParseOptions::max_metadata_entries`] (default
//! [`DEFAULT_MAX_METADATA_ENTRIES`]), so a tiny gzip body that inflates to
//! millions of elements is refused after `max_instances` of them, and one
//! whose records each carry hundreds of metadata entries (about 40 bytes
//! each in memory for 7 in the body) after a million entries: at most
//! about 40 MiB of metadata, where 256 entries on each of 100 000 records
//! would take a gigabyte. Repeated keys in one record keep one entry and
//! no slack.
//!
//! ```
//! use tower_ribbon::discovery::eureka::wire;
//!
//! let body = br#"{"application": {"name": "USER-SERVICE", "instance": {
//!     "instanceId": "u1", "hostName": "127.0.0.1", "app": "USER-SERVICE", "status": "UP",
//!     "port": {"$": "8081", "@enabled": true}, "securePort": {"$": 443, "@enabled": "false"},
//!     "metadata": {"zone": "zone-a"}}}}"#;
//! let app = wire::parse_application(body).unwrap();
//! assert_eq!(app.instances[0].instance.to_string(), "http://127.0.0.1:8081");
//! assert_eq!(app.instances[0].instance.zone(), Some("zone-a"));
//!
//! // Not an application: refused, so a caller keeps its last good list.
//! let err = wire::parse_application(br#"{"application": {"garbage": true}}"#).unwrap_err();
//! assert!(matches!(err, wire::WireError::NoName));
//! ```
//!
//! [`Instance`]: crate::Instance

use std::sync::Arc;
use std::time::Instant;

use crate::instance::Instance;

mod convert;
mod decode;
mod keys;
mod lenient;
mod raw;

pub use crate::error::wire::{RecordError, WireError};

/// Default of [`ParseOptions::max_instances`]: 100 000 elements, twice
/// the 50 000 instances the default body limit is sized for.
pub const DEFAULT_MAX_INSTANCES: usize = 100_000;

/// Default of [`ParseOptions::max_metadata_entries`]: 1 048 576 metadata
/// entries in one payload, 20 for each of the 50 000 instances the default
/// body limit is sized for (Spring Boot instances carry a handful).
pub const DEFAULT_MAX_METADATA_ENTRIES: usize = 1 << 20;

/// Metadata entries kept per record; a record with more is skipped
/// ([`RecordError::TooManyMetadata`]). Spring Boot instances carry a few
/// dozen at most.
pub const MAX_METADATA_ENTRIES: usize = 256;

/// Longest instance id kept, in bytes (8 KiB); a record with a longer id
/// (`instanceId`, else the host name standing in for it) is skipped
/// ([`RecordError::LongId`]). Every lease call carries the id in its
/// request path, which the Spring Cloud Eureka server (Tomcat: 8 KiB of
/// request line and headers) refuses with 400 past this size, so no such
/// instance can renew (nor, once percent-encoded, some shorter ones: a
/// registration bounds its own by [`MAX_LEASE_PATH_BYTES`](super::MAX_LEASE_PATH_BYTES));
/// and every request to an instance records its id
/// (in its spans, and in metrics labels and cookies when those are on), so
/// a 1 MiB id would cost 2 MiB of span text per request.
pub const MAX_INSTANCE_ID_BYTES: usize = 8 * 1024;

/// What a delta entry says happened to an instance (`actionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ActionType {
    /// Registered.
    Added,
    /// Changed (status, metadata, ...).
    Modified,
    /// Cancelled or evicted.
    Deleted,
    /// Missing or not one of the three.
    #[default]
    Unknown,
}

impl ActionType {
    pub(crate) fn parse(s: Option<&str>) -> Self {
        match s.map(str::trim) {
            Some(s) if s.eq_ignore_ascii_case("ADDED") => Self::Added,
            Some(s) if s.eq_ignore_ascii_case("MODIFIED") => Self::Modified,
            Some(s) if s.eq_ignore_ascii_case("DELETED") => Self::Deleted,
            _ => Self::Unknown,
        }
    }
}

/// One instance record of a payload.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EurekaInstance {
    /// The instance, with scheme and port chosen, zone and metadata read.
    pub instance: Instance,
    /// `actionType` (meaningful in delta payloads).
    pub action: ActionType,
    /// `vipAddress`, if present (shared by the instances of a payload
    /// that name the same one in a row).
    pub vip_address: Option<Arc<str>>,
    /// `secureVipAddress`, if present (shared like `vip_address`).
    pub secure_vip_address: Option<Arc<str>>,
    /// `status` as the server wrote it, upper-cased (`UNKNOWN` if absent);
    /// the status-count hash is computed from it.
    pub raw_status: Arc<str>,
}

/// An instance record that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejected {
    /// The instance id or host name, if the record had one.
    pub id: Option<String>,
    /// Why it was skipped.
    pub reason: RecordError,
    /// `status` as the server wrote it, upper-cased, if it had one (a
    /// skipped record still counts in the server's status-count hash).
    pub raw_status: Option<String>,
    /// `actionType`, for skipped delta entries.
    pub action: ActionType,
}

/// One application (`GET /apps/{APP}`, or an element of `/apps`).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Application {
    /// The application name (upper case by Eureka's convention).
    pub name: String,
    /// Usable instance records, in payload order.
    pub instances: Vec<EurekaInstance>,
    /// Records that were skipped, except list elements that are not objects
    /// at all (those are only counted in the payload's warning).
    pub rejected: Vec<Rejected>,
}

/// The whole registry or a delta (`GET /apps`, `/apps/delta`, `/vips/{vip}`).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Applications {
    /// `apps__hashcode`: the status-count hash (`DOWN_1_UP_3_`), empty for
    /// an empty registry.
    pub apps_hashcode: Option<String>,
    /// `versions__delta`.
    pub versions_delta: Option<String>,
    /// The applications.
    pub applications: Vec<Application>,
}

impl Application {
    /// No record at all, usable or skipped: how a server that does not
    /// know the app answers (see `EurekaHttp::get`).
    pub(crate) fn lists_nothing(&self) -> bool {
        self.instances.is_empty() && self.rejected.is_empty()
    }
}

impl Applications {
    /// No application with a record: how a server that does not know a
    /// VIP answers, and a registry restarted empty.
    pub(crate) fn lists_nothing(&self) -> bool {
        self.applications.iter().all(Application::lists_nothing)
    }
}

/// Which port an instance with both ports enabled is reached on.
///
/// - [`PortPreference::Secure`] (the default): https on `securePort`, as
///   Spring Cloud's `EurekaServiceInstance` (Spring Cloud LoadBalancer)
///   does.
/// - [`PortPreference::Plain`]: http on `port`, as Ribbon's
///   `DiscoveryEnabledNIWSServerList` does unless its `IsSecure` key is
///   set.
///
/// An instance with only one port enabled is reached on that one either
/// way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PortPreference {
    /// https on the secure port when both are enabled.
    #[default]
    Secure,
    /// http on the plain port when both are enabled.
    Plain,
}

/// Options for decoding payloads and turning records into instances.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ParseOptions {
    /// Use `ipAddr` instead of `hostName` as the host (Spring's
    /// `preferIpAddress`). Default: `false`.
    pub prefer_ip_address: bool,
    /// Most elements (instance records, usable or not, plus application
    /// objects) one payload may hold; more refuses the payload with
    /// [`WireError::TooManyInstances`]. Default [`DEFAULT_MAX_INSTANCES`].
    pub max_instances: usize,
    /// Most metadata entries the records of one payload may hold together;
    /// more refuses the payload with [`WireError::TooMuchMetadata`] (a
    /// refresh then keeps its last good list). Default
    /// [`DEFAULT_MAX_METADATA_ENTRIES`].
    pub max_metadata_entries: usize,
    /// The port taken when both are enabled. Default
    /// [`PortPreference::Secure`].
    pub port_preference: PortPreference,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            prefer_ip_address: false,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_metadata_entries: DEFAULT_MAX_METADATA_ENTRIES,
            port_preference: PortPreference::Secure,
        }
    }
}

impl ParseOptions {
    /// Sets [`ParseOptions::prefer_ip_address`].
    #[must_use]
    pub fn with_prefer_ip_address(mut self, prefer: bool) -> Self {
        self.prefer_ip_address = prefer;
        self
    }

    /// Sets [`ParseOptions::max_instances`].
    #[must_use]
    pub fn with_max_instances(mut self, max: usize) -> Self {
        self.max_instances = max;
        self
    }

    /// Sets [`ParseOptions::max_metadata_entries`].
    #[must_use]
    pub fn with_max_metadata_entries(mut self, max: usize) -> Self {
        self.max_metadata_entries = max;
        self
    }

    /// Sets [`ParseOptions::port_preference`].
    #[must_use]
    pub fn with_port_preference(mut self, preference: PortPreference) -> Self {
        self.port_preference = preference;
        self
    }
}

/// Parses `GET /apps/{APP}` (root key `application`).
///
/// # Errors
/// [`WireError`] if the body is not such a payload (see the module doc).
pub fn parse_application(body: &[u8]) -> Result<Application, WireError> {
    parse_application_with(body, ParseOptions::default())
}

/// [`parse_application`] with options.
///
/// # Errors
/// As [`parse_application`].
pub fn parse_application_with(
    body: &[u8],
    options: ParseOptions,
) -> Result<Application, WireError> {
    decode_application(body, options, None)
}

/// Parses `GET /apps`, `/apps/delta` or `/vips/{vip}` (root key
/// `applications`).
///
/// # Errors
/// [`WireError`] if the body is not such a payload (see the module doc).
pub fn parse_applications(body: &[u8]) -> Result<Applications, WireError> {
    parse_applications_with(body, ParseOptions::default())
}

/// [`parse_applications`] with options.
///
/// # Errors
/// As [`parse_applications`].
pub fn parse_applications_with(
    body: &[u8],
    options: ParseOptions,
) -> Result<Applications, WireError> {
    decode_applications(body, options, None)
}

/// [`parse_application_with`], giving up with [`WireError::Deadline`]
/// once `deadline` passes.
pub(crate) fn decode_application(
    body: &[u8],
    options: ParseOptions,
    deadline: Option<Instant>,
) -> Result<Application, WireError> {
    with_repair(body, |body: &[u8]| {
        let ctx = decode::Ctx::new(options, deadline);
        let result = ctx.decode(body, "application", decode::AppSeed { ctx: &ctx });
        (result, ctx)
    })
}

/// [`parse_applications_with`], giving up with [`WireError::Deadline`]
/// once `deadline` passes.
pub(crate) fn decode_applications(
    body: &[u8],
    options: ParseOptions,
    deadline: Option<Instant>,
) -> Result<Applications, WireError> {
    with_repair(body, |body: &[u8]| {
        let ctx = decode::Ctx::new(options, deadline);
        let result = ctx.decode(body, "applications", decode::AppsSeed { ctx: &ctx });
        (result, ctx)
    })
}

/// Runs `decode` on `body`, and once more on its repaired copy (see
/// [`lenient::repair`]) when `serde_json` refused it with a syntax error
/// and the body holds a number beyond `f64` or a lone surrogate escape;
/// the repaired reading is kept if it decodes, else the first error. Logs
/// the skipped records of the reading kept.
fn with_repair<T>(
    body: &[u8],
    decode: impl Fn(&[u8]) -> (Result<T, WireError>, decode::Ctx),
) -> Result<T, WireError> {
    let (result, ctx) = decode(body);
    if matches!(result, Err(WireError::Syntax { .. })) {
        if let Some(repaired) = lenient::repair(body) {
            let (again, again_ctx) = decode(&repaired);
            if again.is_ok() {
                warn_skipped(&again_ctx);
                return again;
            }
        }
    }
    warn_skipped(&ctx);
    result
}

/// One warning per payload with the skipped records counted by reason.
fn warn_skipped(ctx: &decode::Ctx) {
    let tally = ctx.tally.borrow();
    let skipped: usize = tally.skipped.values().sum();
    if skipped == 0 {
        return;
    }
    let reasons = tally
        .skipped
        .iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect::<Vec<_>>()
        .join(", ");
    let (first_app, first_id) = tally.first.clone().unwrap_or_default();
    tracing::warn!(
        skipped,
        records = tally.records,
        %reasons,
        %first_app,
        %first_id,
        "skipping unusable Eureka instance records"
    );
}

#[cfg(test)]
mod tests;
