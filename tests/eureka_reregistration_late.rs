//! A re-registration after a 404 that is dropped or times out at a peer
//! holding the UP lease (helper 127, stop 48), and the cost of the stale
//! copy a `RegistryStale` carries.
//!
//! - The registration carried OUT_OF_SERVICE (a draining instance); the
//!   peer applied it late over its UP lease, whose status Eureka keeps
//!   (`LeaseExistsRule`), and the registrant took the UP for an operator's
//!   override and never sent the drain again: served UP at 12 of 12
//!   renewals, 100 of 100 requests of a balancer to the draining instance.
//!   Now the status call is due from before the registration, and a
//!   registration's late landing may undo UP: 0 of 12.
//! - A stale read of a 90 000-instance app carries its copy: `Debug` of the
//!   error under 10 000 bytes (its length, not its instances).
//!
//! Registrant tests run two standalone real Spring Cloud Eureka servers
//! (A and B, not peered: a peer that missed a status change, as the
//! registration module docs describe) behind programmable loopback proxies
//! that can answer 503 (a peer refusing) or hold a request before passing
//! it on (a slow peer applying a write late).
#![cfg(feature = "eureka")]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::eureka::EurekaFixture;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::{EurekaRegistration, EurekaRegistry};

#[path = "support/holding_proxy.rs"]
mod holding_proxy;

use holding_proxy::{Proxy, proxy, route_through, served};

/// Sets up: registered UP at B, then (B refusing) registered again at A,
/// then drained to OUT_OF_SERVICE at A (answered). B still holds the UP
/// lease stamped before the drain: the peer that missed a status change.
#[allow(clippy::too_many_arguments)]
async fn drained_at_a_only(
    a: &EurekaFixture,
    b: &EurekaFixture,
    pa: &Proxy,
    pb: &Proxy,
    app: &str,
    port: u16,
    renew: Duration,
    request_timeout: Duration,
) -> (tower_ribbon::discovery::eureka::RegistrationHandle, String) {
    let id = format!("127.0.0.1:{app}:{port}");
    let registration = EurekaRegistration::builder(app, "127.0.0.1", port)
        .server_urls(&format!("{},{}", pa.url(), pb.url()))
        .renew_interval(renew)
        .lease_duration(renew * 3)
        .request_timeout(request_timeout)
        .build()
        .unwrap();
    pa.fail.store(true, Ordering::SeqCst);
    let handle = registration.start().await.expect("registered at B");
    assert_eq!(served(b, app, &id).await.as_deref(), Some("UP"));
    assert_eq!(served(a, app, &id).await, None);
    pa.fail.store(false, Ordering::SeqCst);
    pb.fail.store(true, Ordering::SeqCst);
    handle.renew_now().await.expect("re-registered at A");
    assert_eq!(served(a, app, &id).await.as_deref(), Some("UP"));
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("drain answered by A");
    assert_eq!(served(a, app, &id).await.as_deref(), Some("OUT_OF_SERVICE"));
    assert_eq!(
        served(b, app, &id).await.as_deref(),
        Some("UP"),
        "B missed the drain"
    );
    (handle, id)
}

/// After the setup, samples what B serves over `renewals` renewals done by
/// `renew` and what a balancer over B routes to.
async fn watch_b(
    b: &EurekaFixture,
    app: &str,
    id: &str,
    handle: &tower_ribbon::discovery::eureka::RegistrationHandle,
    renewals: usize,
    drive: bool,
    every: Duration,
) -> (usize, usize, std::collections::BTreeMap<String, usize>) {
    let mut up = 0;
    let mut samples = 0;
    for _ in 0..renewals {
        if drive {
            if let Err(e) = handle.renew_now().await {
                eprintln!("renew_now: {e}");
            }
        } else {
            tokio::time::sleep(every).await;
        }
        samples += 1;
        if served(b, app, id).await.as_deref() == Some("UP") {
            up += 1;
        }
    }
    let tally = route_through(b, app).await;
    (up, samples, tally)
}

/// A renewal (`renew_now` under a caller's timeout) meets B's 404 (B's copy
/// is older than the drain) and registers again there with
/// OUT_OF_SERVICE; B is slow and the caller's timeout drops the
/// registration mid-call. B applies it later: over its existing UP lease
/// Eureka's `LeaseExistsRule` serves UP. The dropped call armed the
/// read-backs with OUT_OF_SERVICE only, so they see UP as "an operator's
/// override" and keep it; `status_unsent` was never set, so nothing sends
/// the drain. Docs: "a draining instance is never left UP"; a dropped
/// register call arms the read-backs "as a call that timed out does".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_reregistration_landing_late_at_a_peer_is_undone() {
    let (Some(a), Some(b)) = (EurekaFixture::start(), EurekaFixture::start()) else {
        return;
    };
    let app = "attack49-drop-post";
    let backend = support::backend::Backend::start("drained").await.unwrap();
    let (pa, pb) = (proxy(a.port()).await, proxy(b.port()).await);
    let (handle, id) = drained_at_a_only(
        &a,
        &b,
        &pa,
        &pb,
        app,
        backend.port(),
        Duration::from_secs(3600),
        Duration::from_secs(5),
    )
    .await;
    // A refuses now; B is back but slow with registrations.
    pa.fail.store(true, Ordering::SeqCst);
    pb.fail.store(false, Ordering::SeqCst);
    pb.hold_post_ms.store(2000, Ordering::SeqCst);
    let cut = tokio::time::timeout(Duration::from_millis(700), handle.renew_now()).await;
    assert!(
        cut.is_err(),
        "the caller's timeout dropped the renewal: {cut:?}"
    );
    pb.hold_post_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_eq!(
        pb.forwarded_late.load(Ordering::SeqCst),
        1,
        "{:?}",
        pb.log()
    );
    // A is healthy again; renewals go on at B (it answered last).
    pa.fail.store(false, Ordering::SeqCst);
    let (up, samples, tally) = watch_b(&b, app, &id, &handle, 12, true, Duration::ZERO).await;
    eprintln!(
        "wanted {:?}; B served UP after {up}/{samples} renewals; A serves {:?}; 100 requests via B: {tally:?}; stats {:?}\nB log tail: {:?}",
        handle.status(),
        served(&a, app, &id).await,
        handle.stats(),
        pb.log().iter().rev().take(8).collect::<Vec<_>>()
    );
    assert_eq!(handle.status(), InstanceStatus::OutOfService);
    assert_eq!(
        up, 0,
        "draining instance served UP by B after {up} of {samples} renewals; 100 requests: {tally:?}"
    );
}

