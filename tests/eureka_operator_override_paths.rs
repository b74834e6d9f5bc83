//! Paths where an operator's OUT_OF_SERVICE was still undone by the
//! registrant after e36eba7 (helper 228), against the real Eureka server:
//! a failed first read-back (B below), a previous run's held drain (D) and
//! a flap's failed UP re-registering over it (C) deleted a deployer's or
//! operator's disable at the app's UP (served UP 5 of 5 renewals), and so
//! did the undrain of the app's own drain over an operator's disable set
//! before it (A).
//! E and F hold: an operator's DOWN and its DELETE; a hung read-back costs
//! a status change one request timeout.
#![cfg(feature = "eureka")]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::eureka::EurekaFixture;
#[path = "support/holding_proxy.rs"]
mod holding_proxy;
use holding_proxy::{proxy, served};
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::EurekaRegistration;

/// B: a start through STARTING whose first read-back failed (the GET timed
/// out; the POST was answered). The deployer disables the STARTING
/// instance; the app's `set_status(Up)` is then its run's first
/// registration *read back*, so `FirstUp::registered` notes the deployer's
/// override as "held at start" and `undo_own_override_locked` deletes it.
#[tokio::test]
async fn b_a_failed_first_read_back_makes_the_deployers_disable_a_leftover() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let px = proxy(eureka.port()).await;
    let app = "atk61b-starting-read";
    let id = "127.0.0.1:atk61b-starting-read:19912".to_owned();
    px.hold_get_ms.store(3_000, Ordering::SeqCst);
    let handle = EurekaRegistration::builder(app, "127.0.0.1", 19_912)
        .server_urls(&px.url())
        .request_timeout(Duration::from_secs(1))
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1800))
        .initial_status(InstanceStatus::Starting)
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered");
    px.hold_get_ms.store(0, Ordering::SeqCst);
    assert_eq!(served(&eureka, app, &id).await.as_deref(), Some("STARTING"));
    // The deployer disables it while it starts.
    eureka.set_status(app, &id, "OUT_OF_SERVICE").await;
    handle.set_status(InstanceStatus::Up).await.expect("UP");
    let mut seen = Vec::new();
    for _ in 0..5 {
        handle.renew_now().await.expect("renewed");
        seen.push(served(&eureka, app, &id).await.unwrap_or_default());
    }
    eprintln!("proxy log: {:#?}", px.log());
    handle.shutdown().await.expect("cancelled");
    assert_eq!(
        seen,
        vec!["OUT_OF_SERVICE"; 5],
        "the deployer's disable (one GET timed out at the start)"
    );
}

/// D: `Shared::held` outlives the run. Run 1 drains, then goes DOWN (its
/// health check failed while draining) and shuts down (the cancel removes
/// the drain at the server). Run 2 starts (DOWN, the status kept), the
/// deployer disables it, and the app's `set_status(Up)` deletes the
/// deployer's override: run 1's `held` bit is still set.
#[tokio::test]
async fn d_a_previous_runs_held_drain_deletes_the_next_runs_operator_override() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let app = "atk61b-held-run";
    let id = "127.0.0.1:atk61b-held-run:19914".to_owned();
    let reg = EurekaRegistration::builder(app, "127.0.0.1", 19_914)
        .server_urls(&eureka.url())
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1800))
        .build()
        .expect("registration");
    let run1 = reg.clone().start().await.expect("run 1");
    run1.set_status(InstanceStatus::OutOfService)
        .await
        .expect("drained");
    run1.set_status(InstanceStatus::Down).await.expect("DOWN");
    run1.shutdown().await.expect("cancelled");
    assert_eq!(served(&eureka, app, &id).await, None);
    let run2 = reg.start().await.expect("run 2");
    assert_eq!(served(&eureka, app, &id).await.as_deref(), Some("DOWN"));
    eureka.set_status(app, &id, "OUT_OF_SERVICE").await;
    run2.set_status(InstanceStatus::Up).await.expect("UP");
    let mut seen = Vec::new();
    for _ in 0..5 {
        run2.renew_now().await.expect("renewed");
        seen.push(served(&eureka, app, &id).await.unwrap_or_default());
    }
    run2.shutdown().await.expect("cancelled");
    assert_eq!(
        seen,
        vec!["OUT_OF_SERVICE"; 5],
        "the deployer's disable of run 2 (run 1's drain was cancelled with it)"
    );
}

/// E (control, expected to hold): an operator's DOWN through the app's
/// flap, then the operator's `DELETE …/status` (no value: UNKNOWN).
#[tokio::test]
async fn e_an_operators_down_then_its_delete() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let app = "atk61b-op-down";
    let id = "127.0.0.1:atk61b-op-down:19915".to_owned();
    let handle = EurekaRegistration::builder(app, "127.0.0.1", 19_915)
        .server_urls(&eureka.url())
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1800))
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered");
    eureka.set_status(app, &id, "DOWN").await;
    handle.set_status(InstanceStatus::Down).await.expect("DOWN");
    handle.set_status(InstanceStatus::Up).await.expect("UP");
    let mut seen = Vec::new();
    for _ in 0..3 {
        handle.renew_now().await.expect("renewed");
        seen.push(served(&eureka, app, &id).await.unwrap_or_default());
    }
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/apps/{}/{id}/status",
            eureka.url(),
            app.to_ascii_uppercase()
        ))
        .send()
        .await
        .expect("delete override");
    assert_eq!(resp.status().as_u16(), 200);
    seen.push(served(&eureka, app, &id).await.unwrap_or_default());
    for _ in 0..3 {
        let r = handle.renew_now().await;
        seen.push(format!(
            "{}{}",
            served(&eureka, app, &id).await.unwrap_or_default(),
            if r.is_err() { "(err)" } else { "" }
        ));
    }
    eprintln!("E seen: {seen:?} stats {:?}", handle.stats());
    handle.shutdown().await.expect("cancelled");
    assert_eq!(&seen[..3], &["DOWN", "DOWN", "DOWN"]);
    assert_eq!(&seen[5..], &["UP", "UP"]);
}

