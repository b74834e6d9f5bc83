#![cfg(feature = "eureka")]
//! Attack 63a: what commit 83fe462's failover hold broke.
//!
//! Stubs `s0` (the server the copy followed, asked first) and `s1`.
//! Every step is one `refresh_now` (background interval an hour); no
//! assertion depends on timing except where a hold's end is awaited.

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

use std::time::{Duration, Instant};

use eureka_stub::{Answer, Stub, record};
use tower_ribbon::discovery::eureka::EurekaRegistry;

fn registry_json(hash: &str, apps: &[(&str, Vec<String>)]) -> String {
    let apps: Vec<String> = apps
        .iter()
        .map(|(name, recs)| format!(r#"{{"name":"{name}","instance":[{}]}}"#, recs.join(",")))
        .collect();
    format!(
        r#"{{"applications":{{"versions__delta":"1","apps__hashcode":"{hash}","application":[{}]}}}}"#,
        apps.join(",")
    )
}

fn app(name: &'static str, id: &str, port: u16, action: &str) -> (&'static str, Vec<String>) {
    (name, vec![record(name, id, port, "UP", action, "{}")])
}

fn orders() -> (&'static str, Vec<String>) {
    app("ORDERS", "orders-1", 9001, "ADDED")
}
fn users() -> (&'static str, Vec<String>) {
    app("USERS", "users-1", 9002, "ADDED")
}
fn gone() -> (&'static str, Vec<String>) {
    app("GONE", "gone-1", 9003, "ADDED")
}

fn down(stub: &Stub) {
    stub.set("/eureka/apps", vec![Answer::status(503)]);
    stub.set("/eureka/apps/delta", vec![Answer::status(503)]);
}

fn ids(registry: &EurekaRegistry, app: &str) -> Vec<String> {
    (registry.instances(app).iter())
        .map(|i| format!("{}:{}:{}", i.id(), i.port(), i.status().as_str()))
        .collect()
}

fn gets(stub: &Stub, path: &str) -> usize {
    stub.log().iter().filter(|(_, p, _)| p == path).count()
}

/// Finding 1. A rolling restart: s0 (home) goes down; s1 is healthy and
/// complete (lists ORDERS and USERS; GONE was cancelled). The full answer
/// from s1 lacks GONE, so s0 is asked to confirm. s0 comes back restarted,
/// partly refilled (USERS only: ORDERS has not renewed there yet). Its
/// confirming answer ends the failover and `prefer(s0)` moves every later
/// fetch to s0, whose full answer is then taken as the truth: ORDERS,
/// alive and listed by s1, leaves the copy -- the very fault 83fe462 set
/// out to fix, now caused by it. Before 83fe462 the client stayed at s1
/// (the server that last answered) and kept ORDERS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_home_confirming_once_becomes_the_truth_and_drops_a_live_app() {
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    s0.set(
        "/eureka/apps",
        vec![Answer::ok(registry_json(
            "UP_3_",
            &[orders(), users(), gone()],
        ))],
    );
    s0.set(
        "/eureka/apps/delta",
        vec![Answer::ok(registry_json("UP_3_", &[]))],
    );
    // s1: complete; GONE was cancelled (its delta no longer carries it).
    s1.set(
        "/eureka/apps",
        vec![Answer::ok(registry_json("UP_2_", &[orders(), users()]))],
    );
    s1.set(
        "/eureka/apps/delta",
        vec![Answer::ok(registry_json("UP_2_", &[]))],
    );
    let registry = EurekaRegistry::builder()
        .server_urls(&format!("{},{}", s0.url(), s1.url()))
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_secs(3600))
        .absence_hold(Duration::from_secs(3600))
        .build()
        .unwrap();
    registry.ready().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001:UP"]);

    // s0 stops (step 1 of a rolling restart).
    down(&s0);
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001:UP"]);
    // 83fe462: GONE held (s0 asked, failed); before it: GONE dropped.
    eprintln!(
        "after the failover fetch: GONE {:?}",
        ids(&registry, "gone")
    );

    // s0 is back, restarted: USERS has renewed there, ORDERS not yet.
    s0.set(
        "/eureka/apps",
        vec![Answer::ok(registry_json("UP_1_", &[users()]))],
    );
    s0.set(
        "/eureka/apps/delta",
        vec![Answer::ok(registry_json("UP_1_", &[]))],
    );
    registry.refresh_now().await.unwrap();
    // s0 confirmed GONE's absence: right.
    assert!(ids(&registry, "gone").is_empty());
    eprintln!("s0 asked for /apps so far: {}", gets(&s0, "/eureka/apps"));
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001:UP"]);

    // The next fetch goes to s0 (no failure, so not a failover): its
    // delta's hash mismatches, its full answer is the truth.
    let s1_before = s1.log().len();
    registry.refresh_now().await.unwrap();
    let s1_asked = s1.log().len() - s1_before;
    let orders_now = ids(&registry, "orders");
    assert_eq!(
        orders_now,
        ["orders-1:9001:UP"],
        "ORDERS (alive, listed by the healthy s1) dropped; s1 asked {s1_asked} times in that fetch"
    );
}

