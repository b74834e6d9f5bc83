//! What a service sees through `EurekaRegistry` when the registry fails,
//! and app names outside ASCII.
//!
//! - A registry outage shows in the service's `refresh_status`: every
//!   registry call answered 500 for 3 s (64 registry failures) while
//!   `refresh_status` reported 0 failures and a last success 44.8 ms ago.
//!   Now the service's refresh fails with `RegistryStale` and keeps its
//!   last list. A service first read during the outage gets the copy.
//! - A delta applied before the full fetch its hash mismatch calls for
//!   fails is served: the service saw `[a, b]` (b drained by the delta)
//!   for as long as full fetches failed; now `[a]`.
//! - A service whose last read came before a fetch the copy applied (a
//!   delta deleting `b`) gets the copy when it reads during an outage that
//!   began since: `[a, b]` kept as stale before, `[a]` now.
//! - A fetch after an outage longer than the server's delta queue is a
//!   full one: `b` replaced by `c` (both UP) early in the outage left
//!   `[a, b]` for good (the delta had neither change, its hash matched);
//!   now `[a, c]`.
//! - A delta no server could answer (503, 429) fails the refresh and keeps
//!   the copy, as Java's client does: it was followed by a full fetch from
//!   the same servers (2 GETs, 2 request timeouts on a hung server; now 1).
//!   A refused delta (403) still brings the full fetch.
//! - Every instance of a service leaving Eureka (the app gone from
//!   `/apps`) empties its list: requests fail with "no instances" instead
//!   of going to the last ones (spring-cloud-gateway#3688).
//! - Eureka stores `über-service` as `ÜBER-SERVICE` (Java's Unicode
//!   `toUpperCase`); the registry upper-cased ASCII only and found nothing.
//! - `EurekaSource` answered for another application than it asked for
//!   serves none of its instances (they were served as the asked one's).
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

use std::time::Duration;

use eureka_stub::{Answer, Stub, apps, record};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::eureka::EurekaRegistry;
use tower_ribbon::discovery::{InstanceSource, RefreshConfig};

/// The ids of `list`, in order.
fn ids(list: Vec<tower_ribbon::Instance>) -> Vec<String> {
    list.iter().map(|i| i.id().to_owned()).collect()
}

/// The ids of `list`'s UP instances, in order.
fn up(list: Vec<tower_ribbon::Instance>) -> Vec<String> {
    list.iter()
        .filter(|i| i.status().is_up())
        .map(|i| i.id().to_owned())
        .collect()
}

/// A stub registry listing GOOD's `a` and `b` (UP), and a registry over it
/// (fetched on demand only, `delta_retention` when given) that has its
/// first copy, read back as `[a, b]`.
async fn a_and_b_registry(delta_retention: Option<Duration>) -> (Stub, EurekaRegistry) {
    let stub = Stub::start().await;
    let a = record("GOOD", "a", 1001, "UP", "ADDED", "{}");
    let b = record("GOOD", "b", 1002, "UP", "ADDED", "{}");
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps("UP_2_", "GOOD", &[a, b]))],
    );
    let mut builder = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600));
    if let Some(retention) = delta_retention {
        builder = builder.delta_retention(retention);
    }
    let registry = builder.build().expect("build");
    registry.ready().await.expect("first fetch");
    assert_eq!(ids(registry.fetch("good").await.expect("list")), ["a", "b"]);
    (stub, registry)
}

/// A stub registry listing GOOD's instance `a` (fetched every 100 ms),
/// and a registry over it that has its first copy.
async fn good_registry() -> (Stub, EurekaRegistry) {
    let stub = Stub::start().await;
    let a = record("GOOD", "a", 1001, "UP", "ADDED", "{}");
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps("UP_1_", "GOOD", &[a]))],
    );
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(apps("UP_1_", "GOOD", &[]))],
    );
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_millis(100))
        .build()
        .expect("build");
    registry.ready().await.expect("first fetch");
    (stub, registry)
}

/// The inner service: answers at once.
type Answering = tower::util::ServiceFn<
    fn(
        http::Request<()>,
    ) -> std::future::Ready<Result<http::Response<()>, std::convert::Infallible>>,
