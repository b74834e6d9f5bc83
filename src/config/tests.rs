//! Unit tests of the reader: scopes, zones, conflicts, sources.

use super::reader::{split_client_key, static_source};
use super::*;
use crate::discovery::InstanceSource;
use crate::error::DiscoveryError;
use eureka::PerServiceSource;
use eureka::{redact_url, redact_urls};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn client_keys_split_at_ribbon() {
    assert_eq!(
        split_client_key("user-service.ribbon.listOfServers"),
        Some(("user-service", "listOfServers"))
    );
    assert_eq!(
        split_client_key("my.svc.ribbon.eureka.enabled"),
        Some(("my.svc", "eureka.enabled"))
    );
    assert_eq!(
        split_client_key("spring.cloud.loadbalancer.ribbon.enabled"),
        None
    );
    assert_eq!(split_client_key("ribbon.ReadTimeout"), None);
    assert_eq!(split_client_key("server.port"), None);
}

#[test]
fn urls_are_redacted() {
    assert_eq!(redact_url("http://u:p@h:1/eureka"), "http://***@h:1/eureka");
    // Over-redacting a path with `@` is the safe side.
    assert_eq!(redact_url("http://h/a@b"), "http://***@b");
    assert_eq!(redact_urls("http://a@x, http://y"), "http://***@x,http://y");
}

#[test]
fn global_defaults_and_client_overrides() {
    let config = RibbonConfig::from_pairs([
        ("ribbon.MaxAutoRetries", "2"),
        ("ribbon.ReadTimeout", "500"),
        ("a.ribbon.listOfServers", "h:1"),
        ("a.ribbon.MaxAutoRetries", "0"),
        ("A.ribbon.ConnectTimeout", "0"),
    ])
    .unwrap();
    assert_eq!(config.clients().len(), 1);
    let a = config.client("a");
    assert_eq!(a.max_auto_retries, Some(0));
    assert_eq!(a.read_timeout, Some(Duration::from_millis(500)));
    assert_eq!(a.connect_timeout, Some(Duration::ZERO));
    // `ReadTimeout` is the builder's per-try bound, not the policy's, so a
    // per-try timeout set in code wins over it.
    assert_eq!(a.retry_policy().get_per_try_timeout(), None);
    assert_eq!(
        config.builder_for("a").unwrap().get_read_timeout(),
        Some(Duration::from_millis(500))
    );
    let other = config.client("other");
    assert_eq!(other.name, "other");
    assert_eq!(other.max_auto_retries, Some(2));
    assert_eq!(
        config.server_list_kind("other").unwrap_err().kind(),
        ConfigErrorKind::NoSource
    );
}

#[test]
fn zone_preference_rules() {
    let config = RibbonConfig::from_pairs([
        ("eureka.instance.metadata-map.zone", "z1"),
        ("a.ribbon.NFLoadBalancerRuleClassName", "ZoneAvoidanceRule"),
        ("b.ribbon.EnableZoneAffinity", "true"),
        ("b.ribbon.NFLoadBalancerRuleClassName", "RandomRule"),
        ("c.ribbon.NFLoadBalancerRuleClassName", "ZoneAvoidanceRule"),
        ("c.ribbon.EnableZoneAffinity", "false"),
        ("d.ribbon.zone", "z2"),
        ("e.ribbon.EnableZoneExclusivity", "true"),
        ("e.ribbon.zone", "z3"),
    ])
    .unwrap();
    assert_eq!(config.client("a").preferred_zone(), Some("z1"));
    assert_eq!(config.client("b").preferred_zone(), Some("z1"));
    assert_eq!(config.client("b").make_rule().name(), "zone_avoidance");
    assert_eq!(config.client("c").preferred_zone(), None);
    assert_eq!(config.client("d").preferred_zone(), None);
    assert_eq!(config.client("d").zone.as_deref(), Some("z2"));
    assert_eq!(config.client("d").make_rule().name(), "round_robin");
    assert_eq!(config.client("e").preferred_zone(), Some("z3"));
    assert!(
        config
            .warnings()
            .iter()
            .any(|w| w.contains("`e`") && w.contains("EnableZoneExclusivity"))
    );
}

