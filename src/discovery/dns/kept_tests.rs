//! Addresses kept through failed lookups, on the scripted server of
//! `served_tests`: how long each is kept, and what the source remembers
//! about them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::SRV;
use hickory_resolver::proto::rr::{RData, Record, RecordType};

use super::served_tests::{a, aaaa, config, hosts, name, serve};
use super::{DnsSource, DnsTarget};

/// An address is kept until the TTL ceiling after it was last *resolved*,
/// whichever way its lookups fail. An IPv6 address of an SRV target kept
/// through a failed lookup of the whole target (SERVFAIL on A and AAAA, at
/// 0.75 of the ceiling) was kept again when the target answered its A
/// records but not its AAAA ones (at 1.25 of the ceiling): that family's
/// keep counted from the answer that had kept it, not from when it was
/// resolved, so an address gone from DNS could stay for up to twice the
/// ceiling. Before: `["127.0.0.2", "::1"]` at 1.25 ceilings; now
/// `["127.0.0.2"]`. Virtual time (paused, advanced, resumed) moves the
/// clock; the scripted server answers at once.
#[tokio::test]
async fn an_address_is_kept_until_the_ceiling_after_it_was_resolved() {
    // 0: both families answer; 1: every lookup of the target fails;
    // 2: A answers, AAAA fails.
    let mode = Arc::new(AtomicU8::new(0));
    let m = Arc::clone(&mode);
    let server = serve(Arc::new(move |qname, qtype| {
        let srv = SRV::new(0, 1, 8080, name("dual.test."));
        match (qname, qtype, m.load(Ordering::SeqCst)) {
            ("_http._tcp.users.test.", RecordType::SRV, _) => (
                ResponseCode::NoError,
                vec![Record::from_rdata(name(qname), 30, RData::SRV(srv))],
                vec![],
            ),
            ("dual.test.", _, 1) | ("dual.test.", RecordType::AAAA, 2) => {
                (ResponseCode::ServFail, vec![], vec![])
            }
            ("dual.test.", RecordType::A, _) => (ResponseCode::NoError, vec![a(qname, 2)], vec![]),
            ("dual.test.", RecordType::AAAA, _) => {
                (ResponseCode::NoError, vec![aaaa(qname)], vec![])
            }
            _ => (ResponseCode::NXDomain, vec![], vec![]),
        }
    }))
    .await;
    let ceiling = Duration::from_secs(40);
    let source = DnsSource::new(config(server).ttl_ceiling(ceiling))
        .unwrap()
        .with_service("users", DnsTarget::srv("_http._tcp.users.test."))
        .unwrap();
    let later = |by: Duration| async move {
        tokio::time::pause();
        tokio::time::advance(by).await;
        tokio::time::resume();
    };
    let both = ["127.0.0.2", "::1"];
    assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), both);
    mode.store(1, Ordering::SeqCst);
    later(ceiling * 3 / 4).await;
    assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), both);
    mode.store(2, Ordering::SeqCst);
    later(ceiling / 2).await;
    let after = source.resolve("users").await.unwrap().unwrap();
    println!("1.25 ceilings after ::1 was resolved: {:?}", hosts(&after));
    assert_eq!(hosts(&after), ["127.0.0.2"]);
}

/// What the source remembers of kept addresses stays bounded by its last
/// answer. An SRV record moving through 50 target names (pods replaced),
/// each failing one lookup (kept) before the next took its place, left one
/// entry per name for the life of the source: 50 before, 1 now (the kept
/// address of the current target).
#[tokio::test]
async fn kept_addresses_of_gone_targets_are_forgotten() {
    // The SRV record's target is `t{n}.test.`; bit 7 set: its lookups fail.
    let state = Arc::new(AtomicU8::new(1));
    let s = Arc::clone(&state);
    let server = serve(Arc::new(move |qname, qtype| {
        let now = s.load(Ordering::SeqCst);
        let (n, failing) = (now & 0x7f, now & 0x80 != 0);
        let target = format!("t{n}.test.");
        if qtype == RecordType::SRV && qname == "_http._tcp.users.test." {
            let srv = SRV::new(0, 1, 8080, name(&target));
            let record = Record::from_rdata(name(qname), 30, RData::SRV(srv));
            return (ResponseCode::NoError, vec![record], vec![]);
        }
        match (qname == target, failing, qtype) {
            (true, true, _) => (ResponseCode::ServFail, vec![], vec![]),
            (true, false, RecordType::A) => (ResponseCode::NoError, vec![a(qname, n)], vec![]),
            _ => (ResponseCode::NoError, vec![], vec![]),
        }
    }))
    .await;
    let source = DnsSource::new(config(server).ip_family(super::IpFamily::V4))
        .unwrap()
        .with_service("users", DnsTarget::srv("_http._tcp.users.test."))
        .unwrap();
    for n in 1..=50u8 {
        state.store(n, Ordering::SeqCst);
        let ip = format!("127.0.0.{n}");
        assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), [&ip]);
        state.store(n | 0x80, Ordering::SeqCst);
        assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), [&ip]);
    }
    let remembered = source.lock_cache()["users"].kept_since.len();
    println!("kept entries after 50 targets: {remembered}");
    assert_eq!(remembered, 1);
}

