//! Request bodies and retries: which bodies can be sent again.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body::Body;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Empty, Full};

use super::Upload;
use crate::error::BoxError;

/// A request body that may be copied for another attempt.
///
/// `try_clone_body` returns `None` when the body cannot be replayed (a
/// stream that already started); the balancer then does not retry that
/// request. Implemented for buffered bodies: `()`, `String`, `Vec<u8>`,
/// `Bytes`, `&'static str`, `Full<Bytes>`, `Empty<Bytes>`, [`ReplayBody`],
/// and `reqwest::Body` when it holds bytes (feature `reqwest`).
///
/// `Bytes`, `Full<Bytes>` and [`ReplayBody`] copies share one buffer (a
/// reference count), so a retried 64 MiB body does not double memory.
/// `String`, `Vec<u8>` and `reqwest::Body` are copied whenever the policy
/// may retry (reqwest exposes no shared handle to its bytes); send large
/// bodies as `Bytes`.
///
/// Boxed bodies ([`BoxBody`] and [`UnsyncBoxBody`] over `Bytes`) are
/// accepted too; they cannot be copied, so a boxed body is replayed only
/// when it is known to be empty (a `GET` built with an empty boxed body),
/// and otherwise its request is sent once and never retried. To retry a
/// boxed body, buffer it first with [`ReplayBody::buffer`] (bounded) or
/// wrap it in [`ReplayBody::streaming`] (replayed until it starts).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a request body of a `LoadBalancer`: it cannot be copied for a retry",
    label = "the body of this request",
    note = "buffered bodies are accepted as they are: `Full<Bytes>`, `Empty<Bytes>`, `Bytes`, `String`, `Vec<u8>`, `&'static str`, `()`, boxed bodies over `Bytes`",
    note = "for a stream, wrap it: `ReplayBody::streaming(body)` (replayed only until it starts) or `ReplayBody::buffer(body, max_bytes).await` (read into memory, replayed on every retry)"
)]
pub trait TryCloneBody: Sized {
    /// A copy for another attempt, or `None` if this body cannot be sent
    /// again.
    fn try_clone_body(&self) -> Option<Self>;

    /// Whether a copy made earlier can still be sent: `false` once a
    /// streaming body it shares has started. Default: `true`.
    fn is_replayable(&self) -> bool {
        true
    }

    /// The end of this body's upload, for a body whose sending takes time
    /// (a stream): the per-try timeout of an attempt sending it then starts
    /// when the upload ends, not at the send (see [`Upload`]). Default:
    /// `None`, the per-try timeout runs from the send (right for bodies in
    /// memory). [`ReplayBody::streaming`] reports its upload.
    fn upload(&self) -> Option<Upload> {
        None
    }

    /// A copy for a retry after an attempt that provably never reached a
    /// server (a connect failure: a stream the server refused with
    /// `REFUSED_STREAM`, or failed by its abrupt `GOAWAY`, after the client had
    /// read the body). Default: [`try_clone_body`](Self::try_clone_body).
    /// [`ReplayBody::streaming`] overrides it: a stream that attempt read
    /// to its end within [`UNSENT_REPLAY_MAX`] bytes is sent again from
    /// what it read.
    fn try_clone_unsent(&self) -> Option<Self> {
        self.try_clone_body()
    }

    /// The body's length in bytes when it is known before sending (a body
    /// in memory), else `None`. The balancer refuses, before any attempt,
    /// a request whose `Content-Length` header contradicts it (see
    /// [`Error::is_invalid_request`](crate::Error::is_invalid_request)):
    /// sent, such a request makes an HTTP/1 server wait for bytes that
    /// never come (a read timeout, the breaker's count) or read the rest
    /// as the next request, and an HTTP/2 server reset the stream
    /// (`PROTOCOL_ERROR`), each counted against a healthy instance.
    /// Default: `None` (no check). Every body this crate accepts as it is
    /// reports its length, [`ReplayBody`] when buffered, `reqwest::Body`
    /// when it holds bytes, a boxed body when its size hint is exact.
    fn exact_len(&self) -> Option<u64> {
        None
    }

    /// Whether [`try_clone_unsent`](Self::try_clone_unsent) would give a
    /// copy. Default: [`is_replayable`](Self::is_replayable).
    fn is_replayable_unsent(&self) -> bool {
        self.is_replayable()
    }