#[cfg(feature = "eureka")]
#[test]
fn eureka_url_is_validated_and_redacted() {
    let err = RibbonConfig::from_pairs([(
        "eureka.client.service-url.defaultZone",
        "ftp://u:secret@h/eureka",
    )])
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("defaultZone"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    // A query or fragment (a token) is hidden too, in the text and `Debug`.
    for url in ["http://h/eureka?token=secret", "http://h/eureka#secret"] {
        let err = RibbonConfig::from_pairs([("eureka.client.service-url.defaultZone", url)])
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.contains("defaultZone"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}

#[test]
fn conflicting_clients_are_named() {
    let config = RibbonConfig::from_pairs([
        ("a.ribbon.listOfServers", "h:1"),
        ("b.ribbon.listOfServers", "h:2"),
        ("b.ribbon.MaxAutoRetries", "1"),
    ])
    .unwrap();
    let err = config.builder().unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Conflicting);
    assert_eq!(err.key(), Some("MaxAutoRetries"));
    assert_eq!((err.client(), err.other_client()), (Some("a"), Some("b")));
    assert_eq!((err.value(), err.other_value()), (Some("0"), Some("1")));
    assert!(config.builder_for("a").is_ok());
    assert!(config.builder_for("b").is_ok());
}

#[cfg(feature = "eureka")]
#[tokio::test]
async fn mixed_sources_route_per_service() {
    let config = RibbonConfig::from_pairs([
        (
            "eureka.client.serviceUrl.defaultZone",
            "http://127.0.0.1:1/eureka",
        ),
        ("a.ribbon.listOfServers", "127.0.0.1:9"),
        ("b.ribbon.ReadTimeout", "100"),
        ("a.ribbon.ReadTimeout", "100"),
    ])
    .unwrap();
    assert_eq!(
        config.server_list_kind("a").unwrap(),
        ServerListKind::Static
    );
    assert_eq!(
        config.server_list_kind("b").unwrap(),
        ServerListKind::Eureka
    );
    let statics = static_source(&[config.client("a")]);
    let source = PerServiceSource {
        routes: HashMap::from([("a".to_owned(), Arc::new(statics) as Arc<dyn InstanceSource>)]),
    };
    assert_eq!(source.fetch("A").await.unwrap().len(), 1);
    assert!(matches!(
        source.fetch("c").await,
        Err(DiscoveryError::UnknownService { .. })
    ));
    let lb = config
        .builder()
        .unwrap()
        .build(tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        }))
        .unwrap();
    assert_eq!(lb.services(), ["a", "b"]);
}

#[test]
fn one_balancer_routes_each_service_by_its_own_hint() {
    use crate::instance::{Endpoint, Instance};
    use crate::rule::PickContext;
    use crate::snapshot::Snapshot;

    let config = RibbonConfig::from_properties_str(
        "spring.cloud.loadbalancer.hint.a=x\n\
         spring.cloud.loadbalancer.hint.default=z\n\
         a.ribbon.listOfServers=127.0.0.1:1\n\
         b.ribbon.listOfServers=127.0.0.1:2\n",
    )
    .unwrap();
    let global = scope::SpringScope::resolve(None, &config.spring, "");
    assert_eq!(global.hint.as_deref(), Some("z"));
    let rule = client::hint_spec(config.clients(), &global).unwrap().make();
    let hinted = |service: &str| {
        let endpoints = ["x", "y", "z"]
            .iter()
            .zip(1u16..)
            .map(|(h, p)| {
                let i = Instance::new(service, "127.0.0.1", p).unwrap();
                Endpoint::new(i.with_metadata("hint", *h))
            })
            .collect();
        std::sync::Arc::new(Snapshot::new(service, endpoints, 1))
    };
    let port = |service: &str| {
        let picker = rule.build(&hinted(service));
        picker.pick(&PickContext::new()).unwrap().instance().port()
    };
    // a: its own hint; b (no hint.b): hint.default; c: not a client, default.
    assert_eq!((port("a"), port("b"), port("c")), (1, 3, 3));
}

