//! HTTPS through rustls: [`HttpsClient`], a ready-made inner service for
//! [`LoadBalancer`](crate::LoadBalancer) that dials both `http` and `https`
//! instances (feature `tls`).
//!
//! It is hyper-util's legacy [`Client`] over hyper-rustls'
//! [`HttpsConnector`](hyper_rustls::HttpsConnector) ([`HttpsConnect`],
//! which bounds the TCP connect and the TLS handshake together by the
//! connect timeout): HTTP/1.1 and HTTP/2 are offered by ALPN on TLS
//! connections (`h2`, `http/1.1`); plain `http` instances get HTTP/1.1, or
//! HTTP/2 with prior knowledge (h2c) under
//! [`http2_only`](HttpsClientBuilder::http2_only). An instance registered
//! as secure (Eureka's `securePort` enabled, or
//! [`Instance::with_secure`](crate::Instance::with_secure)) makes the
//! balancer rewrite the URI to `https`, so one client serves both kinds.
//!
//! Trust: by default the Mozilla roots of `webpki-roots`; add the
//! operating system's with [`native_roots`](HttpsClientBuilder::native_roots)
//! and private CAs with [`add_root_pem`](HttpsClientBuilder::add_root_pem).
//! A client certificate (mutual TLS) is set with
//! [`client_auth_pem`](HttpsClientBuilder::client_auth_pem). Cryptography is
//! rustls' `ring` provider; protocol versions TLS 1.2 and 1.3.
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use tower_ribbon::discovery::StaticSource;
//! use tower_ribbon::tls::HttpsClient;
//! use tower_ribbon::{Instance, LoadBalancer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let ca_pem = std::fs::read("ca.pem")?;
//! let client = HttpsClient::builder().add_root_pem(&ca_pem)?.build::<Empty<Bytes>>()?;
//! let instance = Instance::new("user-service", "127.0.0.1", 8443)?.with_secure(true);
//! let source = StaticSource::new().with_instances("user-service", vec![instance]);
//! let lb = LoadBalancer::builder().source(source).service("user-service").build(client)?;
//! let request = http::Request::get("http://user-service/whoami").body(Empty::new())?;
//! let response = lb.request(request).await?; // sent to https://127.0.0.1:8443/whoami
//! # let _ = response; Ok(()) }
//! ```

mod alert;
mod connect;
mod future;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tower::Service;

pub(crate) use alert::handshake_refusal;
pub use connect::{ConnectError, HttpsConnect};
pub use future::ResponseFuture;
#[cfg(feature = "eureka")]
pub(crate) use connect::find_rustls;

/// Why an [`HttpsClient`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM input could not be read (bad base64, unterminated section).
    #[error("invalid PEM in {what}: {source}")]
    Pem {
        /// Which input: `root certificates`, `client certificate chain` or
        /// `client private key`.
        what: &'static str,
        /// The parser's error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM input held no item of the expected kind (no `CERTIFICATE`
    /// section, or no `PRIVATE KEY` / `RSA PRIVATE KEY` / `EC PRIVATE KEY`).
    #[error("no {what} found in the PEM input")]
    Missing {
        /// What was expected: `certificate` or `private key`.
        what: &'static str,
    },
    /// rustls rejected a certificate or key (a root that is not a valid
    /// X.509 certificate, a key that does not match the certificate, an
    /// unsupported key type).
    #[error("rustls rejected the {what}: {source}")]
    Rustls {
        /// What was rejected.
        what: &'static str,
        /// rustls' error.
        #[source]
        source: rustls::Error,
    },
    /// Native roots were asked for and none could be loaded.
    #[error("no usable native root certificates: {reason}")]
    NativeRoots {
        /// The loader's errors, joined.
        reason: String,
    },
    /// No trust anchor at all: webpki roots off, no native or custom root.
    #[error("no root certificates: enable webpki or native roots, or add one with add_root_pem")]
    NoRoots,
}

/// Builds an [`HttpsClient`]. Defaults: webpki roots on, native roots off,
/// no custom roots, no client certificate, HTTP/1.1 and HTTP/2 by ALPN,
/// plain `http` allowed, connect timeout 2 s over the TCP connect and the
/// TLS handshake together (Spring Cloud's `spring.cloud.loadbalancer`
/// clients and Ribbon's `ConnectTimeout` use 1 to 2 s), hyper-util's pool
/// defaults (idle connections kept 90 s, no limit per host).
#[must_use]
pub struct HttpsClientBuilder {
    webpki_roots: bool,
    native_roots: bool,
    roots: Vec<CertificateDer<'static>>,
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    http1: bool,
    http2: bool,
    http2_only: bool,
    https_only: bool,
    connect_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
}

impl fmt::Debug for HttpsClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsClientBuilder")
            .field("webpki_roots", &self.webpki_roots)
            .field("native_roots", &self.native_roots)
            .field("custom_roots", &self.roots.len())
            .field("client_auth", &self.client_auth.is_some())
            .field("http1", &self.http1)
            .field("http2", &self.http2)
            .field("http2_only", &self.http2_only)
            .field("https_only", &self.https_only)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .finish()
    }
}

