//! The source against a scripted DNS server on 127.0.0.1 (answers built
//! with hickory's own message types), for answers dnsmasq does not give:
//! chosen additional sections, per-name failures.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::proto::op::{Message, Query, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

use super::{DnsConfig, DnsSource, DnsTarget, IpFamily};

/// Rcode, answers and additionals for one question.
type Answer = dyn Fn(&str, RecordType) -> (ResponseCode, Vec<Record>, Vec<Record>) + Send + Sync;

/// Serves `answer` over UDP until the runtime ends.
pub(super) async fn serve(answer: Arc<Answer>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Some((query, q, name)) = question(&buf[..n]) else {
                continue;
            };
            let (code, answers, additionals) = answer(&name, q.query_type());
            let response = reply(&query, q, code, answers, additionals);
            let _ = socket.send_to(&response, from).await;
        }
    });
    addr
}

/// A query's message, its first question and that question's name in
/// lower case; `None` for bytes that are no query with a question.
fn question(bytes: &[u8]) -> Option<(Message, Query, String)> {
    let query = Message::from_vec(bytes).ok()?;
    let q = query.queries.first().cloned()?;
    let name = q.name().to_ascii().to_ascii_lowercase();
    Some((query, q, name))
}

/// The bytes of an authoritative answer to `query`'s question `q`.
fn reply(
    query: &Message,
    q: Query,
    code: ResponseCode,
    answers: Vec<Record>,
    additionals: Vec<Record>,
) -> Vec<u8> {
    let (id, op) = (query.metadata.id, query.metadata.op_code);
    let mut response = Message::error_msg(id, op, code);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.add_query(q);
    response.add_answers(answers);
    // SOA and NS records given as additionals go to the authority section.
    let (authorities, additionals): (Vec<Record>, Vec<Record>) = (additionals.into_iter())
        .partition(|r| matches!(r.record_type(), RecordType::SOA | RecordType::NS));
    response.add_authorities(authorities);
    response.add_additionals(additionals);
    response.to_vec().unwrap()
}

pub(super) fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

pub(super) fn a(owner: &str, last: u8) -> Record {
    let ip = Ipv4Addr::new(127, 0, 0, last);
    Record::from_rdata(name(owner), 30, RData::A(A(ip)))
}

pub(super) fn aaaa(owner: &str) -> Record {
    Record::from_rdata(name(owner), 30, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)))
}

fn srv(target: &str) -> Record {
    let data = SRV::new(0, 1, 8080, name(target));
    Record::from_rdata(name("_http._tcp.users.test."), 30, RData::SRV(data))
}

/// Generous timeouts: every answer is immediate, and none of these tests
/// waits for one to fire (a loaded machine must not turn a slow answer
/// into a failed lookup).
pub(super) fn config(server: SocketAddr) -> DnsConfig {
    DnsConfig::new([server])
        .attempts(1)
        .timeout(std::time::Duration::from_secs(20))
        .resolve_timeout(std::time::Duration::from_secs(60))
}

pub(super) fn hosts(list: &[crate::Instance]) -> Vec<&str> {
    list.iter().map(crate::Instance::host).collect()
}

/// An IPv4-only source took the AAAA records a server adds to an SRV
/// answer's additional section: an IPv6 instance the cluster cannot reach
/// (before: `["127.0.0.2", "::1"]`).
#[tokio::test]
async fn srv_additionals_follow_the_ip_family() {
    let server = serve(Arc::new(|qname, qtype| match (qname, qtype) {
        ("_http._tcp.users.test.", RecordType::SRV) => (
            ResponseCode::NoError,
            vec![srv("a.test.")],
            vec![a("a.test.", 2), aaaa("a.test.")],
        ),
        ("a.test.", RecordType::A) => (ResponseCode::NoError, vec![a("a.test.", 2)], vec![]),
        ("a.test.", RecordType::AAAA) => (ResponseCode::NoError, vec![aaaa("a.test.")], vec![]),
        _ => (ResponseCode::NXDomain, vec![], vec![]),
    }))
    .await;
    let target = DnsTarget::srv("_http._tcp.users.test.");
    let v4 = DnsSource::new(config(server).ip_family(IpFamily::V4))
        .unwrap()
        .with_service("users", target.clone())
        .unwrap();
    assert_eq!(hosts(&v4.resolve("users").await.unwrap().unwrap()), ["127.0.0.2"]);
    let v6 = DnsSource::new(config(server).ip_family(IpFamily::V6))
        .unwrap()
        .with_service("users", target.clone())
        .unwrap();
    assert_eq!(hosts(&v6.resolve("users").await.unwrap().unwrap()), ["::1"]);
    let both = DnsSource::new(config(server))
        .unwrap()
        .with_service("users", target)
        .unwrap();
    assert_eq!(
        hosts(&both.resolve("users").await.unwrap().unwrap()),
        ["127.0.0.2", "::1"]
    );
}

