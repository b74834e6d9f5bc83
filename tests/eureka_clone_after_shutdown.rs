//! A clone's `set_status` after another clone's `shutdown`, against the
//! real Eureka server (attack 64c).
//!
//! Two handles started from clones of one registration share its
//! instance; one drains (or reports DOWN), the other shuts down (the
//! instance is cancelled). The first handle's `set_status` after that
//! registered the instance again (DOWN, STARTING, and UP with no override
//! of its own held go in a registration's body), and nothing renewed or
//! cancelled it: served UP 6 of 6 reads over 3 s, until its lease ran out
//! (about 240 s at the default lease). Renewals stopped at the shutdown;
//! status changes did not. Now it sends nothing, returns `Ok`, and keeps
//! the status for the next `start`.
#![cfg(feature = "eureka")]

mod support;

use std::time::Duration;

use support::eureka::EurekaFixture;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::EurekaRegistration;

/// Starts two handles of one registration of `app`, sets `before` through
/// the second, shuts the first down, then sets `status` through the
/// second: returns that call's result, what the server serves then (and
/// still after the second handle's renewal), and the registration.
async fn case(
    eureka: &EurekaFixture,
    app: &str,
    before: InstanceStatus,
    status: InstanceStatus,
) -> (
    Result<(), String>,
    Vec<(String, String)>,
    EurekaRegistration,
) {
    let reg = EurekaRegistration::builder(app, "127.0.0.1", 20_641)
        .instance_id("clone-1")
        .server_urls(&eureka.url())
        // Renewals only when asked (`renew_now`).
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1_800))
        .build()
        .expect("built");
    let a = reg.clone().start().await.expect("a started");
    let b = reg.clone().start().await.expect("b started");
    b.set_status(before).await.expect("before");
    a.shutdown().await.expect("shut down");
    assert_eq!(eureka.statuses(app).await, [], "{app}: cancelled");
    // A health task still holding the other handle reports a status.
    let set = b.set_status(status).await.map_err(|e| e.to_string());
    let after_set = eureka.statuses(app).await;
    assert_eq!(b.status(), status, "{app}: the status is kept");
    b.renew_now().await.expect("nothing to renew");
    assert_eq!(
        eureka.statuses(app).await,
        after_set,
        "{app}: after a renewal"
    );
    drop(b);
    (set, after_set, reg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_set_status_after_shutdown_registers_nothing() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    use InstanceStatus::{Down, OutOfService, Starting, Up};
    let mut served = Vec::new();
    for (app, before, status) in [
        ("clone-up", Down, Up),
        ("clone-down", OutOfService, Down),
        ("clone-starting", OutOfService, Starting),
        // The control: from its own drain UP is a status call, 404.
        ("clone-undrain", OutOfService, Up),
    ] {
        let (set, seen, _) = case(&eureka, app, before, status).await;
        served.push((app, set, seen));
    }
    assert_eq!(
        served,
        [
            ("clone-up", Ok(()), vec![]),
            ("clone-down", Ok(()), vec![]),
            ("clone-starting", Ok(()), vec![]),
            ("clone-undrain", Ok(()), vec![]),
        ]
    );
}

/// The status set after the shutdown is the one the next `start`
/// registers with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_set_after_shutdown_is_registered_at_the_next_start() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let (set, served, reg) = case(
        &eureka,
        "clone-restart",
        InstanceStatus::Up,
        InstanceStatus::Down,
    )
    .await;
    assert_eq!((set, served), (Ok(()), vec![]));
    let c = reg.start().await.expect("restarted");
    assert_eq!(
        eureka.statuses("clone-restart").await,
        [("clone-1".to_owned(), "DOWN".to_owned())]
    );
    c.shutdown().await.expect("shut down");
    assert_eq!(eureka.statuses("clone-restart").await, []);
}
