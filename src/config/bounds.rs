//! Bounds on what a configuration turns into, beyond its text: the
//! instances of `listOfServers` entries and the copies of global values
//! that every client gets (see the module docs' "Bounds").

use super::error::ConfigError;
use super::scope::RibbonScope;

/// The most bytes the global values (`ribbon.*`,
/// `spring.cloud.loadbalancer.*` outside `clients`) may take once copied
/// into every client (each client gets its own copy of each): 32 MiB. A
/// global value of 900 KB and 1 000 clients made 862 MiB of copies from
/// a 1 MB properties file; real configurations are far under it.
pub(crate) const MAX_COPIED_BYTES: usize = 32 << 20;

/// What a value costs each client it is copied into, counted high: its
/// bytes plus 32 for each comma-separated element (a `String` each when
/// the key holds a list).
pub(super) fn copy_cost(value: &str) -> usize {
    let elements = value.bytes().filter(|&b| b == b',').count() + 1;
    value.len().saturating_add(elements.saturating_mul(32))
}

/// The most `listOfServers` entries one configuration turns into
/// instances, over all its clients (a global `ribbon.listOfServers` counts
/// once for each client it applies to): 65 536, a few tens of MiB of
/// instances. One list is bounded by
/// [`MAX_LIST_ENTRIES`](crate::discovery::MAX_LIST_ENTRIES), but a global
/// list is copied into each of up to 1 024 clients.
pub(crate) const MAX_CONFIG_SERVERS: usize = 65_536;

/// Refuses a configuration whose clients' lists hold more than
/// [`MAX_CONFIG_SERVERS`] entries together, counted before any is parsed.
pub(super) fn check_server_total<'a>(
    defaults: &RibbonScope,
    clients: impl Iterator<Item = &'a RibbonScope>,
) -> Result<(), ConfigError> {
    let count = |text: &str| {
        crate::discovery::count_list_entries(text, MAX_CONFIG_SERVERS)
    };
    // The global list is counted once, and its count reused.
    let global = defaults.servers.as_deref().map_or(0, count);
    let total = clients.fold(0usize, |total, c| {
        total.saturating_add(c.servers.as_deref().map_or(global, count))
    });
    if total > MAX_CONFIG_SERVERS {
        return Err(ConfigError::too_large(
            MAX_CONFIG_SERVERS as u64,
            format!(
                "more than {MAX_CONFIG_SERVERS} listOfServers entries over all clients \
                 (a global ribbon.listOfServers counts once for each client)"
            ),
        ));
    }
    Ok(())
}