>;

/// A balancer over `registry`'s service `good`, refreshed every 100 ms
/// (no jitter), over an inner service that answers at once.
fn balancer_over(registry: &EurekaRegistry) -> LoadBalancer<Answering> {
    fn answer(
        _req: http::Request<()>,
    ) -> std::future::Ready<Result<http::Response<()>, std::convert::Infallible>> {
        std::future::ready(Ok(http::Response::new(())))
    }
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_millis(100);
    refresh.jitter = 0.0;
    let answer: fn(_) -> _ = answer;
    LoadBalancer::builder()
        .source(registry.clone())
        .service("good")
        .refresh(refresh)
        .build(tower::service_fn(answer))
        .expect("balancer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_shows_in_refresh_status_and_keeps_the_list() {
    let (stub, registry) = good_registry().await;
    let lb = balancer_over(&registry);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let healthy = lb.refresh_status("good").expect("status");
    assert_eq!(
        (healthy.instances, healthy.consecutive_failures),
        (1, 0),
        "{healthy:?}"
    );

    // Outage: every registry call fails.
    stub.set("/eureka/apps", vec![Answer::status(500)]);
    stub.set("/eureka/apps/delta", vec![Answer::status(500)]);
    let outage = Duration::from_millis(1500);
    tokio::time::sleep(outage).await;
    let status = lb.refresh_status("good").expect("status");
    let registry_age = registry.since_last_success();
    println!(
        "registry: last success {registry_age:?} ago, {:?}\nrefresh: {status:?}",
        registry.stats()
    );
    assert!(
        status.failures > 0 && status.consecutive_failures > 0,
        "{status:?}"
    );
    assert!(
        status
            .since_last_success
            .is_some_and(|d| d >= outage - Duration::from_millis(300)),
        "registry failing for {outage:?} but the service's last success was {:?} ago",
        status.since_last_success
    );
    assert_eq!(status.instances, 1, "the last good list is kept");
    let err = status.last_error.expect("the registry's error");
    assert!(err.to_string().contains("500"), "{err}");
    // The registry's read names the failure (a `RegistryStale` inside
    // `DiscoveryError::Other`; matched by text so this file also builds
    // against the old API, where the read succeeded). This handle is a
    // reader of its own, which last read before the copy's last fetch:
    // its first read gets the copy, the next the failure.
    let first = registry.fetch("good").await.map(ids);
    assert_eq!(first.expect("the copy"), ["a"]);
    let err = registry.fetch("good").await.expect_err("stale");
    assert!(err.to_string().contains("may be stale"), "{err}");
    assert!(err.to_string().contains("500"), "{err}");

    // Recovery: the next success clears it.
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps(
            "UP_1_",
            "GOOD",
            &[record("GOOD", "a", 1001, "UP", "ADDED", "{}")],
        ))],
    );
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(apps("UP_1_", "GOOD", &[]))],
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = lb.refresh_status("good").expect("status");
    assert_eq!(
        (status.instances, status.consecutive_failures),
        (1, 0),
        "{status:?}"
    );
    assert_eq!(registry.fetch("good").await.expect("fresh").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_service_id_finds_its_upper_cased_app() {
    let stub = Stub::start().await;
    let u = record("ÜBER-SERVICE", "u1", 1001, "UP", "ADDED", "{}");
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps("UP_1_", "ÜBER-SERVICE", &[u]))],
    );
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .expect("build");
    registry.ready().await.expect("first fetch");
    assert_eq!(registry.instances("über-service").len(), 1);
    assert_eq!(registry.instances(" Über-Service ").len(), 1);
    assert_eq!(
        registry.fetch("über-service").await.expect("fetch").len(),
        1
    );
}

