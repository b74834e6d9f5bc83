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

async fn run(url: &str, app: &str, initial: InstanceStatus) -> RegistrationHandle {
    EurekaRegistration::builder(app, "127.0.0.1", 8080)
        .server_urls(url)
        .renew_interval(Duration::from_secs(3600))
        .lease_duration(Duration::from_secs(7200))
        .request_timeout(Duration::from_millis(500))
        .initial_status(initial)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
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
