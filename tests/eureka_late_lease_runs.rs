//! Late lease writes and `shutdown`, across dropped calls and restarts
//! (helper 147, against the first version of the late-heartbeat fix).
//!
//! - A heartbeat that timed out at one server (another answered) arms the
//!   shutdown's second cancel: two DELETEs.
//! - So does a heartbeat dropped before its answer (`renew_now` inside a
//!   `tokio::time::timeout` while the server holds it): before, one DELETE.
//! - A `shutdown` bounded by the caller below its wait still sends the
//!   second cancel at its time (from a task of its own): before, lost.
//! - A registration started again after a shutdown starts with nothing
//!   armed: before, it inherited the old run's armed state, waited 2.5 s
//!   at its own shutdown and cancelled twice, and an old run's unanswered
//!   OUT_OF_SERVICE let a read-back undo an operator's OUT_OF_SERVICE in
//!   the new run (one `PUT .../status?value=UP`, 3 of 3 runs).
//!
//! - (helper 149) A clone started beside a running handle keeps that
//!   handle's armed state (its second cancel, its read-backs); a failed
//!   restart keeps a second cancel still due; a `shutdown` dropped during
//!   its first cancel still cancels at the server holding the lease (before:
//!   1 DELETE where 2 were due, 0 status corrections where 1 was, 1 DELETE,
//!   0 DELETEs).
//! - (helper 150) A `shutdown` dropped while a renewal holds the lock still
//!   cancels (before: 0 DELETEs); a failed start whose registration went
//!   unanswered cancels twice, as a shutdown does (before: once, and the
//!   registration landed after it); a start after a failed one keeps what
//!   that start armed (before: cleared, one cancel at the next shutdown).
//! - Left: a process that exits right after dropping `shutdown` (its
//!   runtime gone) loses a cancel still due; a write held by a server
//!   longer than a request timeout and 2 s lands after the second cancel.
//!
//! Two stub Eureka servers (`support/eureka_stub.rs`), to hold one call at
//! a chosen server.
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;
#[path = "common/lease_rig.rs"]
mod lease_rig;

use std::time::{Duration, Instant};

use eureka_stub::{Answer, Stub};
use lease_rig::*;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::EurekaRegistration;

/// Baseline: a heartbeat that times out at A (B answers) makes shutdown
/// cancel twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_heartbeat_cancels_twice() {
    let (a, b, urls) = two_stubs().await;
    let handle = registration(&urls).start().await.unwrap();
    a.set(&format!("PUT {}", ip()), vec![slow(2000)]);
    a.set(&format!("DELETE {}", ip()), vec![slow(2000)]);
    handle.renew_now().await.expect("renew at B");
    handle.shutdown().await.expect("shutdown");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&b, "DELETE", &ip()), 2);
}

/// A `renew_now` dropped while hung server A holds its heartbeat is a
/// heartbeat that may land late, like one that timed out at A: the
/// shutdown should cancel again. `set_status`/registrations get this via
/// `Sending`'s Drop; heartbeats have no such guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_heartbeat_arms_the_second_cancel() {
    let (a, b, urls) = two_stubs().await;
    let handle = registration(&urls).start().await.unwrap();
    // A hangs (every lease call held 2 s).
    a.set(&format!("PUT {}", ip()), vec![slow(2000)]);
    a.set(&format!("DELETE {}", ip()), vec![slow(2000)]);
    let dropped = tokio::time::timeout(Duration::from_millis(200), handle.renew_now()).await;
    assert!(dropped.is_err(), "renew_now should still be at A");
    assert_eq!(
        count(&a, "PUT", &ip()),
        1,
        "the heartbeat reached A: {:?}",
        a.log()
    );
    handle.shutdown().await.expect("shutdown");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(&b, "DELETE", &ip()),
        2,
        "DELETEs at B after a heartbeat dropped while A held it (a timed-out one gives 2)"
    );
}

/// `shutdown()` bounded by the caller (a graceful-shutdown budget) after an
/// unanswered heartbeat: the first cancel is done, the second follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_shutdown_still_sends_the_second_cancel() {
    let (a, b, urls) = two_stubs().await;
    let handle = registration(&urls).start().await.unwrap();
    a.set(&format!("PUT {}", ip()), vec![slow(2000)]);
    handle.renew_now().await.expect("renew at B");
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_millis(1500), handle.shutdown()).await;
    assert!(r.is_err(), "shutdown still waiting after {:?}", t.elapsed());
    assert_eq!(count(&b, "DELETE", &ip()), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        deletes(&[&a, &b]),
        2,
        "DELETEs 4.5 s after a shutdown bounded at 1.5 s (armed second cancel due at ~2.5 s)"
    );
}

