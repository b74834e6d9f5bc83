#![cfg(feature = "eureka")]
//! `EurekaRegistry` and full answers given in failover that lack apps the
//! copy holds (a peer restarted on its own, partly refilled, answering
//! while the server the copy followed is down).
//!
//! Two stubs: `s0` (asked first) lists ORDERS and USERS; `s1` lists USERS
//! only. Fetches are driven by `refresh_now` (the background interval is an
//! hour), so every step is one fetch. Holds are either an hour (never over
//! within a test) or 300 ms with a 400 ms sleep after the hold started
//! (always over): no assertion depends on how fast anything runs.
//!
//! Before: a failover answer replaced the copy (ORDERS dropped at once;
//! helper 219's finding with two real servers is
//! `eureka_partial_peer.rs`). The first hold (d354c63, withdrawn) was
//! broken five ways by helper 227; each way is a test here.

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eureka_stub::{Answer, Stub, record};
use tower_ribbon::discovery::eureka::EurekaRegistry;

const SHORT: Duration = Duration::from_millis(300);
const PAST_SHORT: Duration = Duration::from_millis(400);
const LONG: Duration = Duration::from_secs(3600);

fn registry_json(hash: &str, apps: &[(String, Vec<String>)]) -> String {
    let apps: Vec<String> = apps
        .iter()
        .map(|(name, recs)| format!(r#"{{"name":"{name}","instance":[{}]}}"#, recs.join(",")))
        .collect();
    format!(
        r#"{{"applications":{{"versions__delta":"1","apps__hashcode":"{hash}","application":[{}]}}}}"#,
        apps.join(",")
    )
}

fn orders(id: &str, port: u16, status: &str, action: &str) -> (String, Vec<String>) {
    (
        "ORDERS".to_owned(),
        vec![record("ORDERS", id, port, status, action, "{}")],
    )
}

fn users() -> (String, Vec<String>) {
    (
        "USERS".to_owned(),
        vec![record("USERS", "users-1", 9002, "UP", "ADDED", "{}")],
    )
}

fn both() -> String {
    registry_json("UP_2_", &[orders("orders-1", 9001, "UP", "ADDED"), users()])
}

fn users_only() -> String {
    registry_json("UP_1_", &[users()])
}

fn nothing(hash: &str) -> String {
    registry_json(hash, &[])
}

/// `s0` and `s1` as in the module docs, a registry over `[s0, s1]` with
/// the given hold, after its first fetch (from `s0`).
async fn start(hold: Duration) -> (Stub, Stub, EurekaRegistry) {
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    s0.set("/eureka/apps", vec![Answer::ok(both())]);
    s0.set("/eureka/apps/delta", vec![Answer::ok(nothing("UP_2_"))]);
    s1.set("/eureka/apps", vec![Answer::ok(users_only())]);
    s1.set("/eureka/apps/delta", vec![Answer::ok(nothing("UP_1_"))]);
    let registry = EurekaRegistry::builder()
        .server_urls(&format!("{},{}", s0.url(), s1.url()))
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_secs(3600))
        .absence_hold(hold)
        .build()
        .unwrap();
    registry.ready().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001:UP"]);
    (s0, s1, registry)
}

fn down(stub: &Stub) {
    stub.set("/eureka/apps", vec![Answer::status(503)]);
    stub.set("/eureka/apps/delta", vec![Answer::status(503)]);
}

/// `id:port:STATUS` of each instance of `app` in the copy.
fn ids(registry: &EurekaRegistry, app: &str) -> Vec<String> {
    (registry.instances(app).iter())
        .map(|i| format!("{}:{}:{}", i.id(), i.port(), i.status().as_str()))
        .collect()
}

/// Requests to `path` the stub got.
fn gets(stub: &Stub, path: &str) -> usize {
    stub.log().iter().filter(|(_, p, _)| p == path).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_a_failover_answer_lacks_is_held_for_the_hold_then_leaves() {
    let (s0, _s1, registry) = start(SHORT).await;
    down(&s0);
    let before = gets(&s0, "/eureka/apps");
    registry.refresh_now().await.unwrap();
    // Before: [] (the answer of s1 taken as the truth).
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001:UP"]);
    assert_eq!(ids(&registry, "users"), ["users-1:9002:UP"]);
    // One confirming request at s0, which failed.
    assert_eq!(gets(&s0, "/eureka/apps") - before, 1);
    tokio::time::sleep(PAST_SHORT).await;
    registry.refresh_now().await.unwrap();
    assert!(ids(&registry, "orders").is_empty(), "held past the hold");
    assert_eq!(registry.stats().applications, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_answer_lacking_nothing_asks_no_other_server() {
    let (s0, s1, registry) = start(LONG).await;
    s1.set("/eureka/apps", vec![Answer::ok(both())]);
    down(&s0);
    let before = gets(&s0, "/eureka/apps");
    registry.refresh_now().await.unwrap();
    assert_eq!(
        gets(&s1, "/eureka/apps"),
        1,
        "the delta's hash mismatch asked s1"
    );
    assert_eq!(gets(&s0, "/eureka/apps"), before, "a confirmation asked");
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001:UP"]);
}

/// A server that accepts connections and never answers, and the count of
/// connections it accepted.
async fn hung() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (format!("http://127.0.0.1:{port}/eureka"), accepted, task)
}

/// Helper 227, way 1: the hold also ran when no server had failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_failure_the_answer_is_the_truth_and_no_other_server_is_asked() {
    let s0 = Stub::start().await;
    s0.set("/eureka/apps", vec![Answer::ok(both())]);
    let (second, accepted, _task) = hung().await;
    let registry = EurekaRegistry::builder()
        .server_urls(&format!("{},{second}", s0.url()))
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_secs(3600))
        // Every fetch a full one.
        .delta_retention(Duration::ZERO)
        .absence_hold(LONG)
        .build()
        .unwrap();
    registry.ready().await.unwrap();
    // ORDERS cancelled at s0, which answers.
    s0.set("/eureka/apps", vec![Answer::ok(users_only())]);
    registry.refresh_now().await.unwrap();
    // d354c63: held for the hold (90 s by default), and each refresh
    // waited for the hung server's request timeout.
    assert!(ids(&registry, "orders").is_empty());
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the hung server was asked"
    );
}