/// An answer that the name is gone from DNS is an empty list; a failure is
/// an error (the refresh then keeps the last list). Gone: NXDOMAIN, with or
/// without the zone's SOA, and NOERROR without records (NODATA). Failed:
/// SERVFAIL, and an empty NOERROR whose authority section holds only NS
/// records (a referral, not an answer). Before, every "no records" answer
/// was an error, so a service whose name left DNS kept its last addresses
/// for good (none of the 4 gone answers emptied the list).
#[tokio::test]
async fn a_name_gone_from_dns_is_an_empty_list_and_a_failure_is_not() {
    use hickory_resolver::proto::rr::rdata::{NS, SOA};
    // 0: answers; 1: SERVFAIL; 2: referral; 3: NXDOMAIN with SOA (negative
    // TTL 7 s); 4: NODATA with SOA; 5: NXDOMAIN alone; 6: NODATA alone.
    let mode = Arc::new(AtomicU8::new(0));
    let m = Arc::clone(&mode);
    let server = serve(Arc::new(move |qname, qtype| {
        let soa = SOA::new(name("ns.test."), name("admin.test."), 1, 60, 60, 600, 7);
        let soa = Record::from_rdata(name("test."), 30, RData::SOA(soa));
        let ns = Record::from_rdata(name("test."), 30, RData::NS(NS(name("ns.other."))));
        let answer = match qtype {
            RecordType::SRV => {
                let srv = SRV::new(0, 1, 8080, name("users.test."));
                Record::from_rdata(name(qname), 30, RData::SRV(srv))
            }
            RecordType::AAAA => super::served_tests::aaaa(qname),
            _ => a(qname, 2),
        };
        let none = vec![];
        match (qname, m.load(Ordering::SeqCst)) {
            (_, 0) => (ResponseCode::NoError, vec![answer], none),
            (_, 1) => (ResponseCode::ServFail, none.clone(), none),
            (_, 2) => (ResponseCode::NoError, none, vec![ns]),
            (_, 3) => (ResponseCode::NXDomain, none, vec![soa]),
            (_, 4) => (ResponseCode::NoError, none, vec![soa]),
            (_, 5) => (ResponseCode::NXDomain, none.clone(), none),
            _ => (ResponseCode::NoError, none.clone(), none),
        }
    }))
    .await;
    let source = with_users_and_srv(config(server).ip_family(super::IpFamily::V4), DnsTarget::host("users.test.", 8080), DnsTarget::srv("_http._tcp.users.test."));
    for service in ["users", "srv"] {
        let resolve = |m: u8| {
            mode.store(m, Ordering::SeqCst);
            source.resolve(service)
        };
        assert_eq!(hosts(&resolve(0).await.unwrap().unwrap()), ["127.0.0.2"]);
        for failed in [1, 2] {
            let error = resolve(failed).await.unwrap().unwrap_err();
            let typed = match error {
                super::DnsError::Resolve { .. } => failed == 1,
                super::DnsError::NoRecords { nxdomain, .. } => failed == 2 && !nxdomain,
                _ => false,
            };
            assert!(typed, "mode {failed}: {error:?}");
            assert_eq!(source.answer(service).unwrap().instances.len(), 1);
        }
        for (gone, ttl) in [(3, 7), (4, 7), (5, 0), (6, 0)] {
            assert_eq!(hosts(&resolve(0).await.unwrap().unwrap()), ["127.0.0.2"]);
            let list = resolve(gone).await.unwrap().unwrap();
            assert!(list.is_empty(), "mode {gone}: {list:?}");
            let answer = source.answer(service).unwrap();
            assert_eq!(answer.instances.len(), 0, "mode {gone}");
            assert_eq!(answer.ttl, Duration::from_secs(ttl), "mode {gone}");
        }
    }

}

