//! The addresses of one SRV target, or of one address family: looked up,
//! or kept from the last answer when the lookup fails.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RecordType};

use super::IpFamily;
use super::records::{
    Additionals, Candidate, SrvRecord, TargetWalk, gone_from_dns, min_ttl, nodata_without_soa,
};
use super::answers::{addresses, answering_lookup, asked_names, usable_ip};
use super::source::{CacheEntry, DnsSource, KeptAddr};

/// SRV targets looked up at once (those without addresses in the
/// answer's additional section). One after the other, a resolution took
/// one round trip per target: 512 lookups (`2 · max_records`) at 40 ms
/// each overran the default `resolve_timeout` (10 s) at every resolution.
pub(super) const LOOKUPS_AT_ONCE: usize = 16;

/// A target's addresses and their lowest TTL; `None`: the target is
/// skipped.
type Addrs = Option<(Vec<IpAddr>, u32)>;

/// The addresses of one SRV record: found in the additional section, or
/// being looked up.
enum Found<'a> {
    Ready(Addrs),
    Lookup(Pin<Box<dyn Future<Output = Addrs> + Send + 'a>>),
}

impl DnsSource {
    /// The candidates of one priority group (in lookup order), their
    /// lowest TTL (starting from `srv_ttl`) and how many records were
    /// visited: records are taken in order until `2 · max_records`
    /// candidates or `lookups_left` run out, their targets looked up
    /// [`LOOKUPS_AT_ONCE`] at a time.
    pub(super) async fn group_candidates(
        &self,
        service_id: &str,
        group: &[SrvRecord],
        additionals: &Additionals,
        walk: &mut TargetWalk,
        srv_ttl: u32,
    ) -> (Vec<Candidate>, u32, usize) {
        let max = self.config().max_records.saturating_mul(2);
        let all_zero = group.iter().all(|r| r.weight == 0);
        let (mut candidates, mut ttl, mut visited) = (Vec::new(), srv_ttl, 0);
        for chunk in group.chunks(LOOKUPS_AT_ONCE) {
            let found = self
                .chunk_addrs(service_id, chunk, additionals, walk)
                .await;
            let ran_out = found.len() < chunk.len();
            for (record, found) in chunk.iter().zip(found) {
                visited += 1;
                let Some((addrs, addr_ttl)) = found else {
                    continue;
                };
                ttl = ttl.min(addr_ttl);
                let weight = u32::from(record.weight).max(u32::from(all_zero));
                candidates.extend(addrs.into_iter().map(|ip| Candidate {
                    ip,
                    port: record.port,
                    weight,
                    target: Some((record.target.clone(), record.priority)),
                }));
                if candidates.len() >= max {
                    return (candidates, ttl, visited);
                }
            }
            if ran_out {
                walk.cut = true;
                break;
            }
        }
        (candidates, ttl, visited)
    }

