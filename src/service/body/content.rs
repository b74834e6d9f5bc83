//! Whether a response has ended with its headers: by its headers
//! ([`has_content`]), or by its body's own framing ([`body_framing`]).

/// Whether `body` has ended before any read, for the bodies that know it
/// from the message's framing: hyper's (an HTTP/2 HEADERS frame that ended
/// the stream, an HTTP/1 body of length 0 or one the status or a HEAD
/// request leaves empty) and reqwest's (hyper's, passed through), also
/// inside a stacked balancer's [`TrackedBody`](super::TrackedBody); `None`
/// for any other body, read by its headers alone ([`has_content`]).
///
/// For those bodies the framing decides alone. A response whose headers
/// do not say it has no content may still have ended with them: an HTTP/2
/// server need not send `Content-Length` (a gRPC trailers-only response, an
/// empty 200 or 503 from a server that omits it); such a response held
/// unread stayed in flight on its instance, its latency running, until
/// dropped. And one whose headers say it has none may still stream: over
/// HTTP/2, h2 checks DATA only against a declared `Content-Length` and a
/// HEAD request, so a 204 or 304 whose stream stays open hands its DATA to
/// the caller, and a `content-length: 0` stream stays open until its
/// trailers; both counted as ended at their headers, so best available
/// sent 39 of 40 streams to the instance answering so (helper 135).
pub(super) fn body_framing<B: 'static>(body: &B) -> Option<bool> {
    #[cfg(any(feature = "hyper-util", feature = "reqwest"))]
    {
        let body: &dyn std::any::Any = body;
        if let Some(body) = body.downcast_ref::<hyper::body::Incoming>() {
            return Some(http_body::Body::is_end_stream(body));
        }
        // A balancer stacked on another: the inner one's tracked body
        // passes its body's end of stream through.
        if let Some(body) = body.downcast_ref::<super::TrackedBody<hyper::body::Incoming>>() {
            return Some(http_body::Body::is_end_stream(body));
        }
        #[cfg(feature = "reqwest")]
        if let Some(body) = body.downcast_ref::<reqwest::Body>() {
            return Some(http_body::Body::is_end_stream(body));
        }
        #[cfg(feature = "reqwest")]
        if let Some(body) = body.downcast_ref::<super::TrackedBody<reqwest::Body>>() {
            return Some(http_body::Body::is_end_stream(body));
        }
    }
    #[cfg(not(any(feature = "hyper-util", feature = "reqwest")))]
    let _ = body;
    None
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
