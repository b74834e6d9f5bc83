//! Why a DNS fetch or configuration failed.



use crate::BoxError;
use std::time::Duration;

/// Why a DNS fetch or configuration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A configured name is not a valid DNS name.
    #[error("invalid DNS name `{name}`: {reason}")]
    InvalidName {
        /// The name (cut to 64 characters).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A host target at port 0 ([`DnsTarget::host`](super::DnsTarget::host)
    /// or `name:0`): no instance can have that port.
    #[error("DNS target `{name}`: port 0; the port must be in 1..=65535")]
    PortZero {
        /// The name (cut to 64 characters).
        name: String,
    },
    /// A configured name is longer than [`DnsConfig::max_name_len`](super::DnsConfig::max_name_len).
    #[error("DNS name of {len} bytes is longer than {max}")]
    NameTooLong {
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The configuration names no name server.
    #[error("no DNS name server configured")]
    NoNameServers,
    /// resolv.conf could not be read.
    #[error("cannot read {path}: {source}")]
    ResolvConf {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No usable record, and no answer that the name is gone: a referral
    /// (an empty NOERROR with NS records and no SOA), an answer without
    /// addresses (only a CNAME; a CNAME chain that loops or runs past the
    /// resolver's 8 hops), or SRV records that are all unusable (port 0 on
    /// a target, targets too long). The last good list is kept. A name gone from
    /// DNS (NXDOMAIN, or NODATA) is no error: the fetch gives an empty
    /// list (see the [module docs](super)).
    #[error("no {record_type} records for `{name}`{}", if *.nxdomain { " (NXDOMAIN)" } else { "" })]
    NoRecords {
        /// The name as configured.
        name: String,
        /// `A/AAAA` or `SRV`.
        record_type: &'static str,
        /// The server said the name does not exist.
        nxdomain: bool,
    },
    /// SRV records were found, but no target of any priority had an
    /// address, and not because each is gone from DNS: a target's lookup
    /// failed (with no last addresses to keep), or the lookups ran out.
    /// The last good list is kept. Every target gone from DNS is no
    /// error: the fetch gives an empty list.
    #[error("SRV `{name}`: {records} records, no target with an address")]
    NoAddresses {
        /// The SRV name.
        name: String,
        /// SRV records seen.
        records: usize,
    },
    /// The query failed: no server answered, a server refused or failed.
    #[error("resolving `{name}` failed: {source}")]
    Resolve {
        /// The name as configured.
        name: String,
        /// hickory's error.
        #[source]
        source: BoxError,
    },
    /// The whole resolution took longer than [`DnsConfig::resolve_timeout`](super::DnsConfig::resolve_timeout).
    #[error("resolving `{name}` took longer than {after:?}")]
    Timeout {
        /// The name as configured.
        name: String,
        /// The bound.
        after: Duration,
    },
    /// An earlier resolution failed and the backoff has not elapsed; DNS was
    /// not asked.
    #[error("resolving `{name}` failed {failures} times; next try in {retry_in:?}")]
    Backoff {
        /// The name as configured.
        name: String,
        /// Consecutive failures.
        failures: u32,
        /// Time left before the next query.
        retry_in: Duration,
    },
}
