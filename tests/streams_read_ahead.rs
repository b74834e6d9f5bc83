//! The read-ahead of HTTP/2 responses with no content by their headers
//! but open by their framing, the framing verdict stacked balancers pass
//! on, and trailers ending hyper's and reqwest's bodies (helper 139,
//! against the second version of the framing fix):
//!
//! - three balancers stacked over an HTTP/1 chunked body read to its
//!   trailers: the outermost one counted it until dropped (1, 0, 0 in
//!   flight; 301 ms of latency) → 0, 0, 0;
//! - `TrackedBody::into_parts` gives the frame read ahead (`into_inner`
//!   drops it: 6 of 11 bytes);
//! - `size_hint` counts the frame read ahead (0 where 5 bytes followed);
//! - a reset read ahead is a failure even if the 204 is dropped unread
//!   (recorded as a success before), and ends the attempt at once;
//! - a response whose last frame (data with END_STREAM, or trailers) was
//!   read ahead leaves the count (1 in flight, 305 ms of latency before);
//! - held: frames through the read-ahead arrive whole, in order, and wake
//!   the caller, at depths 1 to 3 and through reqwest.
//!
//! Real servers on 127.0.0.1: a raw HTTP/2 frame writer
//! (`common/raw_h2.rs`) for protocol-violating responses, a raw HTTP/1.1
//! writer for chunked trailers.

#[path = "common/raw_h2.rs"]
mod raw_h2;

#[path = "common/stream_rig.rs"]
mod rig;
use rig::ReqBody;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;

const SVC: &str = "ahead";

/// Frames to write for a request on `stream`: (delay before, bytes). Frames
/// with delay 0 go out in the same write as the previous one.
type Script = Arc<dyn Fn(u32) -> Vec<(u64, Vec<u8>)> + Send + Sync>;

async fn raw_server(script: Script) -> SocketAddr {
    let (port, mut conns) = raw_h2::listen(None).await;
    tokio::spawn(async move {
        while let Some(mut conn) = conns.recv().await {
            let script = script.clone();
            tokio::spawn(async move {
                loop {
                    for ev in conn.drain() {
                        if let raw_h2::Event::Headers { stream, .. } = ev {
                            let frames = script(stream);
                            let mut batch = Vec::new();
                            let mut later = Vec::new();
                            let mut delayed = false;
                            for (delay, f) in frames {
                                if delay > 0 {
                                    delayed = true;
                                }
                                if delayed {
                                    later.push((delay, f));
                                } else {
                                    batch.extend_from_slice(&f);
                                }
                            }
                            conn.send(batch);
                            for (d, f) in later {
                                tokio::time::sleep(Duration::from_millis(d)).await;
                                conn.send(f);
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            });
        }
    });
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn stats<S>(lb: &LoadBalancer<S>, svc: &str) -> (usize, u64, u64, Option<Duration>) {
    let snap = lb.snapshot(svc).unwrap();
    let s = snap.endpoints()[0].stats();
    (s.in_flight(), s.requests(), s.failures(), s.ewma())
}

fn get(host: &str, path: &str) -> Request<ReqBody> {
    Request::get(format!("http://{host}{path}"))
        .header("te", "trailers")
        .body(rig::empty())
        .unwrap()
}

fn reqwest_lb(addr: SocketAddr) -> LoadBalancer<tower_ribbon::ReqwestService> {
    rig::builder(SVC, &[addr])
        .build(tower_ribbon::ReqwestService::new(
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap(),
        ))
        .unwrap()
}

fn rq_get(path: &str) -> Request<String> {
    Request::get(format!("http://{SVC}{path}"))
        .body(String::new())
        .unwrap()
}

/// Reads a body to its end (2 s per frame): data bytes, trailers, error.
async fn drain<B>(body: &mut B) -> (Vec<u8>, Option<http::HeaderMap>, Option<String>)
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut data = Vec::new();
    let mut trailers = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), body.frame()).await {
            Err(_) => return (data, trailers, Some("timed out after 2 s".into())),
            Ok(None) => return (data, trailers, None),
            Ok(Some(Err(e))) => return (data, trailers, Some(e.to_string())),
            Ok(Some(Ok(f))) => match f.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            },
        }
    }
}

