//! The zone table of one list and the per-zone counts zone avoidance
//! classifies zones by.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::time::Instant;

use crate::instance::Endpoint;

/// Most zones the per-zone counts hold; beyond that, no zone logic.
pub(super) const MAX_ZONES: usize = 16;
/// The zone of an instance that has none.
const DEFAULT_ZONE: &str = "default";
/// Most unions of zones whose endpoints a table keeps (see
/// [`ZoneTable::domain`]); a tier of another union has no domain.
const UNIONS: usize = 8;

#[cfg(test)]
thread_local! {
    /// Compare-and-swaps this thread made on union slots (tests only).
    pub(super) static CLAIMS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts one compare-and-swap on a union slot (tests only).
#[inline]
fn count_claim() {
    #[cfg(test)]
    CLAIMS.with(|c| c.set(c.get() + 1));
}

/// The zone of `e`: its instance's zone, or `default`.
pub(super) fn zone_name(e: &Endpoint) -> &str {
    e.instance().zone().unwrap_or(DEFAULT_ZONE)
}

/// The zone id of each endpoint of one list (built once per list).
#[derive(Debug)]
pub(super) struct ZoneTable {
    /// Zone id per endpoint index.
    pub(super) ids: Box<[u16]>,
    /// Zone names (lower case) by id.
    pub(super) names: Box<[Box<str>]>,
    /// The preferred zone's id, if it is in the list.
    pub(super) preferred: Option<u16>,
    /// The endpoint indices of each zone, ascending, by zone id, written
    /// twice in a row (see [`window`]).
    members: Box<[Box<[u32]>]>,
    /// The endpoint indices of unions of zones, ascending and written
    /// twice in a row, each claimed by
    /// its mask at its first pick and kept while the table lives.
    unions: [Union; UNIONS],
}

/// The endpoints of one union of zones (see [`ZoneTable::domain`]).
#[derive(Debug, Default)]
struct Union {
    /// The zones' mask; 0 while the slot is free.
    mask: AtomicU32,
    members: OnceLock<Box<[u32]>>,
}

impl ZoneTable {
    /// The zones of `endpoints` (case-insensitive), O(n) expected.
    pub(super) fn build(endpoints: &[Endpoint], preferred: Option<&str>) -> Self {
        let mut by_name: HashMap<String, u16> = HashMap::new();
        let mut names: Vec<Box<str>> = Vec::new();
        let ids: Box<[u16]> = endpoints
            .iter()
            .map(|e| {
                let key = zone_name(e).to_ascii_lowercase();
                *by_name.entry(key).or_insert_with_key(|key| {
                    names.push(key.as_str().into());
                    u16::try_from(names.len() - 1).unwrap_or(u16::MAX)
                })
            })
            .collect();
        let preferred = preferred.and_then(|p| by_name.get(&p.to_ascii_lowercase()).copied());
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); names.len().min(MAX_ZONES)];
        for (i, &z) in ids.iter().enumerate() {
            if let (Some(list), Ok(i)) = (members.get_mut(usize::from(z)), u32::try_from(i)) {
                list.push(i);
            }
        }
        Self {
            ids,
            names: names.into(),
            preferred,
            members: members.into_iter().map(|m| twice(&m)).collect(),
            unions: Default::default(),
        }
    }

    /// The endpoints a tier of the zones in `mask` can hold: one zone's
    /// indices when `mask` names a single zone; for several zones (the
    /// good ones when one is avoided), their indices kept per mask (up to
    /// [`UNIONS`] masks, each walked once, 8 bytes per endpoint); `None`
    /// (anywhere) for every zone, and for a union while its first pick
    /// builds it or when no slot is left. Without a domain, a rotating
    /// rule's candidate outside the tier (a third of the picks when one
    /// zone of three is avoided) walked the whole list twice: 43 µs per
    /// pick over 10 000 instances.
    ///
    /// The domain starts at the `start`-th of [`STARTS`] evenly spaced
    /// places (modulo) and wraps: the same endpoints in the same cyclic
    /// order. Rules that keep something per domain (weighted round robin's
    /// prefix sums) keep one per start: a start at any position made a new
    /// domain at each pick.
    pub(super) fn domain(&self, mask: u32, start: usize) -> Option<&[u32]> {
        if mask.count_ones() == 1 {
            return self
                .members
                .get(mask.trailing_zeros() as usize)
                .map(|m| window(m, start));
        }
        let zones = u32::try_from(self.zones()).unwrap_or(u32::MAX);
        let every = u32::MAX
            .checked_shr(32u32.saturating_sub(zones))
            .unwrap_or(0);
        if mask == 0 || mask & every == every {
            return None;
        }
        for u in &self.unions {
            // A load first: the slot is claimed once, and read by every
            // pick after (a compare-and-swap per pick wrote the slot's
            // cache line, which every core's picks then fought over).
            let claimed = match u.mask.load(Ordering::Acquire) {
                m if m == mask => false,
                0 => {
                    count_claim();
                    match u
                        .mask
                        .compare_exchange(0, mask, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => true,
                        Err(m) if m == mask => false,
                        Err(_) => continue,
                    }
                }
                _ => continue,
            };
            if !claimed {
                return u.members.get().map(|m| window(m, start));
            }
            let members = u.members.get_or_init(|| {
                let once: Vec<u32> = self
                    .ids
                    .iter()
                    .enumerate()
                    .filter(|&(_, &z)| u32::from(z) < 32 && mask & (1 << z) != 0)
                    .filter_map(|(i, _)| u32::try_from(i).ok())
                    .collect();
                twice(&once)
            });
            return Some(window(members, start));
        }
        None
    }

    /// Number of distinct zones.
    pub(super) fn zones(&self) -> usize {
        self.names.len()
    }
}