    /// Told, before the first attempt, the length in bytes the request's
    /// `Content-Length` declares for a body whose
    /// [`exact_len`](Self::exact_len) is `None` (a stream). A body that
    /// can check itself as it is sent fails with an error at the first
    /// frame that would pass that length, or at an end short of it, and
    /// does not report its end before: the client then fails the request
    /// as the caller's (`Outcome::RequestError`: not retried, counted
    /// against no instance). Sent unchecked, a short stream makes an
    /// HTTP/1 server wait for the rest and an HTTP/2 server reset the
    /// stream (`PROTOCOL_ERROR`), and hyper's HTTP/1 client cuts a long
    /// one at the length. Default: does nothing. [`ReplayBody::streaming`]
    /// checks, over HTTP/1 and HTTP/2. A boxed body ([`BoxBody`],
    /// [`UnsyncBoxBody`]) is boxed again so that it does not report its
    /// end before the length: hyper's HTTP/1 client then finds a short end
    /// itself (read as the caller's error); over HTTP/2 a short or long
    /// boxed stream is sent and the server's reset counts against the
    /// instance. A streamed `reqwest::Body` is wrapped again and fails like
    /// `ReplayBody`, over HTTP/1 and HTTP/2. A body type of your own that
    /// reports its end with a last
    /// frame short of the length is sent short over HTTP/1 and the server
    /// waits for the rest (a read timeout of the instance): implement this
    /// method, or wrap the body in [`ReplayBody::streaming`].
    fn check_len(&mut self, declared: u64) {
        let _ = declared;
    }
}

/// The most data bytes of a [`ReplayBody::streaming`] body that an
/// attempt keeps (64 KiB, in the frames it read, shared not copied) so
/// that a retry after that attempt never reached a server can send the
/// body again; a longer body, or one with trailers, is sent once, as
/// before.
pub const UNSENT_REPLAY_MAX: usize = 64 * 1024;

/// The most frames an attempt keeps of a streaming body (see
/// [`UNSENT_REPLAY_MAX`]).
const UNSENT_REPLAY_FRAMES: usize = 1024;

macro_rules! clone_body {
    ($($t:ty => $len:expr),*) => {$(
        impl TryCloneBody for $t {
            fn try_clone_body(&self) -> Option<Self> {
                Some(self.clone())
            }

            fn exact_len(&self) -> Option<u64> {
                let len: fn(&$t) -> Option<u64> = $len;
                len(self)
            }
        }
    )*};
}

clone_body!(
    () => |_| Some(0),
    String => |s| Some(s.len() as u64),
    Vec<u8> => |v| Some(v.len() as u64),
    Bytes => |b| Some(b.len() as u64),
    &'static str => |s| Some(s.len() as u64),
    Full<Bytes> => |b| b.size_hint().exact(),
    Empty<Bytes> => |_| Some(0)
);

#[cfg(feature = "reqwest")]
impl TryCloneBody for reqwest::Body {
    fn try_clone_body(&self) -> Option<Self> {
        self.as_bytes()
            .map(|b| reqwest::Body::from(Bytes::copy_from_slice(b)))
    }

    fn exact_len(&self) -> Option<u64> {
        self.as_bytes().map(|b| b.len() as u64)
    }

    /// A stream is wrapped again (`reqwest::Body::wrap`) so that it fails
    /// at the first frame past the length or at a short end, over HTTP/1
    /// and HTTP/2 (one allocation, only for a stream with a
    /// `Content-Length`).
    fn check_len(&mut self, declared: u64) {
        if self.as_bytes().is_some() {
            return;
        }
        let body = std::mem::replace(self, reqwest::Body::from(Bytes::new()));
        *self = reqwest::Body::wrap(length::Checked::new(body, declared));
    }
}

/// A boxed body is copied only when it is known to be empty (its end is
/// already reached): the copy is a new empty boxed body. Any other boxed
/// body cannot be copied (`None`), so its request is not retried.
impl<E: 'static> TryCloneBody for BoxBody<Bytes, E> {
    fn try_clone_body(&self) -> Option<Self> {
        self.is_end_stream()
            .then(|| Empty::new().map_err(|never| match never {}).boxed())
    }

    fn exact_len(&self) -> Option<u64> {
        self.size_hint().exact()
    }

    /// Boxed again so that it does not report its end before the length
    /// (one allocation, only for a stream with a `Content-Length`).
    fn check_len(&mut self, declared: u64) {
        let empty = Empty::new().map_err(|never| match never {}).boxed();
        let body = std::mem::replace(self, empty);
        *self = length::EndAtLength::new(body, declared).boxed();
    }
}