/// Run 2 (a clone started after run 1's shutdown) with no unanswered call
/// cancels once, without the armed wait (a request timeout + 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_registration_starts_with_nothing_armed() {
    let (a, b, urls) = two_stubs().await;
    let reg = registration(&urls);
    let handle = reg.clone().start().await.unwrap();
    a.set(&format!("PUT {}", ip()), vec![slow(2000)]);
    handle.renew_now().await.expect("renew at B");
    handle.shutdown().await.expect("shutdown 1");
    let d1 = deletes(&[&a, &b]);
    // Run 2: all answered, at once.
    a.set(&format!("PUT {}", ip()), vec![Answer::status(200)]);
    let handle = reg.clone().start().await.unwrap();
    for _ in 0..2 {
        handle.renew_now().await.expect("renew");
    }
    let t = Instant::now();
    handle.shutdown().await.expect("shutdown 2");
    let took = t.elapsed();
    let d2 = deletes(&[&a, &b]) - d1;
    assert!(
        d2 == 1 && took < Duration::from_millis(2000),
        "run 2 (nothing unanswered): {d2} DELETEs, shutdown took {took:?}; expected 1 DELETE, fast"
    );
}

/// Run 1's unanswered drain (read-backs armed with OOS) is not run 2's,
/// whose OOS calls were all answered: an operator's OUT_OF_SERVICE in run 2
/// is kept, as on a fresh registration.
async fn operator_oos_undone(after_run_1: bool) -> usize {
    let a = Stub::start().await;
    script(&a);
    let reg = registration(&a.url());
    if after_run_1 {
        let handle = reg.clone().start().await.unwrap();
        a.set(
            &format!("PUT {}/status", ip()),
            vec![slow(1500), Answer::status(200)],
        );
        assert!(
            handle
                .set_status(InstanceStatus::OutOfService)
                .await
                .is_err()
        );
        handle.shutdown().await.expect("shutdown 1");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // Run 2 starts OOS (the wanted status is kept) and goes UP.
    } else {
        // Same wanted status at start as run 2 has.
    }
    let reg = if after_run_1 {
        reg
    } else {
        EurekaRegistration::builder(APP, "127.0.0.1", 8080)
            .instance_id(ID)
            .server_urls(&a.url())
            .renew_interval(Duration::from_secs(3600))
            .lease_duration(Duration::from_secs(7200))
            .request_timeout(Duration::from_millis(500))
            .initial_status(InstanceStatus::OutOfService)
            .build()
            .unwrap()
    };
    let handle = reg.start().await.expect("start 2");
    assert_eq!(handle.status(), InstanceStatus::OutOfService);
    handle.set_status(InstanceStatus::Up).await.expect("up");
    // An operator takes the instance out.
    a.set(&format!("GET {}", ip()), vec![inst("OUT_OF_SERVICE")]);
    let before = count(&a, "PUT", "/status?value=UP");
    handle.renew_now().await.expect("renew");
    let undone = count(&a, "PUT", "/status?value=UP") - before;
    drop(handle);
    undone
}

/// Beside its control (the same steps without the difference), run at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_registration_keeps_the_operators_oos() {
    let (control, case) = tokio::join!(operator_oos_undone(false), operator_oos_undone(true));
    assert_eq!(control, 0, "control");
    assert_eq!(
        case, 0,
        "UP status calls over an operator's OOS in run 2 (all of run 2's OOS calls answered)"
    );
}

// Helper 149, against the second version (a start cleared every run's
// armed state, a failed start dropped a second cancel still due, and the
// first cancel had no guard).

/// (b) Handle 1 runs; its heartbeat timed out at hung A (B answered), so
/// its shutdown owes a second cancel. A second handle started from a clone
/// meanwhile (documented: "a registration started twice (from clones)
/// shares its instance") clears handle 1's armed `late_beats`.
async fn deletes_at_b(start_clone: bool) -> usize {
    let (a, b, urls) = two_stubs().await;
    let reg = registration(&urls);
    let h1 = reg.clone().start().await.unwrap();
    a.set(&format!("PUT {}", ip()), vec![slow(2000)]);
    h1.renew_now().await.expect("renew at B");
    let h2 = if start_clone {
        Some(reg.clone().start().await.unwrap())
    } else {
        None
    };
    h1.shutdown().await.expect("shutdown");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(h2);
    count(&b, "DELETE", &ip())
}

