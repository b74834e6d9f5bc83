//! Addresses kept through failed lookups, from the scripted server of
//! `served_tests` (helpers 192, 194 to 196): how long they stay, when an
//! answer keeping one expires, and answers of blocked addresses only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::SRV;
use hickory_resolver::proto::rr::{RData, Record, RecordType};

use super::served_tests::{a, config, hosts, name, serve};
use super::{DnsError, DnsSource, DnsTarget, IpFamily};

const SRV_NAME: &str = "_http._tcp.users.test.";

fn srv(owner: &str, port: u16, target: &str) -> Record {
    let data = SRV::new(0, 1, port, name(target));
    Record::from_rdata(name(owner), 30, RData::SRV(data))
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

/// An address kept through a failed lookup and then found again in an
/// SRV answer's additional section is resolved, not kept: the answer's
/// lifetime is its TTL's again. Before, its keeping time ran on, and past
/// the ceiling every fetch resolved again (lifetime 0: 50 fetches, 50
/// resolutions; helper 194).
#[tokio::test]
async fn an_address_found_again_in_the_additionals_is_no_longer_kept() {
    use std::time::Duration;
    let mode = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let now = Arc::clone(&mode);
    let server = serve(Arc::new(move |qname, qtype| {
        // 0: a.test's address in the additionals; 1: not, and a.test fails.
        let failing = now.load(Ordering::SeqCst) == 1;
        match (qname, qtype) {
            (SRV_NAME, RecordType::SRV) => (
                ResponseCode::NoError,
                vec![srv(SRV_NAME, 8080, "a.test."), srv(SRV_NAME, 8080, "b.test.")],
                if failing { vec![] } else { vec![a("a.test.", 2)] },
            ),
            ("a.test.", _) if failing => (ResponseCode::ServFail, vec![], vec![]),
            ("a.test.", RecordType::A) => (ResponseCode::NoError, vec![a("a.test.", 2)], vec![]),
            ("b.test.", RecordType::A) => (ResponseCode::NoError, vec![a("b.test.", 3)], vec![]),
            _ => (ResponseCode::NoError, vec![], vec![]),
        }
    }))
    .await;
    let ceiling = Duration::from_secs(2);
    let source = DnsSource::new(
        config(server)
            .ip_family(IpFamily::V4)
            .ttl_floor(Duration::from_secs(1))
            .ttl_ceiling(ceiling),
    )
    .unwrap()
    .with_service("users", DnsTarget::srv(SRV_NAME))
    .unwrap();
    let both = ["127.0.0.2", "127.0.0.3"];
    assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), both);
    mode.store(1, Ordering::SeqCst);
    assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), both, "kept");
    mode.store(0, Ordering::SeqCst);
    assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), both);
    tokio::time::sleep(ceiling + Duration::from_millis(100)).await;
    assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), both);
    assert_eq!(source.answer("users").unwrap().valid_for, ceiling);
    // Failing again now: kept, as resolved an instant ago.
    mode.store(1, Ordering::SeqCst);
    assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), both, "kept again");
}

/// An address kept through failed lookups of one family that the other
/// family's answer lists again as IPv4-mapped is resolved, not kept: the
/// answer's lifetime stays its TTL's. Before, the mapped form never
/// cleared the address's keeping time, and past the ceiling every fetch
/// resolved again (helper 195: 20 of 20).
#[tokio::test]
async fn a_mapped_address_answered_again_is_no_longer_kept() {
    use hickory_resolver::proto::rr::rdata::AAAA;
    use std::net::Ipv4Addr;
    use std::time::Duration;
    let failing = Arc::new(AtomicBool::new(false));
    let fails = Arc::clone(&failing);
    let server = serve(Arc::new(move |qname, qtype| match (qname, qtype) {
        ("dual.test.", RecordType::A) if fails.load(Ordering::SeqCst) => {
            (ResponseCode::ServFail, vec![], vec![])
        }
        ("dual.test.", RecordType::A) => (ResponseCode::NoError, vec![a(qname, 2)], vec![]),
        ("dual.test.", RecordType::AAAA) => (
            ResponseCode::NoError,
            vec![Record::from_rdata(
                name(qname),
                30,
                RData::AAAA(AAAA(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped())),
            )],
            vec![],
        ),
        _ => (ResponseCode::NXDomain, vec![], vec![]),
    }))
    .await;
    let ceiling = Duration::from_secs(2);
    let source = DnsSource::new(
        config(server)
            .ttl_floor(Duration::from_secs(1))
            .ttl_ceiling(ceiling),
    )
    .unwrap()
    .with_service("dual", DnsTarget::host("dual.test.", 80))
    .unwrap();
    assert_eq!(hosts(&source.resolve("dual").await.unwrap().unwrap()), ["127.0.0.2"]);
    failing.store(true, Ordering::SeqCst);
    assert_eq!(hosts(&source.resolve("dual").await.unwrap().unwrap()), ["127.0.0.2"]);
    tokio::time::sleep(ceiling + Duration::from_millis(100)).await;
    assert_eq!(hosts(&source.resolve("dual").await.unwrap().unwrap()), ["127.0.0.2"]);
    assert_eq!(source.answer("dual").unwrap().valid_for, ceiling);
}