/// As for [`BoxBody`]: copied only when known to be empty.
impl<E: 'static> TryCloneBody for UnsyncBoxBody<Bytes, E> {
    fn try_clone_body(&self) -> Option<Self> {
        self.is_end_stream()
            .then(|| Empty::new().map_err(|never| match never {}).boxed_unsync())
    }

    fn exact_len(&self) -> Option<u64> {
        self.size_hint().exact()
    }

    /// As for [`BoxBody`].
    fn check_len(&mut self, declared: u64) {
        let empty = Empty::new().map_err(|never| match never {}).boxed_unsync();
        let body = std::mem::replace(self, empty);
        *self = length::EndAtLength::new(body, declared).boxed_unsync();
    }
}

/// Why [`ReplayBody::buffer`] could not buffer a body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BufferError {
    /// The body is longer than the bound.
    #[error("request body longer than {max_bytes} bytes: too long to buffer for retries")]
    TooLong {
        /// The bound passed to [`ReplayBody::buffer`].
        max_bytes: usize,
    },
    /// Reading the body failed.
    #[error("reading the request body to buffer it failed: {0}")]
    Read(#[source] BoxError),
    /// The body yielded more frames without data (empty data frames,
    /// trailers) than the bound: `max_bytes`, at least 1024.
    #[error(
        "request body yielded more than {max_frames} frames without data: too many to buffer for retries"
    )]
    TooManyFrames {
        /// The bound on frames without data.
        max_frames: usize,
    },
}

/// Frames without data that [`ReplayBody::buffer`] accepts at least.
const MIN_EMPTY_FRAMES: usize = 1024;

/// A body that is either buffered (always replayable) or a stream that is
/// replayable only until it is first polled.
///
/// ```
/// use bytes::Bytes;
/// use tower_ribbon::retry::{ReplayBody, TryCloneBody};
///
/// let buffered: ReplayBody<http_body_util::Empty<Bytes>> = ReplayBody::from_bytes("order #42");
/// assert!(buffered.try_clone_body().is_some());
/// ```
pub struct ReplayBody<B> {
    inner: Inner<B>,
}

enum Inner<B> {
    Buffered(Option<Bytes>),
    Streaming {
        /// What the copies share.
        slot: Arc<Mutex<Shared<B>>>,
        /// The stream once this attempt started it.
        taken: Option<Stream<B>>,
        /// The end of the stream's upload (one stream, so shared by the
        /// copies as the slot is).
        upload: Upload,
        /// What this attempt read of it.
        record: Record,
        /// The request's `Content-Length`, checked as the stream is sent
        /// ([`TryCloneBody::check_len`]).
        length: Option<LengthCheck>,
    },
}

/// What the copies of a streaming body share.
struct Shared<B> {
    /// The stream until some attempt starts sending it.
    stream: Option<Stream<B>>,
    /// The whole body as the attempt that started it read it (data only,
    /// within [`UNSENT_REPLAY_MAX`]): sent again only after that attempt
    /// never reached a server.
    read: Option<Bytes>,
}

/// A stream, after the bytes already read from it (sent first).
struct Stream<B> {
    head: Option<Bytes>,
    body: Pin<Box<B>>,
}