impl Default for HttpsClientBuilder {
    fn default() -> Self {
        Self {
            webpki_roots: true,
            native_roots: false,
            roots: Vec::new(),
            client_auth: None,
            http1: true,
            http2: true,
            http2_only: false,
            https_only: false,
            connect_timeout: Some(Duration::from_secs(2)),
            pool_max_idle_per_host: usize::MAX,
        }
    }
}

fn read_certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            what: "certificate",
        });
    }
    Ok(certs)
}

impl HttpsClientBuilder {
    /// Trust the Mozilla root set shipped in `webpki-roots`. Default: on.
    pub fn webpki_roots(mut self, on: bool) -> Self {
        self.webpki_roots = on;
        self
    }

    /// Trust the operating system's roots (`rustls-native-certs`, read at
    /// [`build`](Self::build)). Default: off.
    pub fn native_roots(mut self, on: bool) -> Self {
        self.native_roots = on;
        self
    }

    /// Trust every certificate in `pem` (one or more `CERTIFICATE`
    /// sections), in addition to the other roots.
    ///
    /// # Errors
    /// [`TlsError::Pem`] for unreadable PEM, [`TlsError::Missing`] when it
    /// holds no certificate.
    pub fn add_root_pem(mut self, pem: &[u8]) -> Result<Self, TlsError> {
        self.roots.extend(read_certs(pem, "root certificates")?);
        Ok(self)
    }

    /// Present a client certificate (mutual TLS): `cert_chain_pem` holds
    /// the leaf first, then intermediates; `key_pem` its private key
    /// (PKCS#8, PKCS#1 or SEC1). The key is checked against the
    /// certificate at [`build`](Self::build).
    ///
    /// # Errors
    /// [`TlsError::Pem`] for unreadable PEM, [`TlsError::Missing`] for a
    /// chain without certificate or a key file without key.
    pub fn client_auth_pem(
        mut self,
        cert_chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let chain = read_certs(cert_chain_pem, "client certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| match source {
            rustls_pki_types::pem::Error::NoItemsFound => TlsError::Missing {
                what: "private key",
            },
            source => TlsError::Pem {
                what: "client private key",
                source,
            },
        })?;
        self.client_auth = Some((chain, key));
        Ok(self)
    }

    /// Offer HTTP/1.1 by ALPN on TLS connections. Default: on.
    pub fn http1(mut self, on: bool) -> Self {
        self.http1 = on;
        self
    }

    /// Offer HTTP/2 (`h2`) by ALPN on TLS connections. Default: on.
    pub fn http2(mut self, on: bool) -> Self {
        self.http2 = on;
        self
    }

    /// Speak only HTTP/2: `h2` alone by ALPN over TLS, and HTTP/2 with
    /// prior knowledge (h2c, RFC 9113 §3.3) on plain `http` connections,
    /// as gRPC servers expect. Default: off.
    ///
    /// A request's `Host` field that differs from its URI's authority is
    /// then dropped (here, and with [`http1`](Self::http1) off for `https`
    /// URIs): over HTTP/2 the authority is sent as `:authority`, and a
    /// `Host` disagreeing with it makes a malformed request (RFC 9113
    /// §8.3.1), which Go's and Vert.x's servers reject.
    pub fn http2_only(mut self, on: bool) -> Self {
        self.http2_only = on;
        self
    }

    /// Refuse plain `http` URIs (an instance not marked secure then fails
    /// with a connect error). Default: off.
    pub fn https_only(mut self, on: bool) -> Self {
        self.https_only = on;
        self
    }

    /// Bound on one whole connect: the name resolution of a host name
    /// instance, the TCP connect (also alone, per address, as
    /// `HttpConnector` splits it over the addresses) and, for `https`,
    /// the TLS handshake together, as reqwest's `connect_timeout` bounds
    /// its whole connector. A server that accepts the connection and
    /// never completes the handshake fails the attempt after this long as
    /// a connect timeout (a [`ConnectError`] whose
    /// [`is_timeout`](ConnectError::is_timeout) holds): the request was
    /// never sent, so even a POST goes to another instance. Keep it at or
    /// below the balancer's per-try timeout, which would otherwise fire
    /// first and report a read timeout. `None` bounds neither: the TCP
    /// connect waits for the operating system, the handshake for ever (or
    /// the per-try timeout). Default: 2 s.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The most idle connections kept per host (hyper-util's
    /// `pool_max_idle_per_host`); 0 closes every connection once its
    /// response is read. Default: no limit (hyper-util's). The default
    /// client of `https` health probes uses 0, so a round over n instances
    /// does not leave n sockets open.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// The rustls configuration this builder describes (roots, client
    /// certificate; ALPN is set by the connector).
    ///
    /// # Errors
    /// [`TlsError::NoRoots`], [`TlsError::NativeRoots`],
    /// [`TlsError::Rustls`] (a bad root, or a key that does not match the
    /// client certificate).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut store = RootCertStore::empty();
        if self.webpki_roots {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if self.native_roots {
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
            if added == 0 {
                let reason = if loaded.errors.is_empty() {
                    "none found".to_owned()
                } else {
                    loaded
                        .errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                return Err(TlsError::NativeRoots { reason });
            }
        }
        for root in &self.roots {
            store.add(root.clone()).map_err(|source| TlsError::Rustls {
                what: "root certificate",
                source,
            })?;
        }
        if store.is_empty() {
            return Err(TlsError::NoRoots);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                what: "protocol versions",
                source,
            })?
            .with_root_certificates(store);
        match &self.client_auth {
            None => Ok(builder.with_no_client_auth()),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|source| TlsError::Rustls {
                    what: "client certificate or key",
                    source,
                }),
        }
    }

    /// Builds the client for request bodies of type `B` (any
    /// `http_body::Body` hyper can send, e.g. `Full<Bytes>`,
    /// `Empty<Bytes>` or [`ReplayBody`](crate::retry::ReplayBody)).
    ///
    /// # Errors
    /// As [`client_config`](Self::client_config).
    pub fn build<B>(self) -> Result<HttpsClient<B>, TlsError>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
    {
        let tls = self.client_config()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(self.connect_timeout);
        let schemes = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let schemes = if self.https_only {
            schemes.https_only()
        } else {
            schemes.https_or_http()
        };
        let (http1, http2) = if self.http2_only {
            (false, true)
        } else {
            (self.http1, self.http2 || !self.http1)
        };
        let connector = match (http1, http2) {
            (true, true) => schemes.enable_http1().enable_http2().wrap_connector(http),
            (true, false) => schemes.enable_http1().wrap_connector(http),
            _ => schemes.enable_http2().wrap_connector(http),
        };
        let client = Client::builder(TokioExecutor::new())
            .http2_only(self.http2_only)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .build(HttpsConnect::new(connector, self.connect_timeout));
        Ok(HttpsClient {
            inner: Arc::new(client),
            http2_only: self.http2_only,
            tls_http2_only: !http1,
        })
    }
}

