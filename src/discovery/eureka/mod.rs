//! Eureka (feature `eureka`): discovery and self-registration against a
//! Netflix / Spring Cloud Eureka server.
//!
//! - [`EurekaRegistry`]: one cached registry per Eureka cluster, full fetch
//!   then deltas reconciled by the status-count hash, like the Java
//!   `DiscoveryClient`; it is an [`InstanceSource`] for every service id.
//!   [`EurekaRegistry::vip_source`] looks up VIP addresses.
//! - [`EurekaSource`]: a simpler source that fetches `GET {base}/apps/{APP}`
//!   per service (Ribbon's `DiscoveryEnabledNIWSServerList`).
//! - [`EurekaRegistration`]: registers the running service, renews,
//!   re-registers on 404 with the status wanted now, changes status and
//!   cancels on shutdown.
//!
//! # What a fetch does
//!
//! 1. `GET` on the server URL whose answer the last fetch took (the first
//!    URL at first, so one that hangs costs a timeout once, not at every
//!    fetch, as the Java client keeps the endpoint that worked),
//!    `Accept: application/json`,
//!    `Accept-Encoding: gzip`, basic auth from the URL's userinfo. A
//!    transport error, a timeout, any status but 2xx (a 404 too: a peer
//!    that restarted empty may not know an app its peers list) or a body
//!    that does not decode moves on to the next URL (like the Java
//!    client's `defaultZone` list); an app or VIP answer that lists no
//!    instance (a 200 with none, as a server that does not know a VIP
//!    answers) moves on as a 404 does. An app or VIP fetch that every
//!    server answers so is an empty list (the registry does not know it),
//!    while one such answer beside a server that failed is a failed fetch
//!    ([`DiscoveryError::AbsenceUnconfirmed`]) and the refresh keeps its
//!    last list (a peer restarted empty knows no app until the instances
//!    renew), until such answers have lasted the builder's `absence_hold`
//!    (default 90 s) after the last answer that listed instances; the
//!    registry's full fetch treats an empty registry the same way while
//!    its copy (as deltas left it) holds instances; a pooled connection
//!    the server had
//!    closed is retried once first. Registration calls fail over the same
//!    way, on every answer but their own (see [`EurekaRegistration`]).
//! 2. The body is read up to `max_body_bytes` (default 128 MiB, room for
//!    50 000 instances); a gzip body (by header or by its magic bytes) is
//!    inflated up to the same limit.
//! 3. Inflating and decoding run on Tokio's blocking pool, never on an
//!    async worker, so a large or hostile payload cannot stall other tasks.
//!    The decoder ([`wire`]) streams the JSON into typed records, with at
//!    most `max_instances` elements (default 100 000), and stops at the
//!    request deadline.
//! 4. `request_timeout` (default 8 s) bounds steps 1 to 3 together, per
//!    server.
//!
//! # What counts as an answer
//!
//! Wire facts it follows (see [`wire`]): gzip bodies even when not asked,
//! one-or-many list shapes, the port encodings, only `UP` instances get
//! traffic, scheme and port chosen together (https only with an enabled
//! secure port; with both enabled, [`wire::PortPreference`] decides:
//! secure like Spring Cloud LoadBalancer, or plain like Ribbon). A `404`
//! for the app, when no server lists it, means "no instances" (an
//! empty list), and so does an
//! application object with a name and no records. A payload without
//! Eureka's shape (`{"application":{"garbage":true}}`, records that are
//! all malformed) is a [`DiscoveryError::Decode`] carrying a typed
//! [`wire::WireError`]; that, and every other failure, keeps the last list.
//! A malformed record beside well-formed ones (of its application, or in
//! the registry's `/apps` and `/apps/delta`, of other applications) is
//! skipped and counted in one warning per payload; it never stops the
//! others' updates.
//!
//! # Credentials
//!
//! `http://user:password@host/eureka` becomes an `Authorization: Basic`
//! header marked sensitive; errors, `Debug` output and logs show the URL
//! without userinfo. Any character may appear in the password: `,`, `@`
//! and `:` as they are (a comma list is split outside credentials), `%` as
//! `%25`, and `/`, `?`, `#` percent-encoded. A wrong password is a
//! [`DiscoveryError::Status`] with status 401.
//!
//! # TLS
//!
//! `https://user:password@host:8443/eureka` URLs need the `tls` feature
//! (built without it, such a URL is refused at `build` with a
//! [`BuildError::Invalid`] that names the feature). They go through rustls
//! with the same setup as `tls::HttpsClient`: by default the
//! Mozilla roots of `webpki-roots`; other roots, the system's roots or a
//! client certificate (mutual TLS) through the builders' `tls` setter,
//! which takes a `tls::HttpsClientBuilder`. `http` and `https`
//! URLs may be mixed in one list. Registration (register, renew, status,
//! cancel) and fetches share the connection. A failed handshake (an
//! untrusted certificate, a refused client certificate) is a
//! [`DiscoveryError::Transport`] whose source is an `EurekaTlsError`
//! carrying rustls' error. The body limit, the request timeout over the
//! whole exchange (TLS handshake included) and decoding off the async
//! workers apply as for `http`.
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_ribbon::discovery::eureka::EurekaSource;
//! use tower_ribbon::tls::HttpsClient;
//!
//! let ca = std::fs::read("eureka-ca.pem")?;
//! let source = EurekaSource::builder()
//!     .server_urls("https://eureka:p,a@s:s%25w!@eureka-1:8443/eureka,https://eureka-2:8443/eureka")
//!     .tls(HttpsClient::builder().webpki_roots(false).add_root_pem(&ca)?)
//!     .build()?;
//! assert!(!format!("{source:?}").contains("s%25w"));
//! # Ok(()) }
//! # #[cfg(not(feature = "tls"))]
//! # fn main() {}
//! ```
//!
//! ```
//! use std::time::Duration;
//! use tower_ribbon::discovery::eureka::EurekaSource;
//!
//! let source = EurekaSource::builder()
//!     .server_url("http://user:secret@127.0.0.1:8761/eureka")
//!     .server_url("http://127.0.0.1:8762/eureka")
//!     .request_timeout(Duration::from_secs(3))
//!     .build()
//!     .unwrap();
//! // Credentials are sent as basic auth and never shown.
//! assert!(!format!("{source:?}").contains("secret"));
//! ```

