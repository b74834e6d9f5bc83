//! What a dropped `RegistrationHandle` leaves behind, against the real
//! Eureka server: the instance stays listed past its lease duration and is
//! gone within about twice it plus one eviction run, as the handle's docs
//! now say. They said "the lease then expires after its duration"; Eureka
//! keeps a renewed lease about twice its duration (`Lease.renew` stores
//! `now + duration` and `isExpired` adds the duration again; Netflix left
//! it as is, see the comment on `Lease.isExpired`), so with the defaults a
//! crashed instance stays listed up to about 240 s, not 90 s (helper 209).
//!
//! Margins are wide on both sides (the fixture evicts every 1 s): the
//! earliest expiry is 2 × 5 s after the last renewal, at most 500 ms
//! before the drop, so the instance is listed 6.5 s after it; it must be
//! gone 15 s after it (10 s + 1 s eviction + 4 s to spare).
#![cfg(feature = "eureka")]

mod support;

use std::time::{Duration, Instant};

use support::eureka::EurekaFixture;
use tower_ribbon::discovery::eureka::EurekaRegistration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_handles_instance_stays_listed_about_twice_its_lease() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let lease = Duration::from_secs(5);
    let handle = EurekaRegistration::builder("dropped-lease", "127.0.0.1", 20555)
        .server_urls(&eureka.url())
        .renew_interval(Duration::from_millis(500))
        .lease_duration(lease)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    // A few renewals, the last at most 500 ms before the drop.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert!(handle.stats().renewals >= 2, "{:?}", handle.stats());
    drop(handle);
    let dropped = Instant::now();

    // Past the lease's duration and one eviction run: still listed.
    tokio::time::sleep(lease + Duration::from_millis(1_500)).await;
    let listed = eureka.statuses("dropped-lease").await;
    assert_eq!(
        listed.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["UP"],
        "{:?} after the drop",
        dropped.elapsed()
    );
    // Gone within twice the lease, one eviction run and a margin.
    let mut gone = None;
    while dropped.elapsed() < Duration::from_secs(15) {
        if eureka.statuses("dropped-lease").await.is_empty() {
            gone = Some(dropped.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = gone.expect("evicted within 15 s of the drop");
    assert!(gone >= lease + Duration::from_millis(1_500), "{gone:?}");
}