impl<B> ReplayBody<B> {
    /// A buffered body: replayed on every retry.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        Self {
            inner: Inner::Buffered(Some(bytes.into())),
        }
    }

    /// Reads `body` into memory, at most `max_bytes` bytes, so that every
    /// retry can send it again (for example a [`BoxBody`] a gateway
    /// received). Trailers are dropped. Reading stops at the first frame
    /// past the bound, so a longer body costs at most `max_bytes` plus one
    /// frame of memory. Frames without data (empty ones, trailers) are
    /// counted apart, at most `max_bytes` of them (at least 1024), so a body
    /// yielding empty frames forever ends too.
    ///
    /// The body is gone when it is too long; to send such a body once
    /// instead, use [`buffer_or_stream`](Self::buffer_or_stream).
    ///
    /// # Errors
    /// [`BufferError::TooLong`] when the body (by its size hint or as read)
    /// exceeds `max_bytes`; [`BufferError::TooManyFrames`] past the bound on
    /// frames without data; [`BufferError::Read`] when reading fails.
    pub async fn buffer<S>(body: S, max_bytes: usize) -> Result<Self, BufferError>
    where
        S: Body,
        S::Error: Into<BoxError>,
    {
        let too_long = BufferError::TooLong { max_bytes };
        if body.size_hint().lower() > max_bytes as u64 {
            return Err(too_long);
        }
        let mut body = std::pin::pin!(body);
        let mut buf = bytes::BytesMut::new();
        let max_frames = max_bytes.max(MIN_EMPTY_FRAMES);
        let mut empty_frames = 0usize;
        while let Some(frame) = body.frame().await {
            use bytes::Buf;
            let frame = frame.map_err(|e| BufferError::Read(e.into()))?;
            if frame.data_ref().is_none_or(|data| !data.has_remaining()) {
                empty_frames += 1;
                if empty_frames > max_frames {
                    return Err(BufferError::TooManyFrames { max_frames });
                }
            }
            if let Ok(mut data) = frame.into_data() {
                if buf.len().saturating_add(data.remaining()) > max_bytes {
                    return Err(too_long);
                }
                while data.has_remaining() {
                    let chunk = data.chunk();
                    buf.extend_from_slice(chunk);
                    let n = chunk.len();
                    data.advance(n);
                }
            }
        }
        Ok(Self::from_bytes(buf.freeze()))
    }

    /// A streaming body: replayable only while no attempt has started
    /// sending it (for example after a refused connection); once its
    /// first frame was asked for, sent again only after an attempt that
    /// never reached a server (a stream refused with `REFUSED_STREAM` or
    /// failed by the server's abrupt `GOAWAY`) and read it to its end within
    /// [`UNSENT_REPLAY_MAX`] bytes, from what that attempt read
    /// ([`TryCloneBody::try_clone_unsent`]).
    pub fn streaming(body: B) -> Self {
        Self::stream(None, Box::pin(body))
    }

    /// `body` after `head`, the bytes already read from it.
    fn stream(head: Option<Bytes>, body: Pin<Box<B>>) -> Self {
        Self {
            inner: Inner::Streaming {
                slot: Arc::new(Mutex::new(Shared {
                    stream: Some(Stream { head, body }),
                    read: None,
                })),
                taken: None,
                upload: Upload::new(),
                record: Record::default(),
                length: None,
            },
        }
    }

    /// Whether the body is held in memory, so that every retry can send it
    /// again (`from_bytes`, or `buffer_or_stream` within its bound); `false`
    /// for a stream, replayed only until an attempt starts it.
    pub fn is_buffered(&self) -> bool {
        matches!(self.inner, Inner::Buffered(_))
    }
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// As [`buffer`](Self::buffer), but a body past the bound is not lost:
    /// it comes back as a stream (the bytes read so far, then the rest of
    /// `body`), sent once and replayed only while no attempt has started
    /// it, as [`streaming`](Self::streaming). Use it where a body too long
    /// to buffer must still be sent, without retries; tell the two apart
    /// with [`is_buffered`](Self::is_buffered). Reading stops at the first
    /// frame past the bound (kept, so at most `max_bytes` plus one frame
    /// of memory), or past `max_bytes` frames without data (at least 1024:
    /// they carry nothing, and trailers come last). Trailers of a body
    /// that fits are dropped, as `buffer` drops them.
    ///
    /// # Errors
    /// [`BufferError::Read`] when reading fails (the body is gone then).
    pub async fn buffer_or_stream(body: B, max_bytes: usize) -> Result<Self, BufferError> {
        let mut body = Box::pin(body);
        if body.size_hint().lower() > max_bytes as u64 {
            return Ok(Self::stream(None, body));
        }
        let mut buf = bytes::BytesMut::new();
        let max_frames = max_bytes.max(MIN_EMPTY_FRAMES);
        let mut empty_frames = 0usize;
        while let Some(frame) = body.as_mut().frame().await {
            let frame = frame.map_err(|e| BufferError::Read(e.into()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                empty_frames += 1;
                if empty_frames > max_frames {
                    return Ok(Self::stream(Some(buf.freeze()), body));
                }
                continue;
            }
            buf.extend_from_slice(&data);
            if buf.len() > max_bytes {
                return Ok(Self::stream(Some(buf.freeze()), body));
            }
        }
        Ok(Self::from_bytes(buf.freeze()))
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Buffered(b) => f
                .debug_struct("ReplayBody::Buffered")
                .field("len", &b.as_ref().map(Bytes::len))
                .finish(),
            Inner::Streaming { taken, .. } => f
                .debug_struct("ReplayBody::Streaming")
                .field("started", &taken.is_some())
                .finish(),
        }
    }
}

mod frames;
mod length;
mod record;
mod replay;
#[cfg(test)]
mod tests;

use length::LengthCheck;
use record::Record;
