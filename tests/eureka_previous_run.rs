#![cfg(feature = "eureka")]
//! A new run of an instance id after a previous run died without
//! cancelling (helper 200), against the real Eureka server:
//!
//! - The previous run went DOWN. The new run registers UP and reads the
//!   instance back once, at its first UP, to undo that DOWN (Eureka serves
//!   DOWN and STARTING over anything, `DownOrStartingRule`). When that one
//!   read failed (a server slow to answer just after the registration),
//!   the read-backs it armed could undo nothing and `set_status(Up)` sent
//!   nothing: the new run was served DOWN for good (12 of 12 reads; its
//!   renewals keep the old lease alive). The read-backs now undo a DOWN or
//!   STARTING when the first UP's read failed.
//! - The previous run drained (OUT_OF_SERVICE) and was killed at the end
//!   of its grace period. The server keeps its override; the new run,
//!   started UP, keeps it too (as Java's client does: it may be an
//!   operator's), but an explicit `set_status(Up)` now removes it, as a
//!   start through STARTING does (before: served OUT_OF_SERVICE 10 of 10
//!   times, `set_status(Up)` sending nothing).
//!
//! The default instance id (`host:app:port`) is the same after a restart
//! on the same host and port.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::eureka::EurekaFixture;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::{EurekaRegistration, RegistrationHandle};

#[path = "support/holding_proxy.rs"]
mod holding_proxy;

use holding_proxy::{proxy, served};

fn reg(url: &str, app: &str, initial: InstanceStatus) -> EurekaRegistration {
    EurekaRegistration::builder(app, "127.0.0.1", 8080)
        .server_urls(url)
        .renew_interval(Duration::from_secs(3600))
        .lease_duration(Duration::from_secs(7200))
        .request_timeout(Duration::from_millis(500))
        .initial_status(initial)
        .build()
        .unwrap()
}

async fn run(url: &str, app: &str, initial: InstanceStatus) -> RegistrationHandle {
    reg(url, app, initial).start().await.unwrap()
}

fn id_of(app: &str) -> String {
    format!("127.0.0.1:{}:8080", app.to_ascii_lowercase())
}

/// Returns how many of 12 reads (one after each of 12 renewals) serve run 2 UP.
async fn after_a_crashed_down(eureka: &EurekaFixture, app: &str, hold_first_read: bool) -> usize {
    let id = id_of(app);
    let first = run(&eureka.url(), app, InstanceStatus::Up).await;
    first.set_status(InstanceStatus::Down).await.unwrap();
    assert_eq!(served(eureka, app, &id).await.as_deref(), Some("DOWN"));
    drop(first); // died while DOWN: no cancel
    let p = proxy(eureka.port()).await;
    if hold_first_read {
        // The reads just after the registration take 1 s (timeout 500 ms).
        p.hold_get_ms.store(1000, Ordering::SeqCst);
    }
    let second = run(&p.url(), app, InstanceStatus::Up).await;
    p.hold_get_ms.store(0, Ordering::SeqCst);
    second.set_status(InstanceStatus::Up).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..12 {
        if let Err(e) = second.renew_now().await {
            eprintln!("renew_now: {e}");
        }
        seen.push(served(eureka, app, &id).await.unwrap_or_else(|| "-".into()));
    }
    eprintln!("{app} (first read held: {hold_first_read}): {seen:?}");
    second.shutdown().await.unwrap();
    seen.iter().filter(|s| *s == "UP").count()
}

#[tokio::test]
async fn a_failed_first_read_still_undoes_a_previous_runs_down() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let control = after_a_crashed_down(&eureka, "FIRSTREAD-OK", false).await;
    let held = after_a_crashed_down(&eureka, "FIRSTREAD-HELD", true).await;
    assert_eq!(control, 12);
    assert_eq!(
        held,
        12,
        "run 2 asked UP, served DOWN {} of 12 times",
        12 - held
    );
}

/// Run 1 drains and dies; run 2 starts with `initial`, then asks UP.
/// Returns how many of 10 reads (after each of 10 renewals) serve run 2 UP.
async fn after_a_crashed_drain(
    eureka: &EurekaFixture,
    app: &str,
    initial: InstanceStatus,
) -> usize {
    let url = eureka.url();
    let first = run(&url, app, InstanceStatus::Up).await;
    first
        .set_status(InstanceStatus::OutOfService)
        .await
        .unwrap();
    assert_eq!(
        served(eureka, app, &id_of(app)).await.as_deref(),
        Some("OUT_OF_SERVICE")
    );
    drop(first); // killed during its drain: no cancel
    let second = run(&url, app, initial).await;
    second.set_status(InstanceStatus::Up).await.unwrap();
    let mut up = 0;
    let mut seen = Vec::new();
    for _ in 0..10 {
        second.renew_now().await.unwrap();
        let s = served(eureka, app, &id_of(app))
            .await
            .unwrap_or_else(|| "-".into());
        up += usize::from(s == "UP");
        seen.push(s);
    }
    eprintln!(
        "{app}: run 2 started {initial:?}, asked UP: {seen:?}, wanted {:?}",
        second.status()
    );
    second.shutdown().await.unwrap();
    up
}

