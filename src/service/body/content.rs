//! Whether a response has ended with its headers: by its headers
//! ([`has_content`]), or by its body's own framing
//! ([`ended_with_headers`]).

use crate::stats::Outcome;

/// A frame read ahead of the caller (see [`ended_with_headers`]), kept
/// for its first read: a `Result<Frame<Bytes>, E>` of the body's error type.
pub(super) type Peeked = Box<dyn std::any::Any + Send + Sync>;

/// The frame read ahead of a `B`, taken.
pub(super) fn take<B: http_body::Body>(
    peeked: Option<Peeked>,
) -> Option<Result<http_body::Frame<B::Data>, B::Error>>
where
    B::Data: 'static,
    B::Error: 'static,
{
    let frame = peeked?.downcast::<Result<http_body::Frame<B::Data>, B::Error>>();
    frame.ok().map(|frame| *frame)
}

/// `hint` with the bytes of a data frame read ahead added: the body's own
/// hint no longer counts them (a proxy sizing its message by the hint would
/// send fewer bytes than it forwards; helper 139).
pub(super) fn size_with<B: http_body::Body>(
    hint: http_body::SizeHint,
    peeked: Option<&Peeked>,
) -> http_body::SizeHint
where
    B::Data: 'static,
    B::Error: 'static,
{
    let held = peeked
        .and_then(|p| p.downcast_ref::<Result<http_body::Frame<B::Data>, B::Error>>())
        .and_then(|frame| frame.as_ref().ok()?.data_ref())
        .map_or(0, |data| bytes::Buf::remaining(data) as u64);
    if held == 0 {
        return hint;
    }
    let mut out = http_body::SizeHint::new();
    out.set_lower(hint.lower().saturating_add(held));
    if let Some(upper) = hint.upper() {
        out.set_upper(upper.saturating_add(held));
    }
    out
}

/// A verdict on a response's end by its body's framing, carried in the
/// response's extensions to a balancer stacked on this one, whose body
/// (this one's [`TrackedBody`](super::TrackedBody)) it cannot read by type
/// at every depth. Inserted only where it differs from the headers' reading.
#[derive(Clone, Copy)]
struct FramingVerdict {
    ended: bool,
}

/// Whether `response` ended with its headers, and a frame read ahead to
/// tell (kept for the caller's first read).
///
/// Bodies that know their end from the message's framing decide alone:
/// hyper's (an HTTP/2 stream ended, an HTTP/1 body of length 0 or one the
/// status or a HEAD request leaves empty) and reqwest's (hyper's, passed
/// through), also inside a stacked balancer's
/// [`TrackedBody`](super::TrackedBody) or, deeper, by the verdict it left.
/// Any other body is read by its headers ([`has_content`]).
///
/// A response whose headers do not say it has no content may have ended
/// with them: an HTTP/2 server need not send `Content-Length` (a gRPC
/// trailers-only response, an empty 200 or 503); held unread it stayed in
/// flight, its latency running, until dropped. And one whose headers say it
/// has none may still stream: over HTTP/2, h2 checks DATA only against a
/// declared `Content-Length` and a HEAD request, so a 204 or 304 whose
/// stream stays open hands its DATA to the caller, and a `content-length:
/// 0` stream may stay open until its trailers; both counted as ended at
/// their headers, so best available sent 39 of 40 held streams to the
/// instance answering so (helper 135). Such a response (no content by its
/// headers, open by its framing) is read once ahead, without a waker:
/// hyper's HTTP/2 server ends a stream whose body was not finished when
/// the headers went out with an empty DATA frame, so a complete 204 held
/// unread would otherwise count until dropped (39 of 40 picks went to the
/// other instance; helper 137). An empty data frame is dropped; anything
/// else is kept for the caller.
#[inline]
pub(super) fn ended_with_headers<B: 'static>(response: &mut http::Response<B>) -> Framing {
    let by_headers = !has_content(response);
    let Some(read) = read_by_framing(response.body_mut(), by_headers) else {
        // Unknown framing: a stacked balancer's verdict, else the headers.
        let verdict = response.extensions().get::<FramingVerdict>();
        return Framing {
            ended: verdict.map_or(by_headers, |v| v.ended),
            peeked: None,
            failed: None,
            known: verdict.is_some(),
        };
    };
    // Left for a balancer stacked on this one where its reading differs
    // from the headers' or a frame was read ahead, and always once stacked (a third balancer cannot
    // tell this one's body by type; without it, it took an HTTP/1 chunked
    // body as of unknown framing and waited past its trailers; helper 139).
    // A stacked balancer's body holding a frame read ahead says it has not
    // ended, though the inner balancer's attempt has: its verdict decides.
    let ended = match response.extensions().get::<FramingVerdict>() {
        Some(verdict) if read.stacked => verdict.ended,
        _ => read.ended,
    };
    if ended != by_headers || read.stacked || read.peeked.is_some() {
        response.extensions_mut().insert(FramingVerdict { ended });
    }
    Framing {
        ended,
        peeked: read.peeked,
        failed: read.failed,
        known: true,
    }
}

