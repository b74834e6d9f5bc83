//! `EurekaRegistry`'s local copy is bounded in metadata across deltas, not
//! only per payload: a delta that would take the copy's metadata entries
//! past `max_metadata_entries` is refused with
//! `DiscoveryError::RegistryMetadataFull` and the last good copy kept.
//! (Two deltas of 3 900 records x 256 entries, each inside the payload
//! budget, used to leave 1 996 800 entries held against a bound of
//! 1 048 576.)
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;
#[path = "common/log_capture.rs"]
mod log_capture;

use std::time::Duration;

use eureka_stub::{Answer, Stub, apps, record};
use tower_ribbon::discovery::eureka::EurekaRegistry;
use tower_ribbon::discovery::eureka::wire::{DEFAULT_MAX_METADATA_ENTRIES, WireError};
use tower_ribbon::error::DiscoveryError;

/// A metadata object of `n` entries.
fn metadata(n: usize, tag: usize) -> String {
    let entries: Vec<String> = (0..n).map(|k| format!(r#""k{k}":"{tag}""#)).collect();
    format!("{{{}}}", entries.join(","))
}

/// A delta adding `count` records of `n` metadata entries each, ids
/// `{prefix}-{i}`, with the hash of `base + count` UP records.
fn delta(prefix: &str, count: usize, n: usize, base: usize) -> Answer {
    let records: Vec<String> = (0..count)
        .map(|i| {
            record(
                "BIG",
                &format!("{prefix}-{i}"),
                2000,
                "UP",
                "ADDED",
                &metadata(n, i),
            )
        })
        .collect();
    Answer::ok(apps(&format!("UP_{}_", base + count), "BIG", &records))
}

fn held(registry: &EurekaRegistry) -> usize {
    registry
        .instances("BIG")
        .iter()
        .map(|i| i.metadata().len())
        .sum()
}

/// At the default bound: the first delta (998 400 entries) fits, the
/// second would double it and is refused; the copy after the first is
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_large_delta_is_refused_at_the_default_bound() {
    let stub = Stub::start().await;
    let base = record("BIG", "base", 1000, "UP", "ADDED", "{}");
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps("UP_1_", "BIG", &[base]))],
    );
    let per_delta = 3_900; // x 256 = 998 400 entries, inside one payload's budget
    stub.set(
        "/eureka/apps/delta",
        vec![
            delta("d1", per_delta, 256, 1),
            delta("d2", per_delta, 256, 1 + per_delta),
        ],
    );
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(60))
        .build()
        .expect("build");
    registry.ready().await.expect("full fetch");
    registry.refresh_now().await.expect("delta 1 fits");
    assert_eq!(held(&registry), per_delta * 256);
    let second = registry.refresh_now().await;
    let held_after = held(&registry);
    assert!(
        held_after <= DEFAULT_MAX_METADATA_ENTRIES,
        "the copy holds {held_after} metadata entries after 2 deltas; bound {DEFAULT_MAX_METADATA_ENTRIES}"
    );
    assert!(second.is_err(), "delta 2 refused");
    assert_eq!(
        registry.instances("BIG").len(),
        1 + per_delta,
        "the copy after delta 1 is kept"
    );
}

/// With a bound set on the builder: the refusal is typed and names the
/// bound and the size; the copy is kept; a delta that fits is applied
/// again afterwards, and a full fetch over the bound is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_bound_is_a_setting_and_its_refusal_is_typed() {
    let stub = Stub::start().await;
    let base = record("BIG", "base", 1000, "UP", "ADDED", &metadata(10, 0));
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps("UP_1_", "BIG", &[base]))],
    );
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .max_metadata_entries(100)
        .build()
        .expect("build");
    registry.ready().await.expect("full fetch");

    // 10 + 4 x 20 = 90 entries: fits.
    stub.set("/eureka/apps/delta", vec![delta("a", 4, 20, 1)]);
    registry.refresh_now().await.expect("90 entries fit");
    assert_eq!(registry.stats().metadata_entries, 90);

    // 90 + 20 = 110: refused, typed, copy kept.
    stub.set("/eureka/apps/delta", vec![delta("b", 1, 20, 5)]);
    let err = registry
        .refresh_now()
        .await
        .expect_err("110 entries do not fit");
    assert!(
        matches!(
            err,
            DiscoveryError::RegistryMetadataFull {
                limit: 100,
                would_hold: 110
            }
        ),
        "{err:?}"
    );
    let stats = registry.stats();
    assert_eq!(
        (stats.instances, stats.metadata_entries),
        (5, 90),
        "{stats:?}"
    );
    assert_eq!(stats.consecutive_failures, 1);

    // A delta that replaces a record with a smaller one fits.
    let smaller = record("BIG", "a-0", 2000, "UP", "MODIFIED", &metadata(5, 0));
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(apps("UP_5_", "BIG", &[smaller]))],
    );
    registry.refresh_now().await.expect("75 entries fit");
    let stats = registry.stats();
    assert_eq!(
        (stats.metadata_entries, stats.consecutive_failures),
        (75, 0),
        "{stats:?}"
    );

    // The reconcile's full fetch keeps the bound too: a registry whose full
    // payload is over it is refused and the copy kept.
    let big: Vec<String> = (0..3)
        .map(|i| {
            record(
                "BIG",
                &format!("f{i}"),
                3000,
                "UP",
                "ADDED",
                &metadata(40, i),
            )
        })
        .collect();
    stub.set("/eureka/apps", vec![Answer::ok(apps("UP_3_", "BIG", &big))]);
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(apps("UP_9_", "BIG", &[]))],
    );
    let err = registry
        .refresh_now()
        .await
        .expect_err("full payload over the bound");
    let over_budget = |e: &DiscoveryError| {
        matches!(
            e,
            DiscoveryError::Decode {
                source: WireError::TooMuchMetadata { limit: 100 },
                ..
            } | DiscoveryError::RegistryMetadataFull { limit: 100, .. }
        )
    };
    assert!(over_budget(&err), "{err:?}");
    assert_eq!(registry.stats().metadata_entries, 75);
    assert_eq!(registry.stats().hash_mismatches, 1);
}

/// A delta whose `apps__hashcode` is 1 MiB long (and never matches) is
/// logged as a short quote: the hash-mismatch line is not 1 MiB at every
/// delta fetch. The copy is fetched again in full, as for any mismatch.
#[tokio::test]
async fn a_huge_delta_hash_makes_a_short_log_line() {
    let stub = Stub::start().await;
    let base = record("BIG", "base", 1000, "UP", "ADDED", "{}");
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps("UP_1_", "BIG", &[base]))],
    );
    let hash = format!("UP_1_\\r\\n{}", "x".repeat(1 << 20));
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(apps(&hash, "BIG", &[]))],
    );
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .expect("build");
    registry.ready().await.expect("full fetch");
    let (guard, logs) = log_capture::capture(tracing::Level::INFO);
    registry
        .refresh_now()
        .await
        .expect("full fetch after the mismatch");
    drop(guard);
    let text = logs.text();
    assert!(text.contains("hash mismatch"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.len() < 400, "a log line of {} bytes", text.len());
    assert_eq!(registry.instances("BIG").len(), 1);
}
