//! An operator's OUT_OF_SERVICE (`PUT …/status?value=OUT_OF_SERVICE`, as
//! Spinnaker's or Asgard's "disable", or an operator taking an instance
//! out) through the application's own status changes, against the real
//! Eureka server: a health flap (DOWN, then UP) and a start through
//! STARTING disabled by the deployer before the app is UP. Java's client
//! sends DOWN and UP in registration bodies: Eureka serves DOWN over the
//! override (`DownOrStartingRule`) and, once UP again, the operator's
//! OUT_OF_SERVICE (`OverrideExistsRule`); the last test sends that
//! protocol by hand as the control. Before the fix the registrant sent
//! DOWN as a status call, which replaced the override, and deleted the
//! override before every UP: the disabled instance was served UP again,
//! 5 of 5 renewals, in both flows (found by an attacking helper, attack
//! 60d). Now DOWN and STARTING go in a registration's body, and UP too
//! unless the registrant removes a drain of its own.
//!
//! Public reports of the intended behaviour: an override wins over the
//! instance's own UP until it is deleted, DOWN wins over it
//! (<https://github.com/Netflix/eureka/issues/389>, its merge table;
//! <https://github.com/Netflix/eureka/issues/717>); a client must not
//! overwrite the OUT_OF_SERVICE a management console set, even when it
//! re-registers (<https://github.com/jquatier/eureka-js-client/issues/112>);
//! a deployer disabling instances still starting
//! (<https://github.com/spinnaker/clouddriver/pull/4733>).
#![cfg(feature = "eureka")]

mod support;

use std::time::Duration;

use support::eureka::EurekaFixture;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::EurekaRegistration;

#[tokio::test]
async fn an_operators_out_of_service_survives_the_apps_down_up_flap() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let app = "operator-flap";
    let id = "127.0.0.1:operator-flap:19901".to_owned();
    let handle = EurekaRegistration::builder(app, "127.0.0.1", 19_901)
        .server_urls(&eureka.url())
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1800))
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered");
    let served = |s: &str| vec![(id.clone(), s.to_owned())];
    assert_eq!(eureka.statuses(app).await, served("UP"));
    // The operator disables the instance.
    eureka.set_status(app, &id, "OUT_OF_SERVICE").await;
    assert_eq!(eureka.statuses(app).await, served("OUT_OF_SERVICE"));
    handle.renew_now().await.expect("renewed");
    assert_eq!(eureka.statuses(app).await, served("OUT_OF_SERVICE"));
    // The application's health check fails, then recovers.
    handle.set_status(InstanceStatus::Down).await.expect("DOWN");
    assert_eq!(eureka.statuses(app).await, served("DOWN"));
    handle.set_status(InstanceStatus::Up).await.expect("UP");
    let mut seen = Vec::new();
    for _ in 0..5 {
        handle.renew_now().await.expect("renewed");
        seen.push(eureka.statuses(app).await[0].1.clone());
    }
    handle.shutdown().await.expect("cancelled");
    assert_eq!(
        seen,
        vec!["OUT_OF_SERVICE"; 5],
        "the operator's OUT_OF_SERVICE, as Java's client keeps it through a DOWN/UP flap"
    );
}

/// Spinnaker / Asgard "deploy disabled": the new instance registers
/// STARTING, the deployer takes it OUT_OF_SERVICE as soon as it is listed,
/// and the application then finishes starting (`set_status(Up)`). Java's
/// client re-registers with UP, which Eureka serves as the override
/// (OUT_OF_SERVICE) until the deployer enables the group. Before, the UP
/// deleted the override first: the disabled instance took traffic.
#[tokio::test]
async fn an_operators_out_of_service_set_while_starting_survives_the_first_up() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let app = "operator-starting";
    let id = "127.0.0.1:operator-starting:19902".to_owned();
    let handle = EurekaRegistration::builder(app, "127.0.0.1", 19_902)
        .server_urls(&eureka.url())
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1800))
        .initial_status(InstanceStatus::Starting)
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered");
    let served = |s: &str| vec![(id.clone(), s.to_owned())];
    assert_eq!(eureka.statuses(app).await, served("STARTING"));
    eureka.set_status(app, &id, "OUT_OF_SERVICE").await;
    handle.set_status(InstanceStatus::Up).await.expect("UP");
    let mut seen = Vec::new();
    for _ in 0..5 {
        handle.renew_now().await.expect("renewed");
        seen.push(eureka.statuses(app).await[0].1.clone());
    }
    handle.shutdown().await.expect("cancelled");
    assert_eq!(
        seen,
        vec!["OUT_OF_SERVICE"; 5],
        "the deployer's OUT_OF_SERVICE"
    );
}

