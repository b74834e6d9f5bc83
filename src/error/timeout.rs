//! [`TimeoutKind`]: which timeout cut a request off.

use std::fmt;
use std::time::Duration;

/// Which timeout ended a request, as [`Error::timeout`](crate::Error::timeout)
/// reports it. The defaults are Ribbon's (see
/// [`service::timeouts`](crate::service::timeouts)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// No connection within the HTTP client's connect timeout (Ribbon
    /// `ConnectTimeout`): the request never reached the server. Holds the
    /// balancer's configured value
    /// ([`Builder::connect_timeout`](crate::Builder::connect_timeout)),
    /// which is the client's when the balancer built the client or you set
    /// it from there.
    Connect(Option<Duration>),
    /// The balancer's per-try (read) timeout (Ribbon `ReadTimeout`,
    /// [`Builder::read_timeout`](crate::Builder::read_timeout),
    /// [`RetryPolicy::per_try_timeout`](crate::retry::RetryPolicy::per_try_timeout)).
    PerTry(Duration),
    /// The request's overall deadline
    /// ([`RetryPolicy::deadline`](crate::retry::RetryPolicy::deadline)).
    Deadline(Duration),
    /// The inner client's own read timeout (e.g. reqwest's `timeout`).
    Client,
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeoutKind::Connect(Some(t)) => write!(
                f,
                "the connect timeout ({t:?}) fired: no connection was made, the request never reached the server (set it with `ConnectTimeout` or `Builder::connect_timeout`)"
            ),
            TimeoutKind::Connect(None) => write!(
                f,
                "the connect attempt timed out: no connection was made, the request never reached the server"
            ),
            TimeoutKind::PerTry(t) => write!(
                f,
                "the per-try (read) timeout ({t:?}) fired before the response headers (raise it with `ReadTimeout` or `Builder::read_timeout`; `RetryPolicy::per_try_timeout` wins when set)"
            ),
            TimeoutKind::Deadline(t) => write!(
                f,
                "the request deadline ({t:?}, `RetryPolicy::deadline`) fired"
            ),
            TimeoutKind::Client => f.write_str("the HTTP client's own timeout fired"),
        }
    }
}

/// The balancer's own timer fired: the error an attempt ends with, naming
/// the timeout; its source is the timer's `Fired` (so classification and
/// gRPC status mapping still see a timeout).
#[derive(Debug)]
pub(crate) struct TimedOut {
    pub(crate) kind: TimeoutKind,
    pub(crate) source: crate::BoxError,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for TimedOut {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
