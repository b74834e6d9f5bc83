//! Host validation and URI authorities: DNS names, IPv4, and IPv6 with
//! optional zone ids (RFC 4007 text form, RFC 6874 URI form).

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use bytes::Bytes;
use http::uri::Authority;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::{InstanceError, InstanceErrorKind};

/// Characters of an IPv6 zone id that stay as they are in a URI (RFC 6874:
/// `unreserved`); everything else is percent-encoded.
const ZONE_ID_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Longest host accepted, in bytes: a DNS name's limit in text form
/// (RFC 1035 §2.3.4; 255 octets on the wire).
const MAX_HOST_LEN: usize = 253;

/// The bytes a host name may hold: letters, digits, `-`, `.`, `_` (one
/// table lookup per byte; a registry decode checks every instance's host).
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0u8;
    loop {
        table[b as usize] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
        if b == u8::MAX {
            break table;
        }
        b += 1;
    }
};

/// Why an unspecified, multicast or broadcast address is refused: it
/// names no one host to send a request to (a connection to `0.0.0.0` or
/// `::` reaches the caller's own host on Linux; helper 192 found a DNS
/// answer of `0.0.0.0` listed as an instance).
const NOT_ONE_HOST: &str = "an unspecified, multicast or broadcast address names no one host";

fn no_one_host(ip: Ipv4Addr) -> bool {
    ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast()
}

/// Whether `host` is an IP address that names no one host (unspecified,
/// multicast, broadcast, or one of these IPv4-mapped), which
/// [`build_authority`] refuses.
#[cfg(feature = "eureka")]
pub(crate) fn names_no_one_host(host: &str) -> bool {
    let trimmed = host.trim();
    if !trimmed.contains(':') {
        // IPv4: the bare dotted quad only (`[0.0.0.0]`, `0.0.0.0%eth0` are
        // malformed, refused as such).
        return trimmed.parse().is_ok_and(no_one_host);
    }
    let bare = (trimmed.strip_prefix('[').and_then(|h| h.strip_suffix(']'))).unwrap_or(trimmed);
    let bare = bare.split_once('%').map_or(bare, |(addr, _)| addr);
    bare.parse()
        .is_ok_and(|ip| ip_names_no_one_host(std::net::IpAddr::V6(ip)))
}

/// Whether `ip` names no one host: unspecified, multicast, broadcast, or
/// one of these IPv4-mapped.
#[cfg(any(feature = "eureka", feature = "dns"))]
pub(crate) fn ip_names_no_one_host(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(ip) => no_one_host(ip),
        std::net::IpAddr::V6(ip) => {
            ip.is_unspecified() || ip.is_multicast() || ip.to_ipv4_mapped().is_some_and(no_one_host)
        }
    }
}

/// Normalises and checks `host`. Gives the normalised host and, for IPv6,
/// the `[host]:port` authority; for a name or an IPv4 address the authority
/// is left to [`name_authority`] (the checks here are stricter than
/// `http`'s, so it cannot fail later).
pub(super) fn build_authority(
    host: &str,
    port: u16,
) -> Result<(Cow<'_, str>, Option<Authority>), InstanceError> {
    let invalid =
        |reason: &str| InstanceError::new(InstanceErrorKind::InvalidHost, host, reason.to_owned());
    let trimmed = host.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty host"));
    }
    let bracketed = trimmed.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let bare = bracketed.unwrap_or(trimmed);
    if bare.is_empty() {
        return Err(invalid("empty host"));
    }
    // A fully qualified name's trailing dot is not counted, as DNS has it.
    if bare.strip_suffix('.').unwrap_or(bare).len() > MAX_HOST_LEN {
        return Err(invalid("longer than 253 bytes (RFC 1035)"));
    }
    if bracketed.is_some() && !bare.contains(':') {
        return Err(invalid("brackets are only for IPv6 addresses"));
    }

    // IPv6, possibly with a zone id.
    if bare.contains(':') {
        let (addr, zone) = match bare.split_once('%') {
            // In URI form (`[fe80::1%25eth0]`) the `%` is itself encoded.
            Some((addr, zone)) if bracketed.is_some() => {
                (addr, Some(zone.strip_prefix("25").unwrap_or(zone)))
            }
            Some((addr, zone)) => (addr, Some(zone)),
            None => (bare, None),
        };
        let ip = Ipv6Addr::from_str(addr).map_err(|_| invalid("not a valid IPv6 address"))?;
        if ip.is_unspecified() || ip.is_multicast() || ip.to_ipv4_mapped().is_some_and(no_one_host)
        {
            return Err(invalid(NOT_ONE_HOST));
        }
        let (stored, text) = match zone {
            Some("") => return Err(invalid("empty IPv6 zone id")),
            // `host()` and the default id keep the zone as written: a
            // control character there would reach every log line and
            // header that prints them.
            Some(zone) if zone.chars().any(char::is_control) => {
                return Err(invalid("control character in IPv6 zone id"));
            }
            Some(zone) => (
                format!("{ip}%{zone}"),
                format!(
                    "[{ip}%25{}]:{port}",
                    utf8_percent_encode(zone, ZONE_ID_KEEP)
                ),
            ),
            None => (ip.to_string(), format!("[{ip}]:{port}")),
        };
        let authority = Authority::from_str(&text).map_err(|e| invalid(&e.to_string()))?;
        return Ok((Cow::Owned(stored), Some(authority)));
    }

    // IPv4 (the IPv6 forms all hold a ':'): Rust's parser takes only the
    // canonical dotted quad, so the text is already normal.
    if let Ok(ip) = bare.parse::<Ipv4Addr>() {
        if no_one_host(ip) {
            return Err(invalid(NOT_ONE_HOST));
        }
        return Ok((Cow::Borrowed(bare), None));
    }

    // A DNS name: letters, digits, '-', '.', '_' only (no userinfo, no port).
    if !bare.bytes().all(|b| NAME_BYTES[usize::from(b)]) {
        return Err(invalid(
            "a host name may hold only letters, digits, '-', '.' and '_'",
        ));
    }
    check_labels(bare).map_err(invalid)?;
    Ok((Cow::Borrowed(bare), None))
}

