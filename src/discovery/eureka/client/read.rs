//! Reading a registry response's body into memory within a bound.
//!
//! `http-body-util`'s `Limited` + `collect` bounds the *payload* bytes but
//! keeps every data frame as its own `Bytes` in a queue until the end, and
//! each of those points into hyper's read buffer, chunk framing included.
//! A body sent in 1-byte chunks (`1\r\nX\r\n`) then costs a queue entry and
//! the wire's bytes per payload byte: a 512 KiB body held 29.5 MiB of heap
//! at its peak (57 times), so the default 128 MiB bound would have allowed
//! gigabytes. Copying each frame into one buffer as it arrives frees the
//! frame, and hyper's buffer behind it, at once: the heap then holds at
//! most twice the body (the buffer doubles as it grows, never past an
//! announced `Content-Length`; 1.5 times measured for a 256 KiB body), and
//! only until the body is decoded. Not shrunk: a shrink copies the body
//! once more, for a buffer dropped right after decoding.

use bytes::{Buf, Bytes};
use http_body::Body;
use http_body_util::BodyExt;

use crate::error::BoxError;

/// The most reserved before any data comes.
const FIRST_RESERVE: usize = 64 * 1024;

/// Why [`read_within`] stopped.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The body (or its announced length) passed the bound.
    TooLarge,
    /// Reading failed: the transport's error.
    Read(BoxError),
}

/// Reads `body` to its end into one contiguous buffer of at most `limit`
/// bytes; trailers are ignored. A `Content-Length` (the body's exact size
/// hint) above `limit` is refused before reading anything.
pub(super) async fn read_within<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let hint = body.size_hint();
    let announced = usize::try_from(hint.lower()).unwrap_or(usize::MAX);
    if announced > limit {
        return Err(ReadError::TooLarge);
    }
    let mut body = std::pin::pin!(body);
    // Grown as data arrives, never past what was announced: at most 64 KiB
    // is reserved before data comes (a server announcing the bound and
    // sending 10 bytes costs 64 KiB, not the bound).
    let mut buf = Vec::with_capacity(announced.min(FIRST_RESERVE));
    while let Some(frame) = body.as_mut().frame().await {
        let frame = frame.map_err(|e| ReadError::Read(e.into()))?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let needed = buf.len().saturating_add(data.remaining());
        if needed > limit {
            return Err(ReadError::TooLarge);
        }
        if needed > buf.capacity() {
            // Doubling, within the bound, and exact at an announced end.
            let mut to = needed.max(buf.capacity().saturating_mul(2)).min(limit);
            if announced >= needed {
                to = to.min(announced);
            }
            buf.reserve_exact(to - buf.len());
        }
        while data.has_remaining() {
            let chunk = data.chunk();
            let n = chunk.len();
            buf.extend_from_slice(chunk);
            data.advance(n);
        }
    }
    Ok(Bytes::from(buf))
}

/// The most of a lease call's answer read to reuse its connection.
const DRAIN_MAX: usize = 64 * 1024;

/// Reads and drops a lease call's answer `body` beside the call, so its
/// connection can be reused: [`DRAIN_MAX`] bytes at most, until
/// `deadline` at the latest. The status is the call's answer; drained in
/// line, a server stalling the body after a 200 turned it into a timeout,
/// and the heartbeat went to the next server too (helper 144).
pub(super) fn drain_beside<B>(body: B, deadline: tokio::time::Instant)
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    if body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let _ = tokio::time::timeout_at(deadline, drain_within(body, DRAIN_MAX)).await;
    });
}

/// Reads and drops `body`, `limit` bytes at most; keeps nothing.
async fn drain_within<B>(body: B, limit: usize)
where
    B: Body,
{
    let mut body = std::pin::pin!(body);
    let mut read = 0usize;
    while let Some(Ok(frame)) = body.as_mut().frame().await {
        if let Some(data) = frame.data_ref() {
            read = read.saturating_add(data.remaining());
            if read > limit {
                return;
            }
        }
    }
}
