//! What [`EurekaRegistrationBuilder::build`](super::EurekaRegistrationBuilder::build)
//! refuses in the app name, instance id, page paths and metadata: text the
//! server would take but could not serve back (a lease URL over its request
//! limit, metadata that breaks its XML registry).

use std::collections::BTreeMap;

use crate::error::{BuildError, quote};

/// The longest path and query of a lease call a registration sends, in
/// bytes once percent-encoded, as the request line carries them: 7 KiB.
///
/// The app name and the instance id are path segments of every heartbeat,
/// status and cancel call, percent-encoded (a byte outside
/// `A-Za-z0-9-._~` takes 3). Eureka's server (Tomcat, as Jetty and nginx)
/// refuses a request whose request line and headers pass 8 KiB with 400,
/// and a heartbeat answered 400 never registers again: an id of 8 192
/// plain bytes (or 1 400 `é`) registered, then every heartbeat failed and
/// the instance was evicted for good. The longest call,
/// `PUT {server path}/apps/{APP}/{id}/status?value=OUT_OF_SERVICE&lastDirtyTimestamp=`
/// and 19 digits, must fit in this against every configured server URL's
/// path; the 1 KiB left is for the method, version and headers.
pub const MAX_LEASE_PATH_BYTES: usize = 7 * 1024;

/// What follows the id in the longest lease call (the status call to
/// OUT_OF_SERVICE), without its stamp.
const STATUS_CALL_TAIL: &str = "/status?value=OUT_OF_SERVICE&lastDirtyTimestamp=";

/// Digits of the longest `lastDirtyTimestamp` sent (`i64::MAX`).
const STAMP_DIGITS: usize = 19;

fn invalid(key: &'static str, reason: String) -> BuildError {
    BuildError::invalid(key, reason)
}

/// Letters, digits, `-`, `_` and `.`; not `.` or `..`.
pub(super) fn check_app(app: &str) -> Result<(), BuildError> {
    let ok = !app.is_empty()
        && app != "."
        && app != ".."
        && app
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "app name",
            format!("`{}`: use letters, digits, `-`, `_` and `.`", quote(app)),
        ))
    }
}

/// Not empty, `.` or `..`; no `/`, `%`, `\`, control character or
/// other character XML 1.0 forbids (it is a path segment of every lease
/// call, and Eureka writes it into its XML registry). Its length is
/// bounded with the lease call's ([`check_lease_path`]).
///
/// A `\` (sent as `%5C`) registered (204), then Tomcat, which decodes it
/// and refuses a backslash in a path, answered every heartbeat, status
/// call, read-back and cancel of the instance 400: its drain never landed,
/// its shutdown failed, and it was served UP for its lease (attack 64c).
pub(super) fn check_id(id: &str) -> Result<(), BuildError> {
    if id.trim().is_empty()
        || id == "."
        || id == ".."
        || id.contains(['/', '%', '\\'])
        || id.chars().any(|c| c.is_control() || !is_xml_char(c))
    {
        return Err(invalid(
            "instance id",
            format!(
                "`{}`: empty, `.`/`..`, or holds `/`, `%`, `\\`, a control character or \
                 U+FFFE/U+FFFF (Eureka's server refuses a backslash in a path with 400, and \
                 writes the id into its XML registry)",
                quote(id)
            ),
        ));
    }
    Ok(())
}

/// Registered text Eureka writes into its XML registry (a health or status
/// page path): no character XML 1.0 forbids. A NUL or U+FFFF in
/// `healthCheckUrl` registered, and Eureka served `&#x0;` in `GET /apps/`,
/// malformed for every XML reader (attack 64c).
pub(super) fn check_xml_text(key: &'static str, text: &str) -> Result<(), BuildError> {
    match text.chars().find(|&c| !is_xml_char(c)) {
        None => Ok(()),
        Some(c) => Err(invalid(
            key,
            format!(
                "`{}` holds U+{:04X}, a character XML 1.0 forbids (Eureka writes it into its \
                 XML registry, which it would make malformed for every reader)",
                quote(text),
                u32::from(c)
            ),
        )),
    }
}

