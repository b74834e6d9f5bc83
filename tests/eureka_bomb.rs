//! Decoding bombs: a tiny gzip body that inflates to an `instance` array of
//! 4 million zeros, served by a stub on 127.0.0.1; and records whose
//! metadata costs memory out of proportion to the body (one key repeated
//! 256 times, hundreds of distinct keys), decoded directly.
//!
//! Issue 11 measured this payload against the old decoder: +3.7 GB, 13 s on
//! the async worker, one warning per element, a 2 s fetch timeout that could
//! not fire and a single-threaded runtime that stalled. Here each fetch must
//! end within the fetch timeout, allocate at most [`MEMORY_BOUND`] bytes
//! beyond what was live before (counted by a global counting allocator),
//! log at most one warning, and leave a ticker task on the same
//! current-thread runtime ticking.
#![cfg(feature = "eureka")]

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower_ribbon::DiscoveryError;
use tower_ribbon::discovery::InstanceSource;
use tower_ribbon::discovery::eureka::wire::WireError;
use tower_ribbon::discovery::eureka::{EurekaRegistry, EurekaSource};

#[path = "common/peak_alloc.rs"]
mod peak_alloc;

/// The allocation counters are process-wide: the tests of this file run one
/// at a time so one test's allocations never count against another's bound.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[global_allocator]
static GLOBAL: peak_alloc::Peak = peak_alloc::Peak;

/// Zeros in the `instance` array (8 MB inflated, about 8 KB gzipped).
const ZEROS: usize = 4_000_000;
/// The fetch (request) timeout.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Heap growth allowed during one fetch: 1.25 × the inflated body (8 MB).
const MEMORY_BOUND: usize = 5 * 2 * ZEROS / 4;

fn gzip(json: &str) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(json.as_bytes()).expect("gzip");
    Bytes::from(enc.finish().expect("gzip"))
}

fn zeros() -> String {
    let mut s = String::with_capacity(2 * ZEROS);
    for i in 0..ZEROS {
        s.push_str(if i == 0 { "0" } else { ",0" });
    }
    s
}

/// The bomb for `/apps/{APP}` and for `/apps`.
fn bombs() -> (Bytes, Bytes) {
    let zeros = zeros();
    let app = format!(r#"{{"application":{{"name":"USER-SERVICE","instance":[{zeros}]}}}}"#);
    let apps = format!(
        r#"{{"applications":{{"versions__delta":"1","apps__hashcode":"UP_1_","application":[{{"name":"USER-SERVICE","instance":[{zeros}]}}]}}}}"#
    );
    (gzip(&app), gzip(&apps))
}

/// A stub on its own thread and runtime (so its allocations and its work do
/// not touch the runtime under test): `/apps` gets `apps`, anything else
/// `app`, gzipped with `Content-Encoding: gzip`.
fn stub(app: Bytes, apps: Bytes) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (app, apps) = (app.clone(), apps.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let body = if req.uri().path().ends_with("/apps") {
                            apps.clone()
                        } else {
                            app.clone()
                        };
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .header("content-encoding", "gzip")
                                    .body(Full::new(body))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    format!("http://{addr}/eureka")
}

/// A ticker on the runtime under test; returns the longest gap between two
/// ticks while `work` ran, the work's result, its duration and the heap
/// growth at its peak.
async fn measure<T>(work: impl std::future::Future<Output = T>) -> (Duration, T, Duration, usize) {
    let max_gap = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (max_gap, stop) = (max_gap.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let gap = last.elapsed().as_micros() as usize;
                max_gap.fetch_max(gap, Ordering::Relaxed);
                last = Instant::now();
            }
        })
    };
    tokio::task::yield_now().await;
    let base = peak_alloc::live();
    peak_alloc::set_peak(base);
    let started = Instant::now();
    let out = work.await;
    let took = started.elapsed();
    let grew = peak_alloc::peak().saturating_sub(base);
    stop.store(true, Ordering::Relaxed);
    ticker.await.expect("ticker");
    let gap = Duration::from_micros(max_gap.load(Ordering::Relaxed) as u64);
    (gap, out, took, grew)
}

fn is_decode(err: &DiscoveryError, want: fn(&WireError) -> bool) -> bool {
    match err {
        DiscoveryError::Decode { source, .. } => want(source),
        _ => false,
    }
}

