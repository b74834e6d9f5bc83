//! Active and default profiles found where Spring Boot 3.5.16 finds them
//! (helper 213, run on the same files): indexed `spring.profiles.active[0]`
//! and `.default[0]`, and `active` / `include` in a document whose only
//! condition is a cloud platform that matches. Before, each was missed and
//! a `!prod` document retried a POST on 5 more servers in prod, silently.
#![cfg(feature = "config")]
use tower_ribbon::config::RibbonConfig;

const BASE: &str = "svc.ribbon.listOfServers=127.0.0.1:1\nsvc.ribbon.MaxAutoRetriesNextServer=0\n";
const NOT_PROD: &str = "#---\nspring.config.activate.on-profile=!prod\nsvc.ribbon.MaxAutoRetriesNextServer=5\nsvc.ribbon.OkToRetryOnAllOperations=true\n";

fn read(middle: &str) -> (Option<u32>, Option<bool>, Vec<String>) {
    let p = format!("{BASE}{middle}{NOT_PROD}");
    let c = RibbonConfig::from_properties_str(&p).unwrap();
    let s = c.client("svc");
    (
        s.max_auto_retries_next_server,
        s.ok_to_retry_on_all_operations,
        c.warnings().to_vec(),
    )
}

fn no_platform_detected() -> bool {
    [
        "KUBERNETES_SERVICE_HOST",
        "VCAP_APPLICATION",
        "VCAP_SERVICES",
        "DYNO",
        "HC_LANDSCAPE",
    ]
    .iter()
    .all(|v| std::env::var_os(v).is_none())
        && std::env::var_os("SPRING_PROFILES_ACTIVE").is_none()
}

/// Spring: ACTIVE [prod]. Here: `prod` unread, observed (Some(5), Some(true)), no warning.
#[test]
fn indexed_active_profile() {
    assert!(no_platform_detected());
    let (next, all, w) = read("spring.profiles.active[0]=prod\n");
    assert_eq!((next, all), (Some(0), None), "warnings {w:?}");
}

/// Spring: ACTIVE [], DEFAULT [prod]. Here: observed (Some(5), Some(true)).
#[test]
fn indexed_default_profile() {
    assert!(no_platform_detected());
    let (next, all, w) = read("spring.profiles.default[0]=prod\n");
    assert_eq!((next, all), (Some(0), None), "warnings {w:?}");
}

/// Spring: ACTIVE [prod] (the platform document is active before
/// profiles are read). Here: observed (Some(5), Some(true)), no warning.
#[test]
fn active_profile_in_a_cloud_platform_document() {
    assert!(no_platform_detected());
    let (next, all, w) =
        read("#---\nspring.config.activate.on-cloud-platform=none\nspring.profiles.active=prod\n");
    assert_eq!((next, all), (Some(0), None), "warnings {w:?}");
}

/// Spring: ACTIVE [prod]. Here: observed (Some(5), Some(true)) and the
/// warning claims Spring refuses the key there.
#[test]
fn include_in_a_cloud_platform_document() {
    assert!(no_platform_detected());
    let (next, all, w) =
        read("#---\nspring.config.activate.on-cloud-platform=none\nspring.profiles.include=prod\n");
    assert_eq!((next, all), (Some(0), None), "warnings {w:?}");
}
