//! Paths where the app's own undrain still deleted an operator's
//! OUT_OF_SERVICE after 22619d6 (attack 62e), against the real Eureka
//! server, each beside its control:
//! - A: one renewal between a drain over the operator's disable and the
//!   undrain (the drain's raised `lastDirtyTimestamp`, which Eureka did not
//!   store, made the heartbeat 404; the re-registration held the
//!   operator's override as the drain's own): served UP 5 of 5 renewals.
//! - B: the same drain from DOWN (served DOWN over the operator's
//!   override): the drain was held, the undrain deleted the override.
#![cfg(feature = "eureka")]

mod support;

use std::time::Duration;

use support::eureka::EurekaFixture;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::{EurekaRegistration, RegistrationHandle};

async fn served(eureka: &EurekaFixture, app: &str, id: &str) -> Option<String> {
    eureka
        .statuses(app)
        .await
        .into_iter()
        .find(|(i, _)| i == id)
        .map(|(_, s)| s)
}

async fn start(url: &str, app: &str, port: u16) -> RegistrationHandle {
    EurekaRegistration::builder(app, "127.0.0.1", port)
        .server_urls(url)
        .request_timeout(Duration::from_secs(1))
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1800))
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered")
}

/// Five renewals, and what the server serves after each.
async fn five_renewals(
    eureka: &EurekaFixture,
    handle: &RegistrationHandle,
    app: &str,
    id: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..5 {
        handle.renew_now().await.expect("renewed");
        seen.push(served(eureka, app, id).await.unwrap_or_default());
    }
    seen
}

/// The operator disables the instance; the app drains (from DOWN when
/// `from_down`), renews `renewals` times, and undrains. Returns what is
/// served over five renewals, and the registrations made.
async fn drain_over_disable(
    eureka: &EurekaFixture,
    app: &str,
    port: u16,
    from_down: bool,
    renewals: usize,
) -> (Vec<String>, u64) {
    let id = format!("127.0.0.1:{app}:{port}");
    let handle = start(&eureka.url(), app, port).await;
    eureka.set_status(app, &id, "OUT_OF_SERVICE").await;
    if from_down {
        handle.set_status(InstanceStatus::Down).await.expect("DOWN");
        assert_eq!(served(eureka, app, &id).await.as_deref(), Some("DOWN"));
    }
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("drained");
    for _ in 0..renewals {
        handle.renew_now().await.expect("renewed");
    }
    handle
        .set_status(InstanceStatus::Up)
        .await
        .expect("undrained");
    let seen = five_renewals(eureka, &handle, app, &id).await;
    let registrations = handle.stats().registrations;
    handle.shutdown().await.expect("cancelled");
    (seen, registrations)
}

#[tokio::test]
async fn a_b_an_operators_disable_outlives_the_apps_drain_and_undrain() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let control = drain_over_disable(&eureka, "drain62-control", 19_641, false, 0).await;
    let renewed = drain_over_disable(&eureka, "drain62-renewed", 19_642, false, 1).await;
    let from_down = drain_over_disable(&eureka, "drain62-down", 19_643, true, 1).await;
    eprintln!("control {control:?}; a renewal between {renewed:?}; from DOWN {from_down:?}");
    let disabled = vec!["OUT_OF_SERVICE".to_owned(); 5];
    assert_eq!(
        control,
        (disabled.clone(), 1),
        "control: no renewal between"
    );
    // A: one registration, the start's (before: a 404 and a second one,
    // and UP 5 of 5).
    assert_eq!(renewed, (disabled.clone(), 1), "A: a renewal between");
    assert_eq!(from_down, (disabled, 1), "B: drained from DOWN");
}