/// Control: the same two flows as Java's client sends them (status in a
/// registration body, `overriddenStatus` UNKNOWN, a newer
/// `lastDirtyTimestamp` each time), against the same server: the
/// operator's OUT_OF_SERVICE is served after the app's UP in both.
#[tokio::test]
async fn control_java_client_protocol_keeps_the_operators_override() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let client = reqwest::Client::new();
    let register = |app: &'static str, status: &'static str, dirty: u64| {
        let client = client.clone();
        let url = format!("{}/apps/{}", eureka.url(), app.to_ascii_uppercase());
        async move {
            let body = serde_json::json!({"instance": {
                "instanceId": "java-1", "hostName": "127.0.0.1", "app": app.to_ascii_uppercase(),
                "ipAddr": "127.0.0.1", "vipAddress": app, "status": status,
                "overriddenStatus": "UNKNOWN", "lastDirtyTimestamp": dirty.to_string(),
                "port": {"$": 19_903, "@enabled": "true"},
                "dataCenterInfo": {
                    "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                    "name": "MyOwn"
                },
            }});
            let resp = client
                .post(url)
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(&body).expect("JSON"))
                .send()
                .await
                .expect("register");
            assert_eq!(resp.status().as_u16(), 204);
        }
    };
    let served = |s: &str| vec![("java-1".to_owned(), s.to_owned())];
    // The DOWN/UP flap.
    register("java-flap", "UP", 1_000).await;
    eureka
        .set_status("java-flap", "java-1", "OUT_OF_SERVICE")
        .await;
    register("java-flap", "DOWN", 2_000).await;
    assert_eq!(eureka.statuses("java-flap").await, served("DOWN"));
    register("java-flap", "UP", 3_000).await;
    assert_eq!(eureka.statuses("java-flap").await, served("OUT_OF_SERVICE"));
    // STARTING, disabled, then UP.
    register("java-starting", "STARTING", 1_000).await;
    eureka
        .set_status("java-starting", "java-1", "OUT_OF_SERVICE")
        .await;
    register("java-starting", "UP", 2_000).await;
    assert_eq!(
        eureka.statuses("java-starting").await,
        served("OUT_OF_SERVICE")
    );
}

/// The registrant's own drain still goes with its own UP, through a flap:
/// drained, DOWN, then UP is served UP (as before). An operator's
/// OUT_OF_SERVICE set after that undrain is not the registrant's, though
/// it once sent that status: a second flap keeps it.
#[tokio::test]
async fn the_apps_own_drain_goes_with_its_up_and_an_operators_later_one_stays() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let app = "operator-after-drain";
    let id = "127.0.0.1:operator-after-drain:19904".to_owned();
    let handle = EurekaRegistration::builder(app, "127.0.0.1", 19_904)
        .server_urls(&eureka.url())
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1800))
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered");
    let served = |s: &str| vec![(id.clone(), s.to_owned())];
    let flap = || async {
        handle.set_status(InstanceStatus::Down).await.expect("DOWN");
        assert_eq!(eureka.statuses(app).await, served("DOWN"));
        handle.set_status(InstanceStatus::Up).await.expect("UP");
        let mut seen = Vec::new();
        for _ in 0..3 {
            handle.renew_now().await.expect("renewed");
            seen.push(eureka.statuses(app).await[0].1.clone());
        }
        seen
    };
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("drained");
    assert_eq!(eureka.statuses(app).await, served("OUT_OF_SERVICE"));
    assert_eq!(
        flap().await,
        vec!["UP"; 3],
        "its own drain, undone by its UP"
    );
    eureka.set_status(app, &id, "OUT_OF_SERVICE").await;
    assert_eq!(flap().await, vec!["OUT_OF_SERVICE"; 3], "the operator's");
    // Its own repeated UP leaves the operator's override too.
    handle.set_status(InstanceStatus::Up).await.expect("UP");
    handle.renew_now().await.expect("renewed");
    assert_eq!(eureka.statuses(app).await, served("OUT_OF_SERVICE"));
    assert_eq!(handle.stats().failures, 0);
    handle.shutdown().await.expect("cancelled");
}
