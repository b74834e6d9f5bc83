//! Answers that carry more, or less, than the question asked for, from
//! the scripted server of `served_tests` (helper 192): records of other
//! names or of the family not asked for, CNAME chains that loop or are
//! long, SRV answers of unusable records only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::{CNAME, SRV};
use hickory_resolver::proto::rr::{RData, Record, RecordType};

use super::served_tests::{a, aaaa, config, hosts, name, serve};
use super::{DnsError, DnsSource, DnsTarget, IpFamily};

fn cname(owner: &str, target: &str) -> Record {
    Record::from_rdata(name(owner), 30, RData::CNAME(CNAME(name(target))))
}

fn srv(owner: &str, port: u16, target: &str) -> Record {
    let data = SRV::new(0, 1, port, name(target));
    Record::from_rdata(name(owner), 30, RData::SRV(data))
}

const SRV_NAME: &str = "_http._tcp.users.test.";

/// Records of another owner, or of the family not asked for, in an answer
/// section are no instance. Before, an IPv4-only source listed
/// `["127.0.0.2", "127.0.0.66", "::1"]` for `users.test` (a real balancer
/// sent 5 of 10 requests to the other name's address), and an SRV of
/// another owner added its target.
#[tokio::test]
async fn records_of_other_names_or_families_are_no_instances() {
    let server = serve(Arc::new(|qname, qtype| match (qname, qtype) {
        ("users.test.", RecordType::A | RecordType::AAAA) => (
            ResponseCode::NoError,
            vec![a("users.test.", 2), a("evil.test.", 66), aaaa("users.test.")],
            vec![],
        ),
        (SRV_NAME, RecordType::SRV) => (
            ResponseCode::NoError,
            vec![
                srv(SRV_NAME, 8080, "a.test."),
                srv("_http._tcp.other.test.", 9090, "evil.test."),
            ],
            vec![],
        ),
        ("a.test.", RecordType::A) => (ResponseCode::NoError, vec![a("a.test.", 3)], vec![]),
        ("evil.test.", RecordType::A) => (ResponseCode::NoError, vec![a("evil.test.", 66)], vec![]),
        (_, RecordType::A | RecordType::AAAA) => (ResponseCode::NoError, vec![], vec![]),
        _ => (ResponseCode::NXDomain, vec![], vec![]),
    }))
    .await;
    let source = |family| {
        DnsSource::new(config(server).ip_family(family))
            .unwrap()
            .with_service("users", DnsTarget::host("users.test.", 80))
            .unwrap()
            .with_service("srv", DnsTarget::srv(SRV_NAME))
            .unwrap()
    };
    let v4 = source(IpFamily::V4);
    assert_eq!(hosts(&v4.resolve("users").await.unwrap().unwrap()), ["127.0.0.2"]);
    let both = source(IpFamily::Both);
    assert_eq!(
        hosts(&both.resolve("users").await.unwrap().unwrap()),
        ["127.0.0.2", "::1"]
    );
    let srv = v4.resolve("srv").await.unwrap().unwrap();
    assert_eq!(hosts(&srv), ["127.0.0.3"]);
    assert_eq!(srv[0].port(), 8080);
}

/// A CNAME chain still leads to its addresses, in one answer or hop by
/// hop; one that loops (or runs past the resolver's 8 hops) is a failed
/// lookup, and the last list stays. Before, a loop answered `Ok([])`: the
/// list emptied as a success.
#[tokio::test]
async fn cname_chains_resolve_and_a_loop_keeps_the_last_list() {
    let looping = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&looping);
    let server = serve(Arc::new(move |qname, qtype| {
        let looping = flag.load(Ordering::SeqCst);
        match (qname, qtype) {
            ("one.test.", RecordType::A) => (
                ResponseCode::NoError,
                vec![cname("one.test.", "real.test."), a("real.test.", 4)],
                vec![],
            ),
            ("hop.test.", RecordType::A) if looping => (
                ResponseCode::NoError,
                vec![cname("hop.test.", "loop.test.")],
                vec![],
            ),
            ("loop.test.", RecordType::A) => (
                ResponseCode::NoError,
                vec![cname("loop.test.", "hop.test.")],
                vec![],
            ),
            ("hop.test.", RecordType::A) => (
                ResponseCode::NoError,
                vec![cname("hop.test.", "real.test.")],
                vec![],
            ),
            ("real.test.", RecordType::A) => {
                (ResponseCode::NoError, vec![a("real.test.", 4)], vec![])
            }
            _ => (ResponseCode::NXDomain, vec![], vec![]),
        }
    }))
    .await;
    let source = DnsSource::new(config(server).ip_family(IpFamily::V4))
        .unwrap()
        .with_service("one", DnsTarget::host("one.test.", 80))
        .unwrap()
        .with_service("hop", DnsTarget::host("hop.test.", 80))
        .unwrap();
    assert_eq!(hosts(&source.resolve("one").await.unwrap().unwrap()), ["127.0.0.4"]);
    assert_eq!(hosts(&source.resolve("hop").await.unwrap().unwrap()), ["127.0.0.4"]);
    looping.store(true, Ordering::SeqCst);
    let looped = DnsSource::new(config(server).ip_family(IpFamily::V4))
        .unwrap()
        .with_service("hop", DnsTarget::host("hop.test.", 80))
        .unwrap();
    let result = looped.resolve("hop").await.unwrap();
    assert!(
        matches!(result, Err(DnsError::NoRecords { .. })),
        "{result:?}"
    );
}