/// A service first read during an outage gets the registry's copy (the
/// last good data there is, as the Java client serves its cache): its 10
/// requests all succeed. Before, every read failed while the last fetch
/// had failed: 0 of 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_first_used_during_an_outage_gets_the_copy() {
    let (stub, registry) = good_registry().await;
    assert_eq!(registry.instances("good").len(), 1);
    stub.set("/eureka/apps", vec![Answer::status(500)]);
    stub.set("/eureka/apps/delta", vec![Answer::status(500)]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    println!(
        "copy still holds {} instance(s)",
        registry.instances("good").len()
    );
    let lb = balancer_over(&registry);
    let mut ok = 0;
    let mut last = String::new();
    for _ in 0..10 {
        let req = http::Request::builder()
            .uri("http://good/x")
            .body(())
            .unwrap();
        match lb.clone().oneshot(req).await {
            Ok(_) => ok += 1,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = lb.refresh_status("good");
    println!("ok {ok} of 10; last error: {last}; status {status:?}");
    assert_eq!(ok, 10, "copy has the instance; last error: {last}");
}

/// An on-demand service evicted while idle during an outage, and routed
/// again before the outage ends, takes the copy. Its balancer's one
/// registry clone had read the app during the outage, so the re-added
/// service's first read got the stale error and, having no last list to
/// keep, failed every request until the registry fetched again: 0 of 5
/// answered before, 5 of 5 now, and its refresh still counts the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_service_added_again_during_an_outage_gets_the_copy() {
    let (stub, registry) = good_registry().await;
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_millis(100);
    refresh.jitter = 0.0;
    let lb = LoadBalancer::builder()
        .source(registry.clone())
        .discover_on_demand(true)
        .on_demand_idle(Duration::from_millis(1000))
        .refresh(refresh)
        .build(tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        }))
        .expect("balancer");
    let get = || {
        http::Request::builder()
            .uri("http://good/x")
            .body(())
            .expect("request")
    };
    lb.clone().oneshot(get()).await.expect("first request");
    stub.set("/eureka/apps", vec![Answer::status(500)]);
    stub.set("/eureka/apps/delta", vec![Answer::status(500)]);
    // The service's refresh reads the failing registry (stale) until the
    // service is dropped, idle past `on_demand_idle`.
    let stale_then_evicted = async {
        let mut stale_seen = false;
        while let Some(status) = lb.refresh_status("good") {
            stale_seen |= status
                .last_error
                .is_some_and(|e| e.to_string().contains("may be stale"));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stale_seen
    };
    let stale_seen = tokio::time::timeout(Duration::from_secs(10), stale_then_evicted)
        .await
        .expect("evicted within 10 s");
    assert!(stale_seen, "the service read the failing registry");
    assert!(registry.stats().consecutive_failures > 0);
    let mut answered = 0;
    let mut last = String::new();
    for _ in 0..5 {
        match lb.clone().oneshot(get()).await {
            Ok(_) => answered += 1,
            Err(e) => last = e.to_string(),
        }
    }
    let status = lb.refresh_status("good").expect("routed again");
    println!("{answered} of 5; last error: {last}; {status:?}");
    assert_eq!(answered, 5, "the copy lists `a`; last error: {last}");
    assert_eq!(status.instances, 1, "{status:?}");
    assert!(status.failures >= 1 && status.successes == 0, "{status:?}");
    let err = status.last_error.expect("the stale error is kept");
    assert!(err.to_string().contains("may be stale"), "{err}");
}

/// A delta applied before the full fetch it calls for fails is served.
/// The delta marks `b` OUT_OF_SERVICE (draining) and its hash does not
/// match the copy (the registry also holds a record the copy missed), so
/// the registry fetches the full registry to reconcile, which answers 500.
/// The copy holds the delta, as the Java client's does (its
/// `reconcileAndLogDifference` logs the failed full fetch and keeps the
/// updated copy); but the read failed as stale, so the service kept its
/// list with `b` UP for as long as full fetches failed: `[a, b]` before,
/// `[a]` now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_applied_before_a_failed_full_fetch_is_served() {
    let (stub, registry) = a_and_b_registry(None).await;

    let drained = record("GOOD", "b", 1002, "OUT_OF_SERVICE", "MODIFIED", "{}");
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(apps(
            "OUT_OF_SERVICE_1_UP_2_",
            "GOOD",
            &[drained],
        ))],
    );
    stub.set("/eureka/apps", vec![Answer::status(500)]);
    let reconciled = registry.refresh_now().await;
    let stats = registry.stats();
    println!("refresh_now: {reconciled:?}; {stats:?}");
    assert_eq!((stats.delta_fetches, stats.hash_mismatches), (1, 1));
    assert_eq!(registry.local_hash(), "OUT_OF_SERVICE_1_UP_1_");
    let listed = registry.fetch("good").await.map(up);
    assert_eq!(listed.expect("the copy with the delta"), ["a"]);
}