/// Beside its control (the same steps without the difference), run at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_started_beside_a_running_handle_keeps_its_second_cancel() {
    let (control, case) = tokio::join!(deletes_at_b(false), deletes_at_b(true));
    assert_eq!(control, 2, "control");
    assert_eq!(
        case, 2,
        "DELETEs at B: handle 1's heartbeat went unanswered at A, then a clone started"
    );
}

/// (b) Handle 1: UP timed out at hung A (B answered; read-backs armed with
/// UP undoable), then a drain to OUT_OF_SERVICE taken by B. A clone starts
/// (same instance, wanted OOS). A's late UP then lands and is served by B:
/// the next renewal should read it back and send OOS again.
async fn oos_corrections(start_clone: bool) -> usize {
    let (a, b, urls) = two_stubs().await;
    let reg = registration(&urls);
    let h1 = reg.clone().start().await.unwrap();
    h1.set_status(InstanceStatus::OutOfService)
        .await
        .expect("oos at A");
    a.set(&format!("PUT {}/status", ip()), vec![slow(2000)]);
    a.set(&format!("PUT {}", ip()), vec![slow(2000)]);
    h1.set_status(InstanceStatus::Up)
        .await
        .expect("up: timed out at A, taken by B");
    h1.set_status(InstanceStatus::OutOfService)
        .await
        .expect("drain at B");
    let h2 = if start_clone {
        Some(reg.clone().start().await.unwrap())
    } else {
        None
    };
    // A wakes: its late UP is served (replicated to B).
    tokio::time::sleep(Duration::from_millis(1800)).await;
    b.set(&format!("GET {}", ip()), vec![inst("UP")]);
    let before = count(&b, "PUT", "/status?value=OUT_OF_SERVICE");
    h1.renew_now().await.expect("renew at B");
    let fixed = count(&b, "PUT", "/status?value=OUT_OF_SERVICE") - before;
    drop(h2);
    drop(h1);
    fixed
}

/// Beside its control (the same steps without the difference), run at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_started_beside_a_running_handle_keeps_its_read_backs() {
    let (control, case) = tokio::join!(oos_corrections(false), oos_corrections(true));
    assert_eq!(control, 1, "control");
    assert_eq!(
        case, 1,
        "OOS status calls after B served handle 1's late UP (a clone started after the drain)"
    );
}

/// (a) A shutdown dropped during its wait; then a start that fails (the
/// registry refuses the registration) clears `shut_down`, so the pending
/// task skips the second cancel, though no run holds the registration.
async fn deletes_after_failed_restart(restart: bool) -> usize {
    let (a, b, urls) = two_stubs().await;
    let reg = registration(&urls);
    let h = reg.clone().start().await.unwrap();
    a.set(&format!("PUT {}", ip()), vec![slow(2000)]);
    h.renew_now().await.expect("renew at B");
    let r = tokio::time::timeout(Duration::from_millis(1000), h.shutdown()).await;
    assert!(r.is_err());
    if restart {
        for s in [&a, &b] {
            s.set(
                &format!("POST /eureka/apps/{APP}"),
                vec![Answer::status(500)],
            );
        }
        assert!(reg.clone().start().await.is_err(), "start refused");
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
    count(&a, "DELETE", &ip()) + count(&b, "DELETE", &ip())
}

/// Beside its control (the same steps without the difference), run at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restart_does_not_drop_the_pending_second_cancel() {
    let (control, case) = tokio::join!(
        deletes_after_failed_restart(false),
        deletes_after_failed_restart(true)
    );
    assert_eq!(control, 2, "control");
    assert_eq!(
        case, 2,
        "DELETEs 4 s after a bounded shutdown (second cancel due ~2.5 s) when a restart attempt failed at ~1 s"
    );
}

/// (e) A shutdown bounded below the request timeout, while hung server A
/// holds the first cancel: B (which holds the lease) never gets a DELETE,
/// though the second cancel of the same dropped shutdown would be sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_dropped_during_its_first_cancel_still_cancels() {
    let (a, b, urls) = two_stubs().await;
    let h = registration(&urls).start().await.unwrap();
    a.set(&format!("DELETE {}", ip()), vec![slow(5000)]);
    let r = tokio::time::timeout(Duration::from_millis(300), h.shutdown()).await;
    assert!(r.is_err());
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(count(&a, "DELETE", &ip()) >= 1, "the cancel reached A");
    assert_eq!(
        count(&b, "DELETE", &ip()),
        1,
        "DELETEs at B 3 s after a shutdown bounded at 0.3 s while A held the cancel"
    );
}

