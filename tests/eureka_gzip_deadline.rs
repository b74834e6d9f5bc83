//! Gzip inflation of a Eureka answer stops at the fetch's deadline. The
//! fetch's timeout cannot cancel work on tokio's blocking pool, and
//! inflation time is not proportional to the text: miniz_oxide rebuilds
//! its fixed Huffman tables at each empty deflate block (10 bits; about
//! 2 µs per body byte in a release build, 13 µs in a debug one) and
//! zeroes its state at each empty gzip member (20 bytes; 2.5 µs, 16 µs).
//! Before, the fetch returned `Timeout` while the inflation went on: a
//! 500 KB body of empty blocks burned 6 s of CPU after a 200 ms timeout,
//! four such fetches in a row 24 s, and 150 000 empty members between
//! `[` and `]` (inflated twice: the last trailer understates the text)
//! 3.7 s after a 1 s timeout (helper 172; debug build). A body at the
//! default 128 MiB bound is about 280 s of inflation in a release build.
//! Now inflation checks the deadline every 1 KiB of body. The same class
//! in the inflater itself:
//! [Frommi/miniz_oxide#198](https://github.com/Frommi/miniz_oxide/issues/198)
//! ("chained degenerate blocks bypass decompress_to_vec_with_limit":
//! per-block table building is decoupled from the output's size, so an
//! output limit bounds no time; dynamic blocks too).
//!
//! CPU is this process's (user + system), read from `/proc/self/stat`;
//! the cases run one after another in one test so none counts another's.
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

use std::io::Write;
use std::time::{Duration, Instant};

use eureka_stub::{Answer, Stub};
use tower_ribbon::discovery::InstanceSource;
use tower_ribbon::discovery::eureka::EurekaSource;

fn member(text: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text).unwrap();
    enc.finish().unwrap()
}

/// A single gzip member whose deflate stream is `blocks` empty
/// fixed-Huffman blocks (10 bits each: BFINAL, BTYPE = 01, end of block).
fn empty_fixed_blocks(blocks: usize) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let (mut acc, mut n) = (0u64, 0u32);
    for i in 0..blocks {
        let last = u64::from(i + 1 == blocks);
        acc |= (last | 1 << 1) << n;
        n += 10;
        while n >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            n -= 8;
        }
    }
    if n > 0 {
        out.push(acc as u8);
    }
    out.extend([0u8; 8]); // CRC-32 of no bytes, ISIZE 0
    out
}

/// CPU time (user + system) of this process.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// CPU burned from now until the process is idle (a 1 s window with less
/// than 50 ms), up to 60 s.
async fn cpu_until_idle() -> Duration {
    let (start, mut last) = (cpu(), cpu());
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu();
        if now - last < Duration::from_millis(50) {
            break;
        }
        last = now;
    }
    cpu() - start
}

/// Fetches `body` as `user-service`'s answer `times` times with `timeout`;
/// returns the last error's text and the CPU burned after the last fetch
/// returned.
async fn fetch_then_idle(body: Vec<u8>, timeout: Duration, times: usize) -> (String, Duration) {
    let stub = Stub::start().await;
    stub.set("/eureka/apps/USER-SERVICE", vec![Answer::ok(body)]);
    let source = EurekaSource::builder()
        .server_url(stub.url())
        .request_timeout(timeout)
        .build()
        .unwrap();
    let mut last = String::new();
    for _ in 0..times {
        let t = Instant::now();
        let result = source.fetch("user-service").await;
        assert!(t.elapsed() < timeout + Duration::from_secs(2));
        last = format!("{:?}", result.expect_err("no application in the answer"));
    }
    (last, cpu_until_idle().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_inflation_stops_at_the_fetch_deadline() {
    let blocks = empty_fixed_blocks(400_000);
    let (error, after) = fetch_then_idle(blocks.clone(), Duration::from_millis(200), 1).await;
    println!("500 KB of empty blocks, 200 ms timeout: {error}; CPU after: {after:?}");
    assert!(
        after < Duration::from_millis(500),
        "{after:?} of CPU after the fetch returned"
    );

    let (error, after) = fetch_then_idle(blocks, Duration::from_millis(200), 4).await;
    println!("the same, 4 fetches in a row: {error}; CPU after: {after:?}");
    assert!(
        after < Duration::from_millis(500),
        "{after:?} of CPU after the fetches returned"
    );

    let mut members = member(b"[");
    members.extend(member(b"").repeat(150_000));
    members.extend(member(b"]"));
    let (error, after) = fetch_then_idle(members, Duration::from_secs(1), 1).await;
    println!("150 000 empty members, 1 s timeout: {error}; CPU after: {after:?}");
    assert!(
        after < Duration::from_millis(500),
        "{after:?} of CPU after the fetch returned"
    );
    assert!(
        error.contains("Deadline") || error.contains("Timeout"),
        "{error}"
    );
}
