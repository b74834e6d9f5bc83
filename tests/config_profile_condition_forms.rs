//! Condition forms as Spring Boot 3.5.16 reads them (helper 217's
//! harness): a blank indexed `on-profile[0]`, which Spring refuses, is
//! skipped with a warning (it applied before); an indexed
//! `on-cloud-platform[0]`, which Spring does not bind, is no condition.
#![cfg(feature = "config")]
use tower_ribbon::config::RibbonConfig;

const BASE: &str = "svc.ribbon.listOfServers=127.0.0.1:1\nsvc.ribbon.MaxAutoRetriesNextServer=0\n";

/// Spring refuses to start: IllegalArgumentException "Invalid profile
/// expression []: must contain text". Here: Ok, the document applies with
/// no warning, Some(5) (retries on 5 more servers).
#[test]
fn blank_indexed_on_profile_is_refused() {
    let t = format!(
        "{BASE}#---\nspring.config.activate.on-profile[0]=\nsvc.ribbon.MaxAutoRetriesNextServer=5\n"
    );
    match RibbonConfig::from_properties_str(&t) {
        Err(_) => {}
        Ok(c) => assert!(
            c.client("svc").max_auto_retries_next_server != Some(5) || !c.warnings().is_empty(),
            "applied silently"
        ),
    }
}

/// `on-cloud-platform` is a single enum in Spring: `[0]` is not bound, so the
/// document is unconditional. Spring (no platform): 5. Here: skipped, Some(0).
#[test]
fn indexed_on_cloud_platform_is_not_a_condition() {
    let t = format!(
        "{BASE}#---\nspring.config.activate.on-cloud-platform[0]=kubernetes\nsvc.ribbon.MaxAutoRetriesNextServer=5\n"
    );
    let c = RibbonConfig::from_properties_str(&t).unwrap();
    assert_eq!(c.client("svc").max_auto_retries_next_server, Some(5));
}