// Helper 150, against the third version (the guard made after the lock,
// a failed start cancelling once, a start after a failed one clearing what
// it armed).
/// A `shutdown()` bounded by the caller and dropped while it still waits for
/// `op` (a scheduled renewal is held by hung server A) sends no cancel at
/// all: the PendingCancel guard is only made after the lock is taken, but
/// the handle (and its renewal task) is gone. Documented: "Dropped before it
/// returns (a caller's time limit), the cancels still due are sent at their
/// time by a task of its own".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_dropped_while_a_renewal_holds_the_lock_still_cancels() {
    let (a, b, urls) = two_stubs().await;
    let reg = builder(&urls)
        .renew_interval(Duration::from_millis(1000))
        .request_timeout(Duration::from_millis(3000))
        .build()
        .unwrap();
    let h = reg.start().await.unwrap();
    // A hangs on heartbeats from now on (held 2.5 s, inside the 3 s timeout).
    a.set(&format!("PUT {}", ip()), vec![slow(2500)]);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(count(&a, "PUT", &ip()), 1, "the scheduled renewal is at A");
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_millis(500), h.shutdown()).await;
    assert!(r.is_err(), "shutdown still waiting after {:?}", t.elapsed());
    // Give anything due (the cancel, a second one after the unanswered
    // heartbeat: 3 s + 2 s) its time.
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let n = deletes(&[&a, &b]);
    assert!(
        n >= 1,
        "DELETEs 6 s after a shutdown bounded at 0.5 s while a renewal held the lock: {n}; expected >= 1"
    );
}

/// (d) A start after a clean shutdown, initial status OUT_OF_SERVICE: the
/// registration times out at hung A (B takes it), the status call is refused
/// everywhere, so start cancels once and fails. A's registration lands at
/// ~2 s, after that single cancel; shutdown cancels again after such an
/// unanswered registration, a failed start does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_with_an_unanswered_registration_cancels_twice() {
    let (a, b, urls) = two_stubs().await;
    let reg = builder(&urls)
        .initial_status(InstanceStatus::OutOfService)
        .build()
        .unwrap();
    let h = reg.clone().start().await.unwrap();
    h.shutdown().await.unwrap();
    let d0 = deletes(&[&a, &b]);
    let posts_a0 = count(&a, "POST", "/eureka/apps/");
    a.set(&format!("POST /eureka/apps/{APP}"), vec![slow(2000)]);
    for s in [&a, &b] {
        s.set(&format!("PUT {}/status", ip()), vec![Answer::status(500)]);
    }
    // Start from A: the preferred server is the last that answered (A).
    let t = Instant::now();
    assert!(reg.clone().start().await.is_err(), "status refused");
    assert_eq!(
        count(&a, "POST", "/eureka/apps/") - posts_a0,
        1,
        "POST reached A"
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let d = deletes(&[&a, &b]) - d0;
    assert!(
        d >= 2,
        "DELETEs after a failed start whose registration timed out at A (lands at ~2 s; {:?} since start): {d}; expected 2 (as shutdown does)",
        t.elapsed()
    );
}

/// (c) A start whose registration timed out at hung A (B refused it) fails
/// with the registration armed (it may land). The next start succeeds and is
/// shut down before A applies the held registration. Without a run before
/// the failed start, that shutdown cancels twice; after a run and a clean
/// shutdown, `start_locked` (was_shut_down: the failed start put
/// `shut_down` back) clears the failed start's armed registration and the
/// shutdown cancels once: A's registration lands after it.
async fn deletes_of_run_after_failed_start(prior_run: bool) -> (usize, Duration) {
    let (a, b, urls) = two_stubs().await;
    let reg = builder(&urls).build().unwrap();
    if prior_run {
        let h = reg.clone().start().await.unwrap();
        h.shutdown().await.unwrap();
    }
    let post = format!("POST /eureka/apps/{APP}");
    a.set(&post, vec![slow(4000)]);
    b.set(&post, vec![Answer::status(500)]);
    assert!(reg.clone().start().await.is_err(), "start refused");
    a.set(&post, vec![Answer::status(204)]);
    b.set(&post, vec![Answer::status(204)]);
    let h = reg.clone().start().await.expect("start");
    let d0 = deletes(&[&a, &b]);
    let t = Instant::now();
    h.shutdown().await.unwrap();
    let took = t.elapsed();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    (deletes(&[&a, &b]) - d0, took)
}

/// Beside its control (a failed first start), run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restart_keeps_its_unanswered_registration_armed() {
    let ((control, _), (n, took)) = tokio::join!(
        deletes_of_run_after_failed_start(false),
        deletes_of_run_after_failed_start(true)
    );
    assert_eq!(control, 2, "control");
    assert_eq!(
        n, 2,
        "DELETEs of the run after a failed restart whose registration is still held at A (lands ~4 s after it; shutdown took {took:?})"
    );
}
