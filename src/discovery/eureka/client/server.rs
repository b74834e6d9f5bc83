//! Server URLs: credentials turned into a basic-auth header that is never
//! shown, and comma-separated lists split outside the credentials.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use http::HeaderValue;

use super::EurekaHttp;
use super::transport::Transport;
use crate::error::{BuildError, quote, redact};

/// Splits Spring's comma-separated `defaultZone` list outside
/// credentials: in `http://user:p,w@host/eureka,http://h2/eureka` the
/// first comma is part of the password. A piece that does not start a URL
/// (`scheme://`) joins the URL before it when that URL has no `@` yet and
/// an `@` follows before the next URL; other blank pieces are dropped.
pub(crate) fn split_urls(list: &str) -> Vec<String> {
    let pieces: Vec<&str> = list.split(',').collect();
    let starts_url = |p: &str| {
        p.trim_start().contains("://") && {
            let p = p.trim_start();
            p.find("://").is_some_and(|i| {
                p[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+')
            })
        }
    };
    // Whether an `@` comes in piece `i` or a later one before the next
    // URL starts: one pass from the end, so the split is linear (rescanning
    // the rest for each piece took 48 s for 40 000 pieces; helper 208).
    let mut at_ahead = vec![false; pieces.len()];
    for i in (0..pieces.len()).rev() {
        let next = (i + 1 < pieces.len() && !starts_url(pieces[i + 1])) && at_ahead[i + 1];
        at_ahead[i] = pieces[i].contains('@') || next;
    }
    let mut urls: Vec<String> = Vec::new();
    // Whether the last URL holds an `@` (kept, not searched for again).
    let mut last_has_at = false;
    for (i, piece) in pieces.iter().enumerate() {
        let in_credentials =
            !starts_url(piece) && !urls.is_empty() && !last_has_at && at_ahead[i];
        match urls.last_mut() {
            Some(last) if in_credentials => {
                last.push(',');
                last.push_str(piece);
            }
            _ => {
                urls.push((*piece).to_owned());
                last_has_at = false;
            }
        }
        last_has_at |= piece.contains('@');
    }
    urls.into_iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect()
}

/// One configured Eureka server: its base URL without credentials, and the
/// `Authorization` header made from the URL's userinfo.
#[derive(Clone)]
pub(crate) struct Server {
    pub(super) base: String,
    pub(super) auth: Option<HeaderValue>,
    /// An `https` URL: needs the rustls transport.
    pub(super) https: bool,
}

/// Why an `https` server URL is refused when the crate is built without
/// the `tls` feature.
const HTTPS_NEEDS_TLS: &str = "https server URLs need the crate feature `tls` \
     (tower-ribbon = { features = [\"eureka\", \"tls\"] }); without it only http is supported";

impl Server {
    /// Parses `http://user:pass@host:port/eureka` (trailing `/` optional);
    /// `https://` too with the `tls` feature.
    pub(crate) fn parse(raw: &str) -> Result<Self, BuildError> {
        // Redacted, then cut and escaped: a URL from a file must not forge
        // log lines through the error (CR/LF, which the URL parser drops).
        let invalid = |reason: &str| {
            BuildError::invalid("eureka server URL", format!("{}: {reason}", quote(&redact(raw))))
        };
        let url = url::Url::parse(raw.trim()).map_err(|e| invalid(&e.to_string()))?;
        let https = match url.scheme() {
            "http" => false,
            "https" if cfg!(feature = "tls") => true,
            "https" => return Err(invalid(HTTPS_NEEDS_TLS)),
            other => return Err(invalid(&format!("unsupported scheme `{}`", quote(other)))),
        };
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a server URL holds no query or fragment"));
        }
        if url.path().contains('@') {
            return Err(invalid(
                "`@` in the path: percent-encode `/`, `@` and `:` inside credentials",
            ));
        }
        let auth = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            // The bytes as written: a percent-encoded byte that is not
            // UTF-8 is sent as it is, not replaced by U+FFFD.
            let mut pair: Vec<u8> = percent_encoding::percent_decode_str(url.username()).collect();
            pair.push(b':');
            pair.extend(percent_encoding::percent_decode_str(url.password().unwrap_or("")));
            let token = base64::engine::general_purpose::STANDARD.encode(&pair);
            let mut value = HeaderValue::try_from(format!("Basic {token}"))
                .map_err(|_| invalid("credentials cannot form a header"))?;
            value.set_sensitive(true);
            Some(value)
        };
        let mut clean = url.clone();
        // Both setters only fail for URLs that cannot have credentials, which
        // an http URL with a host always can.
        let _ = clean.set_username("");
        let _ = clean.set_password(None);
        let base = clean.as_str().trim_end_matches('/').to_owned();
        Ok(Self { base, auth, https })
    }

    /// The base URL without credentials, as shown in logs and errors.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("base", &self.base)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Default body limit: 128 MiB after gzip inflation, room for 50 000
