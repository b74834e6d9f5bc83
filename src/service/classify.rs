//! One outcome classification for every attempt (used by stats, the
//! breaker and, later, retries): connect failure, read timeout, failure
//! status, other error, success.

use std::error::Error as StdError;

use crate::error::BoxError;
use crate::stats::Outcome;

#[cfg(feature = "reqwest")]
mod redirect;
#[cfg(feature = "reqwest")]
pub(super) use redirect::failed_past_redirect;

/// A response whose status can be classified. Implemented for
/// `http::Response<B>`; implement it for your own response type to use
/// `LoadBalancer` over a non-`http` inner service.
pub trait ResponseStatus {
    /// The HTTP status code, if the response has one.
    fn status_code(&self) -> Option<u16>;

    /// The `Retry-After` header, if any. Default: none.
    fn retry_after(&self) -> Option<&http::HeaderValue> {
        None
    }

    /// gRPC's `grpc-retry-pushback-ms` (gRFC A6), if any: how long to wait
    /// before a retry, or (negative, unparsable) not to retry. Default:
    /// none.
    fn retry_pushback(&self) -> Option<&http::HeaderValue> {
        None
    }

    /// An identity of the connection the response came on (a hash of its
    /// local and remote addresses), if known, so that the streams one
    /// connection's end cuts count once against the instance however late
    /// their callers read them. Default: none (lost streams are then told
    /// apart by time).
    fn connection_id(&self) -> Option<u64> {
        None
    }
}

impl<B> ResponseStatus for http::Response<B> {
    /// The HTTP status, or for a gRPC trailers-only response (`200` with
    /// `grpc-status` in the headers) the HTTP status Envoy maps that gRPC
    /// status to (`UNAVAILABLE` -> 503, ...; see
    /// [`grpc::effective_status`](super::grpc_status::effective_status)), so
    /// stats, the breaker, outlier ejection and retries see gRPC failures
    /// through any client.
    ///
    /// A 200 that [`GrpcStatus`](crate::grpc::GrpcStatus) found to be no
    /// gRPC answer to a gRPC call (neither a gRPC content type nor a
    /// `grpc-status`) is 500, gRPC's UNKNOWN.
    fn status_code(&self) -> Option<u16> {
        Some(super::grpc_status::classified_status(self))
    }

    fn retry_after(&self) -> Option<&http::HeaderValue> {
        self.headers().get(http::header::RETRY_AFTER)
    }

    /// In the headers (a retryable gRPC failure is trailers-only).
    /// Several values ask for no retry, as grpc-go reads them; the first
    /// alone decided before (helper 190: `100`, `-1` retried at 100 ms).
    fn retry_pushback(&self) -> Option<&http::HeaderValue> {
        static SEVERAL: http::HeaderValue = http::HeaderValue::from_static("several values");
        let mut values = self.headers().get_all("grpc-retry-pushback-ms").iter();
        let first = values.next()?;
        Some(if values.next().is_some() {
            &SEVERAL
        } else {
            first
        })
    }

    /// For an HTTP/2 response (only an HTTP/2 connection's end cuts
    /// streams it did not fail), hyper-util's `HttpInfo` in the extensions
    /// (its legacy client over `HttpConnector`, and reqwest, put it in
    /// every response); none otherwise (tonic's channel keeps none).
    fn connection_id(&self) -> Option<u64> {
        if self.version() != http::Version::HTTP_2 {
            return None;
        }
        super::connection::id(self.extensions())
    }
}

/// Which response statuses count as failures for stats and the breaker's
/// success rate. Default: every 5xx, and 429.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureStatuses {
    server_errors: bool,
    extra: Vec<u16>,
}

impl Default for FailureStatuses {
    fn default() -> Self {
        Self {
            server_errors: true,
            extra: vec![429],
        }
    }
}

impl FailureStatuses {
    /// Exactly `codes` count as failures (no blanket 5xx).
    pub fn only(codes: impl IntoIterator<Item = u16>) -> Self {
        Self {
            server_errors: false,
            extra: codes.into_iter().collect(),
        }
    }

