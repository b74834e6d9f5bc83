//! gRPC's status on the wire, read as the HTTP status it stands for, so the
//! classification of every response (stats, breaker, outlier ejection,
//! retries) sees trailers-only gRPC failures through any inner client.
//! Public as [`crate::grpc`]'s functions.

use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};
use tokio::time::Instant;

/// The gRPC status code in `headers` (`grpc-status`), if present, read as
/// tonic reads it (`Code::from_bytes`): a code 0 to 16 written as gRPC
/// writes it (`0` to `9`, `10` to `16`: no leading zero), anything else
/// UNKNOWN (2), so the balancer counts what the caller is told. A looser
/// parse read `-0` or `00` as OK and `" 14"` or `014` as UNAVAILABLE, where
/// the caller got UNKNOWN: a server answering `-0` or `00` to every call
/// failed them all and counted only successes.
pub fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    let value = headers.get("grpc-status")?.as_bytes();
    Some(match value {
        [d] if d.is_ascii_digit() => i32::from(d - b'0'),
        [b'1', d @ b'0'..=b'6'] => 10 + i32::from(d - b'0'),
        _ => 2,
    })
}

/// Whether `headers` carry a gRPC content type: `application/grpc` alone
/// or followed by `+` (a codec: `application/grpc+proto`), `;` (a
/// parameter) or `-web` (gRPC-Web, whose trailers-only responses carry
/// `grpc-status` in the headers too), compared case-insensitively as HTTP
/// compares media types (RFC 9110 §8.3.1; as grpc-dotnet's
/// `CommonGrpcProtocolHelpers.IsContentType` and YARP). `application/grpcx`
/// and `text/plain` are not gRPC.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes();
    let Some((head, rest)) = value.split_at_checked(GRPC.len()) else {
        return false;
    };
    head.eq_ignore_ascii_case(GRPC)
        && match rest {
            [] | [b'+' | b';', ..] => true,
            _ => rest
                .get(..4)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"-web")),
        }
}

/// The HTTP status a gRPC status code stands for, as Envoy's
/// `Grpc::Utility::grpcToHttpStatus`: OK 200, CANCELLED 499, UNKNOWN 500,
/// INVALID_ARGUMENT 400, DEADLINE_EXCEEDED 504, NOT_FOUND 404,
/// ALREADY_EXISTS 409, PERMISSION_DENIED 403, RESOURCE_EXHAUSTED 429,
/// FAILED_PRECONDITION 400, ABORTED 409, OUT_OF_RANGE 400, UNIMPLEMENTED
/// 501, INTERNAL 500, UNAVAILABLE 503, DATA_LOSS 500, UNAUTHENTICATED 401;
/// any other code 500.
pub fn http_status_for(code: i32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        2 => 500,
        3 => 400,
        4 => 504,
        5 => 404,
        6 => 409,
        7 => 403,
        8 => 429,
        9 => 400,
        10 => 409,
        11 => 400,
        12 => 501,
        13 => 500,
        14 => 503,
        15 => 500,
        16 => 401,
        _ => 500,
    }
}

/// The HTTP status the balancer should classify a response by: for a gRPC
/// response (gRPC content type, HTTP 200) whose headers carry a
/// `grpc-status` (a trailers-only response), the status
/// [`http_status_for`] that code; otherwise `status` itself.
pub fn effective_status(status: StatusCode, headers: &HeaderMap) -> u16 {
    if status == StatusCode::OK && is_grpc(headers) {
        if let Some(code) = grpc_status(headers) {
            return http_status_for(code);
        }
    }
    status.as_u16()
}

/// A 200 to a gRPC call that is not a gRPC answer: no gRPC content type
/// and no `grpc-status` in its headers (an HTTP server, not a gRPC one,
/// at the instance's address). gRPC's HTTP-to-gRPC status mapping makes
/// it UNKNOWN, so the balancer classifies it as
/// [`http_status_for`]`(2)` (500), while the caller's client still reads
/// the response as it came. A response extension set by
/// `grpc::GrpcStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotGrpcAnswer;

/// The HTTP status the balancer classifies `response` by, as
/// [`effective_status`], except for a 200 marked [`NotGrpcAnswer`]: 500.
pub(crate) fn classified_status<B>(response: &Response<B>) -> u16 {
    if response.extensions().get::<NotGrpcAnswer>().is_some() {
        return http_status_for(2);
    }
    effective_status(response.status(), response.headers())
}

