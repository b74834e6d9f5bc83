//! [`Snapshot`]: the immutable endpoint list of one service at one moment.
//!
//! The refresh builds a new snapshot for each changed list and publishes it
//! (see [`discovery`](crate::discovery)); the service layer hands it to the
//! service's [`Rule`](crate::rule::Rule), which builds a
//! [`Picker`](crate::rule::Picker) for exactly that list. A snapshot never
//! changes after it is built, so a picker may precompute anything from it.

use std::fmt;
use std::sync::Arc;

use crate::instance::Endpoint;

/// The eligible endpoints of one service at one moment.
///
/// Immutable: a refresh builds a new snapshot and swaps it in atomically, so
/// a pick always reads one consistent list. `version` grows by one per
/// applied refresh (for status and logs; pickers do not key state by it:
/// each picker belongs to exactly one snapshot).
pub struct Snapshot {
    service_id: Arc<str>,
    endpoints: Box<[Endpoint]>,
    version: u64,
}

impl Snapshot {
    /// A snapshot of `endpoints` for `service_id` at `version`.
    pub fn new(service_id: impl Into<Arc<str>>, endpoints: Vec<Endpoint>, version: u64) -> Self {
        Self {
            service_id: service_id.into(),
            endpoints: endpoints.into_boxed_slice(),
            version,
        }
    }

    /// An empty snapshot (version 0), what a service holds before its first
    /// fetch.
    pub fn empty(service_id: impl Into<Arc<str>>) -> Self {
        Self::new(service_id, Vec::new(), 0)
    }

    /// The service id.
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// The endpoints, in the order the source listed them.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// No endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The refresh version this snapshot was built at (0 before any fetch).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether `endpoint` (by identity) is in this snapshot. O(n).
    pub fn contains(&self, endpoint: &Endpoint) -> bool {
        self.endpoints.iter().any(|e| e.same_identity(endpoint))
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("service_id", &self.service_id)
            .field("version", &self.version)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}
