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
//! Two stub Eureka servers (`support/eureka_stub.rs`), to hold one call at
//! a chosen server.
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

use std::time::{Duration, Instant};

use eureka_stub::{Answer, Stub};
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::EurekaRegistration;

const APP: &str = "LATE";
const ID: &str = "lateid1";

fn inst(status: &str) -> Answer {
    Answer::ok(format!(
        r#"{{"instance":{{"instanceId":"{ID}","status":"{status}"}}}}"#
    ))
}

fn slow(ms: u64) -> Answer {
    Answer {
        status: 200,
        body: Vec::new(),
        delay_ms: ms,
    }
}

fn ip() -> String {
    format!("/eureka/apps/{APP}/{ID}")
}

fn script(s: &Stub) {
    let p = ip();
    s.set(
        &format!("POST /eureka/apps/{APP}"),
        vec![Answer::status(204)],
    );
    s.set(&format!("GET {p}"), vec![inst("UP")]);
    s.set(&format!("PUT {p}"), vec![Answer::status(200)]);
    s.set(&format!("PUT {p}/status"), vec![Answer::status(200)]);
    s.set(&format!("DELETE {p}"), vec![Answer::status(200)]);
}

fn count(s: &Stub, method: &str, needle: &str) -> usize {
    s.log()
        .iter()
        .filter(|(m, p, _)| m == method && p.contains(needle))
        .count()
}

fn deletes(s: &[&Stub]) -> usize {
    s.iter().map(|s| count(s, "DELETE", &ip())).sum()
}

fn registration(urls: &str) -> EurekaRegistration {
    EurekaRegistration::builder(APP, "127.0.0.1", 8080)
        .instance_id(ID)
        .server_urls(urls)
        .renew_interval(Duration::from_secs(3600))
        .lease_duration(Duration::from_secs(7200))
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

/// Baseline: a heartbeat that times out at A (B answers) makes shutdown
/// cancel twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_heartbeat_cancels_twice() {
    let (a, b) = (Stub::start().await, Stub::start().await);
    script(&a);
    script(&b);
    let handle = registration(&format!("{},{}", a.url(), b.url()))
        .start()
        .await
        .unwrap();
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
    let (a, b) = (Stub::start().await, Stub::start().await);
    script(&a);
    script(&b);
    let handle = registration(&format!("{},{}", a.url(), b.url()))
        .start()
        .await
        .unwrap();
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
    let (a, b) = (Stub::start().await, Stub::start().await);
    script(&a);
    script(&b);
    let handle = registration(&format!("{},{}", a.url(), b.url()))
        .start()
        .await
        .unwrap();
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
    let (a, b) = (Stub::start().await, Stub::start().await);
    script(&a);
    script(&b);
    let reg = registration(&format!("{},{}", a.url(), b.url()));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_registration_keeps_the_operators_oos() {
    assert_eq!(operator_oos_undone(false).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_registration_keeps_the_operators_oos() {
    let undone = operator_oos_undone(true).await;
    assert_eq!(
        undone, 0,
        "UP status calls over an operator's OOS in run 2 (all of run 2's OOS calls answered)"
    );
}
