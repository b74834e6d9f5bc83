//! [`PickContext`]: the per-request facts a pick reads, and the tiers of
//! filters the wrapping pickers add.

use http::HeaderMap;
use tokio::time::Instant;

use crate::instance::Endpoint;

/// The lane key of a retry's pick without a preference
/// ([`PickContext::retrying`]): `Cursor` gives it a lane of its own, and
/// [`PickContext::preferring`] never yields it for a preferred tier. Before,
/// it was one more hashed key, and shared a lane with about 1 in 63 hint
/// groups, subsets or sticky tiers, whose rotation retries then moved.
pub(crate) const RETRY_LANE: u64 = u64::MAX;

/// One filter of a wrapping picker: whether the endpoint at an index of the
/// picker's snapshot belongs to a tier. Called with the index into
/// [`Picker::snapshot`](super::Picker::snapshot)'s endpoints and the
/// endpoint there (wrappers and the pickers they wrap share one snapshot).
pub type Tier<'a> = &'a (dyn Fn(usize, &Endpoint) -> bool + 'a);

/// The membership test of one combined tier: eligible for the request and
/// in every wrapper's tier at its level (index, endpoint as in [`Tier`]).
pub(crate) type Member<'m> = &'m dyn Fn(usize, &Endpoint) -> bool;

/// Where a tier's members can be: indices into the snapshot's endpoints,
/// ascending or a rotation of an ascending list (zone avoidance hands its
/// good zones' endpoints from one of two places while its classes split
/// the zones), a superset of the tier's members (for example one zone's
/// endpoints). `None`: anywhere in the list.
///
/// A picker may keep data per domain for the picks to come (weighted round
/// robin keeps the prefix sums of weights of a domain of more than 8
/// positions), knowing a domain by its slice's address, length and first,
/// middle and last entries. A wrapper should therefore hand the same slice
/// for the same domain while its picker lives, as the built-in wrappers
/// do (theirs belong to their picker), rather than a slice built per pick:
/// another domain at the same address with the same length and those
/// entries would be picked with the first one's weights.
pub type Domain<'a> = Option<&'a [u32]>;

/// Whether a position is passed over (see [`PickContext::passing_over`]).
#[derive(Clone, Copy)]
pub(crate) struct Passed<'a>(pub(crate) &'a (dyn Fn(usize) -> bool + Sync));

impl std::fmt::Debug for Passed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passed")
    }
}

/// How a picker knows a domain it keeps data for (see [`Domain`]): the
/// slice's address and length and its first, middle and last entries.
pub(crate) fn domain_key(domain: &[u32]) -> [usize; 5] {
    let at = |p: usize| domain.get(p).map_or(usize::MAX, |&v| v as usize);
    let n = domain.len();
    [
        domain.as_ptr() as usize,
        n,
        at(0),
        at(n / 2),
        at(n.wrapping_sub(1)),
    ]
}

/// The tiers one wrapping picker adds, in order of preference, chained to
/// the tiers of the pickers wrapping it.
///
/// A pick takes an endpoint from the *first non-empty* combined tier. With
/// nested wrappers the outer wrapper's tiers are the major order: for each
/// outer tier in order, each inner tier in order, the endpoints in both.
/// So a wrapped rule chooses inside the set its wrapper allows, and its own
/// fallback (fail open) stays inside that set before the wrapper widens.
#[derive(Clone, Copy)]
pub struct Tiers<'a> {
    tiers: &'a [Tier<'a>],
    /// One per tier, or empty (no domains).
    domains: &'a [Domain<'a>],
    outer: Option<&'a Tiers<'a>>,
}

impl std::fmt::Debug for Tiers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tiers")
            .field("tiers", &self.tiers.len())
            .field("outer", &self.outer)
            .finish()
    }
}

impl<'a> Tiers<'a> {
    /// Calls `f` with the predicate and the domain of each combined tier in
    /// order (outer tiers major), until `f` returns `Some`. A combined
    /// tier's domain is the first one any level gives (each is a superset
    /// of the combined members). Allocates nothing.
    pub(crate) fn find<R>(
        list: Option<&Tiers<'_>>,
        f: &mut dyn FnMut(Member<'_>, Domain<'_>) -> Option<R>,
    ) -> Option<R> {
        match list {
            None => f(&|_, _| true, None),
            Some(l) => Self::find(
                l.outer,
                &mut |outer: Member<'_>, outer_domain: Domain<'_>| {
                    l.tiers.iter().enumerate().find_map(|(j, t)| {
                        let domain = outer_domain.or_else(|| l.domain(j));
                        f(&|i, e| outer(i, e) && t(i, e), domain)
                    })
                },
            ),
        }
    }

