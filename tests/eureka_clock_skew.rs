//! `EurekaRegistration` against the real Eureka server (tests/eureka-server)
//! when another clock is ahead of this host's: the server's copy of the
//! instance carries a `lastDirtyTimestamp` later than this host's time.
//!
//! Over an existing lease, Eureka keeps its own copy when that copy's
//! `lastDirtyTimestamp` is later than the registration's
//! (`AbstractInstanceRegistry.register`: "existing lease's dirty timestamp
//! … is greater than the one that is being registered",
//! <https://github.com/Netflix/eureka/issues/802>), and answers 204 either
//! way. Heartbeats carrying an older timestamp than the copy get 200
//! (`InstanceResource.validateDirtyTimestamp`), so nothing corrects it:
//! - a previous run of the instance on a host whose clock was ahead (or
//!   this host's clock stepped back by NTP since) left a copy that a
//!   restart's registration did not replace: the old metadata (and
//!   address) were served for as long as the new run renewed the lease;
//! - an operator whose clock is ahead clears an override (the
//!   [eureka#955](https://github.com/Netflix/eureka/issues/955) sequence):
//!   the server serves the instance UNKNOWN and answers its heartbeats 404,
//!   and every re-registration, stamped with this host's earlier time, was
//!   ignored: UNKNOWN (no traffic) until this host's clock passed the
//!   operator's.
//!
//! Now each registration reads the instance back from the server that took
//! it; a copy stamped later than the registration makes the instance raise
//! its timestamp past the copy's and register once more.

mod support;

use std::time::Duration;

use support::eureka::EurekaFixture;
use tower_ribbon::discovery::eureka::{EurekaRegistration, RegistrationHandle};

/// This host's clock, in ms since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).expect("ms"))
        .expect("clock")
}

/// One hour: how far the other clock is ahead.
const AHEAD_MS: u64 = 3_600_000;

/// The server's copy of `app`/`id` (`GET /apps/{APP}/{id}`, JSON).
async fn served(eureka: &EurekaFixture, app: &str, id: &str) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/apps/{}/{id}",
            eureka.url(),
            app.to_ascii_uppercase()
        ))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("instance request");
    assert_eq!(resp.status().as_u16(), 200, "GET {id}");
    let body: serde_json::Value =
        serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    body["instance"].clone()
}

/// The `lastDirtyTimestamp` of a served copy.
fn dirty(instance: &serde_json::Value) -> u64 {
    match &instance["lastDirtyTimestamp"] {
        serde_json::Value::String(s) => s.parse().expect("a number"),
        n => n.as_u64().expect("a number"),
    }
}

/// This host's registration of `app` at 127.0.0.1:`port` in `eureka`
/// (metadata `version` when given), renewed by `renew_now` only.
async fn registered(
    eureka: &EurekaFixture,
    app: &str,
    port: u16,
    version: Option<&str>,
) -> RegistrationHandle {
    let mut builder = EurekaRegistration::builder(app, "127.0.0.1", port)
        .server_url(eureka.url())
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1800));
    if let Some(version) = version {
        builder = builder.metadata("version", version);
    }
    builder
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered")
}

/// A previous run of the instance registered from a host whose clock was
/// an hour ahead (metadata `version: 1`, `lastDirtyTimestamp` an hour from
/// now) and was not cancelled. This run (`version: 2`) registers: the
/// server must serve this run's copy. Before the fix it served `version: 1`
/// after the registration and after a renewal (1 registration, the copy's
/// timestamp the other clock's); now `version: 2` with a timestamp past the
/// old copy's, after 2 registrations.
#[tokio::test]
async fn a_registration_replaces_a_copy_stamped_by_a_clock_ahead() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let (app, port) = ("clock-ahead", 19_801);
    let id = format!("127.0.0.1:{app}:{port}");
    let ahead = now_ms() + AHEAD_MS;
    let old_run = eureka
        .register_stamped(app, port, serde_json::json!({"version": "1"}), Some(ahead))
        .await;
    assert_eq!(old_run, id);
    assert_eq!(dirty(&served(&eureka, app, &id).await), ahead);

    let handle = registered(&eureka, app, port, Some("2")).await;
    let copy = served(&eureka, app, &id).await;
    assert_eq!(copy["metadata"]["version"], "2", "served {copy}");
    assert!(dirty(&copy) > ahead, "served {copy}");
    handle.renew_now().await.expect("renewed");
    let copy = served(&eureka, app, &id).await;
    assert_eq!(copy["metadata"]["version"], "2", "served {copy}");
    let stats = handle.stats();
    assert_eq!(
        (stats.registrations, stats.renewals, stats.failures),
        (2, 1, 0)
    );
    handle.shutdown().await.expect("cancelled");
}

