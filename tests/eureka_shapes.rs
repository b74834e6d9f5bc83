//! Payload shapes and registry bounds against a scripted stub on
//! 127.0.0.1, on every Eureka path: `EurekaSource` (`/apps/{APP}`),
//! `EurekaRegistry` (full `/apps`, `/apps/delta`) and `VipSource`
//! (`/vips/{vip}`).
//!
//! Issue 11: `{"application":{"garbage":true}}` or records all with port
//! `"9001x"` counted as a successful fetch with zero instances; the registry
//! copy grew without bound across deltas; a delta without `apps__hashcode`
//! was taken as consistent.
#![cfg(feature = "eureka")]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower_ribbon::DiscoveryError;
use tower_ribbon::discovery::InstanceSource;
use tower_ribbon::discovery::eureka::wire::{RecordError, WireError};
use tower_ribbon::discovery::eureka::{EurekaRegistry, EurekaSource};

/// A stub whose answer per path (after `/eureka/`) is set at run time;
/// unknown paths get 404.
#[derive(Clone, Default)]
struct Stub(Arc<Mutex<HashMap<String, String>>>);

impl Stub {
    async fn start() -> (Stub, String) {
        let stub = Stub::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let routes = stub.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let routes = routes.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let path = req.uri().path().trim_start_matches("/eureka/").to_owned();
                        let body = routes.0.lock().expect("routes").get(&path).cloned();
                        async move {
                            let (status, body) = match body {
                                Some(body) => (200, body),
                                None => (404, String::new()),
                            };
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (stub, format!("http://{addr}/eureka"))
    }

    fn set(&self, path: &str, body: impl Into<String>) {
        self.0
            .lock()
            .expect("routes")
            .insert(path.to_owned(), body.into());
    }
}

fn record(id: &str, port: u16, action: &str) -> String {
    format!(
        r#"{{"instanceId":"{id}","hostName":"127.0.0.1","app":"USER-SERVICE","status":"UP","port":{{"$":{port},"@enabled":"true"}},"actionType":"{action}"}}"#
    )
}

/// An `applications` payload for USER-SERVICE; `hash` `None` leaves out
/// `apps__hashcode`.
fn apps(hash: Option<&str>, records: &[String]) -> String {
    let hash = hash.map_or(String::new(), |h| format!(r#""apps__hashcode":"{h}","#));
    format!(
        r#"{{"applications":{{"versions__delta":"1",{hash}"application":[{{"name":"USER-SERVICE","instance":[{}]}}]}}}}"#,
        records.join(",")
    )
}

const GARBAGE_APP: &str = r#"{"application":{"garbage":true}}"#;
const GARBAGE_APPS: &str = r#"{"applications":{"garbage":true}}"#;

fn bad_ports_apps() -> String {
    let bad = |id: &str| {
        format!(
            r#"{{"instanceId":"{id}","hostName":"127.0.0.1","status":"UP","port":{{"$":"9001x"}},"actionType":"MODIFIED"}}"#
        )
    };
    apps(Some("UP_2_"), &[bad("a"), bad("b"), bad("c")])
}

fn decode_error(err: &DiscoveryError) -> Option<&WireError> {
    match err {
        DiscoveryError::Decode { source, .. } => Some(source),
        DiscoveryError::AllServersFailed(all) => all.last().and_then(decode_error),
        _ => None,
    }
}

async fn registry(url: &str, max: usize) -> EurekaRegistry {
    let registry = EurekaRegistry::builder()
        .server_url(url)
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_secs(3600))
        .max_instances(max)
        .build()
        .expect("registry");
    registry.ready().await.expect("first full fetch");
    registry
}

fn ports(registry: &EurekaRegistry) -> Vec<u16> {
    registry
        .instances("user-service")
        .iter()
        .map(|i| i.port())
        .collect()
}

/// Full fetch and delta: garbage and all-malformed payloads are decode
/// errors, and the local copy keeps its two instances. (Also
/// <https://github.com/jquatier/eureka-js-client/pull/81>: bad JSON from
/// the server threw an uncaught exception in the JS client; here it is a
/// typed error and nothing else changes.)
#[tokio::test]
async fn registry_keeps_its_copy_through_shape_errors() {
    let (stub, url) = Stub::start().await;
    stub.set(
        "apps",
        apps(
            Some("UP_2_"),
            &[record("a", 1001, "ADDED"), record("b", 1002, "ADDED")],
        ),
    );
    let registry = registry(&url, 100).await;
    assert_eq!(ports(&registry), [1001, 1002]);
    // The service is read once while the registry answers (a service
    // first read during an outage gets the copy instead of the error).
    let read = registry.fetch("user-service").await.expect("read");
    assert_eq!(read.len(), 2);

    for (delta, full) in [
        (GARBAGE_APPS.to_owned(), GARBAGE_APPS.to_owned()),
        (bad_ports_apps(), bad_ports_apps()),
        (
            r#"{"applications":{"apps__hashcode":"UP_2_","application":{"garbage":true}}}"#
                .to_owned(),
            GARBAGE_APPS.to_owned(),
        ),
    ] {
        // A delta that does not decode falls back to a full fetch, which
        // does not decode either: the copy stays.
        stub.set("apps/delta", delta.clone());
        stub.set("apps", full);
        let err = registry.refresh_now().await.expect_err("garbage");
        let wire = decode_error(&err).unwrap_or_else(|| panic!("{err:?}"));
        assert!(
            matches!(
                wire,
                WireError::NotRegistry
                    | WireError::NoName
                    | WireError::AllRecordsMalformed {
                        records: 3,
                        first: RecordError::BadPort
                    }
            ),
            "{delta}: {wire:?}"
        );
        assert_eq!(ports(&registry), [1001, 1002], "{delta}");
    }
    // Through the registry as an instance source, the failure shows to a
    // service read before (its refresh counts it and keeps its last list)
    // while the copy stays.
    let err = registry.fetch("user-service").await.expect_err("stale");
    assert!(err.to_string().contains("may be stale"), "{err}");
    assert_eq!(registry.instances("user-service").len(), 2);
}

/// `EurekaSource` and `VipSource`: garbage is an error; an application that
/// really has no instances is a valid empty list.
#[tokio::test]
async fn source_and_vip_refuse_garbage_and_accept_real_emptiness() {
    let (stub, url) = Stub::start().await;
    let source = EurekaSource::builder()
        .server_url(&url)
        .build()
        .expect("source");
    stub.set("apps/USER-SERVICE", GARBAGE_APP);
    let err = source.fetch("user-service").await.expect_err("garbage");
    assert!(
        matches!(decode_error(&err), Some(WireError::NoName)),
        "{err:?}"
    );
    stub.set(
        "apps/USER-SERVICE",
        r#"{"application":{"name":"USER-SERVICE","instance":[]}}"#,
    );
    assert_eq!(source.fetch("user-service").await.expect("empty").len(), 0);

    stub.set("apps", apps(Some(""), &[]));
    let registry = registry(&url, 100).await;
    let vip = registry.vip_source();
    stub.set("vips/user-service", GARBAGE_APPS);
    let err = vip.fetch("user-service").await.expect_err("garbage");
    assert!(
        matches!(decode_error(&err), Some(WireError::NotRegistry)),
        "{err:?}"
    );
    stub.set("vips/user-service", bad_ports_apps());
    let err = vip.fetch("user-service").await.expect_err("all malformed");
    assert!(
        matches!(
            decode_error(&err),
            Some(WireError::AllRecordsMalformed { .. })
        ),
        "{err:?}"
    );
    stub.set(
        "vips/user-service",
        r#"{"applications":{"versions__delta":"1","apps__hashcode":""}}"#,
    );
    assert_eq!(vip.fetch("user-service").await.expect("empty").len(), 0);
}

/// A delta that would take the copy past `max_instances` is refused with
/// `RegistryFull` before it is applied; the copy keeps its instances.
#[tokio::test]
async fn registry_size_is_bounded_across_deltas() {
    let (stub, url) = Stub::start().await;
    stub.set(
        "apps",
        apps(
            Some("UP_2_"),
            &[record("a", 1001, "ADDED"), record("b", 1002, "ADDED")],
        ),
    );
    let registry = registry(&url, 3).await;
    stub.set(
        "apps/delta",
        apps(Some("UP_3_"), &[record("c", 1003, "ADDED")]),
    );
    registry.refresh_now().await.expect("three fit");
    assert_eq!(ports(&registry), [1001, 1002, 1003]);

    stub.set(
        "apps/delta",
        apps(Some("UP_4_"), &[record("d", 1004, "ADDED")]),
    );
    let err = registry.refresh_now().await.expect_err("four do not fit");
    assert!(
        matches!(
            err,
            DiscoveryError::RegistryFull {
                limit: 3,
                would_hold: 4
            }
        ),
        "{err:?}"
    );
    assert_eq!(ports(&registry), [1001, 1002, 1003]);
    assert_eq!(registry.stats().instances, 3);

    // A delta that deletes one and adds one stays within the bound.
    stub.set(
        "apps/delta",
        apps(
            Some("UP_3_"),
            &[record("a", 1001, "DELETED"), record("d", 1004, "ADDED")],
        ),
    );
    registry.refresh_now().await.expect("swap fits");
    assert_eq!(ports(&registry), [1002, 1003, 1004]);
}

/// A delta without `apps__hashcode` cannot be checked, so it triggers a
/// full fetch, which here corrects what the delta said.
#[tokio::test]
async fn hashless_delta_triggers_a_full_fetch() {
    let (stub, url) = Stub::start().await;
    stub.set(
        "apps",
        apps(
            Some("UP_2_"),
            &[record("a", 1001, "ADDED"), record("b", 1002, "ADDED")],
        ),
    );
    let registry = registry(&url, 100).await;
    assert_eq!(registry.stats().full_fetches, 1);

    // The delta claims a third instance; the server's full registry has
    // only a different one.
    stub.set("apps/delta", apps(None, &[record("c", 1003, "ADDED")]));
    stub.set(
        "apps",
        apps(
            Some("UP_2_"),
            &[record("a", 1001, "ADDED"), record("e", 1005, "ADDED")],
        ),
    );
    registry.refresh_now().await.expect("delta then full");
    let stats = registry.stats();
    assert_eq!(stats.full_fetches, 2, "{stats:?}");
    assert_eq!(stats.hash_mismatches, 1, "{stats:?}");
    assert_eq!(ports(&registry), [1001, 1005]);

    // With the hash present and matching, no full fetch follows.
    stub.set(
        "apps/delta",
        apps(Some("UP_3_"), &[record("f", 1006, "ADDED")]),
    );
    registry.refresh_now().await.expect("delta");
    assert_eq!(registry.stats().full_fetches, 2);
    assert_eq!(ports(&registry), [1001, 1005, 1006]);
}

/// Both ports enabled: `PortPreference::Secure` (the default, Spring Cloud
/// LoadBalancer's choice) takes https on `securePort`;
/// `PortPreference::Plain` (Ribbon's default without `IsSecure`) takes http
/// on `port`. One port enabled: that one either way.
#[tokio::test]
async fn port_preference_through_the_source_and_the_registry() {
    use tower_ribbon::discovery::eureka::wire::PortPreference;
    let (stub, url) = Stub::start().await;
    let both = r#"{"instanceId":"both","hostName":"127.0.0.1","app":"USER-SERVICE","status":"UP","port":{"$":8080,"@enabled":"true"},"securePort":{"$":8443,"@enabled":"true"},"actionType":"ADDED"}"#;
    let plain_only = r#"{"instanceId":"plain","hostName":"127.0.0.1","app":"USER-SERVICE","status":"UP","port":{"$":8081,"@enabled":"true"},"securePort":{"$":8444,"@enabled":"false"},"actionType":"ADDED"}"#;
    stub.set(
        "apps/USER-SERVICE",
        format!(r#"{{"application":{{"name":"USER-SERVICE","instance":[{both},{plain_only}]}}}}"#),
    );
    stub.set(
        "apps",
        apps(Some("UP_2_"), &[both.to_owned(), plain_only.to_owned()]),
    );
    for (preference, want) in [
        (None, ["https://127.0.0.1:8443", "http://127.0.0.1:8081"]),
        (
            Some(PortPreference::Secure),
            ["https://127.0.0.1:8443", "http://127.0.0.1:8081"],
        ),
        (
            Some(PortPreference::Plain),
            ["http://127.0.0.1:8080", "http://127.0.0.1:8081"],
        ),
    ] {
        let mut builder = EurekaSource::builder().server_url(&url);
        let mut registry = EurekaRegistry::builder()
            .server_url(&url)
            .fetch_interval(Duration::from_secs(3600));
        if let Some(p) = preference {
            builder = builder.port_preference(p);
            registry = registry.port_preference(p);
        }
        let from_source: Vec<String> = builder
            .build()
            .expect("source")
            .fetch("user-service")
            .await
            .expect("fetch")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(from_source, want, "{preference:?}");
        let registry = registry.build().expect("registry");
        registry.ready().await.expect("full fetch");
        let from_registry: Vec<String> = registry
            .instances("user-service")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(from_registry, want, "{preference:?}");
    }
}

/// <https://github.com/Netflix/eureka/issues/1120>: a server answered
/// `/apps/delta` with an `apps__hashcode` that contradicted the delta's own
/// body. The client must notice the mismatch and take the full registry,
/// ending with exactly the server's full copy.
#[tokio::test]
async fn delta_whose_hash_contradicts_its_body_is_reconciled_by_a_full_fetch() {
    let (stub, url) = Stub::start().await;
    stub.set(
        "apps",
        apps(
            Some("UP_2_"),
            &[record("a", 1001, "ADDED"), record("b", 1002, "ADDED")],
        ),
    );
    let registry = registry(&url, 100).await;
    // The delta adds one instance (UP_3_ after applying) but claims UP_2_.
    stub.set(
        "apps/delta",
        apps(Some("UP_2_"), &[record("c", 1003, "ADDED")]),
    );
    stub.set(
        "apps",
        apps(
            Some("UP_2_"),
            &[record("a", 1001, "ADDED"), record("c", 1003, "ADDED")],
        ),
    );
    registry.refresh_now().await.expect("delta then full");
    let stats = registry.stats();
    assert_eq!(
        (stats.hash_mismatches, stats.full_fetches),
        (1, 2),
        "{stats:?}"
    );
    assert_eq!(ports(&registry), [1001, 1003]);
    assert_eq!(registry.local_hash(), "UP_2_");
}

/// <https://github.com/keijack/python-eureka-client/issues/51>: instances
/// registered with an empty `instanceId` collapsed into one because the
/// client keyed them by that id. A blank id falls back to the host name,
/// so three agents on three hosts stay three, through the source and the
/// registry.
#[tokio::test]
async fn blank_instance_ids_do_not_collapse_instances() {
    let (stub, url) = Stub::start().await;
    let agent = |host: &str| {
        format!(
            r#"{{"instanceId":"","hostName":"{host}","app":"USER-SERVICE","status":"UP","port":{{"$":8080,"@enabled":"true"}},"actionType":"ADDED"}}"#
        )
    };
    let records = [agent("127.0.0.1"), agent("127.0.0.2"), agent("127.0.0.3")];
    stub.set(
        "apps/USER-SERVICE",
        format!(
            r#"{{"application":{{"name":"USER-SERVICE","instance":[{}]}}}}"#,
            records.join(",")
        ),
    );
    stub.set("apps", apps(Some("UP_3_"), &records));
    let source = EurekaSource::builder()
        .server_url(&url)
        .build()
        .expect("source");
    let ids: Vec<String> = source
        .fetch("user-service")
        .await
        .expect("fetch")
        .iter()
        .map(|i| i.id().to_owned())
        .collect();
    assert_eq!(ids, ["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    let registry = registry(&url, 100).await;
    assert_eq!(registry.instances("user-service").len(), 3);
    assert_eq!(registry.local_hash(), "UP_3_");
}

/// `request_timeout(Duration::MAX)` is accepted and a fetch neither panics
/// (no overflow adding it to now) nor waits: the refused connect fails at
/// once.
#[tokio::test]
async fn a_maximal_request_timeout_does_not_panic() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let source = tower_ribbon::discovery::eureka::EurekaSource::builder()
        .server_url(format!("http://127.0.0.1:{port}/eureka"))
        .request_timeout(std::time::Duration::MAX)
        .build()
        .unwrap();
    let outcome = tokio::spawn(async move {
        tower_ribbon::discovery::InstanceSource::fetch(&source, "svc")
            .await
            .is_err()
    })
    .await;
    assert_eq!(outcome.ok(), Some(true), "the fetch must fail, not panic");
}
