//! `EurekaRegistration` against the real Spring Cloud Netflix Eureka server
//! (tests/eureka-server), restarted through the fixture (a restart loses
//! the registry, as in production).
//!
//! Issue 11: after a registry restart the instance re-registered with the
//! status it was built with (a STARTING-then-UP instance stayed STARTING;
//! a draining OUT_OF_SERVICE instance came back UP and took traffic), and a
//! shutdown racing a re-registration returned `Ok` and left the instance
//! registered until its lease expired.
//!
//! Public bug reports these tests cover:
//! - <https://github.com/Netflix/eureka/issues/1116>: after an eviction the
//!   instance re-registered as STARTING although an operator had set it UP;
//! - <https://github.com/spring-cloud/spring-cloud-netflix/issues/26>: apps
//!   did not register again after the Eureka server restarted;
//! - <https://github.com/Netflix/eureka/issues/1398> (and
//!   <https://github.com/Netflix/eureka/pull/767>): after a registration
//!   with OUT_OF_SERVICE, a later UP was ignored; here UP set after an
//!   OUT_OF_SERVICE re-registration must show;
//! - <https://github.com/Netflix/eureka/issues/1110>: a deleted instance
//!   came back with its next heartbeat; after `shutdown` no renewal may
//!   register it again;
//! - <https://github.com/Netflix/eureka/issues/955>: after an operator
//!   cleared an override, the instance stayed UNKNOWN: its re-registration
//!   carried an older `lastDirtyTimestamp` than the server's copy.

mod support;

#[path = "eureka_registration/drain_partition.rs"]
mod drain_partition;

use std::time::Duration;

use support::eureka::EurekaFixture;
use tower_ribbon::InstanceStatus;
use tower_ribbon::discovery::eureka::{EurekaRegistration, RegistrationHandle};

const APP: &str = "status-keeper";

/// Polls the server until `app` lists exactly `want`, for at most 10 s.
async fn wait_for(eureka: &EurekaFixture, app: &str, want: &[(String, &str)]) {
    if let Err(last) = poll_until(eureka, app, want, Duration::from_secs(10)).await {
        panic!(
            "{app}: want {want:?}, server lists {last:?}\n{}",
            eureka.warnings(8)
        );
    }
}

/// Polls `to` until `app` lists exactly `want`, a change `from` replicates
/// to it, for at most 30 s. Eureka sends a replication batch again when it
/// timed out at the peer (`ReplicationTaskProcessor`: congestion, retried
/// after `serverUnavailableSleepTimeMs`, 1 s) until the task expires
/// (`PeerEurekaNode`: `maxTimeForReplication`, 30 s), so on a loaded host a
/// change reaches the other peer within 30 s or never (the project's CI
/// once saw a peer just resumed from SIGSTOP take over 10 s).
async fn wait_for_replication(
    to: &EurekaFixture,
    from: &EurekaFixture,
    app: &str,
    want: &[(String, &str)],
) {
    if let Err(last) = poll_until(to, app, want, Duration::from_secs(30)).await {
        panic!(
            "{app}: want {want:?} replicated, server {} lists {last:?}, server {} lists {:?}\n{}\n{}",
            to.port(),
            from.port(),
            from.statuses(app).await,
            to.warnings(8),
            from.warnings(8)
        );
    }
}

