//! Profile documents against Spring Boot's ConfigData rules (helper 205):
//! with nothing active the default profile is (`on-profile: default`
//! applies, `!default` does not; before the reverse, `!default` retrying
//! POSTs on 5 more servers), placeholders in `spring.profiles.active`
//! resolve, `on-cloud-platform` documents apply only on their platform, an
//! empty `on-profile` always applies, skipped documents warn within the
//! bound; flow and block lists, `---` edge cases.
use tower_ribbon::config::RibbonConfig;

fn cfg(yaml: &str) -> RibbonConfig {
    RibbonConfig::from_yaml_str(yaml).unwrap()
}

/// `svc`'s next-server retries and all-operations flag: `(Some(0), None)`
/// when only `BASE` applied.
fn post_retries(c: &RibbonConfig) -> (Option<u32>, Option<bool>) {
    let s = c.client("svc");
    (
        s.max_auto_retries_next_server,
        s.ok_to_retry_on_all_operations,
    )
}

const BASE: &str =
    "svc:\n  ribbon:\n    listOfServers: 127.0.0.1:1\n    MaxAutoRetriesNextServer: 0\n";

/// Spring Boot: with no active profile the accepted profiles are the
/// default ones (`spring.profiles.default`, `default`), so an
/// `on-profile: default` document applies.
#[test]
fn p1_on_profile_default_applies_with_no_profile_active() {
    let c = cfg(&format!(
        "{BASE}---\nspring:\n  config:\n    activate:\n      on-profile: default\nsvc:\n  ribbon:\n    MaxAutoRetriesNextServer: 4\n"
    ));
    assert_eq!(c.client("svc").max_auto_retries_next_server, Some(4));
}

/// `!default` with no profile active: Spring skips it (accepted = [default]).
#[test]
fn p2_not_default_is_skipped_with_no_profile_active() {
    let c = cfg(&format!(
        "{BASE}---\nspring:\n  config:\n    activate:\n      on-profile: '!default'\nsvc:\n  ribbon:\n    MaxAutoRetriesNextServer: 5\n    OkToRetryOnAllOperations: true\n"
    ));
    assert_eq!(post_retries(&c), (Some(0), None));
}

/// Spring resolves placeholders in spring.profiles.active.
#[test]
fn p3_placeholder_in_active() {
    let c = cfg(&format!(
        "spring:\n  profiles:\n    active: ${{ATTACK58I_UNSET_VAR:prod}}\n{BASE}---\nspring:\n  config:\n    activate:\n      on-profile: prod\nsvc:\n  ribbon:\n    MaxAutoRetriesNextServer: 3\n"
    ));
    assert_eq!(c.client("svc").max_auto_retries_next_server, Some(3));
}

/// on-cloud-platform: kubernetes on a machine that is not Kubernetes:
/// Spring skips the document.
#[test]
fn p4_on_cloud_platform() {
    let c = cfg(&format!(
        "{BASE}---\nspring:\n  config:\n    activate:\n      on-cloud-platform: kubernetes\nsvc:\n  ribbon:\n    MaxAutoRetriesNextServer: 5\n    OkToRetryOnAllOperations: true\n"
    ));
    assert_eq!(post_retries(&c), (Some(0), None));
}

/// on-profile: '' — Spring's Activate: an empty onProfile matches.
#[test]
fn p5_empty_on_profile() {
    let c = cfg(&format!(
        "{BASE}---\nspring:\n  config:\n    activate:\n      on-profile: ''\nsvc:\n  ribbon:\n    MaxAutoRetriesNextServer: 2\n"
    ));
    assert_eq!(c.client("svc").max_auto_retries_next_server, Some(2));
}

/// Warnings for skipped documents: bounded in number?
#[test]
fn p6_many_skipped_documents_warnings_bounded() {
    let mut y = String::from(BASE);
    let long = "x".repeat(100);
    y.push_str(&format!("spring:\n  profiles:\n    active: {long}\n"));
    for i in 0..20_000 {
        y.push_str(&format!("---\nspring.profiles: p{i}\n"));
    }
    println!("yaml bytes {}", y.len());
    let t = std::time::Instant::now();
    let c = cfg(&y);
    let total: usize = c.warnings().iter().map(String::len).sum();
    println!(
        "warnings {} total bytes {} took {:?} first {:?}",
        c.warnings().len(),
        total,
        t.elapsed(),
        c.warnings().first()
    );
    assert!(c.warnings().len() <= 101, "{} warnings", c.warnings().len());
}

