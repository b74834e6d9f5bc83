//! [`Snapshot`]: the immutable endpoint list of one service at one moment.
//!
//! The refresh builds a new snapshot for each changed list and publishes it
//! (see [`discovery`](crate::discovery)); the service layer hands it to the
//! service's [`Rule`](crate::rule::Rule), which builds a
//! [`Picker`](crate::rule::Picker) for exactly that list. A snapshot never
//! changes after it is built, so a picker may precompute anything from it.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::instance::{Endpoint, InstanceStatus};

/// Identities and positions, sorted by identity.
type Positions = Box<[(usize, u32)]>;

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
    listing: Listing,
    /// The endpoints' identities and positions, sorted by identity: built
    /// at the first [`Snapshot::position`] (a retry's pick), `None` inside
    /// when an identity is listed twice or a position exceeds `u32`.
    positions: OnceLock<Option<Positions>>,
}

impl Snapshot {
    /// A snapshot of `endpoints` for `service_id` at `version`.
    pub fn new(service_id: impl Into<Arc<str>>, endpoints: Vec<Endpoint>, version: u64) -> Self {
        Self {
            service_id: service_id.into(),
            endpoints: endpoints.into_boxed_slice(),
            version,
            listing: Listing::default(),
            positions: OnceLock::new(),
        }
    }

    /// This snapshot with `listing`: what the fetch it was built from
    /// listed, every status counted.
    #[must_use]
    pub fn with_listing(mut self, listing: Listing) -> Self {
        self.listing = listing;
        self
    }

    /// What the source listed at the fetch this snapshot was built from,
    /// counted by status (the endpoints are only the `UP` ones). Empty
    /// before the first fetch.
    pub fn listing(&self) -> &Listing {
        &self.listing
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

    /// The endpoints, in list order: for a list the balancer refreshed,
    /// the source's order at the first list, then the instances already
    /// listed keep their places and new ones follow in the source's order.
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

    /// The position of the endpoint with `endpoint`'s identity: `Some(None)`
    /// when none has it, `None` when positions cannot be looked up (an
    /// identity listed twice). O(log n); the first call sorts the
    /// identities, O(n log n) once per list, 16 bytes per endpoint.
    pub(crate) fn position(&self, endpoint: &Endpoint) -> Option<Option<usize>> {
        let sorted = self
            .positions
            .get_or_init(|| {
                let mut v = self
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, e)| Some((e.identity(), u32::try_from(i).ok()?)))
                    .collect::<Option<Vec<_>>>()?;
                v.sort_unstable();
                v.windows(2)
                    .all(|w| w[0].0 != w[1].0)
                    .then(|| v.into_boxed_slice())
            })
            .as_deref()?;
        let id = endpoint.identity();
        Some(
            sorted
                .binary_search_by_key(&id, |&(e, _)| e)
                .ok()
                .map(|j| sorted[j].1 as usize),
        )
    }

    /// Whether `endpoint` (by identity) is in this snapshot. O(log n) after
    /// the first lookup of a list, which sorts its identities (O(n log n),
    /// 16 bytes per endpoint); O(n) when an identity is listed twice.
    pub fn contains(&self, endpoint: &Endpoint) -> bool {
        self.find(endpoint).is_some()
    }

    /// The endpoint with `endpoint`'s identity, as this snapshot lists it:
    /// by [`Snapshot::position`], else (an identity listed twice) a walk.
    pub(crate) fn find(&self, endpoint: &Endpoint) -> Option<&Endpoint> {
        match self.position(endpoint) {
            Some(at) => at.and_then(|i| self.endpoints.get(i)),
            None => self.endpoints.iter().find(|e| e.same_identity(endpoint)),
        }
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("service_id", &self.service_id)
            .field("version", &self.version)
            .field("listing", &self.listing)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// What kind of source an instance list came from: names it in errors
/// and says whether its instances carry statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SourceKind {
    /// A registry with instance statuses (Eureka). The default.
    #[default]
    Registry,
    /// A static list (`listOfServers`, [`StaticSource`](crate::discovery::StaticSource)).
    StaticList,
    /// DNS: addresses have no status, every listed address is `UP`.
    Dns,
    /// Another source.
    Other,
}

