
use hickory_resolver::proto::rr::Name;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::proto::rr::Record;
use super::records::Candidate;
use super::config::DnsConfig;
use super::error::DnsError;
use super::source::DnsSource;
use super::target::DnsTarget;
use std::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use super::MAX_SETTING;
use super::records::Additionals;
use super::records::build;
use super::records::min_ttl;
use super::records::parse_name;
use super::records::parse_srv;
use super::records::PriorityGroups;
use super::records::only_root;
use super::records::priority_groups;
use tokio::time::Instant;

use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
use std::net::{Ipv4Addr, Ipv6Addr};

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Record {
    Record::from_rdata(
        Name::from_ascii("_http._tcp.users.").unwrap(),
        30,
        RData::SRV(SRV::new(
            priority,
            weight,
            port,
            Name::from_ascii(target).unwrap(),
        )),
    )
}

#[test]
fn resolv_conf_as_kubernetes_writes_it() {
    let text = "# written by the kubelet\n\
                search default.svc.cluster.local svc.cluster.local cluster.local.\n\
                nameserver 10.96.0.10\n\
                nameserver bogus\n\
                options ndots:5 timeout:99 attempts:0 rotate edns0\n";
    let c = DnsConfig::from_resolv_conf(text).unwrap();
    assert_eq!(c.get_name_servers(), ["10.96.0.10:53".parse().unwrap()]);
    assert_eq!(
        c.get_search(),
        [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local"
        ]
    );
    assert_eq!(c.get_ndots(), 5);
    assert_eq!(c.get_timeout(), Duration::from_secs(30));
    assert_eq!(c.get_attempts(), 1);
    let k = DnsConfig::kubernetes("default", "10.96.0.10:53".parse().unwrap());
    assert_eq!(k.get_search(), c.get_search());
    assert_eq!(k.get_ndots(), 5);
    // `domain` replaces `search`, the last line wins.
    let d = DnsConfig::from_resolv_conf("nameserver ::1\nsearch a b\ndomain c.\n").unwrap();
    assert_eq!(d.get_search(), ["c"]);
    assert!(matches!(
        DnsConfig::from_resolv_conf("search a\n"),
        Err(DnsError::NoNameServers)
    ));
    // Four servers: glibc keeps three.
    let many = "nameserver 1.1.1.1\nnameserver 1.1.1.2\nnameserver 1.1.1.3\nnameserver 1.1.1.4\n";
    assert_eq!(
        DnsConfig::from_resolv_conf(many)
            .unwrap()
            .get_name_servers()
            .len(),
        3
    );
}

#[test]
fn ttl_clamp_and_backoff() {
    let c = DnsConfig::new([]);
    assert_eq!(c.clamp_ttl(Duration::ZERO), Duration::from_secs(5));
    assert_eq!(
        c.clamp_ttl(Duration::from_secs(12)),
        Duration::from_secs(12)
    );
    assert_eq!(
        c.clamp_ttl(Duration::from_secs(3600)),
        Duration::from_secs(30)
    );
    let c = c.ttl_floor(Duration::from_secs(60));
    assert_eq!(c.get_ttl_ceiling(), Duration::from_secs(60));
    let c = c.ttl_ceiling(Duration::from_secs(2));
    assert_eq!(c.get_ttl_floor(), Duration::from_secs(2));
    let c = DnsConfig::new([]).failure_backoff(Duration::from_millis(250));
    let waits: Vec<u128> = (1..=7).map(|n| c.backoff(n).as_millis()).collect();
    assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000]);
    assert_eq!(c.backoff(u32::MAX), Duration::from_secs(5));
    let c = DnsConfig::new([]).refresh_ahead(Duration::from_secs(1));
    assert_eq!(
        c.answer_lifetime(Duration::from_secs(10)),
        Duration::from_secs(9)
    );
    // At most half of the clamped TTL (floor 5 s).
    let c = c.refresh_ahead(Duration::from_secs(60));
    assert_eq!(
        c.answer_lifetime(Duration::ZERO),
        Duration::from_millis(2500)
    );
}