/// Bytes of `text` percent-encoded as a path segment (the registration's
/// `PATH_SEGMENT`: all but RFC 3986 `unreserved` escaped).
fn encoded_len(text: &str) -> usize {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                1
            } else {
                3
            }
        })
        .sum()
}

/// The longest path a server URL puts before `/apps/…` (as sent: the
/// URL's path, already percent-encoded, without its trailing `/`). URLs
/// that do not parse are left to the connection's own check.
fn longest_server_path(urls: &[String]) -> usize {
    urls.iter()
        .filter_map(|u| url::Url::parse(u.trim()).ok())
        .map(|u| u.path().trim_end_matches('/').len())
        .max()
        .unwrap_or(0)
}

/// The longest lease call (`{server path}/apps/{APP}/{id}/status?value=
/// OUT_OF_SERVICE&lastDirtyTimestamp=` and 19 digits) within
/// [`MAX_LEASE_PATH_BYTES`] against every server URL. Over it, the error
/// names the app name when it leaves no room for a 1-byte id or the id is
/// the default one (made from the host and the app), else the instance id,
/// with the encoded lengths and the limit.
pub(super) fn check_lease_path(
    urls: &[String],
    app: &str,
    id: &str,
    id_given: bool,
) -> Result<(), BuildError> {
    let server = longest_server_path(urls);
    let around = server + "/apps/".len() + encoded_len(app) + 1 + STATUS_CALL_TAIL.len() + STAMP_DIGITS;
    let id_len = encoded_len(id);
    let total = around + id_len;
    if total <= MAX_LEASE_PATH_BYTES {
        return Ok(());
    }
    let call = format!(
        "the longest lease call (`PUT …/apps/{{APP}}/{{id}}{STATUS_CALL_TAIL}` and {STAMP_DIGITS} \
         digits, after a server path of {server} bytes) would be {total} bytes once \
         percent-encoded, over the limit of {MAX_LEASE_PATH_BYTES} (MAX_LEASE_PATH_BYTES: \
         Eureka's server answers a request line and headers over 8 KiB with 400, and a \
         heartbeat answered 400 never registers again)"
    );
    if !id_given || around + 1 > MAX_LEASE_PATH_BYTES {
        return Err(invalid(
            "app name",
            format!(
                "{} bytes once percent-encoded, with an instance id of {id_len} \
                 ({}): {call}",
                encoded_len(app),
                if id_given { "given" } else { "the default, from the host and the app" },
            ),
        ));
    }
    Err(invalid(
        "instance id",
        format!(
            "{id_len} bytes once percent-encoded ({} raw; a byte outside `A-Za-z0-9-._~` \
             takes 3), at most {} with this app and these server URLs: {call}",
            id.len(),
            MAX_LEASE_PATH_BYTES - around,
        ),
    ))
}

/// Eureka writes each metadata key as an XML element name and each value
/// as its text in the XML registry (`GET /apps/` with `Accept:
/// application/xml`, one document for every app): an empty key (`<>`), one
/// that is no XML name (a space, `<`, a leading digit) or a value holding a
/// character XML 1.0 forbids (`&#x0;`) made the whole document malformed
/// for every XML reader. Keys must be XML names without `:` (NCName: an
/// undeclared prefix to namespace-aware readers); values must not hold a
/// C0 control other than tab, LF and CR, nor U+FFFE or U+FFFF. Errors name
/// the key (quoted, cut), never the value, which may be a secret.
pub(super) fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), BuildError> {
    for (key, value) in metadata {
        if !is_nc_name(key) {
            return Err(invalid(
                "metadata",
                format!(
                    "key `{}` is not an XML name (a letter or `_` first, then letters, digits, \
                     `-`, `_` or `.`; no `:`): Eureka writes metadata keys as XML element \
                     names, and this one would make its whole XML registry malformed",
                    quote(key)
                ),
            ));
        }
        if let Some(c) = value.chars().find(|&c| !is_xml_char(c)) {
            return Err(invalid(
                "metadata",
                format!(
                    "the value of key `{}` holds U+{:04X}, a character XML 1.0 forbids \
                     (Eureka writes it into its XML registry, which it would make malformed \
                     for every reader); the value is not shown",
                    quote(key),
                    u32::from(c)
                ),
            ));
        }
    }
    Ok(())
}

