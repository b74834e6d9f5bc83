//! [`DnsSource`]: instance lists from DNS (feature `dns`), for Kubernetes
//! headless services and SRV records, through
//! [hickory-resolver](https://docs.rs/hickory-resolver).
//!
//! # Kubernetes headless services (A/AAAA)
//!
//! A Kubernetes `Service` with `clusterIP: None` is *headless*: its DNS name
//! (`users.default.svc.cluster.local`) resolves to one A (or AAAA) record per
//! ready pod instead of one virtual IP. A client that resolves it and
//! balances over the addresses itself is a client-side load balancer; a
//! client that resolves a normal `ClusterIP` service gets one address, and
//! kube-proxy balances per connection, so long-lived connections stay on one
//! pod. [`DnsTarget::host`] maps a service id to `name:port`: every address
//! becomes one [`Instance`](crate::Instance) at that port, weight 1.
//!
//! The pod's `/etc/resolv.conf` is written by the kubelet:
//!
//! ```text
//! nameserver 10.96.0.10
//! search default.svc.cluster.local svc.cluster.local cluster.local
//! options ndots:5
//! ```
//!
//! A name with fewer than `ndots` dots is tried with each search domain
//! first, then as written; a name with `ndots` dots or more is tried as
//! written first; a name ending in `.` is never searched. So `users` finds
//! `users.default.svc.cluster.local` with the first query, and a full name
//! is cheapest written with its final dot. [`DnsConfig::from_resolv_conf`]
//! reads that file (nameservers, `search`/`domain`, `ndots`, `timeout`,
//! `attempts`), [`DnsConfig::kubernetes`] builds the same configuration by
//! hand, and every setting can be changed on [`DnsConfig`].
//!
//! # SRV records: priority and weight (RFC 2782)
//!
//! [`DnsTarget::srv`] looks up `_service._proto.name` (Kubernetes publishes
//! `_http._tcp.users.default.svc.cluster.local` for a named port `http`).
//! Each SRV record names a target host, a port, a priority and a weight:
//!
//! - **priority**: lower is preferred. Only the lowest priority group that
//!   has at least one target with an address is used; the other groups are
//!   backups, used only when every target of the better groups is gone from
//!   DNS (RFC 2782: "a client MUST attempt to contact the target host with
//!   the lowest-numbered priority it can reach").
//! - **weight**: within the group, a target's share is its weight over the
//!   sum of weights. The weight becomes [`Instance::weight`](crate::Instance::weight) (and metadata
//!   `weight`), which [`WeightedRoundRobin`](crate::rule::WeightedRoundRobin)
//!   reads, so weight 3 against weight 1 gets three requests in four. If
//!   every weight in the group is 0 they all become 1 (RFC 2782: equal
//!   chance); a weight 0 next to non-zero weights stays 0, which weighted
//!   rules treat as no share (RFC 2782 gives it "a very small chance").
//! - an answer whose only target is `.` means "decidedly not available"
//!   (RFC 2782): the fetch succeeds with an empty list. A `.` record next
//!   to real targets, whatever its priority, is skipped, as is a record
//!   with port 0.
//!
//! Target addresses are taken from the answer's additional section when the
//! server sends them, otherwise looked up (A and AAAA of the target as an
//! absolute name), 16 targets at a time, at most `2 · max_records` lookups
//! per resolution. Each address of a target becomes one instance with the
//! target's port and full weight. Only additional records of the
//! configured [`IpFamily`] count. A target whose lookup fails (SERVFAIL,
//! REFUSED, a timeout), as opposed to one gone from DNS (NXDOMAIN, no
//! address records), keeps the addresses the last answer had for it, and
//! the answer is asked again at the TTL floor: one failed lookup neither
//! moves a service onto its other targets nor hands it to a backup
//! priority. Kept addresses last until the TTL ceiling after they were
//! last resolved: a lookup that keeps failing then drops them, so it
//! cannot keep a removed address longer than an answer could.
//!
//! # TTL handling
//!
//! The crate's refresh ([`RefreshConfig`](super::RefreshConfig)) polls a
//! source at a fixed interval and has no per-fetch interval hook, so the TTL
//! clamp lives in this source: a successful answer is cached for
//! `min(max(ttl, floor), ceiling)` where `ttl` is the smallest TTL of the
//! records used, and every fetch inside that window returns the cached list
//! without sending a query. Set the refresh interval well below the floor
//! (1 s costs one map look-up per second): a DNS change is then seen within
//! the clamped TTL plus one refresh interval, or within the clamped TTL with
//! [`DnsConfig::refresh_ahead`] set to the refresh interval plus the query
//! time (the answer is then re-resolved that much before it expires). [`DnsSource::answer`] exposes
//! the last answer's TTL and clamped lifetime. A failed resolution returns an
//! error, so the refresh keeps the last good list (as with every source) and
//! counts the failure; the next query waits a backoff (doubling from
//! [`DnsConfig::failure_backoff`] up to the floor) so an outage does not
//! turn every refresh tick into a query. hickory's own cache is cleared
//! before every resolution, so the TTLs read are the server's, not what is
//! left of a cached copy.
//!
//! Defaults: floor **5 s**, ceiling **30 s**.
//! - The floor is Envoy's default `dns_refresh_rate` for DNS clusters (5 s;
//!   its DNS cache's `dns_min_refresh_rate`, the floor under TTL-driven
//!   refresh, is 5 s too) and CoreDNS's default TTL for cluster records
//!   (5 s), so pods that come and go are seen about as fast as the cluster
//!   DNS publishes them, while a TTL of 0 or 1 s cannot turn every client
//!   into a DNS load generator. gRPC waits at least 30 s between
//!   re-resolutions (grpc/grpc#19661), too slow for scale-ups
//!   (grpc/grpc#12295).
//! - The ceiling is Ribbon's and this crate's default refresh interval
//!   (30 s; Spring Cloud LoadBalancer caches lists 35 s), so an external zone
//!   with a one-hour TTL still cannot keep a removed address for an hour.
//!
//! # Bounds and errors
//!
//! Every answer is bounded: at most [`DnsConfig::max_records`] instances
//! (the heaviest, ties by a per-client rank, [`DnsConfig::subset_seed`],
//! so clients keep different subsets; [`DnsAnswer::truncated`] says so)
//! and SRV records, names of at most [`DnsConfig::max_name_len`] bytes
//! (longer SRV targets are skipped), one whole resolution within
//! [`DnsConfig::resolve_timeout`]. SRV records are sorted by priority
//! before the cut to `max_records`, so the lowest priorities are the ones
//! kept whatever their order in the answer; the sort is bounded by the
//! answer, one DNS message of at most 64 KiB (at most 3 449 SRV records).
//! A host target at port 0 is refused when it is configured
//! ([`DnsError::PortZero`]). Errors are [`DnsError`] values, carried as
//! [`DiscoveryError::Other`](crate::DiscoveryError::Other) (downcast to read them); an unconfigured
//! service id is [`DiscoveryError::UnknownService`](crate::DiscoveryError::UnknownService). No answer, however
//! malformed, makes the source panic.
//!
//! With [`IpFamily::Both`], a family whose lookup fails while the other
//! answers keeps the addresses the last answer had for it (TTL 0, asked
//! again at the floor), up to the TTL ceiling after they were last
//! resolved; a family answered with no records is gone.
//!
//! A name gone from DNS is an answer, not a failure: NXDOMAIN (on every
//! name of the search list) or NOERROR without records (NODATA) gives an
//! empty list, cached for the SOA's negative TTL within `[floor, ceiling]`,
//! so a headless service scaled to zero gets no more requests within one
//! TTL, and the addresses of its removed pods, which Kubernetes hands to
//! other pods, get none either. So does an SRV answer whose every target
//! is gone from DNS (a target whose lookup fails keeps its addresses, as
//! above; one that fails with none to keep makes the resolution fail).
//! Envoy's `STRICT_DNS` cluster empties the
//! same way (its c-ares resolver reads `ARES_ENOTFOUND` and `ARES_ENODATA`
//! as a resolution with no records). A name looked up through the search
//! list is gone only if every search name is: hickory returns the last
//! name's result and drops the failures before it, so on that path each
//! search name is asked again (at most one more lookup per search name),
//! and any failure or answer there fails the resolution. A failure keeps
//! the last good list:
//! SERVFAIL, REFUSED, a timeout, an empty NOERROR whose authority
//! section holds NS records and no SOA (a referral, not an answer), and an
//! empty NOERROR without an SOA for a later name of a CNAME chain (how the
//! resolver gives up on a chain that loops or runs past 8 hops). Only the
//! records of an answer section that answer the question count: those
//! owned by the name asked or by a name its CNAMEs there lead to, of the
//! family configured (a server may add records of other names). To keep
//! the last list through an empty answer too (a DNS server that briefly
//! forgets names), set
//! [`RefreshConfig::keep_last_on_empty`](super::RefreshConfig::keep_last_on_empty):
//! the fetch then counts as failed. An SRV answer of a single `.` target
//! is empty on purpose (RFC 2782).
//!
//! # Counterparts
//!
//! | System | What it does |
//! |---|---|
//! | Spring Cloud Kubernetes `DiscoveryClient` | asks the API server for the service's Endpoints/EndpointSlices (not DNS), configured by `spring.cloud.kubernetes.discovery.*`; SCLB caches the list (35 s) |
//! | gRPC `dns:///` resolver | A/AAAA (SRV only for grpclb), re-resolves on connection failure or GOAWAY, at most every 30 s; ignores TTLs |
//! | Envoy `STRICT_DNS` cluster | every address of the name is a host; re-resolves every `dns_refresh_rate` (5 s), or at the record TTL with `respect_dns_ttl`; `dns_failure_refresh_rate` (base and max interval) after failures; hosts kept until a successful resolution drops them |
//! | this source | A/AAAA and SRV with priority and weight; re-resolves by TTL, clamped to `[floor, ceiling]`; last good list on failure; a name gone from DNS empties the list |
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_ribbon::LoadBalancer;
//! use tower_ribbon::discovery::RefreshConfig;
//! use tower_ribbon::discovery::dns::{DnsConfig, DnsSource, DnsTarget};
//!
//! # fn build() -> Result<(), Box<dyn std::error::Error>> {
//! // In a pod: the kubelet's resolv.conf (search list, ndots:5).
//! let source = DnsSource::new(DnsConfig::system()?)?
//!     .with_service("users", DnsTarget::host("users", 8080))?
//!     .with_service("orders", DnsTarget::srv("_http._tcp.orders"))?;
//! let balancer = LoadBalancer::builder()
//!     .source(source)
//!     .services(["users", "orders"])
//!     .refresh({ let mut c = RefreshConfig::default(); c.interval = Duration::from_secs(1); c })
//!     .build(tower::service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(()))
//!     }))?;
//! # let _ = balancer; Ok(()) }
//! ```