fn check(what: &str, gap: Duration, took: Duration, grew: usize) {
    eprintln!(
        "{what}: {took:?}, heap +{} KiB at peak, longest tick gap {gap:?}",
        grew / 1024
    );
    assert!(took < TIMEOUT, "{what}: took {took:?}");
    assert!(grew < MEMORY_BOUND, "{what}: heap grew {grew} bytes");
    assert!(
        gap < Duration::from_millis(500),
        "{what}: ticker stalled {gap:?}"
    );
}

/// The 4-million-zero bomb through `EurekaSource` and through
/// `EurekaRegistry`'s full fetch: refused by the element bound
/// (`TooManyInstances`), fast, in bounded memory, the runtime free.
#[tokio::test(flavor = "current_thread")]
async fn zero_bomb_is_refused_quickly_in_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let (app, apps) = bombs();
    assert!(
        app.len() < 64 * 1024,
        "the bomb is tiny: {} bytes",
        app.len()
    );
    let url = stub(app, apps);

    let source = EurekaSource::builder()
        .server_url(&url)
        .request_timeout(TIMEOUT)
        .build()
        .expect("source");
    let (gap, result, took, grew) = measure(source.fetch("user-service")).await;
    let err = result.expect_err("a bomb is not an instance list");
    assert!(
        is_decode(&err, |e| matches!(
            e,
            WireError::TooManyInstances { limit: 100_000 }
        )),
        "{err:?}"
    );
    check("source", gap, took, grew);

    let registry = EurekaRegistry::builder()
        .server_url(&url)
        .request_timeout(TIMEOUT)
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .expect("registry");
    // Let the background first fetch fail first, so the measured fetch is
    // the only one running.
    let first = registry
        .ready()
        .await
        .expect_err("the first fetch is refused too");
    assert!(
        is_decode(&first, |e| matches!(e, WireError::TooManyInstances { .. })),
        "{first:?}"
    );
    let (gap, result, took, grew) = measure(registry.refresh_now()).await;
    let err = result.expect_err("a bomb is not a registry");
    assert!(
        is_decode(&err, |e| matches!(e, WireError::TooManyInstances { .. })),
        "{err:?}"
    );
    check("registry", gap, took, grew);
    assert_eq!(registry.stats().instances, 0);
}

/// The bomb gzipped in three members (the last one empty), so the last
/// trailer's size field says 0: the inflated body is still held once, in
/// a buffer of its size, within the same bound. Before, the buffer sized
/// from that trailer grew by doubling: heap +12 416 KiB at peak for the
/// 8 MB body (+9 766 KiB allowed); now +8 015 KiB.
#[tokio::test(flavor = "current_thread")]
async fn a_bomb_in_several_gzip_members_is_inflated_into_one_exact_buffer() {
    let _serial = SERIAL.lock().await;
    let zeros = zeros();
    let json = format!(r#"{{"application":{{"name":"USER-SERVICE","instance":[{zeros}]}}}}"#);
    let (head, tail) = json.split_at(json.len() / 2);
    let members: Vec<u8> = [gzip(head), gzip(tail), gzip("")].concat();
    let url = stub(Bytes::from(members.clone()), Bytes::from(members));
    let source = EurekaSource::builder()
        .server_url(&url)
        .request_timeout(TIMEOUT)
        .build()
        .expect("source");
    let (gap, result, took, grew) = measure(source.fetch("user-service")).await;
    let err = result.expect_err("a bomb is not an instance list");
    assert!(
        is_decode(&err, |e| matches!(
            e,
            WireError::TooManyInstances { limit: 100_000 }
        )),
        "{err:?}"
    );
    check("members", gap, took, grew);
}

/// With the element bound lifted, the same bomb runs into the request
/// timeout instead: the fetch ends at the timeout (the decoder checks the
/// same deadline and stops), and the ticker keeps ticking meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn without_the_element_bound_the_timeout_still_ends_the_fetch() {
    let _serial = SERIAL.lock().await;
    let (app, apps) = bombs();
    let url = stub(app, apps);
    let timeout = Duration::from_millis(300);
    let source = EurekaSource::builder()
        .server_url(&url)
        .request_timeout(timeout)
        .max_instances(usize::MAX)
        .build()
        .expect("source");
    let (gap, result, took, _) = measure(source.fetch("user-service")).await;
    let err = result.expect_err("a bomb is not an instance list");
    eprintln!("unbounded: {took:?}, longest tick gap {gap:?}: {err}");
    // Either the runtime's timeout or the decoder's own deadline check
    // ends it, whichever sees the deadline first.
    assert!(
        err.is_timeout() || is_decode(&err, |e| matches!(e, WireError::Deadline)),
        "{err:?}"
    );
    assert!(took < timeout + Duration::from_millis(200), "took {took:?}");
    assert!(gap < Duration::from_millis(200), "ticker stalled {gap:?}");
}

