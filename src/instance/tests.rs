use super::*;

fn auth(host: &str, port: u16) -> String {
    Instance::new("svc", host, port)
        .map(|i| i.authority().as_str().to_owned())
        .unwrap_or_else(|e| format!("error: {e}"))
}

#[test]
fn authorities_for_names_and_ipv4() {
    assert_eq!(
        auth("user-service.internal", 8080),
        "user-service.internal:8080"
    );
    assert_eq!(auth("127.0.0.1", 1), "127.0.0.1:1");
    assert_eq!(auth(" host_1 ", 65535), "host_1:65535");
}

#[test]
fn authorities_for_ipv6() {
    assert_eq!(auth("::1", 8080), "[::1]:8080");
    assert_eq!(auth("[::1]", 8080), "[::1]:8080");
    assert_eq!(auth("2001:DB8:0:0:0:0:0:1", 80), "[2001:db8::1]:80");
    let i = Instance::new("svc", "[::1]", 9).unwrap();
    assert_eq!(i.host(), "::1");
}

/// Unspecified, multicast and broadcast addresses name no one host: a
/// connection to `0.0.0.0` or `::` reaches the caller's own host (helper
/// 192 found a DNS answer of `0.0.0.0` listed). Their neighbours pass.
#[test]
fn addresses_of_no_one_host_are_refused() {
    for host in [
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "239.255.255.250",
        "::",
        "[::]",
        "ff02::1",
        "::ffff:0.0.0.0",
    ] {
        let refused = Instance::new("svc", host, 80).unwrap_err();
        assert_eq!(refused.kind(), InstanceErrorKind::InvalidHost, "{host}");
        assert!(
            refused.to_string().contains("names no one host"),
            "{refused}"
        );
    }
    for host in ["0.0.0.1", "223.255.255.255", "240.0.0.1", "::2", "fe80::1"] {
        assert!(Instance::new("svc", host, 80).is_ok(), "{host}");
    }
}

#[test]
fn ipv6_zone_ids_are_percent_encoded() {
    assert_eq!(auth("fe80::1%eth0", 8080), "[fe80::1%25eth0]:8080");
    assert_eq!(auth("[fe80::1%25eth0]", 8080), "[fe80::1%25eth0]:8080");
    assert_eq!(auth("fe80::1%en 0", 1), "[fe80::1%25en%200]:1");
    assert_eq!(auth("fe80::1%3", 1), "[fe80::1%253]:1");
    assert_eq!(auth("[fe80::1%253]", 1), "[fe80::1%253]:1");
    let i = Instance::new("svc", "fe80::1%eth0", 1).unwrap();
    assert_eq!(i.host(), "fe80::1%eth0");
    assert_eq!(i.to_string(), "http://[fe80::1%25eth0]:1");
}

#[test]
fn bad_hosts_and_ports_are_typed_errors() {
    for bad in [
        "",
        "  ",
        "a b",
        "user@host",
        "host:80",
        "::zz",
        "[::1",
        "fe80::1%",
        "fe80::1%eth\n0",
        "[fe80::1%25eth\r0]",
        "fe80::1%\u{7f}",
        "fe80::1%\u{85}",
        "a/b",
        "h\u{e9}",
    ] {
        let err = Instance::new("svc", bad, 80).unwrap_err();
        assert!(err.is_invalid_host(), "{bad:?}: {err}");
    }
    assert!(Instance::new("svc", "h", 0).unwrap_err().is_invalid_port());
}

#[test]
fn scheme_and_key() {
    let a = Instance::new("svc", "h", 80).unwrap();
    assert_eq!(a.scheme(), Scheme::HTTP);
    assert_eq!(a.id(), "h:80");
    let b = a.clone().with_secure(true);
    assert_eq!(b.scheme(), Scheme::HTTPS);
    assert_ne!(a.key(), b.key());
    assert_eq!(a.key(), a.clone().with_zone("z").key());
}

#[test]
fn status_parsing() {
    assert_eq!(InstanceStatus::parse("up"), InstanceStatus::Up);
    assert_eq!(
        InstanceStatus::parse("OUT_OF_SERVICE"),
        InstanceStatus::OutOfService
    );
    assert_eq!(InstanceStatus::parse("WHATEVER"), InstanceStatus::Unknown);
    assert!(!InstanceStatus::parse("").is_up());
}

#[test]
fn debug_hides_metadata_values() {
    let instance = Instance::new("svc", "h", 80)
        .unwrap()
        .with_metadata("management.password", "hunter2")
        .with_metadata("zone", "eu-1a");
    let text = format!("{instance:?}");
    assert!(text.contains("management.password"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("eu-1a"), "{text}");
    assert_eq!(text.matches("<redacted>").count(), 2, "{text}");
}

#[test]
fn host_names_are_bounded_at_253_bytes() {
    let label = "a".repeat(63);
    let name = [label.as_str(); 4].join(".")[..253].to_owned();
    assert!(Instance::new("svc", name.as_str(), 80).is_ok());
    let err = Instance::new("svc", format!("{name}b"), 80).unwrap_err();
    assert!(err.is_invalid_host(), "{err}");
    assert!(err.to_string().contains("253"), "{err}");
}

#[test]
fn host_names_no_resolver_takes_are_refused() {
    // Empty labels, the root alone and labels over 63 bytes: the resolver
    // refuses them without asking a server, so they could never be reached.
    let long_label = format!("{}.com", "a".repeat(64));
    for bad in [".", "..", "a..b", ".a", "a..", long_label.as_str()] {
        let err = Instance::new("svc", bad, 80).unwrap_err();
        assert!(err.is_invalid_host(), "{bad:?}: {err}");
    }
    let ok_label = format!("{}.com", "a".repeat(63));
    for good in ["a.", "a.b", "_srv._tcp.a", ok_label.as_str()] {
        assert!(Instance::new("svc", good, 80).is_ok(), "{good:?}");
    }
    // The 253-byte bound leaves a fully qualified name's trailing dot out.
    let label = "a".repeat(63);
    let name = [label.as_str(); 4].join(".")[..253].to_owned();
    assert!(Instance::new("svc", format!("{name}."), 80).is_ok());
    assert!(Instance::new("svc", format!("{name}b."), 80).is_err());
}

#[test]
fn names_ending_in_a_number_are_refused() {
    // `inet_aton` and URL parsers read them as IPv4 addresses Rust's
    // parser refuses (`010.0.0.1` is 8.0.0.1), or as none at all.
    for bad in [
        "010.0.0.1",
        "127.1",
        "0x7f.1",
        "2130706433",
        "256.1.1.1",
        "1.2.3.4.5",
        "10.0.0.1.",
        "a.0X1f",
    ] {
        let err = Instance::new("svc", bad, 80).unwrap_err();
        assert!(err.is_invalid_host(), "{bad:?}: {err}");
        assert!(err.to_string().contains("dotted quad"), "{err}");
    }
    for good in ["10.0.0.1", "a1", "1a.b", "host-1.ns2", "0xg.a", "x.0xg"] {
        assert!(Instance::new("svc", good, 80).is_ok(), "{good:?}");
    }
}

thread_local! {
    /// [`Endpoint::same_identity`] calls on this thread.
    pub(crate) static IDENTITY_TESTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}
