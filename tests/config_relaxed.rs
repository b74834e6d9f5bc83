//! `tower_ribbon::config` matching Spring's prefixes as Spring Boot's
//! relaxed binding does (case, `-` and `_` ignored in every name element:
//! `spring.cloud.loadBalancer.*` is `spring.cloud.loadbalancer.*`), warning
//! on near misses it would otherwise drop, and honouring
//! `eureka.client.enabled=false` / `eureka.client.fetch-registry=false`.
#![cfg(feature = "config")]

use tower_ribbon::config::{ConfigErrorKind, RibbonConfig, ServerListKind};

fn read(text: &str) -> RibbonConfig {
    RibbonConfig::from_properties_str(text).unwrap()
}

const LIST: &str = "users.ribbon.listOfServers=127.0.0.1:1\n";

#[test]
fn loadbalancer_prefix_binds_in_every_relaxed_spelling() {
    for prefix in [
        "spring.cloud.loadbalancer",
        "spring.cloud.loadBalancer",
        "spring.cloud.load-balancer",
        "spring.cloud.load_balancer",
        "Spring.Cloud.LOADBALANCER",
    ] {
        let config = read(&format!("{LIST}{prefix}.retry.enabled=false\n"));
        let retry = config.client("users").load_balancer.retry.enabled;
        assert_eq!(retry, Some(false), "{prefix}: {:?}", config.warnings());
        assert!(
            config.warnings().is_empty(),
            "{prefix}: {:?}",
            config.warnings()
        );
    }
}

