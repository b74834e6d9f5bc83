//! Error types.
//!
//! - [`Error`]: what a [`LoadBalancer`](crate::LoadBalancer) call returns.
//!   One opaque machine word (a `Box` of a private inner, as hyper's
//!   `Error`), so it can grow without breaking callers: ask it with
//!   predicates ([`Error::is_no_instances`], [`Error::is_timeout`], ...) and
//!   accessors ([`Error::service_id`], [`Error::instance`],
//!   [`Error::attempts`]); [`source`](std::error::Error::source) chains to
//!   the inner service's or the discovery's error. The `Display` text is for
//!   people and is not API.
//! - [`Attempt`]: one attempt of a request, as listed by [`Error::attempts`].
//! - [`DiscoveryError`]: what an [`InstanceSource`](crate::discovery::InstanceSource)
//!   fetch returns; a refresh that gets one keeps the last good list.
//! - [`InstanceError`]: an address that cannot become an instance.
//! - [`BuildError`]: a configuration that cannot become a balancer or source.
//!
//! ```
//! use tower_ribbon::LoadBalancer;
//! use tower_ribbon::discovery::StaticSource;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let source = StaticSource::new().with_list("user-service", "").unwrap();
//! let inner = tower::service_fn(|_req: http::Request<String>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//! });
//! let lb = LoadBalancer::builder().source(source).service("user-service").build(inner).unwrap();
//! let request = http::Request::get("http://user-service/").body(String::new()).unwrap();
//! let err = lb.request(request).await.unwrap_err();
//! assert!(err.is_no_instances());
//! assert_eq!(err.service_id(), "user-service");
//! assert!(err.instance().is_none());
//! assert!(err.attempts().is_empty());
//! assert_eq!(std::mem::size_of_val(&err), std::mem::size_of::<usize>());
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod attempt;
mod discovery;
mod input;
mod text;
mod timeout;
cfg_feature! {
    #![feature = "eureka"]
    pub mod wire;
}

pub use attempt::Attempt;
pub use discovery::DiscoveryError;
pub use input::{BuildError, InstanceError, InstanceErrorKind, InvalidSetting};
pub(crate) use text::DebugCut;
#[cfg(any(feature = "grpc", feature = "tls"))]
pub(crate) use text::MAX_QUOTED_MESSAGE;
pub(crate) use text::Quoted;
use text::attempts_suffix;
pub(crate) use text::quote;
pub(crate) use text::quote_within;
// Used by the config, eureka and health modules, which features turn off.
#[allow(unused_imports)]
pub(crate) use text::redact;
pub(crate) use text::redact_uri;
pub(crate) use timeout::TimedOut;
pub use timeout::TimeoutKind;

/// A boxed error of an inner service or a custom source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error of a [`LoadBalancer`](crate::LoadBalancer) call.
///
/// One machine word: a `Box` of a private inner. Branch on it with the
/// predicates (`is_*`), read what it is about with [`Error::service_id`],
/// [`Error::instance`] and [`Error::attempts`], and follow
/// [`source`](std::error::Error::source) to the cause. The `Display` text
/// names the service and the cause and is not API.
pub struct Error {
    inner: Box<ErrorImpl>,
}

struct ErrorImpl {
    kind: Kind,
    /// The service id (the quoted URI for [`Kind::NoServiceInUri`]).
    service: String,
    /// The instance of the last attempt (`scheme://authority`).
    instance: Option<String>,
    source: Option<BoxError>,
    attempts: Vec<Attempt>,
    /// Which timeout ended the request, if one did.
    timeout: Option<TimeoutKind>,
    /// What to know or do next, for people (which timeout fired, why no
    /// retry, which services exist).
    note: Option<Cow<'static, str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The service is known but has no eligible (`UP`) instance right now.
    NoInstances,
    /// As `NoInstances`, none listed `UP`; the note says what was listed.
    NoneUp,
    /// The URI host names no service this balancer was configured with.
    UnknownService,
    /// The request URI has no host to take a service id from.
    NoServiceInUri,
    /// The instance list could not be fetched and no earlier list exists.
    Discovery,
    /// The first instance list did not arrive within the configured bound.
    DiscoveryTimeout(Duration),
    /// The rewritten request could not be built.
    InvalidRequest,
    /// The last attempt failed without a response.
    Inner,
}

impl Error {
    fn new(kind: Kind, service: impl Into<String>) -> Self {
        Self {
            inner: Box::new(ErrorImpl {
                kind,
                service: service.into(),
                instance: None,
                source: None,
                attempts: Vec::new(),
                timeout: None,
                note: None,
            }),
        }
    }

    /// Adds a note for people to the message.
    pub(crate) fn with_note(mut self, note: impl Into<Cow<'static, str>>) -> Self {
        self.inner.note = Some(note.into());
        self
    }