/// A failed lookup of an SRV target (SERVFAIL) is not a target gone from
/// DNS: the target keeps the addresses of the last answer. Before, it was
/// skipped: one failure moved the whole service onto the other target
/// (`["127.0.0.2"]`), and both failing handed it to the backup priority
/// (`["127.0.0.4"]`) until the next resolution.
#[tokio::test]
async fn a_failed_srv_target_lookup_keeps_its_last_addresses() {
    use std::sync::atomic::{AtomicU8, Ordering};
    // Bit 0: a.test fails; bit 1: b.test fails; bit 2: b.test is gone.
    let failing = Arc::new(AtomicU8::new(0));
    let fails = Arc::clone(&failing);
    let server = serve(Arc::new(move |qname, qtype| {
        let down = fails.load(Ordering::SeqCst);
        let record = |prio, target: &str| {
            let data = SRV::new(prio, 1, 8080, name(target));
            Record::from_rdata(name("_http._tcp.users.test."), 30, RData::SRV(data))
        };
        match (qname, qtype) {
            ("_http._tcp.users.test.", RecordType::SRV) => (
                ResponseCode::NoError,
                vec![record(0, "a.test."), record(0, "b.test."), record(1, "c.test.")],
                vec![],
            ),
            ("a.test.", _) if down & 1 != 0 => (ResponseCode::ServFail, vec![], vec![]),
            ("b.test.", _) if down & 2 != 0 => (ResponseCode::ServFail, vec![], vec![]),
            ("b.test.", _) if down & 4 != 0 => (ResponseCode::NXDomain, vec![], vec![]),
            ("a.test.", RecordType::A) => (ResponseCode::NoError, vec![a(qname, 2)], vec![]),
            ("b.test.", RecordType::A) => (ResponseCode::NoError, vec![a(qname, 3)], vec![]),
            ("c.test.", RecordType::A) => (ResponseCode::NoError, vec![a(qname, 4)], vec![]),
            _ => (ResponseCode::NXDomain, vec![], vec![]),
        }
    }))
    .await;
    let source = DnsSource::new(config(server).ip_family(IpFamily::V4))
        .unwrap()
        .with_service("users", DnsTarget::srv("_http._tcp.users.test."))
        .unwrap();
    let both = ["127.0.0.2", "127.0.0.3"];
    assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), both);
    failing.store(2, Ordering::SeqCst);
    assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), both);
    failing.store(3, Ordering::SeqCst);
    assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), both);
    // Kept addresses count as TTL 0: asked again at the floor.
    assert_eq!(source.answer("users").unwrap().ttl, std::time::Duration::ZERO);
    // Recovered, then gone from DNS (NXDOMAIN): dropped.
    failing.store(0, Ordering::SeqCst);
    assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), both);
    failing.store(4, Ordering::SeqCst);
    assert_eq!(
        hosts(&source.resolve("users").await.unwrap().unwrap()),
        ["127.0.0.2"]
    );
}