#[test]
fn names_are_validated_and_bounded() {
    assert!(parse_name("users.default.svc.cluster.local", 253).is_ok());
    assert!(parse_name("_http._tcp.users.", 253).unwrap().is_fqdn());
    assert!(!parse_name("users", 253).unwrap().is_fqdn());
    let long = format!("{}.local", "a".repeat(250));
    assert!(matches!(
        parse_name(&long, 253),
        Err(DnsError::NameTooLong { len: 256, max: 253 })
    ));
    assert!(matches!(
        parse_name("users", 3),
        Err(DnsError::NameTooLong { .. })
    ));
    for bad in ["", ".", "a..b", "a b", "ü.local", &"a".repeat(64), "127.0.0.5", "10.1.2.3."] {
        assert!(
            matches!(parse_name(bad, 253), Err(DnsError::InvalidName { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(DnsTarget::parse("users:0"), Err(DnsError::PortZero { .. })));
    assert!(DnsTarget::parse("users:x").is_err());
    assert_eq!(
        DnsTarget::parse(" users.ns:80 ").unwrap(),
        DnsTarget::host("users.ns", 80)
    );
}

#[test]
fn srv_groups_by_priority_and_bounds() {
    let answer = [
        srv(20, 5, 80, "backup.test."),
        srv(10, 3, 8081, "B.test."),
        srv(10, 1, 8080, "a.test."),
        srv(10, 1, 8080, "a.test."),
    ];
    let records = parse_srv(&answer, 253);
    assert_eq!(records.len(), 4);
    let PriorityGroups { groups, cut_at } = priority_groups(records, 16);
    assert_eq!(cut_at, None);
    assert_eq!(groups.len(), 2);
    let first: Vec<(&str, u16, u16)> = groups[0]
        .iter()
        .map(|r| (r.target.as_str(), r.port, r.weight))
        .collect();
    // Heaviest first within a priority, so a cut keeps it.
    assert_eq!(first, [("b.test", 8081, 3), ("a.test", 8080, 1)]);
    assert_eq!(groups[1][0].priority, 20);
    // max records (after the sort: the backup listed first is the one
    // cut) and max name length.
    let cut = priority_groups(parse_srv(&answer, 253), 2);
    assert_eq!((cut.groups.len(), cut.groups[0].len(), cut.cut_at), (1, 2, Some(20)));
    let cut = priority_groups(parse_srv(&answer, 253), 1);
    assert_eq!((cut.groups[0][0].target.as_str(), cut.cut_at), ("b.test", Some(10)));
    assert_eq!(parse_srv(&answer, 6).len(), 3);
    // Root target: alone, the service is not available; next to real
    // targets, skipped (and port 0 too).
    let root = parse_srv(&[srv(0, 0, 0, ".")], 253);
    assert_eq!(root[0].target, "");
    assert!(only_root(&root));
    assert!(!only_root(&[]));
    let mixed = parse_srv(&[srv(0, 0, 0, "."), srv(5, 1, 0, "z.test."), srv(10, 1, 80, "p.test.")], 253);
    assert!(!only_root(&mixed));
    let groups = priority_groups(mixed, 1).groups;
    assert_eq!((groups.len(), groups[0][0].target.as_str()), (1, "p.test"));
}

#[test]
fn build_sorts_dedups_weights_and_cuts() {
    let c = |ip: [u8; 4], port, weight| Candidate {
        ip: IpAddr::V4(Ipv4Addr::from(ip)),
        port,
        weight,
        target: Some(("a.test".to_owned(), 10)),
    };
    let r = build(
        "users",
        "_http._tcp.users",
        vec![
            c([127, 0, 0, 3], 80, 3),
            c([127, 0, 0, 2], 80, 1),
            c([127, 0, 0, 3], 80, 9),
        ],
        Duration::from_secs(7),
        true,
        16,
        0,
    );
    let shown: Vec<(String, u32)> = r
        .instances
        .iter()
        .map(|i| (i.to_string(), i.weight()))
        .collect();
    assert_eq!(
        shown,
        [
            ("https://127.0.0.2:80".to_owned(), 1),
            ("https://127.0.0.3:80".to_owned(), 3)
        ]
    );
    assert_eq!(r.instances[1].metadata()["weight"], "3");
    assert_eq!(r.instances[1].metadata()["dns.priority"], "10");
    assert!(!r.truncated);
    let mut many: Vec<Candidate> = (0..10u8).map(|i| c([10, 0, 0, i], 1, 1)).collect();
    many.push(c([10, 0, 0, 99], 1, 2));
    let r = build("s", "n", many, Duration::ZERO, false, 4, 0);
    assert!(r.truncated);
    assert_eq!(r.instances.len(), 4);
    // The heaviest always kept; the rest in address order.
    assert!(r.instances.iter().any(|i| i.host() == "10.0.0.99"));
    let hosts: Vec<&str> = r.instances.iter().map(|i| i.host()).collect();
    let mut sorted = hosts.clone();
    sorted.sort_by_key(|h| h.parse::<Ipv4Addr>().unwrap());
    assert_eq!(hosts, sorted);
}

/// A cut to `max_records` keeps a different subset per client seed, so a
/// fleet covers every address: 100 clients over 1 000 equal records cut
/// to 10 use 630 distinct addresses (634 expected of a uniform choice), none kept by more than 6 clients
/// (before: the 10 lowest for every client, 10 addresses with 100 each).
/// One client keeps its subset across answers: an answer without one of
/// its addresses changes one member.
#[test]
fn a_cut_keeps_a_subset_per_client_and_keeps_it_across_answers() {
    let answer = |skip: Option<usize>| -> Vec<Candidate> {
        (0..1_000usize)
            .filter(|i| Some(*i) != skip)
            .map(|i| Candidate {
                ip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + u32::try_from(i).unwrap())),
                port: 8080,
                weight: 1,
                target: None,
            })
            .collect()
    };
    let kept = |seed: u64, skip: Option<usize>| -> BTreeSet<String> {
        build("s", "n", answer(skip), Duration::ZERO, false, 10, seed)
            .instances
            .iter()
            .map(|i| i.host().to_owned())
            .collect()
    };
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..100 {
        for host in kept(seed, None) {
            *times.entry(host).or_default() += 1;
        }
    }
    assert_eq!(times.values().sum::<usize>(), 1_000);
    assert_eq!(times.len(), 630, "distinct addresses kept by 100 clients");
    assert!(times.values().all(|&n| n <= 6), "{:?}", times.values().max());

    let before = kept(7, None);
    let gone: Ipv4Addr = before.iter().next().unwrap().parse().unwrap();
    let index = usize::try_from(u32::from(gone) - 0x0a00_0000).unwrap();
    let after = kept(7, Some(index));
    assert_eq!(after.len(), 10);
    assert_eq!(before.intersection(&after).count(), 9);
}

#[test]
fn additional_section_and_ttls() {
    let name = Name::from_ascii("a.test.").unwrap();
    let other = Name::from_ascii("b.test.").unwrap();
    let extra = [
        Record::from_rdata(name.clone(), 9, RData::A(A(Ipv4Addr::new(127, 0, 0, 2)))),
        Record::from_rdata(name, 4, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
        Record::from_rdata(other, 1, RData::A(A(Ipv4Addr::new(127, 0, 0, 9)))),
    ];
    let index = Additionals::new(&extra, &DnsConfig::new([]));
    let (addrs, ttl) = index.get("a.test").unwrap();
    assert_eq!(addrs.len(), 2);
    assert_eq!(ttl, 4);
    assert_eq!(index.get("A.Test"), Some((addrs, ttl)));
    assert!(index.get("c.test").is_none());
    assert_eq!(min_ttl(&extra), Some(1));
    assert_eq!(min_ttl(&[]), None);
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        rng_seed: proptest::test_runner::RngSeed::Fixed(13),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })]

    /// No answer makes the SRV path panic, exceed its bounds, or mix
    /// priorities; weights are the records' (all-zero groups aside).
    #[test]
    fn any_srv_answer_is_bounded(
        records in proptest::collection::vec(
            (0u16..4, 0u16..5, 0u16..4, 0usize..6, proptest::bool::ANY),
            0..40,
        ),
        max in 1usize..12,
        max_name_len in 1usize..20,
    ) {
        let answer: Vec<Record> = records
            .iter()
            .map(|(p, w, port, t, root)| {
                let target = if *root { ".".to_owned() } else { format!("t{t}.test.") };
                srv(*p, *w, *port, &target)
            })
            .collect();
        let parsed = parse_srv(&answer, max_name_len);
        proptest::prop_assert!(parsed.len() <= answer.len());
        proptest::prop_assert!(parsed.iter().all(|r| r.target.len() <= max_name_len));
        let lowest = parsed.iter().filter(|r| !r.target.is_empty() && r.port > 0).map(|r| r.priority).min();
        let groups = priority_groups(parsed, max).groups;
        proptest::prop_assert!(groups.iter().map(Vec::len).sum::<usize>() <= max);
        // The lowest usable priority is always kept, whatever the order.
        proptest::prop_assert_eq!(groups.first().map(|g| g[0].priority), lowest);
        proptest::prop_assert!(groups.iter().flatten().all(|r| !r.target.is_empty() && r.port > 0));
        for pair in groups.windows(2) {
            proptest::prop_assert!(pair[0][0].priority < pair[1][0].priority);
        }
        for group in &groups {
            proptest::prop_assert!(group.iter().all(|r| r.priority == group[0].priority));
            let candidates: Vec<Candidate> = group
                .iter()
                .enumerate()
                .map(|(i, r)| Candidate {
                    ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, u8::try_from(i % 200).unwrap())),
                    port: r.port,
                    weight: u32::from(r.weight),
                    target: Some((r.target.clone(), r.priority)),
                })
                .collect();
            let built = build("svc", "n", candidates, Duration::ZERO, false, max, 0);
            proptest::prop_assert!(built.instances.len() <= max);
            // Port 0 cannot be an instance; every other record can.
            proptest::prop_assert!(built.instances.iter().all(|i| i.port() > 0));
        }
    }

    /// Any text: resolv.conf parsing never panics and stays bounded.
    #[test]
    fn any_resolv_conf_is_bounded(text in "(nameserver|search|domain|options|ndots:|[0-9a-z.:; #\n])*") {
        if let Ok(c) = DnsConfig::from_resolv_conf(&text) {
            proptest::prop_assert!(c.get_name_servers().len() <= 3);
            proptest::prop_assert!(c.get_search().len() <= 32);
            proptest::prop_assert!(c.get_ndots() <= 15);
        }
    }
}