/// F: `set_status(Down)` against a server that answers the POST but hangs
/// the read-back GET: the change costs one more request timeout.
#[tokio::test]
async fn f_set_status_down_waits_for_a_hung_read_back() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let px = proxy(eureka.port()).await;
    let app = "atk61b-hung-get";
    let handle = EurekaRegistration::builder(app, "127.0.0.1", 19_916)
        .server_urls(&px.url())
        .request_timeout(Duration::from_secs(2))
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1800))
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered");
    px.hold_get_ms.store(5_000, Ordering::SeqCst);
    let t = std::time::Instant::now();
    let r = handle.set_status(InstanceStatus::Down).await;
    let down = t.elapsed();
    let t = std::time::Instant::now();
    let r2 = handle.set_status(InstanceStatus::Up).await;
    let up = t.elapsed();
    eprintln!(
        "F: DOWN {r:?} in {down:?}; UP {r2:?} in {up:?}; log {:#?}",
        px.log()
    );
    handle.shutdown().await.ok();
}

/// C: a registration that once sent OUT_OF_SERVICE (it started disabled,
/// Spinnaker's "deploy disabled", and was enabled by the app) keeps that
/// bit in `sent` for good. The operator disables it later; the app's
/// health flaps; the UP registration fails once (one 503). The next
/// heartbeat is 404 (the server's copy is older), the re-registration
/// uses `sent` (not `held`) and deletes the operator's override.
#[tokio::test]
async fn c_a_flaps_failed_up_reregisters_over_the_operators_disable() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let px = proxy(eureka.port()).await;
    let app = "atk61b-flap-reregister";
    let id = "127.0.0.1:atk61b-flap-reregister:19913".to_owned();
    let handle = EurekaRegistration::builder(app, "127.0.0.1", 19_913)
        .server_urls(&px.url())
        .request_timeout(Duration::from_secs(2))
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1800))
        .initial_status(InstanceStatus::OutOfService)
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered");
    assert_eq!(
        served(&eureka, app, &id).await.as_deref(),
        Some("OUT_OF_SERVICE")
    );
    handle
        .set_status(InstanceStatus::Up)
        .await
        .expect("enabled");
    assert_eq!(served(&eureka, app, &id).await.as_deref(), Some("UP"));
    // Later, the operator disables it.
    eureka.set_status(app, &id, "OUT_OF_SERVICE").await;
    handle.set_status(InstanceStatus::Down).await.expect("DOWN");
    assert_eq!(served(&eureka, app, &id).await.as_deref(), Some("DOWN"));
    px.fail.store(true, Ordering::SeqCst);
    let up = handle.set_status(InstanceStatus::Up).await;
    px.fail.store(false, Ordering::SeqCst);
    assert!(up.is_err(), "the UP failed once: {up:?}");
    let mut seen = Vec::new();
    for _ in 0..5 {
        handle.renew_now().await.expect("renewed");
        seen.push(served(&eureka, app, &id).await.unwrap_or_default());
    }
    eprintln!("proxy log: {:#?}", px.log());
    handle.shutdown().await.expect("cancelled");
    assert_eq!(
        seen,
        vec!["OUT_OF_SERVICE"; 5],
        "the operator's disable, after one failed UP"
    );
}

/// A: the operator disables the instance; later the app drains itself
/// (a routine drain, a deploy step) and undrains. Eureka took the app's
/// `PUT …/status?value=OUT_OF_SERVICE` as a no-op (the status did not
/// change: `statusUpdate`), so the override is still the operator's, but
/// `held` marks it the app's own, and the undrain deletes it.
#[tokio::test]
async fn a_operators_disable_set_before_the_apps_drain_is_deleted_by_the_undrain() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let app = "atk61b-before-drain";
    let id = "127.0.0.1:atk61b-before-drain:19911".to_owned();
    let handle = EurekaRegistration::builder(app, "127.0.0.1", 19_911)
        .server_urls(&eureka.url())
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1800))
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered");
    eureka.set_status(app, &id, "OUT_OF_SERVICE").await;
    assert_eq!(
        served(&eureka, app, &id).await.as_deref(),
        Some("OUT_OF_SERVICE")
    );
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("drained");
    handle
        .set_status(InstanceStatus::Up)
        .await
        .expect("undrained");
    let mut seen = Vec::new();
    for _ in 0..5 {
        handle.renew_now().await.expect("renewed");
        seen.push(served(&eureka, app, &id).await.unwrap_or_default());
    }
    handle.shutdown().await.expect("cancelled");
    assert_eq!(
        seen,
        vec!["OUT_OF_SERVICE"; 5],
        "the operator's disable, set before the app's own drain"
    );
}