/// A service whose last read came before a fetch the copy applied gets
/// that copy when it reads during an outage that began after it: the
/// registry deleted `b` (a delta, applied), then every registry call
/// answered 500 before the service read again. The read failed as stale,
/// so the service kept its list with the deleted `b` for as long as the
/// outage lasted: `[a, b]` before (a `RegistryStale` error), `[a]` now;
/// the read after it, with nothing newer in the copy, is stale again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_newer_than_a_services_last_read_is_served_during_an_outage() {
    let (stub, registry) = a_and_b_registry(None).await;

    // The registry deletes `b`; the copy applies the delta (hash matches).
    let deleted = record("GOOD", "b", 1002, "UP", "DELETED", "{}");
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(apps("UP_1_", "GOOD", &[deleted]))],
    );
    registry.refresh_now().await.expect("delta applied");
    assert_eq!(registry.local_hash(), "UP_1_");

    // Then an outage, before the service reads again.
    stub.set("/eureka/apps", vec![Answer::status(500)]);
    stub.set("/eureka/apps/delta", vec![Answer::status(500)]);
    registry.refresh_now().await.expect_err("outage");
    let read = registry.fetch("good").await.map(ids);
    println!("read during the outage: {read:?}");
    assert_eq!(read.expect("the copy, newer than the last read"), ["a"]);
    // Nothing newer since: the outage shows.
    let again = registry.fetch("good").await.expect_err("stale");
    assert!(again.to_string().contains("may be stale"), "{again}");
}

/// Two readers of one registry (each balancer over its own clone; found
/// by helper 118): the copy drops `b`, one reader reads it, then the
/// registry fails. The registry remembered "read since the last fetch"
/// per app, not per reader, so the other reader got the stale error and
/// kept `b` for the whole outage (369 of 738 requests in 5 s went to the
/// drained instance), and a balancer built during the outage got no list
/// at all. Now each clone is a reader of its own, keeping its reads with
/// it: each gets the copy once, then the stale error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_clone_of_a_registry_reads_the_copy_once_during_an_outage() {
    let (stub, fast) = a_and_b_registry(None).await;
    let slow = fast.clone();
    assert_eq!(ids(slow.fetch("good").await.expect("list")), ["a", "b"]);
    let deleted = record("GOOD", "b", 1002, "UP", "DELETED", "{}");
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(apps("UP_1_", "GOOD", &[deleted]))],
    );
    fast.refresh_now().await.expect("delta applied");
    assert_eq!(ids(fast.fetch("good").await.expect("list")), ["a"]);
    stub.set("/eureka/apps", vec![Answer::status(500)]);
    stub.set("/eureka/apps/delta", vec![Answer::status(500)]);
    fast.refresh_now().await.expect_err("outage");
    let stale =
        |r: Result<Vec<tower_ribbon::Instance>, tower_ribbon::error::DiscoveryError>| match r {
            Ok(list) => panic!("the copy again: {:?}", ids(list)),
            Err(e) => assert!(e.to_string().contains("may be stale"), "{e}"),
        };
    stale(fast.fetch("good").await);
    // Before: stale for the slow reader, which kept `b`.
    assert_eq!(ids(slow.fetch("good").await.expect("the copy")), ["a"]);
    stale(slow.fetch("good").await);
    // A balancer built during the outage: its clone reads the copy.
    let new = fast.clone();
    assert_eq!(ids(new.fetch("good").await.expect("the copy")), ["a"]);
    stale(new.fetch("good").await);
    // Clones that read once and are dropped (a clone per request, as an
    // axum `State` makes) leave nothing behind (helper 121: a first
    // version kept each clone's read in the registry, past 65 536 of them
    // every new reader counted as read before and got no list).
    for _ in 0..70_000 {
        let once = fast.clone();
        let _ = once.fetch("good").await;
    }
    let last = fast.clone();
    assert_eq!(ids(last.fetch("good").await.expect("the copy")), ["a"]);
}