/// The absence hold's setter of the fetching builders (source and
/// registry; each has a `connection: client::Connection` field).
macro_rules! absence_setter {
    () => {
        /// How long the servers that answer may list nothing for an app or
        /// VIP (a 404, or an answer with no instance; for the registry, an
        /// empty registry) while another server of the list cannot be
        /// asked, before their answer is taken. Meanwhile the fetch fails
        /// with [`DiscoveryError::AbsenceUnconfirmed`](crate::DiscoveryError::AbsenceUnconfirmed)
        /// and the refresh keeps its last list: a peer restarted on its own
        /// lists nothing until the instances renew, while the other peer
        /// may list them. When every server answers, or when the last
        /// answer listed nothing either (a first fetch), their answer is
        /// taken at once. Default 90 s (Eureka's lease duration: a peer restarted
        /// empty lists the instances again within one renewal interval,
        /// 30 s); zero takes such an answer at once. The time an app that
        /// was really removed keeps its last list while a server of the
        /// list is down.
        ///
        /// For [`EurekaRegistry`](crate::discovery::eureka::EurekaRegistry),
        /// also the longest an app stays in the copy when a full answer
        /// given in failover (after the server the copy followed failed in
        /// the same fetch, until that server answers again) lacks it and
        /// that server, asked once per such answer within one request
        /// timeout, does not answer; counted from the first answer that
        /// lacked it. If that server answers, the app takes its records (or
        /// leaves, if it lacks the app too); fetches stay at the server that
        /// answered. A failover lasts at most this long from its start:
        /// then the answering server's full answers are the truth again.
        /// At most 4 096 apps are held at once (past it, those held longest,
        /// then by name, leave first). Outside a failover a full answer is
        /// taken as it is, as the Java client takes it
        /// ([eureka#1490](https://github.com/Netflix/eureka/issues/1490)).
        pub fn absence_hold(mut self, hold: std::time::Duration) -> Self {
            self.connection.settings.absence_hold = hold;
            self
        }
    };
}

