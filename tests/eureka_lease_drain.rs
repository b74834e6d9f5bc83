//! A lease call's answer is its status: a heartbeat answered `200` whose
//! body then stalls is accepted at once (helper 144).
//!
//! The body of a lease call's answer is read only so the connection can be
//! reused. It was read inside the call's timeout, so a server answering a
//! heartbeat `200 OK` with `Content-Length: 100` and no body turned it into
//! `Timeout { after: 1s }`: a failure counted, the next server tried (a
//! second heartbeat), the call treated as maybe delivered. Now the body is
//! drained beside the call, within one request timeout, 64 KiB at most.
//!
//! A raw stub on 127.0.0.1 (a real Eureka server cannot be told to stall
//! its answer's body).
#![cfg(feature = "eureka")]

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tower_ribbon::discovery::eureka::EurekaRegistration;

/// Raw stub: POST -> 204; PUT -> `200`, `Content-Length: 100`, then no body
/// (the connection held open). Counts the PUTs.
fn stub(puts: Arc<AtomicUsize>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let puts = Arc::clone(&puts);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut req = Vec::new();
                loop {
                    let end = loop {
                        if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while req.len() < end + len {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    req.drain(..end + len);
                    if head.starts_with("put") {
                        puts.fetch_add(1, Ordering::SeqCst);
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n");
                        // Body never comes; hold the connection.
                        std::thread::sleep(Duration::from_secs(30));
                        return;
                    }
                    if s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}/eureka")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_answered_200_is_accepted_though_its_body_stalls() {
    let puts = Arc::new(AtomicUsize::new(0));
    let url = stub(Arc::clone(&puts));
    let registration = EurekaRegistration::builder("svc", "127.0.0.1", 9000)
        .server_urls(&url)
        .instance_id("s1")
        .renew_interval(Duration::from_secs(3600))
        .lease_duration(Duration::from_secs(7200))
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = registration.start().await.expect("registered");
    let t = Instant::now();
    let result = handle.renew_now().await;
    let took = t.elapsed();
    println!(
        "renew_now: {result:?} after {took:?}; heartbeats sent {}",
        puts.load(Ordering::SeqCst)
    );
    assert!(
        result.is_ok(),
        "server answered the heartbeat 200 at once; observed {result:?} after {took:?} ({} PUTs)",
        puts.load(Ordering::SeqCst)
    );
    assert_eq!(puts.load(Ordering::SeqCst), 1, "one heartbeat sent");
    assert_eq!(handle.stats().failures, 0);
}
