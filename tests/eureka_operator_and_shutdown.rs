//! An operator's enable after a start no server answered, and a
//! registration landing after the shutdown's cancel (helper 129, stop 48).
//!
//! - An instance registered OUT_OF_SERVICE (a Spinnaker-style rollout),
//!   its first start dropped by a caller's timeout or timed out, then
//!   enabled by an operator (`PUT .../status?value=UP`): a first version of
//!   stop 48's fix made UP undoable after any unanswered registration, and
//!   the read-backs sent OUT_OF_SERVICE over the enable (0 of 12 renewals
//!   served UP, 0 of 100 requests). UP is undoable only once this
//!   registration sent UP: 12 of 12, 100 of 100.
//! - A re-registration that timed out and was applied after `shutdown`'s
//!   cancel served the shut-down instance UP for its lease (21 of 32 reads
//!   over 10 s, 100 of 100 requests). After a call went unanswered the
//!   shutdown cancels once more a request timeout later: 0 of 32.
#![cfg(feature = "eureka")]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::eureka::EurekaFixture;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::EurekaRegistration;

#[path = "support/holding_proxy.rs"]
mod holding_proxy;

use holding_proxy::{Proxy, proxy, route_through, served};

type Handle = tower_ribbon::discovery::eureka::RegistrationHandle;

/// Drives `n` renewals by hand; counts the renewals after which `eureka`
/// serves the instance UP, then what 100 balanced requests reach.
async fn watch(
    eureka: &EurekaFixture,
    app: &str,
    id: &str,
    handle: &Handle,
    n: usize,
) -> (
    usize,
    Vec<String>,
    std::collections::BTreeMap<String, usize>,
) {
    let mut up = 0;
    let mut seen = Vec::new();
    for _ in 0..n {
        if let Err(e) = handle.renew_now().await {
            eprintln!("renew_now: {e}");
        }
        let s = served(eureka, app, id).await.unwrap_or_else(|| "-".into());
        if s == "UP" {
            up += 1;
        }
        seen.push(s);
    }
    (up, seen, route_through(eureka, app).await)
}

/// Registrant calls in the proxy log from `from` on: (instance GETs,
/// status PUTs, heartbeats, registrations).
fn calls(p: &Proxy, from: usize) -> (usize, usize, usize, usize) {
    let log = p.log();
    let tail = &log[from.min(log.len())..];
    let get = tail
        .iter()
        .filter(|l| l.starts_with("GET ") && !l.contains('?') && l.split('/').count() == 5)
        .count();
    let status = tail
        .iter()
        .filter(|l| l.starts_with("PUT ") && l.contains("/status?"))
        .count();
    let beat = tail
        .iter()
        .filter(|l| l.starts_with("PUT ") && !l.contains("/status?"))
        .count();
    let post = tail.iter().filter(|l| l.starts_with("POST ")).count();
    (get, status, beat, post)
}

#[derive(Clone, Copy, Debug)]
enum FirstStart {
    /// No trouble: the control.
    Clean,
    /// The caller's `tokio::time::timeout` drops `start()` while the
    /// server holds the registration; the server applies it later.
    Dropped,
    /// `start()` times out (request timeout 1 s, registration held 1.3 s)
    /// and returns its error; the server applies it later.
    TimedOut,
}

/// Spinnaker-style rollout: the instance registers OUT_OF_SERVICE
/// (`initial_status`), never sends UP, and the deploy tooling enables it
/// through Eureka's REST API (`PUT …/status?value=UP`). Returns UP samples
/// over 12 renewals after the enable, the samples, the balancer's tally,
/// and the registrant's calls over those renewals.
async fn enable_by_operator(
    kind: FirstStart,
) -> Option<(
    usize,
    Vec<String>,
    std::collections::BTreeMap<String, usize>,
    (usize, usize, usize, usize),
)> {
    let s = EurekaFixture::start()?;
    let app = format!("attack50-enable-{}", format!("{kind:?}").to_lowercase());
    let backend = support::backend::Backend::start("enabled").await.unwrap();
    let p = proxy(s.port()).await;
    let id = format!("127.0.0.1:{app}:{}", backend.port());
    let timeout = match kind {
        FirstStart::TimedOut => Duration::from_secs(1),
        _ => Duration::from_secs(5),
    };
    let registration = EurekaRegistration::builder(&app, "127.0.0.1", backend.port())
        .server_urls(&p.url())
        .renew_interval(Duration::from_secs(3600))
        .lease_duration(Duration::from_secs(3 * 3600))
        .request_timeout(timeout)
        .initial_status(InstanceStatus::OutOfService)
        .build()
        .unwrap();
    match kind {
        FirstStart::Clean => {}
        FirstStart::Dropped => {
            p.hold_post_ms.store(1500, Ordering::SeqCst);
            let cut =
                tokio::time::timeout(Duration::from_millis(500), registration.clone().start())
                    .await;
            assert!(cut.is_err(), "start dropped by the caller");
        }
        FirstStart::TimedOut => {
            p.hold_post_ms.store(1300, Ordering::SeqCst);
            let r = registration.clone().start().await;
            assert!(r.is_err(), "start timed out: {r:?}");
        }
    }
    p.hold_post_ms.store(0, Ordering::SeqCst);
    if !matches!(kind, FirstStart::Clean) {
        tokio::time::sleep(Duration::from_millis(1800)).await;
        assert_eq!(p.forwarded_late.load(Ordering::SeqCst), 1, "{:?}", p.log());
        eprintln!(
            "[{kind:?}] the late registration landed: served {:?}",
            served(&s, &app, &id).await
        );
    }
    // The app retries its start: answered at once.
    let handle = registration.start().await.expect("started");
    assert_eq!(
        served(&s, &app, &id).await.as_deref(),
        Some("OUT_OF_SERVICE")
    );
    // The deploy tooling enables the instance (an operator's UP, a status
    // this registration never sent).
    s.set_status(&app, &id, "UP").await;
    assert_eq!(served(&s, &app, &id).await.as_deref(), Some("UP"));
    let from = p.log().len();
    let (up, seen, tally) = watch(&s, &app, &id, &handle, 12).await;
    let load = calls(&p, from);
    eprintln!(
        "[{kind:?}] wanted {:?}; operator's UP served after {up}/12 renewals: {seen:?}; 100 requests: {tally:?}; calls over 12 renewals (GET, status PUT, heartbeat, POST) {load:?}; stats {:?}",
        handle.status(),
        handle.stats()
    );
    handle.shutdown().await.ok();
    Some((up, seen, tally, load))
}