/// The server-URL and timeout setters of every Eureka builder (each has a
/// `connection: client::Connection` field).
macro_rules! connection_setters {
    () => {
        /// Adds one server base URL, e.g. `http://127.0.0.1:8761/eureka`.
        /// Userinfo (`http://user:pass@host/eureka`) becomes basic auth and
        /// is never logged. Servers are tried in the order added.
        pub fn server_url(mut self, url: impl Into<String>) -> Self {
            self.connection.urls.push(url.into());
            self
        }

        /// Adds comma-separated server URLs, as in Spring's
        /// `eureka.client.service-url.defaultZone`, tried in order.
        pub fn server_urls(mut self, urls: &str) -> Self {
            self.connection.add_urls(urls);
            self
        }

        /// Connect timeout per server: the TCP connect and, for an `https`
        /// server, the TLS handshake together (a server that never
        /// answers the handshake is a connect error: nothing was sent,
        /// and the next server is tried). Spring key
        /// `eureka.client.eureka-server-connect-timeout-seconds`. Default 5 s;
        /// zero is refused at `build`.
        pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.connection.settings.connect_timeout = timeout;
            self
        }

        /// Bound on one whole request to one server: connect, headers,
        /// body, gzip inflation and decoding (which run off the async
        /// workers). Spring key
        /// `eureka.client.eureka-server-read-timeout-seconds`. Default 8 s;
        /// zero is refused at `build`.
        pub fn request_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.connection.settings.request_timeout = timeout;
            self
        }

        /// Largest body accepted, after gzip inflation (inflation stops at
        /// the limit). Default 128 MiB, room for 50 000 instances; 0 is
        /// refused at `build`. A registration reads back only its own
        /// record, with at most twice that record plus 64 KiB (at least
        /// 1 MiB) of this.
        pub fn max_body_bytes(mut self, bytes: usize) -> Self {
            self.connection.settings.max_body_bytes = bytes;
            self
        }

        /// How `https` server URLs are trusted (feature `tls`): the roots
        /// and the optional client certificate (mutual TLS) of `tls`, the
        /// builder of [`crate::tls::HttpsClient`]. Its connect timeout and
        /// protocol settings are not used here: the connect timeout is
        /// [`connect_timeout`](Self::connect_timeout) and registries are
        /// spoken to over HTTP/1.1. Default: the Mozilla roots of
        /// `webpki-roots`, no client certificate. Only read when a server
        /// URL is `https`.
        #[cfg(feature = "tls")]
        #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
        pub fn tls(mut self, tls: crate::tls::HttpsClientBuilder) -> Self {
            self.connection.tls = Some(tls);
            self
        }
    };
}

