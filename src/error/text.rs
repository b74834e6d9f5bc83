//! Text from outside quoted in errors and logs: cut, escaped, without
//! credentials.

/// Longest input (host, entry, URI) quoted in an error's text, in bytes;
/// longer input is cut and marked with `…`, so a hostile 20 MiB host name
/// gives an error of a few hundred bytes.
const MAX_QUOTED: usize = 128;

/// Longest message of another library quoted in an error's text, in
/// bytes: such a message can carry what a peer sent (rustls lists the
/// names of a server's certificate), and is longer than one input.
#[cfg(any(feature = "eureka", feature = "grpc", feature = "tls"))]
pub(crate) const MAX_QUOTED_MESSAGE: usize = 512;

/// `text` cut to [`MAX_QUOTED`] bytes (at a char boundary, then `…`) with
/// control characters escaped, so input quoted in errors and logs is short
/// and cannot forge lines.
pub(crate) fn quote(text: &str) -> String {
    quote_within(text, MAX_QUOTED)
}

/// A string as `Debug` writes it (quoted, escaped) but cut to
/// [`MAX_QUOTED`] bytes, then `…`: registry text in the `Debug` output of
/// public types (an 8 KiB instance id, a 1 MiB metadata key or zone).
pub(crate) struct DebugCut<'a>(pub(crate) &'a str);

impl std::fmt::Debug for DebugCut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut end = self.0.len().min(MAX_QUOTED);
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        std::fmt::Debug::fmt(&self.0[..end], f)?;
        if end < self.0.len() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// [`quote`] with a bound of `max` bytes (before escaping).
pub(crate) fn quote_within(text: &str, max: usize) -> String {
    Quoted::within(text, max).to_string()
}

/// Text from outside as [`quote`] writes it (cut to [`MAX_QUOTED`] bytes,
/// then `…`; control, line-breaking and reordering characters escaped),
/// written by `Display` without allocating: a log or span field's value.
pub(crate) struct Quoted<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> Quoted<'a> {
    /// `text` cut to [`MAX_QUOTED`] bytes.
    pub(crate) fn new(text: &'a str) -> Self {
        Self::within(text, MAX_QUOTED)
    }

    /// `text` cut to `max` bytes.
    pub(crate) fn within(text: &'a str, max: usize) -> Self {
        Self { text, max }
    }
}

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        let text = self.text;
        let mut end = text.len().min(self.max);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        for c in text[..end].chars() {
            if c.is_control() || reorders_or_breaks(c) {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        if end < text.len() {
            f.write_char('…')?;
        }
        Ok(())
    }
}