/// Whether the last label of `name` is a number (all digits, or `0x`
/// and hex digits), which makes the whole name an IPv4 address to
/// `inet_aton` (the system resolver) and to URL parsers (WHATWG's "ends
/// in a number"), in forms Rust's parser refuses: `010.0.0.1` (octal,
/// 8.0.0.1), `127.1`, `0x7f.1`, `2130706433`; or no address at all
/// (`256.1.1.1`, `1.2.3.4.5`), which reqwest refuses.
fn ends_in_a_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    hex.is_some() || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

/// Longest label of a DNS name, in bytes (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Checks the labels of a DNS name (one trailing dot allowed): none empty
/// (`a..b`, `.a`, the root `.` alone) and none over [`MAX_LABEL_LEN`]
/// bytes. The resolver refuses such names before asking any server, so an
/// instance with one could never be reached: every pick of it would cost
/// a failed attempt.
fn check_labels(name: &str) -> Result<(), &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("the DNS root `.` names no host");
    }
    if ends_in_a_number(name) {
        return Err(
            "a name ending in a number is an IPv4 address to resolvers and URL \
             parsers (`010.0.0.1` is 8.0.0.1, `127.1` is 127.0.0.1): write it as a \
             dotted quad without leading zeros",
        );
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label in host name (`..`, or a leading `.`)");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("a label of the host name is longer than 63 bytes (RFC 1035)");
        }
    }
    Ok(())
}

/// `host:port` for a host [`build_authority`] accepted as a name or an
/// IPv4 address. Those hold only letters, digits, `-`, `.` and `_`, which
/// `http`'s authority parser always takes, so the fallback (an authority
/// no server answers to) is never used; it keeps this path free of panics.
pub(super) fn name_authority(host: &str, port: u16) -> Authority {
    host_port(host, port).unwrap_or_else(|_| Authority::from_static("invalid.invalid:9"))
}

/// `host:port` as an [`Authority`], written straight into one buffer of
/// the exact size (no `format!`, no second copy: `Bytes` takes the buffer
/// over) and checked by `http`'s authority parser.
fn host_port(host: &str, port: u16) -> Result<Authority, http::uri::InvalidUri> {
    let mut digits = [0u8; 5];
    let mut n = port;
    let mut start = digits.len();
    loop {
        start -= 1;
        // `n % 10` is a single decimal digit.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (n % 10) as u8;
        digits[start] = b'0' + digit;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = &digits[start..];
    let mut text = Vec::with_capacity(host.len() + 1 + digits.len());
    text.extend_from_slice(host.as_bytes());
    text.push(b':');
    text.extend_from_slice(digits);
    Authority::from_maybe_shared(Bytes::from(text))
}

/// Removes every `Host` field of `headers` unless there is one and it
/// names `authority` (ASCII case aside).
///
/// Over HTTP/2 (and HTTP/3) the authority travels as `:authority`, and
/// RFC 9113 §8.3.1 says "Clients MUST NOT generate a request with a Host
/// header field that differs from the `:authority` pseudo-header field";
/// servers reject such requests as malformed (Go's `net/http`,
/// golang/go#80065; Vert.x, eclipse-vertx/vert.x#4776; python-hyper's h2,
/// python-hyper/h2#246). The balancer moves a request's authority to the
/// picked instance, so a `Host` the caller set for the service (a gateway
/// forwarding its incoming headers) would now disagree with it.
pub(crate) fn drop_host_differing_from(headers: &mut http::HeaderMap, authority: &str) {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let agrees = match (hosts.next(), hosts.next()) {
        (None, _) => return,
        (Some(host), None) => host.as_bytes().eq_ignore_ascii_case(authority.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !agrees {
        headers.remove(http::header::HOST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `Host` naming the authority (any ASCII case) stays; one naming
    /// anything else, or several, are all removed.
    #[test]
    fn only_a_single_host_naming_the_authority_stays() {
        let hosts = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for v in values {
                headers.append(http::header::HOST, http::HeaderValue::from_str(v).unwrap());
            }
            drop_host_differing_from(&mut headers, "10.0.0.1:8080");
            let left: Vec<_> = headers
                .get_all(http::header::HOST)
                .iter()
                .cloned()
                .collect();
            left
        };
        assert_eq!(hosts(&[]), Vec::<http::HeaderValue>::new());
        assert_eq!(hosts(&["10.0.0.1:8080"]), ["10.0.0.1:8080"]);
        assert_eq!(hosts(&["EXAMPLE:1"]), Vec::<http::HeaderValue>::new());
        assert_eq!(hosts(&["10.0.0.1"]), Vec::<http::HeaderValue>::new());
        assert_eq!(
            hosts(&["10.0.0.1:8080", "10.0.0.1:8080"]),
            Vec::<http::HeaderValue>::new()
        );
        assert_eq!(
            hosts(&["10.0.0.1:8080", "svc"]),
            Vec::<http::HeaderValue>::new()
        );
    }
}
