//! A registration whose own instance record is over 1 MiB (metadata the
//! user registered), against the real Eureka server: its read-backs still
//! decide. A fixed 1 MiB read-back limit (this session's first bound on
//! the read-back, e04d549) refused the record's real answer, so the
//! first-UP rules (undo a previous run's DOWN; let `set_status(Up)` remove
//! a crashed drain's OUT_OF_SERVICE) and the kept-newer-copy check never
//! ran: a new run served DOWN or OUT_OF_SERVICE 10 of 10 times, an old
//! copy kept (helper 215). The limit is now twice the registered record
//! plus 64 KiB, at least 1 MiB.
//!
//! Each scenario runs with small metadata (control) and with 1.1 MiB.
#![cfg(feature = "eureka")]

mod support;

use std::time::Duration;

use support::eureka::EurekaFixture;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::{EurekaRegistration, RegistrationHandle};

/// 1.1 MiB of metadata: the served record is just over the 1 MiB read-back limit.
const BIG: usize = 1_100_000;

fn reg(url: &str, app: &str, blob: usize) -> EurekaRegistration {
    EurekaRegistration::builder(app, "127.0.0.1", 8080)
        .server_urls(url)
        .renew_interval(Duration::from_secs(3600))
        .lease_duration(Duration::from_secs(7200))
        .request_timeout(Duration::from_secs(5))
        // The caller allows far more than the record (the default is 128 MiB).
        .max_body_bytes(64 << 20)
        .metadata("blob", "x".repeat(blob))
        .build()
        .unwrap()
}

async fn run(url: &str, app: &str, blob: usize) -> RegistrationHandle {
    reg(url, app, blob).start().await.unwrap()
}

fn id_of(app: &str) -> String {
    format!("127.0.0.1:{}:8080", app.to_ascii_lowercase())
}

async fn served(eureka: &EurekaFixture, app: &str) -> String {
    let id = id_of(app);
    eureka
        .statuses(app)
        .await
        .into_iter()
        .find(|(i, _)| *i == id)
        .map_or_else(|| "-".to_owned(), |(_, s)| s)
}

/// Run 1 goes `dead_status` and dies without cancelling; run 2 (same id)
/// starts UP, asks `set_status(Up)`, renews 10 times. Returns how many of
/// 10 reads serve run 2 UP.
async fn after_a_crash(
    eureka: &EurekaFixture,
    app: &str,
    blob: usize,
    dead_status: InstanceStatus,
) -> usize {
    let url = eureka.url();
    let first = run(&url, app, blob).await;
    first.set_status(dead_status).await.unwrap();
    assert_eq!(served(eureka, app).await, dead_status.as_str());
    drop(first); // died: no cancel
    let second = run(&url, app, blob).await;
    second.set_status(InstanceStatus::Up).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..10 {
        if let Err(e) = second.renew_now().await {
            eprintln!("renew_now: {e}");
        }
        seen.push(served(eureka, app).await);
    }
    eprintln!(
        "{app} (metadata {blob} B, run 1 died {dead_status:?}): {seen:?}, stats {:?}",
        second.stats()
    );
    second.shutdown().await.unwrap();
    seen.iter().filter(|s| *s == "UP").count()
}

#[tokio::test]
async fn a_big_record_still_undoes_a_previous_runs_down() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let control = after_a_crash(&eureka, "BIGREC-DOWN-SMALL", 10, InstanceStatus::Down).await;
    let big = after_a_crash(&eureka, "BIGREC-DOWN-BIG", BIG, InstanceStatus::Down).await;
    assert_eq!(control, 10);
    assert_eq!(
        big,
        10,
        "run 2 (1.1 MiB of metadata) asked UP and was served DOWN {} of 10 times",
        10 - big
    );
}

#[tokio::test]
async fn a_big_record_still_lets_set_status_up_end_a_crashed_drain() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let control = after_a_crash(
        &eureka,
        "BIGREC-OOS-SMALL",
        10,
        InstanceStatus::OutOfService,
    )
    .await;
    let big = after_a_crash(&eureka, "BIGREC-OOS-BIG", BIG, InstanceStatus::OutOfService).await;
    assert_eq!(control, 10);
    assert_eq!(
        big,
        10,
        "run 2 (1.1 MiB of metadata) asked UP and was served OUT_OF_SERVICE {} of 10 times",
        10 - big
    );
}

/// This host's clock, in ms since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).expect("ms"))
        .expect("clock")
}

/// The `version` metadata the server serves for `app` on port 8080.
async fn served_version(eureka: &EurekaFixture, app: &str) -> String {
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
        .expect("instance request");
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    body["instance"]["metadata"]["version"]
        .as_str()
        .unwrap_or("-")
        .to_owned()
}

/// A previous run (as big as this one) registered from a host whose clock
/// was an hour ahead (`version: 1`) and was not cancelled; this run
/// (`version: 2`) registers. `tests/eureka_clock_skew.rs` shows the server
/// serving `version: 2` with small metadata; with 1.1 MiB the read-back
/// that detects the kept copy fails and `version: 1` stays served.
async fn after_a_copy_stamped_ahead(eureka: &EurekaFixture, app: &str, blob: usize) -> String {
    let ahead = now_ms() + 3_600_000;
    eureka
        .register_stamped(
            app,
            8080,
            serde_json::json!({"version": "1", "blob": "x".repeat(blob)}),
            Some(ahead),
        )
        .await;
    let handle = EurekaRegistration::builder(app, "127.0.0.1", 8080)
        .server_url(eureka.url())
        .renew_interval(Duration::from_secs(3600))
        .lease_duration(Duration::from_secs(7200))
        .request_timeout(Duration::from_secs(5))
        .max_body_bytes(64 << 20)
        .metadata("version", "2")
        .metadata("blob", "x".repeat(blob))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    handle.renew_now().await.unwrap();
    let version = served_version(eureka, app).await;
    eprintln!(
        "{app} (metadata {blob} B): served version {version}, stats {:?}",
        handle.stats()
    );
    handle.shutdown().await.unwrap();
    version
}

#[tokio::test]
async fn a_big_record_still_replaces_a_copy_stamped_ahead() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let control = after_a_copy_stamped_ahead(&eureka, "BIGREC-AHEAD-SMALL", 10).await;
    let big = after_a_copy_stamped_ahead(&eureka, "BIGREC-AHEAD-BIG", BIG).await;
    assert_eq!(control, "2");
    assert_eq!(
        big, "2",
        "the previous run's copy (version 1) is served over this run's registration"
    );
}