/// Characters that are not controls (`char::is_control` is Unicode's Cc
/// only) but break a line or reorder text where a log is shown: the line
/// and paragraph separators (a line break to JSON and JavaScript viewers)
/// and the bidirectional marks, embeddings, overrides and isolates (which
/// display `evil.com/x` as `x/moc.live`, "Trojan Source").
fn reorders_or_breaks(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// `text` with anything that may be credentials hidden: everything before
/// the last `@` (after the scheme, if any) becomes `***`, so
/// `http://user:pa/ss@host/x` shows as `http://***@host/x`. Text without
/// `@` is returned as it is. Errors and `Debug` output use this for every
/// URL or address that may hold userinfo.
pub(crate) fn redact(text: &str) -> String {
    let out = redact_userinfo(text);
    if out.contains("://") {
        hide_queries(&out)
    } else {
        out
    }
}

/// A URI (absolute or a request's path and query) as errors and logs quote
/// it: [`redact`], and its query and fragment hidden even without a
/// scheme (`/api?token=S3cret` as `/api?***`).
pub(crate) fn redact_uri(text: &str) -> String {
    hide_queries(&redact_userinfo(text))
}

/// The query and fragment of each URL in `text` become `***`
/// (`http://h/x?token=S3cret` as `http://h/x?***`): a query may carry a
/// token, and a URL quoted in an error or a log line is refused or shown,
/// never used. A hidden part ends at a blank, `,`, a quote or a backtick
/// (a list of URLs, or the URL inside a message), and a `:` before a
/// blank is kept.
fn hide_queries(text: &str) -> String {
    let ends = |c: char| c.is_whitespace() || matches!(c, ',' | '`' | '"' | '\'');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['?', '#']) {
        out.push_str(&rest[..=at]);
        let after = &rest[at + 1..];
        let mut len = after.find(ends).unwrap_or(after.len());
        if after[..len].ends_with(':') {
            len -= 1;
        }
        if len > 0 {
            out.push_str("***");
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// [`redact`]'s userinfo part.
fn redact_userinfo(text: &str) -> String {
    let Some(at) = text.rfind('@') else {
        // `scheme://user:pass` cut before its `@` (a password holding
        // `,x://`): hide everything after the scheme up to the first `/`
        // when it holds a `:` that is not a port.
        if let Some(s) = text.find("://") {
            let rest = &text[s + 3..];
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            let port_only = authority.rsplit_once(':').is_some_and(|(host, port)| {
                !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit())
            });
            if authority.contains(':') && !port_only && !authority.starts_with('[') {
                return format!("{}***{}", &text[..s + 3], &rest[authority.len()..]);
            }
        }
        return text.to_owned();
    };
    match text.find("://") {
        Some(s) if s < at => format!("{}***{}", &text[..s + 3], &text[at..]),
        _ => format!("***{}", &text[at..]),
    }
}

/// The ` (N attempts: ...)` suffix of an error that took more than one.
pub(super) fn attempts_suffix(attempts: &[super::Attempt]) -> String {
    if attempts.len() <= 1 {
        return String::new();
    }
    let list: Vec<String> = attempts.iter().map(ToString::to_string).collect();
    format!(" ({} attempts: {})", attempts.len(), list.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{InstanceError, InstanceErrorKind};

    #[test]
    fn a_url_cut_before_its_at_hides_the_password() {
        assert_eq!(redact("http://user:pw"), "http://***");
        assert_eq!(redact("http://user:S3cret/x"), "http://***/x");
        assert_eq!(redact("http://h:8761/eureka"), "http://h:8761/eureka");
        assert_eq!(
            redact("http://[::1]:8761/eureka"),
            "http://[::1]:8761/eureka"
        );
    }

    #[test]
    fn quoted_input_is_short_and_escaped() {
        // Limits: a 20 MiB input, an error under 200 bytes.
        let long = "a".repeat(20 << 20);
        let err = InstanceError::new(InstanceErrorKind::InvalidHost, &long, "too long");
        assert!(err.to_string().len() < 200, "{}", err.to_string().len());
        assert_eq!(quote("a\r\nb"), "a\\r\\nb");
        assert_eq!(quote("é".repeat(100).as_str()).chars().count(), 65);
    }

    /// Line and paragraph separators and bidirectional controls are
    /// escaped as control characters are: before, `quote` passed them
    /// through (5 of the 5 below raw), so a registry name could break a
    /// line in a JSON log viewer or show reversed; now 0.
    #[test]
    fn separators_and_bidi_controls_are_escaped() {
        let hostile = "a\u{2028}b\u{2029}c\u{202e}d\u{2066}e\u{200f}f";
        assert_eq!(
            quote(hostile),
            "a\\u{2028}b\\u{2029}c\\u{202e}d\\u{2066}e\\u{200f}f"
        );
        // Other non-ASCII text is kept as it is.
        assert_eq!(quote("zürich-é\u{301}"), "zürich-é\u{301}");
    }

    #[test]
    fn queries_and_fragments_of_urls_are_hidden() {
        assert_eq!(
            redact("http://h/eureka?token=S3cret"),
            "http://h/eureka?***"
        );
        assert_eq!(redact("http://u:p@h/e#S3cret"), "http://***@h/e#***");
        assert_eq!(
            redact("http://h/e?t=S3cret: a server URL holds no query"),
            "http://h/e?***: a server URL holds no query"
        );
        assert_eq!(
            redact("http://h/e?a=1,http://h2/e#f"),
            "http://h/e?***,http://h2/e#***"
        );
        // Idempotent, and text that is no URL keeps its `?`.
        assert_eq!(redact("http://h/e?***"), "http://h/e?***");
        assert_eq!(redact("did you mean `x`?"), "did you mean `x`?");
        assert_eq!(redact_uri("/api?token=S3cret"), "/api?***");
        assert_eq!(redact_uri("/api?"), "/api?");
    }

    #[test]
    fn credentials_are_hidden_in_every_form() {
        assert_eq!(redact("http://u:p@h:1/eureka"), "http://***@h:1/eureka");
        assert_eq!(redact("http://u:p/q@h/eureka"), "http://***@h/eureka");
        assert_eq!(redact("http:u:secret@h/eureka"), "***@h/eureka");
        assert_eq!(redact("u:secret@127.0.0.1:8761"), "***@127.0.0.1:8761");
        assert_eq!(redact("http://h:1/eureka"), "http://h:1/eureka");
    }
}