/// Polls every 100 ms until `app` lists exactly `want`, for at most
/// `bound`; the last listing if it never did.
async fn poll_until(
    eureka: &EurekaFixture,
    app: &str,
    want: &[(String, &str)],
    bound: Duration,
) -> Result<(), Vec<(String, String)>> {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(id, s)| (id.clone(), (*s).to_owned()))
        .collect();
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let last = eureka.statuses(app).await;
        if last == want {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// STARTING, then UP: a restart keeps UP. Then OUT_OF_SERVICE: a restart
/// keeps OUT_OF_SERVICE.
#[tokio::test]
async fn status_survives_a_registry_restart() {
    let Some(mut eureka) = EurekaFixture::start() else {
        return;
    };
    let handle = EurekaRegistration::builder(APP, "127.0.0.1", 19_501)
        .server_url(eureka.url())
        .request_timeout(Duration::from_secs(20))
        .initial_status(InstanceStatus::Starting)
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered");
    let id = "127.0.0.1:status-keeper:19501".to_owned();
    wait_for(&eureka, APP, &[(id.clone(), "STARTING")]).await;
    handle.set_status(InstanceStatus::Up).await.expect("UP");
    wait_for(&eureka, APP, &[(id.clone(), "UP")]).await;

    eureka.restart();
    assert!(eureka.statuses(APP).await.is_empty(), "a restart forgets");
    handle
        .renew_now()
        .await
        .expect("404, then registered again");
    wait_for(&eureka, APP, &[(id.clone(), "UP")]).await;

    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("OUT_OF_SERVICE");
    wait_for(&eureka, APP, &[(id.clone(), "OUT_OF_SERVICE")]).await;
    eureka.restart();
    handle.renew_now().await.expect("registered again");
    wait_for(&eureka, APP, &[(id.clone(), "OUT_OF_SERVICE")]).await;
    assert_eq!(handle.stats().registrations, 3);
    // Netflix/eureka#1398: UP after an OUT_OF_SERVICE registration shows.
    handle
        .set_status(InstanceStatus::Up)
        .await
        .expect("UP again");
    wait_for(&eureka, APP, &[(id.clone(), "UP")]).await;

    handle.shutdown().await.expect("cancelled");
    wait_for(&eureka, APP, &[]).await;
}

/// Renewals every 100 ms after a restart keep re-registering; a shutdown
/// in the middle waits for the registration in flight, then cancels: the
/// server lists nothing afterwards, also after several renew intervals.
#[tokio::test]
async fn shutdown_during_reregistration_leaves_nothing_registered() {
    let Some(mut eureka) = EurekaFixture::start() else {
        return;
    };
    let app = "racer";
    for round in 0..2 {
        let handle = EurekaRegistration::builder(app, "127.0.0.1", 19_600 + round)
            .server_url(eureka.url())
            .request_timeout(Duration::from_secs(20))
            .renew_interval(Duration::from_millis(100))
            .build()
            .expect("registration")
            .start()
            .await
            .expect("registered");
        let id = format!("127.0.0.1:racer:{}", 19_600 + round);
        wait_for(&eureka, app, &[(id.clone(), "UP")]).await;
        eureka.restart();
        // The background renewals now get 404 and re-register; shut down
        // while they do.
        let mut waited = 0;
        while handle.stats().registrations < 2 && waited < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        handle.shutdown().await.expect("cancelled");
        tokio::time::sleep(Duration::from_millis(500)).await;
        wait_for(&eureka, app, &[]).await;
    }
}

/// Two servers that do not replicate; the instance registers while server
/// one is down (so at server two only). Server one is stopped still.
async fn registered_at_two_while_one_was_down(
    app: &str,
    port: u16,
) -> Option<(EurekaFixture, EurekaFixture, RegistrationHandle)> {
    let mut one = EurekaFixture::start()?;
    let two = EurekaFixture::start()?;
    one.stop();
    let handle = EurekaRegistration::builder(app, "127.0.0.1", port)
        .server_urls(&format!("{},{}", one.url(), two.url()))
        .request_timeout(Duration::from_secs(20))
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered at server two");
    Some((one, two, handle))
}

/// Server one was down when the instance registered (so it registered at
/// server two), then came back with an empty registry. A shutdown's cancel
/// got 404 from server one and stopped there ("already gone"), leaving the
/// instance UP at server two, which kept serving it to callers until its
/// lease expired (90 s by default, and Eureka's eviction on top). Now a
/// cancel's 404 moves on to the next server, which may hold the instance;
/// it is success when some server cancelled it or every server said 404.
#[tokio::test]
async fn shutdown_cancels_at_the_server_that_holds_the_instance() {
    let app = "canceller";
    let Some((mut one, two, handle)) = registered_at_two_while_one_was_down(app, 19_701).await
    else {
        return;
    };
    let id = "127.0.0.1:canceller:19701".to_owned();
    wait_for(&two, app, &[(id.clone(), "UP")]).await;
    one.restart();
    assert!(
        one.statuses(app).await.is_empty(),
        "server one starts empty"
    );

    handle.shutdown().await.expect("cancelled");
    let left = two.statuses(app).await;
    assert_eq!(
        left,
        Vec::<(String, String)>::new(),
        "server two still lists it"
    );
    assert!(one.statuses(app).await.is_empty());
}

/// A server that missed a status change (its peer took the change and
/// went down before replicating it; here two servers that do not
/// replicate) holds the instance UP. When renewals fail over to it, its
/// heartbeat answered 200 and the draining instance stayed UP there, the
/// only server left, for as long as renewals went on. Java's heartbeat
/// carries the instance's `lastDirtyTimestamp` (bumped by a status
/// change), and a server with an older copy answers 404, so the client
/// registers again with its current status; the crate now does the same.
#[tokio::test]
async fn a_renewal_failing_over_to_a_server_that_missed_a_status_change_resends_it() {
    let app = "dirty-keeper";
    let id = "127.0.0.1:dirty-keeper:19702".to_owned();
    // Lease calls stick to the server that answered the last one, so a
    // peer is made to miss calls by pausing it (a hung peer keeps its
    // registry), not by a restart.
    let Some(one) = EurekaFixture::start() else {
        return;
    };
    let Some(two) = EurekaFixture::start() else {
        return;
    };
    let handle = EurekaRegistration::builder(app, "127.0.0.1", 19_702)
        .server_urls(&format!("{},{}", one.url(), two.url()))
        .request_timeout(Duration::from_secs(3))
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered at server one");
    wait_for(&one, app, &[(id.clone(), "UP")]).await;
    // Server one hangs: the renewal fails over to server two, whose 404
    // registers the instance there. UP at both.
    one.pause();
    handle.renew_now().await.expect("registered at server two");
    one.resume();
    wait_for(&two, app, &[(id.clone(), "UP")]).await;
    assert_eq!(one.statuses(app).await, [(id.clone(), "UP".to_owned())]);
    assert_eq!(handle.stats().registrations, 2);
    // The same status again is no change: the next heartbeat is no 404.
    handle
        .set_status(InstanceStatus::Up)
        .await
        .expect("UP again");
    handle.renew_now().await.expect("renewed");
    assert_eq!(handle.stats().registrations, 2);
    // The status change reaches server two only (lease calls stay there).
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("OUT_OF_SERVICE");
    wait_for(&two, app, &[(id.clone(), "OUT_OF_SERVICE")]).await;
    assert_eq!(one.statuses(app).await, [(id.clone(), "UP".to_owned())]);

    // Server two hangs: the renewal fails over to server one.
    two.pause();
    handle.renew_now().await.expect("renewed at server one");
    assert_eq!(
        one.statuses(app).await,
        [(id.clone(), "OUT_OF_SERVICE".to_owned())],
        "server one serves the draining instance UP"
    );
    two.resume();

    // The other way: UP again, taken by server one only; server two keeps
    // its OUT_OF_SERVICE override. A renewal failing over to it registers
    // again with UP, which the override turns OUT_OF_SERVICE: the UP is
    // sent again after that registration too.
    handle.set_status(InstanceStatus::Up).await.expect("UP");
    wait_for(&one, app, &[(id.clone(), "UP")]).await;
    assert_eq!(
        two.statuses(app).await,
        [(id.clone(), "OUT_OF_SERVICE".to_owned())]
    );
    // The UP goes out once the registrant has read the override back as
    // its own: right after that registration, or, when the read fails (a
    // peer just resumed, under load), at a later renewal, which reads it
    // again (a failed read sends nothing: it may be an operator's).
    one.pause();
    let mut renewals = 0;
    while renewals < 5 {
        handle.renew_now().await.expect("renewed at server two");
        renewals += 1;
        if two.statuses(app).await == [(id.clone(), "UP".to_owned())] {
            break;
        }
    }
    println!("server two served UP after {renewals} renewal(s)");
    assert_eq!(
        two.statuses(app).await,
        [(id.clone(), "UP".to_owned())],
        "server two keeps the instance out of service after {renewals} renewals"
    );
    one.resume();
    handle.shutdown().await.expect("cancelled");
}

/// A first server that hangs (accepts, never answers) cost every lease
/// call the request timeout before the second server answered: lease
/// calls started at the first configured server each time, though fetches
/// kept the server that answered last. A drain to OUT_OF_SERVICE was late
/// by a timeout. Now lease calls start at the server that answered the
/// last one, as Java's registration client keeps its delegate: the hung
/// server sees the registration's request only.
#[tokio::test]
async fn lease_calls_stay_at_the_server_that_answered_past_a_hung_one() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    let app = "hung-first";
    let id = "127.0.0.1:hung-first:19703".to_owned();
    let Some(two) = EurekaFixture::start() else {
        return;
    };
    // The hung peer: counts the HTTP requests it reads, answers none.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hung_url = format!("http://{}/eureka", hung.local_addr().expect("addr"));
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = hung.accept().await {
            let counted = counted.clone();
            held.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = Vec::new();
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let lines = seen.windows(11).filter(|w| w == b" HTTP/1.1\r\n").count();
                    counted.fetch_add(lines, Ordering::SeqCst);
                    let keep = seen.len().saturating_sub(10);
                    seen.drain(..keep);
                }
                // Held open (not answered) until the peer closes it.
                drop(socket);
            }));
        }
    });
    let handle = EurekaRegistration::builder(app, "127.0.0.1", 19_703)
        .server_urls(&format!("{hung_url},{}", two.url()))
        .request_timeout(Duration::from_secs(3))
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered at server two");
    wait_for(&two, app, &[(id.clone(), "UP")]).await;
    for _ in 0..3 {
        handle.renew_now().await.expect("renewed at server two");
    }
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("OUT_OF_SERVICE");
    wait_for(&two, app, &[(id.clone(), "OUT_OF_SERVICE")]).await;
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "requests reaching the hung server (one per lease call before)"
    );
    assert_eq!(handle.stats().registrations, 1);
    assert_eq!(handle.stats().renewals, 3);
    handle.shutdown().await.expect("cancelled");
    wait_for(&two, app, &[]).await;
}

