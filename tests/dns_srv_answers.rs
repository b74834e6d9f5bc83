//! How `DnsSource` reads whole SRV answers, against a real DNS server
//! (dnsmasq on 127.0.0.1, see `tests/support/dns.rs`; under `CI=true` a
//! missing dnsmasq fails the tests instead of skipping them).
//!
//! Found by an attack on the crate:
//! - records were cut to `max_records` in answer order before the sort by
//!   priority, so with one target at priority 10 and four backups at 20,
//!   `max_records(2)` could list two backups and drop the primary, which
//!   RFC 2782 says a client "MUST" try first.
//!   -> [`max_records_keeps_the_lowest_priority_whatever_the_answer_order`]
//! - a `.` record was read per priority group, so a `.` at priority 0 next
//!   to a real target at priority 10 emptied the list (`Ok([])`); RFC 2782
//!   gives `.` its "decidedly not available" meaning only as the answer's
//!   sole target. -> [`a_dot_record_next_to_real_targets_is_skipped`]
//! - `DnsTarget::host("users", 0)` was taken by `set_service`, and every
//!   fetch then returned `Ok([])` with no error (no instance can have port
//!   0), while `DnsTarget::parse("users:0")` was refused.
//!   -> [`a_host_target_at_port_zero_is_refused`]
#![cfg(feature = "dns")]

#[path = "support/dns.rs"]
mod dns_support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dns_support::{Dnsmasq, Srv};
use tower_ribbon::DiscoveryError;
use tower_ribbon::discovery::InstanceSource;
use tower_ribbon::discovery::dns::{DnsConfig, DnsError, DnsSource, DnsTarget};

const SRV_NAME: &str = "_http._tcp.users.default.svc.cluster.local";

fn ip(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, a, b))
}

fn config(server: &Dnsmasq) -> DnsConfig {
    DnsConfig::kubernetes("default", server.addr())
        .timeout(Duration::from_millis(500))
        .attempts(1)
        .resolve_timeout(Duration::from_secs(3))
}

async fn fetch_srv(config: DnsConfig) -> Result<Vec<String>, DiscoveryError> {
    let source = DnsSource::new(config)
        .unwrap()
        .with_service("users", DnsTarget::srv("_http._tcp.users"))
        .unwrap();
    let list = source.fetch("users").await?;
    Ok(list.iter().map(ToString::to_string).collect())
}

/// One target at priority 10, four backups at priority 20,
/// `max_records(2)`: the primary alone is listed, whether the answer
/// lists it first or last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_records_keeps_the_lowest_priority_whatever_the_answer_order() {
    let mut hosts = vec![(ip(0, 1), "primary.test".to_owned())];
    hosts.extend((1..=4u8).map(|i| (ip(1, i), format!("backup{i}.test"))));
    let hosts: Vec<(IpAddr, &str)> = hosts.iter().map(|(i, n)| (*i, n.as_str())).collect();
    let primary = Srv::new(SRV_NAME, "primary.test", 8080, 10, 1);
    let backups: Vec<Srv> = (1..=4)
        .map(|i| Srv::new(SRV_NAME, &format!("backup{i}.test"), 9000 + i, 20, 1))
        .collect();
    for primary_first in [true, false] {
        let mut records = backups.clone();
        if primary_first {
            records.insert(0, primary.clone());
        } else {
            records.push(primary.clone());
        }
        let Some(server) = Dnsmasq::start(5, &hosts, &records) else {
            return;
        };
        let list = fetch_srv(config(&server).max_records(2)).await;
        println!("primary first in the answer: {primary_first}: {list:?}");
        assert_eq!(
            list.expect("resolves"),
            ["http://10.0.0.1:8080"],
            "primary first: {primary_first}"
        );
    }
}

