//! A reqwest error on a redirect's hop away from the instance (see
//! [`failed_past_redirect`]).

use crate::error::BoxError;

/// Whether `error` is reqwest's failure on a redirect it followed away
/// from `endpoint` (a client that follows redirects, such as
/// `reqwest::Client::new()`): reqwest names a `Location` it cannot follow
/// (`com.example.app://cb`, `ftp:`) in a builder error, another host or
/// port than the instance's. The instance had answered (its 3xx), so the
/// request was not "never sent"; read as the instance's connect failure
/// (a builder error on the instance's own URL is one), a POST the instance
/// had processed went to another instance too, and the redirecting
/// instance's breaker opened (helper 117). A scheme other than http and
/// https is a `Location` wherever it points. Not told apart: a redirect
/// target refusing the connection (reqwest's connect error then names the
/// instance's URL, the target's address only in hyper-util's private
/// error) and a redirect to another path of the same host and port;
/// [`ReqwestService`](crate::ReqwestService)'s docs say to follow no
/// redirects.
pub(in crate::service) fn failed_past_redirect(
    error: &BoxError,
    endpoint: &crate::instance::Endpoint,
) -> bool {
    for e in crate::error::chain(error.as_ref()) {
        if let Some(url) = e
            .downcast_ref::<reqwest::Error>()
            .and_then(reqwest::Error::url)
        {
            // The instance's URL is http or https; another scheme is a
            // `Location` (on the instance's host and port too).
            if !matches!(url.scheme(), "http" | "https") {
                return true;
            }
            let authority = endpoint.authority();
            let same_port = authority
                .port_u16()
                .is_none_or(|p| url.port_or_known_default() == Some(p));
            return !(same_port && same_host(url, authority.host()));
        }
    }
    false
}

/// Whether `url`'s host is `host` (an authority's: a name, an IPv4
/// address or a bracketed IPv6 one, a zone id after `%`): addresses are
/// compared as addresses, since reqwest writes an IPv4-mapped IPv6
/// address as `[::ffff:7f00:1]` where the instance says
/// `[::ffff:127.0.0.1]` (read as another host, a real connect failure of
/// that instance was the caller's error, never retried nor counted;
/// helper 121); names case-insensitively, without a trailing dot.
fn same_host(url: &reqwest::Url, host: &str) -> bool {
    let bare = |h: &str| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        let h = h.split('%').next().unwrap_or(h);
        h.trim_end_matches('.').to_owned()
    };
    let Some(theirs) = url.host_str().map(bare) else {
        return false;
    };
    let ours = bare(host);
    let ip = |h: &str| {
        h.parse::<std::net::IpAddr>().ok().map(|ip| match ip {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        })
    };
    match (ip(&theirs), ip(&ours)) {
        (Some(a), Some(b)) => a == b,
        (None, None) => theirs.eq_ignore_ascii_case(&ours),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_compared_as_addresses_or_names() {
        let same = |url: &str, host: &str| same_host(&reqwest::Url::parse(url).unwrap(), host);
        assert!(same("http://[::ffff:7f00:1]:80/", "[::ffff:127.0.0.1]"));
        assert!(same("http://127.0.0.1/", "[::ffff:127.0.0.1]"));
        assert!(same("http://[::ffff:127.0.0.1]/", "127.0.0.1"));
        assert!(same("http://[::1]/", "[::1%lo]"));
        assert!(same("http://LOCALHOST./", "localhost"));
        assert!(same("http://users.example/", "Users.Example."));
        assert!(!same("http://10.0.0.1/", "10.0.0.2"));
        assert!(!same("http://[::1]/", "127.0.0.1"));
        assert!(!same("http://a.example/", "b.example"));
        assert!(!same("http://127.0.0.1/", "localhost"));
    }
}
