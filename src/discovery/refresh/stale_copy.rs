//! A failed fetch that still carries a list (a stale registry copy).

use std::sync::Arc;

use super::Refresh;
use crate::error::DiscoveryError;
use crate::snapshot::{Snapshot, SourceKind};

impl Refresh {
    /// A failed fetch's error, with the list a service whose refresh never
    /// succeeded takes from a stale registry copy that comes with it
    /// ([`RegistryStale`](crate::discovery::eureka::RegistryStale): a
    /// service added again during an outage after its on-demand eviction
    /// got no list until the registry fetched again). The fetch still
    /// counts as failed; the copy is taken out of the error either way, so
    /// the kept last error holds no list.
    #[cfg_attr(not(feature = "eureka"), allow(clippy::unused_self, unused_variables))]
    pub(super) fn first_from_stale_copy(
        &self,
        #[allow(unused_mut)] mut err: DiscoveryError,
        kind: SourceKind,
        publish: &(dyn Fn(Arc<Snapshot>) + Sync),
    ) -> Result<(), DiscoveryError> {
        #[cfg(feature = "eureka")]
        if let Some(copy) = crate::discovery::stale::take_copy(&mut err) {
            if self.lock_counters().successes == 0 {
                let _taken =
                    super::guard::run_guarded("the rule", || self.apply(copy, kind, publish));
            }
        }
        Err(err)
    }
}
