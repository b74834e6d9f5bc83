//! `tower_ribbon::config` reading Spring Cloud's `SimpleDiscoveryClient`
//! keys (`spring.cloud.discovery.client.simple.instances.<serviceId>[i].*`)
//! from a Spring `application.yml` and `.properties`: static instances with
//! ids and metadata, routed by hint and sticky cookie through real
//! balancers over loopback backends; precedence against `listOfServers`
//! and Eureka; typed errors for bad input.

use http_body_util::Empty;
use tower::ServiceExt;
use tower_ribbon::config::{ConfigErrorKind, RibbonConfig, ServerListKind};

#[path = "support/backend.rs"]
mod backend;

/// Two `users` instances (hints `canary` and `stable`, ids `users-a` and
/// `users-b`), the same two as `carts` with sticky sessions, and the
/// configured hint of `users`.
fn application_yml(a: u16, b: u16) -> String {
    format!(
        r"
spring:
  application:
    name: edge
  cloud:
    discovery:
      client:
        simple:
          instances:
            users:
              - uri: http://127.0.0.1:{a}
                instance-id: users-a
                metadata:
                  hint: canary
                  zone: zone-a
              - uri: http://127.0.0.1:{b}
                instance-id: users-b
                metadata:
                  hint: stable
            carts:
              - uri: http://127.0.0.1:{a}
                instance-id: carts-a
              - host: 127.0.0.1
                port: {b}
                instance-id: carts-b
    loadbalancer:
      hint:
        users: stable
      clients:
        carts:
          configurations: request-based-sticky-session
"
    )
}

fn hits(backends: &[backend::Backend]) -> Vec<usize> {
    backends.iter().map(backend::Backend::hits).collect()
}

/// Through real balancers: the configured hint, then the header's hint,
/// then a sticky cookie naming an `instance-id`.
#[tokio::test]
async fn simple_instances_route_by_hint_and_sticky_cookie() {
    let backends = [
        backend::Backend::start("a").await.unwrap(),
        backend::Backend::start("b").await.unwrap(),
    ];
    let yml = application_yml(backends[0].port(), backends[1].port());
    let config = RibbonConfig::from_yaml_str(&yml).unwrap();
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    assert_eq!(
        config.server_list_kind("users").unwrap(),
        ServerListKind::Static
    );
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();

    let lb = config
        .builder_for("users")
        .unwrap()
        .build(http.clone())
        .unwrap();
    assert!(lb.ready_service("users").await);
    let send = |lb: &tower_ribbon::LoadBalancer<_>, header: Option<(&str, String)>| {
        let mut req = http::Request::get("http://users/x");
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        lb.clone().oneshot(req.body(Empty::new()).unwrap())
    };
    // No header: the configured hint `stable` (users-b).
    for _ in 0..4 {
        assert_eq!(send(&lb, None).await.unwrap().status(), 200);
    }
    assert_eq!(hits(&backends), [0, 4]);
    // The header's hint wins: `canary` (users-a).
    for _ in 0..3 {
        let header = Some(("x-sc-lb-hint", "canary".to_owned()));
        assert_eq!(send(&lb, header).await.unwrap().status(), 200);
    }
    assert_eq!(hits(&backends), [3, 4]);

    // Sticky sessions: the cookie names an `instance-id`.
    let lb = config.builder_for("carts").unwrap().build(http).unwrap();
    assert!(lb.ready_service("carts").await);
    for (id, expected) in [("carts-b", [3, 9]), ("carts-a", [8, 9])] {
        for _ in 0..5 {
            let req = http::Request::get("http://carts/x")
                .header("cookie", format!("sc-lb-instance-id={id}"))
                .body(Empty::new())
                .unwrap();
            assert_eq!(lb.clone().oneshot(req).await.unwrap().status(), 200);
        }
        assert_eq!(hits(&backends), expected, "cookie {id}");
    }
}

/// The instances read: ids, metadata, zone, `https` from the scheme,
/// default ports.
#[test]
fn instances_carry_ids_metadata_and_scheme() {
    let config = RibbonConfig::from_yaml_str(&application_yml(8081, 8082)).unwrap();
    let users = config.client("users").list_of_servers.unwrap();
    let got: Vec<_> = users
        .iter()
        .map(|i| {
            (
                i.id(),
                i.port(),
                i.metadata().get("hint").map(String::as_str),
                i.zone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("users-a", 8081, Some("canary"), Some("zone-a")),
            ("users-b", 8082, Some("stable"), None),
        ]
    );
    let config = RibbonConfig::from_properties_str(
        "spring.cloud.discovery.client.simple.instances.pay[0].uri=https://pay.example\n\
         spring.cloud.discovery.client.simple.instances.pay[1].uri=http://[::1]\n\
         spring.cloud.discovery.client.simple.instances.pay[2].host=10.0.0.1\n\
         spring.cloud.discovery.client.simple.instances.pay[2].secure=true\n\
         spring.cloud.discovery.client.simple.instances[my.svc][0].uri=http://10.0.0.2:81\n",
    )
    .unwrap();
    let pay = config.client("pay").list_of_servers.unwrap();
    let got: Vec<_> = pay
        .iter()
        .map(|i| (i.to_string(), i.id().to_owned()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "https://pay.example:443".to_owned(),
                "pay.example:443".to_owned()
            ),
            ("http://[::1]:80".to_owned(), "::1:80".to_owned()),
            ("https://10.0.0.1:443".to_owned(), "10.0.0.1:443".to_owned()),
        ]
    );
    let dotted = config.client("my.svc").list_of_servers.unwrap();
    assert_eq!(dotted[0].authority().as_str(), "10.0.0.2:81");
}

