//! An indexed profile condition (`spring.config.activate.on-profile[0]`,
//! the ordinary `.properties` spelling of a list) is a condition, as Spring
//! Boot binds it. Before, the document was read as unconditional, with no
//! warning: a chaos document's POST answered 503 reached 6 servers where
//! Spring Boot 3.5.16 (run on the same file by helper 213) sends it to 1.
#![cfg(feature = "config")]
use tower_ribbon::config::RibbonConfig;

const BASE: &str = "svc.ribbon.listOfServers=127.0.0.1:1\nsvc.ribbon.MaxAutoRetriesNextServer=0\n";
const CHAOS: &str =
    "svc.ribbon.MaxAutoRetriesNextServer=5\nsvc.ribbon.OkToRetryOnAllOperations=true\n";

fn read(p: &str) -> (Option<u32>, Option<bool>, Vec<String>) {
    let c = RibbonConfig::from_properties_str(p).unwrap();
    let s = c.client("svc");
    (
        s.max_auto_retries_next_server,
        s.ok_to_retry_on_all_operations,
        c.warnings().to_vec(),
    )
}

#[test]
fn indexed_on_profile_is_a_condition() {
    let p = format!("{BASE}#---\nspring.config.activate.on-profile[0]=chaos\n{CHAOS}");
    let (next, all, warnings) = read(&p);
    // Observed: (Some(5), Some(true)), warnings [].
    assert_eq!(
        (next, all),
        (Some(0), None),
        "chaos document applied with no profile active; warnings {warnings:?}"
    );
}

#[test]
fn indexed_on_profile_in_yaml_is_a_condition() {
    let y = "svc:\n  ribbon:\n    listOfServers: 127.0.0.1:1\n    MaxAutoRetriesNextServer: 0\n---\nspring.config.activate.on-profile[0]: chaos\nsvc:\n  ribbon:\n    MaxAutoRetriesNextServer: 5\n    OkToRetryOnAllOperations: true\n";
    let c = RibbonConfig::from_yaml_str(y).unwrap();
    let s = c.client("svc");
    assert_eq!(
        (
            s.max_auto_retries_next_server,
            s.ok_to_retry_on_all_operations
        ),
        (Some(0), None)
    );
}

#[path = "common/chaos_post.rs"]
mod chaos_post;
mod support;

/// Through a balancer: a POST answered 503 reaches 6 servers (Spring: 1).
#[tokio::test]
async fn indexed_on_profile_chaos_retries_a_post() {
    let hits = chaos_post::servers_reached_by_a_post(|list| {
        RibbonConfig::from_properties_str(&format!("svc.ribbon.listOfServers={list}\n#---\nspring.config.activate.on-profile[0]=chaos\n{CHAOS}")).unwrap()
    })
    .await;
    assert_eq!(hits, 1, "POST sent to {hits} servers");
}
