//! List-valued profile keys take one source's value, as Spring Boot's
//! binder does: per document the plain value, else its indexed items; a
//! group's members from the later document as a whole. Before, every
//! include and group item was unioned, so a profile Spring does not
//! activate was active here and its document (retrying a POST on 5 more
//! servers) applied (helper 213, checked against Spring Boot 3.5.16).
#![cfg(feature = "config")]
use tower_ribbon::config::RibbonConfig;

const BASE: &str = "svc.ribbon.listOfServers=127.0.0.1:1\nsvc.ribbon.MaxAutoRetriesNextServer=0\n";
const PROD: &str = "#---\nspring.config.activate.on-profile=prod\nsvc.ribbon.MaxAutoRetriesNextServer=5\nsvc.ribbon.OkToRetryOnAllOperations=true\n";

fn read(middle: &str) -> (Option<u32>, Option<bool>) {
    let p = format!("{BASE}{middle}{PROD}");
    let c = RibbonConfig::from_properties_str(&p).unwrap();
    let s = c.client("svc");
    (
        s.max_auto_retries_next_server,
        s.ok_to_retry_on_all_operations,
    )
}

/// Spring: ACTIVE [a] (the plain value wins in its document). Here
/// [a, prod]: observed (Some(5), Some(true)).
#[test]
fn plain_include_beats_indexed_in_one_document() {
    assert_eq!(
        read("spring.profiles.include=a\nspring.profiles.include[0]=prod\n"),
        (Some(0), None)
    );
}

/// Spring: ACTIVE [live, eu] (the later document's group list replaces
/// the earlier one). Here [live, prod, eu]: observed (Some(5), Some(true)).
#[test]
fn a_later_documents_indexed_group_replaces_the_earlier_list() {
    assert_eq!(
        read(
            "spring.profiles.group.live=prod\nspring.profiles.active=live\n#---\nspring.profiles.group.live[0]=eu\n"
        ),
        (Some(0), None)
    );
}