use std::time::Duration;

/// The longest DNS name (RFC 1035: 255 octets on the wire, 253 in text).
pub const MAX_DNS_NAME_LEN: usize = 253;

/// Search domains kept from a `search` line (glibc keeps 6 up to 2.25, 32
/// since; this is the newer bound).
const MAX_SEARCH_DOMAINS: usize = 32;
/// Name servers kept from resolv.conf (glibc's `MAXNS`).
const MAX_NAME_SERVERS: usize = 3;
/// Upper bound on every duration setting (a day), so deadlines computed
/// from them never overflow.
const MAX_SETTING: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod answer_tests;
#[cfg(test)]
mod kept_answer_tests;
#[cfg(test)]
mod kept_tests;
#[cfg(test)]
mod lookup_tests;
mod answers;
mod config;
mod error;
mod records;
mod source;
mod target;
mod targets;
#[cfg(test)]
mod served_tests;
#[cfg(test)]
mod tests;

pub use config::*;
pub use error::*;
pub use source::*;
pub use target::*;

// Here rather than in `source.rs`, which is at the 500-line bound.
impl crate::discovery::InstanceSource for DnsSource {
    fn fetch<'a>(&'a self, service_id: &'a str) -> crate::discovery::FetchFuture<'a> {
        Box::pin(self.fetch_service(service_id))
    }

    /// DNS answers carry no status: every address is `UP`.
    fn kind(&self) -> crate::snapshot::SourceKind {
        crate::snapshot::SourceKind::Dns
    }
}