    /// Whether `code` counts as a failure.
    #[inline]
    pub fn is_failure(&self, code: u16) -> bool {
        (self.server_errors && (500..600).contains(&code)) || self.extra.contains(&code)
    }

    /// The outcome of a response with `code`.
    pub fn classify_status(&self, code: Option<u16>) -> Outcome {
        match code {
            Some(code) if self.is_failure(code) => Outcome::FailureStatus(code),
            _ => Outcome::Success,
        }
    }
}

/// Classifies an inner service's error by walking its source chain:
/// hyper-util's connect errors (a connect error caused by an I/O timeout is
/// a connect timeout, as is the HTTPS client's
/// [`ConnectError`](crate::tls::ConnectError) timeout over the TCP connect
/// and the TLS handshake) and requests it reports handed back unsent (a
/// connect failure), an HTTP/2 stream the server did not process
/// (refused with `REFUSED_STREAM`, or failed by its `GOAWAY`: a connect
/// failure; by a `GOAWAY` with `ENHANCE_YOUR_CALM`:
/// [`Outcome::Declined`]), a TLS server's fatal handshake-only alert read
/// after the connect (TLS 1.3's refused client certificate, feature
/// `tls`: a connect failure), reqwest's connect / timeout errors, `std::io::Error`
/// kinds (refused or unreachable: a connect failure, unless hyper had the
/// request on a connection) and tower's / tokio's `Elapsed` (a read
/// timeout).
pub fn classify_error(error: &BoxError) -> Outcome {
    classify_chain(error.as_ref())
}

/// How a response body's error ends its attempt: its chain read as
/// [`classify_error`] reads an attempt's, for hyper's and reqwest's errors
/// and a boxed error's chain; any other error type is
/// [`Outcome::OtherError`], the instance's. Among what the chain tells:
/// the caller's own request stream failing ([`Outcome::RequestError`]:
/// over HTTP/2 hyper resets the stream, INTERNAL_ERROR or the HTTP/2
/// reason the body's error carries, when the caller's body fails, also
/// after the response headers came, as in a bidirectional stream, and the
/// response body then fails with that reset), and the HTTP/2 connection's
/// end ([`Outcome::ConnectionLost`]: h2's "stream closed because of a
/// broken pipe" for every stream open on it).
pub(crate) fn classify_body_error(error: &(dyn std::any::Any + 'static)) -> Outcome {
    let chain: Option<&(dyn StdError + 'static)> = if let Some(e) = error.downcast_ref::<BoxError>()
    {
        Some(e.as_ref())
    } else {
        hyper_or_reqwest(error)
    };
    chain.map_or(Outcome::OtherError, classify_chain)
}

#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
fn hyper_or_reqwest<'a>(
    error: &'a (dyn std::any::Any + 'static),
) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(e) = error.downcast_ref::<hyper::Error>() {
        return Some(e);
    }
    #[cfg(feature = "reqwest")]
    if let Some(e) = error.downcast_ref::<reqwest::Error>() {
        return Some(e);
    }
    None
}

#[cfg(not(any(feature = "hyper-util", feature = "reqwest")))]
fn hyper_or_reqwest<'a>(
    _: &'a (dyn std::any::Any + 'static),
) -> Option<&'a (dyn StdError + 'static)> {
    None
}