/// Helper 227, way 2: the hold kept the copy's records where the server
/// that confirmed the app listed others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_answering_again_gives_its_records_and_fetches_stay_where_they_are() {
    for (now, expected) in [
        (
            orders("orders-1", 9001, "OUT_OF_SERVICE", "ADDED"),
            "orders-1:9001:OUT_OF_SERVICE",
        ),
        (orders("orders-2", 9003, "UP", "ADDED"), "orders-2:9003:UP"),
    ] {
        let (s0, s1, registry) = start(LONG).await;
        down(&s0);
        registry.refresh_now().await.unwrap();
        assert_eq!(ids(&registry, "orders"), ["orders-1:9001:UP"], "held");
        // s0 answers again; ORDERS changed there.
        s0.set(
            "/eureka/apps",
            vec![Answer::ok(registry_json("UP_2_", &[now, users()]))],
        );
        s0.set("/eureka/apps/delta", vec![Answer::ok(nothing("UP_2_"))]);
        registry.refresh_now().await.unwrap();
        assert_eq!(ids(&registry, "orders"), [expected]);
        // Fetches stay at s1, which answered (attack 63a, finding 1: 83fe462
        // moved them to s0, whose partial answer became the truth); each
        // full answer of s1 lacking ORDERS asks s0 again, whose records stay.
        let at_s1 = gets(&s1, "/eureka/apps");
        let at_s0 = gets(&s0, "/eureka/apps");
        registry.refresh_now().await.unwrap();
        assert_eq!(gets(&s1, "/eureka/apps") - at_s1, 1);
        assert_eq!(gets(&s0, "/eureka/apps") - at_s0, 1);
        assert_eq!(ids(&registry, "orders"), [expected]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_lacking_the_app_too_takes_it_out_at_once() {
    let (s0, _s1, registry) = start(LONG).await;
    down(&s0);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001:UP"], "held");
    s0.set("/eureka/apps", vec![Answer::ok(users_only())]);
    registry.refresh_now().await.unwrap();
    assert!(ids(&registry, "orders").is_empty());
}

/// Helper 227, way 3: the hold's state outlived its episode, and the next
/// one dropped the app at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_failover_holds_the_app_again() {
    let (s0, s1, registry) = start(SHORT).await;
    down(&s0);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001:UP"], "episode 1");
    // ORDERS renews at s1: its delta names it and the hash matches.
    let renewed = registry_json("UP_2_", &[orders("orders-1", 9001, "UP", "ADDED")]);
    s1.set("/eureka/apps/delta", vec![Answer::ok(renewed)]);
    s1.set("/eureka/apps", vec![Answer::ok(both())]);
    registry.refresh_now().await.unwrap();
    let full_at_s1 = gets(&s1, "/eureka/apps");
    tokio::time::sleep(PAST_SHORT).await;
    registry.refresh_now().await.unwrap();
    assert_eq!(gets(&s1, "/eureka/apps"), full_at_s1, "the copy matched s1");
    // Episode 1 is over (it lasts at most the hold). s1 goes down; s0
    // answers, partly refilled: episode 2, home s1.
    down(&s1);
    s0.set("/eureka/apps", vec![Answer::ok(users_only())]);
    s0.set("/eureka/apps/delta", vec![Answer::ok(nothing("UP_1_"))]);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001:UP"], "episode 2");
}

/// Helper 227, way 4: past 4 096 apps the hold never ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_over_more_apps_than_the_cap_ends() {
    const APPS: usize = 4_200;
    let mut all: Vec<(String, Vec<String>)> = (0..APPS)
        .map(|i| {
            let name = format!("APP-{i}");
            let rec = record(
                &name,
                &format!("app-{i}"),
                10_000 + i as u16,
                "UP",
                "ADDED",
                "{}",
            );
            (name, vec![rec])
        })
        .collect();
    all.push(users());
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    let hash = format!("UP_{}_", APPS + 1);
    s0.set("/eureka/apps", vec![Answer::ok(registry_json(&hash, &all))]);
    s0.set("/eureka/apps/delta", vec![Answer::ok(nothing(&hash))]);
    s1.set("/eureka/apps", vec![Answer::ok(users_only())]);
    s1.set("/eureka/apps/delta", vec![Answer::ok(nothing("UP_1_"))]);
    let registry = EurekaRegistry::builder()
        .server_urls(&format!("{},{}", s0.url(), s1.url()))
        .request_timeout(Duration::from_secs(5))
        .fetch_interval(Duration::from_secs(3600))
        .absence_hold(SHORT)
        .build()
        .unwrap();
    registry.ready().await.unwrap();
    assert_eq!(registry.stats().applications, APPS + 1);
    down(&s0);
    registry.refresh_now().await.unwrap();
    // 4 096 held, the 104 first by name left at once, USERS.
    assert_eq!(registry.stats().applications, 4_096 + 1);
    assert!(registry.instances("app-0").is_empty());
    assert_eq!(registry.instances("app-999").len(), 1);
    registry.refresh_now().await.unwrap();
    assert_eq!(
        registry.stats().applications,
        4_096 + 1,
        "no hold started over"
    );
    tokio::time::sleep(PAST_SHORT).await;
    registry.refresh_now().await.unwrap();
    assert_eq!(registry.stats().applications, 1);
}

/// A hung home costs one request timeout per fetch: its delta and one
/// confirmation, nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_home_is_asked_once_per_fetch_to_confirm() {
    let (s0, _s1, registry) = start(LONG).await;
    let hang = |body: String| Answer {
        status: 200,
        body: body.into_bytes(),
        delay_ms: 60_000,
    };
    s0.set("/eureka/apps", vec![hang(both())]);
    s0.set("/eureka/apps/delta", vec![hang(nothing("UP_2_"))]);
    let before = s0.log().len();
    // Request timeout 2 s: the delta at s0, then the confirmation.
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001:UP"]);
    assert_eq!(gets(&s0, "/eureka/apps/delta"), 1);
    assert_eq!(s0.log().len() - before, 2, "{:?}", &s0.log()[before..]);
    // Fetches stay at s1; each asks s0 once, to confirm.
    registry.refresh_now().await.unwrap();
    assert_eq!(s0.log().len() - before, 3);
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001:UP"]);
}