/// A hung peer that wakes undid a drain. In a replicating cluster, peer one
/// hangs (SIGSTOP) holding the instance's UP: the UP times out there and
/// fails over to peer two, and the drain to DOWN goes to two. Peer one
/// wakes, applies the old UP (Eureka applies a status update whatever its
/// `lastDirtyTimestamp`) and replicates it to two. Heartbeats carry the
/// stored `lastDirtyTimestamp`, so they got 200 and two served the
/// draining instance UP for good (still UP after 3 renewals). Now a status
/// call that got no answer arms read-backs for the next 10 renewals: the
/// first renewal after the late UP landed reads UP at two and sends DOWN
/// again. The UP is an override's removal first (`DELETE …/status`,
/// see `status.rs`), which sets UP only where an override exists: the
/// instance is drained (OUT_OF_SERVICE, an override at both peers) before
/// peer one hangs, so the late removal sets UP there and replicates. The
/// drain after the UP is a second OUT_OF_SERVICE: a DOWN now goes in a
/// registration's body, which leaves peer two no override for the late
/// removal to replace (served DOWN throughout).
#[tokio::test]
async fn a_late_status_update_from_a_hung_peer_does_not_undo_a_drain() {
    let app = "late-writer";
    let id = "127.0.0.1:late-writer:19704".to_owned();
    let Some([one, two]) = EurekaFixture::start_cluster() else {
        return;
    };
    let handle = EurekaRegistration::builder(app, "127.0.0.1", 19_704)
        .server_urls(&format!("{},{}", one.url(), two.url()))
        .request_timeout(Duration::from_secs(2))
        // Renewals by `renew_now` only.
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1800))
        .initial_status(InstanceStatus::Starting)
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered at peer one");
    wait_for_replication(&two, &one, app, &[(id.clone(), "STARTING")]).await;
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("drained at peer one");
    wait_for_replication(&two, &one, app, &[(id.clone(), "OUT_OF_SERVICE")]).await;

    one.pause();
    handle
        .set_status(InstanceStatus::Up)
        .await
        .expect("UP, taken by peer two after peer one timed out");
    handle
        .set_status(InstanceStatus::OutOfService)
        .await
        .expect("drained again, at peer two");
    wait_for(&two, app, &[(id.clone(), "OUT_OF_SERVICE")]).await;
    one.resume();
    // Peer one applies the UP it held and replicates it to two.
    wait_for_replication(&two, &one, app, &[(id.clone(), "UP")]).await;

    handle.renew_now().await.expect("renewed at peer two");
    wait_for(&two, app, &[(id.clone(), "OUT_OF_SERVICE")]).await;
    wait_for_replication(&one, &two, app, &[(id.clone(), "OUT_OF_SERVICE")]).await;
    for _ in 0..2 {
        handle.renew_now().await.expect("renewed at peer two");
    }
    assert_eq!(
        two.statuses(app).await,
        [(id.clone(), "OUT_OF_SERVICE".to_owned())]
    );
    let stats = handle.stats();
    assert_eq!(
        (stats.registrations, stats.renewals, stats.failures),
        (1, 3, 0)
    );
    handle.shutdown().await.expect("cancelled");
}