/// When a call must end (a request extension set by
/// `grpc::GrpcRetry` from its `grpc-timeout`), read by
/// `grpc::GrpcStatus` to send each attempt the time left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallDeadline(pub(crate) Instant);

/// Whether a DEADLINE_EXCEEDED from a server, answering at `now` an
/// attempt sent at `sent` under the call's deadline `at`, is that
/// deadline running out: it came in the last fifth of the time the
/// attempt was given, or its last 100 ms, but at most its last half. A
/// server passing the deadline on to its own calls answers so about when
/// it ends; one answering so well before fails calls of its own accord,
/// and counts as failing (helper 191: an instance answering
/// DEADLINE_EXCEEDED at once to every call with a deadline was never
/// ejected; helper 195: without the half, any answer to a call given
/// 100 ms or less was excused).
pub(crate) fn deadline_reached(sent: Instant, at: Instant, now: Instant) -> bool {
    let given = at.saturating_duration_since(sent);
    let slack = (given / 5).max(Duration::from_millis(100)).min(given / 2);
    now.checked_add(slack).is_none_or(|t| t >= at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `grpc-status` tonic does not read as a code is UNKNOWN, as the
    /// caller is told (before, `-0` counted as OK and ` 14`, `014`, `+14`
    /// as UNAVAILABLE).
    #[test]
    fn grpc_status_is_read_as_tonic_reads_it() {
        let read = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-status", http::HeaderValue::from_static(v));
            grpc_status(&h)
        };
        for (value, code) in [
            ("0", 0),
            ("14", 14),
            ("16", 16),
            ("07", 2),
            ("-0", 2),
            (" 14", 2),
            ("014", 2),
            ("+14", 2),
            ("17", 2),
            ("99", 2),
            ("", 2),
            ("ok", 2),
        ] {
            assert_eq!(read(value), Some(code), "{value:?}");
        }
        assert_eq!(grpc_status(&HeaderMap::new()), None);
    }

    /// Every value of one or two printable bytes is read as tonic reads
    /// it. Two digits below 10 (`00` to `09`) were read as their code
    /// (`00` as OK) where tonic's caller got UNKNOWN: 9 of the 9 120 values
    /// (`02` is UNKNOWN either way) were read otherwise than tonic; now 0.
    #[cfg(feature = "grpc")]
    #[test]
    fn every_short_grpc_status_is_read_as_tonic_reads_it() {
        let mut values: Vec<Vec<u8>> = (b' '..=b'~').map(|b| vec![b]).collect();
        for a in b' '..=b'~' {
            values.extend((b' '..=b'~').map(|b| vec![a, b]));
        }
        let differ: Vec<String> = values
            .iter()
            .filter_map(|v| {
                let mut h = HeaderMap::new();
                h.insert("grpc-status", http::HeaderValue::from_bytes(v).ok()?);
                let tonic = tonic::Code::from_bytes(v) as i32;
                (grpc_status(&h) != Some(tonic)).then(|| String::from_utf8_lossy(v).into_owned())
            })
            .collect();
        println!("read otherwise than tonic: {} {differ:?}", differ.len());
        assert!(differ.is_empty(), "{differ:?}");
    }

    /// A gRPC content type is told from others as HTTP compares media
    /// types: case-insensitively, and only `application/grpc` itself or with
    /// a codec, a parameter or gRPC-Web's suffix. Before, `Application/GRPC`
    /// was not gRPC (a trailers-only UNAVAILABLE counted as a success) and
    /// `application/grpcfoo` was.
    #[test]
    fn a_grpc_content_type_is_compared_as_a_media_type() {
        let grpc = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(v),
            );
            h.insert("grpc-status", http::HeaderValue::from_static("14"));
            (is_grpc(&h), effective_status(StatusCode::OK, &h))
        };
        for v in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
            "Application/GRPC",
            "APPLICATION/GRPC+PROTO",
            "application/grpc-web",
            "application/grpc-web-text+proto",
            "application/GRPC-Web+proto",
        ] {
            assert_eq!(grpc(v), (true, 503), "{v}");
        }
        for v in [
            "application/grpcfoo",
            "application/grpc_web",
            "application/grp",
            "text/plain",
            "",
        ] {
            assert_eq!(grpc(v), (false, 200), "{v}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }
}
