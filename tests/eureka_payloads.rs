//! Eureka payloads, without a real Eureka server.
//!
//! 1. Every fixture in `tests/data/eureka/` (see `tests/data/README.md`)
//!    parsed into exactly the instances it describes. Their 10.x addresses
//!    are only parsed, never connected to.
//! 2. A scripted stub registry on 127.0.0.1 whose answer to
//!    `GET /eureka/apps/USER-SERVICE` is switched at run time (plain, gzip
//!    with and without `Content-Encoding`, truncated, HTML, 500, a hang,
//!    gzip garbage), seen through `EurekaSource` and through a
//!    `LoadBalancer` that must keep its last good list; server failover,
//!    and basic auth that is sent but never shown.
//!
//! No fixed sleep decides a result: waits poll a condition with a bound.
#![cfg(feature = "eureka")]

#[path = "common/closed_port.rs"]
mod closed_port;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tower_ribbon::discovery::eureka::EurekaSource;
use tower_ribbon::discovery::eureka::wire::{self, ActionType, Application};
use tower_ribbon::discovery::{FetchFuture, InstanceSource, RefreshConfig, RefreshStatus};
use tower_ribbon::{DiscoveryError, Instance, InstanceStatus, LoadBalancer};

use closed_port::ClosedPort;

// ---------------------------------------------------------------------------
// Part 1: the fixtures
// ---------------------------------------------------------------------------

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/eureka")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// What one parsed instance must look like.
struct Want {
    id: &'static str,
    service: &'static str,
    /// `scheme://authority`
    url: &'static str,
    status: InstanceStatus,
    zone: Option<&'static str>,
    weight: u32,
    metadata: &'static [&'static str],
    health: Option<&'static str>,
    action: ActionType,
    vip: &'static str,
}

/// `user-7f9c`, the instance several fixtures share (zone and metadata vary).
fn user_7f9c() -> Want {
    Want::up(
        "user-7f9c:user-service:8081",
        "USER-SERVICE",
        "http://10.0.1.11:8081",
        "user-service",
    )
    .health("http://10.0.1.11:8081/actuator/health")
}

impl Want {
    /// The common case of the fixtures: `UP`, no zone, weight 1, only the
    /// `management.port` metadata key, `ADDED`.
    fn up(id: &'static str, service: &'static str, url: &'static str, vip: &'static str) -> Self {
        Self {
            id,
            service,
            url,
            status: InstanceStatus::Up,
            zone: None,
            weight: 1,
            metadata: &["management.port"],
            health: None,
            action: ActionType::Added,
            vip,
        }
    }
    fn status(mut self, status: InstanceStatus) -> Self {
        self.status = status;
        self
    }
    fn zone(mut self, zone: &'static str) -> Self {
        self.zone = Some(zone);
        self
    }
    fn metadata(mut self, keys: &'static [&'static str]) -> Self {
        self.metadata = keys;
        self
    }
    fn health(mut self, url: &'static str) -> Self {
        self.health = Some(url);
        self
    }
    fn action(mut self, action: ActionType) -> Self {
        self.action = action;
        self
    }
}

/// Asserts that `app` holds exactly `want`, in order, and rejected nothing.
fn check_app(app: &Application, name: &str, want: &[Want]) {
    assert_eq!(app.name, name);
    assert!(
        app.rejected.is_empty(),
        "{name}: rejected {:?}",
        app.rejected
    );
    let ids: Vec<&str> = app.instances.iter().map(|i| i.instance.id()).collect();
    let want_ids: Vec<&str> = want.iter().map(|w| w.id).collect();
    assert_eq!(ids, want_ids, "{name}: instance ids");
    for (got, want) in app.instances.iter().zip(want) {
        let i = &got.instance;
        let ctx = format!("{name}/{}", want.id);
        assert_eq!(i.service_id(), want.service, "{ctx}: service id");
        assert_eq!(i.to_string(), want.url, "{ctx}: scheme://authority");
        assert_eq!(
            i.is_secure(),
            want.url.starts_with("https://"),
            "{ctx}: secure"
        );
        assert_eq!(i.status(), want.status, "{ctx}: status");
        assert_eq!(i.zone(), want.zone, "{ctx}: zone");
        assert_eq!(i.weight(), want.weight, "{ctx}: weight");
        let keys: Vec<&str> = i.metadata().keys().collect();
        assert_eq!(keys, want.metadata, "{ctx}: metadata keys");
        assert!(
            !i.metadata().contains_key("@class"),
            "{ctx}: `@class` is a type tag, not metadata"
        );
        if let Some(health) = want.health {
            assert_eq!(
                i.health_check_url(),
                Some(health),
                "{ctx}: health check URL"
            );
        }
        assert_eq!(got.action, want.action, "{ctx}: action type");
        assert_eq!(
            got.vip_address.as_deref(),
            Some(want.vip),
            "{ctx}: vipAddress"
        );
        assert_eq!(
            got.secure_vip_address.as_deref(),
            Some(want.vip),
            "{ctx}: secureVipAddress"
        );
    }
}

/// Eureka's `apps__hashcode` of a set of statuses: `STATUS_count_` for each
/// status, sorted by name.
fn hashcode(statuses: impl IntoIterator<Item = InstanceStatus>) -> String {
    let mut counts = BTreeMap::new();
    for s in statuses {
        *counts.entry(s.as_str()).or_insert(0u32) += 1;
    }
    counts.iter().map(|(s, n)| format!("{s}_{n}_")).collect()
}

/// The fixtures each have a test below; a new file must get one too.
#[test]
fn every_fixture_is_covered() {
    let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
        .expect("tests/data/eureka")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "app-port-encodings.json",
            "app-single-instance-as-object.json",
            "apps-empty.json",
            "apps-full.json",
            "apps-mixed-status.json",
            "apps-single-application-as-object.json",
            "delta-add-modify-delete.json",
            "delta-base-full.json",
            // A registration body (root `instance`), not a fetch answer: not parsed here.
            "register-request.json",
        ],
        "a fixture was added or removed: give it a parsing test in tests/eureka_payloads.rs"
    );
}