/// After the registry was unreachable for longer than Eureka keeps changes
/// in its delta queue (`retention-time-in-m-s-in-delta-queue`, 3 min by
/// default; 1 s here through `delta_retention`, so that the check that the
/// fetch right after it is a delta again has room on a loaded host), the
/// next fetch is a full one: a delta then lacks the changes of the outage's start. Here a
/// rolling replacement (`b` cancelled, `c` registered, both UP) happened
/// early in the outage, so the delta after it carries neither, and its
/// hash (`UP_2_`) still matches a copy holding the dead `b`: the copy kept
/// `b` and never listed `c`, for good (every later delta matches too).
/// Before: `[a, b]` after the outage; now `[a, c]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_after_an_outage_longer_than_the_delta_queue_is_full() {
    let (stub, registry) = a_and_b_registry(Some(Duration::from_secs(1))).await;
    let a = record("GOOD", "a", 1001, "UP", "ADDED", "{}");
    let c = record("GOOD", "c", 1003, "UP", "ADDED", "{}");

    stub.set("/eureka/apps", vec![Answer::status(500)]);
    stub.set("/eureka/apps/delta", vec![Answer::status(500)]);
    registry.refresh_now().await.expect_err("outage");
    // Longer than the delta queue keeps a change.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Back: `b` was replaced by `c` at the outage's start, so the delta
    // queue no longer holds either change.
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps("UP_2_", "GOOD", &[a, c]))],
    );
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(apps("UP_2_", "GOOD", &[]))],
    );
    registry.refresh_now().await.expect("back");
    let listed = ids(registry.fetch("good").await.expect("list"));
    println!("after the outage: {listed:?}; {:?}", registry.stats());
    assert_eq!(listed, ["a", "c"]);
    assert_eq!(registry.stats().full_fetches, 2);
    // Right after a fetch, the next one is a delta again.
    registry.refresh_now().await.expect("delta");
    let stats = registry.stats();
    assert_eq!((stats.full_fetches, stats.delta_fetches), (2, 1));
}

/// When the full fetch that an outage longer than the delta queue calls
/// for fails (a full registry over a bound, a `/apps` that times out),
/// the delta is still applied: a drain it carries reaches the copy, and
/// services read it. Without it, every fetch from then on would be a
/// failing full one, and `b` would stay UP for as long as `/apps` failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_is_still_applied_while_the_full_fetch_after_an_outage_fails() {
    let (stub, registry) = a_and_b_registry(Some(Duration::from_millis(300))).await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    stub.set("/eureka/apps", vec![Answer::status(500)]);
    let drained = record("GOOD", "b", 1002, "OUT_OF_SERVICE", "MODIFIED", "{}");
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(apps(
            "OUT_OF_SERVICE_1_UP_1_",
            "GOOD",
            &[drained],
        ))],
    );
    for _ in 0..2 {
        let result = registry.refresh_now().await;
        println!("refresh_now: {result:?}; {:?}", registry.stats());
        assert!(result.is_err(), "the full fetch fails");
        assert_eq!(registry.local_hash(), "OUT_OF_SERVICE_1_UP_1_");
        let listed = registry.fetch("good").await.map(up);
        assert_eq!(listed.expect("the copy with the delta"), ["a"]);
    }
    // One full fetch tried per refresh, not two.
    let full_tries = stub
        .log()
        .iter()
        .filter(|(_, path, _)| path.ends_with("/apps"))
        .count();
    assert_eq!(full_tries, 1 + 2);
}

