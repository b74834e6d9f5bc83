//! Live heap held by `EurekaRegistry`'s local copy after deltas stays
//! within the documented metadata bound (2^20 entries: about 40 MiB with
//! shared keys, about 60 MiB with 256 distinct keys per record). Four deltas of 3 900 records x 256 entries, each inside one
//! payload's budget, used to leave 3 993 600 entries and +240.8 MiB held.
//! Its text is bounded by `max_body_bytes` across deltas too.
//! The counting allocator sees the whole process, so the tests of this
//! binary take turns (`SERIAL`).
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use eureka_stub::{Answer, Stub, apps, record};
use tower_ribbon::DiscoveryError;
use tower_ribbon::discovery::eureka::EurekaRegistry;

/// Held by each test: one at a time, so each sees its own allocations.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Live;
static LIVE: AtomicI64 = AtomicI64::new(0);
/// The most bytes live at once since it was last reset to `LIVE`.
static PEAK: AtomicI64 = AtomicI64::new(0);

fn grew(size: i64) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: forwards to `System`, counting the bytes live.
unsafe impl GlobalAlloc for Live {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size() as i64);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        grew(n as i64 - l.size() as i64);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Live = Live;

fn metadata256(tag: usize) -> String {
    let entries: Vec<String> = (0..256).map(|k| format!(r#""k{k}":"{tag}""#)).collect();
    format!("{{{}}}", entries.join(","))
}

/// `rounds` refreshes of `registry`; how many were refused with the error
/// `bound` recognises (its bound must be 16 MiB; any other error fails the
/// test). Then a pause for freed memory to settle.
async fn refusals(
    registry: &EurekaRegistry,
    rounds: usize,
    bound: impl Fn(&DiscoveryError) -> Option<usize>,
) -> usize {
    let mut refused = 0;
    for _ in 0..rounds {
        if let Err(e) = registry.refresh_now().await {
            assert_eq!(bound(&e), Some(16 << 20), "unexpected error: {e}");
            refused += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    refused
}

/// A registry over `stub` (fetch interval 1 h; `max_body_bytes` if given)
/// after its full fetch, and the live heap then.
async fn fetched(stub: &Stub, max_body_bytes: Option<usize>) -> (EurekaRegistry, i64) {
    let mut builder = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(60));
    if let Some(max) = max_body_bytes {
        builder = builder.max_body_bytes(max);
    }
    let registry = builder.build().expect("build");
    registry.ready().await.expect("full fetch");
    (registry, LIVE.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_keep_the_copy_within_the_documented_metadata_memory() {
    let _turn = SERIAL.lock().await;
    let stub = Stub::start().await;
    let base = record("BIG", "base", 1000, "UP", "ADDED", "{}");
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps("UP_1_", "BIG", &[base]))],
    );
    let per_delta = 3_900usize;
    let rounds = 4usize;
    let deltas: Vec<Answer> = (1..=rounds)
        .map(|d| {
            let records: Vec<String> = (0..per_delta)
                .map(|i| {
                    record(
                        "BIG",
                        &format!("d{d}-{i}"),
                        2000,
                        "UP",
                        "ADDED",
                        &metadata256(i),
                    )
                })
                .collect();
            Answer::ok(apps(&format!("UP_{}_", 1 + per_delta * d), "BIG", &records))
        })
        .collect();
    stub.set("/eureka/apps/delta", deltas);
    let (registry, before) = fetched(&stub, None).await;
    let mut refused = 0;
    for _ in 0..rounds {
        if registry.refresh_now().await.is_err() {
            refused += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = LIVE.load(Ordering::Relaxed);
    let grown_mib = (after - before) as f64 / (1024.0 * 1024.0);
    let held: usize = registry
        .instances("BIG")
        .iter()
        .map(|i| i.metadata().len())
        .sum();
    println!(
        "metadata entries held {held}, live heap grew {grown_mib:.1} MiB, {refused} deltas refused"
    );
    // 2^20 entries x (40 bytes + an unshared key and a short value): the
    // documented ~60 MiB for keys that are not shared; what one payload
    // may hold, however many deltas arrive.
    assert!(held <= tower_ribbon::discovery::eureka::wire::DEFAULT_MAX_METADATA_ENTRIES);
    assert!(
        grown_mib <= 64.0,
        "the copy grew by {grown_mib:.1} MiB ({held} metadata entries) through {rounds} deltas; documented bound about 60 MiB"
    );
}

/// 8 deltas of 10 new records with one 1 MiB metadata value each (10 MiB
/// per delta, inside the entry bound) against a 16 MiB body bound: the
/// first is taken, the others refused with `RegistryMetadataTooLarge`, and
/// the heap keeps the one delta's text. Before, all 8 were taken: +80.4 MiB
/// live heap, growing with every delta.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_metadata_values_are_bounded_by_the_body_bound_across_deltas() {
    let _turn = SERIAL.lock().await;
    let stub = Stub::start().await;
    let base = record("BIG", "base", 1000, "UP", "ADDED", "{}");
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps("UP_1_", "BIG", &[base]))],
    );
    let value = "x".repeat(1 << 20);
    let per_delta = 10usize;
    let rounds = 8usize;
    let deltas: Vec<Answer> = (1..=rounds)
        .map(|d| {
            let records: Vec<String> = (0..per_delta)
                .map(|i| {
                    let metadata = format!(r#"{{"k":"{value}"}}"#);
                    record("BIG", &format!("d{d}-{i}"), 2000, "UP", "ADDED", &metadata)
                })
                .collect();
            Answer::ok(apps(&format!("UP_{}_", 1 + per_delta * d), "BIG", &records))
        })
        .collect();
    stub.set("/eureka/apps/delta", deltas);
    let (registry, before) = fetched(&stub, Some(16 << 20)).await;
    let refused = refusals(&registry, rounds, |e| match e {
        DiscoveryError::RegistryMetadataTooLarge { limit, .. } => Some(*limit),
        _ => None,
    })
    .await;
    let grown_mib = (LIVE.load(Ordering::Relaxed) - before) as f64 / (1024.0 * 1024.0);
    let instances = registry.instances("BIG");
    assert_eq!((instances.len(), refused), (11, 7));
    assert!(grown_mib <= 16.0, "live heap grew {grown_mib:.1} MiB");
}

/// The sibling of the metadata bound for the copy's other text: 8 deltas
/// of 10 new records each carrying 1 MiB of text outside the metadata (a
/// health check URL; a skipped record's over-long id, which the copy
/// keeps as its key; a status; a record's own app name, which each
/// instance holds), against a 16 MiB body bound. The first
/// delta is taken, the other 7 refused with `RegistryTextTooLarge`, and
/// the heap keeps the one delta's text. Before, only metadata text was
/// bounded across deltas: all 8 were taken (81 records, +80 MiB live heap
/// for each kind), growing with every delta.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_record_text_is_bounded_by_the_body_bound_across_deltas() {
    let _turn = SERIAL.lock().await;
    let long = "x".repeat(1 << 20);
    // Each kind: a record of delta `d`, and the copy's status-count hash
    // after `n` records of the deltas (the base record is UP).
    type Make = fn(&str, &str) -> String;
    type Hash = fn(usize, &str) -> String;
    let up = |n: usize, _: &str| format!("UP_{}_", n + 1);
    let kinds: [(&str, Make, Hash); 4] = [
        (
            "health check URL",
            |id, long| {
                record("BIG", id, 2000, "UP", "ADDED", "{}").replace(
                    r#""metadata":{}"#,
                    &format!(r#""healthCheckUrl":"http://127.0.0.1:2000/{long}","metadata":{{}}"#),
                )
            },
            up,
        ),
        (
            "skipped record's id",
            // With a usable record next to it: a payload whose every
            // record is skipped is refused whole.
            |id, long| {
                let skipped = record("BIG", &format!("{id}-{long}"), 2000, "UP", "ADDED", "{}");
                let usable = record("BIG", id, 2000, "UP", "ADDED", "{}");
                format!("{skipped},{usable}")
            },
            |n, _| format!("UP_{}_", 2 * n + 1),
        ),
        (
            "status",
            |id, long| record("BIG", id, 2000, &format!("S{long}"), "ADDED", "{}"),
            |n, long| format!("S{}_{n}_UP_1_", long.to_ascii_uppercase()),
        ),
        (
            "record's app name",
            |id, long| record(&format!("A{id}{long}"), id, 2000, "UP", "ADDED", "{}"),
            up,
        ),
    ];
    for (kind, make, hash) in kinds {
        let stub = Stub::start().await;
        let base = record("BIG", "base", 1000, "UP", "ADDED", "{}");
        stub.set(
            "/eureka/apps",
            vec![Answer::ok(apps("UP_1_", "BIG", &[base]))],
        );
        let (per_delta, rounds) = (10usize, 8usize);
        let deltas: Vec<Answer> = (1..=rounds)
            .map(|d| {
                let records: Vec<String> = (0..per_delta)
                    .map(|i| make(&format!("d{d}-{i}"), &long))
                    .collect();
                Answer::ok(apps(&hash(per_delta * d, &long), "BIG", &records))
            })
            .collect();
        stub.set("/eureka/apps/delta", deltas);
        let (registry, before) = fetched(&stub, Some(16 << 20)).await;
        let refused = refusals(&registry, rounds, |e| match e {
            DiscoveryError::RegistryTextTooLarge { limit, .. } => Some(*limit),
            _ => None,
        })
        .await;
        let grown_mib = (LIVE.load(Ordering::Relaxed) - before) as f64 / (1024.0 * 1024.0);
        println!("{kind}: live heap grew {grown_mib:.1} MiB, {refused} deltas refused");
        assert_eq!(refused, 7, "{kind}");
        assert!(
            grown_mib <= 16.0,
            "{kind}: live heap grew {grown_mib:.1} MiB"
        );
        drop(registry);
        drop(stub);
    }
}

/// A long application name costs its length once, not once per record:
/// the copy's bounds were checked with a map keyed by a copy of the app
/// name per record, so a payload of 200 records under a 1 MiB app name
/// (1.1 MiB of JSON, a few KiB gzipped) held 200 MiB at once while it was
/// checked, a delta as much; and at the body bound, 100 000 records under
/// a 100 MiB name would have asked for 10 TB. Now the peak stays within a
/// few copies of the payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_app_name_is_not_copied_per_record() {
    let _turn = SERIAL.lock().await;
    let stub = Stub::start().await;
    let name = format!("A{}", "x".repeat(1 << 20));
    let records = |prefix: &str| -> Vec<String> {
        (0..200)
            .map(|i| record("A", &format!("{prefix}{i}"), 2000, "UP", "ADDED", "{}"))
            .collect()
    };
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps("UP_200_", &name, &records("f")))],
    );
    stub.set(
        "/eureka/apps/delta",
        vec![Answer::ok(apps("UP_400_", &name, &records("d")))],
    );
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(60))
        .build()
        .expect("build");
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    registry.ready().await.expect("full fetch");
    let full_mib = (PEAK.load(Ordering::Relaxed) - before) as f64 / (1024.0 * 1024.0);
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    registry.refresh_now().await.expect("delta");
    let delta_mib = (PEAK.load(Ordering::Relaxed) - before) as f64 / (1024.0 * 1024.0);
    println!("peak over the full fetch {full_mib:.1} MiB, over the delta {delta_mib:.1} MiB");
    assert_eq!(registry.stats().instances, 400);
    assert!(
        full_mib <= 16.0 && delta_mib <= 16.0,
        "full {full_mib:.1} MiB, delta {delta_mib:.1} MiB"
    );
}
