//! Reading SRV and address records into instances.



use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::Name;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::proto::rr::Record;
use hickory_resolver::proto::rr::RecordType;
use crate::Instance;
use std::collections::{BTreeSet, HashMap};
use super::error::DnsError;
use std::time::Duration;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

/// One SRV record, validated: `target` is lower-case ASCII without the
/// final dot, empty for the root (`.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SrvRecord {
    pub(super) priority: u16,
    pub(super) weight: u16,
    pub(super) port: u16,
    pub(super) target: String,
}

pub(super) struct Candidate {
    pub(super) ip: IpAddr,
    pub(super) port: u16,
    pub(super) weight: u32,
    /// SRV target name and priority.
    pub(super) target: Option<(String, u16)>,
}

pub(super) struct Resolved {
    pub(super) instances: Vec<Instance>,
    pub(super) ttl: Duration,
    pub(super) truncated: bool,
}

impl Resolved {
    /// No instance: the name is gone from DNS ([`gone_from_dns`]) or
    /// decidedly not available (an SRV `.` target).
    pub(super) fn none(ttl: Duration) -> Self {
        let instances = Vec::new();
        Self { instances, ttl, truncated: false }
    }
}

/// What one resolution's SRV target lookups have left and met.
pub(super) struct TargetWalk {
    /// Lookups still allowed (`2 · max_records` at the start).
    pub(super) lookups_left: usize,
    /// A target's lookup failed (SERVFAIL, a timeout; not "gone from
    /// DNS"), whether or not its last addresses were kept.
    pub(super) failed: AtomicBool,
    /// A record was left unvisited: the lookups ran out.
    pub(super) cut: bool,
}

impl TargetWalk {
    pub(super) fn new(lookups: usize) -> Self {
        let failed = AtomicBool::new(false);
        Self { lookups_left: lookups, failed, cut: false }
    }

    /// The result when no target of the SRV answer `name` (`records`
    /// records, TTL `srv_ttl` s) had an address. Every target asked and
    /// each gone from DNS: the service has no address, an answer and not a
    /// failure (an empty list; before, the last list stayed for good). A
    /// lookup failed or cut short: [`DnsError::NoAddresses`] (the last
    /// list stays).
    pub(super) fn no_address(
        &self,
        name: &str,
        records: usize,
        srv_ttl: u32,
    ) -> Result<Resolved, DnsError> {
        if !self.cut && !self.failed.load(Ordering::Relaxed) {
            return Ok(Resolved::none(Duration::from_secs(u64::from(srv_ttl))));
        }
        let name = name.to_owned();
        Err(DnsError::NoAddresses { name, records })
    }
}

/// The SRV records of an answer, in answer order, targets longer than
/// `max_name_len` and port 0 on a target other than `.` dropped.
///
/// Not cut to `max_records` here: the cut must come after the sort by
/// priority ([`priority_groups`]), or a primary target listed after its
/// backups can be the one cut. The answer bounds the work instead: it is
/// one DNS message of at most 65 535 bytes, already held by the resolver,
/// and an SRV record takes at least 19 of them (a compressed owner name,
/// the fixed fields, a one-byte target), so at most 3 449 records are
/// copied (each target at most `max_name_len` bytes) and sorted.
pub(super) fn parse_srv<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    max_name_len: usize,
) -> Vec<SrvRecord> {
    records
        .into_iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => {
                let target = srv
                    .target
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                // Port 0 on a real target names no service (RFC 2782's
                // "." records carry it, and stay for `only_root`): an answer
                // of nothing else emptied the list where other unusable
                // answers kept it (helper 192).
                let unusable = srv.port == 0 && !target.is_empty();
                (target.len() <= max_name_len && !unusable).then_some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target,
                })
            }
            _ => None,
        })
        .collect()
}

/// Whether every record of a non-empty answer has the target `.`: RFC
/// 2782's "the service is decidedly not available at this domain". A `.`
/// next to real targets is not that answer; it is skipped.
pub(super) fn only_root(records: &[SrvRecord]) -> bool {
    !records.is_empty() && records.iter().all(|r| r.target.is_empty())
}

