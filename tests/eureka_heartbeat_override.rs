//! A heartbeat no server answered arms only the shutdown's second cancel,
//! not the status read-backs (helper 146).
//!
//! The read-backs after a status call some server may have taken without
//! answering undo that status for 10 renewals, then an operator's override
//! of it is kept. The first fix for late heartbeats (a second cancel after
//! shutdown) re-armed the read-backs at each unanswered heartbeat, which
//! kept an old drain's OUT_OF_SERVICE undoable: 12 renewals after the app
//! drained and came back, an operator's OUT_OF_SERVICE was undone by a
//! `PUT .../status?value=UP` at the next renewal (3 of 3 runs); with a peer
//! timing out now and then, for ever.
//!
//! Two stub Eureka servers (`support/eureka_stub.rs`) to time out one call
//! at a chosen server.
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

use std::time::Duration;

use eureka_stub::{Answer, Stub};
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::EurekaRegistration;

const APP: &str = "OPS";
const ID: &str = "opsid1";

fn inst(status: &str) -> Answer {
    Answer::ok(format!(
        r#"{{"instance":{{"instanceId":"{ID}","status":"{status}"}}}}"#
    ))
}

fn slow() -> Answer {
    Answer {
        status: 200,
        body: Vec::new(),
        delay_ms: 1500,
    }
}

fn script(s: &Stub) {
    let inst_path = format!("/eureka/apps/{APP}/{ID}");
    s.set(
        &format!("POST /eureka/apps/{APP}"),
        vec![Answer::status(204)],
    );
    s.set(&format!("GET {inst_path}"), vec![inst("UP")]);
    s.set(&format!("PUT {inst_path}"), vec![Answer::status(200)]);
    s.set(
        &format!("PUT {inst_path}/status"),
        vec![Answer::status(200)],
    );
    s.set(&format!("DELETE {inst_path}"), vec![Answer::status(200)]);
}

fn ups_sent(s: &Stub) -> usize {
    s.log()
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p.contains("/status?value=UP"))
        .count()
}

/// Returns the UP status calls sent to S1 after the operator's override.
async fn run(heartbeat_times_out: bool) -> usize {
    let s1 = Stub::start().await;
    let s2 = Stub::start().await;
    script(&s1);
    script(&s2);
    let inst_path = format!("/eureka/apps/{APP}/{ID}");
    let handle = EurekaRegistration::builder(APP, "127.0.0.1", 8080)
        .instance_id(ID)
        .server_urls(&format!("{},{}", s1.url(), s2.url()))
        .renew_interval(Duration::from_secs(3600))
        .lease_duration(Duration::from_secs(7200))
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .start()
        .await
        .expect("start");
    // The app drains: S1 hangs on it (timeout), S2 takes it. OOS armed.
    s1.set(&format!("PUT {inst_path}/status"), vec![slow()]);
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("oos");
    s1.set(
        &format!("PUT {inst_path}/status"),
        vec![Answer::status(200)],
    );
    // And comes back (answered by S2).
    handle.set_status(InstanceStatus::Up).await.expect("up");
    for _ in 0..4 {
        handle.renew_now().await.expect("renew");
    }
    if heartbeat_times_out {
        // One heartbeat times out at S2 (a GC pause), S1 answers it.
        s2.set(&format!("PUT {inst_path}"), vec![slow()]);
        handle.renew_now().await.expect("renew");
        s2.set(&format!("PUT {inst_path}"), vec![Answer::status(200)]);
    } else {
        handle.renew_now().await.expect("renew");
    }
    for _ in 0..7 {
        handle.renew_now().await.expect("renew");
    }
    // 12 renewals since the drain's call: past its 10 read-backs.
    // An operator takes the instance out at both servers.
    s1.set(&format!("GET {inst_path}"), vec![inst("OUT_OF_SERVICE")]);
    s2.set(&format!("GET {inst_path}"), vec![inst("OUT_OF_SERVICE")]);
    let (u1, u2) = (ups_sent(&s1), ups_sent(&s2));
    handle.renew_now().await.expect("renew");
    let undone = ups_sent(&s1) + ups_sent(&s2) - u1 - u2;
    drop(handle);
    undone
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_late_heartbeat_the_operators_override_is_kept() {
    assert_eq!(run(false).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_heartbeat_does_not_revive_an_old_drains_read_backs() {
    let undone = run(true).await;
    assert_eq!(
        undone, 0,
        "UP status calls sent over the operator's OUT_OF_SERVICE, 12 renewals after the app's own (answered-elsewhere) drain"
    );
}
