//! How one attempt ended: the one classification every part of the crate
//! (stats, breaker, outlier ejection, retries) shares.

/// How one attempt ended, as every part of the crate classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A response that is not a failure status.
    Success,
    /// The connection was refused or could not be made, the client handed
    /// the request back unsent (the connection closed before it was
    /// written: hyper-util's `Canceled`), or the server did not process
    /// the HTTP/2 stream (it refused it with `REFUSED_STREAM`, or its
    /// abrupt `GOAWAY`, with an error code, named a lower last stream id;
    /// a graceful one is [`Outcome::ConnectionLost`]): the request
    /// provably never reached the server.
    ConnectFailure,
    /// The connection was not made within the connect timeout: the request
    /// provably never reached the server.
    ConnectTimeout,
    /// No response in time after the request was sent (read timeout).
    ReadTimeout,
    /// A response whose status counts as a failure (default: 5xx and 429).
    FailureStatus(u16),
    /// Any other error of the inner service.
    OtherError,
    /// The request could not be sent as the caller gave it: the caller's
    /// request body failed while being sent (hyper's user body error), or
    /// hyper-util's plain `HttpConnector` refused, before any I/O, the
    /// `https` the caller asked for (on an instance registered as secure
    /// the refusal is a [`Outcome::ConnectFailure`]: this client cannot
    /// reach that instance), or tower middleware inside the inner service
    /// refused it before any instance saw it (`LoadShed`'s `Overloaded`, a
    /// closed `Buffer`).
    /// (reqwest's builder error is a [`Outcome::ConnectFailure`]: the
    /// balancer put the instance's address in the URI reqwest refused.)
    /// Not the instance's fault: it counts in no stats, circuit breaker or
    /// outlier ejection, and it is never retried (it fails the same at
    /// every instance). Envoy likewise leaves downstream resets out of
    /// outlier detection.
    RequestError,
    /// The server closed the HTTP/2 connection before processing the
    /// request's stream, telling this client to calm down: a `GOAWAY` with
    /// `ENHANCE_YOUR_CALM` (RFC 9113, section 7) whose last stream id is
    /// below the stream's. The request never reached the application, so
    /// it is retried like a connect failure, even a POST. But the
    /// complaint is about this client's traffic, not the instance's health:
    /// h2's server sends it for one caller's header list over four times
    /// its limit, a flood of resets or pings, and every other request
    /// above its last stream id on that connection fails with it too (the
    /// streams at or below it, which the server had taken, end with the
    /// connection's own error when it closes: [`Outcome::ConnectionLost`]).
    /// So a declined attempt
    /// counts in no stats, circuit breaker or outlier ejection, except the
    /// first of each instance in every
    /// [`StatsConfig::declined_counted_every`](super::StatsConfig::declined_counted_every)
    /// (default 1 s), which the balancer records as a
    /// [`Outcome::ConnectFailure`]: a burst counts once, and a server that
    /// declines everything still trips its breaker (before, every one was
    /// a connect failure, and five requests with one oversized header
    /// opened the breakers of two healthy instances). A stream reset
    /// (`RST_STREAM`) with the same code may follow processing and stays
    /// an [`Outcome::OtherError`].
    Declined,
    /// The server closed the HTTP/2 connection (end of stream on its TCP
    /// connection) while the request's stream was open: h2's "stream
    /// closed because of a broken pipe", or "connection closed because of
    /// a broken pipe" for a stream opened as it closed. The server may
    /// have processed the request, so it is retried only as an
    /// [`Outcome::OtherError`] is (an idempotent request). But one closed
    /// connection fails every stream open on it at once, and a server
    /// closes one for a single stream's fault: after a `GOAWAY` (a
    /// connection error: RFC 9113, section 5.4.1, such as the
    /// `ENHANCE_YOUR_CALM` that one caller's oversized header list draws),
    /// the streams the server had taken end this way. Counted per stream,
    /// one caller's request made 186 of 199 concurrent requests over two
    /// healthy instances fail and ejected one of them. So a connection's
    /// end counts once: the balancer records as an [`Outcome::OtherError`]
    /// the first lost stream of each connection: told by the connection
    /// its response named ([`ResponseStatus::connection_id`](crate::service::ResponseStatus::connection_id),
    /// hyper-util's and reqwest's), however late its caller reads it, else
    /// by time (a stream sent after the instance's last counted one ended;
    /// the others were on a connection whose end is counted already), and
    /// none within
    /// [`StatsConfig::declined_counted_every`](super::StatsConfig::declined_counted_every)
    /// after one of the instance's attempts was [`Outcome::Declined`] (its
    /// `GOAWAY` closed the connection for this client's traffic; a lost
    /// stream that ends before the decline does may still count, once).
    /// Uncounted, it is in no stats, circuit breaker or outlier ejection.
    /// A server that closes every connection is still ejected as soon as
    /// before (each request on a new connection counts). A response body
    /// the connection's end cuts after its headers (a server stream, a
    /// download) is read and counted the same way (before, each such
    /// stream was an [`Outcome::OtherError`]: one caller's oversized
    /// header cutting ten open streams per instance ejected one). Over HTTP/1 a
    /// connection carries one request, and its loss stays an
    /// [`Outcome::OtherError`].
    ///
    /// A stream failed by a graceful `GOAWAY` (`NO_ERROR`) is one too:
    /// RFC 9113 (section 6.8) says a stream above its last stream id was
    /// not processed, but hyper's client fails with that error a stream it
    /// had just opened and sent when the `GOAWAY` comes before its next
    /// `poll_ready` (`proto::h2::client::ClientTask::poll`, hyper 1.x),
    /// and a drain's first `GOAWAY` (last id 2^31 − 1) leaves that stream
    /// to be processed: read as unprocessed, 4 to 8 POSTs in 500 drains of
    /// a hyper server ran at two instances. The server got that stream's
    /// HEADERS, and a hyper or axum server runs the handler at the HEADERS
    /// (one that acts before reading the body, or never reads it, has run),
    /// so a request with a body may have reached the application too
    /// (read as unsent, 4 POSTs with a body in 500 drains ran at two
    /// instances). Nothing in the error tells that stream from one above
    /// the `GOAWAY`'s last id, so every such request is retried only when
    /// idempotent: a POST fails with an error saying it may have reached
    /// the server. An abrupt `GOAWAY` (an error code: its last id is real,
    /// so a stream opened as it came is above it) stays a
    /// [`Outcome::ConnectFailure`], even for a POST.
    ConnectionLost,
}