/// The decoding setters of the builders that read instance lists (each has
/// an `options: wire::ParseOptions` field).
macro_rules! parse_setters {
    () => {
        /// Use `ipAddr` rather than `hostName` as each instance's host
        /// (Spring's `eureka.instance.prefer-ip-address` seen from the
        /// caller). Default `false`.
        pub fn prefer_ip_address(mut self, prefer: bool) -> Self {
            self.options.prefer_ip_address = prefer;
            self
        }

        /// Most elements (instance records plus application objects) one
        /// payload may hold; a payload with more is refused
        /// ([`wire::WireError::TooManyInstances`]) and the last list kept.
        /// For [`EurekaRegistry`] it also bounds the local copy across
        /// deltas. Default [`wire::DEFAULT_MAX_INSTANCES`] (100 000); 0 is
        /// refused at `build`.
        pub fn max_instances(mut self, max: usize) -> Self {
            self.options.max_instances = max;
            self
        }

        /// Most metadata entries the records of one payload may keep
        /// together (40 bytes each in memory plus their text); a payload with more is
        /// refused ([`wire::WireError::TooMuchMetadata`]) and the last list
        /// kept. For [`EurekaRegistry`] it also bounds the local copy
        /// across deltas ([`DiscoveryError::RegistryMetadataFull`]). Default
        /// [`wire::DEFAULT_MAX_METADATA_ENTRIES`] (2^20, about 40 MiB with
        /// shared keys); 0 is refused at `build`.
        pub fn max_metadata_entries(mut self, max: usize) -> Self {
            self.options.max_metadata_entries = max;
            self
        }

        /// Which port an instance with both `port` and `securePort`
        /// enabled is reached on ([`wire::PortPreference`]): secure, as
        /// Spring Cloud LoadBalancer does (the default), or plain, as
        /// Ribbon does unless `IsSecure` is set.
        pub fn port_preference(mut self, preference: wire::PortPreference) -> Self {
            self.options.port_preference = preference;
            self
        }
    };
}

/// Refuses decoding bounds that make every fetch fail (0), naming the
/// setting and its range.
fn validate_options(options: &wire::ParseOptions) -> Result<(), BuildError> {
    let bounds = [
        ("eureka max_instances", options.max_instances),
        ("eureka max_metadata_entries", options.max_metadata_entries),
    ];
    match bounds.into_iter().find(|(_, n)| *n == 0) {
        Some((key, _)) => Err(BuildError::invalid(
            key,
            "0 is outside 1..=usize::MAX (every payload would be refused)",
        )),
        None => Ok(()),
    }
}

mod client;
mod registration;
mod registry;
pub mod wire;

pub use registration::{
    EurekaRegistration, EurekaRegistrationBuilder, MAX_LEASE_PATH_BYTES, RegistrationHandle,
    RegistrationStats,
};
#[cfg(feature = "tls")]
pub use client::EurekaTlsError;
#[cfg(feature = "config")]
pub(crate) use client::split_urls as split_server_urls;
pub use registry::{
    EurekaRegistry, EurekaRegistryBuilder, RegistryStale, RegistryStats, VipSource, status_hash,
};

use client::{EurekaHttp, Fetched};

/// Characters escaped in a path segment: all but RFC 3986 `unreserved`.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Whether `name` cannot be one path segment: empty, or a dot segment,
/// which servers resolve before routing (RFC 3986 §5.2.4: `apps/.` is
/// `apps/`, the whole registry).
fn not_a_segment(name: &str) -> bool {
    matches!(name, "" | "." | "..")
}

use super::{FetchFuture, InstanceSource};
use crate::error::{BuildError, DiscoveryError};
use crate::instance::Instance;

/// An [`InstanceSource`] backed by a Eureka registry.
///
/// Each fetch tries the configured servers in order (like the Java client's
/// `defaultZone` list) and returns the first answer. Cloning is cheap and
/// shares the connection pool.
#[derive(Clone, Debug)]
pub struct EurekaSource {
    http: EurekaHttp,
    options: wire::ParseOptions,
}

impl EurekaSource {
    /// Starts configuring a source.
    pub fn builder() -> EurekaSourceBuilder {
        EurekaSourceBuilder::default()
    }

    /// The configured server base URLs, without credentials.
    pub fn server_urls(&self) -> Vec<String> {
        self.http
            .servers()
            .iter()
            .map(|s| s.base().to_owned())
            .collect()
    }