/// An SRV answer of port-0 records only names no service: a failed lookup
/// (the last list stays), as an answer whose targets are all too long is.
/// Before, `Ok([])`. A `.` record alone still means "not here".
#[tokio::test]
async fn an_srv_answer_of_port_zero_records_only_is_no_answer() {
    let server = serve(Arc::new(|qname, qtype| match (qname, qtype) {
        ("_a._tcp.users.test.", RecordType::SRV) => (
            ResponseCode::NoError,
            vec![
                srv("_a._tcp.users.test.", 0, "a.test."),
                srv("_a._tcp.users.test.", 0, "b.test."),
            ],
            vec![],
        ),
        ("_b._tcp.users.test.", RecordType::SRV) => (
            ResponseCode::NoError,
            vec![srv("_b._tcp.users.test.", 0, ".")],
            vec![],
        ),
        _ => (ResponseCode::NXDomain, vec![], vec![]),
    }))
    .await;
    let source = DnsSource::new(config(server))
        .unwrap()
        .with_service("a", DnsTarget::srv("_a._tcp.users.test."))
        .unwrap()
        .with_service("b", DnsTarget::srv("_b._tcp.users.test."))
        .unwrap();
    let result = source.resolve("a").await.unwrap();
    assert!(
        matches!(result, Err(DnsError::NoRecords { .. })),
        "{result:?}"
    );
    assert_eq!(source.resolve("b").await.unwrap().unwrap(), []);
}

/// An answer keeping an address through a failed lookup (TTL 0, used for
/// a whole floor) is used no longer than the oldest kept address may
/// stay: the TTL ceiling after it was last resolved. Before, the floor
/// ran from the failed lookup, so with a 2 s floor and a 3 s ceiling the
/// address was served until about 4 s after it was last resolved (helper
/// 192: dropped after 4.07 s).
#[tokio::test]
async fn an_answer_keeping_an_address_expires_with_it() {
    use std::time::Duration;
    let failing = Arc::new(AtomicBool::new(false));
    let fails = Arc::clone(&failing);
    let server = serve(Arc::new(move |qname, qtype| {
        match (qname, qtype, fails.load(Ordering::SeqCst)) {
            ("dual.test.", RecordType::A, _) => (ResponseCode::NoError, vec![a(qname, 2)], vec![]),
            ("dual.test.", RecordType::AAAA, true) => (ResponseCode::ServFail, vec![], vec![]),
            ("dual.test.", RecordType::AAAA, false) => {
                (ResponseCode::NoError, vec![super::served_tests::aaaa(qname)], vec![])
            }
            _ => (ResponseCode::NXDomain, vec![], vec![]),
        }
    }))
    .await;
    let ceiling = Duration::from_secs(3);
    let source = DnsSource::new(
        config(server)
            .ttl_floor(Duration::from_secs(2))
            .ttl_ceiling(ceiling),
    )
    .unwrap()
    .with_service("dual", DnsTarget::host("dual.test.", 8080))
    .unwrap();
    let both = ["127.0.0.2", "::1"];
    assert_eq!(hosts(&source.resolve("dual").await.unwrap().unwrap()), both);
    // Later than the first answer (which resolved `::1`) began.
    let resolved = tokio::time::Instant::now();
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(hosts(&source.resolve("dual").await.unwrap().unwrap()), both, "kept");
    let left = ceiling.saturating_sub(resolved.elapsed());
    let expires_in = source.answer("dual").unwrap().expires_in();
    assert!(
        expires_in <= left,
        "used {expires_in:?} more, the kept address may stay {left:?}"
    );
}

/// An IPv4-mapped AAAA beside its A record is one instance (before: two,
/// a double share), and an unspecified, multicast or broadcast address
/// none (before: `0.0.0.0` was listed, and a connection to it reaches the
/// caller's own host).
#[tokio::test]
async fn mapped_duplicates_and_addresses_of_no_one_host_are_dropped() {
    use hickory_resolver::proto::rr::rdata::{A, AAAA};
    use std::net::{Ipv4Addr, Ipv6Addr};
    let server = serve(Arc::new(|qname, qtype| {
        let v4 = |ip: [u8; 4]| Record::from_rdata(name(qname), 30, RData::A(A(Ipv4Addr::from(ip))));
        let v6 = |ip: Ipv6Addr| Record::from_rdata(name(qname), 30, RData::AAAA(AAAA(ip)));
        match (qname, qtype) {
            ("users.test.", RecordType::A) => (
                ResponseCode::NoError,
                vec![v4([127, 0, 0, 2]), v4([0, 0, 0, 0]), v4([255, 255, 255, 255]), v4([224, 0, 0, 1])],
                vec![],
            ),
            ("users.test.", RecordType::AAAA) => (
                ResponseCode::NoError,
                vec![
                    v6(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped()),
                    v6(Ipv6Addr::UNSPECIFIED),
                ],
                vec![],
            ),
            _ => (ResponseCode::NXDomain, vec![], vec![]),
        }
    }))
    .await;
    let source = DnsSource::new(config(server))
        .unwrap()
        .with_service("users", DnsTarget::host("users.test.", 80))
        .unwrap();
    assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), ["127.0.0.2"]);
}
