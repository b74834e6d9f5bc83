//! [`DiscoveryError`]: why a fetch of an instance list failed.

use std::time::Duration;

use super::BoxError;
#[cfg(feature = "eureka")]
use super::wire;

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
        /// The response's `Content-Type` (cut to 128 bytes), or `none`.
        content_type: String,
        /// What was wrong.
        #[source]
        source: wire::WireError,
    },
    /// A fetch listed no instance at all while the current list was not
    /// empty, and [`RefreshConfig::keep_last_on_empty`](crate::discovery::RefreshConfig::keep_last_on_empty)
    /// is on: the current list was kept.
    #[error("service `{service}`: fetch listed no instance; keeping the last list")]
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
    /// Applying a registry delta would take the metadata entries of the
    /// local copy past their bound (`max_metadata_entries` of the Eureka
    /// registry builder); the delta was refused and the last copy kept.
    #[error(
        "registry copy would hold {would_hold} metadata entries, over its bound of {limit}; keeping the last copy"
    )]
    RegistryMetadataFull {
        /// The bound.
        limit: usize,
        /// The entries the delta would have produced.
        would_hold: usize,
    },
    /// A fetch would have grown the registry copy's metadata text (keys
    /// and values, in bytes) past the response body bound
    /// (`max_body_bytes`): a copy no full payload could carry.
    #[error(
        "registry copy would hold {would_hold} bytes of metadata, over its bound of {limit}; keeping the last copy"
    )]
    RegistryMetadataTooLarge {
        /// The bound, in bytes.
        limit: usize,
        /// The bytes the fetch would have produced.
        would_hold: usize,
    },
    /// A fetch would have grown the text the registry copy keeps per
    /// record (metadata, instance ids, hosts, health check URLs, zones,
    /// statuses and service names, in bytes) past the response body bound
    /// (`max_body_bytes`): text piled up by deltas each within the bound.
    #[error(
        "registry copy would hold {would_hold} bytes of record text, over its bound of {limit}; keeping the last copy"
    )]
    RegistryTextTooLarge {
        /// The bound, in bytes.
        limit: usize,
        /// The bytes the fetch would have produced.
        would_hold: usize,
    },
    /// Every configured registry server failed; one error per server, in the
    /// order tried.
    #[error("all {} registry servers failed; last: {}", .0.len(), last_error(.0))]
    AllServersFailed(Vec<DiscoveryError>),
    /// A server that answered lists nothing at the path (an app or VIP
    /// it does not know, or an empty registry) while another server could
    /// not be asked, which may list it: a peer restarted empty knows nothing
    /// until the instances renew. After an answer that listed instances,
    /// the fetch counts as failed and the refresh keeps its last list,
    /// until the servers that answer have listed nothing for `hold` (the
    /// Eureka builders' `absence_hold`, default 90 s); then their answer
    /// is taken.
    #[cfg(feature = "eureka")]
    #[error(
        "registry {server} lists nothing at `{path}` and another server could not be asked \
         ({failed}); keeping the last list until the servers that answer have listed nothing \
         for {hold:?}"
    )]
    AbsenceUnconfirmed {
        /// The first server that listed nothing, without credentials.
        server: String,
        /// The path asked (`apps/USER-SERVICE`, `vips/user-service`, or `apps`
        /// for the registry's full fetch).
        path: String,
        /// The failure of the last server that could not be asked.
        failed: Box<DiscoveryError>,
        /// How long an absence is held before it is taken.
        hold: Duration,
    },
    /// A custom source's own error.
    #[error(transparent)]
    Other(BoxError),
    /// Code the refresh runs for the user panicked: an
    /// [`InstanceSource`](crate::discovery::InstanceSource)'s `fetch` (while
    /// making its future or while it ran) or a
    /// [`Rule`](crate::rule::Rule)'s `build` of the fetched list's picker.
    /// The panic was caught: the fetch counts as failed, the last list and
    /// its picker stay, and the refresh goes on at its failure backoff, as
    /// Ribbon's `PollingServerListUpdater` goes on after a failed update
    /// cycle. Before, one panic ended the refresh for good.
    #[error("{during} panicked: {message}; keeping the last list")]
    Panicked {
        /// What panicked: `the instance source` or `the rule`.
        during: &'static str,
        /// The panic's message (cut to 128 bytes and escaped), or a note
        /// that it had none.
        message: String,
    },
}

impl DiscoveryError {
    /// The fetch timed out (on any server, for [`DiscoveryError::AllServersFailed`]).
    pub fn is_timeout(&self) -> bool {
        match self {
            DiscoveryError::Timeout { .. } => true,
            DiscoveryError::AllServersFailed(all) => all.iter().any(Self::is_timeout),
            #[cfg(feature = "eureka")]
            DiscoveryError::AbsenceUnconfirmed { failed, .. } => failed.is_timeout(),
            _ => false,
        }
    }
}

/// The last of a list of registry errors, or `none`.
fn last_error(errors: &[DiscoveryError]) -> String {
    errors
        .last()
        .map(ToString::to_string)
        .unwrap_or_else(|| "none".to_owned())
}