#[test]
fn each_client_keeps_its_hint_header_in_a_shared_balancer() {
    use crate::instance::Endpoint;
    use crate::rule::PickContext;
    use crate::snapshot::Snapshot;
    use std::sync::Arc;
    let config = RibbonConfig::from_properties_str(
        "spring.cloud.loadbalancer.hint.default=x\n\
         spring.cloud.loadbalancer.clients.b.hint-header-name=X-B\n\
         a.ribbon.listOfServers=127.0.0.1:1\n\
         b.ribbon.listOfServers=127.0.0.1:2\n",
    )
    .unwrap();
    assert!(config.builder().is_ok());
    let global = scope::SpringScope::resolve(None, &config.spring, "");
    let rule = client::hint_spec(config.clients(), &global).unwrap().make();
    let port_of = |service: &str, header: &str| {
        let endpoints = [("x", 9001), ("y", 9002)]
            .iter()
            .map(|(h, p)| {
                let i = crate::instance::Instance::new(service, "127.0.0.1", *p).unwrap();
                Endpoint::new(i.with_metadata("hint", *h))
            })
            .collect();
        let picker = rule.build(&Arc::new(Snapshot::new(service, endpoints, 1)));
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::HeaderName::from_bytes(header.as_bytes()).unwrap(),
            http::HeaderValue::from_static("y"),
        );
        let ctx = PickContext::new().with_headers(&headers);
        picker.pick(&ctx).unwrap().instance().port()
    };
    // b reads X-B (its own key), not the default header; a the default.
    assert_eq!(port_of("b", "x-b"), 9002);
    assert_eq!(port_of("b", "x-sc-lb-hint"), 9001);
    assert_eq!(port_of("a", "x-sc-lb-hint"), 9002);
    assert_eq!(port_of("a", "x-b"), 9001);
}

#[test]
fn a_blank_subset_instance_id_is_spring_s_default_id() {
    // SCLB's `StringUtils.hasText(instanceId)`: blank falls back to
    // `IdUtils.getDefaultInstanceId`
    // (`spring.cloud.client.hostname:spring.application.name:server.port`,
    // the host name the machine's).
    let config = RibbonConfig::from_yaml_str(
        "spring:\n  application: { name: gateway }\n  cloud:\n    loadbalancer:\n      \
         configurations: subset\n      subset: { instance-id: \"\\u2003 \\t\" }\n\
         server: { port: 8080 }\n\
         a: { ribbon: { listOfServers: \"127.0.0.1:1\" } }\n",
    )
    .unwrap();
    let id = config.client("a").load_balancer.subset.instance_id.clone();
    let host = super::policies::machine_hostname().unwrap();
    assert_eq!(id, Some(format!("{host}:gateway:8080")));
}

/// `${spring.cloud.client.hostname}` in `subset.instance-id` is the
/// machine's host name also when the file sets no other identity key (or
/// only `vcap.application.instance_id`), as Spring fills the key whatever
/// else is set. Before, it stayed the literal placeholder there: every
/// replica had the id `${spring.cloud.client.hostname}-edge` and chose the
/// same subset.
#[test]
fn a_host_name_placeholder_resolves_without_other_identity_keys() {
    let host = super::policies::machine_hostname().unwrap();
    for vcap in ["", "vcap: { application: { instance_id: v-1 } }\n"] {
        let config = RibbonConfig::from_yaml_str(&format!(
            "spring:\n  cloud:\n    loadbalancer:\n      configurations: subset\n      \
             subset: {{ instance-id: \"${{spring.cloud.client.hostname}}-edge\" }}\n\
             {vcap}a: {{ ribbon: {{ listOfServers: \"127.0.0.1:1\" }} }}\n",
        ))
        .unwrap();
        let id = config.client("a").load_balancer.subset.instance_id.clone();
        assert_eq!(id, Some(format!("{host}-edge")), "{vcap}");
    }
}