    /// Records which timeout ended the request.
    pub(crate) fn with_timeout(mut self, timeout: TimeoutKind) -> Self {
        self.inner.timeout = Some(timeout);
        self
    }

    /// Lists the attempts made before the request failed.
    pub(crate) fn with_attempts(mut self, attempts: Vec<Attempt>) -> Self {
        self.inner.attempts = attempts;
        self
    }

    fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn no_instances(service: &str) -> Self {
        Self::new(Kind::NoInstances, service)
    }

    /// No `UP` instance listed; `why` continues the sentence after the
    /// service (`Listing::why_none_up`: ": no instance is UP (...)").
    pub(crate) fn none_up(service: &str, why: String) -> Self {
        Self::new(Kind::NoneUp, service).with_note(why)
    }

    pub(crate) fn unknown_service(service: &str) -> Self {
        Self::new(Kind::UnknownService, quote(service))
    }

    pub(crate) fn no_service_in_uri(uri: &http::Uri) -> Self {
        // Without its userinfo and query: a password or token the caller
        // put there.
        Self::new(Kind::NoServiceInUri, quote(&redact_uri(&uri.to_string())))
    }

    pub(crate) fn discovery(service: &str, source: Arc<DiscoveryError>) -> Self {
        Self::new(Kind::Discovery, service).with_source(SharedDiscoveryError(source))
    }

    pub(crate) fn discovery_timeout(service: &str, waited: Duration) -> Self {
        Self::new(Kind::DiscoveryTimeout(waited), service)
    }

    pub(crate) fn invalid_request(
        service: &str,
        instance: String,
        source: impl Into<BoxError>,
    ) -> Self {
        let mut err = Self::new(Kind::InvalidRequest, service).with_source(source);
        err.inner.instance = Some(instance);
        err
    }

    /// The caller's request contradicts itself; found before any attempt.
    pub(crate) fn malformed_request(service: &str, source: impl Into<BoxError>) -> Self {
        Self::new(Kind::InvalidRequest, service).with_source(source)
    }

    pub(crate) fn inner(
        service: &str,
        instance: String,
        source: BoxError,
        attempts: Vec<Attempt>,
    ) -> Self {
        let mut err = Self::new(Kind::Inner, service);
        err.inner.instance = Some(instance);
        err.inner.source = Some(source);
        err.inner.attempts = attempts;
        err
    }

    /// The inner service failed or timed out while becoming ready, before
    /// an instance was chosen.
    pub(crate) fn not_ready(service: &str, source: BoxError, attempts: Vec<Attempt>) -> Self {
        let mut err = Self::new(Kind::Inner, service).with_source(source);
        err.inner.attempts = attempts;
        err
    }

    /// The service id the error is about: the request URI's host (cut to
    /// 128 bytes), or the URI itself when it has no host.
    pub fn service_id(&self) -> &str {
        &self.inner.service
    }

    /// The instance of the last attempt (`scheme://authority`), if an
    /// instance was chosen.
    pub fn instance(&self) -> Option<&str> {
        self.inner.instance.as_deref()
    }

    /// The attempts made, in order, the last one included (empty when no
    /// attempt was made). At most 64 are kept.
    pub fn attempts(&self) -> &[Attempt] {
        &self.inner.attempts
    }

    /// The service is known but has no eligible (`UP`) instance right now.
    pub fn is_no_instances(&self) -> bool {
        matches!(self.inner.kind, Kind::NoInstances | Kind::NoneUp)
    }

    /// The URI host names no service this balancer knows, and on-demand
    /// discovery is off (or at its cap).
    pub fn is_unknown_service(&self) -> bool {
        self.inner.kind == Kind::UnknownService
    }

    /// The request URI has no host naming a service.
    pub fn is_no_service_in_uri(&self) -> bool {
        self.inner.kind == Kind::NoServiceInUri
    }

    /// Discovery failed, or its first list did not arrive in time.
    pub fn is_discovery(&self) -> bool {
        matches!(self.inner.kind, Kind::Discovery | Kind::DiscoveryTimeout(_))
    }

    /// The request cannot be sent: the rewritten request could not be
    /// built for the chosen instance ([`Error::instance`] names it), or the
    /// caller's request contradicts itself (a `Content-Length` its body
    /// does not have, or that is not one length, checked before any
    /// attempt: no instance, no attempt, nothing counted; see
    /// [`TryCloneBody::exact_len`](crate::retry::TryCloneBody::exact_len)).
    /// A stream contradicting its length is found only as it is sent: its
    /// attempt's outcome is then `Outcome::RequestError` (see
    /// [`TryCloneBody::check_len`](crate::retry::TryCloneBody::check_len)).
    pub fn is_invalid_request(&self) -> bool {
        self.inner.kind == Kind::InvalidRequest
    }

