//! Reading a registry response's body into memory within a bound.
//!
//! `http-body-util`'s `Limited` + `collect` bounds the *payload* bytes but
//! keeps every data frame as its own `Bytes` in a queue until the end, and
//! each of those points into hyper's read buffer, chunk framing included.
//! A body sent in 1-byte chunks (`1\r\nX\r\n`) then costs a queue entry and
//! the wire's bytes per payload byte: a 512 KiB body held 29.5 MiB of heap
//! at its peak (57 times), so the default 128 MiB bound would have allowed
//! gigabytes. Copying each frame into one buffer as it arrives frees the
//! frame, and hyper's buffer behind it, at once: the heap then holds the
//! body's size (1.5 times at the peak of a doubling, measured; the buffer
//! ends exactly at an announced `Content-Length`).

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

/// Reads and drops `body` so the connection can be reused, `limit` bytes
/// at most; keeps nothing.
pub(super) async fn drain_within<B>(body: B, limit: usize)
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