/// Helper 196 against b959f6b: an SRV target answering only addresses of
/// no one host is a failed lookup, not a target gone (its last addresses
/// are kept; an SRV name whose every target is blocked keeps its list,
/// before `Ok([])`), and so is a family answering only `::` beside a
/// working one; and a failing target listed in two priority groups is
/// dropped at the TTL ceiling (the first version's removal of an expired
/// address let the second record keep it again, for good).
#[tokio::test]
async fn blocked_targets_are_failures_and_a_duplicate_target_expires() {
    use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;
    let down = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&down);
    let server = serve(Arc::new(move |qname, qtype| {
        let down = flag.load(Ordering::SeqCst);
        let v4 = |ip: [u8; 4]| Record::from_rdata(name(qname), 30, RData::A(A(Ipv4Addr::from(ip))));
        let v6 = |ip: Ipv6Addr| Record::from_rdata(name(qname), 30, RData::AAAA(AAAA(ip)));
        let srv = |priority, target: &str| {
            Record::from_rdata(name(qname), 30, RData::SRV(SRV::new(priority, 1, 8080, name(target))))
        };
        let ok = |records| (ResponseCode::NoError, records, vec![]);
        match (qname, qtype) {
            ("_one._tcp.test.", RecordType::SRV) => ok(vec![srv(0, "a.test.")]),
            ("_prio._tcp.test.", RecordType::SRV) => {
                ok(vec![srv(0, "d.test."), srv(1, "d.test."), srv(1, "b.test.")])
            }
            ("a.test.", RecordType::A) if down => ok(vec![v4([0, 0, 0, 0])]),
            ("a.test.", RecordType::A) => ok(vec![v4([127, 0, 0, 2])]),
            ("d.test.", RecordType::A) if down => (ResponseCode::ServFail, vec![], vec![]),
            ("d.test.", RecordType::A) => ok(vec![v4([127, 0, 0, 4])]),
            ("b.test.", RecordType::A) => ok(vec![v4([127, 0, 0, 3])]),
            ("dual.test.", RecordType::A) => ok(vec![v4([127, 0, 0, 5])]),
            ("dual.test.", RecordType::AAAA) if down => ok(vec![v6(Ipv6Addr::UNSPECIFIED)]),
            ("dual.test.", RecordType::AAAA) => ok(vec![v6(Ipv6Addr::LOCALHOST)]),
            (_, RecordType::A | RecordType::AAAA) => ok(vec![]),
            _ => (ResponseCode::NXDomain, vec![], vec![]),
        }
    }))
    .await;
    let ceiling = Duration::from_millis(300);
    let v4 = DnsSource::new(config(server).ip_family(IpFamily::V4).ttl_ceiling(ceiling))
        .unwrap()
        .with_service("one", DnsTarget::srv("_one._tcp.test."))
        .unwrap()
        .with_service("prio", DnsTarget::srv("_prio._tcp.test."))
        .unwrap();
    let both = DnsSource::new(config(server))
        .unwrap()
        .with_service("dual", DnsTarget::host("dual.test.", 80))
        .unwrap();
    assert_eq!(hosts(&v4.resolve("one").await.unwrap().unwrap()), ["127.0.0.2"]);
    assert_eq!(hosts(&v4.resolve("prio").await.unwrap().unwrap()), ["127.0.0.4"]);
    assert_eq!(hosts(&both.resolve("dual").await.unwrap().unwrap()), ["127.0.0.5", "::1"]);
    down.store(true, Ordering::SeqCst);
    let downed = tokio::time::Instant::now();
    assert_eq!(hosts(&v4.resolve("one").await.unwrap().unwrap()), ["127.0.0.2"], "kept");
    assert_eq!(hosts(&both.resolve("dual").await.unwrap().unwrap()), ["127.0.0.5", "::1"], "kept");
    // Resolved every 100 ms, as a kept answer is (TTL 0): the failing
    // target's address expires at the ceiling whichever record asks.
    let mut last = Vec::new();
    while downed.elapsed() < ceiling * 3 {
        last = hosts(&v4.resolve("prio").await.unwrap().unwrap())
            .into_iter()
            .map(str::to_owned)
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, ["127.0.0.3"], "three ceilings after the target failed");
    let result = v4.resolve("one").await.unwrap();
    assert!(matches!(result, Err(DnsError::NoAddresses { .. })), "{result:?}");
    assert_eq!(hosts(&v4.answer("one").unwrap().instances), ["127.0.0.2"], "the last list");
}