/// The usable SRV records of an answer, grouped by priority.
pub(super) struct PriorityGroups {
    /// Lowest priority first; within a group heaviest weight first, then
    /// by target and port.
    pub(super) groups: Vec<Vec<SrvRecord>>,
    /// The priority of the first record cut by `max`, if any.
    /// (The fetch takes every record and bounds its lookups instead.)
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) cut_at: Option<u16>,
}

/// Records grouped by priority, lowest first; within a group heaviest
/// weight first, then by target and port, duplicates removed; records that name no host (`.`, port 0)
/// dropped. At most `max` records in all, taken from the lowest priorities
/// (after the sort, so the order of the answer does not matter).
pub(super) fn priority_groups(mut records: Vec<SrvRecord>, max: usize) -> PriorityGroups {
    records.retain(|r| !r.target.is_empty() && r.port > 0);
    records.sort_by(|a, b| {
        (a.priority, &a.target, a.port, a.weight).cmp(&(b.priority, &b.target, b.port, b.weight))
    });
    records.dedup_by(|b, a| a.priority == b.priority && a.target == b.target && a.port == b.port);
    // Within a priority the heavier records first (stable: then by target),
    // so a cut keeps them: RFC 2782 gives weight 0 "a very small chance"
    // next to weighted records.
    records.sort_by_key(|r| (r.priority, std::cmp::Reverse(r.weight)));
    let cut_at = records.get(max).map(|r| r.priority);
    records.truncate(max);
    let mut groups: Vec<Vec<SrvRecord>> = Vec::new();
    for record in records {
        match groups.last_mut() {
            Some(group) if group[0].priority == record.priority => group.push(record),
            _ => groups.push(vec![record]),
        }
    }
    PriorityGroups { groups, cut_at }
}

/// The addresses of an answer's additional section by owner name
/// (lower-case, without the final dot), built once per answer: each SRV
/// target is then found in O(1). Only addresses of the configured
/// [`IpFamily`](super::IpFamily) count: a server adds A and AAAA alike
/// whatever the client asked.
///
/// Searching the section for each target converted every additional
/// record's name once per target: an answer of 1 024 targets and 2 000
/// additional records (one DNS message over TCP; a Kubernetes headless
/// service of a thousand pods gives a thousand of each) made 2 million
/// names, 219 ms of an async worker's time (4.1 s in a debug build) at
/// every resolution.
#[derive(Debug, Default)]
pub(super) struct Additionals {
    by_name: HashMap<String, (Vec<IpAddr>, u32)>,
}

impl Additionals {
    /// Indexes `additionals` (each name converted once).
    pub(super) fn new(additionals: &[Record], config: &super::DnsConfig) -> Self {
        let mut by_name: HashMap<String, (Vec<IpAddr>, u32)> = HashMap::new();
        for r in additionals {
            let Some(ip) =
                super::answers::usable_ip(r).filter(|ip| config.ip_family.admits(*ip))
            else {
                continue;
            };
            let name = r.name.to_ascii();
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let (addrs, ttl) = by_name.entry(name).or_insert((Vec::new(), u32::MAX));
            addrs.push(ip);
            *ttl = (*ttl).min(r.ttl);
        }
        Self { by_name }
    }

    /// The addresses for `target` (compared ASCII-case-insensitively) and
    /// their lowest TTL; `None` when the section has none.
    pub(super) fn get(&self, target: &str) -> Option<(Vec<IpAddr>, u32)> {
        match self.by_name.get(target) {
            Some(found) => Some(found.clone()),
            None if target.bytes().any(|b| b.is_ascii_uppercase()) => {
                self.by_name.get(&target.to_ascii_lowercase()).cloned()
            }
            None => None,
        }
    }

    /// Distinct names holding addresses.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_name.len()
    }
}

pub(super) fn min_ttl<'a>(records: impl IntoIterator<Item = &'a Record>) -> Option<u32> {
    records
        .into_iter()
        .filter(|r| {
            matches!(
                r.record_type(),
                RecordType::A | RecordType::AAAA | RecordType::CNAME | RecordType::SRV
            )
        })
        .map(|r| r.ttl)
        .min()
}