/// XML 1.0 `Char`: tab, LF, CR and everything from U+0020 but U+FFFE and
/// U+FFFF (Rust strings hold no surrogates).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// XML 1.0 (fifth edition) `NameStartChar` without `:`.
fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// An XML `NCName`: a `Name` without `:`.
fn is_nc_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(is_name_start)
        && chars.all(|c| {
            is_name_start(c)
                || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_keys_are_xml_names_and_values_xml_text() {
        for key in ["zone", "management.port", "_x", "a-b_c.d", "é", "v1", "prometheus.io"] {
            assert!(is_nc_name(key), "{key:?}");
        }
        for key in ["", "1a", "-a", ".a", "a b", "a:b", "<a>", "a\0", "a&b", "@class", "a$b"] {
            assert!(!is_nc_name(key), "{key:?}");
        }
        for ok in ["", "a\tb\r\nc", "\u{7f}", "\u{FFFD}", "😀"] {
            assert!(ok.chars().all(is_xml_char), "{ok:?}");
        }
        for bad in ['\0', '\u{1}', '\u{1b}', '\u{1f}', '\u{FFFE}', '\u{FFFF}'] {
            assert!(!is_xml_char(bad), "{bad:?}");
        }
    }

    #[test]
    fn errors_name_the_key_quoted_never_the_value() {
        let meta = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        let e = check_metadata(&meta("zone", "S3cret\u{0}")).unwrap_err().to_string();
        assert!(e.contains("`zone`") && e.contains("U+0000") && !e.contains("S3cret"), "{e}");
        let long = format!("a\r\n{}", "k".repeat(1 << 16));
        let e = check_metadata(&meta(&long, "S3cret")).unwrap_err().to_string();
        assert!(!e.contains('\n') && !e.contains("S3cret") && e.len() < 600, "{e}");
        assert!(check_metadata(&meta("zone", "zone-a\n")).is_ok());
    }

    #[test]
    fn the_lease_path_counts_encoded_bytes_and_the_server_path() {
        let urls = ["http://h:1/eureka".to_owned()];
        let around = "/eureka/apps/APP/".len() + STATUS_CALL_TAIL.len() + STAMP_DIGITS;
        let room = MAX_LEASE_PATH_BYTES - around;
        assert!(check_lease_path(&urls, "APP", &"a".repeat(room), true).is_ok());
        let e = check_lease_path(&urls, "APP", &"a".repeat(room + 1), true).unwrap_err();
        assert_eq!(e.key(), Some("instance id"));
        assert!(e.to_string().contains(&format!("at most {room}")), "{e}");
        assert!(check_lease_path(&urls, "APP", &"é".repeat(room / 6 + 1), true).is_err());
        assert!(check_lease_path(&urls, "APP", &"é".repeat(room / 6), true).is_ok());
        // A longer server path leaves less room.
        let deep = [urls[0].clone(), "http://h:1/a/much/longer/path/eureka/".to_owned()];
        assert!(check_lease_path(&deep, "APP", &"a".repeat(room), true).is_err());
        // An app that leaves no room for an id is named.
        let app = "A".repeat(MAX_LEASE_PATH_BYTES);
        let e = check_lease_path(&urls, &app, "i", true).unwrap_err();
        assert_eq!(e.key(), Some("app name"));
        let e = check_lease_path(&urls, "APP", &"a".repeat(room + 1), false).unwrap_err();
        assert_eq!(e.key(), Some("app name"));
    }
}