/// spring.profiles.active inside a profile document: Spring Boot refuses
/// (InvalidConfigDataPropertyException); here?
#[test]
fn p7_active_inside_profile_document() {
    let r = RibbonConfig::from_yaml_str(&format!(
        "{BASE}spring.profiles.active: dev\n---\nspring:\n  config:\n    activate:\n      on-profile: dev\n  profiles:\n    active: chaos\n---\nspring.config.activate.on-profile: chaos\nsvc:\n  ribbon:\n    MaxAutoRetriesNextServer: 5\n"
    ));
    match r {
        Ok(c) => println!(
            "ok next={:?} warnings {:?}",
            c.client("svc").max_auto_retries_next_server,
            c.warnings()
        ),
        Err(e) => println!("err {e}"),
    }
}

/// on-profile in YAML list form.
#[test]
fn p8_on_profile_list_forms() {
    for form in [
        "      on-profile: [qa, dev]\n",
        "      on-profile:\n        - qa\n        - dev\n",
        "      on-profile:\n        - qa\n        - '!prod'\n",
    ] {
        let c = cfg(&format!(
            "{BASE}spring.profiles.active: dev\n---\nspring:\n  config:\n    activate:\n{form}svc:\n  ribbon:\n    MaxAutoRetriesNextServer: 2\n"
        ));
        println!(
            "{form:?} -> {:?} {:?}",
            c.client("svc").max_auto_retries_next_server,
            c.warnings()
        );
        assert_eq!(
            c.client("svc").max_auto_retries_next_server,
            Some(2),
            "{form}"
        );
    }
}

/// spring.profiles.active given as a YAML list; whitespace around names.
#[test]
fn p9_active_list_and_spaces() {
    for active in ["[qa, dev]", "\n    - qa\n    - dev", "' dev , qa '"] {
        let c = cfg(&format!(
            "{BASE}spring:\n  profiles:\n    active: {active}\n---\nspring.config.activate.on-profile: dev\nsvc:\n  ribbon:\n    MaxAutoRetriesNextServer: 2\n"
        ));
        println!(
            "{active:?} -> {:?} {:?}",
            c.client("svc").max_auto_retries_next_server,
            c.warnings()
        );
        assert_eq!(
            c.client("svc").max_auto_retries_next_server,
            Some(2),
            "{active}"
        );
    }
}

/// `---` edge cases: comments after ---, `...`, empty documents, doc with
/// only a condition.
#[test]
fn p10_separators() {
    let y = format!(
        "{BASE}--- # comment\n---\n...\n---\nspring.profiles: dev\n---\n# nothing\n---\nsvc.ribbon.MaxAutoRetries: 1\n"
    );
    let c = cfg(&y);
    println!("{:?} {:?}", c.client("svc").max_auto_retries, c.warnings());
    assert_eq!(c.client("svc").max_auto_retries, Some(1));
}

/// Two unconditioned documents set spring.profiles.active; the later wins in Spring.
#[test]
fn p11_two_unconditioned_active() {
    let c = cfg(&format!(
        "{BASE}spring.profiles.active: dev\n---\nspring.profiles.active: prod\n---\nspring.config.activate.on-profile: dev\nsvc.ribbon.MaxAutoRetries: 1\n---\nspring.config.activate.on-profile: prod\nsvc.ribbon.MaxAutoRetries: 2\n"
    ));
    println!("{:?} {:?}", c.client("svc").max_auto_retries, c.warnings());
    assert_eq!(c.client("svc").max_auto_retries, Some(2));
}

/// Profile document with the condition given by both keys, and the legacy
/// key spring.profiles with a list.
#[test]
fn p12_properties_file_active_ignored() {
    // .properties has no documents; spring.profiles.active there is read how?
    let c = RibbonConfig::from_properties_str(
        "svc.ribbon.listOfServers=127.0.0.1:1\nspring.profiles.active=dev\n",
    )
    .unwrap();
    println!("{:?}", c.warnings());
}