/// Refused by tower middleware inside the inner service before any
/// instance saw it: `LoadShed` (always ready, it fails `call` when its own
/// inner is not) and a `Buffer` whose worker is gone. A local refusal: not
/// the picked instance's failure, and another instance would meet the same
/// (helper 211: 41 shed attempts were charged as other errors and ejected
/// an instance).
fn is_local_refusal(e: &(dyn StdError + 'static)) -> bool {
    e.downcast_ref::<tower::load_shed::error::Overloaded>()
        .is_some()
        || e.downcast_ref::<tower::buffer::error::Closed>().is_some()
}

/// [`classify_error`] over an error chain.
fn classify_chain(error: &(dyn StdError + 'static)) -> Outcome {
    #[cfg_attr(
        not(any(feature = "hyper-util", feature = "reqwest")),
        allow(unused_mut)
    )]
    let mut connecting = false;
    // A hyper error in the chain: the request was on a connection
    // (hyper-util's connect errors wrap the connector's, not hyper's).
    #[cfg_attr(
        not(any(feature = "hyper-util", feature = "reqwest")),
        allow(unused_mut)
    )]
    let mut on_connection = false;
    for e in crate::error::chain(error) {
        #[cfg(any(feature = "hyper-util", feature = "reqwest"))]
        if let Some(outcome) = hyper_util_client(e, &mut connecting) {
            return outcome;
        }
        #[cfg(feature = "tls")]
        if let Some(outcome) = https_connect(e) {
            return outcome;
        }
        // The caller's body failed (hyper's user body error; reqwest's too).
        #[cfg(any(feature = "hyper-util", feature = "reqwest"))]
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if is_user_body_error(h) {
                return Outcome::RequestError;
            }
            on_connection = true;
        }
        #[cfg(any(feature = "hyper-util", feature = "reqwest"))]
        if let Some(outcome) = h2_error(e, on_connection) {
            return outcome;
        }
        #[cfg(feature = "reqwest")]
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            // reqwest refused to build the request before any I/O: the
            // balancer rewrote its URI to the instance's address, so this is
            // an address reqwest cannot take (an IPv6 zone id, a plain
            // instance under `https_only`), not the caller's request. It
            // never reached a server, and another instance may take it.
            if r.is_builder() {
                return Outcome::ConnectFailure;
            }
            match (r.is_connect(), r.is_timeout()) {
                (true, true) => return Outcome::ConnectTimeout,
                (true, false) => connecting = true,
                (false, true) => return Outcome::ReadTimeout,
                (false, false) => {}
            }
        }
        if is_local_refusal(e) {
            return Outcome::RequestError;
        }
        if e.downcast_ref::<tower::timeout::error::Elapsed>().is_some()
            || e.downcast_ref::<tokio::time::error::Elapsed>().is_some()
            || e.downcast_ref::<super::try_timer::Fired>().is_some()
        {
            return if connecting {
                Outcome::ConnectTimeout
            } else {
                Outcome::ReadTimeout
            };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            #[cfg(any(feature = "hyper-util", feature = "reqwest"))]
            if on_connection && is_h2_connection_end(io) {
                return Outcome::ConnectionLost;
            }
            match io.kind() {
                // On an established connection (the server may have the
                // request) these are transport errors: Linux returns an
                // ICMP unreachable as a connection's error once its
                // retransmissions give up, after the request was sent.
                ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
                    if connecting || !on_connection =>
                {
                    return Outcome::ConnectFailure;
                }
                TimedOut if connecting => return Outcome::ConnectTimeout,
                TimedOut => return Outcome::ReadTimeout,
                _ => {}
            }
        }
    }
    if connecting {
        Outcome::ConnectFailure
    } else {
        Outcome::OtherError
    }
}