    /// The addresses of `records`, in order: from the additional section,
    /// else looked up (all at once), while `lookups_left` lasts. Shorter
    /// than `records` when the lookups ran out.
    async fn chunk_addrs(
        &self,
        service_id: &str,
        records: &[SrvRecord],
        additionals: &Additionals,
        walk: &mut TargetWalk,
    ) -> Vec<Addrs> {
        let (lookups_left, failed) = (&mut walk.lookups_left, &walk.failed);
        let mut found: Vec<Found<'_>> = Vec::with_capacity(records.len());
        for record in records {
            found.push(match additionals.get(&record.target) {
                // Resolved now: no longer kept (else its keeping time ran
                // on, and the answer's lifetime, capped by it, stayed 0:
                // a resolution per fetch; helper 194).
                Some(addrs) => {
                    self.fresh(service_id, Some(&record.target), record.port, &addrs.0);
                    Found::Ready(Some(addrs))
                }
                None if *lookups_left == 0 => break,
                None => {
                    *lookups_left -= 1;
                    Found::Lookup(Box::pin(self.target_addrs(service_id, record, failed)))
                }
            });
        }
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for slot in &mut found {
                if let Found::Lookup(lookup) = slot {
                    match lookup.as_mut().poll(cx) {
                        Poll::Ready(addrs) => *slot = Found::Ready(addrs),
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending { Poll::Pending } else { Poll::Ready(()) }
        })
        .await;
        found
            .into_iter()
            .map(|slot| match slot {
                Found::Ready(addrs) => addrs,
                Found::Lookup(_) => None,
            })
            .collect()
    }

    /// The resolver.
    pub(super) fn resolver(&self) -> &hickory_resolver::TokioResolver {
        &self.inner.resolver
    }

    /// A/AAAA of an SRV target (an absolute name); `None` if it has none
    /// (the target is skipped).
    ///
    /// A lookup that fails (SERVFAIL, REFUSED, a timeout) is not a target
    /// gone from DNS: the addresses the service's last answer had for this
    /// target and port are kept, with TTL 0 (asked again at the floor), so
    /// one failed lookup neither moves the service onto the other targets
    /// nor hands it to a backup priority. Up to the TTL ceiling after they
    /// were last resolved: then the target is skipped.
    pub(super) async fn target_addrs(
        &self,
        service_id: &str,
        record: &SrvRecord,
        failed: &AtomicBool,
    ) -> Option<(Vec<IpAddr>, u32)> {
        let mut name = Name::from_ascii(&record.target).ok()?;
        name.set_fqdn(true);
        let lookup = match self.resolver().lookup_ip(name.clone()).await {
            Ok(lookup) => Some(lookup),
            // Both families failed and hickory returned the first's error:
            // a family that failed is asked alone below, as for a host.
            Err(e) if self.gone(&e, &name).await.is_some() => None,
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                tracing::debug!(
                    service = service_id,
                    target = %record.target,
                    error = %e,
                    "SRV target lookup failed; its last addresses are kept"
                );
                let last = self.last_addrs(service_id, record);
                let kept = self.keep(service_id, Some(&record.target), record.port, last);
                return (!kept.is_empty()).then_some((kept, 0));
            }
        };
        let asked = [name.clone()];
        let answers = lookup.as_ref().map_or_else(Vec::new, |lookup| {
            answering_lookup(lookup.as_lookup(), &asked)
        });
        let mut addrs = addresses(&answers, self.config().ip_family);
        if addrs.is_empty() && blocked_only(&answers) {
            // Only addresses of no one host (a filtering resolver's
            // "blocked"): no answer, as for a host target, so the target's
            // last addresses are kept; taken as gone, an SRV name whose
            // every target was blocked emptied the list (helper 196).
            failed.store(true, Ordering::Relaxed);
            let last = self.last_addrs(service_id, record);
            let kept = self.keep(service_id, Some(&record.target), record.port, last);
            return (!kept.is_empty()).then_some((kept, 0));
        }
        let secs = min_ttl(answers.iter().copied()).unwrap_or(if lookup.is_some() { 0 } else { u32::MAX });
        let mut ttl = Duration::from_secs(u64::from(secs));
        let last = (service_id, record.port, Some(record.target.as_str()));
        self.keep_failed_family(last, &name, &mut addrs, &mut ttl)
            .await;
        if addrs.is_empty() {
            return None;
        }
        Some((addrs, u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX)))
    }

    /// The addresses of `record`'s target and port in the last answer.
    fn last_addrs(&self, service_id: &str, record: &SrvRecord) -> Vec<IpAddr> {
        let Some(answer) = self.answer(service_id) else {
            return Vec::new();
        };
        answer
            .instances
            .iter()
            .filter(|i| {
                i.port() == record.port
                    && i.metadata().get("dns.target") == Some(&record.target)
            })
            .filter_map(|i| i.host().parse().ok())
            .collect()
    }

    /// With [`IpFamily::Both`], hickory drops a family whose lookup failed
    /// and answers with the other: a transient SERVFAIL on AAAA would
    /// remove every IPv6 instance. A family missing from `addrs` that the
    /// last answer (`last`: service id, port and SRV target) had is asked
    /// alone: failed
    /// again (not "no records"), its last addresses are kept and the TTL
    /// drops to 0 (asked again at the floor); answered, its addresses are
    /// added; no records, it is gone.
    pub(super) async fn keep_failed_family(
        &self,
        (service_id, port, target): (&str, u16, Option<&str>),
        name: &Name,
        addrs: &mut Vec<IpAddr>,
        ttl: &mut Duration,
    ) {
        self.fresh(service_id, target, port, addrs);
        if self.config().ip_family != IpFamily::Both {
            return;
        }
        let Some(answer) = self.answer(service_id) else {
            return;
        };
        let same_target = |i: &crate::Instance| {
            let listed = i.metadata().get("dns.target").map(String::as_str);
            target.is_none_or(|t| listed == Some(t))
        };
        for (v4, record_type) in [(true, RecordType::A), (false, RecordType::AAAA)] {
            if addrs.iter().any(|ip| ip.is_ipv4() == v4) {
                continue;
            }
            // Not those the other family's answer gives (IPv4-mapped):
            // resolved, not kept (kept, their keeping time ran on while the
            // other family kept listing them, and past the ceiling every
            // fetch resolved again; helper 195).
            let kept: Vec<IpAddr> = (answer.instances.iter())
                .filter(|i| i.port() == port && same_target(i))
                .filter_map(|i| i.host().parse::<IpAddr>().ok())
                .filter(|ip| ip.is_ipv4() == v4)
                .filter(|ip| !addrs.iter().any(|found| found.to_canonical() == *ip))
                .collect();
            if kept.is_empty() {
                continue;
            }
            let failure = match self.resolver().lookup(name.clone(), record_type).await {
                Ok(lookup) => {
                    let asked = asked_names(name, &self.config().search);
                    let answers = answering_lookup(&lookup, &asked);
                    let found: Vec<IpAddr> = (answers.iter())
                        .filter_map(|r| usable_ip(r))
                        .filter(|ip| ip.is_ipv4() == v4)
                        .collect();
                    if found.is_empty() && blocked_only(&answers) {
                        Some(BLOCKED.to_owned())
                    } else {
                        self.fresh(service_id, target, port, &found);
                        addrs.extend(found);
                        let secs = min_ttl(answers.iter().copied()).unwrap_or(0);
                        *ttl = (*ttl).min(Duration::from_secs(u64::from(secs)));
                        None
                    }
                }
                Err(e) => match self.gone_everywhere(name, e, Some(record_type)).await {
                    // Gone from DNS: not in the new answer, forgotten with it.
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                },
            };
            let Some(error) = failure else { continue };
            let kept = self.keep(service_id, target, port, kept);
            if kept.is_empty() {
                continue;
            }
            tracing::debug!(
                service = service_id,
                %record_type,
                %error,
                "lookup of one address family failed; its last addresses are kept"
            );
            addrs.extend(kept);
            *ttl = Duration::ZERO;
        }
    }

    /// [`gone_from_dns`], unless `error` is an empty NOERROR without an
    /// SOA for a name that holds a CNAME (asked once more, for CNAME
    /// records only): that is how hickory gives up on a chain that loops
    /// back to the name it last asked (`a CNAME a`, or a loop answered
    /// whole in one message), not a name without records; before, such a
    /// loop emptied the list as a success (helper 194).
    pub(super) async fn gone(&self, error: &NetError, asked: &Name) -> Option<Duration> {
        let ttl = gone_from_dns(error, asked)?;
        let Some(queried) = nodata_without_soa(error) else {
            return Some(ttl);
        };
        let alias = self.resolver().lookup(queried, RecordType::CNAME).await;
        let holds_cname = alias.is_ok_and(|found| {
            (found.answers().iter()).any(|r| r.record_type() == RecordType::CNAME)
        });
        (!holds_cname).then_some(ttl)
    }

    /// `error`'s negative TTL ([`gone_from_dns`]) if the configured `name`
    /// is gone on every name of its search list; otherwise an error (the
    /// last list stays). hickory tries the search names in turn and returns
    /// the last one's result, dropping the failures before it: a SERVFAIL
    /// or timeout on the service's real name followed by NXDOMAIN on the
    /// other search names read as gone, and emptied the list. So a gone
    /// answer for a name with a search list is checked name by name (at
    /// most one more lookup per search name, only on this path); a failure
    /// or an answer with records on any of them is a failure.
    /// `record_type`: `None` for the configured address families.
    pub(super) async fn gone_everywhere(
        &self,
        name: &Name,
        error: NetError,
        record_type: Option<RecordType>,
    ) -> Result<Duration, NetError> {
        let Some(ttl) = self.gone(&error, name).await else {
            return Err(error);
        };
        let search = &self.config().search;
        if name.is_fqdn() || search.is_empty() {
            return Ok(ttl);
        }
        for mut each in asked_names(name, search) {
            each.set_fqdn(true);
            let empty = match record_type {
                None => (self.resolver().lookup_ip(each.clone()).await)
                    .map(|found| found.as_lookup().answers().is_empty()),
                Some(record_type) => (self.resolver().lookup(each.clone(), record_type).await)
                    .map(|found| found.answers().is_empty()),
            };
            match empty {
                Err(e) if self.gone(&e, &each).await.is_none() => return Err(e),
                Ok(false) => return Err(NetError::Message("a search name answered on a second ask")),
                _ => {}
            }
        }
        Ok(ttl)
    }
    /// Which of `addrs`, the addresses of one SRV target (`None`: the
    /// host target) and `port` in the last answer, may be kept through a
    /// failed lookup: each only until the TTL ceiling after it was last
    /// resolved, so a lookup that keeps failing cannot keep a removed
    /// address longer than an answer could be used. Counted per address,
    /// whichever lookup (the target's, one family's) failed: counted per
    /// failing lookup, an address kept by one was kept again by the other
    /// from the answer that had kept it, up to twice the ceiling.
    fn keep(
        &self,
        service_id: &str,
        target: Option<&str>,
        port: u16,
        mut addrs: Vec<IpAddr>,
    ) -> Vec<IpAddr> {
        let ceiling = self.config().ttl_ceiling;
        let now = Instant::now();
        let mut cache = self.lock_cache();
        let Some(entry) = cache.get_mut(&crate::discovery::service_key(service_id)) else {
            return Vec::new();
        };
        let Some(resolved_at) = entry.answer.as_ref().map(|a| a.resolved_at) else {
            return Vec::new();
        };
        addrs.retain(|ip| {
            let key = (target.map(str::to_owned), port, *ip);
            // Not kept yet: the last answer resolved it.
            // An expired entry stays (until an answer no longer lists the
            // address): removed, a second record of the same target in a
            // backup group kept the address again from the last answer's
            // time, for good (helper 196).
            let since = *entry.kept_since.entry(key).or_insert(resolved_at);
            now.saturating_duration_since(since) < ceiling
        });
        addrs
    }

    /// `addrs` of `target` and `port` were resolved now: none of them is
    /// kept any more.
    fn fresh(&self, service_id: &str, target: Option<&str>, port: u16, addrs: &[IpAddr]) {
        let mut cache = self.lock_cache();
        let Some(entry) = cache.get_mut(&crate::discovery::service_key(service_id)) else {
            return;
        };
        for ip in addrs {
            if entry.kept_since.is_empty() {
                return;
            }
            // As the answer lists it: an IPv4-mapped address as its IPv4
            // address (`records::build`). Removed by its raw form, a mapped
            // address stayed "kept" for good, and past the ceiling every
            // fetch resolved again (helper 195: 20 of 20).
            let listed = ip.to_canonical();
            entry.kept_since.remove(&(target.map(str::to_owned), port, listed));
        }
    }
}

