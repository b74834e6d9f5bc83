//! [`HttpsConnect`]: hyper-rustls' connector with the whole connect, the
//! TCP connect and the TLS handshake, under the connect timeout; and
//! [`ConnectError`], its typed error for a TLS failure or that timeout.
//!
//! hyper-util's `HttpConnector` bounds the TCP connect alone: a server
//! that accepts the connection and never answers the handshake (a process
//! stuck before its TLS layer, a plain-TCP proxy whose upstream is gone)
//! held the connect until the balancer's per-try timeout, which reported
//! it as a read timeout ("may have reached the server": a POST was not
//! retried), or for ever without one. Bounded here, such a connect fails
//! as a connect timeout: the request provably never left, and goes to
//! another instance. reqwest bounds its whole connector the same way
//! (`ClientBuilder::connect_timeout`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

use crate::error::BoxError;

/// The connector of [`HttpsClient`](super::HttpsClient): hyper-rustls'
/// [`HttpsConnector`] over hyper-util's `HttpConnector`, with the whole
/// connect (a host name's resolution, the TCP connect, the TLS handshake)
/// bounded by the connect timeout
/// ([`HttpsClientBuilder::connect_timeout`](super::HttpsClientBuilder::connect_timeout)).
/// Its errors are hyper-rustls' (a TCP error as `HttpConnector` gives it),
/// or a [`ConnectError`] for a failed TLS handshake or the timeout.
#[derive(Clone)]
pub struct HttpsConnect {
    inner: HttpsConnector<HttpConnector>,
    timeout: Option<Duration>,
}

impl HttpsConnect {
    pub(crate) fn new(inner: HttpsConnector<HttpConnector>, timeout: Option<Duration>) -> Self {
        Self { inner, timeout }
    }

    /// The bound on one whole connect (TCP and TLS); `None` for none.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

impl fmt::Debug for HttpsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsConnect")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

type Connecting = Pin<
    Box<dyn Future<Output = Result<MaybeHttpsStream<TokioIo<TcpStream>>, BoxError>> + Send>,
>;

impl Service<Uri> for HttpsConnect {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let timeout = self.timeout;
        Box::pin(async move {
            let connected = match timeout {
                Some(after) => match tokio::time::timeout(after, connecting).await {
                    Ok(connected) => connected,
                    Err(_) => {
                        return Err(Box::new(ConnectError {
                            kind: Kind::Timeout(after),
                        }) as BoxError);
                    }
                },
                None => connecting.await,
            };
            connected.map_err(|e| match find_rustls(e.as_ref()) {
                Some(rustls) => Box::new(ConnectError {
                    kind: Kind::Handshake(rustls),
                }),
                None => e,
            })
        })
    }
}

/// Why an [`HttpsConnect`] made no connection, when TLS or the connect
/// timeout is the cause: the source of hyper-util's connect error
/// (`is_connect()`), so reached with `std::error::Error::source` from the
/// balancer's [`Error`](crate::Error). Also [`HttpsClient`](super::HttpsClient)'s
/// error itself when the server refused the handshake after the connect
/// (TLS 1.3: the client's part of the handshake ends before the server
/// checks its certificate, so a refused client certificate arrives as a
/// fatal alert once hyper wrote the request, which the server never
/// processed; see [`ResponseFuture`](super::ResponseFuture)). Either way
/// the request was never sent to the server's application: the balancer
/// counts the attempt as a connect failure
/// ([`Outcome::ConnectFailure`](crate::stats::Outcome::ConnectFailure)) or
/// a connect timeout ([`Outcome::ConnectTimeout`](crate::stats::Outcome::ConnectTimeout))
/// against the instance, and even a POST may go to another instance.
///
/// ```
/// use tower_ribbon::tls::ConnectError;
///
/// /// The TLS failure behind a balancer's error, if any.
/// fn tls_failure(e: &tower_ribbon::Error) -> Option<&ConnectError> {
///     let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
///     while let Some(err) = next {
///         if let Some(found) = err.downcast_ref::<ConnectError>() {
///             return Some(found);
///         }
///         next = err.source();
///     }
///     None
/// }
/// ```
///
/// Its text quotes rustls' message escaped and cut to 512 bytes, as
/// [`EurekaTlsError`](crate::discovery::eureka::EurekaTlsError) does (that
/// message lists the names of the server's certificate as the certificate
/// writes them); read rustls' error itself with
/// [`rustls_error`](Self::rustls_error).
#[derive(Clone)]
pub struct ConnectError {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    /// The TCP connect and the TLS handshake did not finish in time.
    Timeout(Duration),
    /// rustls refused the handshake.
    Handshake(rustls::Error),
}