#[test]
fn clients_element_binds_relaxed_too() {
    let config = read(&format!(
        "{LIST}spring.cloud.loadBalancer.Clients.users.retry.enabled=false\n\
         spring.cloud.loadbalancer.CLIENTS[users].hint-header-name=X-Hint\n"
    ));
    let lb = config.client("users").load_balancer;
    assert_eq!(lb.retry.enabled, Some(false), "{:?}", config.warnings());
    assert_eq!(lb.hint_header_name.as_deref(), Some("X-Hint"));
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

#[test]
fn discovery_prefix_binds_relaxed() {
    for key in [
        "spring.cloud.Discovery.client.simple.instances.users[0].uri",
        "spring.cloud.discovery.Client.Simple.Instances.users[0].uri",
        "SPRING.cloud.discovery.client.simple.instances[users][0].uri",
    ] {
        let config = read(&format!("{key}=http://127.0.0.1:1\n"));
        let servers = config.client("users").list_of_servers;
        assert_eq!(
            servers.map(|s| s.len()),
            Some(1),
            "{key}: {:?}",
            config.warnings()
        );
        assert!(
            config.warnings().is_empty(),
            "{key}: {:?}",
            config.warnings()
        );
    }
    let config = read(&format!(
        "{LIST}spring.cloud.discovery.Enabled=false\n\
         spring.cloud.discovery.client.simple.instances.users[0].uri=http://127.0.0.1:2\n"
    ));
    assert!(
        config
            .warnings()
            .iter()
            .any(|w| w.contains("enabled` is false")),
        "{:?}",
        config.warnings()
    );
}

#[test]
fn near_misses_of_the_crate_namespaces_warn_and_other_spring_keys_do_not() {
    for (key, hint) in [
        (
            "spring.cloud.loadbalancr.retry.enabled",
            "spring.cloud.loadbalancer.",
        ),
        (
            "spring.cloud.load.balancer.retry.enabled",
            "spring.cloud.loadbalancer.",
        ),
        (
            "spring.cloud.discovry.client.simple.instances.users[0].uri",
            "spring.cloud.discovery.",
        ),
        (
            "spring.cloud.discovery.clients.simple.order",
            "spring.cloud.discovery.",
        ),
        (
            "spring.cloud.discovery.client.simpel.order",
            "spring.cloud.discovery.",
        ),
        (
            "spring.cloud.discovery.enabeld",
            "spring.cloud.discovery.enabled",
        ),
        ("users.Ribbon.ReadTimeout", "`ribbon`, lower case"),
        ("RIBBON.ReadTimeout", "`ribbon`, lower case"),
    ] {
        let config = read(&format!("{LIST}{key}=1\n"));
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{key}: {warnings:?}");
        assert!(warnings[0].contains(key), "{key}: {warnings:?}");
        assert!(warnings[0].contains(hint), "{key}: {warnings:?}");
    }
    // The rest of a Spring file stays silent.
    let config = read(&format!(
        "{LIST}spring.application.name=gateway\n\
         spring.cloud.config.uri=http://config:8888\n\
         spring.cloud.client.hostname=host-1\n\
         spring.cloud.gateway.routes[0].uri=lb://users\n\
         spring.datasource.url=jdbc:h2:mem:x\n\
         eureka.instance.prefer-ip-address=true\n\
         server.port=8080\n\
         spring.cloud.discovery.other-client.key=x\n"
    ));
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

#[test]
fn near_miss_warnings_are_escaped_and_bounded() {
    let long = "x".repeat(10_000);
    let mut pairs = vec![(format!("spring.cloud.loadbalancr.\n{long}"), "1".to_owned())];
    pairs.extend((0..500).map(|i| (format!("users{i}.Ribbon.ReadTimeout"), "1".to_owned())));
    let config = RibbonConfig::from_pairs(pairs).unwrap();
    let warnings = config.warnings();
    assert!(warnings.len() <= 102, "{}", warnings.len());
    assert!(
        warnings
            .iter()
            .all(|w| !w.contains('\n') && w.len() < 1_000)
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("more unknown keys ignored"))
    );
}

const EUREKA: &str = "eureka.client.service-url.defaultZone=http://127.0.0.1:8761/eureka\n";

#[test]
fn eureka_client_enabled_false_gives_no_eureka_source() {
    for off in [
        "eureka.client.enabled=false",
        "Eureka.Client.Enabled=FALSE",
        "eureka.client.fetch-registry=false",
        "eureka.client.fetchRegistry=false",
    ] {
        let config = read(&format!("{off}\n{EUREKA}users.ribbon.ReadTimeout=1000\n"));
        let err = config.server_list_kind("users").unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::NoSource, "{off}: {err}");
        let key = if off.to_ascii_lowercase().contains("fetch") {
            "eureka.client.fetch-registry"
        } else {
            "eureka.client.enabled"
        };
        assert!(err.to_string().contains(key), "{off}: {err}");
        assert!(config.builder_for("users").is_err(), "{off}");
        // The URLs are still reported as written.
        assert_eq!(config.eureka_server_urls().len(), 1);
    }
}

#[test]
fn eureka_off_falls_through_to_static_sources_without_warnings() {
    let config = read(&format!(
        "eureka.client.enabled=false\n{EUREKA}{LIST}\
         spring.cloud.discovery.client.simple.instances.orders[0].uri=http://127.0.0.1:2\n"
    ));
    assert_eq!(
        config.server_list_kind("users").unwrap(),
        ServerListKind::Static
    );
    assert_eq!(
        config.server_list_kind("orders").unwrap(),
        ServerListKind::Static
    );
    // No "both simple instances and a Eureka URL" warning: Eureka is off.
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

#[test]
fn eureka_off_refuses_an_explicit_eureka_server_list() {
    let config = read(&format!(
        "eureka.client.enabled=false\n{EUREKA}users.ribbon.NIWSServerListClassName=\
         com.netflix.niws.loadbalancer.DiscoveryEnabledNIWSServerList\n"
    ));
    let err = config.server_list_kind("users").unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::NoSource, "{err}");
    assert!(err.to_string().contains("eureka.client.enabled"), "{err}");
}

