//! The caller's `Content-Length` against its body, checked once before
//! any attempt: a request whose header contradicts a body of known length
//! is the caller's error, never sent. Sent, an HTTP/1 server waits for the
//! bytes that never come (a read timeout: the breaker's count) or reads
//! the extra bytes as the next request on the connection, and an HTTP/2
//! server resets the stream (`PROTOCOL_ERROR`, RFC 9113 section 8.1.1),
//! each counted against a healthy instance (three such POSTs counted
//! three failures over two healthy instances before this check).

use std::fmt;

use http::HeaderMap;
use http::header::CONTENT_LENGTH;

/// A `Content-Length` the body contradicts (or that is no length).
#[derive(Debug)]
pub(crate) struct ContentLengthMismatch {
    /// The header's value as sent, escaped and cut for the message.
    declared: String,
    /// The body's length in bytes, when known before sending.
    body: Option<u64>,
}

impl fmt::Display for ContentLengthMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.body {
            Some(body) => write!(
                f,
                "the request's content-length `{}` does not match its body of {body} bytes; \
                 not sent (a server would wait for bytes that never come, or reset the stream)",
                self.declared
            ),
            None => write!(
                f,
                "the request's content-length `{}` is not one length in decimal digits; \
                 not sent (an HTTP/2 server would reset the stream)",
                self.declared
            ),
        }
    }
}

impl std::error::Error for ContentLengthMismatch {}

/// Longest header text quoted in the message.
const MAX_QUOTED: usize = 64;

/// Checks every `Content-Length` of `headers` against `body()`, the
/// body's exact length when known: each must be a decimal length (RFC
/// 9110, section 8.6: `1*DIGIT`) equal to it. Without a body length, the
/// fields must still be one length, given once or repeated, which is
/// returned for the body to check as it is sent
/// (`TryCloneBody::check_len`). `Ok(None)` without the header (the
/// client then frames the body itself) or when the body's length matched.
pub(crate) fn check(
    headers: &HeaderMap,
    body: impl FnOnce() -> Option<u64>,
) -> Result<Option<u64>, ContentLengthMismatch> {
    // Most requests carry no Content-Length of their own: no work for a
    // request without headers, one lookup for the others.
    if headers.is_empty() {
        return Ok(None);
    }
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let body = body();
    let declared = parse(first.as_bytes());
    let refuse = |value: &http::HeaderValue| {
        // Cut before decoding: a 1 MiB value of bytes that are no UTF-8
        // would otherwise decode to 3 MiB first.
        let bytes = value.as_bytes();
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_QUOTED + 4)]);
        ContentLengthMismatch {
            declared: crate::error::quote_within(&text, MAX_QUOTED),
            body,
        }
    };
    let Some(declared) = declared.filter(|&d| body.is_none_or(|b| b == d)) else {
        return Err(refuse(first));
    };
    for value in values {
        if parse(value.as_bytes()) != Some(declared) {
            return Err(refuse(value));
        }
    }
    Ok(body.is_none().then_some(declared))
}

/// A decimal length of 1 to 20 digits up to `u64::MAX` (no sign, no
/// spaces, no list),
/// else `None`.
fn parse(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(CONTENT_LENGTH, http::HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    #[test]
    fn a_length_the_body_contradicts_is_refused() {
        assert_eq!(check(&headers(&[b"10"]), || Some(10)).unwrap(), None);
        assert_eq!(check(&headers(&[b"10", b"10"]), || Some(10)).unwrap(), None);
        assert_eq!(check(&headers(&[b"0"]), || Some(0)).unwrap(), None);
        // No header: nothing to check.
        assert_eq!(check(&HeaderMap::new(), || Some(10)).unwrap(), None);
        assert_eq!(check(&HeaderMap::new(), || None).unwrap(), None);
        let mut other = HeaderMap::new();
        other.insert(http::header::HOST, http::HeaderValue::from_static("a"));
        assert_eq!(check(&other, || None).unwrap(), None);
        // A body of unknown length: the length it must have, once the
        // fields agree on one.
        assert_eq!(check(&headers(&[b"10"]), || None).unwrap(), Some(10));
        assert_eq!(check(&headers(&[b"10", b"10"]), || None).unwrap(), Some(10));
        for values in [&[&b"abc"[..]][..], &[b"10", b"11"], &[b"10, 10"], &[b""]] {
            let err = check(&headers(values), || None).unwrap_err();
            assert_eq!(err.body, None, "{values:?}");
        }
        assert_eq!(
            check(&headers(&[b"10", b"x"]), || None)
                .unwrap_err()
                .to_string(),
            "the request's content-length `x` is not one length in decimal digits; not \
             sent (an HTTP/2 server would reset the stream)"
        );
        for (values, body) in [
            (&[&b"100"[..]][..], 10),
            (&[b"3"], 10),
            (&[b"10", b"11"], 10),
            (&[b"abc"], 1),
            (&[b""], 0),
            (&[b"+10"], 10),
            (&[b" 10"], 10),
            (&[b"10, 10"], 10),
            (&[b"99999999999999999999"], 10),
        ] {
            let err = check(&headers(values), || Some(body)).unwrap_err();
            assert_eq!(err.body, Some(body), "{values:?}");
        }
        let err = check(&headers(&[b"100"]), || Some(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the request's content-length `100` does not match its body of 10 bytes; not \
             sent (a server would wait for bytes that never come, or reset the stream)"
        );
    }

    #[test]
    fn the_quoted_value_is_escaped_and_cut() {
        let long = vec![b'7'; 4096];
        let err = check(&headers(&[&long]), || Some(1)).unwrap_err();
        assert_eq!(err.declared, format!("{}…", "7".repeat(MAX_QUOTED)));
        // Bytes that are no UTF-8: each one U+FFFD (3 bytes), cut at 64.
        let err = check(&headers(&[&vec![0xff; 1 << 20]]), || Some(1)).unwrap_err();
        assert_eq!(err.declared, format!("{}…", "\u{fffd}".repeat(21)));
        let err = check(&headers(&[b"1\t2"]), || Some(1)).unwrap_err();
        assert_eq!(err.declared, "1\\t2");
        let err = check(&headers(&["1\u{202e}2".as_bytes()]), || Some(1)).unwrap_err();
        assert_eq!(err.declared, "1\\u{202e}2");
    }

    proptest! {
        /// Every decimal length up to u64::MAX parses to itself; anything
        /// with a non-digit does not parse.
        #[test]
        fn parse_agrees_with_u64(n in any::<u64>(), junk in "[^0-9]{1,3}") {
            prop_assert_eq!(parse(n.to_string().as_bytes()), Some(n));
            let with_junk = format!("{n}{junk}");
            prop_assert_eq!(parse(with_junk.as_bytes()), None);
        }
    }
}
