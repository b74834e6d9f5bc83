//! Dropped `start` and `shutdown` futures leave a registration's runs as
//! the awaited calls do (helper 151, against the fourth version of the
//! late-write fixes). Each case beside its control, the same steps with the
//! future awaited:
//!
//! - a `shutdown` dropped while a renewal holds the lock ends the run as an
//!   awaited one does, so a restart starts with nothing armed: one DELETE,
//!   no wait (before: two, and a 3 s wait);
//! - a clone's failed `start`, dropped while it cancels, leaves the running
//!   handle renewing (before: its renewals stopped for good, 0 PUTs);
//! - a `start` dropped mid-registration after a shutdown leaves the clone
//!   that shutdown stopped stopped (before: it renewed and registered the
//!   instance again after `shutdown` had returned).
//!
//! Two stub Eureka servers (`support/eureka_stub.rs`, `common/lease_rig.rs`).
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;
#[path = "common/lease_rig.rs"]
mod lease_rig;

use std::time::{Duration, Instant};

use eureka_stub::Answer;
use lease_rig::*;

// ---------------------------------------------------------------------------
// 1. A shutdown dropped while a scheduled renewal holds the lock: its
//    PendingCancel task marks `shut_down` but not `ended`, so the next start
//    (after everything due was sent) inherits the armed late heartbeat:
//    run 2 (all answered) waits timeout + 2 s and cancels twice.
async fn run2_after_shutdown(drop_it: bool) -> (usize, Duration) {
    let (a, b, urls) = two_stubs().await;
    let reg = builder(&urls)
        .renew_interval(Duration::from_millis(1000))
        .request_timeout(Duration::from_millis(1000))
        .build()
        .unwrap();
    let h = reg.clone().start().await.unwrap();
    a.set(&format!("PUT {}", ip()), vec![slow(1500)]);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(count(&a, "PUT", &ip()), 1, "the scheduled renewal is at A");
    if drop_it {
        let r = tokio::time::timeout(Duration::from_millis(200), h.shutdown()).await;
        assert!(r.is_err());
    } else {
        h.shutdown().await.unwrap();
    }
    // Everything due (second cancel at +1 s +2 s) sent.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    a.set(&format!("PUT {}", ip()), vec![Answer::status(200)]);
    let d0 = total(&[&a, &b], "DELETE", &ip());
    // Run 2: nothing unanswered.
    let h = reg.clone().start().await.unwrap();
    h.renew_now().await.unwrap();
    let t = Instant::now();
    h.shutdown().await.unwrap();
    (total(&[&a, &b], "DELETE", &ip()) - d0, t.elapsed())
}

/// Beside its control (the shutdown awaited), run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run2_after_a_shutdown_dropped_before_the_lock_has_nothing_armed() {
    let ((d0, took0), (d, took)) =
        tokio::join!(run2_after_shutdown(false), run2_after_shutdown(true));
    assert!(
        d0 == 1 && took0 < Duration::from_millis(1500),
        "control: {d0} DELETEs, {took0:?}"
    );
    assert!(
        d == 1 && took < Duration::from_millis(1500),
        "run 2 (all answered) after a shutdown dropped while a renewal held the lock: {d} DELETEs, shutdown took {took:?}; expected 1 DELETE, no armed wait (3 s)"
    );
}

// ---------------------------------------------------------------------------
// 2. A clone's start that fails beside a running handle h1, bounded by the
//    caller: the task sending its cancels marked the registration shut down
//    (h1, still running, never renewed again). A failed start leaves
//    `shut_down` as it was (false), dropped or not, and h1 renews.
async fn h1_puts_after_failed_clone_start(drop_it: bool) -> usize {
    let (a, b, urls) = two_stubs().await;
    let reg = builder(&urls).build().unwrap();
    let h1 = reg.clone().start().await.unwrap();
    // The clone's registration times out at A (may land), B refuses it.
    a.set(&post(), vec![slow(3000)]);
    b.set(&post(), vec![Answer::status(500)]);
    // Its cancel is slow (answered within the timeout).
    a.set(&format!("DELETE {}", ip()), vec![slow(400)]);
    b.set(&format!("DELETE {}", ip()), vec![slow(400)]);
    let t = Instant::now();
    if drop_it {
        // POST A 500 ms + B fast: the start fails at ~500 ms and leaves its
        // cancels to a task; bounded at 700 ms (dropped if still running).
        let r = tokio::time::timeout(Duration::from_millis(700), reg.clone().start()).await;
        assert!(r.is_err() || r.is_ok_and(|started| started.is_err()));
    } else {
        assert!(reg.clone().start().await.is_err());
    }
    // Everything due sent (second cancel at +0.5 s +2 s).
    tokio::time::sleep(
        Duration::from_millis(3500).saturating_sub(t.elapsed()) + Duration::from_millis(500),
    )
    .await;
    let p0 = total(&[&a, &b], "PUT", &ip());
    h1.renew_now().await.expect("renew");
    h1.renew_now().await.expect("renew");
    total(&[&a, &b], "PUT", &ip()) - p0
}

/// Beside its control (the failed start awaited), run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_failed_clone_start_leaves_the_running_handle_renewing() {
    let (control, n) = tokio::join!(
        h1_puts_after_failed_clone_start(false),
        h1_puts_after_failed_clone_start(true)
    );
    assert_eq!(control, 2, "control");
    assert_eq!(
        n, 2,
        "heartbeats of running handle h1 (2 renew_now) after a clone's failed start was bounded by its caller"
    );
}

// ---------------------------------------------------------------------------
// 3. h1 and h2 (clones) run; h1.shutdown() returns (h2's renewals stop). A
//    start dropped mid-registration leaves `shut_down` false: h2's renewals
//    resume and, on 404, register the instance again, though no start
//    succeeded since the shutdown. A failed start instead leaves it shut down.
async fn h2_writes_after_start(drop_it: bool) -> (usize, usize) {
    let (a, b, urls) = two_stubs().await;
    let reg = builder(&urls).build().unwrap();
    let h1 = reg.clone().start().await.unwrap();
    let h2 = reg.clone().start().await.unwrap();
    h1.shutdown().await.unwrap();
    if drop_it {
        a.set(&post(), vec![slow(1000)]);
        let r = tokio::time::timeout(Duration::from_millis(200), reg.clone().start()).await;
        assert!(r.is_err(), "start still registering at A");
    } else {
        for s in [&a, &b] {
            s.set(&post(), vec![Answer::status(500)]);
        }
        assert!(reg.clone().start().await.is_err());
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for s in [&a, &b] {
        s.set(&post(), vec![Answer::status(204)]);
        s.set(&format!("PUT {}", ip()), vec![Answer::status(404)]);
    }
    let (p0, r0) = (
        total(&[&a, &b], "PUT", &ip()),
        total(&[&a, &b], "POST", "/eureka/apps/"),
    );
    let _ = h2.renew_now().await;
    (
        total(&[&a, &b], "PUT", &ip()) - p0,
        total(&[&a, &b], "POST", "/eureka/apps/") - r0,
    )
}

/// Beside its control (a failed start), run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_start_after_shutdown_keeps_the_clone_stopped() {
    let (control, case) = tokio::join!(h2_writes_after_start(false), h2_writes_after_start(true));
    assert_eq!(control, (0, 0), "control");
    assert_eq!(
        case,
        (0, 0),
        "(heartbeats, registrations) by clone h2 after h1.shutdown() returned and a start was dropped mid-registration"
    );
}