/// The hold of finding 2's test (its default 90 s cannot pass in a test).
const HOLD: Duration = Duration::from_millis(300);

/// Finding 2. The failover never ends while home stays unreachable (a
/// peer decommissioned, or hung): one failed fetch, then any number of
/// fetches where s1 answers first with no failure. Much later an app is
/// cancelled at s1 and a full answer (here every fetch is a full one,
/// `delta_retention(ZERO)`, as in the fix's own way-1 test) lacks it: it was held for the whole
/// `absence_hold` and every fetch of the hold waits for s0's request
/// timeout -- helper 227's way 1 (a hold without a failure, a hung server
/// asked) again, for as long as home stays dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_after_one_failure_a_removed_app_is_held_and_a_hung_home_costs_a_timeout() {
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    let both = registry_json("UP_2_", &[orders(), users()]);
    s0.set("/eureka/apps", vec![Answer::ok(both.clone())]);
    s1.set("/eureka/apps", vec![Answer::ok(both.clone())]);
    let registry = EurekaRegistry::builder()
        .server_urls(&format!("{},{}", s0.url(), s1.url()))
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_secs(3600))
        // Every fetch a full one (as the fix's own way-1 test does).
        .delta_retention(Duration::ZERO)
        .absence_hold(HOLD)
        .build()
        .unwrap();
    registry.ready().await.unwrap();
    // s0 hangs from now on (a dead peer whose address still accepts).
    let hang = |body: String| Answer {
        status: 200,
        body: body.into_bytes(),
        delay_ms: 600_000,
    };
    s0.set("/eureka/apps", vec![hang(both.clone())]);
    // One failover fetch: nothing lacking, nothing held.
    registry.refresh_now().await.unwrap();
    // Many quiet fetches at s1 (no server fails in them), for longer
    // than the hold: the failover is over (a wait of at least the hold,
    // so the clock decides nothing).
    for _ in 0..5 {
        registry.refresh_now().await.unwrap();
    }
    tokio::time::sleep(HOLD + Duration::from_millis(100)).await;
    let s0_before = s0.log().len();
    // ORDERS is cancelled at s1, which answers first, without failure.
    s1.set(
        "/eureka/apps",
        vec![Answer::ok(registry_json("UP_1_", &[users()]))],
    );
    let t = Instant::now();
    registry.refresh_now().await.unwrap();
    let took = t.elapsed();
    let held = ids(&registry, "orders");
    let s0_asked = s0.log().len() - s0_before;
    // Outside a failover (no server failed in this fetch, nor in the five
    // before) a full answer is documented as the truth, no server asked.
    assert!(
        held.is_empty() && s0_asked == 0,
        "ORDERS held: {held:?}; s0 asked {s0_asked} times; the fetch took {took:?}"
    );
}

/// Finding 3. A hold is documented to last at most `absence_hold` from the
/// first answer that lacked the app. A delta naming the app (here a
/// DELETED of another of its instances, which Eureka keeps in its delta
/// queue for 3 minutes) ends the hold, the full fetch its hash mismatch
/// calls for lacks the app again, and a new hold starts with a new clock:
/// the app is held as long as deltas name it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_naming_the_held_app_restarts_its_clock() {
    let s0 = Stub::start().await;
    let s1 = Stub::start().await;
    let both = registry_json("UP_2_", &[orders(), users()]);
    s0.set("/eureka/apps", vec![Answer::ok(both.clone())]);
    s0.set(
        "/eureka/apps/delta",
        vec![Answer::ok(registry_json("UP_2_", &[]))],
    );
    // s1: partial (no ORDERS); its delta still carries the cancel of
    // orders-2, an instance that re-registered there and was scaled down.
    s1.set(
        "/eureka/apps",
        vec![Answer::ok(registry_json("UP_1_", &[users()]))],
    );
    let deleted = app("ORDERS", "orders-2", 9005, "DELETED");
    s1.set(
        "/eureka/apps/delta",
        vec![Answer::ok(registry_json("UP_1_", &[deleted]))],
    );
    let hold = Duration::from_millis(600);
    let registry = EurekaRegistry::builder()
        .server_urls(&format!("{},{}", s0.url(), s1.url()))
        .request_timeout(Duration::from_secs(2))
        .fetch_interval(Duration::from_secs(3600))
        .absence_hold(hold)
        .build()
        .unwrap();
    registry.ready().await.unwrap();
    down(&s0);
    let start = Instant::now();
    registry.refresh_now().await.unwrap();
    assert_eq!(ids(&registry, "orders"), ["orders-1:9001:UP"], "held");
    // Refresh every 200 ms for 3 s: five holds' worth.
    let mut last_held = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        registry.refresh_now().await.unwrap();
        if !ids(&registry, "orders").is_empty() {
            last_held = start.elapsed();
        }
    }
    assert!(
        last_held < hold + Duration::from_millis(300),
        "ORDERS still held {last_held:?} after the first answer lacking it (absence_hold {hold:?})"
    );
}