/// An SRV target's family, and one family of two, answered with a referral
/// keep their addresses; answered NODATA they are gone. The SRV record and
/// the A records answer throughout. Before, the referral dropped the
/// family (`["127.0.0.2"]` at mode 2).
#[tokio::test]
async fn a_family_answered_with_a_referral_keeps_its_addresses() {
    use hickory_resolver::proto::rr::rdata::NS;
    let family = Arc::new(AtomicU8::new(0));
    let f = Arc::clone(&family);
    let split = serve(Arc::new(move |qname, qtype| {
        let ns = Record::from_rdata(name("test."), 30, RData::NS(NS(name("ns.other."))));
        match (qtype, f.load(Ordering::SeqCst)) {
            (RecordType::SRV, _) => {
                let srv = SRV::new(0, 1, 8080, name("users.test."));
                let record = Record::from_rdata(name(qname), 30, RData::SRV(srv));
                (ResponseCode::NoError, vec![record], vec![])
            }
            (RecordType::A, _) => (ResponseCode::NoError, vec![a(qname, 2)], vec![]),
            (_, 0) => (ResponseCode::NoError, vec![super::served_tests::aaaa(qname)], vec![]),
            (_, 2) => (ResponseCode::NoError, vec![], vec![ns]),
            _ => (ResponseCode::NoError, vec![], vec![]),
        }
    }))
    .await;
    let both = with_users_and_srv(config(split), DnsTarget::host("users.test.", 8080), DnsTarget::srv("_http._tcp.users.test."));
    for service in ["srv", "users"] {
        for (m, want) in [(0, &["127.0.0.2", "::1"][..]), (2, &["127.0.0.2", "::1"]), (6, &["127.0.0.2"])] {
            family.store(m, Ordering::SeqCst);
            let list = both.resolve(service).await.unwrap().unwrap();
            assert_eq!(hosts(&list), want, "{service}, mode {m}");
        }
    }
}

/// An SRV record whose every target is gone from DNS leaves the service no
/// address: an empty list (before, `NoAddresses`, so the refresh kept the
/// gone targets' addresses for good). A target whose lookup fails keeps
/// its last addresses, and one that fails with none to keep is still an
/// error, so the last list stays.
#[tokio::test]
async fn an_srv_answer_whose_targets_are_all_gone_is_an_empty_list() {
    // 0: both targets answer; 1: both gone (NXDOMAIN); 2: a gone, b
    // SERVFAIL.
    let mode = Arc::new(AtomicU8::new(0));
    let m = Arc::clone(&mode);
    let server = serve(Arc::new(move |qname, qtype| {
        let record = |target: &str| {
            let srv = SRV::new(0, 1, 8080, name(target));
            Record::from_rdata(name("_http._tcp.users.test."), 30, RData::SRV(srv))
        };
        match (qname, qtype, m.load(Ordering::SeqCst)) {
            ("_http._tcp.users.test.", RecordType::SRV, _) => {
                (ResponseCode::NoError, vec![record("a.test."), record("b.test.")], vec![])
            }
            ("b.test.", _, 2) => (ResponseCode::ServFail, vec![], vec![]),
            ("a.test.", RecordType::A, 0) => (ResponseCode::NoError, vec![a(qname, 2)], vec![]),
            ("b.test.", RecordType::A, 0) => (ResponseCode::NoError, vec![a(qname, 3)], vec![]),
            (_, _, 0) => (ResponseCode::NoError, vec![], vec![]),
            _ => (ResponseCode::NXDomain, vec![], vec![]),
        }
    }))
    .await;
    let source = || {
        DnsSource::new(config(server).ip_family(super::IpFamily::V4))
            .unwrap()
            .with_service("users", DnsTarget::srv("_http._tcp.users.test."))
            .unwrap()
    };
    let users = source();
    let resolve = |m: u8| {
        mode.store(m, Ordering::SeqCst);
        users.resolve("users")
    };
    assert_eq!(hosts(&resolve(0).await.unwrap().unwrap()), ["127.0.0.2", "127.0.0.3"]);
    assert_eq!(hosts(&resolve(2).await.unwrap().unwrap()), ["127.0.0.3"]);
    assert!(resolve(1).await.unwrap().unwrap().is_empty());
    assert_eq!(users.answer("users").unwrap().ttl, Duration::from_secs(30));
    // b fails with no last address to keep: an error, not an empty list.
    let fresh = source();
    mode.store(2, Ordering::SeqCst);
    let error = fresh.resolve("users").await.unwrap().unwrap_err();
    assert!(matches!(error, super::DnsError::NoAddresses { records: 2, .. }), "{error:?}");
}