/// Eureka keeps a lease as `durationInSecs * 1000` computed in a Java
/// `int` (`Lease`'s constructor), so a lease longer than 2 147 483 s
/// (24.8 days) overflows: 30 days became a negative duration and the
/// server evicted the instance at its next eviction run (every second
/// here), then again after each re-registration. Such a lease is now
/// refused at build; the longest one accepted stays registered.
#[tokio::test]
async fn a_lease_past_javas_int_milliseconds_is_refused_at_build() {
    let builder = |lease: u64, url: &str| {
        EurekaRegistration::builder("long-lease", "127.0.0.1", 19_705)
            .server_url(url)
            .renew_interval(Duration::from_secs(600))
            .lease_duration(Duration::from_secs(lease))
    };
    for lease in [2_147_484, 30 * 86_400, u64::from(u32::MAX), u64::MAX] {
        let err = builder(lease, "http://127.0.0.1:1/eureka")
            .build()
            .expect_err("refused");
        assert_eq!(err.key(), Some("lease duration"), "{lease}");
        assert_eq!(
            err.to_string(),
            format!(
                "invalid setting `lease duration`: {lease} s is longer than 2147483 s \
                 (Eureka keeps a lease in milliseconds in a Java int, which a longer one overflows: \
                 the server evicts the instance at once)"
            )
        );
    }
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let app = "long-lease";
    let id = "127.0.0.1:long-lease:19705".to_owned();
    let handle = builder(2_147_483, &eureka.url())
        .build()
        .expect("the longest lease")
        .start()
        .await
        .expect("registered");
    wait_for(&eureka, app, &[(id.clone(), "UP")]).await;
    // Evictions run every second: three of them leave it registered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(eureka.statuses(app).await, [(id, "UP".to_owned())]);
    handle
        .renew_now()
        .await
        .expect("renewed, not registered again");
    assert_eq!(handle.stats().registrations, 1);
    handle.shutdown().await.expect("cancelled");
}

