//! The connection under the Eureka client: plain `http`, or `https`
//! through rustls (feature `tls`), reusing [`crate::tls`]'s rustls setup
//! (roots, client certificate) so the registry and the instances are
//! trusted the same way.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;

use crate::error::BoxError;

/// How long an idle pooled connection to a registry server is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// hyper-util's client over a plain or a rustls connector. Both kinds
/// answer the same `ResponseFuture`, so the exchange code is shared.
#[derive(Clone)]
pub(crate) enum Transport {
    /// Only `http` server URLs: no TLS is set up at all.
    Plain(Client<HttpConnector, Full<Bytes>>),
    /// At least one `https` server URL: `https` by rustls, `http` plain.
    #[cfg(feature = "tls")]
    Tls(Client<crate::tls::HttpsConnect, Full<Bytes>>),
}

fn tcp(connect_timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector
}

impl Transport {
    /// A client for `http` server URLs only.
    pub(crate) fn plain(connect_timeout: Duration) -> Self {
        Transport::Plain(
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE)
                .build(tcp(connect_timeout)),
        )
    }

    /// A client for `https` (and `http`) server URLs, trusting what
    /// `tls` describes and presenting its client certificate, if any.
    /// HTTP/1.1 only, as Eureka servers speak it. `connect_timeout`
    /// bounds the TCP connect and the TLS handshake together, so a server
    /// that never answers the handshake is a connect error (the request
    /// was never sent, the next server is tried) rather than a whole
    /// request timeout, as [`crate::tls::HttpsClient`] does.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(connect_timeout: Duration, tls: rustls::ClientConfig) -> Self {
        let mut http = tcp(connect_timeout);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Transport::Tls(
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE)
                .build(crate::tls::HttpsConnect::new(
                    connector,
                    Some(connect_timeout),
                )),
        )
    }

    pub(crate) fn request(&self, request: Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            Transport::Plain(client) => client.request(request),
            #[cfg(feature = "tls")]
            Transport::Tls(client) => client.request(request),
        }
    }

    /// Whether `https` server URLs can be reached.
    pub(crate) fn is_tls(&self) -> bool {
        !matches!(self, Transport::Plain(_))
    }
}

/// A TLS failure with a Eureka server: the handshake failed (a server
/// certificate not trusted, expired or not for that host; a client
/// certificate the server refused; no common protocol version), or the
/// session broke. It is the `source` of
/// [`DiscoveryError::Transport`](crate::error::DiscoveryError::Transport),
/// so callers can tell it from a refused connection by downcasting:
///
/// ```
/// use tower_ribbon::discovery::eureka::EurekaTlsError;
/// use tower_ribbon::error::DiscoveryError;
///
/// fn is_tls(e: &DiscoveryError) -> bool {
///     match e {
///         DiscoveryError::Transport { source, .. } => source.is::<EurekaTlsError>(),
///         DiscoveryError::AllServersFailed(all) => all.iter().any(is_tls),
///         _ => false,
///     }
/// }
/// ```
///
/// Feature `tls`.
///
/// Its text quotes rustls' message escaped and cut to 512 bytes: that
/// message lists the names of the server's certificate as the
/// certificate writes them (control characters, thousands of names), and
/// a registry's text is never written raw to a log. For the same reason
/// rustls' error is not its `source()`: read it with
/// [`rustls_error`](Self::rustls_error).
#[cfg(feature = "tls")]
#[derive(Clone, thiserror::Error)]
#[error("TLS with the registry failed: {}", self.quoted())]
pub struct EurekaTlsError {
    rustls: rustls::Error,
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for EurekaTlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = crate::error::quote_within(
            &format!("{:?}", self.rustls),
            crate::error::MAX_QUOTED_MESSAGE,
        );
        f.debug_struct("EurekaTlsError")
            .field("source", &format_args!("{source}"))
            .finish()
    }
}

#[cfg(feature = "tls")]
impl EurekaTlsError {
    /// rustls' error: for an untrusted server certificate,
    /// `InvalidCertificate(CertificateError::UnknownIssuer)`; for a
    /// client certificate the server refused, an `AlertReceived`.
    pub fn rustls_error(&self) -> &rustls::Error {
        &self.rustls
    }

    /// rustls' message, escaped and cut.
    fn quoted(&self) -> String {
        crate::error::quote_within(&self.rustls.to_string(), crate::error::MAX_QUOTED_MESSAGE)
    }
}

/// The transport error as the source of a `DiscoveryError::Transport`: a
/// rustls error anywhere in its chain (a [`crate::tls::ConnectError`]'s,
/// or one hyper-rustls and tokio-rustls carry inside an `io::Error`,
/// whose `source()` skips it) becomes an [`EurekaTlsError`]; anything
/// else is kept as it is.
pub(crate) fn classify(error: BoxError) -> BoxError {
    #[cfg(feature = "tls")]
    if let Some(source) = crate::tls::find_rustls(error.as_ref()) {
        return Box::new(EurekaTlsError { rustls: source });
    }
    error
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_inside_io_errors_are_found() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        let classified = classify(Box::new(io));
        let found = classified.downcast_ref::<EurekaTlsError>();
        assert_eq!(found.map(EurekaTlsError::rustls_error), Some(&tls));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!classify(Box::new(refused)).is::<EurekaTlsError>());
    }
}
