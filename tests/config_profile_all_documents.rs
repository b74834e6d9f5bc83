//! Spring Boot 3.5.16 chooses the active and default profiles and the
//! groups over *every* document of the file, those whose `on-profile` or
//! `on-cloud-platform` condition is not met included (the later document
//! wins, plain or indexed); only includes come from the documents read
//! early. Before, they were read from the early documents alone, so a
//! `!prod` document retrying on 5 more servers applied where Spring runs
//! in `prod` and skips it (helper 217 ran each file through
//! `SpringApplication`; Spring's result is beside each test).
#![cfg(feature = "config")]
use tower_ribbon::config::RibbonConfig;

const BASE: &str = "svc.ribbon.listOfServers=127.0.0.1:1\nsvc.ribbon.MaxAutoRetriesNextServer=0\n";
const NOT_PROD: &str =
    "#---\nspring.config.activate.on-profile=!prod\nsvc.ribbon.MaxAutoRetriesNextServer=5\n";

fn next(middle: &str) -> Option<u32> {
    let text = format!("{BASE}{middle}{NOT_PROD}");
    RibbonConfig::from_properties_str(&text)
        .unwrap()
        .client("svc")
        .max_auto_retries_next_server
}

/// Spring: ACTIVE=prod, MaxAutoRetriesNextServer=0. Here: Some(5).
#[test]
fn active_in_unmet_profile_document() {
    let m = "#---\nspring.config.activate.on-profile=other\nspring.profiles.active=prod\n";
    assert_eq!(next(m), Some(0));
}

/// Spring: ACTIVE=prod (the later document beats the plain `dev`), 0. Here: Some(5).
#[test]
fn indexed_active_in_unmet_profile_document_beats_plain() {
    let m = "spring.profiles.active=dev\n#---\nspring.config.activate.on-profile=other\nspring.profiles.active[0]=prod\n";
    assert_eq!(next(m), Some(0));
}

/// Spring: ACTIVE=prod, 0 (not on Kubernetes). Here: Some(5).
#[test]
fn active_in_unmet_cloud_platform_document() {
    let m = "spring.profiles.active=dev\n#---\nspring.config.activate.on-cloud-platform=kubernetes\nspring.profiles.active=prod\n";
    assert_eq!(next(m), Some(0));
}

/// Spring: ACTIVE=prod, 0 (a document `!dev` while `dev` is active). Here: Some(5).
#[test]
fn indexed_active_in_document_its_own_condition_excludes() {
    let m = "spring.profiles.active=dev\n#---\nspring.config.activate.on-profile=!dev\nspring.profiles.active[0]=prod\n";
    assert_eq!(next(m), Some(0));
}

/// Spring: ACTIVE=[], default profiles [prod], 0. Here: Some(5).
#[test]
fn default_in_unmet_profile_document() {
    let m = "#---\nspring.config.activate.on-profile=other\nspring.profiles.default=prod\n";
    assert_eq!(next(m), Some(0));
}

/// Spring: ACTIVE=dev,prod (group read from the unmet document), 0. Here: Some(5).
#[test]
fn group_in_unmet_profile_document() {
    let m = "spring.profiles.active=dev\n#---\nspring.config.activate.on-profile=other\nspring.profiles.group.dev=prod\n";
    assert_eq!(next(m), Some(0));
}

/// The other direction. Spring: ACTIVE=x (from the unmet `dev` document),
/// so `!prod` applies: 5. Here: active `prod`, Some(0).
#[test]
fn later_unmet_document_overrides_prod() {
    let m = "spring.profiles.active=prod\n#---\nspring.config.activate.on-profile=dev\nspring.profiles.active=x\n";
    assert_eq!(next(m), Some(5));
}

/// YAML, a list value. Spring: ACTIVE=prod, 0. Here: Some(5).
#[test]
fn yaml_list_active_in_unmet_profile_document() {
    let y = "svc.ribbon:\n  listOfServers: 127.0.0.1:1\n  MaxAutoRetriesNextServer: 0\nspring.profiles.active: dev\n---\nspring.config.activate.on-profile: other\nspring.profiles.active: [prod]\n---\nspring.config.activate.on-profile: \"!prod\"\nsvc.ribbon.MaxAutoRetriesNextServer: 5\n";
    let c = RibbonConfig::from_yaml_str(y).unwrap();
    assert_eq!(c.client("svc").max_auto_retries_next_server, Some(0));
}