/// The `[i]` properties form gives the same instances as the YAML list.
#[test]
fn properties_form_reads_the_same_instances() {
    let yml = RibbonConfig::from_yaml_str(&application_yml(8081, 8082)).unwrap();
    let p = "spring.cloud.discovery.client.simple.instances.users";
    let props = RibbonConfig::from_properties_str(&format!(
        "{p}[1].uri=http://127.0.0.1:8082\n\
         {p}[1].INSTANCEID=users-b\n\
         {p}[1].metadata.hint=stable\n\
         {p}[0].uri=http://127.0.0.1:8081\n\
         {p}[0].instance_id=users-a\n\
         {p}[0].metadata.hint=canary\n\
         {p}[0].metadata[zone]=zone-a\n"
    ))
    .unwrap();
    assert!(props.warnings().is_empty(), "{:?}", props.warnings());
    let users = yml.client("users").list_of_servers.unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(props.client("users").list_of_servers.unwrap(), users);
}

/// `listOfServers` wins over simple instances, which win over Eureka; each
/// conflict warns. `spring.cloud.discovery.enabled=false` turns them off.
#[test]
fn precedence_against_list_of_servers_and_eureka() {
    let simple =
        "spring.cloud.discovery.client.simple.instances.users[0].uri=http://127.0.0.1:9001\n";
    let both = RibbonConfig::from_properties_str(&format!(
        "{simple}users.ribbon.listOfServers=127.0.0.1:9002\n"
    ))
    .unwrap();
    let list = both.client("users").list_of_servers.unwrap();
    assert_eq!(list[0].port(), 9002);
    assert_eq!(both.warnings().len(), 1, "{:?}", both.warnings());
    assert!(both.warnings()[0].contains("`listOfServers` is used"));

    let eureka = RibbonConfig::from_properties_str(&format!(
        "{simple}eureka.client.service-url.defaultZone=http://127.0.0.1:8761/eureka/\n"
    ))
    .unwrap();
    assert_eq!(
        eureka.server_list_kind("users").unwrap(),
        ServerListKind::Static
    );
    assert_eq!(
        eureka.client("users").list_of_servers.unwrap()[0].port(),
        9001
    );
    assert_eq!(eureka.warnings().len(), 1, "{:?}", eureka.warnings());
    assert!(eureka.warnings()[0].contains("the simple instances are used"));

    let off = RibbonConfig::from_properties_str(&format!(
        "{simple}spring.cloud.discovery.enabled=false\n"
    ))
    .unwrap();
    assert_eq!(
        off.server_list_kind("users").unwrap_err().kind(),
        ConfigErrorKind::NoSource
    );
    assert_eq!(off.warnings().len(), 1, "{:?}", off.warnings());
}

/// Unknown keys under `client.simple.` name the nearest known key; `order`
/// and `local.*` are recognized, not applied.
#[test]
fn unknown_and_not_applied_keys_warn() {
    let p = "spring.cloud.discovery.client.simple";
    let config = RibbonConfig::from_properties_str(&format!(
        "{p}.instances.users[0].uri=http://127.0.0.1:9001\n\
         {p}.instances.users[0].url=http://127.0.0.1:9002\n\
         {p}.instances.users[0].instance-idd=x\n\
         {p}.ordr=1\n\
         {p}.order=1\n\
         {p}.local.host=127.0.0.1\n\
         spring.cloud.discovery.client.health-indicator.enabled=false\n\
         spring.cloud.discovery.client.health-indicator.include-description=true\n\
         spring.cloud.discovery.other-client.key=ignored\n"
    ))
    .unwrap();
    let w = config.warnings();
    assert_eq!(w.len(), 6, "{w:?}");
    assert!(
        w[0].contains(&format!("did you mean `{p}.instances.<serviceId>[i].uri`")),
        "{}",
        w[0]
    );
    assert!(
        w[1].contains(&format!(
            "did you mean `{p}.instances.<serviceId>[i].instance-id`"
        )),
        "{}",
        w[1]
    );
    assert!(
        w[2].contains(&format!("did you mean `{p}.order`")),
        "{}",
        w[2]
    );
    for (warning, key) in w[3..]
        .iter()
        .zip(["order", "local.host", "health-indicator"])
    {
        assert!(
            warning.contains("recognized, not applied") && warning.contains(key),
            "{warning}"
        );
    }
    assert_eq!(config.client("users").list_of_servers.unwrap().len(), 1);
}