/// A record's rank for the client seeded `seed`: a hash of the seed, the
/// address and the port (rendezvous hashing), so every client ranks the
/// records differently and each keeps its own ranking across answers.
fn rank(seed: u64, c: &Candidate) -> u64 {
    let bytes = match c.ip {
        std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(ip) => ip.octets(),
    };
    let key = crate::hash::fnv1a64(bytes.into_iter().chain(c.port.to_be_bytes()));
    crate::hash::mix64(key ^ crate::hash::mix64(seed))
}

/// Orders a priority group for its lookups: heaviest first, ties in the
/// order of the client seeded `seed` (as [`rank`], over target and port).
/// Lookups stop at `2 · max_records`, and every client stopping at the
/// same first targets of the answer would leave the rest unused.
pub(super) fn lookup_order(group: &mut [SrvRecord], seed: u64) {
    group.sort_by_cached_key(|r| {
        let key = crate::hash::fnv1a64(r.target.bytes().chain(r.port.to_be_bytes()));
        (
            std::cmp::Reverse(r.weight),
            crate::hash::mix64(key ^ crate::hash::mix64(seed)),
        )
    });
}

/// Sorted, de-duplicated (first weight wins), cut to the `max` heaviest;
/// among equal weights the best-ranked by `seed` (see
/// [`DnsConfig::subset_seed`](super::DnsConfig::subset_seed)).
pub(super) fn build(
    service_id: &str,
    configured: &str,
    mut candidates: Vec<Candidate>,
    ttl: Duration,
    secure: bool,
    max: usize,
    seed: u64,
) -> Resolved {
    // An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, an AAAA record) is
    // the IPv4 address it maps: one beside its A record is one instance,
    // not two with a double share (helper 192). Mapped here, after the
    // lookups: read by record, a mapped AAAA hid a failed A lookup from
    // `keep_failed_family` (helper 194).
    for c in &mut candidates {
        c.ip = c.ip.to_canonical();
    }
    candidates.sort_by_key(|c| (c.ip, c.port));
    let mut seen = BTreeSet::new();
    candidates.retain(|c| seen.insert((c.ip, c.port)));
    let truncated = candidates.len() > max;
    if truncated {
        tracing::warn!(
            service = service_id,
            name = configured,
            records = candidates.len(),
            max,
            "DNS answer cut to max_records"
        );
        // The heaviest kept (weight 0 has "a very small chance" next to
        // weighted records, RFC 2782), ties by this client's rank, then
        // back in address order.
        candidates.sort_by_cached_key(|c| (std::cmp::Reverse(c.weight), rank(seed, c)));
        candidates.truncate(max);
        candidates.sort_by_key(|c| (c.ip, c.port));
    }
    let instances = candidates
        .into_iter()
        .filter_map(|c| {
            let instance = Instance::new(service_id, c.ip.to_string(), c.port).ok()?;
            let mut instance = instance
                .with_secure(secure)
                .with_weight(c.weight)
                .with_metadata("weight", c.weight.to_string())
                .with_metadata("dns.name", configured);
            if let Some((target, priority)) = c.target {
                instance = instance
                    .with_metadata("dns.target", target)
                    .with_metadata("dns.priority", priority.to_string());
            }
            Some(instance)
        })
        .collect();
    Resolved {
        instances,
        ttl,
        truncated,
    }
}

