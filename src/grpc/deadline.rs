//! A gRPC call's deadline (the `grpc-timeout` header, gRPC's
//! `PROTOCOL-HTTP2.md`) across the balancer's attempts: the call ends at
//! its deadline whatever the retries (gRFC A6: the deadline covers every
//! attempt), and each attempt tells the server the time left, not the
//! whole of it again.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

pub(crate) use crate::service::grpc_status::{CallDeadline, deadline_reached};

/// The `grpc-timeout` header.
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The timeout a `grpc-timeout` value names (`1*8DIGIT` and a unit of
/// `H`, `M`, `S`, `m`, `u`, `n`), read as tonic reads it; `None` when
/// absent or malformed (no deadline, as tonic then).
#[cfg_attr(not(feature = "grpc"), allow(dead_code))]
pub(crate) fn parse_grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    let split = text.len().checked_sub(1)?;
    let (digits, unit) = (text.get(..split)?, text.get(split..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.checked_mul(3_600)?),
        "M" => Duration::from_secs(value.checked_mul(60)?),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// `left` as a `grpc-timeout` value: the finest unit whose count fits in
/// 8 digits (as tonic writes it), rounded down so that it never names more
/// time than is left.
pub(crate) fn grpc_timeout_value(left: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let secs = u128::from(left.as_secs());
    let (value, unit) = [
        (left.as_nanos(), 'n'),
        (left.as_micros(), 'u'),
        (left.as_millis(), 'm'),
        (secs, 'S'),
        (secs / 60, 'M'),
    ]
    .into_iter()
    .find(|(value, _)| *value <= MAX)
    .unwrap_or(((secs / 3_600).min(MAX), 'H'));
    // Digits and a unit letter: always a valid header value.
    HeaderValue::try_from(format!("{value}{unit}"))
        .unwrap_or_else(|_| HeaderValue::from_static("0n"))
}

/// Sets an attempt's `grpc-timeout` to the time left before its call's
/// deadline, if the call has one.
pub(crate) fn send_time_left<B>(request: &mut http::Request<B>) {
    if let Some(CallDeadline(at)) = request.extensions().get::<CallDeadline>().copied() {
        let left = at.saturating_duration_since(Instant::now());
        request
            .headers_mut()
            .insert(GRPC_TIMEOUT, grpc_timeout_value(left));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &'static str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static(value));
        parse_grpc_timeout(&headers)
    }

    /// The caller's deadline when answered in the last fifth of the time
    /// given, or its last 100 ms, at most its last half; well before, the
    /// server's own failure.
    #[test]
    fn a_deadline_is_reached_in_the_last_fifth_or_100_ms() {
        let sent = Instant::now();
        let ms = Duration::from_millis;
        let at = sent + ms(30_000);
        assert!(!deadline_reached(sent, at, sent + ms(1)));
        assert!(!deadline_reached(sent, at, sent + ms(23_999)));
        assert!(deadline_reached(sent, at, sent + ms(24_000)));
        assert!(deadline_reached(sent, at, sent + ms(31_000)), "past it");
        let at = sent + ms(150);
        assert!(!deadline_reached(sent, at, sent + ms(74)));
        assert!(deadline_reached(sent, at, sent + ms(75)), "the last half");
        let at = sent + ms(50);
        assert!(!deadline_reached(sent, at, sent + ms(1)), "at once");
        assert!(deadline_reached(sent, at, sent + ms(25)));
        assert!(deadline_reached(sent, sent, sent), "no time given");
    }

    #[test]
    fn grpc_timeouts_read_and_written_as_tonic_does() {
        assert_eq!(parse("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3_600)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S", "+1S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout_value(Duration::from_millis(250)), "250000u");
        assert_eq!(grpc_timeout_value(Duration::from_nanos(7)), "7n");
        assert_eq!(grpc_timeout_value(Duration::from_secs(30)), "30000000u");
        assert_eq!(grpc_timeout_value(Duration::from_secs(300)), "300000m");
        assert_eq!(grpc_timeout_value(Duration::ZERO), "0n");
        assert_eq!(grpc_timeout_value(Duration::MAX), "99999999H");
        for d in [1u64, 999, 123_456_789, 3_600_000_000_000] {
            let d = Duration::from_nanos(d);
            let mut headers = HeaderMap::new();
            headers.insert(GRPC_TIMEOUT, grpc_timeout_value(d));
            let back = parse_grpc_timeout(&headers).expect("parses");
            assert!(
                back <= d && d - back < d / 1_000 + Duration::from_nanos(1),
                "{d:?}"
            );
        }
    }
}