fn head(stream: u32, status: u16, headers: &[(&str, &str)], end: bool) -> Vec<u8> {
    raw_h2::headers(stream, &raw_h2::response_head(status, headers), end)
}

// ---------------------------------------------------------------------------
// 1. Three balancers stacked over HTTP/1.1: a chunked 200 with trailers,
//    read up to its trailers frame and held there (as tonic's `Streaming`
//    does). The innermost and middle balancers know the framing (hyper's
//    `Incoming`, `TrackedBody<Incoming>`) and end at the trailers; the
//    outermost sees `TrackedBody<TrackedBody<Incoming>>` and no verdict
//    (the verdict is inserted only when it differs from the headers), so
//    `known` is false and it waits for `is_end_stream`, which hyper's
//    HTTP/1 chunked body never reports before the next read.
// ---------------------------------------------------------------------------

async fn h1_trailers_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..pos + 4);
                        let resp = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\
                                     trailer: x-t\r\n\r\n5\r\nhello\r\n0\r\nx-t: done\r\n\r\n";
                        if s.write_all(resp).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stacked_balancers_over_http1_end_at_the_trailers_frame() {
    let addr = h1_trailers_server().await;
    let inner = rig::builder(SVC, &[addr]).build(rig::h1()).unwrap();
    let mid = rig::over("mid", SVC).build(inner.clone()).unwrap();
    let outer = rig::over("edge", "mid").build(mid.clone()).unwrap();

    // Control: one balancer ends at the trailers frame.
    let mut one = inner.clone().oneshot(get(SVC, "/t")).await.unwrap();
    let mut got_trailers = false;
    while let Some(f) = one.body_mut().frame().await {
        if f.unwrap().is_trailers() {
            got_trailers = true;
            break;
        }
    }
    assert!(
        got_trailers,
        "hyper's HTTP/1 client yields the trailers frame"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let single = stats(&inner, SVC).0;
    drop(one);

    let mut r = outer.clone().oneshot(get("edge", "/t")).await.unwrap();
    let mut bytes = 0;
    let mut trailers = None;
    while let Some(f) = tokio::time::timeout(Duration::from_secs(2), r.body_mut().frame())
        .await
        .expect("a frame within 2 s")
    {
        match f.unwrap().into_data() {
            Ok(d) => bytes += d.len(),
            Err(f) => {
                trailers = f.into_trailers().ok();
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (o, _, _, oe) = stats(&outer, "edge");
    let (m, ..) = stats(&mid, "mid");
    let (i, ..) = stats(&inner, SVC);
    let held_ms = 300;
    drop(r);
    let (_, _, _, oe_after) = stats(&outer, "edge");
    assert_eq!(
        (o, m, i),
        (0, 0, 0),
        "HTTP/1.1 chunked 200 ({bytes} bytes, trailers {:?}) through three stacked balancers, \
         read to its trailers frame and held {held_ms} ms: in_flight outer {o}, middle {m}, \
         inner {i}; expected 0, 0, 0 (one balancer alone: {single}); outer latency EWMA \
         before drop {:?}, after drop {:?} (the hold counted as latency)",
        trailers.as_ref().and_then(|t| t.get("x-t")),
        oe,
        oe_after
    );
}

// ---------------------------------------------------------------------------
// 2. `TrackedBody::into_inner` after a read-ahead: the frame read ahead is
//    dropped, so the caller's bytes differ from the server's.
// ---------------------------------------------------------------------------

fn open_204_script() -> Script {
    Arc::new(|s| {
        vec![
            (0, head(s, 204, &[], false)),
            (0, raw_h2::data(s, b"hello", false)),
            (60, raw_h2::data(s, b" world", true)),
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_parts_after_a_read_ahead_keeps_every_byte() {
    let addr = raw_server(open_204_script()).await;
    let mut rows = Vec::new();
    // Control: reading the tracked body gives every byte.
    let lb = rig::builder(SVC, &[addr]).build(rig::h2c()).unwrap();
    let mut r = lb.request(get(SVC, "/x")).await.unwrap();
    let (tracked, _, err) = drain(r.body_mut()).await;
    if tracked != b"hello world" || err.is_some() {
        rows.push(format!(
            "hyper-util h2c 204 (DATA \"hello\", then \" world\" END_STREAM): tracked body read \
             {:?} (err {err:?}), expected \"hello world\"",
            String::from_utf8_lossy(&tracked)
        ));
    }
    let r = lb.request(get(SVC, "/x")).await.unwrap();
    let (first, mut inner) = r.into_body().into_parts();
    let mut bytes = first_bytes(first);
    let (rest, _, err) = drain(&mut inner).await;
    bytes.extend_from_slice(&rest);
    if bytes != b"hello world" {
        rows.push(format!(
            "hyper-util h2c 204 (server sent DATA \"hello\" (5 bytes) with the HEADERS, then \" \
             world\" END_STREAM after 60 ms, 11 bytes in all): into_parts() then the frame and the rest \
             gave {} bytes {:?} (err {err:?}), expected 11 bytes \"hello world\"",
            bytes.len(),
            String::from_utf8_lossy(&bytes)
        ));
    }
    let rq = reqwest_lb(addr);
    let r = rq.request(rq_get("/x")).await.unwrap();
    let (first, mut inner) = r.into_body().into_parts();
    let mut bytes = first_bytes(first);
    let (rest, _, err) = drain(&mut inner).await;
    bytes.extend_from_slice(&rest);
    if bytes != b"hello world" {
        rows.push(format!(
            "reqwest h2 204 (same stream, 11 bytes): into_parts() then the frame and the rest gave {} \
             bytes {:?} (err {err:?}), expected 11 bytes \"hello world\"",
            bytes.len(),
            String::from_utf8_lossy(&bytes)
        ));
    }
    assert!(rows.is_empty(), "{rows:#?}");
}

/// The bytes of a frame taken with `into_parts`.
fn first_bytes<E>(first: Option<Result<http_body::Frame<Bytes>, E>>) -> Vec<u8> {
    first
        .and_then(Result::ok)
        .and_then(|f| f.into_data().ok())
        .map_or_else(Vec::new, |d| d.to_vec())
}

// ---------------------------------------------------------------------------
// 3. `size_hint` after a read-ahead: hyper's body subtracted the frame read
//    ahead from its content length, the tracked body hands that frame out
//    still, but reports the inner hint alone.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_hint_after_a_read_ahead_counts_the_frame_held() {
    let addr = raw_server(Arc::new(|s| {
        vec![
            (0, head(s, 204, &[("content-length", "5")], false)),
            (0, raw_h2::data(s, b"hello", false)),
            (60, raw_h2::data(s, b"", true)),
        ]
    }))
    .await;
    // Without the balancer: hyper's own body says exactly 5.
    let plain = rig::h2c()
        .request(get(&addr.to_string(), "/x"))
        .await
        .unwrap();
    let ph = plain.body().size_hint();
    let (pbytes, ..) = drain(&mut plain.into_body()).await;
    let lb = rig::builder(SVC, &[addr]).build(rig::h2c()).unwrap();
    let mut r = lb.request(get(SVC, "/x")).await.unwrap();
    let h = r.body().size_hint();
    let end = r.body().is_end_stream();
    let (bytes, _, err) = drain(r.body_mut()).await;
    assert!(
        h.lower() <= bytes.len() as u64 && h.upper().is_none_or(|u| u >= bytes.len() as u64),
        "h2 204 with content-length: 5, DATA \"hello\" with the HEADERS, END_STREAM 60 ms \
         later: balancer's body size_hint (lower {}, upper {:?}, is_end_stream {end}) then \
         yielded {} bytes (err {err:?}); expected a hint bounding the 5 bytes still to come \
         (hyper's body alone: lower {}, upper {:?}, then {} bytes)",
        h.lower(),
        h.upper(),
        bytes.len(),
        ph.lower(),
        ph.upper(),
        pbytes.len()
    );
}

// ---------------------------------------------------------------------------
// 4. A reset read ahead: the balancer holds the error, but a caller that
//    drops the 204 unread (nobody reads a 204) has it recorded as a
//    success, and until then it counts in flight on a dead stream.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_read_ahead_is_a_failure_even_if_the_204_is_dropped_unread() {
    let addr = raw_server(Arc::new(|s| {
        vec![(0, head(s, 204, &[], false)), (0, raw_h2::reset(s, 2))]
    }))
    .await;
    let mut rows = Vec::new();
    // Control: a caller reading it gets the error and the failure counts.
    let lb = rig::builder(SVC, &[addr]).build(rig::h2c()).unwrap();
    let mut r = lb.request(get(SVC, "/x")).await.unwrap();
    let (bytes, _, err) = drain(r.body_mut()).await;
    drop(r);
    let (inf, req, fail, _) = stats(&lb, SVC);
    if err.is_none() || fail != 1 {
        rows.push(format!(
            "h2 204 + RST_STREAM(INTERNAL_ERROR), read: {} bytes, error {err:?}; requests {req}, \
             failures {fail}, in_flight {inf}; expected an error and 1 failure",
            bytes.len()
        ));
    }
    let lb = rig::builder(SVC, &[addr]).build(rig::h2c()).unwrap();
    let r = lb.request(get(SVC, "/x")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (held_inflight, ..) = stats(&lb, SVC);
    drop(r);
    let (inf, req, fail, _) = stats(&lb, SVC);
    if fail != 1 || held_inflight != 0 {
        rows.push(format!(
            "h2 204 whose HEADERS and RST_STREAM(INTERNAL_ERROR) arrived together (the balancer \
             read the reset ahead and holds it), held 200 ms unread then dropped: in_flight \
             while held {held_inflight} (expected 0: the stream is dead), after drop: requests \
             {req}, failures {fail}, in_flight {inf}; expected failures 1"
        ));
    }
    assert!(rows.is_empty(), "{rows:#?}");
}

// ---------------------------------------------------------------------------
// 5. A complete no-content response whose last frame the balancer read
//    ahead (a 204 with one DATA frame ending the stream; a content-length 0
//    response ended by trailers): the message is complete, its frame in the
//    balancer's hands, yet it counts in flight while held and the hold is
//    recorded as latency, unlike the same 204 ended by an empty DATA frame.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_responses_whose_last_frame_was_read_ahead_leave_the_count() {
    let mut rows = Vec::new();
    let cases: [(&str, Script); 3] = [
        (
            "204 HEADERS + empty DATA END_STREAM (control)",
            Arc::new(|s| {
                vec![
                    (0, head(s, 204, &[], false)),
                    (0, raw_h2::data(s, b"", true)),
                ]
            }),
        ),
        (
            "204 HEADERS + DATA \"hello\" END_STREAM",
            Arc::new(|s| {
                vec![
                    (0, head(s, 204, &[], false)),
                    (0, raw_h2::data(s, b"hello", true)),
                ]
            }),
        ),
        (
            "200 content-length: 0 HEADERS + trailers HEADERS END_STREAM",
            Arc::new(|s| {
                vec![
                    (0, head(s, 200, &[("content-length", "0")], false)),
                    // Trailers: a header block without `:status`.
                    (
                        0,
                        raw_h2::headers(s, &[0x00, 3, b'x', b'-', b't', 1, b'1'], true),
                    ),
                ]
            }),
        ),
    ];
    for (name, script) in cases {
        let addr = raw_server(script).await;
        let lb = rig::builder(SVC, &[addr]).build(rig::h2c()).unwrap();
        let r = lb.request(get(SVC, "/x")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (held, ..) = stats(&lb, SVC);
        drop(r);
        let (_, _, _, ewma) = stats(&lb, SVC);
        let ms = ewma.map(|d| d.as_millis());
        if held != 0 || ms.is_none_or(|ms| ms >= 250) {
            rows.push(format!(
                "h2c {name}, complete, held 300 ms unread then dropped: in_flight while held \
                 {held}, latency EWMA {ms:?} ms; expected 0 and a few ms"
            ));
        }
    }
    assert!(rows.is_empty(), "{rows:#?}");
}

// ---------------------------------------------------------------------------
// Held: frames in order, no loss or duplication, caller woken after a
// read-ahead that registered only the no-op waker; stacked 2 and 3 deep.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_through_read_ahead_arrive_in_order_and_wake_the_caller() {
    let mut rows = Vec::new();
    let scripts: [(&str, Script, &[u8], bool); 4] = [
        (
            "204 open, DATA after 100 ms",
            Arc::new(|s| {
                vec![
                    (0, head(s, 204, &[], false)),
                    (100, raw_h2::data(s, b"late", false)),
                    (50, raw_h2::data(s, b"r", true)),
                ]
            }),
            b"later",
            false,
        ),
        ("204 hello/world", open_204_script(), b"hello world", false),
        (
            "304 empty DATA then DATA",
            Arc::new(|s| {
                vec![
                    (0, head(s, 304, &[], false)),
                    (0, raw_h2::data(s, b"", false)),
                    (0, raw_h2::data(s, b"ab", false)),
                    (50, raw_h2::data(s, b"cd", true)),
                ]
            }),
            b"abcd",
            false,
        ),
        (
            "cl0 then trailers after 80 ms",
            Arc::new(|s| {
                let block = vec![0x00, 3, b'x', b'-', b't', 1, b'1'];
                vec![
                    (0, head(s, 200, &[("content-length", "0")], false)),
                    (80, raw_h2::headers(s, &block, true)),
                ]
            }),
            b"",
            true,
        ),
    ];
    for (name, script, want, want_trailers) in scripts {
        let addr = raw_server(script).await;
        let inner = rig::builder(SVC, &[addr]).build(rig::h2c()).unwrap();
        let mid = rig::over("mid", SVC).build(inner.clone()).unwrap();
        let outer = rig::over("edge", "mid").build(mid.clone()).unwrap();
        let mut a = inner.clone().oneshot(get(SVC, "/x")).await.unwrap();
        let got = drain(a.body_mut()).await;
        let mut b = mid.clone().oneshot(get("mid", "/x")).await.unwrap();
        let got2 = drain(b.body_mut()).await;
        let mut c = outer.clone().oneshot(get("edge", "/x")).await.unwrap();
        let got3 = drain(c.body_mut()).await;
        let rq = reqwest_lb(addr);
        let mut d = rq.request(rq_get("/x")).await.unwrap();
        let got4 = drain(d.body_mut()).await;
        for (who, (bytes, tr, err)) in [("1", got), ("2", got2), ("3", got3), ("reqwest", got4)] {
            if bytes != want || tr.is_some() != want_trailers || err.is_some() {
                rows.push(format!(
                    "{name} depth {who}: {:?} trailers {} err {err:?}",
                    String::from_utf8_lossy(&bytes),
                    tr.is_some()
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let counts = (
            stats(&inner, SVC).0,
            stats(&mid, "mid").0,
            stats(&outer, "edge").0,
            stats(&rq, SVC).0,
        );
        if counts != (0, 0, 0, 0) {
            rows.push(format!("{name}: in_flight after full reads {counts:?}"));
        }
        drop((a, b, c, d));
    }
    assert!(rows.is_empty(), "{rows:#?}");
}
