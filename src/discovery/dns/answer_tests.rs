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

fn cname_ttl(owner: &str, target: &str, ttl: u32) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

/// Helper 194 against the first version of the fixes above: a CNAME
/// answered alone (the chain followed query by query) still bounds the
/// answer's TTL (before: the target's 300 s where the CNAME said 5 s); a
/// chain of 20 CNAMEs in one message resolves (before: refused past 16);
/// a loop back to the name asked (`self CNAME self`, or a loop answered
/// whole in one message) keeps the last list (before: emptied it).
#[tokio::test]
async fn cname_chains_of_any_shape_and_loops_back_to_the_name_asked() {
    let looping = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&looping);
    let server = serve(Arc::new(move |qname, qtype| {
        let looping = flag.load(Ordering::SeqCst);
        let ok = |records| (ResponseCode::NoError, records, vec![]);
        match (qname, qtype) {
            ("n.test.", RecordType::A) => ok(vec![cname_ttl("n.test.", "t.test.", 5)]),
            ("t.test.", RecordType::A) => ok(vec![Record::from_rdata(
                name("t.test."),
                300,
                RData::A(hickory_resolver::proto::rr::rdata::A::new(127, 0, 0, 9)),
            )]),
            ("long.test.", RecordType::A) => {
                let mut chain: Vec<Record> = (0..20)
                    .map(|i| cname(&format!("c{i}.long.test."), &format!("c{}.long.test.", i + 1)))
                    .collect();
                chain.insert(0, cname("long.test.", "c0.long.test."));
                chain.push(a("c20.long.test.", 9));
                ok(chain)
            }
            ("self.test.", RecordType::A | RecordType::CNAME) if looping => {
                ok(vec![cname("self.test.", "self.test.")])
            }
            ("two.test.", RecordType::A | RecordType::CNAME) if looping => ok(vec![
                cname("two.test.", "other.test."),
                cname("other.test.", "two.test."),
            ]),
            ("self.test." | "two.test.", RecordType::A) => ok(vec![a(qname, 5)]),
            _ => (ResponseCode::NXDomain, vec![], vec![]),
        }
    }))
    .await;
    let source = DnsSource::new(config(server).ip_family(IpFamily::V4))
        .unwrap()
        .with_service("n", DnsTarget::host("n.test.", 80))
        .unwrap()
        .with_service("long", DnsTarget::host("long.test.", 80))
        .unwrap()
        .with_service("self", DnsTarget::host("self.test.", 80))
        .unwrap()
        .with_service("two", DnsTarget::host("two.test.", 80))
        .unwrap();
    assert_eq!(hosts(&source.resolve("n").await.unwrap().unwrap()), ["127.0.0.9"]);
    assert_eq!(
        source.answer("n").unwrap().ttl,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(hosts(&source.resolve("long").await.unwrap().unwrap()), ["127.0.0.9"]);
    for service in ["self", "two"] {
        assert_eq!(hosts(&source.resolve(service).await.unwrap().unwrap()), ["127.0.0.5"]);
    }
    looping.store(true, Ordering::SeqCst);
    for service in ["self", "two"] {
        let result = source.resolve(service).await.unwrap();
        assert!(
            matches!(result, Err(DnsError::NoRecords { .. })),
            "{service}: {result:?}"
        );
        assert_eq!(hosts(&source.answer(service).unwrap().instances), ["127.0.0.5"]);
    }
}

/// With both families, an IPv4-mapped AAAA does not hide a failed A
/// lookup: the last A addresses are kept (before the mapping moved to
/// the answer's build, `::ffff:127.0.0.2` read as an A answer and
/// `127.0.0.3` was dropped at one SERVFAIL; helper 194).
#[tokio::test]
async fn a_mapped_aaaa_does_not_hide_a_failed_a_lookup() {
    use hickory_resolver::proto::rr::rdata::AAAA;
    use std::net::{Ipv4Addr, Ipv6Addr};
    let failing = Arc::new(AtomicBool::new(false));
    let fails = Arc::clone(&failing);
    let server = serve(Arc::new(move |qname, qtype| {
        let v6 = |ip: Ipv6Addr| Record::from_rdata(name(qname), 30, RData::AAAA(AAAA(ip)));
        match (qname, qtype) {
            ("dual.test.", RecordType::A) if fails.load(Ordering::SeqCst) => {
                (ResponseCode::ServFail, vec![], vec![])
            }
            ("dual.test.", RecordType::A) => (
                ResponseCode::NoError,
                vec![a(qname, 2), a(qname, 3)],
                vec![],
            ),
            ("dual.test.", RecordType::AAAA) => (
                ResponseCode::NoError,
                vec![
                    v6(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped()),
                    v6(Ipv6Addr::LOCALHOST),
                ],
                vec![],
            ),
            _ => (ResponseCode::NXDomain, vec![], vec![]),
        }
    }))
    .await;
    let source = DnsSource::new(config(server))
        .unwrap()
        .with_service("dual", DnsTarget::host("dual.test.", 80))
        .unwrap();
    let all = ["127.0.0.2", "127.0.0.3", "::1"];
    assert_eq!(hosts(&source.resolve("dual").await.unwrap().unwrap()), all);
    failing.store(true, Ordering::SeqCst);
    assert_eq!(hosts(&source.resolve("dual").await.unwrap().unwrap()), all);
}