/// [spring-cloud-gateway#3688](https://github.com/spring-cloud/spring-cloud-gateway/issues/3688):
/// a gateway kept routing to a service's instances after every one of
/// them left Eureka (the app gone from `/apps`). Here the registry's delta
/// deletes the service's only instance and the app disappears from the
/// full registry too: within the fetch and refresh intervals the list is
/// empty and requests fail with "no instances" instead of going to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scg_3688_a_service_whose_instances_all_left_eureka_gets_no_request() {
    let (stub, registry) = good_registry().await;
    let lb = balancer_over(&registry);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let req = || http::Request::get("http://good/x").body(()).unwrap();
    assert!(lb.clone().oneshot(req()).await.is_ok());

    let a = record("GOOD", "a", 1001, "UP", "DELETED", "{}");
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(apps("", "GOOD", &[a]))],
    );
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(
            r#"{"applications":{"versions__delta":"1","apps__hashcode":"","application":[]}}"#,
        )],
    );
    // A fetch and a refresh (100 ms each); waited for up to 10 s on a
    // busy machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !lb.snapshot("good").expect("service").is_empty() {
        assert!(std::time::Instant::now() < deadline, "still listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(registry.instances("good").is_empty());
    for _ in 0..5 {
        let err = lb
            .clone()
            .oneshot(req())
            .await
            .expect_err("no instance left");
        assert!(err.is_no_instances(), "{err}");
    }
}

/// The paths of the GETs `stub` served, in order.
fn gets(stub: &Stub) -> Vec<String> {
    stub.log()
        .into_iter()
        .filter(|(method, _, _)| method == "GET")
        .map(|(_, path, _)| path)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_no_server_answers_fails_the_refresh_without_a_full_fetch() {
    let (stub, registry) = a_and_b_registry(None).await;
    let before = gets(&stub).len();
    let failures = registry.stats().failures;
    // 503 and 429: the server cannot answer. Asking it for the full
    // registry at once cost a second request (and a second request
    // timeout on a hung server) on every refresh.
    for status in [503, 429] {
        stub.set("/eureka/apps/delta", vec![Answer::status(status)]);
        let error = registry.refresh_now().await.expect_err("refresh fails");
        assert!(
            error.to_string().contains(&status.to_string()),
            "{status}: {error}"
        );
    }
    assert_eq!(
        gets(&stub)[before..],
        ["/eureka/apps/delta", "/eureka/apps/delta"]
    );
    assert_eq!(ids(registry.instances("good")), ["a", "b"]);
    // One failure per failed refresh.
    assert_eq!(registry.stats().failures, failures + 2);
    // A refused delta (`disableDelta`'s 403) still means a full fetch.
    stub.set("/eureka/apps/delta", vec![Answer::status(403)]);
    registry.refresh_now().await.expect("full fetch");
    assert_eq!(
        gets(&stub)[before + 2..],
        ["/eureka/apps/delta", "/eureka/apps"]
    );
    assert_eq!(registry.stats().failures, failures + 3);
}

/// `EurekaSource` asked for `SVC` and answered for `OTHER` (a misrouting
/// proxy, a broken peer; found by helper 109): the other app's instance
/// was served as `svc`'s. Now the fetch fails naming both, and a balancer
/// keeps its last list; an answer naming the app in another case is
/// taken.
#[tokio::test]
async fn an_answer_for_another_application_is_refused() {
    use tower_ribbon::discovery::eureka::EurekaSource;
    let stub = Stub::start().await;
    let other = record("OTHER", "other-1", 7001, "UP", "ADDED", "{}");
    let body = |name: &str, rec: &str| {
        format!(r#"{{"application":{{"name":"{name}","instance":[{rec}]}}}}"#)
    };
    stub.set("/eureka/apps/SVC", vec![Answer::ok(body("OTHER", &other))]);
    let source = EurekaSource::builder()
        .server_url(stub.url())
        .build()
        .unwrap();
    let err = source.fetch("svc").await.expect_err("another app's answer");
    assert!(
        err.to_string()
            .contains("registry answered for application `OTHER` when asked for `SVC`"),
        "{err}"
    );
    let own = record("SVC", "svc-1", 7002, "UP", "ADDED", "{}");
    stub.set("/eureka/apps/SVC", vec![Answer::ok(body("svc", &own))]);
    let list = source.fetch("svc").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].port(), 7002);
}