impl Outcome {
    /// A success.
    pub fn is_success(self) -> bool {
        self == Outcome::Success
    }

    /// A connection-class failure (connect failure, connect timeout or read
    /// timeout): what trips the circuit breaker (Ribbon counts the same).
    pub fn is_connection_failure(self) -> bool {
        matches!(
            self,
            Outcome::ConnectFailure | Outcome::ConnectTimeout | Outcome::ReadTimeout
        )
    }

    /// The request provably never reached a server (connect failure,
    /// connect timeout, or declined), so even a non-idempotent request
    /// may be retried.
    pub fn never_reached_server(self) -> bool {
        matches!(
            self,
            Outcome::ConnectFailure | Outcome::ConnectTimeout | Outcome::Declined
        )
    }

    /// Whether the outcome is the instance's to count (in stats, the
    /// circuit breaker and outlier ejection): every outcome but the
    /// caller's [`Outcome::RequestError`] and the server's complaint about
    /// this client's traffic, [`Outcome::Declined`], and a stream its
    /// connection's end took, [`Outcome::ConnectionLost`] (the balancer
    /// counts the first of those a second per instance instead, as a
    /// connect failure and an other error).
    pub fn counts_against_instance(self) -> bool {
        !matches!(
            self,
            Outcome::RequestError | Outcome::Declined | Outcome::ConnectionLost
        )
    }

    /// A response arrived (success or failure status): what resets the
    /// breaker's count of successive connection failures (Ribbon clears it
    /// on every response).
    pub(crate) fn is_response(self) -> bool {
        matches!(self, Outcome::Success | Outcome::FailureStatus(_))
    }

    /// Whether this outcome counts as an Envoy `consecutive_5xx` error and
    /// as a `consecutive_gateway_failure` error: connection-level failures
    /// count as both; 5xx as the first, 502/503/504 as both.
    pub(crate) fn outlier_errors(self) -> (bool, bool) {
        match self {
            Outcome::Success => (false, false),
            Outcome::FailureStatus(code) => ((500..600).contains(&code), matches!(code, 502..=504)),
            Outcome::RequestError | Outcome::Declined | Outcome::ConnectionLost => (false, false),
            _ => (true, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn classes() {
        assert!(Outcome::ReadTimeout.is_connection_failure());
        assert!(!Outcome::ReadTimeout.never_reached_server());
        assert!(Outcome::ConnectTimeout.never_reached_server());
        assert_eq!(Outcome::FailureStatus(503).outlier_errors(), (true, true));
        assert_eq!(Outcome::FailureStatus(500).outlier_errors(), (true, false));
        assert_eq!(Outcome::FailureStatus(429).outlier_errors(), (false, false));
        assert_eq!(Outcome::OtherError.outlier_errors(), (true, true));
        assert!(Outcome::FailureStatus(500).is_response());
        assert!(!Outcome::OtherError.is_response());
        assert_eq!(Outcome::RequestError.outlier_errors(), (false, false));
        assert!(!Outcome::RequestError.is_connection_failure());
        assert!(!Outcome::RequestError.never_reached_server());
        assert!(!Outcome::RequestError.counts_against_instance());
        assert!(Outcome::Declined.never_reached_server());
        assert!(!Outcome::Declined.is_connection_failure());
        assert!(!Outcome::Declined.is_response());
        assert!(!Outcome::Declined.counts_against_instance());
        assert_eq!(Outcome::Declined.outlier_errors(), (false, false));
        assert!(!Outcome::ConnectionLost.never_reached_server());
        assert!(!Outcome::ConnectionLost.is_connection_failure());
        assert!(!Outcome::ConnectionLost.is_response());
        assert!(!Outcome::ConnectionLost.counts_against_instance());
        assert_eq!(Outcome::ConnectionLost.outlier_errors(), (false, false));
        assert!(Outcome::ConnectFailure.counts_against_instance());
        assert!(Outcome::OtherError.counts_against_instance());
    }
}