#[test]
fn app_port_encodings() {
    let app = wire::parse_application(&fixture("app-port-encodings.json")).expect("parses");
    let pay = |id, url| Want::up(id, "PAY-SERVICE", url, "pay-service");
    check_app(
        &app,
        "PAY-SERVICE",
        &[
            // "$": 8080 (number), "@enabled": "true" (string)
            pay("pay-1", "http://10.0.4.1:8080").health("http://10.0.4.1:8080/actuator/health"),
            // "$": "8081" (string)
            pay("pay-2", "http://10.0.4.2:8081").health("http://10.0.4.2:8081/actuator/health"),
            // "@enabled": true (bool); metadata {"@class": "java.util.Collections$EmptyMap"}
            pay("pay-3", "http://10.0.4.3:8082")
                .metadata(&[])
                .health("http://10.0.4.3:8082/actuator/health"),
            // port 8083 disabled, securePort 8443 enabled: https on 8443. The
            // payload has no secureHealthCheckUrl, so the plain one is kept
            // as given (it names the disabled port 8083).
            pay("pay-4", "https://10.0.4.4:8443").health("http://10.0.4.4:8083/actuator/health"),
        ],
    );
    let ports: Vec<u16> = app.instances.iter().map(|i| i.instance.port()).collect();
    assert_eq!(ports, [8080, 8081, 8082, 8443]);
    // The root is `application`: the other parser refuses it.
    assert!(wire::parse_applications(&fixture("app-port-encodings.json")).is_err());
}

#[test]
fn app_single_instance_as_object() {
    let app =
        wire::parse_application(&fixture("app-single-instance-as-object.json")).expect("parses");
    check_app(
        &app,
        "USER-SERVICE",
        &[user_7f9c()
            .zone("zone-a")
            .metadata(&["management.port", "zone"])],
    );
}

#[test]
fn apps_empty() {
    let apps = wire::parse_applications(&fixture("apps-empty.json")).expect("parses");
    assert_eq!(apps.apps_hashcode.as_deref(), Some(""));
    assert_eq!(apps.versions_delta.as_deref(), Some("1"));
    assert!(apps.applications.is_empty());
    assert!(wire::parse_application(&fixture("apps-empty.json")).is_err());

    // The server in tests/eureka-server writes an empty registry with an
    // empty array instead of leaving the key out (see tests/data/README.md).
    let observed =
        br#"{"applications":{"versions__delta":"1","apps__hashcode":"","application":[]}}"#;
    assert_eq!(wire::parse_applications(observed).expect("parses"), apps);
}

#[test]
fn apps_full() {
    let apps = wire::parse_applications(&fixture("apps-full.json")).expect("parses");
    assert_eq!(apps.apps_hashcode.as_deref(), Some("UP_4_"));
    assert_eq!(apps.versions_delta.as_deref(), Some("1"));
    let names: Vec<&str> = apps.applications.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["USER-SERVICE", "AUTH-SERVICE"]);
    let user = |id, url, zone| {
        Want::up(id, "USER-SERVICE", url, "user-service")
            .zone(zone)
            .metadata(&["management.port", "zone"])
    };
    check_app(
        &apps.applications[0],
        "USER-SERVICE",
        &[
            user(
                "user-7f9c:user-service:8081",
                "http://10.0.1.11:8081",
                "zone-a",
            )
            .health("http://10.0.1.11:8081/actuator/health"),
            user(
                "user-2b1d:user-service:8081",
                "http://10.0.1.12:8081",
                "zone-a",
            )
            .health("http://10.0.1.12:8081/actuator/health"),
            user(
                "user-9e4a:user-service:8081",
                "http://10.0.2.13:8081",
                "zone-b",
            )
            .health("http://10.0.2.13:8081/actuator/health"),
        ],
    );
    // Both ports enabled: https on the secure port wins; the host is the
    // hostName, not the ipAddr.
    check_app(
        &apps.applications[1],
        "AUTH-SERVICE",
        &[Want::up(
            "auth-51aa:auth-service:9000",
            "AUTH-SERVICE",
            "https://auth-51aa.svc.internal:9443",
            "auth-service",
        )
        .health("http://auth-51aa.svc.internal:9000/actuator/health")],
    );
    let all = apps.applications.iter().flat_map(|a| &a.instances);
    assert_eq!(hashcode(all.map(|i| i.instance.status())), "UP_4_");

    // preferIpAddress: the ipAddr becomes the host, scheme and port unchanged.
    let by_ip = wire::parse_applications_with(
        &fixture("apps-full.json"),
        wire::ParseOptions::default().with_prefer_ip_address(true),
    )
    .expect("parses");
    let auth = &by_ip.applications[1].instances[0].instance;
    assert_eq!(auth.to_string(), "https://10.0.1.21:9443");
    assert_eq!(auth.id(), "auth-51aa:auth-service:9000");
}