/// The negative TTL of an answer saying the name is gone from DNS, or
/// `None` when the error is no such answer.
///
/// Gone means NXDOMAIN (the name does not exist), or NOERROR without
/// records (NODATA: the name has no record of the asked type), as Envoy's
/// c-ares resolver reads `ARES_ENOTFOUND` and `ARES_ENODATA`: a resolution
/// with no records, which empties a `STRICT_DNS` cluster
/// (`DnsResolverImpl::AddrInfoPendingResolution::isResponseWithNoRecords`).
/// An empty NOERROR whose authority section holds NS records and no SOA
/// looks like a referral (RFC 2308 §2.2, type 4 and referrals), not an
/// answer, and every other failure (SERVFAIL, REFUSED, a timeout) is no
/// such answer either: the last addresses stay. The TTL is the SOA's
/// negative TTL, 0 without one (the source clamps it to its floor).
///
/// An empty NOERROR without an SOA counts only as the answer for `asked`
/// itself (or `asked` under a search domain): one for a later name of a
/// CNAME chain is also how hickory gives up on a chain that loops or runs
/// past its 8 hops, which emptied the list as a success (helper 192); the
/// last addresses stay then.
pub(super) fn gone_from_dns(error: &NetError, asked: &Name) -> Option<Duration> {
    use hickory_resolver::net::DnsError as Dns;
    use hickory_resolver::proto::op::ResponseCode;
    let NetError::Dns(Dns::NoRecordsFound(none)) = error else {
        return None;
    };
    let gone = match none.response_code {
        ResponseCode::NXDomain => true,
        ResponseCode::NoError => {
            none.soa.is_some() || (none.ns.is_none() && asks_for(none.query.name(), asked))
        }
        _ => false,
    };
    gone.then(|| Duration::from_secs(u64::from(none.negative_ttl.unwrap_or(0))))
}

/// The name an empty NOERROR without an SOA or NS records answered, if
/// `error` is one (a NODATA that cannot be told from a CNAME chain the
/// resolver gave up on; see `DnsSource::gone`).
pub(super) fn nodata_without_soa(error: &NetError) -> Option<Name> {
    use hickory_resolver::net::DnsError as Dns;
    use hickory_resolver::proto::op::ResponseCode;
    match error {
        NetError::Dns(Dns::NoRecordsFound(none))
            if none.response_code == ResponseCode::NoError
                && none.soa.is_none()
                && none.ns.is_none() =>
        {
            Some(none.query.name().clone())
        }
        _ => None,
    }
}

/// Whether `queried` is `asked`, or (`asked` not absolute) `asked` under
/// a search domain; labels compared ASCII-case-insensitively.
fn asks_for(queried: &Name, asked: &Name) -> bool {
    let (q, a) = (queried.num_labels(), asked.num_labels());
    (q == a || (!asked.is_fqdn() && q > a))
        && queried
            .iter()
            .zip(asked.iter())
            .all(|(x, y)| x.eq_ignore_ascii_case(y))
}

pub(super) fn net_error(name: &str, record_type: &'static str, error: NetError) -> DnsError {
    if error.is_no_records_found() {
        DnsError::NoRecords {
            name: name.to_owned(),
            record_type,
            nxdomain: error.is_nx_domain(),
        }
    } else {
        DnsError::Resolve {
            name: name.to_owned(),
            source: Box::new(error),
        }
    }
}

/// Validates a configured name; a final dot makes it absolute.
pub(super) fn parse_name(text: &str, max_len: usize) -> Result<Name, DnsError> {
    let trimmed = text.trim();
    let bare = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if bare.len() > max_len {
        return Err(DnsError::NameTooLong {
            len: bare.len(),
            max: max_len,
        });
    }
    let invalid = |reason: &'static str| DnsError::InvalidName {
        name: shorten(trimmed),
        reason,
    };
    if bare.is_empty() {
        return Err(invalid("empty name"));
    }
    // An address is not a name: it went to the DNS server as one (a timeout
    // or NXDOMAIN, the list empty; helper 234). List it with `StaticSource`.
    if bare.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(invalid(
            "an IP address, not a name: list addresses with StaticSource",
        ));
    }
    if !bare
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid(
            "only ASCII letters, digits, `-`, `_` and `.` are allowed",
        ));
    }
    if bare
        .split('.')
        .any(|label| label.is_empty() || label.len() > 63)
    {
        return Err(invalid("every label must be 1 to 63 bytes"));
    }
    Name::from_ascii(trimmed).map_err(|_| invalid("not a DNS name"))
}

/// `text` cut to 64 characters, control characters escaped: names go into
/// error messages and logs, where a CR/LF would forge lines.
pub(super) fn shorten(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    crate::error::quote(&cut)
}