#[test]
fn eureka_on_and_unresolved_values_keep_eureka() {
    let on = read(&format!(
        "eureka.client.enabled=true\neureka.client.fetch-registry=true\n{EUREKA}\
         users.ribbon.ReadTimeout=1000\n"
    ));
    assert_eq!(
        on.server_list_kind("users").unwrap(),
        ServerListKind::Eureka
    );
    assert!(on.warnings().is_empty(), "{:?}", on.warnings());
    // A placeholder with a default resolves to it, as in Spring.
    let placeholder = read(&format!(
        "eureka.client.enabled=${{TOWER_RIBBON_TEST_UNSET_EUREKA_ON:true}}\n{EUREKA}\
         users.ribbon.ReadTimeout=1000\n"
    ));
    assert_eq!(
        placeholder.server_list_kind("users").unwrap(),
        ServerListKind::Eureka
    );
    assert!(
        placeholder.warnings().is_empty(),
        "{:?}",
        placeholder.warnings()
    );
    // One that resolves to nothing: warned, not an error, Eureka stays on.
    let unresolved = read(&format!(
        "eureka.client.enabled=${{TOWER_RIBBON_TEST_UNSET_EUREKA_ON}}\n{EUREKA}\
         users.ribbon.ReadTimeout=1000\n"
    ));
    assert_eq!(
        unresolved.server_list_kind("users").unwrap(),
        ServerListKind::Eureka
    );
    let warnings = unresolved.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("not true or false"), "{warnings:?}");
}

#[test]
fn eureka_prefix_binds_relaxed() {
    let config = read("Eureka.Client.serviceUrl.defaultZone=http://127.0.0.1:8761/eureka\n");
    assert_eq!(
        config.eureka_server_urls().len(),
        1,
        "{:?}",
        config.warnings()
    );
}

/// Spring's placeholders, as `application.yml` files write `defaultZone`
/// (`${EUREKA_URI:http://localhost:8761/eureka/}`); the whole config
/// failed on it before. The variable names are ones no environment sets.
#[test]
fn placeholders_resolve_from_the_file_or_the_default() {
    let yaml = "eureka:\n  host: 127.0.0.1\n  client:\n    service-url:\n      defaultZone: \
                ${TOWER_RIBBON_TEST_UNSET_URI:http://${eureka.host}:${TOWER_RIBBON_TEST_UNSET_PORT:8761}/eureka/}\n\
                users:\n  ribbon:\n    ReadTimeout: ${TOWER_RIBBON_TEST_UNSET_RT:1500}\n";
    let config = tower_ribbon::config::RibbonConfig::from_yaml_str(yaml).unwrap();
    assert_eq!(
        config.eureka_server_urls(),
        ["http://127.0.0.1:8761/eureka/"]
    );
    assert_eq!(
        config.client("users").read_timeout,
        Some(std::time::Duration::from_millis(1500))
    );
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

/// `spring.cloud.discovery.enabled: false` turns off every discovery
/// client in Spring, Eureka's included (`EurekaClientAutoConfiguration` is
/// `@ConditionalOnDiscoveryEnabled`); it turned off only the simple
/// instances here, and Eureka stayed the source.
#[test]
fn discovery_disabled_gives_no_eureka_source() {
    let off = read(&format!(
        "spring.cloud.discovery.Enabled=false\n{EUREKA}users.ribbon.ReadTimeout=1000\n\
         listed.ribbon.listOfServers=127.0.0.1:8081\n"
    ));
    let err = off.server_list_kind("users").unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::NoSource, "{err}");
    assert!(
        err.to_string()
            .contains("`spring.cloud.discovery.enabled` is false"),
        "{err}"
    );
    assert_eq!(
        off.server_list_kind("listed").unwrap(),
        ServerListKind::Static
    );
    // On (or unset), Eureka is the source.
    let on = read(&format!(
        "spring.cloud.discovery.enabled=true\n{EUREKA}users.ribbon.ReadTimeout=1000\n"
    ));
    assert_eq!(
        on.server_list_kind("users").unwrap(),
        ServerListKind::Eureka
    );
}