impl ConnectError {
    /// A server's fatal handshake-only alert read after the connect.
    pub(super) fn refused(alert: rustls::Error) -> Self {
        Self {
            kind: Kind::Handshake(alert),
        }
    }

    /// The connect (TCP and TLS handshake) did not finish within the
    /// connect timeout: a server that accepts connections and never
    /// answers the handshake.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::Timeout(_))
    }

    /// The TLS handshake failed: a certificate not trusted, expired or not
    /// valid for the instance's address, a server that does not speak TLS
    /// there (`InvalidMessage`), a client certificate refused (during the
    /// connect under TLS 1.2, after it under TLS 1.3: rustls'
    /// `AlertReceived` with `CertificateRequired`, `UnknownCA`,
    /// `BadCertificate`, `DecryptError`, ...), no common protocol version.
    pub fn is_handshake(&self) -> bool {
        matches!(self.kind, Kind::Handshake(_))
    }

    /// The connect timeout that fired, for [`is_timeout`](Self::is_timeout).
    pub fn timeout(&self) -> Option<Duration> {
        match self.kind {
            Kind::Timeout(after) => Some(after),
            Kind::Handshake(_) => None,
        }
    }

    /// rustls' error, for [`is_handshake`](Self::is_handshake): for a
    /// certificate made for another name,
    /// `InvalidCertificate(CertificateError::NotValidForNameContext { .. })`;
    /// for a server answering something else than TLS, an
    /// `InvalidMessage`; for a server refusing the client certificate,
    /// `AlertReceived` with the server's alert.
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        match &self.kind {
            Kind::Handshake(e) => Some(e),
            Kind::Timeout(_) => None,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Timeout(after) => write!(
                f,
                "no connection within the connect timeout ({after:?}): the TCP connect and the TLS handshake did not finish; the request was never sent"
            ),
            Kind::Handshake(e) => write!(
                f,
                "TLS handshake failed: {}",
                crate::error::quote_within(&e.to_string(), crate::error::MAX_QUOTED_MESSAGE)
            ),
        }
    }
}

impl fmt::Debug for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Timeout(after) => f.debug_tuple("ConnectError::Timeout").field(after).finish(),
            Kind::Handshake(e) => {
                let quoted = crate::error::quote_within(
                    &format!("{e:?}"),
                    crate::error::MAX_QUOTED_MESSAGE,
                );
                f.debug_tuple("ConnectError::Handshake")
                    .field(&format_args!("{quoted}"))
                    .finish()
            }
        }
    }
}

impl std::error::Error for ConnectError {}

/// rustls' error in `error`'s chain: a [`ConnectError`]'s, or one that
/// hyper-rustls and tokio-rustls carry inside an `io::Error` (whose
/// `source()` skips it).
pub(crate) fn find_rustls(error: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut next = Some(error);
    // Bounded: error chains are short, and a cyclic one must not hang.
    for _ in 0..32 {
        let err = next?;
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        if let Some(connect) = err.downcast_ref::<ConnectError>() {
            return connect.rustls_error().cloned();
        }
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => None,
            },
            None => err.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_inside_io_errors_are_found() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            tls.clone(),
        ));
        assert_eq!(find_rustls(&io), Some(tls.clone()));
        let typed = ConnectError {
            kind: Kind::Handshake(tls.clone()),
        };
        assert_eq!(find_rustls(&typed), Some(tls));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(find_rustls(&refused), None);
    }

    /// The balancer reads the timeout as a connect timeout and a failed
    /// handshake as a connect failure: never sent, so retried anywhere.
    #[test]
    fn the_balancer_counts_them_as_never_sent() {
        use crate::stats::Outcome;
        let timeout: BoxError = Box::new(ConnectError {
            kind: Kind::Timeout(Duration::from_secs(2)),
        });
        assert_eq!(crate::service::classify_error(&timeout), Outcome::ConnectTimeout);
        let refused: BoxError = Box::new(ConnectError {
            kind: Kind::Handshake(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        });
        assert_eq!(crate::service::classify_error(&refused), Outcome::ConnectFailure);
    }

    #[test]
    fn text_names_the_cause() {
        let timeout = ConnectError {
            kind: Kind::Timeout(Duration::from_secs(2)),
        };
        assert!(timeout.is_timeout() && !timeout.is_handshake());
        assert_eq!(timeout.timeout(), Some(Duration::from_secs(2)));
        assert!(timeout.to_string().contains("connect timeout (2s)"), "{timeout}");
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        let handshake = ConnectError {
            kind: Kind::Handshake(name.clone()),
        };
        assert!(handshake.is_handshake() && !handshake.is_timeout());
        assert_eq!(handshake.rustls_error(), Some(&name));
        assert!(handshake.to_string().starts_with("TLS handshake failed: "), "{handshake}");
    }
}
