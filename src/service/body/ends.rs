//! How a response body's attempt ends in the unusual cases: trailers that
//! carry a gRPC status, a body error that is not the instance's alone
//! (the caller's request stream, the connection's end), and a body that
//! panics while it is polled.

use tokio::time::Instant;

use super::Completion;
use crate::stats::Outcome;

impl Completion {
    /// The response's trailers arrived: a gRPC status in them (a call
    /// that failed after response messages) classifies the attempt as a
    /// trailers-only response's would be (UNAVAILABLE a 503, ...), if the
    /// service's failure statuses count it, unless its result is
    /// recorded already. Envoy reads grpc-status from trailers for
    /// outlier detection the same way.
    pub(super) fn trailers(&mut self, trailers: &http::HeaderMap) {
        if !self.outcome.is_success() {
            return;
        }
        let (Some(state), Some(code)) = (
            &self.state,
            crate::service::grpc_status::grpc_status(trailers),
        ) else {
            return;
        };
        // The caller's deadline, at the server: a server stream that ran
        // until it counted against its instance (helper 190).
        let sent = self.in_flight.sent();
        if code == 4
            && (self.callers_deadline).is_some_and(|at| {
                crate::service::grpc_status::deadline_reached(sent, at, Instant::now())
            })
        {
            return;
        }
        let status = crate::service::grpc_status::http_status_for(code);
        if state.request_config().failure_statuses.is_failure(status) {
            self.outcome = Outcome::FailureStatus(status);
        }
    }
}

impl Completion {
    /// The response body failed with an error read as `error` (by
    /// `classify::classify_body_error`): the caller's own request stream
    /// ([`Outcome::RequestError`]) is no fault of the instance (before,
    /// five bidirectional streams whose uploads broke ejected it); the
    /// HTTP/2 connection's end ([`Outcome::ConnectionLost`]) counts once
    /// per end, as for an attempt before its headers (`attempt::end`):
    /// an [`Outcome::OtherError`] only for the first stream of its
    /// connection (by the response's connection identity, so however late
    /// the caller reads it; without one, a stream sent after the
    /// instance's last counted lost stream ended), and none within
    /// `StatsConfig::declined_counted_every` after a declined attempt.
    /// Before, a server's `GOAWAY(ENHANCE_YOUR_CALM)` for one caller's
    /// oversized header cut ten open response streams, charged the
    /// instance eleven failures and ejected it. Anything else (a reset, a
    /// truncated message) is [`body_failed`](Self::body_failed).
    pub(super) fn body_error(&mut self, error: Outcome) {
        match error {
            Outcome::RequestError => self.request_failed(),
            Outcome::ConnectionLost if self.outcome.is_success() => {
                let stats = self.in_flight.endpoint().stats_handle();
                let (sent, connection) = (self.in_flight.sent(), self.connection.map(u64::from));
                self.outcome = if stats.count_lost(sent, Instant::now(), connection) {
                    Outcome::OtherError
                } else {
                    Outcome::ConnectionLost
                };
            }
            _ => self.body_failed(),
        }
    }
}

/// Marks the attempt failed if dropped while a panic unwinds (forgotten
/// when the poll returns).
pub(super) struct PanicFails<'a>(pub(super) &'a mut Option<Completion>);

impl Drop for PanicFails<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(done) = self.0.as_mut() {
                done.body_failed();
            }
        }
    }
}