/// With both families, hickory answers with the A records alone when the
/// AAAA lookup fails: every IPv6 instance left on one SERVFAIL (before:
/// `["127.0.0.2"]`). The family's last addresses are kept now; an AAAA
/// answer with no records still removes them.
#[tokio::test]
async fn a_failed_family_lookup_keeps_its_last_addresses() {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: both answer; 1: AAAA fails; 2: AAAA has no records.
    let mode = Arc::new(AtomicU8::new(0));
    let m = Arc::clone(&mode);
    let server = serve(Arc::new(move |qname, qtype| {
        match (qname, qtype, m.load(Ordering::SeqCst)) {
            ("dual.test.", RecordType::A, _) => {
                (ResponseCode::NoError, vec![a(qname, 2)], vec![])
            }
            ("dual.test.", RecordType::AAAA, 0) => {
                (ResponseCode::NoError, vec![aaaa(qname)], vec![])
            }
            ("dual.test.", RecordType::AAAA, 1) => (ResponseCode::ServFail, vec![], vec![]),
            ("dual.test.", _, _) => (ResponseCode::NoError, vec![], vec![]),
            ("_http._tcp.users.test.", RecordType::SRV, _) => {
                (ResponseCode::NoError, vec![srv("dual.test.")], vec![])
            }
            _ => (ResponseCode::NXDomain, vec![], vec![]),
        }
    }))
    .await;
    let source = DnsSource::new(config(server))
        .unwrap()
        .with_service("dual", DnsTarget::host("dual.test.", 8080))
        .unwrap();
    let both = ["127.0.0.2", "::1"];
    assert_eq!(hosts(&source.resolve("dual").await.unwrap().unwrap()), both);
    mode.store(1, Ordering::SeqCst);
    assert_eq!(hosts(&source.resolve("dual").await.unwrap().unwrap()), both);
    assert_eq!(source.answer("dual").unwrap().ttl, std::time::Duration::ZERO);
    mode.store(2, Ordering::SeqCst);
    assert_eq!(
        hosts(&source.resolve("dual").await.unwrap().unwrap()),
        ["127.0.0.2"]
    );
    // The same for an SRV target (before: `["127.0.0.2"]`).
    let srv_source = DnsSource::new(config(server))
        .unwrap()
        .with_service("users", DnsTarget::srv("_http._tcp.users.test."))
        .unwrap();
    mode.store(0, Ordering::SeqCst);
    let srv = || srv_source.resolve("users");
    assert_eq!(hosts(&srv().await.unwrap().unwrap()), both);
    mode.store(1, Ordering::SeqCst);
    assert_eq!(hosts(&srv().await.unwrap().unwrap()), both);
    mode.store(2, Ordering::SeqCst);
    assert_eq!(hosts(&srv().await.unwrap().unwrap()), ["127.0.0.2"]);
}

/// A priority group longer than the lookups allowed (`2 · max_records`)
/// is looked up in each client's own order among equal weights: clients
/// seeded differently list different targets. Before, every client looked
/// up the first 2 targets of the answer (`t0`, `t1`) and listed them.
#[tokio::test]
async fn a_long_srv_group_is_looked_up_in_each_clients_order() {
    let server = serve(Arc::new(|qname, qtype| {
        if (qname, qtype) == ("_http._tcp.users.test.", RecordType::SRV) {
            let records = (0..20).map(|i| srv(&format!("t{i}.test."))).collect();
            return (ResponseCode::NoError, records, vec![]);
        }
        match qname.strip_prefix('t').and_then(|r| r.strip_suffix(".test.")) {
            Some(i) if qtype == RecordType::A => {
                let last = 10 + i.parse::<u8>().unwrap();
                (ResponseCode::NoError, vec![a(qname, last)], vec![])
            }
            _ => (ResponseCode::NoError, vec![], vec![]),
        }
    }))
    .await;
    let mut listed = std::collections::BTreeSet::new();
    for seed in 0..5 {
        let source = DnsSource::new(config(server).max_records(1).subset_seed(seed))
            .unwrap()
            .with_service("users", DnsTarget::srv("_http._tcp.users.test."))
            .unwrap();
        let list = source.resolve("users").await.unwrap().unwrap();
        assert_eq!(list.len(), 1);
        listed.insert(list[0].host().to_owned());
    }
    let want = ["127.0.0.10", "127.0.0.11", "127.0.0.18", "127.0.0.21", "127.0.0.28"];
    assert_eq!(listed, want.map(str::to_owned).into());
}

/// What [`serve_moving_srv`] serves: the SRV record names
/// `t{generation}.test.`, at 127.0.0.{generation}; the first lookup of
/// `t{held}.test.` waits for `release` (a message on `held_tx` says it
/// does), and those of `t{fail}.test.` are SERVFAIL.
#[derive(Clone)]
struct Moving {
    generation: Arc<std::sync::atomic::AtomicU8>,
    held: Arc<std::sync::atomic::AtomicU8>,
    fail: Arc<std::sync::atomic::AtomicU8>,
    release: Arc<tokio::sync::Notify>,
    held_tx: tokio::sync::mpsc::UnboundedSender<()>,
}

