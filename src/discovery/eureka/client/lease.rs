//! Lease calls of [`EurekaRegistration`](super::super::EurekaRegistration):
//! which answers end one at the server that gave them, and which failures
//! may still reach a server's registry late.

use http::{Method, StatusCode};

use crate::error::DiscoveryError;

/// A lease call of [`EurekaRegistration`](super::super::EurekaRegistration):
/// its method, and which answers end it at the server that gave them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeaseCall {
    /// `POST /apps/{APP}`.
    Register,
    /// `PUT /apps/{APP}/{id}` (heartbeat).
    Renew,
    /// `PUT /apps/{APP}/{id}/status?value=…`.
    Status,
    /// `DELETE /apps/{APP}/{id}`.
    Cancel,
    /// `DELETE /apps/{APP}/{id}/status?value=…` (an override removed).
    ClearOverride,
}

impl LeaseCall {
    pub(super) fn method(self) -> Method {
        match self {
            Self::Register => Method::POST,
            Self::Renew | Self::Status => Method::PUT,
            Self::Cancel | Self::ClearOverride => Method::DELETE,
        }
    }

    /// Whether `status` is this call's answer, not a reason to try the
    /// next server. As Java's legacy `ServerStatusEvaluator`: any 2xx;
    /// 404 for a registration and for a heartbeat (the server forgot the
    /// instance: the caller registers again on the server that said so).
    /// A status update's 404 tries the next server, which may hold the
    /// instance. Two differences from Java: a 302 moves on (no redirect is
    /// followed here, so it is no answer), and a cancel accepts only 2xx,
    /// where Java takes any status as best effort: `shutdown` awaits and
    /// reports the cancel, and an instance left registered keeps getting
    /// traffic until its lease expires. A cancel's 404 (this server does
    /// not hold the instance: it restarted empty, or the instance
    /// registered elsewhere while it was down) tries the next server, which
    /// may; the caller takes 404 from every server as "already gone".
    pub(super) fn accepts(self, status: StatusCode) -> bool {
        status.is_success()
            || (status == StatusCode::NOT_FOUND && matches!(self, Self::Register | Self::Renew))
    }
}

/// A lease call's answer.
#[derive(Debug)]
pub(crate) struct LeaseAnswer {
    /// The status of the server that answered.
    pub(crate) status: StatusCode,
    /// That server's base URL.
    pub(crate) server: String,
    /// Whether a server tried before it failed without an answer (see
    /// [`maybe_delivered`]): it may apply the request late.
    pub(crate) unanswered: bool,
}

/// Whether a failed request may still reach the server's registry: it
/// timed out, or failed in transport after connecting (a server that
/// hangs, as a paused JVM, reads the request when it wakes and applies
/// it), or a gateway in front of Eureka answered 502 or 504 (it may have
/// passed the request on, and the server behind it may apply it later:
/// RFC 9110 §15.6.3 and §15.6.5; helper 121 saw a drained instance served
/// UP for good after an UP a gateway timed out landed behind the DOWN).
/// A failed connect never sent it; another answer is no late write.
/// Over every server's error for `AllServersFailed`.
pub(crate) fn maybe_delivered(e: &DiscoveryError) -> bool {
    match e {
        DiscoveryError::Timeout { .. } => true,
        DiscoveryError::Status { status, .. } => matches!(status, 502 | 504),
        DiscoveryError::Transport { source, .. } => !source
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect),
        DiscoveryError::AllServersFailed(all) => all.iter().any(maybe_delivered),
        _ => false,
    }
}
