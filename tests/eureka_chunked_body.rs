//! A registry body sent in 1-byte chunks (`1\r\nX\r\n`), within
//! `max_body_bytes`, costs about its own size in heap, through
//! `EurekaSource::fetch` and `EurekaRegistry`'s refresh (helper 143).
//!
//! Before, the body was gathered with `http-body-util`'s `Limited` +
//! `collect`, which bound the payload bytes but kept every frame as its own
//! `Bytes`, each pointing into hyper's read buffer, chunk framing included:
//! a 512 KiB body held +29 525 KiB of heap at its peak through the source
//! (57 times) and +26 056 KiB through the registry (50 times), so the
//! default 128 MiB bound let one small-looking response cost gigabytes.
//! Now each frame is copied into one buffer as it arrives: +384 KiB for a
//! 256 KiB body (1.5 times, the peak of the buffer's last doubling).
//!
//! A raw stub on 127.0.0.1 (a real Eureka server cannot be told to chunk
//! its answer so). Each fetch is measured after a first one, so the
//! client's one-time setup is not counted.
#![cfg(feature = "eureka")]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use tower_ribbon::discovery::InstanceSource;
use tower_ribbon::discovery::eureka::{EurekaRegistry, EurekaSource};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[path = "common/peak_alloc.rs"]
mod peak_alloc;

#[global_allocator]
static GLOBAL: peak_alloc::Peak = peak_alloc::Peak;

/// The body bound of the clients here (256 KiB), and the body's size.
const LIMIT: usize = 256 << 10;

/// Heap growth allowed at the peak of one fetch: twice the body.
const ALLOWED: usize = 2 * LIMIT;

/// Raw stub: answers every request with `body` in 1-byte chunks.
fn stub(body: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Pre-build the wire (so the stub allocates before measuring).
    let mut wire = Vec::with_capacity(body.len() * 6 + 256);
    wire.extend_from_slice(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    for b in &body {
        wire.extend_from_slice(b"1\r\n");
        wire.push(*b);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let wire = wire.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let mut req = Vec::new();
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    if s.write_all(&wire).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}/eureka")
}

fn app_body(len: usize) -> Vec<u8> {
    // Valid JSON of exactly `len` bytes: an app with one instance, padded with spaces.
    let head = br#"{"application":{"name":"SVC","instance":[{"instanceId":"a","hostName":"127.0.0.1","app":"SVC","ipAddr":"127.0.0.1","status":"UP","port":{"$":8080,"@enabled":"true"}}]}}"#;
    let mut v = head.to_vec();
    v.resize(len, b' ');
    v
}

#[tokio::test(flavor = "current_thread")]
async fn a_fetch_of_one_byte_chunks_costs_about_the_body() {
    let _serial = SERIAL.lock().await;
    let body = app_body(LIMIT - 16);
    let url = stub(body);
    let source = EurekaSource::builder()
        .server_url(&url)
        .request_timeout(Duration::from_secs(8))
        .max_body_bytes(LIMIT)
        .build()
        .unwrap();
    source.fetch("svc").await.expect("first fetch");
    let base = peak_alloc::live();
    peak_alloc::set_peak(base);
    let started = Instant::now();
    let result = source.fetch("svc").await;
    let took = started.elapsed();
    let grew = peak_alloc::peak().saturating_sub(base);
    eprintln!(
        "result ok={} took {took:?}, heap +{} KiB at peak for a {} KiB body bound",
        result.is_ok(),
        grew / 1024,
        LIMIT / 1024
    );
    assert!(result.is_ok(), "{result:?}");
    assert!(
        grew < ALLOWED,
        "heap grew {grew} B ({} x the {LIMIT} B body bound)",
        grew / LIMIT
    );
}

fn apps_body(len: usize) -> Vec<u8> {
    let head = br#"{"applications":{"versions__delta":"1","apps__hashcode":"UP_1_","application":[{"name":"SVC","instance":[{"instanceId":"a","hostName":"127.0.0.1","app":"SVC","ipAddr":"127.0.0.1","status":"UP","port":{"$":8080,"@enabled":"true"}}]}]}}"#;
    let mut v = head.to_vec();
    v.resize(len, b' ');
    v
}

/// The same through `EurekaRegistry`'s background fetch (`refresh_now`).
#[tokio::test(flavor = "current_thread")]
async fn a_registry_refresh_of_one_byte_chunks_costs_about_the_body() {
    let _serial = SERIAL.lock().await;
    let url = stub(apps_body(LIMIT - 16));
    let registry = EurekaRegistry::builder()
        .server_url(&url)
        .request_timeout(Duration::from_secs(8))
        .max_body_bytes(LIMIT)
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    registry.ready().await.expect("first fetch");
    let base = peak_alloc::live();
    peak_alloc::set_peak(base);
    let started = Instant::now();
    let result = registry.refresh_now().await;
    let took = started.elapsed();
    let grew = peak_alloc::peak().saturating_sub(base);
    eprintln!(
        "registry: result {result:?} took {took:?}, heap +{} KiB at peak for a {} KiB body bound",
        grew / 1024,
        LIMIT / 1024
    );
    assert!(result.is_ok(), "{result:?}");
    assert!(
        grew < ALLOWED,
        "heap grew {grew} B ({} x the {LIMIT} B body bound)",
        grew / LIMIT
    );
}