#[tokio::test]
async fn a_new_run_asking_up_is_served_up_after_a_crashed_drain() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    // Control: started STARTING, then UP: served UP 10 of 10.
    let control = after_a_crashed_drain(&eureka, "PREV-STARTING", InstanceStatus::Starting).await;
    // Started UP (the default), then UP again: served UP (before: 0 of 10).
    let up = after_a_crashed_drain(&eureka, "PREV-UP", InstanceStatus::Up).await;
    assert_eq!(control, 10);
    assert_eq!(
        up,
        10,
        "run 2 asked UP (at start and with set_status) and was served OUT_OF_SERVICE {} of 10 times",
        10 - up
    );
}

/// `GET /eureka/apps/APP/ID`'s status.
async fn get_one(eureka: &EurekaFixture, app: &str) -> String {
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/apps/{}/{}",
            eureka.url(),
            app.to_ascii_uppercase(),
            id_of(app)
        ))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    if resp.status().as_u16() != 200 {
        return format!("HTTP{}", resp.status().as_u16());
    }
    let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    v["instance"]["status"].as_str().unwrap_or("?").to_owned()
}

/// `n` renewals, the status served after each.
async fn renew_and_read(
    h: &RegistrationHandle,
    eureka: &EurekaFixture,
    app: &str,
    n: usize,
) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        if let Err(e) = h.renew_now().await {
            eprintln!("renew_now: {e}");
        }
        seen.push(get_one(eureka, app).await);
    }
    seen
}

fn count(seen: &[String], s: &str) -> usize {
    seen.iter().filter(|x| *x == s).count()
}

/// A previous run drained (OUT_OF_SERVICE) and died. The new run starts UP
/// through a proxy that holds (`hold`) the first-UP read past the timeout,
/// then asks UP explicitly. Returns the statuses served after 10 renewals.
async fn crashed_drain_then_up(eureka: &EurekaFixture, app: &str, hold: bool) -> Vec<String> {
    let first = run(&eureka.url(), app, InstanceStatus::Up).await;
    first
        .set_status(InstanceStatus::OutOfService)
        .await
        .unwrap();
    assert_eq!(get_one(eureka, app).await, "OUT_OF_SERVICE");
    drop(first); // killed during its drain
    let p = proxy(eureka.port()).await;
    if hold {
        p.hold_get_ms.store(1000, Ordering::SeqCst);
    }
    let second = run(&p.url(), app, InstanceStatus::Up).await;
    p.hold_get_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    second.set_status(InstanceStatus::Up).await.unwrap();
    let seen = renew_and_read(&second, eureka, app, 10).await;
    eprintln!(
        "{app} (first read held: {hold}): {seen:?}\nproxy log: {:?}",
        p.log()
    );
    second.shutdown().await.unwrap();
    seen
}

/// After a crashed drain, a new run whose first-UP read failed asks UP
/// explicitly: served UP (before, helper 203: OUT_OF_SERVICE 10 of 10,
/// the failed read noted nothing and `set_status(Up)` sent nothing).
#[tokio::test]
async fn after_a_failed_first_read_set_status_up_ends_a_crashed_drain() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let control = crashed_drain_then_up(&eureka, "A58-DRAIN-OK", false).await;
    let held = crashed_drain_then_up(&eureka, "A58-DRAIN-HELD", true).await;
    assert_eq!(count(&control, "UP"), 10, "control {control:?}");
    assert_eq!(
        count(&held, "UP"),
        10,
        "first read failed: asked UP, served {held:?}"
    );
}

/// A fresh instance id (no previous run). The first-UP read is held past
/// the timeout (`hold`); after 2 renewals an operator sets DOWN
/// (`PUT …/status?value=DOWN`); 8 renewals follow. The operator's DOWN is
/// kept (before, helper 203: undone, UP 8 of 8, by read-backs armed to
/// undo any DOWN after the failed read).
async fn operator_down_after_start(eureka: &EurekaFixture, app: &str, hold: bool) -> Vec<String> {
    let p = proxy(eureka.port()).await;
    if hold {
        p.hold_get_ms.store(1000, Ordering::SeqCst);
    }
    let h = run(&p.url(), app, InstanceStatus::Up).await;
    p.hold_get_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut seen = renew_and_read(&h, eureka, app, 2).await;
    eureka.set_status(app, &id_of(app), "DOWN").await;
    seen.push(format!("op:{}", get_one(eureka, app).await));
    seen.extend(renew_and_read(&h, eureka, app, 8).await);
    eprintln!(
        "{app} (first read held: {hold}): {seen:?}\nproxy log: {:?}",
        p.log()
    );
    h.shutdown().await.unwrap();
    seen
}