/// A server serving an empty registry (a peer restarted on its own, before
/// the instances renew) does not hide the next one, which lists the app:
/// the full fetch asks on, as an app's fetch does past a 404. Before, the
/// registry took the first 200 and the app's list emptied (helper 183:
/// 402 ms after the preferred server turned empty, 3 of 3 requests failed
/// with the other server still listing the app).
#[tokio::test]
async fn an_empty_registry_at_one_server_does_not_hide_the_next() {
    let empty = Stub::start().await;
    empty.set(
        "/eureka/apps",
        vec![Answer::ok(
            r#"{"applications":{"versions__delta":"1","apps__hashcode":"","application":[]}}"#,
        )],
    );
    let listing = Stub::start().await;
    let a = record("GOOD", "a", 1001, "UP", "ADDED", "{}");
    listing.set(
        "/eureka/apps",
        vec![Answer::ok(apps("UP_1_", "GOOD", &[a]))],
    );
    let registry = EurekaRegistry::builder()
        .server_urls(&format!("{},{}", empty.url(), listing.url()))
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .expect("build");
    registry.ready().await.expect("first fetch");
    assert_eq!(ids(registry.fetch("good").await.expect("list")), ["a"]);
    let asked = |stub: &Stub| {
        stub.log()
            .iter()
            .filter(|(_, p, _)| p == "/eureka/apps")
            .count()
    };
    assert_eq!((asked(&empty), asked(&listing)), (1, 1));
}

/// The registry holds an empty registry beside a failed server by its
/// copy, not by its last full answer: a copy that deltas filled after an
/// empty first fetch (a registry started before its services) was emptied
/// at once when the preferred server restarted empty and the other failed
/// (helper 185: 1 instance → 0, no error, on the first version of the
/// absence hold); a copy a full fetch filled was kept. Both are kept now.
#[tokio::test]
async fn a_copy_filled_by_deltas_is_kept_beside_a_failed_server() {
    const EMPTY: &str =
        r#"{"applications":{"versions__delta":"1","apps__hashcode":"","application":[]}}"#;
    for first_full_lists in [false, true] {
        let a = Stub::start().await;
        let b = Stub::start().await;
        let x = record("GOOD", "x", 1001, "UP", "ADDED", "{}");
        let first = if first_full_lists {
            apps("UP_1_", "GOOD", std::slice::from_ref(&x))
        } else {
            EMPTY.to_owned()
        };
        a.set("/eureka/apps", vec![Answer::ok(first.clone())]);
        b.set("/eureka/apps", vec![Answer::ok(first)]);
        a.set(
            "/eureka/apps/delta",
            vec![Answer::ok(apps("UP_1_", "GOOD", std::slice::from_ref(&x)))],
        );
        let registry = EurekaRegistry::builder()
            .server_urls(&format!("{},{}", a.url(), b.url()))
            .fetch_interval(Duration::from_secs(3600))
            .build()
            .expect("build");
        registry.ready().await.expect("first");
        registry.refresh_now().await.expect("delta");
        assert_eq!(ids(registry.fetch("good").await.expect("list")), ["x"]);
        // `a` restarted on its own (empty registry and delta); `b` fails.
        a.set("/eureka/apps", vec![Answer::ok(EMPTY)]);
        a.set("/eureka/apps/delta", vec![Answer::ok(EMPTY)]);
        b.set("/eureka/apps", vec![Answer::status(503)]);
        b.set("/eureka/apps/delta", vec![Answer::status(503)]);
        let result = registry.refresh_now().await;
        assert!(
            matches!(
                &result,
                Err(tower_ribbon::DiscoveryError::AbsenceUnconfirmed { path, .. }) if path == "apps"
            ),
            "first full fetch listed: {first_full_lists}; {result:?}"
        );
        assert_eq!(
            registry.stats().instances,
            1,
            "first full fetch listed: {first_full_lists}"
        );
    }
}