impl SourceKind {
    /// How errors name it: `registry`, `static list`, `DNS`, `source`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::StaticList => "static list",
            Self::Dns => "DNS",
            Self::Other => "source",
        }
    }

    /// Whether its instances carry statuses (all but DNS).
    pub fn has_statuses(self) -> bool {
        !matches!(self, Self::Dns)
    }
}

/// What one fetch listed for a service, counted by status: the `UP`
/// instances become the snapshot's endpoints, the others only show here
/// (so "no instances" can say whether the service is listed at all, and in
/// which statuses). A fixed array, no allocation.
///
/// ```
/// use tower_ribbon::InstanceStatus;
/// use tower_ribbon::snapshot::{Listing, SourceKind};
///
/// let mut listing = Listing::new(SourceKind::Registry);
/// listing.add(InstanceStatus::OutOfService);
/// listing.add(InstanceStatus::Starting);
/// listing.add(InstanceStatus::OutOfService);
/// assert_eq!(listing.total(), 3);
/// assert_eq!(listing.to_string(), "registry lists 3: 2 OUT_OF_SERVICE, 1 STARTING");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Listing {
    source: SourceKind,
    /// Instances per status, in [`Listing::STATUSES`] order (saturating).
    counts: [u32; 5],
}

impl Listing {
    /// The statuses counted, in the order of the counts.
    pub const STATUSES: [InstanceStatus; 5] = [
        InstanceStatus::Up,
        InstanceStatus::Down,
        InstanceStatus::Starting,
        InstanceStatus::OutOfService,
        InstanceStatus::Unknown,
    ];

    /// Nothing listed yet, by a source of kind `source`.
    pub fn new(source: SourceKind) -> Self {
        Self {
            source,
            counts: [0; 5],
        }
    }

    fn index(status: InstanceStatus) -> usize {
        match status {
            InstanceStatus::Up => 0,
            InstanceStatus::Down => 1,
            InstanceStatus::Starting => 2,
            InstanceStatus::OutOfService => 3,
            InstanceStatus::Unknown => 4,
        }
    }

    /// Counts one listed instance of `status`.
    pub fn add(&mut self, status: InstanceStatus) {
        let n = &mut self.counts[Self::index(status)];
        *n = n.saturating_add(1);
    }

    /// The kind of source that listed them.
    pub fn source(&self) -> SourceKind {
        self.source
    }

    /// Instances listed with `status`.
    pub fn count(&self, status: InstanceStatus) -> u32 {
        self.counts[Self::index(status)]
    }

    /// Instances listed, every status.
    pub fn total(&self) -> u32 {
        self.counts.iter().fold(0u32, |a, n| a.saturating_add(*n))
    }
}

impl Listing {
    /// Why a service with this listing has no `UP` instance, as the rest
    /// of a sentence that starts with the service: ` is not in the
    /// registry, so it has no UP instance` when nothing is listed,
    /// `: no instance is UP (registry lists 3: 2 OUT_OF_SERVICE, 1 STARTING)`
    /// otherwise (each source kind words the empty case its own way).
    pub fn why_none_up(&self) -> String {
        if self.total() > 0 {
            return format!(": no instance is UP ({self})");
        }
        match self.source {
            SourceKind::Registry => " is not in the registry, so it has no UP instance".into(),
            SourceKind::StaticList => ": its static list is empty, so it has no UP instance".into(),
            SourceKind::Dns => ": DNS lists no address for it, so it has no UP instance (DNS has no instance statuses)".into(),
            SourceKind::Other => " is not listed by its source, so it has no UP instance".into(),
        }
    }
}

/// `registry lists 3: 2 OUT_OF_SERVICE, 1 STARTING`: statuses by count,
/// most first (ties in alphabetical order of the status name); `registry lists none`.
impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total();
        if total == 0 {
            return write!(f, "{} lists none", self.source.name());
        }
        write!(f, "{} lists {total}", self.source.name())?;
        if !self.source.has_statuses() {
            return write!(f, " (DNS has no instance statuses)");
        }
        let mut order: Vec<(u32, &str)> = Self::STATUSES
            .iter()
            .map(|s| (self.count(*s), s.as_str()))
            .filter(|(n, _)| *n > 0)
            .collect();
        order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        for (i, (n, status)) in order.iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            write!(f, "{sep}{n} {status}")?;
        }
        Ok(())
    }
}