    fn domain(&self, j: usize) -> Domain<'a> {
        self.domains.get(j).copied().flatten()
    }
}

/// Per-request facts a picker may use.
///
/// `excluded` holds endpoints this request must not be sent to (those a
/// retry already tried); they are compared by identity.
/// `now` is read once per request, so time-aware rules (breaker state,
/// decayed latencies) agree within one pick and tests can pause time.
/// With the health filter on (the balancer turns it on while some instance
/// is unhealthy and the service is not in panic mode), unhealthy endpoints
/// (breaker open, ejected, failing active checks) are not eligible either.
/// Wrapping pickers ([`AvailabilityFiltering`](super::AvailabilityFiltering),
/// [`ZoneAvoidance`](super::ZoneAvoidance)) add [`Tiers`] of filters with
/// [`PickContext::with_tiers`]; the wrapped picker then picks among the
/// eligible endpoints of the first non-empty tier, from one step of its own
/// rotation.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    excluded: &'a [Endpoint],
    hash_key: Option<u64>,
    now: Instant,
    health_filter: bool,
    /// The balancer's panic mode: health is ignored, breakers included.
    panic: bool,
    /// A retry's pick (see [`PickContext::retrying`]), whatever its lane.
    retry: bool,
    tiers: Option<&'a Tiers<'a>>,
    headers: Option<&'a HeaderMap>,
    /// Set by preference wrappers on the pick they hand to the wrapped
    /// rule (0: none): a rotating rule steps the lane this key chooses
    /// (see `Cursor`). Nested wrappers mix their keys.
    lane: u64,
    /// The balancer's health epoch for this pick (0: none), naming the
    /// recount the health filter comes from (see `HealthView::epoch`).
    health_epoch: u64,
    /// The positions [`SlowStart`](super::SlowStart) passes over in this
    /// pick (`None`: none): each combined tier offers its other members
    /// first (see [`PickContext::passing_over`]).
    passed: Option<Passed<'a>>,
}

