//! Unit tests of `config::profiles` (no `SPRING_PROFILES_*` or cloud
//! platform variable is set where the suite runs).

use super::*;

fn doc(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn applied(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .filter(|(k, _)| !is_profile_condition(k) && !is_platform_condition(k))
        .filter(|(k, _)| !k.starts_with("spring.profiles."))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn documents_apply_by_the_active_profiles() {
    let docs = || {
        vec![
            doc(&[("a", "1"), ("spring.profiles.active", "dev, eu")]),
            doc(&[("spring.config.activate.on-profile", "dev"), ("a", "2")]),
            doc(&[("spring.config.activate.on-profile", "prod"), ("a", "3")]),
            doc(&[("spring.profiles", "!prod"), ("b", "4")]),
            doc(&[("Spring.Config.Activate.OnProfile", "x,eu"), ("c", "5")]),
            doc(&[("spring.config.activate.on-profile", "dev & eu"), ("d", "6")]),
            doc(&[("spring.config.activate.on-profile", ""), ("e", "7")]),
        ]
    };
    let (pairs, warnings) = select(docs(), "YAML");
    assert_eq!(
        applied(&pairs),
        [("a", "1"), ("a", "2"), ("b", "4"), ("c", "5"), ("e", "7")]
    );
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("YAML document 3 (profile `prod`) skipped"));
    assert!(warnings[1].contains("expression is not read"));
}

/// Nothing active: the default profiles (`default`), as Spring Boot's
/// `Profiles.getAccepted` (helper 205: `on-profile: default` was skipped,
/// `!default` applied).
#[test]
fn with_nothing_active_the_default_profile_is() {
    let docs = vec![
        doc(&[("a", "1")]),
        doc(&[("spring.config.activate.on-profile", "default"), ("a", "2")]),
        doc(&[("spring.config.activate.on-profile", "!default"), ("a", "3")]),
    ];
    assert_eq!(applied(&select(docs, "YAML").0), [("a", "1"), ("a", "2")]);
    let docs = vec![
        doc(&[("spring.profiles.default", "local")]),
        doc(&[("spring.config.activate.on-profile", "local"), ("a", "2")]),
        doc(&[("spring.config.activate.on-profile", "default"), ("a", "3")]),
    ];
    assert_eq!(applied(&select(docs, "YAML").0), [("a", "2")]);
}

/// `spring.profiles.active: ${VAR:prod}` is `prod` (helper 205: read as
/// written, the `prod` document was skipped).
#[test]
fn the_active_profiles_resolve_placeholders() {
    let docs = vec![
        doc(&[("spring.profiles.active", "${TOWER_RIBBON_TEST_UNSET_58:prod}")]),
        doc(&[("spring.config.activate.on-profile", "prod"), ("a", "2")]),
    ];
    assert_eq!(applied(&select(docs, "YAML").0), [("a", "2")]);
}

/// A document for a cloud platform applies only there; one not detected
/// here is skipped with a warning (helper 205: `on-cloud-platform:
/// kubernetes` applied everywhere).
#[test]
fn cloud_platform_documents_apply_on_their_platform() {
    let docs = vec![
        doc(&[("spring.config.activate.on-cloud-platform", "kubernetes"), ("a", "1")]),
        doc(&[("spring.config.activate.on-cloud-platform", "none"), ("a", "2")]),
        doc(&[("spring.config.activate.on-cloud-platform", "azure_app_service"), ("a", "3")]),
    ];
    let (pairs, warnings) = select(docs, "YAML");
    assert_eq!(applied(&pairs), [("a", "2")]);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
}

/// Warnings for skipped documents are bounded like unknown keys' (helper
/// 205: 20 000 documents gave 20 000 warnings, 4 MB).
#[test]
fn skipped_documents_warn_within_the_bound() {
    let docs: Vec<_> = (0..20_000)
        .map(|i| doc(&[("spring.config.activate.on-profile", "p"), ("k", &i.to_string())]))
        .collect();
    let (pairs, warnings) = select(docs, "YAML");
    assert!(pairs.is_empty());
    assert_eq!(warnings.len(), MAX_UNKNOWN_WARNINGS + 1);
    assert_eq!(
        warnings.last().map(String::as_str),
        Some("19900 more conditional YAML documents skipped")
    );
}

/// `spring.profiles.include` joins the active profiles and groups expand
/// them, as Spring Boot 2.4+ reads them: before, both were ignored without
/// a warning, so a `!prod` document retrying POSTs on five more servers
/// applied with `prod` included or reached through a group (helper 210).
#[test]
fn included_profiles_and_groups_are_active() {
    let with = |plain: &[(&str, &str)]| {
        let docs = vec![
            doc(plain),
            doc(&[("spring.config.activate.on-profile", "!prod"), ("a", "chaos")]),
            doc(&[("spring.config.activate.on-profile", "default"), ("b", "default")]),
            doc(&[("spring.config.activate.on-profile", "eu"), ("c", "eu")]),
        ];
        let (pairs, _) = select(docs, "YAML");
        applied(&pairs).into_iter().map(|(_, v)| v.to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(with(&[]), ["chaos", "default"]);
    assert_eq!(with(&[("spring.profiles.include", "prod")]), Vec::<String>::new());
    assert_eq!(with(&[("spring.profiles.include[0]", "prod")]), Vec::<String>::new());
    assert_eq!(
        with(&[("spring.profiles.active", "live"), ("spring.profiles.group.live", "prod, eu")]),
        ["eu"]
    );
    // Groups of groups, each once (a cycle ends).
    assert_eq!(
        with(&[
            ("spring.profiles.active", "live"),
            ("spring.profiles.group.live[0]", "region"),
            ("spring.profiles.group.live[1]", "prod"),
            ("spring.profiles.group.region", "eu,live"),
        ]),
        ["eu"]
    );
    // The default profile's group expands too.
    assert_eq!(
        with(&[("spring.profiles.group.default", "eu")]),
        ["chaos", "default", "eu"]
    );
}

#[test]
fn an_include_in_a_profile_specific_document_is_ignored_with_a_warning() {
    let docs = vec![
        doc(&[("a", "1")]),
        doc(&[("spring.config.activate.on-profile", "x"), ("spring.profiles.include", "prod")]),
        doc(&[("spring.config.activate.on-profile", "!prod"), ("a", "2")]),
    ];
    let (pairs, warnings) = select(docs, "YAML");
    assert_eq!(applied(&pairs), [("a", "1"), ("a", "2")]);
    assert!(warnings.iter().any(|w| w.contains("`spring.profiles.include` in a profile-specific")), "{warnings:?}");
}

/// 16 000 active profiles against a 16 000-term condition took 2.7 s
/// (a list lookup per term; helper 208); a set makes it linear. The
/// active set stops at 1 024, with a warning.
#[test]
fn long_profile_lists_are_linear_and_capped() {
    let active: Vec<String> = (0..16_000).map(|i| format!("p{i}")).collect();
    let condition: Vec<String> = (0..16_000).map(|i| format!("q{i}")).collect();
    let docs = vec![
        doc(&[("spring.profiles.active", &active.join(","))]),
        doc(&[("spring.config.activate.on-profile", &condition.join(",")), ("a", "1")]),
        doc(&[("spring.config.activate.on-profile", "p1000"), ("b", "2")]),
        doc(&[("spring.config.activate.on-profile", "p1024"), ("c", "3")]),
    ];
    let started = std::time::Instant::now();
    let (pairs, warnings) = select(docs, "YAML");
    let took = started.elapsed();
    assert_eq!(applied(&pairs), [("b", "2")]);
    assert!(warnings.iter().any(|w| w.starts_with("more than 1024 active profiles")), "{warnings:?}");
    // Debug build, shared machine: about 20 ms; 2.7 s before.
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");
}