impl CacheEntry {
    /// Forgets the kept addresses `answer` does not list: they are gone from
    /// DNS (or expired), and a failed lookup keeps only addresses of the last
    /// answer. Without it, every address ever kept stayed in the map, one
    /// entry per SRV target name that failed a lookup once, for the life of
    /// the source.
    pub(super) fn forget_unlisted(&mut self, answer: &[crate::Instance]) {
        if self.kept_since.is_empty() {
            return;
        }
        let listed: std::collections::HashSet<KeptAddr> = answer
            .iter()
            .filter_map(|i| {
                let target = i.metadata().get("dns.target").cloned();
                Some((target, i.port(), i.host().parse().ok()?))
            })
            .collect();
        self.kept_since.retain(|key, _| listed.contains(key));
    }

    /// How long an answer resolved at `started` with `ttl` is used: its
    /// [`answer_lifetime`](super::DnsConfig::answer_lifetime), but no
    /// longer than the oldest kept address may stay (the TTL ceiling
    /// after it was last resolved). An answer keeping an address has TTL
    /// 0, used for a whole floor, so such an address outlived the ceiling
    /// by up to a floor (helper 192: 4.07 s for a 3 s ceiling).
    pub(super) fn lifetime(
        &self,
        config: &super::DnsConfig,
        ttl: Duration,
        started: Instant,
    ) -> Duration {
        let lifetime = config.answer_lifetime(ttl);
        match self.kept_since.values().min() {
            Some(since) => (*since + config.ttl_ceiling)
                .saturating_duration_since(started)
                .min(lifetime),
            None => lifetime,
        }
    }
}

/// The message of a lookup that answered only addresses of no one host.
const BLOCKED: &str = "answered only addresses of no one host (0.0.0.0, ::, multicast, broadcast)";

/// Whether `answers` hold address records, none usable: every one names
/// no one host.
fn blocked_only(answers: &[&hickory_resolver::proto::rr::Record]) -> bool {
    answers.iter().any(|r| super::answers::record_ip(r).is_some())
        && answers.iter().all(|r| super::answers::usable_ip(r).is_none())
}