/// hyper-util's legacy client over rustls: the inner service for
/// `https` (and `http`) instances. Made by [`HttpsClient::builder`].
///
/// Cheap to clone: clones share one hyper-util client (its connection
/// pool, connector and settings) behind one reference count. The balancer
/// clones its inner service once per request (the request's future owns
/// it); a clone of hyper-util's `Client` itself increments and later
/// decrements several reference counts (its executor, pool, connector,
/// TLS configuration), about 115 ns per clone and drop on one thread and
/// 750 to 900 ns when two threads clone it at once, against 15 and 55 to
/// 70 ns for this type's one count (measured side by side, see
/// `CHANGELOG.md`). hyper-util's `Client` keeps no state of its own per
/// clone, so sharing one changes nothing else.
///
/// As a `tower::Service<http::Request<B>>` (for a body `B` that is
/// `Unpin + Send + 'static` with an error convertible to a boxed error, as
/// hyper-util's client requires; [`HttpsClientBuilder::build`] does not
/// check it) it answers
/// `http::Response<hyper::body::Incoming>`; errors are boxed: hyper-util's
/// [`Error`](hyper_util::client::legacy::Error), which the balancer
/// classifies (connect failures, timeouts), or a [`ConnectError`]. A
/// failed TLS handshake or a connect past the connect timeout is a
/// connect error whose source is a [`ConnectError`]; a handshake the
/// server refused after the connect (a client certificate refused under
/// TLS 1.3) is a [`ConnectError`] itself (see [`ResponseFuture`]).
pub struct HttpsClient<B = http_body_util::Full<bytes::Bytes>> {
    inner: Arc<Client<HttpsConnect, B>>,
    /// Every connection speaks HTTP/2 (`http2_only`).
    http2_only: bool,
    /// Every TLS connection does (ALPN offers `h2` alone).
    tls_http2_only: bool,
}

impl HttpsClient {
    /// A builder with the defaults of [`HttpsClientBuilder`].
    pub fn builder() -> HttpsClientBuilder {
        HttpsClientBuilder::default()
    }
}

impl<B> HttpsClient<B> {
    /// The hyper-util client inside.
    pub fn inner(&self) -> &Client<HttpsConnect, B> {
        &self.inner
    }
}

impl<B> Clone for HttpsClient<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            http2_only: self.http2_only,
            tls_http2_only: self.tls_http2_only,
        }
    }
}

impl<B> fmt::Debug for HttpsClient<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsClient").finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for HttpsClient<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Incoming>;
    type Error = crate::error::BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // hyper-util's `&Client` is a service too (always ready today).
        Service::<Request<B>>::poll_ready(&mut &*self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Every request goes over HTTP/2, where a `Host` differing from
        // `:authority` (the URI's) makes a malformed request (RFC 9113
        // §8.3.1); hyper would send it as a plain field.
        let tls = req.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
        if self.http2_only || (tls && self.tls_http2_only) {
            if let Some(authority) = req.uri().authority().cloned() {
                crate::instance::drop_host_differing_from(req.headers_mut(), authority.as_str());
            }
        }
        ResponseFuture::new(self.inner.request(req))
    }
}

#[cfg(test)]
mod tests;