/// Netflix/eureka#955 with the operator's clock an hour ahead: the
/// operator sets OUT_OF_SERVICE and deletes the override, both stamped
/// with their clock. The server serves the instance UNKNOWN and 404s its
/// heartbeats. Before the fix each re-registration, stamped with this
/// host's time, was ignored: still UNKNOWN after 3 renewals (4
/// registrations, 0 renewals). Now the first renewal's re-registration
/// reads the UNKNOWN copy back, raises its timestamp past the operator's
/// and registers again: UP, and the next renewal renews.
#[tokio::test]
async fn a_reregistration_wins_over_an_operator_whose_clock_is_ahead() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let (app, port) = ("operator-ahead", 19_802);
    let id = format!("127.0.0.1:{app}:{port}");
    let handle = registered(&eureka, app, port, None).await;
    assert_eq!(eureka.statuses(app).await, [(id.clone(), "UP".to_owned())]);
    let operator_at = now_ms() + AHEAD_MS;
    let client = reqwest::Client::new();
    let status = format!(
        "{}/apps/{}/{id}/status",
        eureka.url(),
        app.to_ascii_uppercase()
    );
    let put = client
        .put(format!(
            "{status}?value=OUT_OF_SERVICE&lastDirtyTimestamp={operator_at}"
        ))
        .send()
        .await
        .expect("override");
    assert_eq!(put.status().as_u16(), 200);
    let delete = client
        .delete(format!("{status}?lastDirtyTimestamp={operator_at}"))
        .send()
        .await
        .expect("override deleted");
    assert_eq!(delete.status().as_u16(), 200);
    assert_eq!(
        eureka.statuses(app).await,
        [(id.clone(), "UNKNOWN".to_owned())]
    );

    handle.renew_now().await.expect("404, registered again");
    assert_eq!(eureka.statuses(app).await, [(id.clone(), "UP".to_owned())]);
    handle.renew_now().await.expect("renewed");
    handle.renew_now().await.expect("renewed");
    assert_eq!(eureka.statuses(app).await, [(id.clone(), "UP".to_owned())]);
    let stats = handle.stats();
    assert_eq!(
        (stats.registrations, stats.renewals, stats.failures),
        (3, 2, 0)
    );
    handle.shutdown().await.expect("cancelled");
}

/// A copy stamped at the latest time a Java `long` holds (found by helper
/// 118): the registration stamps itself there (it cannot pass it), and
/// every later change added one more, past `Long.MAX_VALUE`. Eureka then
/// answered each status call and each renewal with 500: the drain never
/// reached the server (still served UP) and the lease would run out. Now
/// the stamp stays at the latest one: the drain is served, renewals pass.
#[tokio::test]
async fn a_copy_stamped_at_the_latest_time_leaves_later_calls_working() {
    use tower_ribbon::InstanceStatus;
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let (app, port) = ("stamp-at-max", 19_802);
    let id = format!("127.0.0.1:{app}:{port}");
    let latest = i64::MAX as u64 - 1;
    let old_run = eureka
        .register_stamped(app, port, serde_json::json!({}), Some(latest))
        .await;
    assert_eq!(old_run, id);
    let handle = registered(&eureka, app, port, None).await;
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("status call taken");
    for _ in 0..3 {
        handle.renew_now().await.expect("renewed");
    }
    assert_eq!(
        eureka.statuses(app).await,
        vec![(id.clone(), "OUT_OF_SERVICE".to_owned())]
    );
    assert_eq!(handle.stats().failures, 0);
    handle.shutdown().await.expect("cancelled");
}
