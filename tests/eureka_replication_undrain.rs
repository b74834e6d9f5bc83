//! A status change replicated ahead of the undrain before it (helper 249;
//! `registration/replay.rs`), against a real two-peer Eureka cluster.
//!
//! The app's statuses DOWN, UP, OUT_OF_SERVICE, UP, DOWN, OUT_OF_SERVICE
//! (a health flap, a drain, an undrain, a flap, a drain), sent one after
//! another within Eureka's 500 ms replication batching delay: peer one
//! queues them for peer two keyed by kind (`Register`, `StatusUpdate`,
//! `DeleteStatusOverride`), a newer one replacing the queued one of its
//! kind in place, so peer two got the last registration, the last status
//! update and then the undrain's removal of the override, which set UP.
//! Both peers held the same `lastDirtyTimestamp`, heartbeats got 200, and
//! peer two served the draining instance UP for good: 1 to 4 of 6 apps
//! per run, 10 of 10 reads UP 20 s later. Whether a sequence falls in one
//! batch depends on the calls' speed, so six apps run it (the test cannot
//! fail on every run of the code before the fix; it failed in each of the
//! helper's runs). Now a change within 30 s of an undrain is sent again at
//! the first renewals at least 1 s, 5 s and 20 s later: every app as
//! wanted at both peers.
//! A sequence ending DOWN (sent in a registration's body) is sent again
//! with a raised `lastDirtyTimestamp`. The control (OUT_OF_SERVICE, UP,
//! OUT_OF_SERVICE) ended drained before too. Eureka's own report of
//! batched replication reaching a peer out of order:
//! <https://github.com/Netflix/eureka/issues/663> (closed unfixed).
#![cfg(feature = "eureka")]

mod support;

use std::time::Duration;

use support::eureka::EurekaFixture;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::EurekaRegistration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_right_after_an_undrain_ends_as_wanted_at_both_peers() {
    let Some([one, two]) = EurekaFixture::start_cluster() else {
        return;
    };
    use InstanceStatus::{Down, OutOfService, Up};
    let flap: &[InstanceStatus] = &[Down, Up, OutOfService, Up, Down, OutOfService];
    let flap_down: &[InstanceStatus] = &[Down, Up, OutOfService, Up, OutOfService, Down];
    let control: &[InstanceStatus] = &[OutOfService, Up, OutOfService];
    let cases = [
        ("replay-a", 47_851u16, flap),
        ("replay-b", 47_852, flap),
        ("replay-c", 47_853, flap),
        ("replay-d", 47_855, flap),
        ("replay-e", 47_856, flap_down),
        ("replay-f", 47_857, flap_down),
        ("replay-control", 47_854, control),
    ];
    let mut handles = Vec::new();
    for (app, port, seq) in cases {
        let handle = EurekaRegistration::builder(app, "127.0.0.1", port)
            .server_urls(&format!("{},{}", one.url(), two.url()))
            .renew_interval(Duration::from_millis(500))
            .lease_duration(Duration::from_secs(30))
            .build()
            .expect("registration")
            .start()
            .await
            .expect("start");
        handles.push((app, handle, seq));
    }
    // Every registration replicated to peer two before the sequences.
    for _ in 0..100 {
        let mut all = true;
        for (app, _, _) in &handles {
            all &= two.statuses(app).await.iter().any(|(_, s)| s == "UP");
        }
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (_, handle, seq) in &handles {
        for s in seq.iter() {
            handle.set_status(*s).await.expect("status");
        }
        // The next app's sequence in a batch of its own.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Renewals every 500 ms: resends are due 1 s and 5 s after the last
    // change, each replicated within the next batch.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut served = Vec::new();
    for (app, handle, _) in &handles {
        let wanted = handle.status().as_str().to_owned();
        let mut wrong = 0;
        for _ in 0..3 {
            for peer in [&one, &two] {
                if peer.statuses(app).await.iter().any(|(_, s)| *s != wanted) {
                    wrong += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        served.push((
            *app,
            wanted,
            wrong,
            one.statuses(app).await,
            two.statuses(app).await,
        ));
    }
    for (_, handle, _) in handles {
        let _ = handle.shutdown().await;
    }
    let wrong: Vec<usize> = served.iter().map(|s| s.2).collect();
    assert_eq!(
        wrong, [0; 7],
        "reads of another status than wanted (of 6 each): {served:#?}"
    );
}