/// Bad input is a typed error naming the key; nothing panics.
#[test]
fn bad_instances_are_typed_errors() {
    let p = "spring.cloud.discovery.client.simple.instances.users";
    let cases = [
        (
            format!("{p}[0].uri=ftp://127.0.0.1:21"),
            ConfigErrorKind::InvalidValue,
            format!("{p}[0].uri"),
        ),
        (
            format!("{p}[0].uri=http://[::1"),
            ConfigErrorKind::InvalidValue,
            format!("{p}[0].uri"),
        ),
        (
            format!("{p}[0].uri=http://"),
            ConfigErrorKind::InvalidValue,
            format!("{p}[0].uri"),
        ),
        (
            format!("{p}[0].uri=http://a:99999"),
            ConfigErrorKind::OutOfRange,
            format!("{p}[0].uri"),
        ),
        (
            format!("{p}[0].uri=http://a:0"),
            ConfigErrorKind::OutOfRange,
            format!("{p}[0].uri"),
        ),
        (
            format!("{p}[0].host=a\n{p}[0].port=x"),
            ConfigErrorKind::OutOfRange,
            format!("{p}[0].port"),
        ),
        (
            format!("{p}[0].secure=maybe"),
            ConfigErrorKind::InvalidValue,
            format!("{p}[0].secure"),
        ),
        (
            format!("{p}[0].metadata.hint=x"),
            ConfigErrorKind::InvalidValue,
            format!("{p}[0].uri"),
        ),
        // Duplicate index: one index written two ways.
        (
            format!("{p}[0].uri=http://a\n{p}[00].uri=http://b"),
            ConfigErrorKind::InvalidValue,
            format!("{p}[00].uri"),
        ),
        // Duplicate instance ids in one service.
        (
            format!(
                "{p}[0].uri=http://a\n{p}[0].instance-id=x\n\
                 {p}[1].uri=http://b\n{p}[1].instance-id=x"
            ),
            ConfigErrorKind::InvalidValue,
            format!("{p}[1].instance-id"),
        ),
        // Huge indexes, and gaps.
        (
            format!("{p}[1024].uri=http://a"),
            ConfigErrorKind::OutOfRange,
            format!("{p}[1024].uri"),
        ),
        (
            format!("{p}[99999999999999999999999999].uri=http://a"),
            ConfigErrorKind::OutOfRange,
            format!("{p}[99999999999999999999999999].uri"),
        ),
        (
            format!("{p}[-1].uri=http://a"),
            ConfigErrorKind::InvalidValue,
            format!("{p}[-1].uri"),
        ),
        (
            format!("{p}[1].uri=http://a"),
            ConfigErrorKind::InvalidValue,
            format!("{p}[1]"),
        ),
    ];
    for (text, kind, key) in cases {
        let Err(err) = RibbonConfig::from_properties_str(&text) else {
            panic!("{text}: no error");
        };
        assert_eq!(
            (err.kind(), err.key()),
            (kind, Some(key.as_str())),
            "{text}: {err}"
        );
    }
    // The same from YAML.
    let err = RibbonConfig::from_yaml_str(
        "spring.cloud.discovery.client.simple.instances:\n  users:\n    - uri: 'http://a:65536'\n",
    )
    .unwrap_err();
    assert_eq!(err.key(), Some(format!("{p}[0].uri").as_str()));
}

/// Odd key shapes and values: each is a warning or a typed error, never a
/// panic.
#[test]
fn odd_keys_never_panic() {
    let p = "spring.cloud.discovery.client.simple.";
    let keys = [
        "instances",
        "instances.",
        "instances[",
        "instances[]",
        "instances[]]",
        "instances.x[",
        "instances.x[]",
        "instances.x[0]",
        "instances.x[0].",
        "instances.x[0].metadata.",
        "instances..[0].uri",
        "instances.x[٣].uri",
        "instances.x[0]].uri",
        "instances[x][0]].uri",
        "instances[x].uri",
        "instances.x[0].uri.y",
        "instances.é[0].uri",
        "instances. [0].uri",
    ];
    let values = [
        "",
        "http://",
        "http://é:1",
        "http://a:1/p?q",
        "https://[fe80::1%25eth0]:1",
        "\u{0}",
    ];
    for key in keys {
        for value in values {
            let text = format!("{p}{key}={value}\n");
            match RibbonConfig::from_properties_str(&text) {
                Ok(config) => assert!(config.warnings().len() <= 1, "{text}"),
                Err(err) => assert!(err.key().is_some(), "{text}: {err}"),
            }
        }
    }
}