/// Reads `e` as h2's error ([`h2_stream`]) or, on a connection (`on_connection`),
/// its I/O error: a response body's error keeps h2's error, whose I/O
/// error is not its `source` (hyper turns a request's into its own I/O
/// error), so the connection's end is read here, as in `classify_chain`.
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
fn h2_error(e: &(dyn StdError + 'static), on_connection: bool) -> Option<Outcome> {
    let h = e.downcast_ref::<h2::Error>()?;
    h2_stream(h).or_else(|| {
        (on_connection && h.get_io().is_some_and(is_h2_connection_end))
            .then_some(Outcome::ConnectionLost)
    })
}

/// Reads h2's error of one stream: unprocessed by the server (a connect
/// failure, or [`Outcome::Declined`]), or reset for the caller's body.
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
fn h2_stream(h: &h2::Error) -> Option<Outcome> {
    // A stream the server refused with REFUSED_STREAM was not processed
    // (RFC 9113, section 8.7): the reset names the stream. Like a refused
    // connection, it never reached the application, and even a POST may
    // go elsewhere. h2 fails with a remote GOAWAY the streams above its
    // last stream id (section 6.8), unprocessed; but hyper's client fails
    // with the same error a stream it had just opened and sent when the
    // GOAWAY arrives before its next `poll_ready` (hyper 1.x,
    // `proto::h2::client::ClientTask::poll`), and a graceful drain's first
    // GOAWAY (NO_ERROR, last id 2^31 − 1) leaves such a stream processed:
    // under 500 drains of a hyper server, 4 to 8 POSTs ran at both
    // instances (helper 173), with or without a body (a hyper server runs
    // the handler at the HEADERS; found by an attack). So a graceful GOAWAY
    // is a connection's end (retried when idempotent, not counted against
    // the instance), whatever the request's body, and only an abrupt one
    // (an error code: its last id is real, and a stream opened as it came
    // is above it) stays unprocessed.
    let refused = h.is_reset() && h.reason() == Some(h2::Reason::REFUSED_STREAM);
    if h.is_remote() && h.is_go_away() && h.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
        // The server's complaint about this client's traffic (one caller's
        // oversized header list fails every stream above the last id):
        // unprocessed, and not the instance's failure.
        return Some(Outcome::Declined);
    }
    if h.is_remote() && h.is_go_away() && h.reason() == Some(h2::Reason::NO_ERROR) {
        return Some(Outcome::ConnectionLost);
    }
    if h.is_remote() && (refused || h.is_go_away()) {
        return Some(Outcome::ConnectFailure);
    }
    // Over HTTP/2 hyper reports the caller's body failing as the reset it
    // sent for it: a stream reset by this side (not the server, not h2
    // itself), with INTERNAL_ERROR or the HTTP/2 reason the body's error
    // carries (a gateway's downstream client that cancelled). hyper's only
    // other reset of a client stream is for a response future dropped,
    // whose error no one reads.
    (h.is_reset() && !h.is_remote() && !h.is_library()).then_some(Outcome::RequestError)
}

/// Whether `io` is h2's error for a stream whose connection the server
/// closed (end of stream on the TCP connection) while the stream was open,
/// or as it was opened (h2 0.4, `State::recv_eof` and `Streams::recv_eof`,
/// texts since hyperium/h2#615, kind `BrokenPipe`; hyper passes h2's I/O
/// errors on as its own for a request, and keeps h2's error, the I/O error
/// inside, for a response body). Over HTTP/1 hyper reports
/// a closed connection otherwise ("connection closed before message
/// completed"), so these texts name HTTP/2 only.
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
fn is_h2_connection_end(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::BrokenPipe
        && (displays_as(io, "stream closed because of a broken pipe")
            || displays_as(io, "connection closed because of a broken pipe"))
}

/// Reads hyper-util's client error (`connecting` once it is a connect
/// error or a request handed back unsent) and, inside a connect error, its
/// plain connector refusing the scheme (the caller's error).
/// (reqwest sends through hyper-util's client, whose errors its own
/// carry: read with the `reqwest` feature alone too, which names
/// hyper-util for that. Before, that build missed a request hyper handed
/// back unsent, and a POST that never reached a server was not retried.)
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
fn hyper_util_client(e: &(dyn StdError + 'static), connecting: &mut bool) -> Option<Outcome> {
    if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
        *connecting |= h.is_connect() || handed_back_unsent(h);
        return None;
    }
    (*connecting && is_plain_connector_scheme_refusal(e)).then_some(Outcome::RequestError)
}