/// An application whose `records` records each carry `entries` metadata
/// entries, with distinct keys (`k0`, `k1`, ...) or one key repeated.
fn metadata_payload(records: usize, entries: usize, distinct: bool) -> String {
    let meta: Vec<String> = (0..entries)
        .map(|i| {
            if distinct {
                format!(r#""k{i}":"""#)
            } else {
                r#""a":"""#.to_owned()
            }
        })
        .collect();
    let record = format!(
        r#"{{"hostName":"h","port":1,"metadata":{{{}}}}}"#,
        meta.join(",")
    );
    format!(
        r#"{{"application":{{"name":"A","instance":[{}]}}}}"#,
        vec![record; records].join(",")
    )
}

/// Heap growth (bytes kept, peak) while `work` runs.
fn heap<T>(work: impl FnOnce() -> T) -> (T, usize, usize) {
    let before = peak_alloc::live();
    peak_alloc::set_peak(before);
    let out = work();
    let kept = peak_alloc::live().saturating_sub(before);
    let peak = peak_alloc::peak().saturating_sub(before);
    (out, kept, peak)
}

/// A record repeating one metadata key 256 times keeps one entry and no
/// slack. Found by an attack: each such instance kept room for 256 entries
/// (10 KB), so a 290 KB gzip body (127 MiB inflated, 72 730 records) kept
/// 724 MB; this payload (8 000 records, 14.6 MB, 32 KB gzipped) kept
/// 84 MB, 5.7 times the body. Now it keeps 2.0 MB.
#[tokio::test(flavor = "current_thread")]
async fn a_repeated_metadata_key_keeps_one_entry_and_no_slack() {
    use tower_ribbon::discovery::eureka::wire;
    let _serial = SERIAL.lock().await;
    let json = metadata_payload(8_000, 256, false);
    let (app, kept, peak) = heap(|| wire::parse_application(json.as_bytes()));
    let app = app.expect("payload");
    eprintln!(
        "repeated key: body {} B, kept {kept} B, peak {peak} B",
        json.len()
    );
    assert_eq!(app.instances.len(), 8_000);
    assert_eq!(app.instances[0].instance.metadata().len(), 1);
    // Each instance keeps its own fields and one entry: well under the
    // body, where it kept 5.7 times the body before.
    assert!(
        kept < json.len() / 2,
        "kept {kept} B for a {} B body",
        json.len()
    );
    assert!(
        peak < json.len(),
        "peak {peak} B for a {} B body",
        json.len()
    );
}

/// The metadata of a payload's records together is bounded: records of
/// 256 distinct keys each (about 7 bytes in the body, 40 and more in
/// memory per entry) are refused once they pass the budget, keeping the
/// last good list; under it they decode whole.
#[tokio::test(flavor = "current_thread")]
async fn metadata_past_the_payload_budget_refuses_the_payload() {
    use tower_ribbon::discovery::eureka::wire::{self, ParseOptions};
    let _serial = SERIAL.lock().await;
    let options = ParseOptions::default().with_max_metadata_entries(1_000);
    let three = metadata_payload(3, 256, true);
    let app = wire::parse_application_with(three.as_bytes(), options).expect("768 entries");
    assert_eq!(app.instances.len(), 3);
    assert_eq!(app.instances[2].instance.metadata().len(), 256);
    let four = metadata_payload(4, 256, true);
    let refused = wire::parse_application_with(four.as_bytes(), options).unwrap_err();
    assert!(
        matches!(refused, WireError::TooMuchMetadata { limit: 1_000 }),
        "{refused:?}"
    );
    assert_eq!(
        refused.to_string(),
        "more than 1000 metadata entries in one payload"
    );

    // The default budget (2^20 entries) against 8 192 such records (2^21
    // entries, 20 MB of JSON): refused after about half of them, at a
    // peak of 62 MB (about 60 bytes per entry kept, key copies included),
    // where the whole payload would take twice that and 100 000 records
    // of 256 entries 1.5 GB.
    let json = metadata_payload(8_192, 256, true);
    let started = Instant::now();
    let (refused, _, peak) = heap(|| wire::parse_application(json.as_bytes()));
    eprintln!(
        "distinct keys: body {} B, refused after {:?}, peak {peak} B",
        json.len(),
        started.elapsed()
    );
    assert!(matches!(refused, Err(WireError::TooMuchMetadata { limit }) if limit == 1 << 20));
    assert!(peak < 96 << 20, "peak {peak} B");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