#[test]
fn apps_mixed_status() {
    let apps = wire::parse_applications(&fixture("apps-mixed-status.json")).expect("parses");
    assert_eq!(
        apps.apps_hashcode.as_deref(),
        Some("DOWN_1_OUT_OF_SERVICE_1_STARTING_1_UNKNOWN_1_UP_2_")
    );
    assert_eq!(apps.versions_delta.as_deref(), Some("1"));
    assert_eq!(apps.applications.len(), 1);
    let order = |id, url, health, status| {
        Want::up(id, "ORDER-SERVICE", url, "order-service")
            .status(status)
            .health(health)
    };
    check_app(
        &apps.applications[0],
        "ORDER-SERVICE",
        &[
            order(
                "order-1",
                "http://10.0.3.1:8082",
                "http://10.0.3.1:8082/actuator/health",
                InstanceStatus::Up,
            ),
            order(
                "order-2",
                "http://10.0.3.2:8082",
                "http://10.0.3.2:8082/actuator/health",
                InstanceStatus::Down,
            ),
            order(
                "order-3",
                "http://10.0.3.3:8082",
                "http://10.0.3.3:8082/actuator/health",
                InstanceStatus::Starting,
            ),
            // overriddenStatus OUT_OF_SERVICE; status says the same.
            order(
                "order-4",
                "http://10.0.3.4:8082",
                "http://10.0.3.4:8082/actuator/health",
                InstanceStatus::OutOfService,
            ),
            order(
                "order-5",
                "http://10.0.3.5:8082",
                "http://10.0.3.5:8082/actuator/health",
                InstanceStatus::Unknown,
            ),
            // spelled `overriddenstatus` (lower-case s): still parses.
            order(
                "order-6",
                "http://10.0.3.6:8082",
                "http://10.0.3.6:8082/actuator/health",
                InstanceStatus::Up,
            ),
        ],
    );
    let statuses = apps.applications[0]
        .instances
        .iter()
        .map(|i| i.instance.status());
    assert_eq!(
        hashcode(statuses),
        "DOWN_1_OUT_OF_SERVICE_1_STARTING_1_UNKNOWN_1_UP_2_"
    );
}

/// A source that returns a list as parsed, without any network.
struct Parsed(Vec<Instance>);

impl InstanceSource for Parsed {
    fn fetch<'a>(&'a self, _service_id: &'a str) -> FetchFuture<'a> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// Only `UP` instances are eligible: order-1 and order-6, both in the parsed
/// list and in the snapshot a `LoadBalancer` builds from it.
#[tokio::test]
async fn apps_mixed_status_up_set() {
    let apps = wire::parse_applications(&fixture("apps-mixed-status.json")).expect("parses");
    let instances: Vec<Instance> = apps.applications[0]
        .instances
        .iter()
        .map(|i| i.instance.clone())
        .collect();
    let up: BTreeSet<&str> = instances
        .iter()
        .filter(|i| i.status().is_up())
        .map(Instance::id)
        .collect();
    assert_eq!(up, BTreeSet::from(["order-1", "order-6"]));

    // The same list through the refresh (nothing is connected to).
    let lb = LoadBalancer::builder()
        .source(Parsed(instances))
        .service("order-service")
        .refresh({
            let mut refresh = RefreshConfig::default();
            refresh.jitter = 0.0;
            refresh
        })
        .build(())
        .expect("balancer");
    assert!(lb.ready_service("order-service").await, "first fetch");
    let snap = lb.snapshot("order-service").expect("declared");
    let ids: Vec<&str> = snap.endpoints().iter().map(|e| e.instance().id()).collect();
    assert_eq!(ids, ["order-1", "order-6"]);
}

#[test]
fn apps_single_application_as_object() {
    let apps = wire::parse_applications(&fixture("apps-single-application-as-object.json"))
        .expect("parses");
    assert_eq!(apps.apps_hashcode.as_deref(), Some("UP_1_"));
    assert_eq!(apps.versions_delta.as_deref(), Some("1"));
    assert_eq!(apps.applications.len(), 1);
    check_app(&apps.applications[0], "USER-SERVICE", &[user_7f9c()]);
}

#[test]
fn delta_base_full() {
    let apps = wire::parse_applications(&fixture("delta-base-full.json")).expect("parses");
    assert_eq!(apps.apps_hashcode.as_deref(), Some("UP_2_"));
    assert_eq!(apps.versions_delta.as_deref(), Some("7"));
    assert_eq!(apps.applications.len(), 1);
    check_app(
        &apps.applications[0],
        "ORDER-SERVICE",
        &[
            Want::up(
                "order-a",
                "ORDER-SERVICE",
                "http://10.0.3.11:8080",
                "order-service",
            )
            .health("http://10.0.3.11:8080/actuator/health"),
            Want::up(
                "order-b",
                "ORDER-SERVICE",
                "http://10.0.3.12:8080",
                "order-service",
            )
            .health("http://10.0.3.12:8080/actuator/health"),
        ],
    );
}

#[test]
fn delta_add_modify_delete() {
    let delta = wire::parse_applications(&fixture("delta-add-modify-delete.json")).expect("parses");
    assert_eq!(
        delta.apps_hashcode.as_deref(),
        Some("OUT_OF_SERVICE_1_UP_1_")
    );
    assert_eq!(delta.versions_delta.as_deref(), Some("8"));
    assert_eq!(delta.applications.len(), 1);
    let app = &delta.applications[0];
    check_app(
        app,
        "ORDER-SERVICE",
        &[
            Want::up(
                "order-a",
                "ORDER-SERVICE",
                "http://10.0.3.11:8080",
                "order-service",
            )
            .action(ActionType::Deleted),
            Want::up(
                "order-b",
                "ORDER-SERVICE",
                "http://10.0.3.12:8080",
                "order-service",
            )
            .status(InstanceStatus::OutOfService)
            .action(ActionType::Modified)
            .health("http://10.0.3.12:8080/actuator/health"),
            Want::up(
                "order-c",
                "ORDER-SERVICE",
                "http://10.0.3.13:8080",
                "order-service",
            )
            .action(ActionType::Added)
            .health("http://10.0.3.13:8080/actuator/health"),
        ],
    );
    let actions: Vec<ActionType> = app.instances.iter().map(|i| i.action).collect();
    assert_eq!(
        actions,
        [ActionType::Deleted, ActionType::Modified, ActionType::Added]
    );

    // Applying the delta to the base gives the registry the delta's
    // hashcode describes (what a delta-fetching client checks).
    let base = wire::parse_applications(&fixture("delta-base-full.json")).expect("parses");
    let mut registry: BTreeMap<String, Instance> = base.applications[0]
        .instances
        .iter()
        .map(|i| (i.instance.id().to_owned(), i.instance.clone()))
        .collect();
    for change in &app.instances {
        let id = change.instance.id().to_owned();
        match change.action {
            ActionType::Deleted => assert!(registry.remove(&id).is_some(), "{id} was in the base"),
            ActionType::Added | ActionType::Modified => {
                registry.insert(id, change.instance.clone());
            }
            other => panic!("unexpected action {other:?}"),
        }
    }
    assert_eq!(registry.keys().collect::<Vec<_>>(), ["order-b", "order-c"]);
    assert_eq!(
        Some(hashcode(registry.values().map(Instance::status))),
        delta.apps_hashcode
    );
}

// ---------------------------------------------------------------------------
// Part 2: a scripted stub registry on 127.0.0.1
// ---------------------------------------------------------------------------

/// The only path the stub knows (after percent-decoding).
const APP_PATH: &str = "/eureka/apps/USER-SERVICE";
/// Request timeout of the sources under test.
const TIMEOUT: Duration = Duration::from_millis(300);
/// How long a hanging answer takes: far beyond [`TIMEOUT`].
const HANG: Duration = Duration::from_secs(60);
/// Bound on every polling wait.
const WAIT: Duration = Duration::from_secs(4);

/// What the stub answers for [`APP_PATH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 200, `application/json`, the good payload.
    Good,
    /// The good payload gzipped, with `Content-Encoding: gzip`.
    GzipWithHeader,
    /// The good payload gzipped, without `Content-Encoding` (unasked gzip).
    GzipUnasked,
    /// The good payload gzipped in three members (cut at a third and two
    /// thirds), with `Content-Encoding: gzip`.
    GzipMembers,
    /// 200, `application/json`, the first half of the good payload.
    Truncated,
    /// 200, `text/html`, an error page.
    Html,
    /// 200, the error page with a 60 KiB `Content-Type`.
    HugeContentType,
    /// 500 with a Spring error JSON body.
    Status500,
    /// Never answers (within [`HANG`]).
    Hang,
    /// 200, bytes `1f 8b` then junk, no `Content-Encoding`.
    GzipGarbage,
    /// 404 with a Spring error JSON body (as for an unknown or emptied app).
    NotFound,
    /// 200, `{"application":{"garbage":true}}`: JSON, but not an application.
    Garbage,
    /// 200, three records that all have port `"9001x"`.
    BadPorts,
}

