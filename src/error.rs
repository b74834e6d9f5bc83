//! Error types.
//!
//! - [`Error`]: what a [`LoadBalancer`](crate::LoadBalancer) call returns:
//!   no instances, unknown service, no service in the URI, discovery
//!   failure or timeout, an unaddressable instance, or the last attempt's
//!   error with every attempt listed; each names the service.
//! - [`DiscoveryError`]: what an [`InstanceSource`](crate::discovery::InstanceSource)
//!   fetch returns; a refresh that gets one keeps the last good list.
//! - [`InstanceError`]: an address that cannot become an instance.
//! - [`BuildError`]: a configuration that cannot become a balancer or source.
//!
//! ```
//! use tower_ribbon::Error;
//!
//! let err = Error::NoInstances { service: "user-service".to_owned() };
//! assert!(err.is_no_instances());
//! assert_eq!(err.service_id(), "user-service");
//! assert_eq!(err.to_string(), "no instances available for service `user-service`");
//! assert!(err.attempts().is_empty());
//! ```

use std::sync::Arc;
use std::time::Duration;

/// A boxed error of an inner service or a custom source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error of a [`LoadBalancer`](crate::LoadBalancer) call.
///
/// Every variant names the service id. Predicates such as
/// [`Error::is_no_instances`] let callers branch without matching.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service is known but has no eligible (`UP`) instance right now.
    #[error("no instances available for service `{service}`")]
    NoInstances {
        /// The service id.
        service: String,
    },
    /// The URI host names no service this balancer was configured with.
    #[error("unknown service `{service}`: not configured on this load balancer")]
    UnknownService {
        /// The service id (the request URI's host).
        service: String,
    },
    /// The request URI has no host to take a service id from.
    #[error("request URI `{uri}` has no host naming a service")]
    NoServiceInUri {
        /// The request URI.
        uri: String,
    },
    /// The instance list could not be fetched and no earlier list exists.
    #[error("discovery for service `{service}` failed: {source}")]
    Discovery {
        /// The service id.
        service: String,
        /// The last fetch error.
        #[source]
        source: Arc<DiscoveryError>,
    },
    /// The first instance list did not arrive within the configured bound.
    #[error("service `{service}`: no instance list within {waited:?} of the first request")]
    DiscoveryTimeout {
        /// The service id.
        service: String,
        /// How long the call waited.
        waited: Duration,
    },
    /// The rewritten request could not be built.
    #[error("service `{service}`: cannot address instance {instance}: {reason}")]
    InvalidRequest {
        /// The service id.
        service: String,
        /// The chosen instance (`scheme://authority`).
        instance: String,
        /// Why.
        reason: String,
    },
    /// The last attempt failed without a response (an error of the inner
    /// service, or a per-try timeout or the deadline cutting it off).
    #[error("service `{service}`, instance {instance}: {source}{}", attempts_suffix(.attempts))]
    Inner {
        /// The service id.
        service: String,
        /// The instance of the last attempt (`scheme://authority`).
        instance: String,
        /// The last attempt's error.
        #[source]
        source: BoxError,
        /// Every attempt in order (the last one included).
        attempts: Vec<crate::retry::Attempt>,
    },
}

impl Error {
    /// The service id the error is about (the URI itself for
    /// [`Error::NoServiceInUri`]).
    pub fn service_id(&self) -> &str {
        match self {
            Error::NoInstances { service }
            | Error::UnknownService { service }
            | Error::Discovery { service, .. }
            | Error::DiscoveryTimeout { service, .. }
            | Error::InvalidRequest { service, .. }
            | Error::Inner { service, .. } => service,
            Error::NoServiceInUri { uri } => uri,
        }
    }

    /// The service has no eligible instance.
    pub fn is_no_instances(&self) -> bool {
        matches!(self, Error::NoInstances { .. })
    }

    /// The URI names no configured service.
    pub fn is_unknown_service(&self) -> bool {
        matches!(self, Error::UnknownService { .. })
    }

    /// Discovery failed or did not answer in time.
    pub fn is_discovery(&self) -> bool {
        matches!(
            self,
            Error::Discovery { .. } | Error::DiscoveryTimeout { .. }
        )
    }

    /// The inner service failed.
    pub fn is_inner(&self) -> bool {
        matches!(self, Error::Inner { .. })
    }

    /// The last attempt was cut off by the per-try timeout or the deadline.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Inner { source, .. } => {
                source.is::<tower::timeout::error::Elapsed>()
                    || source.is::<tokio::time::error::Elapsed>()
            }
            Error::DiscoveryTimeout { .. } => true,
            _ => false,
        }
    }

    /// The attempts made, in order (empty when no attempt was made).
    pub fn attempts(&self) -> &[crate::retry::Attempt] {
        match self {
            Error::Inner { attempts, .. } => attempts,
            _ => &[],
        }
    }
}