async fn serve_moving_srv(script: Moving) -> SocketAddr {
    use std::sync::atomic::Ordering;
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let server = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Some((query, q, qname)) = question(&buf[..n]) else {
                continue;
            };
            let target = |n: u8| format!("t{n}.test.");
            let now = script.generation.load(Ordering::SeqCst);
            let (mut hold, mut failing, mut answers) = (false, false, Vec::new());
            if q.query_type() == RecordType::SRV {
                let data = SRV::new(0, 1, 8080, name(&target(now)));
                answers.push(Record::from_rdata(name(&qname), 30, RData::SRV(data)));
            } else if let Some(n) = (1..=9).find(|n| qname == target(*n)) {
                let a_query = q.query_type() == RecordType::A;
                let first = (script.held).compare_exchange(n, 0, Ordering::SeqCst, Ordering::SeqCst);
                hold = a_query && first.is_ok();
                failing = n == script.fail.load(Ordering::SeqCst);
                if a_query && !failing {
                    answers.push(a(&qname, n));
                }
            }
            let (socket, script) = (Arc::clone(&socket), script.clone());
            tokio::spawn(async move {
                if hold {
                    let released = script.release.notified();
                    let _ = script.held_tx.send(());
                    released.await;
                }
                let code = if failing { ResponseCode::ServFail } else { ResponseCode::NoError };
                let response = reply(&query, q, code, answers, Vec::new());
                let _ = socket.send_to(&response, from).await;
            });
        }
    });
    server
}

/// Resolutions of one service overlap (two balancers sharing the source,
/// a `resolve` next to a refresh): one that started earlier and ends later
/// must not replace what a later one found. The SRV record moved from
/// target `t1` to `t2` while the first resolution's lookup of `t1` was
/// held: answered after the second resolution had `t2`, it put `t1`'s
/// address back in the cache (`["127.0.0.1"]` served to every fetch for
/// the TTL); answered SERVFAIL, it set a backoff in which every fetch
/// failed (`Backoff`) though the answer cached was fresh. Overtaken, a
/// resolution gives the newer answer.
#[tokio::test]
async fn an_older_resolution_ending_last_does_not_replace_a_newer_answer() {
    use std::sync::atomic::{AtomicU8, Ordering};
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let script = Moving {
        generation: Arc::new(AtomicU8::new(1)),
        held: Arc::new(AtomicU8::new(1)),
        fail: Arc::new(AtomicU8::new(0)),
        release: Arc::new(tokio::sync::Notify::new()),
        held_tx,
    };
    let server = serve_moving_srv(script.clone()).await;
    let source = DnsSource::new(config(server).ip_family(IpFamily::V4))
        .unwrap()
        .with_service("users", DnsTarget::srv("_http._tcp.users.test."))
        .unwrap();
    let fetch = || crate::discovery::InstanceSource::fetch(&source, "users");

    // The first resolution's target lookup is held (then fails, the second
    // time); a second resolution finds the new target.
    for (old, failing) in [(1u8, false), (3, true)] {
        script.generation.store(old, Ordering::SeqCst);
        script.held.store(old, Ordering::SeqCst);
        script.fail.store(if failing { old } else { 0 }, Ordering::SeqCst);
        let first = tokio::spawn({
            let source = source.clone();
            async move { source.resolve("users").await }
        });
        held_rx.recv().await.unwrap();
        script.generation.store(old + 1, Ordering::SeqCst);
        let new = format!("127.0.0.{}", old + 1);
        assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), [&new]);
        script.release.notify_one();
        // Overtaken, it gives the newer answer.
        assert_eq!(hosts(&first.await.unwrap().unwrap().unwrap()), [&new], "{failing}");
        assert_eq!(hosts(&source.answer("users").unwrap().instances), [&new]);
        assert_eq!(hosts(&fetch().await.unwrap()), [&new], "{failing}");
    }
}

/// A failed `resolve` (SERVFAIL) while the cached answer is still within
/// its TTL does not hide that answer: fetches (a refresh, a new balancer's
/// first list) get it. They failed with `Backoff` for the backoff's second.
#[tokio::test]
async fn a_failed_resolve_does_not_hide_an_answer_within_its_ttl() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let failing = Arc::new(AtomicBool::new(false));
    let fails = Arc::clone(&failing);
    let server = serve(Arc::new(move |qname, qtype| {
        match (qname, qtype, fails.load(Ordering::SeqCst)) {
            (_, _, true) => (ResponseCode::ServFail, vec![], vec![]),
            ("users.test.", RecordType::A, false) => {
                (ResponseCode::NoError, vec![a(qname, 2)], vec![])
            }
            _ => (ResponseCode::NXDomain, vec![], vec![]),
        }
    }))
    .await;
    let source = DnsSource::new(config(server).ip_family(IpFamily::V4))
        .unwrap()
        .with_service("users", DnsTarget::host("users.test.", 8080))
        .unwrap();
    assert_eq!(hosts(&source.resolve("users").await.unwrap().unwrap()), ["127.0.0.2"]);
    failing.store(true, Ordering::SeqCst);
    assert!(source.resolve("users").await.unwrap().is_err());
    let answer = source.answer("users").unwrap();
    assert!(answer.expires_in() > std::time::Duration::from_secs(20));
    let fetched = crate::discovery::InstanceSource::fetch(&source, "users").await;
    assert_eq!(hosts(&fetched.unwrap()), ["127.0.0.2"]);
    assert_eq!(source.resolutions(), 2);
}