#[test]
fn durations_are_capped() {
    let c = DnsConfig::new([])
        .ttl_floor(Duration::MAX)
        .failure_backoff(Duration::MAX)
        .refresh_ahead(Duration::MAX);
    assert_eq!(c.get_ttl_ceiling(), MAX_SETTING);
    // Deadlines from these never overflow.
    let now = Instant::now();
    let _ = now + c.answer_lifetime(Duration::MAX) + c.backoff(u32::MAX);
}

#[test]
fn configuration_errors_are_typed() {
    assert!(matches!(
        DnsSource::new(DnsConfig::new([])),
        Err(DnsError::NoNameServers)
    ));
}

/// Names quoted in errors cannot forge log lines (before, the CR/LF of
/// `users\r\nFORGED` went into the message as is).
#[test]
fn names_in_errors_are_escaped() {
    let e = DnsTarget::parse("users\r\nFORGED:0").unwrap_err();
    assert_eq!(
        e.to_string(),
        "DNS target `users\\r\\nFORGED`: port 0; the port must be in 1..=65535"
    );
    let e = parse_name("a\nb", 253).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid DNS name `a\\nb`: only ASCII letters, digits, `-`, `_` and `.` are allowed"
    );
}

/// The 64 KiB bound of `from_resolv_conf_file` holds for a file whose size
/// the metadata does not give (a FIFO, a `/proc` file, a character device
/// such as `/dev/zero`): the read stops past the bound. A FIFO fed 1 MiB
/// was read whole and accepted; `/dev/zero` would fill memory.
#[test]
fn a_resolv_conf_of_unknown_size_is_read_up_to_the_bound() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("ribbon-resolv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("resolv.conf");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new().write(true).open(writer_path).unwrap();
        let mut written = 0usize;
        let mut text = b"nameserver 127.0.0.1\n".to_vec();
        text.extend(std::iter::repeat_n(b"# padding line\n".as_slice(), 1 << 16).flatten());
        // The reader may stop early (a broken pipe then).
        for chunk in text.chunks(4096) {
            match file.write_all(chunk) {
                Ok(()) => written += chunk.len(),
                Err(_) => break,
            }
        }
        (written, text.len())
    });
    assert_eq!(std::fs::metadata(&fifo).unwrap().len(), 0);
    let result = DnsConfig::from_resolv_conf_file(&fifo);
    let (written, total) = writer.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(total, 21 + 15 * 65_536);
    let error = result.expect_err("a 983 061-byte resolv.conf is over the 64 KiB bound");
    assert!(matches!(error, DnsError::ResolvConf { .. }), "{error:?}");
    assert!(error.to_string().contains("larger than 64 KiB"), "{error}");
    // At most the bound, one byte and a pipe buffer were taken from the writer.
    assert!(written < 64 * 1024 + 1 + 4096 + (1 << 20) / 16, "{written}");
}

