//! A second reading of a payload `serde_json` refused for a value the JSON
//! grammar allows but a Rust value cannot hold: a number beyond `f64`
//! (`1e400`, `-1e400`) or a lone UTF-16 surrogate escape (`"\ud800"`,
//! `"\udc00"`). Without it one such value in one record (a metadata value,
//! a port) refused the whole payload, and with it every other
//! application's update.

/// `body` with each number beyond `f64`'s range replaced by `null` (padded
/// with spaces to the number's length) and each lone surrogate escape by
/// `\ufffd` (U+FFFD, the replacement character); `None` when `body` has
/// neither. The length is kept, so error positions stay where they were.
/// A port out of range so becomes a port that is not a number (the record
/// is skipped, as one with port `70000`), a metadata value out of range
/// an absent one. One pass, O(body).
pub(super) fn repair(body: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut replace = |at: usize, with: &[u8]| {
        let copy = out.get_or_insert_with(|| body.to_vec());
        if let Some(slot) = copy.get_mut(at..at + with.len()) {
            slot.copy_from_slice(with);
        }
    };
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        if b == b'"' {
            i = string_end(body, i + 1, &mut replace);
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while body
                .get(i)
                .is_some_and(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
            {
                i += 1;
            }
            let text = body.get(start..i).unwrap_or_default();
            let infinite = std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
                .is_some_and(f64::is_infinite);
            if infinite && text.len() >= 4 {
                let mut null = b"null".to_vec();
                null.resize(text.len(), b' ');
                replace(start, &null);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The index just past the string whose content starts at `i`, lone
/// surrogate escapes in it handed to `replace`.
fn string_end(body: &[u8], mut i: usize, replace: &mut impl FnMut(usize, &[u8])) -> usize {
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => return i + 1,
            b'\\' if body.get(i + 1) == Some(&b'u') => match hex4(body, i + 2) {
                Some(0xD800..=0xDBFF)
                    if body.get(i + 6..i + 8) == Some(b"\\u")
                        && matches!(hex4(body, i + 8), Some(0xDC00..=0xDFFF)) =>
                {
                    i += 12;
                }
                Some(0xD800..=0xDFFF) => {
                    replace(i, b"\\ufffd");
                    i += 6;
                }
                _ => i += 2,
            },
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    i
}

/// The four hex digits at `at`, as a UTF-16 unit.
fn hex4(body: &[u8], at: usize) -> Option<u16> {
    let digits = std::str::from_utf8(body.get(at..at + 4)?).ok()?;
    u16::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::repair;

    fn fixed(json: &str) -> Option<String> {
        repair(json.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn only_what_serde_json_cannot_hold_is_replaced() {
        assert_eq!(fixed(r#"{"a":[1e400,-1E+309]}"#).as_deref(), Some(r#"{"a":[null ,null   ]}"#));
        assert_eq!(
            fixed(r#"{"\ud800":"x\udc00y\ud83d\ude00\ud800\u0041"}"#).as_deref(),
            Some(r#"{"\ufffd":"x\ufffdy\ud83d\ude00\ufffd\u0041"}"#)
        );
        // Numbers in strings, escaped quotes, good values: untouched.
        for good in [r#"{"a":"1e400 \" 1e400","b":1e308,"c":-0.5e-400,"d":"\ud83d\ude00"}"#, "<html>", ""] {
            assert_eq!(fixed(good), None, "{good}");
        }
    }
}
