//! A drained instance served UP for good by a Eureka peer that held the
//! registrant's own UP override from an earlier undrain: a real two-peer
//! cluster whose peers replicate through proxies the test can cut (a
//! partition). A drain and an undrain (both taken by both peers), then a
//! partition; the app drains at peer one, which restarts (its registry
//! lost; here the instance is cancelled there, which leaves the same) and
//! takes the re-registration with OUT_OF_SERVICE in its body.
//! Past the expiry of a status update's replication (Eureka's
//! `maxTimeForReplication`, 30 s by default, 5 s here) the
//! partition heals: peer two took peer one's replicated registration but
//! kept its UP override (a registration's override is taken only where
//! none exists), so Eureka's `OverrideExistsRule` served the instance UP
//! there, 40 of 40 reads, for good; the crate's read-backs go to the
//! server that took the heartbeat only (helper 176, 3 of 3 runs; without
//! the earlier undrain both peers ended drained). Now the undrain removes
//! the override (`DELETE …/status?value=UP`, Spring Cloud's
//! `CANCEL_OVERRIDE`) before its status call, which is then a no-op, so
//! no UP override outlives it. A second registration starts as STARTING,
//! then UP (the usual start): the STARTING registration left no override, so the
//! UP call stored one, with the same end; now a registration's body
//! carries a status other than UP as its `overriddenStatus` (helper 178).
//! Peers' reports: an UP set by a status call hides the instance's own
//! later status until the override is deleted
//! (<https://github.com/Netflix/eureka/issues/717>; the `DELETE` came with
//! <https://github.com/Netflix/eureka/issues/389>); an override missing at
//! one peer (<https://github.com/Netflix/eureka/issues/908>). About 45 s,
//! half of it starting two JVMs; run in `eureka_registration`'s
//! binary, beside its other cluster tests.

use std::time::Duration;

use crate::support::eureka::EurekaFixture;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::EurekaRegistration;

/// A TCP proxy to `target`; while `cut` is true, it accepts and swallows
/// everything (nothing reaches the target, nothing is answered); every
/// change of `cut` drops the connections it holds.
async fn proxy(listener: TcpListener, target: u16, cut: watch::Receiver<bool>) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let mut cut = cut.clone();
        tokio::spawn(async move {
            let now_cut = *cut.borrow_and_update();
            if now_cut {
                let mut sink = [0u8; 4096];
                loop {
                    tokio::select! {
                        n = inbound.read(&mut sink) => if matches!(n, Ok(0) | Err(_)) { return },
                        _ = cut.changed() => return,
                    }
                }
            }
            let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.changed() => {}
            }
        });
    }
}

fn listed(id: &str, status: &str) -> Vec<(String, String)> {
    vec![(id.to_owned(), status.to_owned())]
}

/// The history before the partition: a drain and an undrain, or a start
/// as STARTING and then UP.
#[derive(Clone, Copy, PartialEq)]
enum Before {
    Undrain,
    Started,
}