    /// Fetches one application: `GET {base}/apps/{APP}` (app name upper-cased).
    ///
    /// # Errors
    /// [`DiscoveryError`] if every server fails or the body is not Eureka
    /// JSON; [`DiscoveryError::Other`] if the answer names another
    /// application (compared upper-cased).
    pub async fn fetch_application(&self, app: &str) -> Result<wire::Application, DiscoveryError> {
        // Unicode upper case, as Eureka's `toUpperCase(Locale.ROOT)`.
        let app = app.trim().to_uppercase();
        if not_a_segment(&app) {
            return Err(DiscoveryError::UnknownService { service: app });
        }
        let path = format!(
            "apps/{}",
            percent_encoding::utf8_percent_encode(&app, PATH_SEGMENT)
        );
        let options = self.options;
        match self
            .http
            .get(&path, true, wire::Application::lists_nothing, move |body, deadline| {
                wire::decode_application(body, options, Some(deadline))
            })
            .await?
        {
            Fetched::NotFound => Ok(wire::Application {
                name: app,
                ..Default::default()
            }),
            // An answer for another application (a misrouting proxy, a
            // broken peer) is no list of this one: its instances would
            // take this service's traffic. The last list is kept.
            Fetched::Found(found) if !found.name.is_empty() && found.name.to_uppercase() != app => {
                Err(DiscoveryError::Other(
                    format!(
                        "registry answered for application `{}` when asked for `{}`",
                        crate::error::quote_within(&found.name, 128),
                        crate::error::quote_within(&app, 128),
                    )
                    .into(),
                ))
            }
            Fetched::Found(found) => Ok(found),
        }
    }
}

impl InstanceSource for EurekaSource {
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let app = self.fetch_application(service_id).await?;
            Ok(last_per_id(app))
        })
    }
}

/// `app`'s instances, one per instance id: the last record of an id, as
/// Java's `Application.addInstance` keeps (a map by id) and the registry
/// copy does. An id that also has a record that could not be read is left
/// out (which came last is not known; that one may say DOWN). Before, a
/// payload listing `dup` UP then DOWN served `dup` through `EurekaSource`
/// while the registry and Java's client took it as DOWN (helper 125).
pub(crate) fn last_per_id(app: wire::Application) -> Vec<Instance> {
    let keep: Vec<bool> = {
        let unreadable: std::collections::HashSet<&str> =
            app.rejected.iter().filter_map(|r| r.id.as_deref()).collect();
        let mut last = std::collections::HashMap::with_capacity(app.instances.len());
        for (i, record) in app.instances.iter().enumerate() {
            last.insert(record.instance.id(), i);
        }
        app.instances
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let id = r.instance.id();
                last.get(id) == Some(&i) && !unreadable.contains(id)
            })
            .collect()
    };
    let instances = app.instances;
    instances
        .into_iter()
        .zip(keep)
        .filter_map(|(r, keep)| keep.then_some(r.instance))
        .collect()
}

/// Configures an [`EurekaSource`]. Its `Debug` output hides credentials.
#[derive(Default)]
#[must_use]
pub struct EurekaSourceBuilder {
    connection: client::Connection,
    options: wire::ParseOptions,
}

impl std::fmt::Debug for EurekaSourceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EurekaSourceBuilder")
            .field("urls", &self.connection.redacted_urls())
            .field("settings", &self.connection.settings)
            .field("options", &self.options)
            .finish()
    }
}

impl EurekaSourceBuilder {
    connection_setters!();
    parse_setters!();
    absence_setter!();

    /// Builds the source.
    ///
    /// # Errors
    /// [`BuildError::Invalid`] if no URL was given or one does not parse
    /// (`https` needs the `tls` feature), the TLS settings cannot be used,
    /// a timeout is zero, or `max_body_bytes`, `max_instances` or
    /// `max_metadata_entries` is 0 (keys `eureka connect_timeout`,
    /// `eureka request_timeout`, `eureka max_body_bytes`,
    /// `eureka max_instances`, `eureka max_metadata_entries`).
    pub fn build(self) -> Result<EurekaSource, BuildError> {
        validate_options(&self.options)?;
        Ok(EurekaSource {
            http: self.connection.build()?,
            options: self.options,
        })
    }
}
