//! The registry's failure count and its bound on remembered reads.

use std::sync::Arc;

use crate::error::DiscoveryError;

/// Apps the registry remembers as read (65 536): one more is treated as
/// read before, so its first read during an outage fails like the others.
pub(super) const MAX_SERVED: usize = 1 << 16;

/// The registry's failures since its last successful fetch.
#[derive(Debug, Default)]
pub(super) struct Failing {
    pub(super) consecutive: u64,
    pub(super) last_error: Option<Arc<DiscoveryError>>,
}
