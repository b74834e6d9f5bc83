//! YAML read as Spring Boot (SnakeYAML) reads it (helper 201): a
//! profile-specific document applies only when the file activates its
//! profile (before: always, a `chaos` document sending a POST answered 503
//! to 6 servers); a merge key takes maps only, a quoted `"<<"` is a plain
//! key, an alias names an anchor of its own document (each accepted
//! before); merges in flow style and inside lists, and merge bombs bounded.
use std::time::{Duration, Instant};
use tower_ribbon::config::{ConfigErrorKind, RibbonConfig};

fn client(yaml: &str) -> tower_ribbon::config::ClientConfig {
    RibbonConfig::from_yaml_str(yaml).unwrap().client("svc")
}

#[test]
fn merge_in_flow_style_inside_lists_and_aliases_to_merged_maps() {
    let c = client(
        "d: &d {MaxAutoRetries: 2, ReadTimeout: 100}\nsvc: {ribbon: {<<: *d, ReadTimeout: 300, listOfServers: 127.0.0.1:1}}\n",
    );
    assert_eq!(
        (c.max_auto_retries, c.read_timeout),
        (Some(2), Some(Duration::from_millis(300)))
    );
    // alias to a map that itself merges
    let c =
        client("d: &d {MaxAutoRetries: 2}\nm: &m {<<: *d, ReadTimeout: 300}\nsvc: {ribbon: *m}\n");
    assert_eq!(
        (c.max_auto_retries, c.read_timeout),
        (Some(2), Some(Duration::from_millis(300)))
    );
    // merge inside a list element
    let pairs = "d: &d {uri: 'http://127.0.0.1:9', metadata: {zone: z1}}\n\
        spring: {cloud: {discovery: {client: {simple: {instances: {svc: [{<<: *d, instance-id: i0}, {<<: *d, uri: 'http://127.0.0.1:10', instance-id: i1}]}}}}}}\n";
    let c = client(pairs);
    let l = c.list_of_servers.unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l[1].port(), 10);
    assert_eq!(l[0].port(), 9);
}

/// SnakeYAML refuses `<<: scalar` and `<<: [*a, scalar]`
/// ("expected a mapping or list of mappings for merging"): Spring Boot
/// does not start. Now: a Yaml error.
#[test]
fn merge_of_non_maps_is_an_error() {
    let mut got = Vec::new();
    for y in [
        "svc:\n  ribbon:\n    <<: 5\n    listOfServers: 127.0.0.1:1\n",
        "a: &a {MaxAutoRetries: 1}\nsvc:\n  ribbon:\n    <<: [*a, 7]\n    listOfServers: 127.0.0.1:1\n",
        "svc:\n  ribbon:\n    <<: [[1, 2]]\n    listOfServers: 127.0.0.1:1\n",
    ] {
        got.push((
            y,
            RibbonConfig::from_yaml_str(y)
                .map(|c| (c.client("svc").max_auto_retries, c.warnings().to_vec()))
                .map_err(|e| e.kind()),
        ));
    }
    assert!(
        got.iter()
            .all(|(_, r)| r.as_ref().err() == Some(&ConfigErrorKind::Yaml)),
        "{got:#?}"
    );
}

/// A quoted `"<<"` is a plain string key in YAML 1.1 / SnakeYAML (the
/// merge tag is resolved for plain scalars only).
#[test]
fn quoted_merge_key_is_not_a_merge() {
    let c = client(
        "a: &a {MaxAutoRetries: 3}\nsvc:\n  ribbon:\n    '<<': *a\n    listOfServers: 127.0.0.1:1\n",
    );
    assert_eq!(c.max_auto_retries, None);
}