/// `list` written twice in a row.
fn twice(list: &[u32]) -> Box<[u32]> {
    list.iter().chain(list).copied().collect()
}

/// Places a domain may start at (see [`ZoneTable::domain`]).
pub(super) const STARTS: usize = 2;

/// The list that `doubled` (a list written twice) holds, starting at the
/// `start`-th of [`STARTS`] evenly spaced places and wrapping.
fn window(doubled: &[u32], start: usize) -> &[u32] {
    let len = doubled.len() / 2;
    let at = len * (start % STARTS) / STARTS;
    doubled.get(at..at + len).unwrap_or_default()
}

/// Per-zone counts of one recount.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(super) struct ZoneCount {
    /// Instances whose breaker is not tripped.
    pub(super) available: usize,
    /// Requests in flight on those available instances only: load on a
    /// tripped (already avoided) instance does not make its zone look
    /// loaded.
    pub(super) in_flight: usize,
    /// Healthy instances (breaker available, not ejected, not failing
    /// active checks): the available ones a pick under the health filter
    /// can take.
    pub(super) healthy: usize,
    /// Requests in flight on the healthy instances.
    pub(super) healthy_in_flight: usize,
}

/// Counts the zones of `endpoints` at `now` (O(n), no allocation). With
/// more than [`MAX_ZONES`] zones, all zeros.
pub(super) fn count(
    table: &ZoneTable,
    endpoints: &[Endpoint],
    now: Instant,
) -> [ZoneCount; MAX_ZONES] {
    let mut counts = [ZoneCount::default(); MAX_ZONES];
    if table.zones() > MAX_ZONES {
        return counts;
    }
    for (e, &z) in endpoints.iter().zip(&*table.ids) {
        let stats = e.stats();
        if let Some(c) = counts.get_mut(usize::from(z)) {
            if stats.is_available_at(now) {
                let load = stats.in_flight();
                c.available += 1;
                c.in_flight += load;
                if stats.is_healthy_at(now) {
                    c.healthy += 1;
                    c.healthy_in_flight += load;
                }
            }
        }
    }
    counts
}

/// Instances counted in the zones of `mask` (healthy ones with `healthy`).
pub(super) fn instances_in(counts: &[ZoneCount], mask: u32, healthy: bool) -> usize {
    counts
        .iter()
        .enumerate()
        .filter(|&(z, _)| z < 32 && mask & (1 << z) != 0)
        .map(|(_, c)| if healthy { c.healthy } else { c.available })
        .sum()
}

/// The zones with an available instance and, among them, the good ones
/// (in flight per available instance under `threshold`), as bit masks by
/// zone id; with `healthy`, counting the healthy instances only (picks
/// under the health filter, which skip the others).
pub(super) fn classify(counts: &[ZoneCount], threshold: f64, healthy: bool) -> (u32, u32) {
    let (mut available, mut good) = (0u32, 0u32);
    for (z, c) in counts.iter().enumerate().take(MAX_ZONES) {
        let (n, load) = if healthy {
            (c.healthy, c.healthy_in_flight)
        } else {
            (c.available, c.in_flight)
        };
        if n > 0 {
            available |= 1 << z;
            if (load as f64) < threshold * n as f64 {
                good |= 1 << z;
            }
        }
    }
    (available, good)
}