/// Whether `e` is hyper-util's `HttpConnector` refusing a URI whose scheme
/// is not `http` (its `ConnectError`, whose text is this constant), before
/// any I/O. For the caller's `https` no instance is at fault and every
/// instance would refuse the same: the caller's [`Outcome::RequestError`]
/// (an instance registered as secure is the instance's, see
/// [`refused_scheme`]). The error type is private to hyper-util, so its
/// text is compared.
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
fn is_plain_connector_scheme_refusal(e: &(dyn StdError + 'static)) -> bool {
    e.source().is_none() && displays_as(e, "invalid URL, scheme is not http")
}

/// Whether hyper-util's plain connector refused `error`'s URI for its
/// scheme (anywhere in the chain): an attempt on an instance registered as
/// secure then failed for the instance's `https`, not the caller's, and is
/// a connect failure (this client cannot reach that instance, so another
/// one is tried, as for reqwest's builder error or `https_only`).
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
pub(super) fn refused_scheme(error: &BoxError) -> bool {
    for e in crate::error::chain(error.as_ref()) {
        if is_plain_connector_scheme_refusal(e) {
            return true;
        }
    }
    false
}

/// The outcome of the HTTPS client's connector error
/// ([`ConnectError`](crate::tls::ConnectError)): the TCP connect and the
/// TLS handshake did not finish within the connect timeout (a server that
/// accepts and never answers the handshake), or the handshake failed.
/// Nothing was written either way. Also a server's fatal handshake-only
/// alert read on the connection after the connect (TLS 1.3: a client
/// certificate refused once the client's part of the handshake ended),
/// through any client over rustls: the request was written but never
/// processed, a connect failure too (see `tls::alert`).
#[cfg(feature = "tls")]
fn https_connect(error: &(dyn StdError + 'static)) -> Option<Outcome> {
    if crate::tls::handshake_refusal(error).is_some() {
        return Some(Outcome::ConnectFailure);
    }
    let connect = error.downcast_ref::<crate::tls::ConnectError>()?;
    Some(if connect.is_timeout() {
        Outcome::ConnectTimeout
    } else {
        Outcome::ConnectFailure
    })
}

/// Whether hyper-util reports `error` as its `Canceled` kind: hyper
/// handed the request back unwritten (the connection closed before it was
/// sent, which hyper-util retries itself only on a reused connection), or
/// the pool gave up on the connection before any request. Either way the
/// request never reached a server. hyper-util has no public test for the
/// kind; its `Display` names it (`client error (Canceled)`). Should that
/// text change, such errors fall back to `OtherError` (not retried for a
/// POST), as before.
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
fn handed_back_unsent(error: &hyper_util::client::legacy::Error) -> bool {
    displays_as(error, "client error (Canceled)")
}

/// Whether `error` is hyper's error for the caller's request body failing
/// (its `User(Body)` kind, whose cause is the body's error). hyper has no
/// public test for the kind; its `Display` names it. Not any user error
/// with a cause: hyper's `User(DispatchGone)` carries one too ("runtime
/// dropped the dispatch task"), and hyper's HTTP/2 client fails with it
/// the request it queued at the server's stream limit
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`) when the connection ends under it,
/// a `GOAWAY` among others: read as the caller's error, that failure of
/// the instance counted in no stats and was retried for no method
/// (tonic reported INTERNAL). Should the text change, a failed request
/// body falls back to `OtherError`: counted against the instance, and
/// retried only for an idempotent method with a body that replays.
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
fn is_user_body_error(error: &hyper::Error) -> bool {
    // hyper's HTTP/1 client fails a request whose body ended short of its
    // `Content-Length` with `BodyWriteAborted` (its only use in the
    // client): the caller's body, not the instance (the server waits for
    // the rest of a request it never processes).
    error.is_body_write_aborted()
        || (error.is_user() && displays_as(error, "error from user's Body stream"))
}

/// Whether `error` displays exactly as `text`, compared as it is written
/// (no allocation), stopping at the first difference.
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
fn displays_as(error: &dyn std::fmt::Display, text: &str) -> bool {
    use std::fmt::Write;

    /// Matches written text against `rest`, stopping at the first
    /// difference.
    struct Matches<'a> {
        rest: &'a str,
    }

    impl Write for Matches<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.rest = self.rest.strip_prefix(s).ok_or(std::fmt::Error)?;
            Ok(())
        }
    }

    let mut matches = Matches { rest: text };
    write!(matches, "{error}").is_ok() && matches.rest.is_empty()
}

#[cfg(test)]
mod tests;