/// instances of the real server's format (about 1.1 KB each, 55 MB) with
/// large metadata.
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 128 * 1024 * 1024;

/// Settings shared by every request to the registry.
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_body_bytes: usize,
    /// How long an answer that lists nothing, beside a server that could
    /// not be asked, is held as a failed fetch (see `EurekaHttp::get`).
    pub(crate) absence_hold: Duration,
}

/// Default of `absence_hold`: Eureka's lease duration (90 s), the time
/// after which a Eureka server takes an instance that stopped renewing for
/// gone; a peer restarted empty lists the instances again within one
/// renewal interval (30 s).
pub(crate) const DEFAULT_ABSENCE_HOLD: Duration = Duration::from_secs(90);

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(8),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            absence_hold: DEFAULT_ABSENCE_HOLD,
        }
    }
}

impl HttpSettings {
    /// Refuses values that make every request fail: a zero timeout or a
    /// zero body limit, named with the range they miss.
    fn validate(&self) -> Result<(), BuildError> {
        let zero = std::time::Duration::ZERO;
        if self.connect_timeout == zero {
            return Err(BuildError::invalid(
                "eureka connect_timeout",
                "must be more than zero",
            ));
        }
        if self.request_timeout == zero {
            return Err(BuildError::invalid(
                "eureka request_timeout",
                "must be more than zero",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(BuildError::invalid(
                "eureka max_body_bytes",
                "0 is outside 1..=usize::MAX (no body would be accepted)",
            ));
        }
        Ok(())
    }
}

/// The connection settings every Eureka builder shares: server URLs in
/// order, timeouts, the body limit and (feature `tls`) the TLS settings
/// for `https` URLs.
#[derive(Default)]
pub(crate) struct Connection {
    pub(crate) urls: Vec<String>,
    pub(crate) settings: HttpSettings,
    /// Roots and client certificate for `https` URLs; `None`: the
    /// defaults of [`crate::tls::HttpsClientBuilder`] (webpki roots, no
    /// client certificate).
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::HttpsClientBuilder>,
}

impl Connection {
    pub(crate) fn add_urls(&mut self, urls: &str) {
        self.urls.extend(split_urls(urls));
    }

    /// The URLs with credentials hidden, for `Debug`.
    pub(crate) fn redacted_urls(&self) -> Vec<String> {
        self.urls.iter().map(|u| redact(u)).collect()
    }

    /// Parses the URLs, checks the settings and makes the client.
    pub(crate) fn build(self) -> Result<EurekaHttp, BuildError> {
        if self.urls.is_empty() {
            return Err(BuildError::invalid("eureka server URL", "no server URL given".to_owned()));
        }
        self.settings.validate()?;
        let servers = self
            .urls
            .iter()
            .map(|u| Server::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let transport = if servers.iter().any(|s| s.https) {
            self.tls_transport()?
        } else {
            Transport::plain(self.settings.connect_timeout)
        };
        Ok(EurekaHttp::new(servers, self.settings, transport))
    }

    /// The rustls transport, from the TLS settings given (or the
    /// defaults). A TLS setting that cannot be used (no roots, a key that
    /// does not match its certificate) is a [`BuildError::Invalid`] for
    /// the key `eureka tls`, quoting the [`TlsError`](crate::tls::TlsError).
    #[cfg(feature = "tls")]
    fn tls_transport(&self) -> Result<Transport, BuildError> {
        let config = match &self.tls {
            Some(tls) => tls.client_config(),
            None => crate::tls::HttpsClientBuilder::default().client_config(),
        }
        .map_err(|e| BuildError::invalid("eureka tls", e.to_string()))?;
        Ok(Transport::tls(self.settings.connect_timeout, config))
    }

    /// Unreachable without `tls`: `Server::parse` refuses `https` URLs.
    #[cfg(not(feature = "tls"))]
    fn tls_transport(&self) -> Result<Transport, BuildError> {
        Err(BuildError::invalid("eureka server URL", HTTPS_NEEDS_TLS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split before it was made linear: each piece rescans the rest.
    fn split_urls_rescanning(list: &str) -> Vec<String> {
        let pieces: Vec<&str> = list.split(',').collect();
        let starts_url = |p: &str| {
            let p = p.trim_start();
            p.find("://").is_some_and(|i| {
                p[..i].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+')
            })
        };
        let mut urls: Vec<String> = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let in_credentials = !starts_url(piece)
                && urls.last().is_some_and(|last| !last.contains('@'))
                && pieces[i..]
                    .iter()
                    .take_while(|p| std::ptr::eq(**p, *piece) || !starts_url(p))
                    .any(|p| p.contains('@'));
            match urls.last_mut() {
                Some(last) if in_credentials => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => urls.push((*piece).to_owned()),
            }
        }
        urls.into_iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect()
    }

    proptest::proptest! {
        /// The linear split gives the rescanning one's answer.
        #[test]
        fn the_linear_split_agrees_with_rescanning(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("http://h/eureka".to_owned()),
                    proptest::strategy::Just("https://u:p".to_owned()),
                    proptest::strategy::Just("x@h:1/eureka".to_owned()),
                    proptest::strategy::Just("@".to_owned()),
                    proptest::strategy::Just(" ".to_owned()),
                    proptest::strategy::Just(String::new()),
                    "[a-z@:/ ]{0,6}",
                ],
                0..12,
            )
        ) {
            let list = pieces.join(",");
            proptest::prop_assert_eq!(split_urls(&list), split_urls_rescanning(&list));
        }
    }

    /// 40 000 pieces took 48 s (helper 208); now one pass.
    #[test]
    fn a_long_list_splits_in_linear_time() {
        let list = format!("http://user:p{}@h/eureka", ",x".repeat(40_000));
        let started = std::time::Instant::now();
        let urls = split_urls(&list);
        assert_eq!(urls.len(), 1);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[test]
    fn server_urls_lose_their_credentials() {
        let s = Server::parse("http://us%40er:p%3Ass@127.0.0.1:8761/eureka/").unwrap();
        assert_eq!(s.base(), "http://127.0.0.1:8761/eureka");
        let auth = s.auth.clone().unwrap();
        assert!(auth.is_sensitive());
        // base64("us@er:p:ss")
        assert_eq!(auth.to_str().unwrap(), "Basic dXNAZXI6cDpzcw==");
        assert!(!format!("{s:?}").contains("dXN"));
        assert!(
            Server::parse("http://127.0.0.1:8761/eureka")
                .unwrap()
                .auth
                .is_none()
        );
    }

    #[test]
    fn a_refused_query_or_fragment_is_not_quoted() {
        for (bad, shown) in [
            ("http://h/eureka?token=S3cret", "http://h/eureka?***"),
            ("http://u:S3cret@h/eureka#S3cret", "http://***@h/eureka#***"),
        ] {
            let err = Server::parse(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid setting `eureka server URL`: {shown}: \
                     a server URL holds no query or fragment"
                )
            );
            assert!(!format!("{err:?}").contains("S3cret"), "{err:?}");
        }
    }

    #[test]
    fn bad_server_urls_are_typed_and_redacted() {
        for bad in [
            "",
            "127.0.0.1:8761",
            "ftp://h/",
            "http://h/?a=1",
        ] {
            assert!(
                matches!(Server::parse(bad), Err(BuildError::Invalid(_))),
                "{bad}"
            );
        }
        let err = Server::parse("ftp://user:secret@h/")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
        // CR/LF (dropped by the URL parser) cannot forge a log line.
        let err = Server::parse("http://h/eureka?\r\nFORGED: yes")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid setting `eureka server URL`: http://h/eureka?\\r\\nFORGED: yes: \
             a server URL holds no query or fragment"
        );
    }

    #[test]
    fn odd_credentials_and_ipv6_hosts() {
        let basic = |raw: &str| {
            let s = Server::parse(raw).unwrap();
            let auth = s.auth.unwrap();
            (s.base, auth.to_str().unwrap().to_owned())
        };
        // base64("us:er:p@ss:w"), the host in brackets.
        // (http: https needs the `tls` feature, which `cargo test` without
        // `--all-features` leaves out.)
        assert_eq!(
            basic("http://us%3Aer:p%40ss:w@[::1]:8761/eureka/"),
            ("http://[::1]:8761/eureka".to_owned(), "Basic dXM6ZXI6cEBzczp3".to_owned())
        );
        // An unencoded `@` in the password: the last one ends the userinfo.
        assert_eq!(basic("http://user:p@ss@[::1]:8761/eureka").1, "Basic dXNlcjpwQHNz");
        assert_eq!(basic("http://:pass@h/eureka").1, "Basic OnBhc3M=");
        assert_eq!(basic("http://user:@h/eureka").1, "Basic dXNlcjo=");
        // Bytes that are not UTF-8 are sent as written: base64("user:\xff\xfe").
        assert_eq!(basic("http://user:%FF%FE@h/eureka").1, "Basic dXNlcjr//g==");
    }

    #[test]
    fn https_urls_follow_the_tls_feature() {
        let parsed = Server::parse("https://user:s%25cret@127.0.0.1:8443/eureka/");
        if cfg!(feature = "tls") {
            let server = parsed.unwrap();
            assert!(server.https);
            assert_eq!(server.base(), "https://127.0.0.1:8443/eureka");
        } else {
            let err = parsed.unwrap_err().to_string();
            assert!(err.contains("feature `tls`"), "{err}");
            assert!(!err.contains("cret"), "{err}");
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn https_builds_a_rustls_transport_only_when_needed() {
        let connection = |urls: &str| {
            let mut c = Connection::default();
            c.add_urls(urls);
            c
        };
        let plain = connection("http://127.0.0.1:1/eureka").build().unwrap();
        assert!(!plain.client.is_tls());
        let mixed = connection("https://u:p,w@127.0.0.1:1/eureka,http://127.0.0.1:2/eureka")
            .build()
            .unwrap();
        assert!(mixed.client.is_tls());
        assert_eq!(mixed.servers().len(), 2);
        // TLS settings that cannot be used are refused at build, typed.
        let mut no_roots = connection("https://127.0.0.1:1/eureka");
        no_roots.tls = Some(crate::tls::HttpsClient::builder().webpki_roots(false));
        let err = no_roots.build().unwrap_err();
        assert_eq!(err.key(), Some("eureka tls"));
        // ... but only read when a URL is https.
        let mut unused = connection("http://127.0.0.1:1/eureka");
        unused.tls = Some(crate::tls::HttpsClient::builder().webpki_roots(false));
        assert!(unused.build().is_ok());
    }

    #[test]
    fn lists_split_outside_credentials() {
        let list = "http://user:p,a@s:s%25w@127.0.0.1:1/eureka, http://127.0.0.1:2/eureka,,";
        assert_eq!(
            split_urls("http://u:a,,b,c@h/e,http://h2/e"),
            ["http://u:a,,b,c@h/e", "http://h2/e"]
        );
        assert_eq!(
            split_urls(list),
            [
                "http://user:p,a@s:s%25w@127.0.0.1:1/eureka",
                "http://127.0.0.1:2/eureka"
            ]
        );
        let s = Server::parse(&split_urls(list)[0]).unwrap();
        assert_eq!(s.base(), "http://127.0.0.1:1/eureka");
        // base64("user:p,a@s:s%w")
        let token = base64::engine::general_purpose::STANDARD.encode("user:p,a@s:s%w");
        assert_eq!(
            s.auth.clone().unwrap().to_str().unwrap(),
            format!("Basic {token}")
        );
        assert!(!format!("{s:?}").contains("p,a"));
    }
}

