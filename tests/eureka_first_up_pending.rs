#![cfg(feature = "eureka")]
//! The first-UP decision pending after a failed read (helper 206), against
//! the real Eureka server behind a holding proxy: an operator's DOWN set
//! while reads fail is kept when reads work again (before: undone, UP 6 of
//! 6, taken for a previous run's DOWN; the registry's stamps now tell: a
//! status changed more than a second after the lease's registration is the
//! run's own), and a decision still pending when the read-backs end lapses,
//! so a later `set_status(Up)` keeps an operator's OUT_OF_SERVICE (before:
//! removed, UP 4 of 4).
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::eureka::EurekaFixture;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::{EurekaRegistration, RegistrationHandle};

#[path = "support/holding_proxy.rs"]
mod holding_proxy;
use holding_proxy::proxy;

fn reg(url: &str, app: &str) -> EurekaRegistration {
    EurekaRegistration::builder(app, "127.0.0.1", 8080)
        .server_urls(url)
        .renew_interval(Duration::from_secs(3600))
        .lease_duration(Duration::from_secs(7200))
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn id_of(app: &str) -> String {
    format!("127.0.0.1:{}:8080", app.to_ascii_lowercase())
}

async fn get_one(eureka: &EurekaFixture, app: &str) -> (String, String) {
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
        return (format!("HTTP{}", resp.status().as_u16()), String::new());
    }
    let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    (
        v["instance"]["status"].as_str().unwrap_or("?").to_owned(),
        v["instance"]["lastUpdatedTimestamp"].to_string(),
    )
}

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
        seen.push(get_one(eureka, app).await.0);
    }
    seen
}

/// Fresh id. Reads held past the timeout at the start and for the first
/// `failing` renewals; then an operator sets `op`; reads work again; 6
/// renewals. Returns the statuses after the operator's call.
async fn operator_during_pending(
    eureka: &EurekaFixture,
    app: &str,
    failing: usize,
    op: &str,
) -> Vec<String> {
    let p = proxy(eureka.port()).await;
    p.hold_get_ms.store(1000, Ordering::SeqCst);
    let h = reg(&p.url(), app).start().await.unwrap();
    let before = renew_and_read(&h, eureka, app, failing).await;
    eureka.set_status(app, &id_of(app), op).await;
    let op_seen = get_one(eureka, app).await.0;
    p.hold_get_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = renew_and_read(&h, eureka, app, 6).await;
    eprintln!("{app}: before {before:?}, operator {op} -> {op_seen}, after {after:?}");
    h.shutdown().await.unwrap();
    after
}

#[tokio::test]
async fn an_operators_down_set_while_the_decision_is_pending_is_kept() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let down = operator_during_pending(&eureka, "A58J-PEND-DOWN", 2, "DOWN").await;
    let oos = operator_during_pending(&eureka, "A58J-PEND-OOS", 2, "OUT_OF_SERVICE").await;
    eprintln!("DOWN case {down:?}\nOOS case {oos:?}");
    assert_eq!(
        down.iter().filter(|s| *s == "DOWN").count(),
        6,
        "operator's DOWN undone: {down:?}"
    );
    assert_eq!(
        oos.iter().filter(|s| *s == "OUT_OF_SERVICE").count(),
        6,
        "operator's OOS undone: {oos:?}"
    );
}

/// Fresh id; every read fails through all 10 read-backs; much later (reads
/// working) an operator sets OUT_OF_SERVICE; the app repeats
/// `set_status(Up)` (the status it wants already). The operator's override,
/// set in the run, is kept per the docs ("an operator's override set since
/// is kept").
#[tokio::test]
async fn a_repeated_up_long_after_a_failed_first_read_keeps_an_operators_override() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let app = "A58J-PEND-LATER";
    let p = proxy(eureka.port()).await;
    p.hold_get_ms.store(1000, Ordering::SeqCst);
    let h = reg(&p.url(), app).start().await.unwrap();
    let before = renew_and_read(&h, &eureka, app, 11).await;
    p.hold_get_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mid = renew_and_read(&h, &eureka, app, 3).await;
    eureka.set_status(app, &id_of(app), "OUT_OF_SERVICE").await;
    let op_seen = get_one(&eureka, app).await.0;
    h.set_status(InstanceStatus::Up).await.unwrap();
    let after = renew_and_read(&h, &eureka, app, 4).await;
    eprintln!(
        "{app}: before {before:?} mid {mid:?} op -> {op_seen}, after set_status(Up) {after:?}"
    );
    h.shutdown().await.unwrap();
    assert_eq!(
        after.iter().filter(|s| *s == "OUT_OF_SERVICE").count(),
        4,
        "{after:?}"
    );
}
