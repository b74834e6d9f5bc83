//! Unit tests of `config::policies`.

use super::*;

/// Replicas configured from one file (same name and port, no host
/// name) get different subset ids: the machine's host name, or a
/// random id when it is unknown, comes first, as in Spring. Before,
/// each had `edge:9090`, so all of them chose the same subset.
#[test]
fn replicas_of_one_file_get_their_own_ids() {
    let mut one = AppIdentity::default();
    one.read("spring.application.name", "edge");
    one.read("server.port", "9090");
    let mut other = one.clone();
    one.fill_hostname(Some("pod-a".to_owned()));
    other.fill_hostname(Some("pod-b".to_owned()));
    assert_eq!(one.default_id().as_deref(), Some("pod-a:edge:9090"));
    assert_eq!(other.default_id().as_deref(), Some("pod-b:edge:9090"));
    let mut unknown = AppIdentity::default();
    unknown.read("server.port", "9090");
    unknown.fill_hostname(None);
    assert_eq!(unknown.default_id(), Some(format!("{}:9090", process_id())));
    // Set in the file, or no identity key at all: unchanged.
    let mut set = AppIdentity::default();
    set.read("spring.cloud.client.hostname", "host-1");
    set.read("server.port", "9090");
    set.fill_hostname(Some("pod-a".to_owned()));
    assert_eq!(set.default_id().as_deref(), Some("host-1:9090"));
    let mut none = AppIdentity::default();
    none.fill_hostname(Some("pod-a".to_owned()));
    assert_eq!(none.default_id(), None);
}

/// A host name every unnamed machine has is no name: the kernel's
/// `(none)` and `localhost` (`localhost.localdomain`) give way to the
/// next source, else to the random id. Before, a fleet of machines
/// left `localhost.localdomain` had one subset id, `(none)` too.
#[test]
fn a_placeholder_host_name_names_no_machine() {
    let some = |s: &str| Some(s.to_owned());
    for shared in ["(none)", "localhost", "LocalHost.localdomain\n", "localhost."] {
        assert_eq!(pick_hostname([some(shared), None, None]), None, "{shared}");
        let next = pick_hostname([some(shared), some("pod-a"), None]);
        assert_eq!(next.as_deref(), Some("pod-a"), "{shared}");
    }
    for named in ["localhost-7", "localhosts", "web-1.localdomain", "pod-a"] {
        let got = pick_hostname([some(named), some("other"), None]);
        assert_eq!(got.as_deref(), Some(named));
    }
    assert_eq!(pick_hostname([some(" \n"), None, some("WIN-1")]).as_deref(), Some("WIN-1"));
    assert_eq!(pick_hostname([some(&"h".repeat(254)), None, None]), None);
    assert_eq!(pick_hostname([some("a b"), None, None]), None);
}

#[test]
fn default_instance_id_as_spring_builds_it() {
    let mut app = AppIdentity::default();
    assert_eq!(app.default_id(), None);
    app.read("server.port", "8080");
    assert_eq!(app.default_id().as_deref(), Some("8080"));
    app.read("spring.application.name", "gateway");
    assert_eq!(app.default_id().as_deref(), Some("gateway:8080"));
    app.read("spring.cloud.client.hostname", "host-1");
    app.read("spring.application.instance_id", "7");
    assert_eq!(app.default_id().as_deref(), Some("host-1:gateway:7"));
    app.read("vcap.application.instance_id", "cf-1");
    assert_eq!(app.default_id().as_deref(), Some("cf-1"));
    app.read("other.key", "x");
    assert_eq!(app.resolve("${spring.application.name}-1"), "gateway-1");
    assert_eq!(app.resolve("a${x.y:dflt}b${server.port}"), "adfltb8080");
    assert_eq!(app.resolve("${unknown}${"), "${unknown}${");
    assert_eq!(app.resolve("é${spring.application.name}é"), "égatewayé");
}

#[test]
fn slow_start_settings() {
    assert_eq!(SlowStartSettings::default().config(), None);
    let s = SlowStartSettings {
        window: Some(Duration::from_secs(30)),
        aggression: Some(2.0),
        min_weight_percent: Some(5.0),
    };
    let c = s.config().unwrap();
    assert_eq!((c.window, c.aggression, c.min_weight_percent), (Duration::from_secs(30), 2.0, 5.0));
}
