//! A scripted HTTP/2 server (h2c, prior knowledge) at the frame level, for
//! faults neither hyper's server nor the `h2` crate's produce on demand:
//! a SETTINGS frame lowering `SETTINGS_MAX_CONCURRENT_STREAMS` while
//! streams are open, a response on a chosen stream, a RST_STREAM or a
//! GOAWAY at a chosen moment. The test drives each connection: it reads
//! what the client sent ([`Event`]) and writes the frames it chooses.
//! Include it with `#[path = "common/raw_h2.rs"] mod raw_h2;`.
#![allow(dead_code)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What the client sent on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request's HEADERS on `stream`, ending the request with `end`.
    Headers { stream: u32, end: bool },
    /// `len` bytes of request body on `stream`, the last with `end`.
    Data { stream: u32, len: usize, end: bool },
    /// The client reset `stream` with the error `code`.
    Reset { stream: u32, code: u32 },
    /// The client acknowledged the server's SETTINGS: it applies them to
    /// every request it opens from now on.
    SettingsAck,
}

/// One accepted connection: the client's frames as [`Event`]s (SETTINGS and
/// PING are acknowledged by the server itself), and a writer for the
/// test's frames.
pub struct Conn {
    events: mpsc::UnboundedReceiver<Event>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    /// SETTINGS frames sent, and acknowledgements seen (in order).
    settings: (usize, usize),
}

impl Conn {
    /// Writes `frame` (made by the functions below).
    pub fn send(&self, frame: Vec<u8>) {
        let _ = self.out.send(frame);
    }

    /// The next event, panicking after 5 s without one.
    pub async fn next(&mut self) -> Event {
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), self.events.recv())
            .await
            .expect("an event within 5 s")
            .expect("the connection is open");
        self.seen(event)
    }

    fn seen(&mut self, event: Event) -> Event {
        if event == Event::SettingsAck {
            self.settings.1 += 1;
        }
        event
    }

    /// The next request HEADERS' stream id, skipping other events.
    pub async fn next_request(&mut self) -> u32 {
        loop {
            if let Event::Headers { stream, .. } = self.next().await {
                return stream;
            }
        }
    }

    /// Sends SETTINGS with `SETTINGS_MAX_CONCURRENT_STREAMS` = `n` and
    /// waits for the client's acknowledgement (other events before it are
    /// dropped).
    pub async fn limit_streams(&mut self, n: u32) {
        self.send(settings_max_concurrent_streams(n));
        self.settings.0 += 1;
        while self.settings.1 < self.settings.0 {
            self.next().await;
        }
    }

    /// The events the client sent so far, without waiting.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            events.push(self.seen(event));
        }
        events
    }

    /// Closes the server's side of the connection (a FIN after the frames
    /// written so far).
    pub fn close(&self) {
        let _ = self.out.send(Vec::new());
    }
}

/// Listens on 127.0.0.1; each accepted connection gets the server's
/// SETTINGS (`max_concurrent_streams` if given) and comes out of the
/// returned channel as a [`Conn`].
pub async fn listen(max_concurrent_streams: Option<u32>) -> (u16, mpsc::UnboundedReceiver<Conn>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (conns_tx, conns) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (events_tx, events) = mpsc::unbounded_channel();
            let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
            if conns_tx
                .send(Conn {
                    events,
                    out: out.clone(),
                    settings: (1, 0),
                })
                .is_err()
            {
                return;
            }
            let (mut read, mut write) = socket.into_split();
            tokio::spawn(async move {
                while let Some(frame) = out_rx.recv().await {
                    if frame.is_empty() || write.write_all(&frame).await.is_err() {
                        break;
                    }
                }
                let _ = write.shutdown().await;
            });
            let settings = match max_concurrent_streams {
                Some(n) => self::settings_max_concurrent_streams(n),
                None => frame(4, 0, 0, &[]),
            };
            let _ = out.send(settings);
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if read.read_exact(&mut preface).await.is_err() {
                    return;
                }
                loop {
                    let mut head = [0u8; 9];
                    if read.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = usize::from(head[0]) << 16
                        | usize::from(head[1]) << 8
                        | usize::from(head[2]);
                    let mut payload = vec![0u8; len];
                    if read.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    let (kind, flags) = (head[3], head[4]);
                    let stream =
                        u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & !(1 << 31);
                    let event = match kind {
                        0 => {
                            // Keep the client's windows open.
                            if len > 0 {
                                let _ = out.send(window_update(0, len as u32));
                                let _ = out.send(window_update(stream, len as u32));
                            }
                            Some(Event::Data {
                                stream,
                                len,
                                end: flags & 1 != 0,
                            })
                        }
                        1 => Some(Event::Headers {
                            stream,
                            end: flags & 1 != 0,
                        }),
                        3 => Some(Event::Reset {
                            stream,
                            code: u32::from_be_bytes(payload[..4].try_into().unwrap()),
                        }),
                        4 if flags & 1 == 0 => {
                            let _ = out.send(frame(4, 1, 0, &[]));
                            None
                        }
                        4 => Some(Event::SettingsAck),
                        6 if flags & 1 == 0 => {
                            let _ = out.send(frame(6, 1, 0, &payload));
                            None
                        }
                        _ => None,
                    };
                    if let Some(event) = event {
                        if events_tx.send(event).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, conns)
}

/// A frame: `kind`, `flags`, `stream`, `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// SETTINGS with `SETTINGS_MAX_CONCURRENT_STREAMS` = `n`.
pub fn settings_max_concurrent_streams(n: u32) -> Vec<u8> {
    let mut payload = vec![0, 3];
    payload.extend_from_slice(&n.to_be_bytes());
    frame(4, 0, 0, &payload)
}

/// The HPACK block of a response head: `:status` `status`, then each
/// header as a literal without indexing (new name).
pub fn response_head(status: u16, headers: &[(&str, &str)]) -> Vec<u8> {
    // `:status` with its static-table name (index 8), literal value.
    let status = status.to_string();
    let mut block = vec![0x08, status.len() as u8];
    block.extend_from_slice(status.as_bytes());
    for (name, value) in headers {
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// A HEADERS frame with `block`, ending the stream with `end`.
pub fn headers(stream: u32, block: &[u8], end: bool) -> Vec<u8> {
    frame(1, 0x4 | u8::from(end), stream, block)
}

/// A DATA frame, ending the stream with `end`.
pub fn data(stream: u32, bytes: &[u8], end: bool) -> Vec<u8> {
    frame(0, u8::from(end), stream, bytes)
}

/// RST_STREAM with `code` (8 CANCEL, 2 INTERNAL_ERROR, 7 REFUSED_STREAM).
pub fn reset(stream: u32, code: u32) -> Vec<u8> {
    frame(3, 0, stream, &code.to_be_bytes())
}

/// GOAWAY naming `last` the last stream processed, with `code`.
pub fn goaway(last: u32, code: u32) -> Vec<u8> {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend_from_slice(&code.to_be_bytes());
    frame(7, 0, 0, &payload)
}

/// WINDOW_UPDATE of `increment` on `stream` (0: the connection).
pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(8, 0, stream, &increment.to_be_bytes())
}
