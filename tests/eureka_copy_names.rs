//! Application names against the Eureka registry copy's text bound
//! (helper 132, stop 49): the copy keys each app by its name upper-cased,
//! and that key was not counted, so long names (a delta at a time) or a
//! name whose upper case is longer (`ΐ`: 2 bytes, 6 upper-cased) held more
//! than the body bound (`max_body_bytes`) says a copy may. The key now
//! counts once per app held.
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use eureka_stub::{Answer, Stub, record};
use tower_ribbon::discovery::eureka::EurekaRegistry;

/// One test at a time, so the counting allocator sees one test's heap.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Live;
static LIVE: AtomicI64 = AtomicI64::new(0);
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

const MIB: f64 = 1024.0 * 1024.0;

/// `{"applications":{...,"application":[{"name":<name>,"instance":[..]}]}}`
fn apps_of(hash: &str, list: &[(String, Vec<String>)]) -> String {
    let apps: Vec<String> = list
        .iter()
        .map(|(name, records)| format!(r#"{{"name":"{name}","instance":[{}]}}"#, records.join(",")))
        .collect();
    format!(
        r#"{{"applications":{{"versions__delta":"1","apps__hashcode":"{hash}","application":[{}]}}}}"#,
        apps.join(",")
    )
}

/// The module docs of `EurekaRegistry` promise that all the text the copy
/// keeps is bounded by `max_body_bytes` across deltas
/// (`RegistryTextTooLarge`). The application *name* (the copy's key) is
/// not counted when the records say `"app":"A"`: each delta below adds
/// one new application whose name is 1 MiB, with one tiny record. With a
/// 4 MiB body bound, 24 deltas (each 1 MiB, each with a matching hash)
/// are all taken and the copy holds 24 applications.
///
/// Measured before the fix: 0 of 24 deltas refused, 25 applications
/// held, live heap +24.4 MiB (6x the 4 MiB bound), growing by 1 MiB per
/// delta without end; after: 21 refused, 4 held, +3.4 MiB. Expected: refused with `RegistryTextTooLarge` once the copy's
/// text passes 4 MiB (at most 4 of the 24 taken, heap growth <= 4 MiB
/// plus slack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_application_names_are_bounded_by_the_body_bound_across_deltas() {
    let _turn = SERIAL.lock().await;
    let stub = Stub::start().await;
    let base = record("BIG", "base", 1000, "UP", "ADDED", "{}");
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps_of(
            "UP_1_",
            &[("BIG".to_owned(), vec![base])],
        ))],
    );
    let long = "X".repeat(1 << 20);
    let rounds = 24usize;
    let deltas: Vec<Answer> = (1..=rounds)
        .map(|d| {
            let rec = record("A", &format!("d{d}"), 2000, "UP", "ADDED", "{}");
            Answer::ok(apps_of(
                &format!("UP_{}_", d + 1),
                &[(format!("N{d}{long}"), vec![rec])],
            ))
        })
        .collect();
    stub.set("/eureka/apps/delta", deltas);
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(60))
        .max_body_bytes(4 << 20)
        .build()
        .expect("build");
    registry.ready().await.expect("full fetch");
    let before = LIVE.load(Ordering::Relaxed);
    let mut refused = 0;
    for _ in 0..rounds {
        if registry.refresh_now().await.is_err() {
            refused += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let grown = (LIVE.load(Ordering::Relaxed) - before) as f64 / MIB;
    let stats = registry.stats();
    println!(
        "refused {refused} of {rounds} deltas, {} applications, {} records, live heap +{grown:.1} MiB",
        stats.applications, stats.instances
    );
    assert!(
        stats.applications <= 5 && grown <= 6.0,
        "the copy holds {} applications of 1 MiB names: +{grown:.1} MiB against a 4 MiB body bound ({refused} deltas refused)",
        stats.applications
    );
}

/// The same uncounted key, in one full fetch, with Unicode: the copy keys
/// an application by its name upper-cased with Unicode rules, and
/// `ΐ` (U+0390, 2 bytes) upper-cases to three characters (6 bytes). One
/// `/apps` of 3.5 MiB (1.75 M x `ΐ` as the name, one record with
/// `"app":"A"`) under a 4 MiB body bound is taken, and the copy then
/// holds a 10.5 MiB key: more text than any payload within the bound
/// can carry, which the docs say is refused (`RegistryTextTooLarge`).
///
/// Measured before the fix: the full fetch succeeds, live heap +10.5 MiB
/// held by the copy (2.6x the 4 MiB bound); after: refused
/// (`RegistryTextTooLarge`), +0.4 MiB. Expected: refused, or at most the 4 MiB
/// the bound allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upper_cased_application_name_is_bounded_by_the_body_bound() {
    let _turn = SERIAL.lock().await;
    let stub = Stub::start().await;
    let name = "\u{0390}".repeat(1_750_000);
    let rec = record("A", "only", 2000, "UP", "ADDED", "{}");
    let body = apps_of("UP_1_", &[(name, vec![rec])]);
    assert!(body.len() < 4 << 20);
    stub.set("/eureka/apps", vec![Answer::ok(body)]);
    let before = LIVE.load(Ordering::Relaxed);
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(60))
        .max_body_bytes(4 << 20)
        .build()
        .expect("build");
    let first = registry.ready().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let grown = (LIVE.load(Ordering::Relaxed) - before) as f64 / MIB;
    let stats = registry.stats();
    println!(
        "full fetch {:?}, {} applications, live heap +{grown:.1} MiB",
        first.as_ref().map_err(|e| e.to_string()),
        stats.applications
    );
    assert!(
        grown <= 5.0,
        "a 3.5 MiB payload left the copy holding +{grown:.1} MiB against a 4 MiB body bound"
    );
}