/// What [`ended_with_headers`] tells of a response.
pub(super) struct Framing {
    /// Whether it ended with its headers (or with the frames read ahead).
    pub(super) ended: bool,
    /// A frame read ahead, for the caller's first read.
    pub(super) peeked: Option<Peeked>,
    /// The frame read ahead is an error, classified by
    /// `classify::classify_body_error`.
    pub(super) failed: Option<Outcome>,
    /// Whether its body knows its framing (hyper's, reqwest's): a trailers
    /// frame is then its last (an HTTP/1 chunked body says it has ended
    /// only at the next read after its trailers); any other body ends at
    /// its own end of stream.
    pub(super) known: bool,
}

/// A known body's reading: ended, the frame read ahead, an error among
/// them, and whether the body is a stacked balancer's.
struct Read {
    ended: bool,
    peeked: Option<Peeked>,
    failed: Option<Outcome>,
    stacked: bool,
}

/// For a body that knows its framing, its [`Read`] (reading ahead only if
/// `read_ahead`); `None` for any other body.
fn read_by_framing<B: 'static>(body: &mut B, read_ahead: bool) -> Option<Read> {
    #[cfg(any(feature = "hyper-util", feature = "reqwest"))]
    {
        let stacked = |ended: bool| Read {
            ended,
            peeked: None,
            failed: None,
            stacked: true,
        };
        let body: &mut dyn std::any::Any = body;
        if let Some(body) = body.downcast_mut::<hyper::body::Incoming>() {
            return Some(read_end(body, read_ahead));
        }
        // A balancer stacked on another: the inner one's tracked body
        // passes its body's end of stream through.
        if let Some(body) = body.downcast_mut::<super::TrackedBody<hyper::body::Incoming>>() {
            return Some(stacked(http_body::Body::is_end_stream(body)));
        }
        #[cfg(feature = "reqwest")]
        if let Some(body) = body.downcast_mut::<reqwest::Body>() {
            return Some(read_end(body, read_ahead));
        }
        #[cfg(feature = "reqwest")]
        if let Some(body) = body.downcast_mut::<super::TrackedBody<reqwest::Body>>() {
            return Some(stacked(http_body::Body::is_end_stream(body)));
        }
    }
    #[cfg(not(any(feature = "hyper-util", feature = "reqwest")))]
    let _ = (body, read_ahead);
    None
}

/// Reads `body` ahead (if `read_ahead`) for the frames already received:
/// an empty data frame is dropped; another frame, or an error, is kept.
/// Ended if the body says so after that, or if the frame kept is trailers
/// (the last frame) or an error (the stream is dead: the attempt ends a
/// failure now, even if the caller never reads the body; helper 139).
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
fn read_end<B>(body: &mut B, read_ahead: bool) -> Read
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin + 'static,
    B::Error: Send + Sync + 'static,
{
    use std::task::{Context, Poll, Waker};
    let mut read = Read {
        ended: http_body::Body::is_end_stream(body),
        peeked: None,
        failed: None,
        stacked: false,
    };
    if read.ended || !read_ahead {
        return read;
    }
    let mut cx = Context::from_waker(Waker::noop());
    // At most two reads: an empty data frame, then the end.
    for _ in 0..2 {
        match http_body::Body::poll_frame(std::pin::Pin::new(&mut *body), &mut cx) {
            Poll::Ready(None) => {
                read.ended = true;
                return read;
            }
            Poll::Ready(Some(Ok(frame))) if frame.data_ref().is_some_and(|d| d.is_empty()) => {
                if http_body::Body::is_end_stream(body) {
                    read.ended = true;
                    return read;
                }
            }
            Poll::Ready(Some(frame)) => {
                read.ended = match &frame {
                    Ok(frame) => frame.is_trailers() || http_body::Body::is_end_stream(body),
                    Err(e) => {
                        read.failed = Some(super::super::classify::classify_body_error(e));
                        true
                    }
                };
                read.peeked = Some(Box::new(frame));
                return read;
            }
            Poll::Pending => return read,
        }
    }
    read
}

/// Whether `response` may carry content: not a 204 or 304 (RFC 9110
/// sections 15.3.5 and 15.4.5), nor one whose `Content-Length` is 0
/// without a `Transfer-Encoding`. A `Transfer-Encoding` overrides a
/// `Content-Length` (RFC 9112 §6.3: hyper reads such a body as chunked):
/// a stream sent chunked under `Content-Length: 0` was read to its end
/// while it counted as ended with its headers, invisible to the rules
/// that read load (helper 130).
pub(super) fn has_content<B>(response: &http::Response<B>) -> bool {
    let status = response.status();
    if status == http::StatusCode::NO_CONTENT || status == http::StatusCode::NOT_MODIFIED {
        return false;
    }
    if response
        .headers()
        .contains_key(http::header::TRANSFER_ENCODING)
    {
        return true;
    }
    // Zero however written: `Content-Length` is `1*DIGIT` (RFC 9110
    // §8.6), so `00` is zero too, and a list of equal values is that value
    // (`0, 0`: duplicates a proxy merged, which hyper reads as 0).
    response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .is_none_or(|length| {
            !length.as_bytes().split(|&b| b == b',').all(|value| {
                let digits = value.trim_ascii();
                !digits.is_empty() && digits.iter().all(|&b| b == b'0')
            })
        })
}