/// The additional section is indexed once per answer: 2 000 address
/// records (half of them AAAA, left out under `IpFamily::V4`) under
/// mixed-case names, 1 024 targets looked up, half of them present. Each
/// target was searched for through the whole section, converting every
/// record's name: 2 048 000 names for this answer (219 ms in release, 4.1
/// s in a debug build); the index converts each name once.
#[test]
fn a_large_additional_section_is_indexed_once() {
    let extra: Vec<Record> = (0..2000u32)
        .map(|i| {
            let name = Name::from_ascii(format!("H{}.Pods.Example.", i / 2)).unwrap();
            let data = if i % 2 == 0 {
                RData::A(A(Ipv4Addr::from(0x0a00_0000 + i)))
            } else {
                RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))
            };
            Record::from_rdata(name, 30 + i, data)
        })
        .collect();
    let config = DnsConfig::new([]).ip_family(super::IpFamily::V4);
    let index = Additionals::new(&extra, &config);
    assert_eq!(index.len(), 1000);
    let found: Vec<(Vec<IpAddr>, u32)> = (0..1024u32)
        .filter_map(|j| index.get(&format!("h{}.pods.example", j * 2)))
        .collect();
    assert_eq!(found.len(), 500);
    for (j, (addrs, ttl)) in found.iter().enumerate() {
        let i = j as u32 * 4;
        assert_eq!(addrs, &[IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))]);
        assert_eq!(*ttl, 30 + i);
    }
}