/// Why a fetch of an instance list failed.
///
/// Server names in these errors never hold credentials: userinfo is removed
/// before a URL is stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The source has no such service (for example a [`StaticSource`]
    /// without that service id).
    ///
    /// [`StaticSource`]: crate::discovery::StaticSource
    #[error("source has no service `{service}`")]
    UnknownService {
        /// The service id.
        service: String,
    },
    /// Connecting to or talking with the registry failed.
    #[error("registry {server}: request failed: {source}")]
    Transport {
        /// The registry URL, without credentials.
        server: String,
        /// The transport error.
        #[source]
        source: BoxError,
    },
    /// The registry did not answer within the request timeout.
    #[error("registry {server}: no answer within {after:?}")]
    Timeout {
        /// The registry URL, without credentials.
        server: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The registry answered with a status that is not success.
    #[error("registry {server}: HTTP status {status}")]
    Status {
        /// The registry URL, without credentials.
        server: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The body could not be decompressed or decoded, or exceeded a bound
    /// (size, element count, deadline).
    #[cfg(feature = "eureka")]
    #[error("registry {server}: cannot decode response ({content_type}): {source}")]
    Decode {
        /// The registry URL, without credentials.
        server: String,
        /// The response's `Content-Type`, or `none`.
        content_type: String,
        /// What was wrong.
        #[source]
        source: crate::discovery::eureka::wire::WireError,
    },
    /// A fetch listed no `UP` instance while the current list was not empty,
    /// and [`RefreshConfig::keep_last_on_empty`](crate::discovery::RefreshConfig::keep_last_on_empty)
    /// is on: the current list was kept.
    #[error("service `{service}`: fetch listed no UP instance; keeping the last list")]
    EmptyList {
        /// The service id.
        service: String,
    },
    /// Applying a registry delta would take the local copy past its bound
    /// (`max_instances` of the Eureka registry builder); the delta was
    /// refused and the last copy kept.
    #[error(
        "registry copy would grow to {would_hold} instances, over its bound of {limit}; keeping the last copy"
    )]
    RegistryFull {
        /// The bound.
        limit: usize,
        /// The size the delta would have produced.
        would_hold: usize,
    },
    /// Every configured registry server failed; one error per server, in the
    /// order tried.
    #[error("all {} registry servers failed; last: {}", .0.len(), last_error(.0))]
    AllServersFailed(Vec<DiscoveryError>),
    /// A custom source's own error.
    #[error(transparent)]
    Other(BoxError),
}

fn attempts_suffix(attempts: &[crate::retry::Attempt]) -> String {
    if attempts.len() <= 1 {
        return String::new();
    }
    let list: Vec<String> = attempts.iter().map(ToString::to_string).collect();
    format!(" ({} attempts: {})", attempts.len(), list.join("; "))
}

fn last_error(errors: &[DiscoveryError]) -> String {
    errors
        .last()
        .map(ToString::to_string)
        .unwrap_or_else(|| "none".to_owned())
}

impl DiscoveryError {
    /// The fetch timed out (on any server, for [`DiscoveryError::AllServersFailed`]).
    pub fn is_timeout(&self) -> bool {
        match self {
            DiscoveryError::Timeout { .. } => true,
            DiscoveryError::AllServersFailed(all) => all.iter().any(Self::is_timeout),
            _ => false,
        }
    }
}

/// An address or instance description that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// The host cannot be part of a URI authority.
    #[error("invalid host `{host}`: {reason}")]
    InvalidHost {
        /// The host as given.
        host: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The port is 0, not a number, or out of range.
    #[error("invalid port `{port}` for host `{host}`")]
    InvalidPort {
        /// The host.
        host: String,
        /// The port as given.
        port: String,
    },
    /// A `listOfServers` entry cannot be parsed.
    #[error("invalid server entry `{entry}`: {reason}")]
    InvalidEntry {
        /// The entry as given.
        entry: String,
        /// Why.
        reason: String,
    },
}

/// A configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `build` was called outside a Tokio runtime; refresh tasks need one.
    #[error("no Tokio runtime: build the load balancer inside a runtime")]
    NoRuntime,
    /// No instance source was configured.
    #[error("no instance source configured")]
    NoSource,
    /// A setting has a value that cannot be used.
    #[error("invalid setting `{key}`: {reason}")]
    Invalid {
        /// The setting's name.
        key: String,
        /// Why.
        reason: String,
    },
    /// An instance in a static list is invalid.
    #[error(transparent)]
    Instance(#[from] InstanceError),
}

/// `text` with anything that may be credentials hidden: everything before
/// the last `@` (after the scheme, if any) becomes `***`, so
/// `http://user:pa/ss@host/x` shows as `http://***@host/x`. Text without
/// `@` is returned as it is. Errors and `Debug` output use this for every
/// URL or address that may hold userinfo.
pub(crate) fn redact(text: &str) -> String {
    let Some(at) = text.rfind('@') else {
        return text.to_owned();
    };
    match text.find("://") {
        Some(s) if s < at => format!("{}***{}", &text[..s + 3], &text[at..]),
        _ => format!("***{}", &text[at..]),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_are_hidden_in_every_form() {
        assert_eq!(redact("http://u:p@h:1/eureka"), "http://***@h:1/eureka");
        assert_eq!(redact("http://u:p/q@h/eureka"), "http://***@h/eureka");
        assert_eq!(redact("http:u:secret@h/eureka"), "***@h/eureka");
        assert_eq!(redact("u:secret@127.0.0.1:8761"), "***@127.0.0.1:8761");
        assert_eq!(redact("http://h:1/eureka"), "http://h:1/eureka");
    }
}
