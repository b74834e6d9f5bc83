//! Profiles as Spring Boot 2.4+ reads them beyond `spring.profiles.active`
//! (helper 210): `spring.profiles.include`, `spring.profiles.group.*` and
//! multi-document `.properties` files (`#---`). Before, none was read, so a
//! `!prod` or `chaos` document retrying POSTs on five more servers applied
//! where Spring skips it, without a warning (a POST answered 503 reached 6
//! servers through a balancer).
#![cfg(feature = "config")]
use tower_ribbon::config::RibbonConfig;

const BASE: &str =
    "svc:\n  ribbon:\n    listOfServers: 127.0.0.1:1\n    MaxAutoRetriesNextServer: 0\n";
const CHAOS: &str =
    "svc:\n  ribbon:\n    MaxAutoRetriesNextServer: 5\n    OkToRetryOnAllOperations: true\n";

fn show(c: &RibbonConfig) -> (Option<u32>, Option<bool>) {
    let s = c.client("svc");
    (
        s.max_auto_retries_next_server,
        s.ok_to_retry_on_all_operations,
    )
}

/// Spring Boot: `spring.profiles.include: prod` activates `prod`
/// (ConfigDataEnvironment binds INCLUDE_PROFILES into the active ones),
/// so an `on-profile: '!prod'` document is skipped.
#[test]
fn include_activates_a_profile() {
    let y = format!(
        "{BASE}spring:\n  profiles:\n    include: prod\n---\nspring:\n  config:\n    activate:\n      on-profile: '!prod'\n{CHAOS}"
    );
    let c = RibbonConfig::from_yaml_str(&y).unwrap();
    assert_eq!(
        show(&c),
        (Some(0), None),
        "the `!prod` document retried POSTs on 5 more servers"
    );
}

/// Spring Boot: `spring.profiles.group.production: prod` with
/// `production` active makes `prod` active too.
#[test]
fn group_expands_the_active_profile() {
    let y = format!(
        "{BASE}spring:\n  profiles:\n    active: production\n    group:\n      production: prod\n---\nspring:\n  config:\n    activate:\n      on-profile: '!prod'\n{CHAOS}"
    );
    let c = RibbonConfig::from_yaml_str(&y).unwrap();
    assert_eq!(show(&c), (Some(0), None));
}

/// Spring Boot 2.4+: a `.properties` file splits into documents at `#---`
/// and `spring.config.activate.on-profile` conditions the document below
/// it. With no profile active, the chaos document does not apply.
#[test]
fn properties_documents_are_conditional() {
    let p = "svc.ribbon.listOfServers=127.0.0.1:1\nsvc.ribbon.MaxAutoRetriesNextServer=0\n#---\nspring.config.activate.on-profile=chaos\nsvc.ribbon.MaxAutoRetriesNextServer=5\nsvc.ribbon.OkToRetryOnAllOperations=true\n";
    let c = RibbonConfig::from_properties_str(p).unwrap();
    assert_eq!(
        show(&c),
        (Some(0), None),
        "a chaos document of a .properties file applied with no profile active"
    );
}

#[path = "common/chaos_post.rs"]
mod chaos_post;
mod support;

/// Through a balancer: the `.properties` file's chaos document (profile
/// not active) sends a POST answered 503 to 6 servers. Spring Boot 2.4+
/// with no profile active: 1.
#[tokio::test]
async fn properties_chaos_document_retries_a_post() {
    let hits = chaos_post::servers_reached_by_a_post(|list| {
        RibbonConfig::from_properties_str(&format!("svc.ribbon.listOfServers={list}\n#---\nspring.config.activate.on-profile=chaos\nsvc.ribbon.MaxAutoRetriesNextServer=5\nsvc.ribbon.OkToRetryOnAllOperations=true\n")).unwrap()
    })
    .await;
    assert_eq!(hits, 1, "POST sent to {hits} servers");
}

/// The separator rules of Spring Boot's `OriginTrackedPropertiesLoader`:
/// `!---` splits too; a separator right after a comment of the same
/// character, indented, followed by text, or inside a continued value does
/// not; a comment right after a separator undoes it; CRLF lines split.
#[test]
fn properties_separators_as_spring_boot_reads_them() {
    let chaos = "spring.config.activate.on-profile=chaos\nsvc.ribbon.MaxAutoRetriesNextServer=5\n";
    let read = |separator: &str| {
        let p = format!(
            "svc.ribbon.listOfServers=127.0.0.1:1\nsvc.ribbon.MaxAutoRetriesNextServer=0\n{separator}{chaos}"
        );
        RibbonConfig::from_properties_str(&p)
            .unwrap()
            .client("svc")
            .max_auto_retries_next_server
    };
    // Split: the chaos document is skipped (profile not active).
    assert_eq!(read("#---\n"), Some(0));
    assert_eq!(read("!---\n"), Some(0));
    assert_eq!(read("#---  \n"), Some(0));
    assert_eq!(read("! note\n#---\n"), Some(0));
    // Not split: one document, which the chaos condition then covers
    // whole (as Spring Boot reads it), so no value of it applies.
    assert_eq!(read("# note\n#---\n"), None);
    assert_eq!(read(" #---\n"), None);
    assert_eq!(read("#--- x\n"), None);
    assert_eq!(read("#----\n"), None);
    assert_eq!(read("#---\n# the comment undoes the separator\n"), None);
    // Inside a continued value `#---` is text: one document, conditional.
    assert_eq!(read("info.note=a value going on\\\n#---\n"), None);
    let crlf = format!(
        "svc.ribbon.listOfServers=127.0.0.1:1\r\nsvc.ribbon.MaxAutoRetriesNextServer=0\r\n#---\r\n{}",
        chaos.replace('\n', "\r\n")
    );
    let c = RibbonConfig::from_properties_str(&crlf).unwrap();
    assert_eq!(c.client("svc").max_auto_retries_next_server, Some(0));
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.starts_with("properties document 2 (profile `chaos`) skipped")),
        "{:?}",
        c.warnings()
    );
}

/// A syntax error's line counts from the file's start, not its document's.
#[test]
fn a_properties_error_names_the_files_line() {
    let p = "a=1\n#---\nb=2\nc=\\u12\n";
    let e = RibbonConfig::from_properties_str(p).unwrap_err();
    assert_eq!(e.line(), Some(4), "{e}");
}