/// Addresses kept through failed lookups (a family's, an SRV target's) are
/// kept only until the TTL ceiling after they were last resolved: a lookup
/// that keeps failing cannot keep a removed address for ever, as the
/// ceiling promises for answers. Before, every resolution kept them
/// again, whatever their age: `["127.0.0.2", "::1"]` and
/// `["127.0.0.2", "127.0.0.3"]` after the ceiling; now `["127.0.0.2"]`
/// and `["127.0.0.3"]`.
#[tokio::test]
async fn kept_addresses_expire_at_the_ttl_ceiling() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    let failing = Arc::new(AtomicBool::new(false));
    let fails = Arc::clone(&failing);
    let server = serve(Arc::new(move |qname, qtype| {
        let down = fails.load(Ordering::SeqCst);
        let record = |target: &str| {
            let data = SRV::new(0, 1, 8080, name(target));
            Record::from_rdata(name("_http._tcp.users.test."), 30, RData::SRV(data))
        };
        match (qname, qtype) {
            ("dual.test.", RecordType::A) => (ResponseCode::NoError, vec![a(qname, 2)], vec![]),
            ("dual.test.", RecordType::AAAA) if down => (ResponseCode::ServFail, vec![], vec![]),
            ("dual.test.", RecordType::AAAA) => (ResponseCode::NoError, vec![aaaa(qname)], vec![]),
            ("_http._tcp.users.test.", RecordType::SRV) => (
                ResponseCode::NoError,
                vec![record("a.test."), record("b.test.")],
                vec![],
            ),
            ("a.test.", _) if down => (ResponseCode::ServFail, vec![], vec![]),
            ("a.test.", RecordType::A) => (ResponseCode::NoError, vec![a(qname, 2)], vec![]),
            ("b.test.", RecordType::A) => (ResponseCode::NoError, vec![a(qname, 3)], vec![]),
            _ => (ResponseCode::NoError, vec![], vec![]),
        }
    }))
    .await;
    let ceiling = Duration::from_millis(300);
    let dual = DnsSource::new(config(server).ttl_ceiling(ceiling))
        .unwrap()
        .with_service("dual", DnsTarget::host("dual.test.", 8080))
        .unwrap();
    let users = DnsSource::new(config(server).ip_family(IpFamily::V4).ttl_ceiling(ceiling))
        .unwrap()
        .with_service("users", DnsTarget::srv("_http._tcp.users.test."))
        .unwrap();
    let both = ["127.0.0.2", "::1"];
    let targets = ["127.0.0.2", "127.0.0.3"];
    assert_eq!(hosts(&dual.resolve("dual").await.unwrap().unwrap()), both);
    assert_eq!(hosts(&users.resolve("users").await.unwrap().unwrap()), targets);
    failing.store(true, Ordering::SeqCst);
    // Within the ceiling: kept.
    assert_eq!(hosts(&dual.resolve("dual").await.unwrap().unwrap()), both);
    assert_eq!(hosts(&users.resolve("users").await.unwrap().unwrap()), targets);
    tokio::time::sleep(ceiling + Duration::from_millis(100)).await;
    // Past it: dropped, however often they were kept since.
    let dual_after = dual.resolve("dual").await.unwrap().unwrap();
    let users_after = users.resolve("users").await.unwrap().unwrap();
    println!("after the ceiling: {:?} {:?}", hosts(&dual_after), hosts(&users_after));
    assert_eq!(hosts(&dual_after), ["127.0.0.2"]);
    assert_eq!(hosts(&users_after), ["127.0.0.3"]);
    // Resolved again: back, and kept again from then on.
    failing.store(false, Ordering::SeqCst);
    assert_eq!(hosts(&dual.resolve("dual").await.unwrap().unwrap()), both);
    failing.store(true, Ordering::SeqCst);
    assert_eq!(hosts(&dual.resolve("dual").await.unwrap().unwrap()), both);
}