/// Addresses of no one host are dropped with the records (helper 195):
/// an answer of nothing else is no answer (the last list stays; before,
/// `Ok([])`), a priority group of nothing else hands over to the backup
/// group (before, `Ok([])`), and none takes a `max_records` slot (before,
/// 12 of 20 clients got an empty list at `max_records(2)`).
#[tokio::test]
async fn addresses_of_no_one_host_are_no_answer_and_take_no_slot() {
    use hickory_resolver::proto::rr::rdata::{A, SRV};
    use std::net::Ipv4Addr;
    let blocked = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&blocked);
    let server = serve(Arc::new(move |qname, qtype| {
        let v4 = |ip: [u8; 4]| Record::from_rdata(name(qname), 30, RData::A(A(Ipv4Addr::from(ip))));
        let ok = |records| (ResponseCode::NoError, records, vec![]);
        match (qname, qtype) {
            ("host.test.", RecordType::A) if flag.load(Ordering::SeqCst) => ok(vec![v4([0, 0, 0, 0])]),
            ("host.test.", RecordType::A) => ok(vec![v4([127, 0, 0, 2])]),
            ("many.test.", RecordType::A) => ok(vec![
                v4([0, 0, 0, 0]),
                v4([224, 0, 0, 1]),
                v4([255, 255, 255, 255]),
                v4([239, 0, 0, 9]),
                v4([127, 0, 0, 3]),
                v4([127, 0, 0, 4]),
            ]),
            ("_g._tcp.users.test.", RecordType::SRV) => ok(vec![
                Record::from_rdata(name(qname), 30, RData::SRV(SRV::new(0, 1, 8080, name("zero.test.")))),
                Record::from_rdata(name(qname), 30, RData::SRV(SRV::new(1, 1, 8080, name("good.test.")))),
            ]),
            ("zero.test.", RecordType::A) => ok(vec![v4([0, 0, 0, 0])]),
            ("good.test.", RecordType::A) => ok(vec![v4([127, 0, 0, 7])]),
            (_, RecordType::A | RecordType::AAAA) => ok(vec![]),
            _ => (ResponseCode::NXDomain, vec![], vec![]),
        }
    }))
    .await;
    let source = DnsSource::new(config(server).ip_family(IpFamily::V4))
        .unwrap()
        .with_service("host", DnsTarget::host("host.test.", 80))
        .unwrap()
        .with_service("group", DnsTarget::srv("_g._tcp.users.test."))
        .unwrap();
    assert_eq!(hosts(&source.resolve("host").await.unwrap().unwrap()), ["127.0.0.2"]);
    blocked.store(true, Ordering::SeqCst);
    let result = source.resolve("host").await.unwrap();
    assert!(matches!(result, Err(DnsError::NoRecords { .. })), "{result:?}");
    assert_eq!(hosts(&source.answer("host").unwrap().instances), ["127.0.0.2"]);
    assert_eq!(hosts(&source.resolve("group").await.unwrap().unwrap()), ["127.0.0.7"]);
    for seed in 0..20 {
        let cut = DnsSource::new(
            config(server)
                .ip_family(IpFamily::V4)
                .max_records(2)
                .subset_seed(seed),
        )
        .unwrap()
        .with_service("many", DnsTarget::host("many.test.", 80))
        .unwrap();
        assert_eq!(
            hosts(&cut.resolve("many").await.unwrap().unwrap()),
            ["127.0.0.3", "127.0.0.4"],
            "seed {seed}"
        );
    }
}
