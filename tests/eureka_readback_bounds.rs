//! The registration's read-back of its own instance (`GET /apps/{APP}/{id}`,
//! after every registration and re-registration) is bounded (helper 208).
//! It decoded the timestamps it reads into a `serde_json::Value`
//! (`first_up.rs`) and an untagged enum (`kept.rs`, buffered whole by
//! serde), so one field holding a long array cost about 25 times the
//! inflated body, under the registry's 128 MiB body limit: 16 400 gzip
//! bytes on the wire (16 MiB inflated) made `start()` grow the heap by
//! 400 MiB, 65 KB by 1 600 MiB. Now the read-back takes at most 1 MiB
//! (`READ_BACK_MAX_BYTES`, inflation stops there) and timestamps are read
//! by a visitor that skips anything else without keeping it.
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;
#[path = "common/peak_alloc.rs"]
mod peak_alloc;

use std::io::Write;
use std::time::{Duration, Instant};

use eureka_stub::{Answer, Stub};
use tower_ribbon::discovery::eureka::EurekaRegistration;

#[global_allocator]
static GLOBAL: peak_alloc::Peak = peak_alloc::Peak;

static MEASURE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const APP: &str = "BOMB";
const ID: &str = "bomb1";

fn gzip(text: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(text).unwrap();
    enc.finish().unwrap()
}

/// `{"instance":{"status":"UP", "<field>":[0,0,...]}}`, gzipped.
fn bomb(field: &str, zeros: usize) -> (Vec<u8>, usize) {
    let mut text =
        format!(r#"{{"instance":{{"instanceId":"{ID}","status":"UP","{field}":["#).into_bytes();
    text.reserve(zeros * 2 + 8);
    for i in 0..zeros {
        if i > 0 {
            text.push(b',');
        }
        text.push(b'0');
    }
    text.extend_from_slice(b"]}}");
    let inflated = text.len();
    (gzip(&text), inflated)
}

async fn run(field: &str, zeros: usize) -> (usize, usize, usize, Duration) {
    let _guard = MEASURE.lock().await;
    let (body, inflated) = bomb(field, zeros);
    let stub = Stub::start().await;
    let ip = format!("/eureka/apps/{APP}/{ID}");
    stub.set(
        &format!("POST /eureka/apps/{APP}"),
        vec![Answer::status(204)],
    );
    stub.set(&format!("GET {ip}"), vec![Answer::ok(body.clone())]);
    stub.set(&format!("PUT {ip}"), vec![Answer::status(200)]);
    stub.set(&format!("PUT {ip}/status"), vec![Answer::status(200)]);
    stub.set(&format!("DELETE {ip}"), vec![Answer::status(200)]);
    let registration = EurekaRegistration::builder(APP, "127.0.0.1", 8080)
        .instance_id(ID)
        .server_urls(&stub.url())
        .renew_interval(Duration::from_secs(3600))
        .lease_duration(Duration::from_secs(7200))
        .request_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let base = peak_alloc::start();
    let started = Instant::now();
    let handle = registration.start().await.expect("registered");
    let took = started.elapsed();
    let grown = peak_alloc::grown(base);
    let _ = handle.shutdown().await;
    (body.len(), inflated, grown, took)
}

/// 8 Mi zeros (16 MiB inflated from 16 KB): refused at 1 MiB, the heap
/// grows by at most 4 MiB (it grew by 400 MiB), and `start()` registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inflated_read_back_stops_at_one_mebibyte() {
    for field in ["lastUpdatedTimestamp", "lastDirtyTimestamp"] {
        let (wire, inflated, grown, took) = run(field, 8 << 20).await;
        eprintln!(
            "{field}: {wire} B on the wire, {inflated} inflated; {took:?}, +{} KiB",
            grown >> 10
        );
        assert!(wire < 20_000, "{wire}");
        assert!(grown < 4 << 20, "{field}: +{} MiB", grown >> 20);
    }
}

/// An array under the limit (about 600 KiB): read and skipped, the heap
/// grows by less than three bodies (the gzip buffer and the text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_array_under_the_limit_is_skipped_not_kept() {
    for field in ["lastUpdatedTimestamp", "lastDirtyTimestamp"] {
        let (wire, inflated, grown, took) = run(field, 300_000).await;
        eprintln!(
            "{field}: {wire} B on the wire, {inflated} inflated; {took:?}, +{} KiB",
            grown >> 10
        );
        assert!(inflated < 1 << 20, "{inflated}");
        assert!(grown < 3 * inflated, "{field}: +{} KiB", grown >> 10);
    }
}