/// Control: with no dropped or timed-out call, the operator's UP is kept
/// at all 12 renewals and the balancer sends 100 of 100 requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_an_operators_enable_is_kept() {
    let Some((up, seen, tally, _)) = enable_by_operator(FirstStart::Clean).await else {
        return;
    };
    assert_eq!(up, 12, "{seen:?} {tally:?}");
}

/// A start dropped by the caller's timeout (retried at once) arms the
/// read-backs with UP undoable; the operator's enable is then undone at
/// the next renewal, and for good (the registrant's OUT_OF_SERVICE is an
/// override that stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_start_keeps_an_operators_enable() {
    let Some((up, seen, tally, _)) = enable_by_operator(FirstStart::Dropped).await else {
        return;
    };
    assert_eq!(
        up, 12,
        "the operator's UP (a status this registration never sent) was undone: UP after {up} of 12 renewals {seen:?}; 100 requests: {tally:?}"
    );
}

/// As above, the first start timing out (no caller timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_start_keeps_an_operators_enable() {
    let Some((up, seen, tally, _)) = enable_by_operator(FirstStart::TimedOut).await else {
        return;
    };
    assert_eq!(
        up, 12,
        "the operator's UP (a status this registration never sent) was undone: UP after {up} of 12 renewals {seen:?}; 100 requests: {tally:?}"
    );
}

/// Shutdown racing a re-registration that timed out (no caller timeout):
/// the server lost the instance (an eviction, a restart: here an
/// operator's DELETE), the background renewal meets 404 and registers
/// again; the server holds that registration past the request timeout
/// (1 s) and applies it at 1.3 s. `shutdown()` waits for the renewal to
/// give up, cancels (404: nothing there yet, "already gone", `Ok`), and
/// the held registration lands after it: the shut-down instance is served
/// UP until its lease expires. Docs (`shutdown`): "so no registration can
/// land after the cancel"; "callers stop routing here at their next
/// fetch".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_timed_out_before_shutdown_is_cancelled_again() {
    let Some(s) = EurekaFixture::start() else {
        return;
    };
    let app = "attack50-shutdown";
    let backend = support::backend::Backend::start("shut-down").await.unwrap();
    let p = proxy(s.port()).await;
    let id = format!("127.0.0.1:{app}:{}", backend.port());
    let registration = EurekaRegistration::builder(app, "127.0.0.1", backend.port())
        .server_urls(&p.url())
        .renew_interval(Duration::from_secs(2))
        .lease_duration(Duration::from_secs(10))
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = registration.start().await.expect("registered");
    assert_eq!(served(&s, app, &id).await.as_deref(), Some("UP"));
    // The server forgets the instance; registrations are slow now.
    p.hold_post_ms.store(1300, Ordering::SeqCst);
    s.delete(app, &id).await;
    let t0 = Instant::now();
    while p.held.load(Ordering::SeqCst) == 0 && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.held.load(Ordering::SeqCst), 1, "{:?}", p.log());
    p.hold_post_ms.store(0, Ordering::SeqCst);
    // The app shuts down now (a deploy): waits for the renewal in flight.
    let shut = handle.shutdown().await;
    let shut_at = Instant::now();
    eprintln!("shutdown: {shut:?} after {:?}", t0.elapsed());
    assert!(shut.is_ok(), "{shut:?}");
    // Sample what the server serves over the next 16 s (lease 10 s).
    let mut up_ms = Vec::new();
    let mut samples = Vec::new();
    let mut tally = None;
    while shut_at.elapsed() < Duration::from_secs(16) {
        let st = served(&s, app, &id).await;
        if st.as_deref() == Some("UP") {
            up_ms.push(shut_at.elapsed().as_millis());
            if tally.is_none() {
                tally = Some(route_through(&s, app).await);
            }
        }
        samples.push(st.unwrap_or_else(|| "-".into()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let up_for = up_ms.last().copied().unwrap_or(0) - up_ms.first().copied().unwrap_or(0);
    eprintln!(
        "after shutdown() returned Ok: served UP in {} of {} samples (first at {:?} ms, last at {:?} ms: {up_for} ms); 100 requests via the server then: {tally:?}; late POST forwarded {}; log {:?}",
        up_ms.len(),
        samples.len(),
        up_ms.first(),
        up_ms.last(),
        p.forwarded_late.load(Ordering::SeqCst),
        p.log()
    );
    assert!(
        up_ms.is_empty(),
        "a shut-down instance served UP in {} of {} samples over {up_for} ms after shutdown returned Ok; 100 requests: {tally:?}",
        up_ms.len(),
        samples.len()
    );
}
