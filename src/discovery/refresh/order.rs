//! The order of a refreshed list: the instances the current list holds
//! keep their places, in its order, and new ones follow in the source's.
//!
//! Rules that rotate by position (round robin, weighted round robin, and
//! every wrapper over them) read a list's order as the rotation's, and
//! their cursor outlives the list (see `rule::RoundRobin`). A source whose
//! answers come in another order each time (a registry's map order, a
//! custom source that shuffles, a DNS server rotating its records as
//! CoreDNS's `loadbalance` does, coredns/coredns#4083) would otherwise
//! move that rotation at every refresh: a list rotated one place against
//! the cursor at each refresh sent every request to one instance (60 of 60
//! over 3 instances, one request per refresh). gRPC's round robin keeps
//! its state across an address update for the same reason
//! (grpc/grpc-go#2580, grpc/grpc-java#2872).

use std::collections::HashMap;

use crate::instance::{Instance, InstanceKey};
use crate::snapshot::Snapshot;

/// `eligible` reordered: instances of `current` first, in `current`'s
/// order, then the others in their order in `eligible` (a stable sort,
/// O(n log n), one key per instance). The first list keeps the source's
/// order.
pub(super) fn in_current_order(current: &Snapshot, mut eligible: Vec<Instance>) -> Vec<Instance> {
    if current.is_empty() || eligible.len() < 2 {
        return eligible;
    }
    let places: HashMap<InstanceKey, usize> = current
        .endpoints()
        .iter()
        .enumerate()
        .map(|(i, e)| (e.instance().key(), i))
        .collect();
    eligible.sort_by_cached_key(|i| places.get(&i.key()).copied().unwrap_or(usize::MAX));
    eligible
}