/// One request the stub received.
#[derive(Debug, Clone)]
struct Seen {
    /// The request path as sent (not decoded).
    raw_path: String,
    authorization: Option<String>,
    accept: Option<String>,
    accept_encoding: Option<String>,
}

/// A stub Eureka server on a free port of 127.0.0.1; stops when dropped.
struct Stub {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Stub {
    async fn start(mode: Mode) -> Stub {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let mode = Arc::new(Mutex::new(mode));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (task_mode, task_seen) = (Arc::clone(&mode), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            // Dropping the set (when the stub's task is aborted) aborts every
            // connection, including hanging ones.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (mode, seen) = (Arc::clone(&task_mode), Arc::clone(&task_seen));
                connections.spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let header = |name| {
                            req.headers().get(name).map(|v: &http::HeaderValue| {
                                String::from_utf8_lossy(v.as_bytes()).into_owned()
                            })
                        };
                        let raw_path = req.uri().path().to_owned();
                        seen.lock().unwrap().push(Seen {
                            raw_path: raw_path.clone(),
                            authorization: header(http::header::AUTHORIZATION),
                            accept: header(http::header::ACCEPT),
                            accept_encoding: header(http::header::ACCEPT_ENCODING),
                        });
                        let mode = *mode.lock().unwrap();
                        async move { Ok::<_, Infallible>(respond(mode, &raw_path).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Stub {
            addr,
            mode,
            seen,
            task,
        }
    }

    /// `http://127.0.0.1:PORT/eureka`
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/eureka", self.addr.port())
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Eureka URL on a port of 127.0.0.1 that refuses connections, and the
/// reservation that keeps it so: hold it for the whole test.
fn closed_port_url() -> (ClosedPort, String) {
    let closed = ClosedPort::new().expect("reserve a port");
    let url = format!("http://127.0.0.1:{}/eureka", closed.port());
    (closed, url)
}

const GOOD_PORTS: [u16; 3] = [18081, 18082, 18083];

fn stub_instance(id: &str, port: u16, status: &str, zone: &str) -> serde_json::Value {
    serde_json::json!({
        "instanceId": id,
        "hostName": "127.0.0.1",
        "app": "USER-SERVICE",
        "ipAddr": "127.0.0.1",
        "status": status,
        "overriddenStatus": "UNKNOWN",
        "port": {"$": port, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn"
        },
        "metadata": {"management.port": port.to_string(), "zone": zone},
        "healthCheckUrl": format!("http://127.0.0.1:{port}/actuator/health"),
        "vipAddress": "user-service",
        "secureVipAddress": "user-service",
        "actionType": "ADDED"
    })
}

/// `GET /eureka/apps/USER-SERVICE`: user-a and user-b `UP`, user-c `DOWN`,
/// all on 127.0.0.1 (ports nobody listens on: the tests never send traffic).
fn good_body() -> Vec<u8> {
    let [a, b, c] = GOOD_PORTS;
    let body = serde_json::json!({
        "application": {
            "name": "USER-SERVICE",
            "instance": [
                stub_instance("user-a", a, "UP", "zone-a"),
                stub_instance("user-b", b, "UP", "zone-b"),
                stub_instance("user-c", c, "DOWN", "zone-a"),
            ]
        }
    });
    serde_json::to_vec_pretty(&body).expect("json")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

fn spring_error(status: u16, error: &str, path: &str) -> Vec<u8> {
    format!(
        r#"{{"timestamp":"2026-01-01T00:00:00.000+00:00","status":{status},"error":"{error}","path":"{path}"}}"#
    )
    .into_bytes()
}

fn reply(
    status: u16,
    content_type: &str,
    gzip_header: bool,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).expect("status"))
        .header(http::header::CONTENT_TYPE, content_type);
    if gzip_header {
        builder = builder.header(http::header::CONTENT_ENCODING, "gzip");
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

async fn respond(mode: Mode, raw_path: &str) -> Response<Full<Bytes>> {
    const JSON: &str = "application/json";
    // Match the decoded path, as a servlet container does.
    let path = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
    if path != APP_PATH {
        return reply(404, JSON, false, spring_error(404, "Not Found", &path));
    }
    match mode {
        Mode::Good => reply(200, JSON, false, good_body()),
        Mode::GzipWithHeader => reply(200, JSON, true, gzip(&good_body())),
        Mode::GzipUnasked => reply(200, JSON, false, gzip(&good_body())),
        Mode::GzipMembers => {
            let body = good_body();
            let (a, b) = (body.len() / 3, body.len() * 2 / 3);
            let members = [&body[..a], &body[a..b], &body[b..]].map(gzip).concat();
            reply(200, JSON, true, members)
        }
        Mode::Garbage => reply(
            200,
            JSON,
            false,
            br#"{"application":{"garbage":true}}"#.to_vec(),
        ),
        Mode::BadPorts => {
            let record = |id: &str| {
                format!(
                    r#"{{"instanceId":"{id}","hostName":"127.0.0.1","app":"USER-SERVICE","status":"UP","port":{{"$":"9001x","@enabled":"true"}}}}"#
                )
            };
            let body = format!(
                r#"{{"application":{{"name":"USER-SERVICE","instance":[{},{},{}]}}}}"#,
                record("x1"),
                record("x2"),
                record("x3")
            );
            reply(200, JSON, false, body.into_bytes())
        }
        Mode::Truncated => {
            let mut body = good_body();
            body.truncate(body.len() / 2);
            reply(200, JSON, false, body)
        }
        Mode::Html => reply(
            200,
            "text/html;charset=UTF-8",
            false,
            b"<html><body><h1>Whitelabel Error Page</h1><p>Bad Gateway</p></body></html>".to_vec(),
        ),
        Mode::HugeContentType => reply(
            200,
            &format!("text/html; x={}", "a".repeat(60 * 1024)),
            false,
            b"<html></html>".to_vec(),
        ),
        Mode::Status500 => reply(
            500,
            JSON,
            false,
            spring_error(500, "Internal Server Error", &path),
        ),
        Mode::Hang => {
            tokio::time::sleep(HANG).await;
            reply(503, JSON, false, Vec::new())
        }
        Mode::GzipGarbage => {
            let mut body = vec![0x1f, 0x8b];
            body.extend_from_slice(b"this is not a deflate stream at all");
            reply(200, JSON, false, body)
        }
        Mode::NotFound => reply(404, JSON, false, spring_error(404, "Not Found", &path)),
    }
}

fn source(urls: &[String]) -> EurekaSource {
    urls.iter()
        .fold(EurekaSource::builder(), |b, u| b.server_url(u.clone()))
        .request_timeout(TIMEOUT)
        .build()
        .expect("source")
}

/// The three instances of [`good_body`], exactly.
fn check_good(app: &Application) {
    let user = |id, url, zone| {
        Want::up(id, "USER-SERVICE", url, "user-service")
            .zone(zone)
            .metadata(&["management.port", "zone"])
    };
    check_app(
        app,
        "USER-SERVICE",
        &[
            user("user-a", "http://127.0.0.1:18081", "zone-a")
                .health("http://127.0.0.1:18081/actuator/health"),
            user("user-b", "http://127.0.0.1:18082", "zone-b")
                .health("http://127.0.0.1:18082/actuator/health"),
            user("user-c", "http://127.0.0.1:18083", "zone-a")
                .status(InstanceStatus::Down)
                .health("http://127.0.0.1:18083/actuator/health"),
        ],
    );
}

/// Polls `cond` every 10 ms until it holds or [`WAIT`] has passed.
async fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn plain_and_gzip_bodies_parse_to_the_same_instances() {
    let stub = Stub::start(Mode::Good).await;
    let source = source(&[stub.url()]);
    for mode in [Mode::Good, Mode::GzipWithHeader, Mode::GzipUnasked] {
        stub.set(mode);
        let app = source
            .fetch_application("user-service")
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        check_good(&app);
    }
    // The trait method: every instance, DOWN included (the refresh filters).
    stub.set(Mode::GzipUnasked);
    let instances = source.fetch("user-service").await.expect("fetch");
    let urls: Vec<String> = instances.iter().map(ToString::to_string).collect();
    assert_eq!(
        urls,
        [
            "http://127.0.0.1:18081",
            "http://127.0.0.1:18082",
            "http://127.0.0.1:18083"
        ]
    );

    let seen = stub.seen();
    assert_eq!(seen.len(), 4);
    for s in &seen {
        assert_eq!(
            percent_encoding::percent_decode_str(&s.raw_path).decode_utf8_lossy(),
            APP_PATH
        );
        assert_eq!(s.accept.as_deref(), Some("application/json"));
        assert_eq!(s.accept_encoding.as_deref(), Some("gzip"));
        assert_eq!(s.authorization, None);
    }
}

/// A gzip body of several members (RFC 1952; a proxy that compresses each
/// flush sends one) is the concatenation of all of them, as Java's
/// `GZIPInputStream` reads it. Before, only the first member was inflated:
/// a `Truncated` decode error at every fetch, the list never updated.
#[tokio::test]
async fn a_gzip_body_of_several_members_parses_whole() {
    let stub = Stub::start(Mode::GzipMembers).await;
    let source = source(&[stub.url()]);
    let app = source
        .fetch_application("user-service")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    check_good(&app);
    assert_eq!(stub.seen().len(), 1);
}

/// Fetches once from a stub in `mode` and returns the error.
async fn fetch_error(mode: Mode) -> (String, DiscoveryError) {
    let stub = Stub::start(mode).await;
    let source = source(&[stub.url()]);
    let started = Instant::now();
    let err = source
        .fetch_application("USER-SERVICE")
        .await
        .expect_err("a bad answer must be an error");
    assert!(
        started.elapsed() < TIMEOUT * 5,
        "{mode:?} took {:?}",
        started.elapsed()
    );
    assert_eq!(stub.seen().len(), 1, "{mode:?}: one request");
    (stub.url(), err)
}

#[tokio::test]
async fn truncated_json_is_a_decode_error() {
    let (url, err) = fetch_error(Mode::Truncated).await;
    match &err {
        DiscoveryError::Decode { server, source, .. } => {
            assert_eq!(server, &url);
            assert!(
                matches!(source, wire::WireError::Truncated { .. }),
                "{source}"
            );
            assert!(source.to_string().contains("truncated"), "{source}");
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(!err.is_timeout());
}

#[tokio::test]
async fn html_page_is_a_decode_error() {
    let (url, err) = fetch_error(Mode::Html).await;
    match &err {
        DiscoveryError::Decode { server, source, .. } => {
            assert_eq!(server, &url);
            assert!(matches!(source, wire::WireError::Syntax { .. }), "{source}");
            assert!(source.to_string().contains("not Eureka JSON"), "{source}");
        }
        other => panic!("expected Decode, got {other:?}"),
    }
}

/// The registry's `Content-Type` is quoted in the decode error (cut to
/// 128 bytes), so a 60 KiB header does not make a 60 KiB error, logged
/// at every refresh.
#[tokio::test]
async fn a_huge_content_type_makes_a_short_decode_error() {
    let (_, err) = fetch_error(Mode::HugeContentType).await;
    match &err {
        DiscoveryError::Decode { content_type, .. } => {
            assert!(
                content_type.starts_with("text/html; x=aaa"),
                "{content_type}"
            );
            assert!(content_type.len() <= 131, "{}", content_type.len());
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.len() < 300, "an error of {} bytes", text.len());
}

/// App names `.` and `..` are dot segments, which servers resolve before
/// routing (`apps/.` is `apps/`, the whole registry, up to
/// `max_body_bytes` at every refresh of a service a caller named `.`
/// under `discover_on_demand`): refused as unknown, nothing is sent.
#[tokio::test]
async fn dot_segment_app_names_are_not_fetched() {
    let stub = Stub::start(Mode::Good).await;
    let source = source(&[stub.url()]);
    for app in [".", "..", " .. "] {
        let err = source
            .fetch_application(app)
            .await
            .expect_err("a dot segment is no app");
        assert!(
            matches!(err, DiscoveryError::UnknownService { .. }),
            "{app:?}: {err:?}"
        );
    }
    let paths: Vec<String> = stub.seen().into_iter().map(|s| s.raw_path).collect();
    assert!(paths.is_empty(), "{paths:?}");
}

#[tokio::test]
async fn status_500_is_a_status_error() {
    let (url, err) = fetch_error(Mode::Status500).await;
    match &err {
        DiscoveryError::Status { server, status } => {
            assert_eq!(server, &url);
            assert_eq!(*status, 500);
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert!(err.to_string().contains("500"), "{err}");
}

#[tokio::test]
async fn hang_is_a_timeout() {
    let (url, err) = fetch_error(Mode::Hang).await;
    match &err {
        DiscoveryError::Timeout { server, after } => {
            assert_eq!(server, &url);
            assert_eq!(*after, TIMEOUT);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(err.is_timeout());
}

#[tokio::test]
async fn gzip_garbage_is_a_decode_error() {
    let (url, err) = fetch_error(Mode::GzipGarbage).await;
    match &err {
        DiscoveryError::Decode {
            server,
            content_type,
            source,
        } => {
            assert_eq!(server, &url);
            assert_eq!(content_type, "application/json");
            assert!(matches!(source, wire::WireError::Gzip { .. }), "{source}");
            assert!(source.to_string().contains("gzip"), "{source}");
        }
        other => panic!("expected Decode, got {other:?}"),
    }
}

#[tokio::test]
async fn not_found_is_an_empty_application() {
    let stub = Stub::start(Mode::NotFound).await;
    let app = source(&[stub.url()])
        .fetch_application("user-service")
        .await
        .expect("404 means no instances");
    assert_eq!(app.name, "USER-SERVICE");
    assert!(app.instances.is_empty());
    assert!(app.rejected.is_empty());
}

/// A bad mode, and what its error must look like.
type ErrorCheck = fn(&DiscoveryError) -> bool;

fn is_decode_with(err: &DiscoveryError, needle: &str) -> bool {
    matches!(err, DiscoveryError::Decode { source, .. } if source.to_string().contains(needle))
}

#[tokio::test]
async fn refresh_keeps_the_last_list_through_every_bad_answer() {
    let stub = Stub::start(Mode::Good).await;
    let lb = LoadBalancer::builder()
        .source(source(&[stub.url()]))
        .service("user-service")
        .refresh({
            let mut refresh = RefreshConfig::default();
            refresh.interval = Duration::from_millis(100);
            refresh.jitter = 0.0;
            refresh
        })
        // No request goes through this balancer: only its refresh is tested.
        .build(())
        .expect("balancer");

    let snapshot_urls = || -> Option<(u64, Vec<Instance>)> {
        let snap = lb.snapshot("user-service")?;
        Some((
            snap.version(),
            snap.endpoints()
                .iter()
                .map(|e| e.instance().clone())
                .collect(),
        ))
    };
    let status = || -> RefreshStatus { lb.refresh_status("user-service").expect("declared") };

    assert!(
        wait_until(|| lb.snapshot("user-service").is_some_and(|s| s.len() == 2)).await,
        "the good list never arrived: {:?}",
        status()
    );
    let (version, good) = snapshot_urls().expect("snapshot");
    let urls: Vec<String> = good.iter().map(ToString::to_string).collect();
    assert_eq!(
        urls,
        ["http://127.0.0.1:18081", "http://127.0.0.1:18082"],
        "UP only"
    );
    let ids: Vec<&str> = good.iter().map(Instance::id).collect();
    assert_eq!(ids, ["user-a", "user-b"]);

    // Issue 11: garbage and all-malformed records used to count as a
    // successful fetch with zero instances and emptied the list.
    let bad: [(Mode, ErrorCheck); 7] = [
        (Mode::Garbage, |e| {
            matches!(
                e,
                DiscoveryError::Decode {
                    source: wire::WireError::NoName,
                    ..
                }
            )
        }),
        (Mode::BadPorts, |e| {
            matches!(
                e,
                DiscoveryError::Decode {
                    source: wire::WireError::AllRecordsMalformed {
                        records: 3,
                        first: wire::RecordError::BadPort
                    },
                    ..
                }
            )
        }),
        (Mode::Truncated, |e| is_decode_with(e, "truncated")),
        (Mode::Html, |e| is_decode_with(e, "not Eureka JSON")),
        (Mode::Status500, |e| {
            matches!(e, DiscoveryError::Status { status: 500, .. })
        }),
        (
            Mode::Hang,
            |e| matches!(e, DiscoveryError::Timeout { after, .. } if *after == TIMEOUT),
        ),
        (Mode::GzipGarbage, |e| is_decode_with(e, "bad gzip body")),
    ];
    for (mode, expected) in bad {
        let before = status().failures;
        stub.set(mode);
        // A fetch in flight may still see the previous mode: wait for a
        // failure counted after the switch that carries this mode's error.
        let arrived = wait_until(|| {
            let s = status();
            s.failures > before && s.last_error.as_deref().is_some_and(expected)
        })
        .await;
        let s = status();
        assert!(arrived, "{mode:?}: no matching failure: {s:?}");
        assert!(s.consecutive_failures >= 1, "{mode:?}: {s:?}");
        assert_eq!(
            snapshot_urls(),
            Some((version, good.clone())),
            "{mode:?}: the last good list must stay"
        );
        assert_eq!(s.instances, 2);
        assert_eq!(s.version, version);
    }

    // Back to good: the failures stop, and the same list is not a new version.
    let successes = status().successes;
    stub.set(Mode::GzipUnasked);
    assert!(
        wait_until(|| {
            let s = status();
            s.successes > successes && s.consecutive_failures == 0
        })
        .await,
        "never recovered: {:?}",
        status()
    );
    let s = status();
    assert!(s.last_error.is_none());
    assert!(s.failures >= 5);
    assert_eq!(snapshot_urls(), Some((version, good)));
}

#[tokio::test]
async fn failover_to_the_second_server_after_a_500() {
    let first = Stub::start(Mode::Status500).await;
    let second = Stub::start(Mode::Good).await;
    let app = source(&[first.url(), second.url()])
        .fetch_application("user-service")
        .await
        .expect("the second server answers");
    check_good(&app);
    assert_eq!(first.seen().len(), 1);
    assert_eq!(second.seen().len(), 1);
}

/// A first server that hangs is waited on once: later fetches start at
/// the server that answered (as Java's `RetryableEurekaHttpClient` keeps
/// the endpoint that worked), and move on again when it fails. Every fetch
/// tried the hung server first and waited its timeout (a server that drops
/// packets costs the 5 s connect timeout, which a new service's first
/// requests, waiting 5 s for its first list, did not survive): 5 of 5
/// fetches went to it, now 1.
#[tokio::test]
async fn fetches_start_at_the_server_that_answered_last() {
    let hang = Stub::start(Mode::Hang).await;
    let good = Stub::start(Mode::Good).await;
    let source = source(&[hang.url(), good.url()]);
    for _ in 0..5 {
        let app = source
            .fetch_application("user-service")
            .await
            .expect("the second server answers");
        check_good(&app);
    }
    assert_eq!((hang.seen().len(), good.seen().len()), (1, 5));

    // The server that answered fails: the next one is tried, and kept.
    good.set(Mode::Status500);
    hang.set(Mode::Good);
    for _ in 0..3 {
        let app = source
            .fetch_application("user-service")
            .await
            .expect("the first server answers again");
        check_good(&app);
    }
    assert_eq!((hang.seen().len(), good.seen().len()), (4, 6));
}

#[tokio::test]
async fn failover_past_a_closed_port() {
    let (_reserved, closed) = closed_port_url();
    let second = Stub::start(Mode::GzipWithHeader).await;
    let app = source(&[closed, second.url()])
        .fetch_application("user-service")
        .await
        .expect("the second server answers");
    check_good(&app);
    assert_eq!(second.seen().len(), 1);
}

#[tokio::test]
async fn all_servers_failed_lists_each_error_in_order() {
    let first = Stub::start(Mode::Status500).await;
    let (_reserved, closed) = closed_port_url();
    let err = source(&[first.url(), closed.clone()])
        .fetch_application("user-service")
        .await
        .expect_err("both fail");
    let DiscoveryError::AllServersFailed(errors) = &err else {
        panic!("expected AllServersFailed, got {err:?}");
    };
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        matches!(&errors[0], DiscoveryError::Status { server, status: 500 } if *server == first.url()),
        "{:?}",
        errors[0]
    );
    assert!(
        matches!(&errors[1], DiscoveryError::Transport { server, .. } if *server == closed),
        "{:?}",
        errors[1]
    );
    assert!(
        err.to_string().contains("all 2 registry servers failed"),
        "{err}"
    );
    assert!(!err.is_timeout());

    // A hang then a 500: the timeout is kept, in first place.
    let hang = Stub::start(Mode::Hang).await;
    let err = source(&[hang.url(), first.url()])
        .fetch_application("user-service")
        .await
        .expect_err("both fail");
    let DiscoveryError::AllServersFailed(errors) = &err else {
        panic!("expected AllServersFailed, got {err:?}");
    };
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(matches!(&errors[0], DiscoveryError::Timeout { server, .. } if *server == hang.url()));
    assert!(matches!(
        &errors[1],
        DiscoveryError::Status { status: 500, .. }
    ));
    assert!(err.is_timeout());
}

/// Everything a user may print about `err`: Display, Debug and the source
/// chain.
fn all_text(err: &DiscoveryError) -> String {
    let mut text = format!("{err}\n{err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        text.push_str(&format!("\n{e}\n{e:?}"));
        source = e.source();
    }
    if let DiscoveryError::AllServersFailed(errors) = err {
        for e in errors {
            text.push('\n');
            text.push_str(&all_text(e));
        }
    }
    text
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in ["p%40ss", "p@ss", "dXNlcjpwQHNz"] {
        assert!(!text.contains(secret), "{what} shows `{secret}`: {text}");
    }
}

#[tokio::test]
async fn basic_auth_is_sent_and_never_shown() {
    let stub = Stub::start(Mode::Good).await;
    let with_auth = |url: &str| url.replacen("http://", "http://user:p%40ss@", 1);
    let source = source(&[with_auth(&stub.url())]);

    let app = source
        .fetch_application("user-service")
        .await
        .expect("fetch");
    check_good(&app);
    let seen = stub.seen();
    // base64("user:p@ss"): the password is percent-decoded before encoding.
    assert_eq!(seen[0].authorization.as_deref(), Some("Basic dXNlcjpwQHNz"));

    assert_no_secret("Debug of the source", &format!("{source:?}"));
    assert_eq!(source.server_urls(), [stub.url()]);

    let mut errors = Vec::new();
    for mode in [
        Mode::Status500,
        Mode::Truncated,
        Mode::Html,
        Mode::GzipGarbage,
        Mode::Hang,
    ] {
        stub.set(mode);
        errors.push(
            source
                .fetch_application("user-service")
                .await
                .expect_err("bad answer"),
        );
    }
    let (_reserved, closed) = closed_port_url();
    let two = self::source(&[with_auth(&closed), with_auth(&stub.url())]);
    stub.set(Mode::Status500);
    errors.push(
        two.fetch_application("user-service")
            .await
            .expect_err("both fail"),
    );
    assert_no_secret("Debug of a two-server source", &format!("{two:?}"));
    for err in &errors {
        assert_no_secret("an error", &all_text(err));
    }
    // Every credentialed request carried the header.
    assert!(
        stub.seen()
            .iter()
            .all(|s| s.authorization.as_deref() == Some("Basic dXNlcjpwQHNz"))
    );

    // A URL that does not build is redacted too. (`https` builds with the
    // `tls` feature since issue 11 item 7; a query is refused with any
    // feature set.)
    let bad = EurekaSource::builder()
        .server_url("http://user:p%40ss@127.0.0.1:1/eureka?zone=a")
        .build()
        .expect_err("a query is refused");
    assert_no_secret("a build error", &format!("{bad}\n{bad:?}"));
}

// ---------------------------------------------------------------------------
// Decode errors name the server and content type that produced them, and
// fail over like any other failure.
// ---------------------------------------------------------------------------

/// `fetch_application` labels a parse failure with the FIRST configured
/// server, not the one whose body failed, and drops the first server's own
/// error.
#[tokio::test]
async fn decode_error_names_the_server_that_sent_the_body() {
    let first = Stub::start(Mode::Status500).await;
    let second = Stub::start(Mode::Truncated).await;
    let err = source(&[first.url(), second.url()])
        .fetch_application("user-service")
        .await
        .expect_err("both fail");
    let text = err.to_string();
    assert!(text.contains(&second.url()), "{text}");
}

/// The `Decode` doc says `content_type` is the response's Content-Type; for
/// a JSON parse failure it is the literal "application/json expected".
#[tokio::test]
async fn decode_error_keeps_the_response_content_type() {
    let (_, err) = fetch_error(Mode::Html).await;
    assert!(
        matches!(&err, DiscoveryError::Decode { content_type, .. } if content_type.starts_with("text/html")),
        "{err:?}"
    );
}

/// A 200 whose gzip is broken moves on to the next server, a 200 whose JSON
/// is broken does not.
#[tokio::test]
async fn unparsable_body_fails_over_like_bad_gzip() {
    let first = Stub::start(Mode::Html).await;
    let second = Stub::start(Mode::Good).await;
    let app = source(&[first.url(), second.url()])
        .fetch_application("user-service")
        .await
        .expect("the second server answers");
    check_good(&app);
}

/// A server that reads each request, waits `close_after` and closes the
/// connection without answering; counts the connections it accepted.
async fn closing_server(close_after: Duration) -> (String, Arc<Mutex<usize>>) {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let url = format!("http://{}/eureka", listener.local_addr().expect("addr"));
    let accepted = Arc::new(Mutex::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                tokio::time::sleep(close_after).await;
            });
        }
    });
    (url, accepted)
}

/// `request_timeout` bounds a server's whole exchange, the one retry of a
/// connection closed before an answer included: a server that closes
/// every connection 700 ms after the request costs 1 s (the retry gets the
/// 300 ms left), not 1.4 s. Before, the retry had a timeout of its own:
/// a `Transport` error after 1.4 s, 1.4 × the timeout (up to 2 ×).
#[tokio::test(start_paused = true)]
async fn the_retry_of_a_closed_connection_is_within_the_request_timeout() {
    let timeout = Duration::from_secs(1);
    let (url, accepted) = closing_server(Duration::from_millis(700)).await;
    let source = EurekaSource::builder()
        .server_url(url)
        .request_timeout(timeout)
        .build()
        .expect("source");
    let started = tokio::time::Instant::now();
    let err = source
        .fetch_application("USER-SERVICE")
        .await
        .expect_err("no answer");
    let took = started.elapsed();
    println!("took {took:?}: {err}");
    assert!(err.is_timeout(), "{err}");
    assert!(
        took >= timeout && took <= timeout + Duration::from_millis(5),
        "{took:?}"
    );
    assert_eq!(*accepted.lock().unwrap(), 2, "the first try and its retry");
}