/// Netflix/eureka#955: an operator sets OUT_OF_SERVICE, then deletes the
/// override (`DELETE …/status`), both stamped with the operator's clock
/// (`lastDirtyTimestamp`, newer than the instance's). The server serves
/// the instance UNKNOWN and answers its heartbeats 404 ("re-register
/// required"). The re-registration carried the instance's old
/// `lastDirtyTimestamp`, so the server kept its newer UNKNOWN copy: after
/// 3 renewals the instance was still UNKNOWN (never routed to again),
/// registered 3 more times, renewed 0 times. Java's client stamps a
/// re-registration with the time (`setIsDirtyWithTime`); the crate now
/// does too: the first renewal registers it UP again, the next renews.
#[tokio::test]
async fn a_reregistration_is_newer_than_an_operators_cleared_override() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let app = "override-cleared";
    let id = "127.0.0.1:override-cleared:19707".to_owned();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).expect("ms"))
            .expect("clock")
    };
    let built_at = now_ms();
    let handle = EurekaRegistration::builder(app, "127.0.0.1", 19_707)
        .server_url(eureka.url())
        // Renewals by `renew_now` only.
        .renew_interval(Duration::from_secs(600))
        .lease_duration(Duration::from_secs(1800))
        .build()
        .expect("registration")
        .start()
        .await
        .expect("registered");
    wait_for(&eureka, app, &[(id.clone(), "UP")]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let operator_at = now_ms();
    assert!(operator_at > built_at);
    let client = reqwest::Client::new();
    let status = format!("{}/apps/OVERRIDE-CLEARED/{id}/status", eureka.url());
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
    wait_for(&eureka, app, &[(id.clone(), "UNKNOWN")]).await;

    handle.renew_now().await.expect("404, registered again");
    assert_eq!(eureka.statuses(app).await, [(id.clone(), "UP".to_owned())]);
    handle.renew_now().await.expect("renewed");
    let stats = handle.stats();
    assert_eq!(
        (stats.registrations, stats.renewals, stats.failures),
        (2, 1, 0)
    );
    assert_eq!(eureka.statuses(app).await, [(id, "UP".to_owned())]);
    handle.shutdown().await.expect("cancelled");
}
