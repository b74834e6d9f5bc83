//! The addresses of one SRV target: looked up, or kept from the last
//! answer when the lookup fails.

use std::net::IpAddr;

use hickory_resolver::proto::rr::Name;

use super::records::{SrvRecord, min_ttl, record_ip};
use super::source::DnsSource;

impl DnsSource {
    /// A/AAAA of an SRV target (an absolute name); `None` if it has none
    /// (the target is skipped).
    ///
    /// A lookup that fails (SERVFAIL, REFUSED, a timeout) is not a target
    /// gone from DNS: the addresses the service's last answer had for this
    /// target and port are kept, with TTL 0 (asked again at the floor), so
    /// one failed lookup neither moves the service onto the other targets
    /// nor hands it to a backup priority.
    pub(super) async fn target_addrs(
        &self,
        service_id: &str,
        record: &SrvRecord,
    ) -> Option<(Vec<IpAddr>, u32)> {
        let mut name = Name::from_ascii(&record.target).ok()?;
        name.set_fqdn(true);
        let lookup = match self.resolver().lookup_ip(name).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() => return None,
            Err(e) => {
                tracing::debug!(
                    service = service_id,
                    target = %record.target,
                    error = %e,
                    "SRV target lookup failed; its last addresses are kept"
                );
                return self.last_addrs(service_id, record);
            }
        };
        let answers = lookup.as_lookup().answers();
        let addrs: Vec<IpAddr> = answers.iter().filter_map(record_ip).collect();
        if addrs.is_empty() {
            return None;
        }
        Some((addrs, min_ttl(answers).unwrap_or(0)))
    }

    /// The addresses of `record`'s target and port in the last answer.
    fn last_addrs(&self, service_id: &str, record: &SrvRecord) -> Option<(Vec<IpAddr>, u32)> {
        let answer = self.answer(service_id)?;
        let addrs: Vec<IpAddr> = answer
            .instances
            .iter()
            .filter(|i| {
                i.port() == record.port
                    && i.metadata().get("dns.target") == Some(&record.target)
            })
            .filter_map(|i| i.host().parse().ok())
            .collect();
        (!addrs.is_empty()).then_some((addrs, 0))
    }
}
