//! `tower_ribbon::config` on hostile input: the 413-byte YAML alias bomb
//! of issue 10, deep nesting, oversized files, and arbitrary bytes to both
//! parsers. Memory is measured with a counting allocator (this binary's
//! global allocator), time with the wall clock.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use tower_ribbon::config::{ConfigErrorKind, RibbonConfig};

#[path = "common/peak_alloc.rs"]
mod peak_alloc;

#[global_allocator]
static GLOBAL: peak_alloc::Peak = peak_alloc::Peak;

/// Serializes the measured tests (the counters are process-wide).
static MEASURE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f`, returning its result, the wall time and the peak heap growth
/// in bytes over what was live before.
fn measured<T>(f: impl FnOnce() -> T) -> (T, Duration, usize) {
    let _guard = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let base = peak_alloc::live();
    peak_alloc::set_peak(base);
    let start = Instant::now();
    let out = f();
    let elapsed = start.elapsed();
    let peak = peak_alloc::peak().saturating_sub(base);
    (out, elapsed, peak)
}

/// Bounds the tests assert (debug build, on a shared 2-core machine).
const TIME_LIMIT: Duration = Duration::from_secs(2);
const MEMORY_LIMIT: usize = 32 << 20;

fn data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/config")
        .join(name)
}

#[test]
fn alias_bomb_is_refused_quickly_with_bounded_memory() {
    let path = data("alias-bomb.yml");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 413);
    let (result, elapsed, peak) = measured(|| RibbonConfig::from_file(&path));
    let err = result.expect_err("the bomb must be refused");
    assert_eq!(err.kind(), ConfigErrorKind::TooLarge, "{err}");
    assert_eq!(err.limit(), Some(100_000), "{err}");
    assert_eq!(err.path(), Some(path.as_path()));
    assert!(err.to_string().contains("100000 YAML nodes"), "{err}");
    eprintln!("alias bomb: refused in {elapsed:?}, peak heap growth {peak} bytes");
    assert!(elapsed < TIME_LIMIT, "{elapsed:?}");
    assert!(peak < MEMORY_LIMIT, "{peak} bytes");
}

/// A flow list of aliases to one large anchored scalar: the joined value
/// is counted against the 8 MiB output budget before it is built. Found by
/// an attack: 278 KB of YAML (a 256 KiB scalar, 4 000 aliases) reached a
/// 1 000 MB heap peak and took 1.7 s before the error; at the 1 MiB input
/// cap (a 512 KiB scalar, about 120 000 aliases) it would have asked for
/// about 60 GB. The same scalar aliased as separate keys is counted
/// before each copy.
#[test]
fn a_list_of_aliases_to_a_large_scalar_is_refused_before_it_is_joined() {
    let big = "x".repeat(256 << 10);
    for list in [
        // One list value of 4 000 aliases.
        format!("listOfServers: [{}]", vec!["*a"; 4_000].join(", ")),
        // 4 000 keys, each an alias (each copied).
        (0..4_000)
            .map(|i| format!("k{i}: *a"))
            .collect::<Vec<_>>()
            .join("\n  "),
    ] {
        let yaml = format!("anchor: &a {big}\nribbon:\n  {list}\n");
        assert!(yaml.len() < 1 << 20);
        let (result, elapsed, peak) = measured(|| RibbonConfig::from_yaml_str(&yaml));
        let err = result.expect_err("over the output budget");
        assert_eq!(err.kind(), ConfigErrorKind::TooLarge, "{err}");
        assert_eq!(err.limit(), Some(8 << 20), "{err}");
        eprintln!(
            "{} B of aliases: refused in {elapsed:?}, peak heap growth {peak} bytes",
            yaml.len()
        );
        assert!(elapsed < TIME_LIMIT, "{elapsed:?}");
        assert!(peak < MEMORY_LIMIT, "{peak} bytes");
    }
}

#[test]
fn aliases_within_the_budget_still_work() {
    let yaml = "defaults: &d\n  MaxAutoRetries: 2\n  ReadTimeout: 500\n\
                users:\n  ribbon:\n    <<: *d\n    listOfServers: 127.0.0.1:1\n    ReadTimeout: 700\n\
                orders:\n  ribbon: *d\n";
    let config = RibbonConfig::from_yaml_str(yaml).unwrap();
    let users = config.client("users");
    assert_eq!(users.max_auto_retries, Some(2));
    assert_eq!(users.read_timeout, Some(Duration::from_millis(700)));
    assert_eq!(
        config.client("orders").read_timeout,
        Some(Duration::from_millis(500))
    );
}

#[test]
fn deep_nesting_and_large_files_are_refused() {
    // 10 000 levels of block nesting: refused at level 64.
    let deep: String = (0..10_000)
        .map(|i| format!("{}k:\n", " ".repeat(i % 200)))
        .collect();
    let nested: String = (0..1_000)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect();
    for text in [&deep, &nested] {
        let (result, elapsed, peak) = measured(|| RibbonConfig::from_yaml_str(text));
        if let Err(err) = result {
            assert!(
                matches!(
                    err.kind(),
                    ConfigErrorKind::TooLarge | ConfigErrorKind::Yaml
                ),
                "{err}"
            );
        }
        assert!(
            elapsed < TIME_LIMIT && peak < MEMORY_LIMIT,
            "{elapsed:?} {peak}"
        );
    }
    let err = RibbonConfig::from_yaml_str(&nested).unwrap_err();
    assert_eq!(
        (err.kind(), err.limit()),
        (ConfigErrorKind::TooLarge, Some(64))
    );
    // Over 1 MiB: refused before parsing, in both formats and from files.
    let big = format!("a: {}\n", "x".repeat(1 << 20));
    let err = RibbonConfig::from_yaml_str(&big).unwrap_err();
    assert_eq!(
        (err.kind(), err.limit()),
        (ConfigErrorKind::TooLarge, Some(1 << 20))
    );
    let big = format!("a={}\n", "x".repeat(1 << 20));
    let err = RibbonConfig::from_properties_str(&big).unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::TooLarge);
    let path = std::env::temp_dir().join(format!(
        "tower-ribbon-big-{}.properties",
        std::process::id()
    ));
    std::fs::write(&path, &big).unwrap();
    let err = RibbonConfig::from_file(&path).unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert_eq!(err.kind(), ConfigErrorKind::TooLarge);
}

/// Text drawn from the tokens that steer YAML and properties parsers.
fn syntaxy() -> impl Strategy<Value = String> {
    const TOKENS: &[&str] = &[
        ":",
        ": ",
        "\n",
        "  ",
        "- ",
        "&a ",
        "*a",
        "&b ",
        "*b",
        "[",
        "]",
        "{",
        "}",
        ",",
        "'",
        "\"",
        "|",
        ">",
        "!",
        "%",
        "#",
        "?",
        "<<: ",
        "---\n",
        "...\n",
        "\\",
        "\\u",
        "=",
        "ribbon.",
        "svc.ribbon.",
        "MaxAutoRetries",
        "spring.cloud.loadbalancer.",
        "clients.",
        "retry.",
        "hint.",
        "cache.ttl",
        "1",
        "x",
        "\t",
        "\r",
        "\u{feff}",
        "é",
    ];
    proptest::collection::vec(proptest::sample::select(TOKENS), 0..200)
        .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// No input makes either parser panic; each answers in bounded time.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let text = String::from_utf8_lossy(&bytes);
        let start = Instant::now();
        let _ = RibbonConfig::from_yaml_str(&text);
        let _ = RibbonConfig::from_properties_str(&text);
        prop_assert!(start.elapsed() < TIME_LIMIT);
    }

    #[test]
    fn syntax_soup_never_panics(text in syntaxy()) {
        let start = Instant::now();
        let _ = RibbonConfig::from_yaml_str(&text);
        let _ = RibbonConfig::from_properties_str(&text);
        prop_assert!(start.elapsed() < TIME_LIMIT);
    }
}

#[test]
fn many_keys_and_clients_stay_linear() {
    // 5 000 unknown Ribbon keys: one edit-distance search per reported
    // key, at most 100 reported.
    let unknown: String = (0..5_000)
        .map(|i| format!("ribbon.Unknown{i}=1\n"))
        .collect();
    assert!(unknown.len() < 1 << 20);
    let (result, elapsed, _) = measured(|| RibbonConfig::from_properties_str(&unknown));
    let config = result.unwrap();
    assert_eq!(config.warnings().len(), 101);
    assert_eq!(config.warnings()[100], "4900 more unknown keys ignored");
    eprintln!("5 000 unknown keys: {elapsed:?}");
    assert!(elapsed < TIME_LIMIT, "{elapsed:?}");
    // Clients: 1 024 accepted, the next is a typed error, found in linear time.
    let clients = |n: usize| -> String {
        (0..n)
            .map(|i| format!("c{i}.ribbon.listOfServers=127.0.0.1:1\n"))
            .collect()
    };
    let config = RibbonConfig::from_properties_str(&clients(1024)).unwrap();
    assert_eq!(config.clients().len(), 1024);
    let (result, elapsed, _) = measured(|| RibbonConfig::from_properties_str(&clients(2_000)));
    let err = result.unwrap_err();
    assert_eq!(
        (err.kind(), err.limit()),
        (ConfigErrorKind::TooLarge, Some(1024))
    );
    eprintln!("2 000 clients: refused in {elapsed:?}");
    assert!(elapsed < TIME_LIMIT, "{elapsed:?}");
}

/// A UTF-8 byte order mark does not rename the first client, and a key
/// holding a line break cannot forge a log line through a warning.
#[test]
fn a_bom_is_not_a_key_and_keys_cannot_forge_lines() {
    let config = tower_ribbon::config::RibbonConfig::from_yaml_str(
        "\u{feff}svc:\n  ribbon:\n    MaxAutoRetries: 1\n    listOfServers: 127.0.0.1:1\n",
    )
    .unwrap();
    assert_eq!(config.client("svc").max_auto_retries, Some(1));
    let config =
        tower_ribbon::config::RibbonConfig::from_pairs([("svc.ribbon.Max\nFAKE LOG LINE", "1")])
            .unwrap();
    assert!(
        config.warnings().iter().all(|w| !w.contains('\n')),
        "{:?}",
        config.warnings()
    );
}

/// An invalid value under a key holding a line break is reported without
/// a raw line break, so the error cannot forge a log line.
#[test]
fn config_errors_escape_keys_and_values() {
    let err = tower_ribbon::config::RibbonConfig::from_pairs([(
        "sv\nc.ribbon.MaxAutoRetries",
        "not\na number",
    )])
    .unwrap_err();
    let text = err.to_string();
    assert!(!text.contains('\n'), "{text}");
}

/// A client name holding a line break (a quoted YAML key, an escaped
/// properties key) is escaped in every warning that names the client:
/// the semantic warnings (`NFLoadBalancerPingInterval` without a health
/// check path, zone affinity without a zone, `listOfServers` next to a
/// Eureka URL), Spring's not-applied keys and simple discovery's. Every
/// warning is logged as one `tracing` line.
#[test]
fn client_names_cannot_forge_lines_through_warnings() {
    let name = "sv\r\nFAKE LOG LINE";
    let pairs = [
        (format!("{name}.ribbon.NFLoadBalancerPingInterval"), "5"),
        (format!("{name}.ribbon.EnableZoneAffinity"), "true"),
        (format!("{name}.ribbon.listOfServers"), "127.0.0.1:1"),
        (
            "eureka.client.service-url.defaultZone".to_owned(),
            "http://127.0.0.1:8761/eureka",
        ),
        (
            format!("spring.cloud.loadbalancer.clients[{name}].health-check.initial-delay"),
            "1s",
        ),
        (
            format!("spring.cloud.discovery.client.simple.instances.{name}[0].uri"),
            "http://127.0.0.1:2",
        ),
    ];
    let config = tower_ribbon::config::RibbonConfig::from_pairs(pairs).unwrap();
    let naming: Vec<&String> = (config.warnings().iter())
        .filter(|w| w.contains("FAKE LOG LINE"))
        .collect();
    assert_eq!(naming.len(), 5, "{:?}", config.warnings());
    for w in config.warnings() {
        assert!(!w.contains(['\r', '\n']), "{w:?}");
    }
}

/// A bad element of a status-code list is quoted in the error's reason:
/// a line break in it is escaped and a 64 KiB element is cut, so the
/// error is one short line.
#[test]
fn a_bad_status_code_element_is_quoted_in_the_error() {
    let long = "9".repeat(64 * 1024);
    for (element, limit) in [("5\r\nFAKE LOG LINE", 300), (long.as_str(), 600)] {
        let err = tower_ribbon::config::RibbonConfig::from_pairs([(
            "svc.ribbon.retryableStatusCodes",
            format!("503,{element}"),
        )])
        .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains(['\r', '\n']), "{text}");
        assert!(text.len() < limit, "an error of {} bytes", text.len());
        assert!(text.contains("is not an HTTP status code"), "{text}");
    }
}

/// A YAML key that is not a scalar is reported under its parent's key,
/// quoted: a parent key holding a line break cannot forge a log line, and
/// a 1 000-byte one (YAML's implicit keys stop at 1 024) is cut.
#[test]
fn a_non_scalar_key_error_quotes_its_parent_key() {
    let long = "k".repeat(1_000);
    for (parent, limit) in [("sv\\r\\nFAKE LOG LINE", 300), (long.as_str(), 300)] {
        let yaml = format!("\"{parent}\":\n  ? [a, b]\n  : 1\n");
        let err = tower_ribbon::config::RibbonConfig::from_yaml_str(&yaml).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("a key must be a scalar"), "{text}");
        assert!(!text.contains(['\r', '\n']), "{text}");
        assert!(text.len() < limit, "an error of {} bytes", text.len());
    }
}

/// The client named by a `NoSource` or `Conflicting` error is quoted: a
/// client name holding a line break cannot forge a log line.
#[test]
fn errors_naming_a_client_escape_it() {
    let name = "sv\r\nFAKE LOG LINE";
    let config = tower_ribbon::config::RibbonConfig::from_pairs([(
        format!("{name}.ribbon.ReadTimeout"),
        "100",
    )])
    .unwrap();
    let err = config.server_list_kind(name).unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::NoSource);
    let text = err.to_string();
    assert!(text.contains("FAKE LOG LINE"), "{text}");
    assert!(!text.contains(['\r', '\n']), "{text}");
    let config = tower_ribbon::config::RibbonConfig::from_pairs([
        ("a.ribbon.listOfServers".to_owned(), "127.0.0.1:1"),
        ("a.ribbon.MaxAutoRetries".to_owned(), "1"),
        (format!("{name}.ribbon.listOfServers"), "127.0.0.1:2"),
        (format!("{name}.ribbon.MaxAutoRetries"), "2"),
    ])
    .unwrap();
    let err = config.builder().unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Conflicting);
    let text = err.to_string();
    assert!(text.contains("FAKE LOG LINE"), "{text}");
    assert!(!text.contains(['\r', '\n']), "{text}");
}

/// A list of servers is bounded by its entries, not only by its text: each
/// entry becomes an instance of a few hundred bytes. Found by an attack
/// (helper 109): an 18 KB YAML file whose aliases expand one
/// `listOfServers` to 8 MiB of `h:1,` (2 048 000 entries, under every text
/// bound) cost a 1.2 GB heap peak and 12 s to build a balancer of one
/// endpoint, kept 336 MiB and used 289 MiB more at each refresh; 1 MiB of
/// properties made 262 144 instances (117 MiB). Now refused before any
/// entry is parsed (`MAX_LIST_ENTRIES`, 4 096 per list). Peers: a YAML
/// loader that keeps aliases shared is cheap until the data is walked
/// ([nodeca/js-yaml#742](https://github.com/nodeca/js-yaml/issues/742): a
/// 308-byte document, 269 MB once serialized); Spring Boot caps aliases
/// in `application.yml` for the same reason
/// ([spring-projects/spring-boot#23096](https://github.com/spring-projects/spring-boot/issues/23096)).
#[test]
fn a_list_of_servers_of_millions_of_entries_is_refused() {
    let anchor = "h:1,".repeat(4096);
    let yaml = format!(
        "anchor: &a \"{anchor}\"\nsvc:\n  ribbon:\n    listOfServers: [{}]\n",
        vec!["*a"; 500].join(", ")
    );
    assert_eq!(yaml.len(), 18_433);
    let properties = format!("svc.ribbon.listOfServers={}", "h:1,".repeat(250_000));
    let limit = tower_ribbon::discovery::MAX_LIST_ENTRIES as u64;
    assert_eq!(limit, 4096);
    for (name, result) in [
        ("yaml", measured(|| RibbonConfig::from_yaml_str(&yaml))),
        (
            "properties",
            measured(|| RibbonConfig::from_properties_str(&properties)),
        ),
    ] {
        let (result, elapsed, peak) = result;
        let err = result.expect_err("too many servers");
        assert_eq!(err.kind(), ConfigErrorKind::TooLarge, "{name}: {err}");
        assert_eq!(err.limit(), Some(limit), "{name}: {err}");
        assert!(
            err.to_string()
                .contains("`svc.ribbon.listOfServers`: more than 4096 entries"),
            "{name}: {err}"
        );
        assert!(err.to_string().len() < 300, "{name}: {err}");
        eprintln!("{name}: refused in {elapsed:?}, peak heap growth {peak} bytes");
        assert!(elapsed < TIME_LIMIT, "{name}: {elapsed:?}");
        assert!(peak < MEMORY_LIMIT, "{name}: {peak} bytes");
    }
    // `StaticSource::with_list` takes the same bound.
    let err = tower_ribbon::discovery::StaticSource::new()
        .with_list("svc", &"h:1,".repeat(4097))
        .unwrap_err();
    assert_eq!(
        err.kind(),
        tower_ribbon::error::InstanceErrorKind::TooManyEntries
    );
    assert!(err.to_string().len() < 400, "{err}");
    let source = tower_ribbon::discovery::StaticSource::new()
        .with_list("svc", &servers(4096))
        .unwrap();
    assert_eq!(source.instances("svc").unwrap().len(), 4096);
}

/// `n` distinct servers, `h:1,h:2,...` (one server listed twice is listed
/// once).
fn servers(n: usize) -> String {
    (1..=n).map(|port| format!("h:{port},")).collect()
}

/// A global `ribbon.listOfServers` is copied into every client: 4 096
/// entries and 1 024 clients made 4 million instances from 40 KB of
/// properties. All clients' lists together hold at most 65 536 entries.
#[test]
fn a_global_list_copied_into_every_client_is_bounded() {
    let config = |clients: usize| {
        let mut text = format!("ribbon.listOfServers={}\n", servers(4096));
        for i in 0..clients {
            text.push_str(&format!("c{i}.ribbon.ReadTimeout=1000\n"));
        }
        text
    };
    let over = config(17);
    let (result, elapsed, peak) = measured(|| RibbonConfig::from_properties_str(&over));
    let err = result.expect_err("17 × 4 096 entries");
    assert_eq!(err.kind(), ConfigErrorKind::TooLarge, "{err}");
    assert_eq!(err.limit(), Some(65_536), "{err}");
    assert!(err.to_string().contains("over all clients"), "{err}");
    eprintln!("17 clients: refused in {elapsed:?}, peak heap growth {peak} bytes");
    assert!(elapsed < TIME_LIMIT, "{elapsed:?}");
    assert!(peak < MEMORY_LIMIT, "{peak} bytes");
    let at = config(16);
    let (result, elapsed, peak) = measured(|| RibbonConfig::from_properties_str(&at));
    let config = result.expect("16 × 4 096 entries");
    assert_eq!(config.clients().len(), 16);
    assert_eq!(config.client("c15").list_of_servers.unwrap().len(), 4096);
    eprintln!("16 clients: read in {elapsed:?}, peak heap growth {peak} bytes");
    assert!(elapsed < TIME_LIMIT, "{elapsed:?}");
    assert!(peak < 2 * MEMORY_LIMIT, "{peak} bytes");
}

/// Every client gets its own copy of each global value, so a global value
/// costs once per client. Found reading helper 109's finding for its
/// siblings: a 900 KB `ribbon.zone` and 1 000 clients in a 929 KB
/// properties file made 862 MiB of copies in 1.2 s; a global
/// `DeploymentContextBasedVipAddresses` of 450 000 elements had the test
/// killed for memory. Now global values may cost at most 32 MiB copied
/// into every client, refused before any copy.
#[test]
fn a_global_value_copied_into_every_client_is_bounded() {
    let clients: String = (0..1000)
        .map(|i| format!("c{i}.ribbon.ReadTimeout=1000\n"))
        .collect();
    for (key, value) in [
        ("ribbon.zone", "z".repeat(900_000)),
        (
            "spring.cloud.loadbalancer.retry.retryable-exceptions",
            vec!["java.io.IOException"; 1000].join(","),
        ),
        (
            "ribbon.DeploymentContextBasedVipAddresses",
            vec!["vip-address-of-some-service"; 1000].join(","),
        ),
        // A per-service map's `default` entry goes to every client
        // without its own (helper 113: 64 KiB and 1 000 clients, 65 MiB).
        ("spring.cloud.loadbalancer.hint.default", "h".repeat(40_000)),
        (
            "spring.cloud.loadbalancer.health-check.path.DEFAULT",
            format!("/{}", "p".repeat(40_000)),
        ),
    ] {
        let text = format!("{key}={value}\n{clients}");
        let (result, elapsed, peak) = measured(|| RibbonConfig::from_properties_str(&text));
        let err = result.expect_err("copies over the bound");
        assert_eq!(err.kind(), ConfigErrorKind::TooLarge, "{key}: {err}");
        assert_eq!(err.limit(), Some(32 << 20), "{key}: {err}");
        assert!(
            err.to_string().contains("copied into each of 1000 clients"),
            "{err}"
        );
        eprintln!("{key}: refused in {elapsed:?}, peak heap growth {peak} bytes");
        assert!(elapsed < TIME_LIMIT, "{key}: {elapsed:?}");
        assert!(peak < MEMORY_LIMIT, "{key}: {peak} bytes");
    }
    // Ordinary global values and 1 000 clients are read.
    let text = format!(
        "ribbon.zone=eu-west-1a\nribbon.DeploymentContextBasedVipAddresses=a,b,c\n\
         spring.cloud.loadbalancer.retry.retryable-exceptions=java.io.IOException\n{clients}"
    );
    // Measured too: the counters are process-wide.
    let (config, _, _) = measured(|| RibbonConfig::from_properties_str(&text));
    let config = config.unwrap();
    assert_eq!(config.clients().len(), 1000);
    assert_eq!(config.client("c999").zone.as_deref(), Some("eu-west-1a"));
    // Per-service maps are not copied whole into each client (each takes
    // its own entry): 1 000 services with their own health path and hint
    // are read (refused by the first version of the bound; helper 111).
    let text: String = (0..1000)
        .map(|i| {
            format!(
                "spring.cloud.loadbalancer.health-check.path.svc-{i}=/actuator/health\n\
                 spring.cloud.loadbalancer.hint.svc-{i}=zone-{i}\n\
                 spring.cloud.loadbalancer.clients.svc-{i}.configurations=health-check\n"
            )
        })
        .collect();
    let (config, elapsed, peak) = measured(|| RibbonConfig::from_properties_str(&text));
    let config = config.unwrap();
    assert_eq!(config.clients().len(), 1000);
    eprintln!("1 000 per-service paths and hints: read in {elapsed:?}, peak {peak} bytes");
    assert!(peak < MEMORY_LIMIT, "{peak} bytes");
}

/// Each element of a list value is stored apart: 8 MiB of `a,` made 4
/// million strings. Every list value holds at most 1 024 elements,
/// refused before any is copied.
#[test]
fn a_list_value_of_many_elements_is_refused() {
    for (key, element) in [
        ("ribbon.DeploymentContextBasedVipAddresses", "a,"),
        ("svc.ribbon.retryableStatusCodes", "500,"),
        ("spring.cloud.loadbalancer.eager-load.clients", "a,"),
        ("spring.cloud.loadbalancer.retry.retryable-exceptions", "a,"),
        ("eureka.client.serviceUrl.defaultZone", "http://h/,"),
    ] {
        let text = format!("{key}={}", element.repeat(1025));
        let (result, elapsed, peak) = measured(|| RibbonConfig::from_properties_str(&text));
        let err = result.expect_err("1 025 elements");
        assert_eq!(err.kind(), ConfigErrorKind::TooLarge, "{key}: {err}");
        assert_eq!(err.limit(), Some(1024), "{key}: {err}");
        assert!(err.to_string().contains("more than 1024 elements"), "{err}");
        let big = format!("{key}={}", element.repeat(1 << 20 >> 4));
        let (result, elapsed_big, peak_big) = measured(|| RibbonConfig::from_properties_str(&big));
        assert_eq!(result.unwrap_err().limit(), Some(1024), "{key}");
        eprintln!(
            "{key}: refused in {elapsed:?} / {elapsed_big:?}, peak {peak} / {peak_big} bytes"
        );
        assert!(elapsed_big < TIME_LIMIT, "{key}: {elapsed_big:?}");
        assert!(peak_big < MEMORY_LIMIT, "{key}: {peak_big} bytes");
        // 1 024 are read.
        let text = format!("{key}={}", element.repeat(1024));
        let (result, _, _) = measured(|| RibbonConfig::from_properties_str(&text));
        assert!(result.is_ok(), "{key}");
    }
}

/// Values copied into every client from outside `ribbon.*` and
/// `spring.cloud.loadbalancer.*` (found by helper 114): Spring's identity
/// keys, from which each client builds its own subset instance id (a
/// 256 KiB `vcap.application.instance_id` and 200 clients held 51 MiB; a
/// 70 KiB `spring.application.name` in 16 `subset.instance-id`
/// placeholders and 64 clients, 70 MiB), and Eureka's zone, every
/// client's zone (256 KiB and 200 clients, 50 MiB). An identity value
/// over 253 bytes is now ignored with a warning, and Eureka's zone counts
/// toward the 32 MiB of copies.
#[test]
fn identity_keys_and_the_eureka_zone_are_bounded_in_every_client() {
    let clients = |n: usize| -> String {
        (0..n)
            .map(|i| format!("c{i}.ribbon.listOfServers=h:{}\n", i + 1))
            .collect()
    };
    let big = "i".repeat(256 << 10);
    for key in ["vcap.application.instance_id", "spring.application.name"] {
        let placeholders = "${spring.application.name}".repeat(16);
        let text = format!(
            "{key}={big}\nspring.cloud.loadbalancer.subset.instance-id={placeholders}\n{}",
            clients(200)
        );
        let (config, elapsed, peak) = measured(|| RibbonConfig::from_properties_str(&text));
        let config = config.unwrap();
        assert!(
            config.warnings().iter().any(|w| w.contains(&format!(
                "`{key}` of 262144 bytes ignored: an instance id part holds at most 253 bytes"
            ))),
            "{:?}",
            config.warnings()
        );
        let id = config.client("c199").load_balancer.subset.instance_id;
        assert!(
            id.as_ref().is_none_or(|id| id.len() < 1000),
            "{key}: {id:?}"
        );
        eprintln!("{key}: read in {elapsed:?}, peak {peak} bytes");
        assert!(peak < MEMORY_LIMIT, "{key}: {peak} bytes");
    }
    let text = format!("eureka.instance.metadata-map.zone={big}\n{}", clients(200));
    let (result, elapsed, peak) = measured(|| RibbonConfig::from_properties_str(&text));
    let err = result.expect_err("the zone in 200 clients");
    assert_eq!(err.kind(), ConfigErrorKind::TooLarge, "{err}");
    assert_eq!(err.limit(), Some(32 << 20), "{err}");
    eprintln!("eureka zone: refused in {elapsed:?}, peak {peak} bytes");
    assert!(peak < MEMORY_LIMIT, "{peak} bytes");
    // Ordinary identities and zones are read.
    let text = format!(
        "spring.application.name=gateway\nserver.port=8080\n\
         eureka.instance.metadata-map.zone=eu-west-1a\n{}",
        clients(200)
    );
    let (config, _, _) = measured(|| RibbonConfig::from_properties_str(&text));
    let config = config.unwrap();
    assert_eq!(config.client("c7").zone.as_deref(), Some("eu-west-1a"));
    let id = config
        .client("c7")
        .load_balancer
        .subset
        .instance_id
        .unwrap();
    assert!(id.ends_with(":gateway:8080"), "{id}");
}