    /// The last attempt failed without a response (an error of the inner
    /// service, or a per-try timeout or the deadline cutting it off).
    pub fn is_inner(&self) -> bool {
        self.inner.kind == Kind::Inner
    }

    /// Which timeout ended the request (connect, per-try, deadline, the
    /// client's own), if one did. A discovery timeout is
    /// [`Error::discovery_waited`].
    pub fn timeout(&self) -> Option<TimeoutKind> {
        self.inner.timeout
    }

    /// A timeout: a connect, per-try or client timeout or the deadline cut
    /// the last attempt off, or the first instance list did not arrive in
    /// time.
    pub fn is_timeout(&self) -> bool {
        if self.inner.timeout.is_some() {
            return true;
        }
        match self.inner.kind {
            Kind::Inner => self.inner.source.as_ref().is_some_and(|s| {
                s.is::<tower::timeout::error::Elapsed>() || s.is::<tokio::time::error::Elapsed>()
            }),
            Kind::DiscoveryTimeout(_) => true,
            _ => false,
        }
    }

    /// How long the call waited for the first instance list, for a
    /// discovery timeout.
    pub fn discovery_waited(&self) -> Option<Duration> {
        match self.inner.kind {
            Kind::DiscoveryTimeout(waited) => Some(waited),
            _ => None,
        }
    }

    /// The discovery error, for a failed discovery.
    pub fn discovery_error(&self) -> Option<&DiscoveryError> {
        self.inner
            .source
            .as_ref()?
            .downcast_ref::<SharedDiscoveryError>()
            .map(|e| &*e.0)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("tower_ribbon::Error");
        d.field("kind", &self.inner.kind)
            .field("service", &self.inner.service);
        if let Some(instance) = &self.inner.instance {
            d.field("instance", instance);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        if !self.inner.attempts.is_empty() {
            d.field("attempts", &self.inner.attempts);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let service = &self.inner.service;
        let instance = self.inner.instance.as_deref().unwrap_or("none");
        match self.inner.kind {
            Kind::NoInstances => write!(f, "no instances available for service `{service}`")?,
            Kind::NoneUp => {
                let why = self.inner.note.as_deref().unwrap_or_default();
                return write!(f, "service `{service}`{why}");
            }
            Kind::UnknownService => write!(
                f,
                "unknown service `{service}`: not configured on this load balancer"
            )?,
            Kind::NoServiceInUri => {
                write!(f, "request URI `{service}` has no host naming a service")?
            }
            Kind::Discovery => write!(f, "discovery for service `{service}` failed")?,
            Kind::DiscoveryTimeout(waited) => write!(
                f,
                "service `{service}`: no instance list within {waited:?} of the first request"
            )?,
            Kind::InvalidRequest if self.inner.instance.is_none() => {
                write!(f, "service `{service}`")?
            }
            Kind::InvalidRequest => {
                write!(f, "service `{service}`: cannot address instance {instance}")?
            }
            Kind::Inner => write!(f, "service `{service}`, instance {instance}")?,
        }
        if let Some(source) = &self.inner.source {
            let text = source.to_string();
            write!(f, ": {text}")?;
            // The root cause too, when the source's own text leaves it out:
            // hyper-util's "client error (Connect)" hides "Connection
            // refused (os error 111)" or "invalid URL, scheme is not http"
            // two sources down.
            if self.inner.kind == Kind::Inner {
                if let Some(root) = root_cause(source.as_ref()) {
                    let root = root.to_string();
                    if !root.is_empty() && !text.contains(&root) {
                        write!(f, ": {}", Quoted::within(&root, ROOT_CAUSE_TEXT))?;
                    }
                }
            }
        }
        if let Some(note) = &self.inner.note {
            write!(f, "; {note}")?;
        }
        write!(f, "{}", attempts_suffix(&self.inner.attempts))
    }
}

/// Longest root cause quoted after an inner error's own text, in bytes.
const ROOT_CAUSE_TEXT: usize = 512;

/// The most errors of a source chain any walk of this crate reads: a
/// chain that loops (an error that is its own source) ends there. Before,
/// the classification walks had no bound, and such an inner error hung its
/// request at 100 % CPU (helper 214).
pub(crate) const MAX_CHAIN: usize = 64;

/// `error` and its sources, in order, at most [`MAX_CHAIN`] of them.
pub(crate) fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source()).take(MAX_CHAIN)
}

/// The last error of `error`'s source chain (within [`MAX_CHAIN`]), if it
/// has sources.
fn root_cause<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    chain(error).skip(1).last()
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A [`DiscoveryError`] shared by every request that saw it.
#[derive(Debug)]
struct SharedDiscoveryError(Arc<DiscoveryError>);

impl fmt::Display for SharedDiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SharedDiscoveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_one_word() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