/// Anchors are per document (SnakeYAML: "found undefined alias").
#[test]
fn alias_across_documents_is_an_error() {
    let r = RibbonConfig::from_yaml_str(
        "a: &a {MaxAutoRetries: 3}\n---\nsvc:\n  ribbon:\n    <<: *a\n    listOfServers: 127.0.0.1:1\n",
    );
    assert_eq!(
        r.map(|c| c.client("svc").max_auto_retries)
            .map_err(|e| e.kind()),
        Err(ConfigErrorKind::Yaml)
    );
}

/// A Spring Boot application.yml with a profile-specific document: with no
/// profile active Spring skips it. Now: its keys do not apply (or at
/// least a warning says they did).
#[test]
fn profile_document_applies_without_the_profile() {
    let yaml = "svc:\n  ribbon:\n    listOfServers: 127.0.0.1:1\n    MaxAutoRetriesNextServer: 1\n\
---\nspring:\n  config:\n    activate:\n      on-profile: chaos\n\
svc:\n  ribbon:\n    MaxAutoRetriesNextServer: 5\n    OkToRetryOnAllOperations: true\n";
    let config = RibbonConfig::from_yaml_str(yaml).unwrap();
    let c = config.client("svc");
    assert!(
        c.max_auto_retries_next_server == Some(1) || !config.warnings().is_empty(),
        "next={:?} all-ops={:?} warnings={:?}",
        c.max_auto_retries_next_server,
        c.ok_to_retry_on_all_operations,
        config.warnings()
    );
}

/// Merge bombs: fan-out 16 per level over 8 levels (16^8 pairs expanded),
/// wide maps merged many times. Typed error, fast.
#[test]
fn merge_bombs_fail_fast() {
    let mut yaml = String::from("l0: &l0\n");
    for k in 0..2000 {
        yaml.push_str(&format!("  k{k}: v\n"));
    }
    for i in 1..9 {
        let refs = vec![format!("*l{}", i - 1); 16].join(", ");
        yaml.push_str(&format!("l{i}: &l{i}\n  <<: [{refs}]\n  own{i}: v\n"));
    }
    yaml.push_str("svc:\n  ribbon:\n    <<: *l8\n    listOfServers: 127.0.0.1:1\n");
    let t = Instant::now();
    let r = RibbonConfig::from_yaml_str(&yaml);
    let el = t.elapsed();
    assert_eq!(
        r.map(|_| ()).map_err(|e| e.kind()),
        Err(ConfigErrorKind::TooLarge)
    );
    assert!(el < Duration::from_secs(1), "{el:?}");
    // a list of many aliases to a merged map of many keys
    let mut yaml = String::from("b: &b\n");
    for k in 0..3000 {
        yaml.push_str(&format!("  k{k}: v\n"));
    }
    yaml.push_str("m: &m {<<: *b, x: 1}\nl:\n");
    for _ in 0..20000 {
        yaml.push_str("  - *m\n");
    }
    let t = Instant::now();
    let r = RibbonConfig::from_yaml_str(&yaml);
    let el = t.elapsed();
    assert_eq!(
        r.map(|_| ()).map_err(|e| e.kind()),
        Err(ConfigErrorKind::TooLarge)
    );
    assert!(el < Duration::from_secs(1), "{el:?}");
}

#[path = "common/chaos_post.rs"]
mod chaos_post;
mod support;

/// Through a balancer: the `chaos`-profile document (inactive) makes a
/// POST answered 503 go to 6 servers. Spring without the profile: 1.
#[tokio::test]
async fn profile_document_retries_a_post() {
    let hits = chaos_post::servers_reached_by_a_post(|list| {
        let yaml = format!(
            "svc:\n  ribbon:\n    listOfServers: {list}\n\
---\nspring:\n  config:\n    activate:\n      on-profile: chaos\n\
svc:\n  ribbon:\n    MaxAutoRetriesNextServer: 5\n    OkToRetryOnAllOperations: true\n"
        );
        RibbonConfig::from_yaml_str(&yaml).unwrap()
    })
    .await;
    assert_eq!(hits, 1, "POST sent to {hits} servers");
}