/// No caller timeout at all: the background renewal meets B's 404 and
/// registers there with OUT_OF_SERVICE; B holds the registration past the
/// request timeout (1 s) and applies it at 1.3 s (a GC pause), A refuses.
/// The timed-out call arms the read-backs with OUT_OF_SERVICE only; B
/// serves UP (`LeaseExistsRule`) and the read-backs keep it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_reregistration_landing_late_at_a_peer_is_undone() {
    let (Some(a), Some(b)) = (EurekaFixture::start(), EurekaFixture::start()) else {
        return;
    };
    let app = "attack49-timeout-post";
    let backend = support::backend::Backend::start("drained").await.unwrap();
    let (pa, pb) = (proxy(a.port()).await, proxy(b.port()).await);
    let (handle, id) = drained_at_a_only(
        &a,
        &b,
        &pa,
        &pb,
        app,
        backend.port(),
        Duration::from_secs(2),
        Duration::from_secs(1),
    )
    .await;
    pa.fail.store(true, Ordering::SeqCst);
    pb.fail.store(false, Ordering::SeqCst);
    pb.hold_post_ms.store(1300, Ordering::SeqCst);
    let t0 = Instant::now();
    while pb.held.load(Ordering::SeqCst) == 0 && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pb.hold_post_ms.store(0, Ordering::SeqCst);
    assert_eq!(pb.held.load(Ordering::SeqCst), 1, "{:?}", pb.log());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pa.fail.store(false, Ordering::SeqCst);
    // 12 renewal intervals (24 s).
    let (up, samples, tally) =
        watch_b(&b, app, &id, &handle, 12, false, Duration::from_secs(2)).await;
    eprintln!(
        "wanted {:?}; B served UP in {up}/{samples} samples over 24 s; A serves {:?}; 100 requests via B: {tally:?}; stats {:?}\nB log tail: {:?}",
        handle.status(),
        served(&a, app, &id).await,
        handle.stats(),
        pb.log().iter().rev().take(10).collect::<Vec<_>>()
    );
    assert_eq!(
        up, 0,
        "draining instance served UP by B in {up} of {samples} samples; 100 requests: {tally:?}"
    );
}

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

fn big_records(
    app: &str,
    n: usize,
    id: impl Fn(usize) -> String,
    port: impl Fn(usize) -> String,
) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"instanceId":"{}","hostName":"10.{}.{}.{}","app":"{app}","ipAddr":"10.0.0.1","status":"UP","port":{},"securePort":{{"$":443,"@enabled":"false"}},"metadata":{{}},"actionType":"ADDED"}}"#,
                id(i),
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255,
                port(i)
            )
        })
        .collect()
}

/// Change 2: what a stale read costs for a 10^5-instance app now that the
/// error carries the app's list (cloned at every stale read, also for a
/// service whose list is kept and which drops it), and that the kept error
/// holds no list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_of_a_huge_app_prints_its_length_only() {
    use tower_ribbon::discovery::InstanceSource;
    let stub = eureka_stub::Stub::start().await;
    let n = 90_000;
    let recs = big_records(
        "BIG",
        n,
        |i| format!("id-{i}"),
        |_| r#"{"$":8080,"@enabled":"true"}"#.to_owned(),
    );
    stub.set(
        "/eureka/apps",
        vec![eureka_stub::Answer::ok(eureka_stub::apps(
            "UP_90000_",
            "BIG",
            &recs,
        ))],
    );
    stub.set("/eureka/apps/delta", vec![eureka_stub::Answer::status(500)]);
    let registry = EurekaRegistry::builder()
        .server_url(stub.url())
        .max_body_bytes(256 << 20)
        .request_timeout(Duration::from_secs(60))
        .fetch_interval(Duration::from_millis(300))
        .build()
        .unwrap();
    registry.ready().await.expect("first fetch");
    let reader = registry.clone();
    let t = Instant::now();
    let first = reader.fetch("big").await.expect("copy").len();
    let healthy_ms = t.elapsed().as_millis();
    stub.set("/eureka/apps", vec![eureka_stub::Answer::status(500)]);
    let t0 = Instant::now();
    while registry.stats().consecutive_failures == 0 && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stale_ms = Vec::new();
    let mut carried = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let err = reader.fetch("big").await.expect_err("stale");
        stale_ms.push(t.elapsed().as_millis());
        let text = format!("{err:?}");
        carried = text.len();
        assert!(
            text.len() < 10_000,
            "Debug prints the list: {} bytes",
            text.len()
        );
        assert!(err.to_string().len() < 10_000);
    }
    eprintln!(
        "healthy read {first} in {healthy_ms} ms; stale reads ms {stale_ms:?}; Debug {carried} bytes"
    );
}
