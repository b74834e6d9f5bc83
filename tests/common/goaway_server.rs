//! A raw HTTP/2 server that answers every request's HEADERS with a
//! GOAWAY, for the faults hyper's server cannot produce on demand (a
//! GOAWAY naming a chosen last stream id, with a chosen error code).
//! Include it with `#[path = "common/goaway_server.rs"] mod goaway_server;`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP/2 (h2c, prior knowledge) server on 127.0.0.1 that, at each
/// request's HEADERS, sends GOAWAY naming `last` as the last stream id it
/// processed (0: nothing was) with the error code `reason` (0 NO_ERROR,
/// 1 PROTOCOL_ERROR, 2 INTERNAL_ERROR, 7 REFUSED_STREAM, 11
/// ENHANCE_YOUR_CALM), then with `close` closes the connection at once,
/// else keeps it open until the client closes it. Its port, and a count
/// of the HEADERS frames it got.
pub async fn goaway_server(last: u8, reason: u8, close: bool) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&streams);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if socket.read_exact(&mut preface).await.is_err() {
                    return;
                }
                // SETTINGS (empty).
                let _ = socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                loop {
                    let mut head = [0u8; 9];
                    if socket.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = usize::from(head[0]) << 16
                        | usize::from(head[1]) << 8
                        | usize::from(head[2]);
                    let mut payload = vec![0u8; len];
                    if socket.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    match (head[3], head[4]) {
                        // SETTINGS: acknowledge.
                        (4, flags) if flags & 1 == 0 => {
                            let _ = socket.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
                        }
                        // HEADERS: GOAWAY, last stream id `last`, error `reason`.
                        (1, _) => {
                            seen.fetch_add(1, Ordering::SeqCst);
                            let goaway =
                                [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, last, 0, 0, 0, reason];
                            let _ = socket.write_all(&goaway).await;
                            if close {
                                return;
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (port, streams)
}

/// An HTTP/2 (h2c) server on 127.0.0.1, h2's own, that resets every
/// stream with `reason` at its HEADERS; its port and a count of streams.
#[allow(dead_code)]
pub async fn resetting_server(reason: h2::Reason) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&streams);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    seen.fetch_add(1, Ordering::SeqCst);
                    respond.send_reset(reason);
                }
            });
        }
    });
    (port, streams)
}