/// A search name that fails does not let a later one's NXDOMAIN empty the
/// list. hickory tries the search names in turn and returns the last
/// one's result, so with `search ns.svc.test svc.test` and ndots 5, a
/// SERVFAIL on `users.ns.svc.test.` (the service's real name) followed by
/// NXDOMAIN on `users.svc.test.` and `users.` read as "gone from DNS".
/// Before: an empty list (A, SRV and both families); now the failure, and
/// the last list stays (`["127.0.0.2"]`).
#[tokio::test]
async fn a_failed_search_name_before_an_nxdomain_one_is_a_failure() {
    // 0: the real name answers; 1: it fails (SERVFAIL); 2: it is gone.
    let mode = Arc::new(AtomicU8::new(0));
    let m = Arc::clone(&mode);
    let server = serve(Arc::new(move |qname, qtype| {
        let real = qname.starts_with("users.ns.svc.test.") || qname.ends_with(".ns.svc.test.");
        match (real, qtype, m.load(Ordering::SeqCst)) {
            (false, _, _) | (true, _, 2) => (ResponseCode::NXDomain, vec![], vec![]),
            (true, _, 1) => (ResponseCode::ServFail, vec![], vec![]),
            (true, RecordType::SRV, _) => {
                let srv = SRV::new(0, 1, 8080, name("users.ns.svc.test."));
                (ResponseCode::NoError, vec![Record::from_rdata(name(qname), 30, RData::SRV(srv))], vec![])
            }
            (true, RecordType::A, _) => (ResponseCode::NoError, vec![a(qname, 2)], vec![]),
            (true, _, _) => (ResponseCode::NoError, vec![], vec![]),
        }
    }))
    .await;
    for family in [super::IpFamily::V4, super::IpFamily::Both] {
        let source = with_users_and_srv(config(server).ip_family(family).search(["ns.svc.test", "svc.test"]).ndots(5), DnsTarget::host("users", 8080), DnsTarget::srv("_http._tcp.users"));
        for service in ["users", "srv"] {
            let resolve = |m: u8| {
                mode.store(m, Ordering::SeqCst);
                source.resolve(service)
            };
            assert_eq!(hosts(&resolve(0).await.unwrap().unwrap()), ["127.0.0.2"]);
            let failed = resolve(1).await.unwrap();
            assert!(failed.is_err(), "{family:?} {service}: {failed:?}");
            assert_eq!(hosts(&source.answer(service).unwrap().instances), ["127.0.0.2"]);
            assert!(resolve(2).await.unwrap().unwrap().is_empty(), "{family:?} {service}");
        }
    }
}

/// An IPv6-only SRV target keeps its addresses through a failed AAAA
/// lookup with both families. hickory asks A and AAAA at once and, both
/// failing, returns the A error: NODATA (the target has no IPv4 address),
/// "gone from DNS", so the target was skipped without its AAAA failure
/// being looked at, and an SRV answer of IPv6-only targets became an
/// empty list on one AAAA SERVFAIL. A host target asks the failed family
/// alone and keeps it. Before: `[]` for the SRV service; now `["::1"]`
/// (as the host service).
#[tokio::test]
async fn an_ipv6_only_srv_target_keeps_its_addresses_through_a_failed_aaaa() {
    // 0: AAAA answers; 1: AAAA SERVFAIL; 2: AAAA NODATA. A: NODATA always.
    let mode = Arc::new(AtomicU8::new(0));
    let m = Arc::clone(&mode);
    let server = serve(Arc::new(move |qname, qtype| match (qtype, m.load(Ordering::SeqCst)) {
        (RecordType::SRV, _) => {
            let srv = SRV::new(0, 1, 8080, name("users.test."));
            (ResponseCode::NoError, vec![Record::from_rdata(name(qname), 30, RData::SRV(srv))], vec![])
        }
        (RecordType::AAAA, 0) => (ResponseCode::NoError, vec![aaaa(qname)], vec![]),
        (RecordType::AAAA, 1) => (ResponseCode::ServFail, vec![], vec![]),
        _ => (ResponseCode::NoError, vec![], vec![]),
    }))
    .await;
    let source = with_users_and_srv(config(server), DnsTarget::host("users.test.", 8080), DnsTarget::srv("_http._tcp.users.test."));
    for service in ["srv", "users"] {
        let resolve = |m: u8| {
            mode.store(m, Ordering::SeqCst);
            source.resolve(service)
        };
        assert_eq!(hosts(&resolve(0).await.unwrap().unwrap()), ["::1"], "{service}");
        assert_eq!(hosts(&resolve(1).await.unwrap().unwrap()), ["::1"], "{service}");
        assert!(resolve(2).await.unwrap().unwrap().is_empty(), "{service}");
    }
}

/// A source with a host service `users` and an SRV service `srv`.
fn with_users_and_srv(config: super::DnsConfig, users: DnsTarget, srv: DnsTarget) -> DnsSource {
    DnsSource::new(config)
        .unwrap()
        .with_service("users", users)
        .unwrap()
        .with_service("srv", srv)
        .unwrap()
}
