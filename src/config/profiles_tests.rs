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
    let (pairs, warnings) = select(docs());
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
    assert_eq!(applied(&select(docs).0), [("a", "1"), ("a", "2")]);
    let docs = vec![
        doc(&[("spring.profiles.default", "local")]),
        doc(&[("spring.config.activate.on-profile", "local"), ("a", "2")]),
        doc(&[("spring.config.activate.on-profile", "default"), ("a", "3")]),
    ];
    assert_eq!(applied(&select(docs).0), [("a", "2")]);
}

/// `spring.profiles.active: ${VAR:prod}` is `prod` (helper 205: read as
/// written, the `prod` document was skipped).
#[test]
fn the_active_profiles_resolve_placeholders() {
    let docs = vec![
        doc(&[("spring.profiles.active", "${TOWER_RIBBON_TEST_UNSET_58:prod}")]),
        doc(&[("spring.config.activate.on-profile", "prod"), ("a", "2")]),
    ];
    assert_eq!(applied(&select(docs).0), [("a", "2")]);
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
    let (pairs, warnings) = select(docs);
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
    let (pairs, warnings) = select(docs);
    assert!(pairs.is_empty());
    assert_eq!(warnings.len(), MAX_UNKNOWN_WARNINGS + 1);
    assert_eq!(
        warnings.last().map(String::as_str),
        Some("19900 more conditional YAML documents skipped")
    );
}