/// Two registrations (one per history) on one two-peer cluster, drained
/// during one partition across one loss at peer one; the statuses read
/// at both peers after the heal, per registration.
async fn run(apps: [(&'static str, u16, Before); 2]) -> Option<Vec<Vec<Vec<(String, String)>>>> {
    // Proxies first: each peer replicates to the other through one.
    let to = [
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ];
    let to_ports = [
        to[0].local_addr().unwrap().port(),
        to[1].local_addr().unwrap().port(),
    ];
    // A status update's replication expires after 5 s, not Eureka's
    // default 30 s (`maxTimeForReplication`), so the partition that
    // outlasts it is short.
    let [one, two] = EurekaFixture::start_cluster_with(
        |i, _| format!("http://127.0.0.1:{}/eureka/", to_ports[1 - i]),
        &[("EUREKA_SERVER_MAXTIMEFORREPLICATION", "5000")],
    )?;
    let (cut_tx, cut_rx) = watch::channel(false);
    let [to_one, to_two] = to;
    tokio::spawn(proxy(to_one, one.port(), cut_rx.clone()));
    tokio::spawn(proxy(to_two, two.port(), cut_rx));
    let settle = |app: &'static str, want: Vec<(String, String)>| {
        let (one, two) = (&one, &two);
        async move {
            for _ in 0..300 {
                if one.statuses(app).await == want && two.statuses(app).await == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{app} never settled at {want:?}");
        }
    };
    let mut handles = Vec::new();
    for (app, port, before) in apps {
        let id = format!("127.0.0.1:{app}:{port}");
        let handle = EurekaRegistration::builder(app, "127.0.0.1", port)
            .server_urls(&format!("{},{}", one.url(), two.url()))
            .request_timeout(Duration::from_secs(2))
            .renew_interval(Duration::from_secs(600))
            .lease_duration(Duration::from_secs(1800))
            .initial_status(if before == Before::Started {
                InstanceStatus::Starting
            } else {
                InstanceStatus::Up
            })
            .build()
            .expect("registration")
            .start()
            .await
            .expect("registered");
        if before == Before::Started {
            settle(app, listed(&id, "STARTING")).await;
            handle.set_status(InstanceStatus::Up).await.expect("up");
        } else {
            settle(app, listed(&id, "UP")).await;
            // A rolling deploy's drain and undrain, both taken by both peers.
            handle
                .set_status(InstanceStatus::OutOfService)
                .await
                .expect("drain");
            settle(app, listed(&id, "OUT_OF_SERVICE")).await;
            handle
                .set_status(InstanceStatus::Up)
                .await
                .expect("undrain");
        }
        settle(app, listed(&id, "UP")).await;
        handles.push((app, id, handle));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The peers lose each other; the apps drain (taken by peer one).
    cut_tx.send_replace(true);
    for (app, id, handle) in &handles {
        handle
            .set_status(InstanceStatus::OutOfService)
            .await
            .expect("drain at one");
        assert_eq!(one.statuses(app).await, listed(id, "OUT_OF_SERVICE"));
    }
    // Peer one loses the instances during the partition: cancelled there,
    // as a restart (its registry lost) or an expired lease leaves it (the
    // cancel's replication expires with the partition).
    for (app, id, _) in &handles {
        one.delete(app, id).await;
    }
    for (app, id, handle) in &handles {
        assert_eq!(one.statuses(app).await, Vec::new(), "lost at one");
        handle
            .renew_now()
            .await
            .expect("404, registered again at one");
        assert_eq!(one.statuses(app).await, listed(id, "OUT_OF_SERVICE"));
    }
    // The partition lasts past the replication task expiry, renewals
    // going on at one meanwhile.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (_, _, handle) in &handles {
            handle
                .renew_now()
                .await
                .expect("renewed during the partition");
        }
    }
    // The partition heals.
    cut_tx.send_replace(false);
    // Renewals (each replicated to two) over 5 s.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (_, _, handle) in &handles {
            handle.renew_now().await.expect("renewed");
        }
    }
    let mut seen = vec![Vec::new(), Vec::new()];
    for _ in 0..8 {
        for ((app, _, _), seen) in handles.iter().zip(&mut seen) {
            for peer in [&one, &two] {
                let s = peer.statuses(app).await;
                if !seen.contains(&s) {
                    seen.push(s);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (app, _, handle) in handles {
        eprintln!("{app}: stats {:?}", handle.stats());
        assert_eq!(handle.status(), InstanceStatus::OutOfService);
        handle.shutdown().await.expect("cancelled");
    }
    Some(seen)
}

/// The first registration was drained and undrained before the partition
/// (helper 176); the second started as STARTING, then UP: the STARTING
/// registration left no override, so the UP call stored one (helper 178).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_undrain_or_start_leaves_no_up_override_to_serve_a_drain_up() {
    let Some(seen) = run([
        ("drain-partition", 47_811, Before::Undrain),
        ("start-partition", 47_812, Before::Started),
    ])
    .await
    else {
        return;
    };
    println!("statuses read at the two peers: {seen:?}");
    assert_eq!(
        seen,
        [
            vec![listed("127.0.0.1:drain-partition:47811", "OUT_OF_SERVICE")],
            vec![listed("127.0.0.1:start-partition:47812", "OUT_OF_SERVICE")],
        ]
    );
}