#[tokio::test]
async fn an_operators_down_during_the_run_is_kept_after_a_failed_first_read() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let control = operator_down_after_start(&eureka, "A58-OPDOWN-OK", false).await;
    let held = operator_down_after_start(&eureka, "A58-OPDOWN-HELD", true).await;
    assert_eq!(count(&control[3..], "DOWN"), 8, "control {control:?}");
    assert_eq!(
        count(&held[3..], "DOWN"),
        8,
        "operator's DOWN set during the run, after a failed first read: {held:?}"
    );
}

/// Run 1 finds an override from before it (a crashed drain: `pre`), keeps
/// it and never asks UP again; it shuts down (the cancel removes the lease
/// and its override) and starts again. During run 2 an operator sets
/// OUT_OF_SERVICE; the app calls `set_status(Up)` (the status it wants
/// already): the operator's override is kept (before, helper 203: run 1's
/// note outlived the restart and removed it). Returns what is served
/// after each of 6 renewals.
async fn restart_then_operator_oos(eureka: &EurekaFixture, app: &str, pre: bool) -> Vec<String> {
    let url = eureka.url();
    if pre {
        let first = run(&url, app, InstanceStatus::Up).await;
        first
            .set_status(InstanceStatus::OutOfService)
            .await
            .unwrap();
        drop(first); // died during its drain
        assert_eq!(get_one(eureka, app).await, "OUT_OF_SERVICE");
    }
    let r = reg(&url, app, InstanceStatus::Up);
    let h1 = r.clone().start().await.unwrap();
    let run1 = get_one(eureka, app).await;
    h1.shutdown().await.unwrap();
    let between = get_one(eureka, app).await;
    let h2 = r.clone().start().await.unwrap();
    let run2 = get_one(eureka, app).await;
    h2.renew_now().await.unwrap();
    eureka.set_status(app, &id_of(app), "OUT_OF_SERVICE").await;
    let op = get_one(eureka, app).await;
    h2.set_status(InstanceStatus::Up).await.unwrap();
    let mut seen = vec![
        format!("run1:{run1}"),
        format!("between:{between}"),
        format!("run2:{run2}"),
        format!("op:{op}"),
    ];
    seen.extend(renew_and_read(&h2, eureka, app, 6).await);
    eprintln!("{app} (override before run 1: {pre}): {seen:?}");
    h2.shutdown().await.unwrap();
    seen
}

#[tokio::test]
async fn a_restarted_run_keeps_an_operators_out_of_service() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let control = restart_then_operator_oos(&eureka, "A58-RESTART-OK", false).await;
    let pre = restart_then_operator_oos(&eureka, "A58-RESTART-PRE", true).await;
    assert_eq!(
        count(&control[4..], "OUT_OF_SERVICE"),
        6,
        "control {control:?}"
    );
    assert_eq!(
        count(&pre[4..], "OUT_OF_SERVICE"),
        6,
        "run 2's operator OUT_OF_SERVICE, after run 1 met an override from before it: {pre:?}"
    );
}

/// Within one run: the first-UP read finds an override from before the
/// run (`pre`: a crashed drain); the operator removes it
/// (`DELETE …/status`), then during the run sets OUT_OF_SERVICE anew. The
/// app calls `set_status(Up)`: the new override is kept (its
/// `lastUpdatedTimestamp` differs; before, helper 203: removed). Returns
/// what is served after 6 renewals.
async fn in_run_operator_oos(eureka: &EurekaFixture, app: &str, pre: bool) -> Vec<String> {
    let url = eureka.url();
    if pre {
        let first = run(&url, app, InstanceStatus::Up).await;
        first
            .set_status(InstanceStatus::OutOfService)
            .await
            .unwrap();
        drop(first);
    }
    let h = run(&url, app, InstanceStatus::Up).await;
    let start = get_one(eureka, app).await;
    if pre {
        let resp = reqwest::Client::new()
            .delete(format!(
                "{}/apps/{}/{}/status?value=UP",
                eureka.url(),
                app.to_ascii_uppercase(),
                id_of(app)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    let cleared = get_one(eureka, app).await;
    h.renew_now().await.unwrap();
    eureka.set_status(app, &id_of(app), "OUT_OF_SERVICE").await;
    let op = get_one(eureka, app).await;
    h.set_status(InstanceStatus::Up).await.unwrap();
    let mut seen = vec![
        format!("start:{start}"),
        format!("cleared:{cleared}"),
        format!("op:{op}"),
    ];
    seen.extend(renew_and_read(&h, eureka, app, 6).await);
    eprintln!("{app} (override before run: {pre}): {seen:?}");
    h.shutdown().await.unwrap();
    seen
}

#[tokio::test]
async fn an_operators_out_of_service_set_during_the_run_is_kept() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let control = in_run_operator_oos(&eureka, "A58-INRUN-OK", false).await;
    let pre = in_run_operator_oos(&eureka, "A58-INRUN-PRE", true).await;
    assert_eq!(
        count(&control[3..], "OUT_OF_SERVICE"),
        6,
        "control {control:?}"
    );
    assert_eq!(
        count(&pre[3..], "OUT_OF_SERVICE"),
        6,
        "operator's OUT_OF_SERVICE set during the run: {pre:?}"
    );
}