impl Default for PickContext<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> PickContext<'a> {
    /// A context at the current time, with nothing excluded and no hash key.
    pub fn new() -> Self {
        Self::at(Instant::now())
    }

    /// A context at `now`, with nothing excluded and no hash key.
    pub fn at(now: Instant) -> Self {
        Self {
            excluded: &[],
            hash_key: None,
            now,
            health_filter: false,
            panic: false,
            retry: false,
            tiers: None,
            headers: None,
            lane: 0,
            health_epoch: 0,
            passed: None,
        }
    }

    /// The time of the pick.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Excludes `endpoints` (by identity): the instances a retry already
    /// tried. A pick with exclusions is a retry's, so rotating rules step
    /// a rotation of their own for it (see [`PickContext::retrying`]);
    /// retries then do not move the rotation of first picks.
    pub fn with_excluded(mut self, endpoints: &'a [Endpoint]) -> Self {
        self.excluded = endpoints;
        if !endpoints.is_empty() {
            self = self.retrying();
        }
        self
    }

    /// Marks the pick as a retry's: rotating rules (round robin, weighted
    /// round robin, ties of best available, ...) step a cursor lane kept
    /// for retries. With one cursor, retries took steps between first
    /// picks: with one failing instance of two, every first pick went to
    /// the failing one (its retry took the step after it), doubling the
    /// failures seen. Set by [`PickContext::with_excluded`]; also for a
    /// retry whose exclusions left nothing, which picks from all.
    ///
    /// A retry without a preference steps a lane reserved for it, which
    /// no preferred tier shares; a retry inside a preferred tier steps a
    /// lane chosen by that tier and the retry mark together.
    pub fn retrying(mut self) -> Self {
        self.retry = true;
        if self.lane == 0 {
            self.lane = RETRY_LANE;
        }
        self
    }

    /// Sets a hash key for rules that route by key.
    pub fn with_hash_key(mut self, key: u64) -> Self {
        self.hash_key = Some(key);
        self
    }

    /// Makes unhealthy endpoints ineligible (see
    /// [`EndpointStats::is_healthy_at`](crate::stats::EndpointStats::is_healthy_at)).
    pub fn with_health_filter(mut self) -> Self {
        self.health_filter = true;
        self
    }

    /// The health filter of the balancer's recount `epoch` (a number no
    /// other recount of any service has): pickers may keep the unhealthy
    /// instances they find for the rest of that epoch instead of walking
    /// the list on every pick (see `walk::UnhealthyMemo`).
    pub(crate) fn with_health_epoch(mut self, epoch: u64) -> Self {
        self.health_filter = true;
        self.health_epoch = epoch;
        self
    }

    /// Marks the pick as made in panic mode: fewer than the panic
    /// threshold of the service's instances are healthy, so health is
    /// ignored (Envoy's `healthy_panic_threshold`; see
    /// [`crate::health`]). Rules that skip tripped instances themselves
    /// ([`AvailabilityFiltering`](super::AvailabilityFiltering),
    /// [`BestAvailable`](super::BestAvailable),
    /// [`PeakEwmaP2c`](super::PeakEwmaP2c),
    /// [`ZoneAvoidance`](super::ZoneAvoidance)) then skip none, through
    /// [`PickContext::is_available`]: they sent every pick to the last
    /// untripped instance while round robin spread over all (400 of 400
    /// against 100 each over four, three tripped). The balancer sets it;
    /// it clears the health filter. Default: off.
    pub fn with_panic_mode(mut self) -> Self {
        self.panic = true;
        self.health_filter = false;
        self
    }

    /// Whether the pick is made in panic mode
    /// ([`PickContext::with_panic_mode`]).
    #[inline]
    pub fn panic_mode(&self) -> bool {
        self.panic
    }

    /// Whether a rule that skips tripped instances may take `endpoint` now:
    /// its breaker is available at [`now`](Self::now)
    /// ([`EndpointStats::is_available_at`](crate::stats::EndpointStats::is_available_at)),
    /// or the pick is made in panic mode.
    #[inline]
    pub fn is_available(&self, endpoint: &Endpoint) -> bool {
        self.panic || endpoint.stats().is_available_at(self.now)
    }

    /// The health epoch of [`PickContext::with_health_epoch`] (0: none).
    #[inline]
    pub(crate) fn health_epoch(&self) -> u64 {
        self.health_epoch
    }

    /// Gives the pick the request's headers, for rules that route by a
    /// header or a cookie ([`HintBased`](super::HintBased) reads
    /// `X-SC-LB-Hint`, [`StickySession`](super::StickySession) the cookie
    /// `sc-lb-instance-id`). The balancer passes every request's headers;
    /// rules that do not read them pay nothing (one more pointer in the
    /// context). Default: none.
    pub fn with_headers(mut self, headers: &'a HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// The request's headers, if the caller passed them
    /// ([`PickContext::with_headers`]).
    pub fn headers(&self) -> Option<&'a HeaderMap> {
        self.headers
    }

    /// Whether unhealthy endpoints are ineligible.
    pub fn health_filter(&self) -> bool {
        self.health_filter
    }

    /// The excluded endpoints.
    pub fn excluded(&self) -> &'a [Endpoint] {
        self.excluded
    }

    /// The hash key, if any.
    pub fn hash_key(&self) -> Option<u64> {
        self.hash_key
    }

    /// Whether `endpoint` may be chosen for this request (exclusions and
    /// the health filter; tiers are not a matter of eligibility).
    #[inline]
    pub fn is_eligible(&self, endpoint: &Endpoint) -> bool {
        !self.excluded.iter().any(|e| e.same_identity(endpoint))
            && (!self.health_filter || endpoint.stats().is_healthy_at(self.now))
    }

    /// Whether every endpoint is eligible without checking (fast path).
    #[inline]
    pub(crate) fn all_eligible(&self) -> bool {
        self.excluded.is_empty() && !self.health_filter
    }

    /// The same context, marked as confined by a preference wrapper to
    /// its preferred tier first, `key` naming that tier (mixed into the
    /// key of wrappers outside it; see `Cursor`).
    #[inline]
    pub(crate) fn preferring(mut self, key: u64) -> Self {
        let mixed = (self.lane.rotate_left(17) ^ key).max(1);
        // A tier's key never lands on the lane reserved for retries.
        self.lane = if mixed == RETRY_LANE {
            mixed - 1
        } else {
            mixed
        };
        self
    }

    /// Whether the pick is a retry's ([`PickContext::retrying`]), also
    /// inside a preferred tier, whose lane mixes the retry mark with the
    /// tier's key.
    #[inline]
    pub(crate) fn is_retry(&self) -> bool {
        self.retry
    }

    /// The rotation lane key of this pick: 0 without a preference.
    #[inline]
    pub(crate) fn lane(&self) -> u64 {
        self.lane
    }

    /// Whether a wrapping picker added tiers, or the pick passes over
    /// refused positions: either way the rule picks through
    /// [`find_tier_in`](Self::find_tier_in).
    #[inline]
    pub(crate) fn has_tiers(&self) -> bool {
        self.tiers.is_some() || self.passed.is_some()
    }

    /// The same context passing over the positions `refused` holds
    /// within each tier: every combined tier offers first its members
    /// not refused and, outside panic mode, healthy, then its refused
    /// ones (slow start's refused instances, or, when it gives up, those
    /// still in slow start). [`SlowStart`](super::SlowStart) asks a picker that repeats
    /// its choice ([`Picker::repeats_choice`](super::Picker::repeats_choice))
    /// so. Applied inside every wrapper's tiers, the pass-over never takes
    /// a pick out of the tier a wrapper confines it to (a hint group, a
    /// zone, the instances availability filtering lets through); as tiers
    /// of its own outside a wrapper's, it sent a hint group's picks out
    /// of the group (helper 206).
    #[inline]
    pub(crate) fn passing_over(mut self, refused: Passed<'a>) -> Self {
        self.passed = Some(refused);
        self
    }

    /// Whether the pass-over lets position `i` be offered in its tier's
    /// first round (see [`passing_over`](Self::passing_over)).
    #[inline]
    fn passes_over(&self, i: usize, e: &Endpoint) -> bool {
        self.passed.is_none_or(|refused| !(refused.0)(i))
            && (self.panic || e.stats().is_healthy_at(self.now))
    }

    /// The same context with `tiers` (from a wrapping picker) chained
    /// inside the tiers it already has. See [`Tiers`].
    ///
    /// `storage` holds the chain link; declare it in the caller:
    /// `let mut link = None; let ctx = ctx.with_tiers(&mut link, &[&f, &g]);`.
    pub fn with_tiers<'b>(
        &self,
        storage: &'b mut Option<Tiers<'b>>,
        tiers: &'b [Tier<'b>],
    ) -> PickContext<'b>
    where
        'a: 'b,
    {
        self.with_tiers_in(storage, tiers, &[])
    }

    /// [`PickContext::with_tiers`] with the [`Domain`] of each tier
    /// (`domains[j]` for `tiers[j]`; missing entries mean "anywhere"), so a
    /// rotation can step over a tier's possible members only: a pick from a
    /// one-zone tier then costs O(1) instead of a walk of the list.
    pub fn with_tiers_in<'b>(
        &self,
        storage: &'b mut Option<Tiers<'b>>,
        tiers: &'b [Tier<'b>],
        domains: &'b [Domain<'b>],
    ) -> PickContext<'b>
    where
        'a: 'b,
    {
        let link = storage.insert(Tiers {
            tiers,
            domains,
            outer: self.tiers,
        });
        PickContext {
            excluded: self.excluded,
            hash_key: self.hash_key,
            now: self.now,
            health_filter: self.health_filter,
            panic: self.panic,
            retry: self.retry,
            tiers: Some(link),
            headers: self.headers,
            lane: self.lane,
            health_epoch: self.health_epoch,
            passed: self.passed,
        }
    }

    /// Calls `f` with the membership test of each combined tier in order
    /// (eligible for this request and in the tier) and its [`Domain`],
    /// until `f` returns `Some`. Without tiers, one call with plain
    /// eligibility. Passing over refused positions
    /// ([`passing_over`](Self::passing_over)), each tier is offered twice:
    /// first its members the pass-over lets through, then all of them.
    #[inline]
    pub(crate) fn find_tier_in<R>(
        &self,
        f: &mut dyn FnMut(Member<'_>, Domain<'_>) -> Option<R>,
    ) -> Option<R> {
        Tiers::find(self.tiers, &mut |t: Member<'_>, domain: Domain<'_>| {
            if self.passed.is_some() {
                let fresh = |i: usize, e: &Endpoint| {
                    self.is_eligible(e) && t(i, e) && self.passes_over(i, e)
                };
                if let Some(found) = f(&fresh, domain) {
                    return Some(found);
                }
            }
            f(&|i, e| self.is_eligible(e) && t(i, e), domain)
        })
    }

    /// Whether `e` is in the first tier (and eligible): the fast-path test
    /// of a candidate. Without tiers, eligibility.
    #[inline]
    pub(crate) fn in_first_tier(&self, i: usize, e: &Endpoint) -> bool {
        self.is_eligible(e)
            && first_tier(self.tiers, i, e)
            && (self.passed.is_none() || self.passes_over(i, e))
    }

    /// The domain of the first combined tier.
    #[inline]
    pub(crate) fn first_domain(&self) -> Domain<'a> {
        first_domain(self.tiers)
    }
}

fn first_domain<'a>(list: Option<&Tiers<'a>>) -> Domain<'a> {
    let l = list?;
    first_domain(l.outer).or_else(|| l.domain(0))
}

fn first_tier(list: Option<&Tiers<'_>>, i: usize, e: &Endpoint) -> bool {
    match list {
        None => true,
        Some(l) => l.tiers.first().is_some_and(|t| t(i, e)) && first_tier(l.outer, i, e),
    }
}
