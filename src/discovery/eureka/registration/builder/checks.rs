//! What [`EurekaRegistrationBuilder::build`](super::EurekaRegistrationBuilder::build)
//! refuses in the app name and instance id: text the server would take
//! but could not serve back (a lease URL over its request limit).

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

/// Not empty, `.` or `..`; no `/`, `%` or control character (it is a path
/// segment of every lease call). Its length is bounded with the lease
/// call's ([`check_lease_path`]).
pub(super) fn check_id(id: &str) -> Result<(), BuildError> {
    if id.trim().is_empty()
        || id == "."
        || id == ".."
        || id.contains('/')
        || id.contains('%')
        || id.chars().any(char::is_control)
    {
        return Err(invalid(
            "instance id",
            format!(
                "`{}`: empty, `.`/`..`, or holds `/`, `%` or a control character",
                quote(id)
            ),
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