/// A `.` at priority 0 next to a real target at priority 10: the target is
/// listed. An answer whose only record is `.` still empties the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dot_record_next_to_real_targets_is_skipped() {
    let hosts = [(ip(0, 1), "primary.test")];
    let records = [
        Srv::new(SRV_NAME, ".", 0, 0, 0),
        Srv::new(SRV_NAME, "primary.test", 8080, 10, 1),
    ];
    let Some(server) = Dnsmasq::start(5, &hosts, &records) else {
        return;
    };
    let list = fetch_srv(config(&server)).await;
    println!("'.' at priority 0, primary.test at 10: {list:?}");
    assert_eq!(list.expect("resolves"), ["http://10.0.0.1:8080"]);

    let Some(alone) = Dnsmasq::start(5, &hosts, &[Srv::new(SRV_NAME, ".", 0, 0, 0)]) else {
        return;
    };
    let list = fetch_srv(config(&alone)).await;
    println!("'.' alone: {list:?}");
    assert!(
        list.expect("resolves").is_empty(),
        "a sole '.' means not available"
    );
}

/// `DnsTarget::host(name, 0)` is refused by `set_service` and
/// `with_service` with `DnsError::PortZero`, as `parse("users:0")` is; the
/// same name at a real port resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_target_at_port_zero_is_refused() {
    let hosts = [(ip(0, 1), "users.default.svc.cluster.local")];
    let Some(server) = Dnsmasq::start(5, &hosts, &[]) else {
        return;
    };
    let source = DnsSource::new(config(&server)).unwrap();
    let set = source.set_service("users", DnsTarget::host("users", 0));
    let fetched = source.fetch("users").await;
    println!("set_service: {set:?}; fetch: {fetched:?}");
    assert!(matches!(set, Err(DnsError::PortZero { .. })), "{set:?}");
    assert!(
        matches!(fetched, Err(DiscoveryError::UnknownService { .. })),
        "nothing was configured: {fetched:?}"
    );
    let with = DnsSource::new(config(&server))
        .unwrap()
        .with_service("users", DnsTarget::host("users", 0));
    assert!(matches!(with, Err(DnsError::PortZero { .. })), "{with:?}");
    let parsed = DnsTarget::parse("users:0");
    assert!(
        matches!(parsed, Err(DnsError::PortZero { .. })),
        "{parsed:?}"
    );

    source
        .set_service("users", DnsTarget::host("users", 8080))
        .expect("port 8080");
    let list = source.fetch("users").await.expect("resolves");
    assert_eq!(list.len(), 1, "{list:?}");
}

/// Within one priority the cut keeps the heavier records: a weight-0
/// target has "a very small chance" next to a weighted one (RFC 2782).
/// Before, records were ordered by name within a priority, and
/// `max_records(1)` kept the weight-0 `a.test` over `b.test` at weight 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cut_keeps_weighted_targets_over_weight_zero_ones() {
    let hosts = [(ip(0, 1), "a.test"), (ip(0, 2), "b.test")];
    let records = [
        Srv::new(SRV_NAME, "b.test", 9002, 10, 100),
        Srv::new(SRV_NAME, "a.test", 9001, 10, 0),
    ];
    let Some(server) = Dnsmasq::start(5, &hosts, &records) else {
        return;
    };
    let list = fetch_srv(config(&server).max_records(1)).await;
    assert_eq!(list.expect("resolves"), ["http://10.0.0.2:9002"]);
}

/// A target without addresses does not hide the resolvable ones after it:
/// `max_records` bounds the lookups (twice it) and the instances, not the
/// records considered. Before, `max_records(1)` kept only `a.test` (no
/// address) of the primary group and the fetch failed with
/// `NoAddresses`, though `b.test` and the backup resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_target_does_not_hide_the_next_one() {
    let hosts = [(ip(0, 2), "b.test"), (ip(0, 3), "c.test")];
    let records = [
        Srv::new(SRV_NAME, "a.test", 9001, 10, 1),
        Srv::new(SRV_NAME, "b.test", 9002, 10, 1),
        Srv::new(SRV_NAME, "c.test", 9003, 20, 1),
    ];
    let Some(server) = Dnsmasq::start(5, &hosts, &records) else {
        return;
    };
    let list = fetch_srv(config(&server).max_records(1)).await;
    assert_eq!(list.expect("resolves"), ["http://10.0.0.2:9002"]);
}
