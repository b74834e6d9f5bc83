//! Java properties text, read with the
//! [`java-properties`](https://docs.rs/java-properties) crate.

use super::error::{ConfigError, ConfigErrorKind};

/// Largest configuration file or text accepted, in bytes (1 MiB; Spring
/// application files are a few kilobytes).
pub(crate) const MAX_BYTES: usize = 1 << 20;

/// Refuses text over [`MAX_BYTES`].
pub(crate) fn check_size(len: usize) -> Result<(), ConfigError> {
    if len > MAX_BYTES {
        return Err(ConfigError::too_large(
            MAX_BYTES as u64,
            format!("{len} bytes is more than the {MAX_BYTES} accepted"),
        ));
    }
    Ok(())
}

/// The documents of properties text, each its key/value pairs in order.
///
/// Since Spring Boot 2.4 a line `#---` or `!---` (at its start, nothing
/// after it but whitespace) splits a `.properties` file into documents, as
/// `---` does a YAML file, and `spring.config.activate.on-profile` makes a
/// document conditional (`OriginTrackedPropertiesLoader`). As there, such
/// a line right after a comment line is a comment, a separator followed by
/// a comment before any key is undone (the comment belongs to the
/// document before), a line inside a value continued by `\\` is not a
/// separator, and empty documents are dropped. Before, a `.properties`
/// file was read as one document, so a `chaos` profile's keys applied
/// with no profile active (a POST sent to 6 servers; helper 210).
pub(crate) fn read_properties_documents(
    bytes: &[u8],
    encoding: &'static encoding_rs::Encoding,
) -> Result<Vec<Vec<(String, String)>>, ConfigError> {
    check_size(bytes.len())?;
    let mut documents = Vec::new();
    for (start_line, chunk) in split_documents(bytes) {
        let pairs = read_properties(chunk, encoding).map_err(|e| {
            let line = e.line().map(|l| l + start_line);
            e.at(line, None)
        })?;
        if !pairs.is_empty() {
            documents.push(pairs);
        }
    }
    Ok(documents)
}

/// The byte ranges of the documents of `bytes` that hold a key, each
/// with the number of lines before it (see [`read_properties_documents`]).
fn split_documents<'a>(bytes: &'a [u8]) -> Vec<(usize, &'a [u8])> {
    // Documents closed so far: (lines before, start, end).
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    // The open document: lines before it, its start, whether it holds a key.
    let (mut cur_line, mut cur_start, mut cur_key) = (0usize, 0usize, false);
    // The last line's comment character (`#` or `!`), if it was a
    // comment; the last line continues into this one.
    let (mut last_comment, mut continued) = (None::<u8>, false);
    let (mut at, mut line_no) = (0usize, 0usize);
    while at < bytes.len() {
        let end = (bytes[at..].iter().position(|b| matches!(b, b'\n' | b'\r')))
            .map_or(bytes.len(), |i| at + i);
        let line = &bytes[at..end];
        let next = match bytes.get(end) {
            Some(b'\r') if bytes.get(end + 1) == Some(&b'\n') => end + 2,
            Some(_) => end + 1,
            None => end,
        };
        let content = line.trim_ascii_start();
        // Spring's reader tests the character after an escape too: `\#---`
        // is a separator and `\#` a comment (helper 213).
        let unescaped = |text: &'a [u8]| match text {
            [b'\\', rest @ ..] if matches!(rest.first(), Some(b'#' | b'!')) => rest,
            _ => text,
        };
        let (head, comment) = (unescaped(line), unescaped(content));
        if continued {
            // A value's next line: never a separator or a comment.
            let backslashes = line.iter().rev().take_while(|b| **b == b'\\').count();
            continued = backslashes % 2 == 1;
        } else if content == b"\\" {
            // A lone `\` joins the next line to its start: that line is
            // read as if this one were not there.
            at = next;
            line_no += 1;
            continue;
        } else if matches!(head.get(..4), Some(b"#---" | b"!---"))
            && head[4..].iter().all(u8::is_ascii_whitespace)
            && last_comment != head.first().copied()
        {
            // The last comment's character is kept across a separator, as
            // Spring's reader keeps it (only a key or blank line resets it).
            if cur_key {
                out.push((cur_line, cur_start, at));
            }
            (cur_line, cur_start, cur_key) = (line_no + 1, next, false);
        } else if matches!(comment.first(), Some(b'#' | b'!')) {
            // A comment before any key of a new document: the separator
            // before it is undone, the document before goes on.
            if !cur_key {
                if let Some((line, start, _)) = out.pop() {
                    (cur_line, cur_start, cur_key) = (line, start, true);
                }
            }
            last_comment = comment.first().copied();
        } else {
            // A document holds a key once a line stores one that is not
            // empty when trimmed (`=junk`, `:`, `\ ` store none).
            cur_key |= stores_key(content);
            let backslashes = line.iter().rev().take_while(|b| **b == b'\\').count();
            continued = !content.is_empty() && backslashes % 2 == 1;
            last_comment = None;
        }
        at = next;
        line_no += 1;
    }
    if cur_key {
        out.push((cur_line, cur_start, bytes.len()));
    }
    out.into_iter().map(|(line, start, end)| (line, &bytes[start..end])).collect()
}

/// Whether a properties line (leading whitespace removed) stores a key
/// that is not empty once trimmed, as Spring's loader trims it: the key
/// ends at the first unescaped `=`, `:` or blank; an escaped blank or
/// control escape (`\ `, `\t`) is blank; a line continued by a last
/// `\` counts as storing one.
fn stores_key(content: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = content.get(i) {
        match b {
            b'=' | b':' | b' ' | b'\t' | b'\x0c' => return false,
            b'\\' => match content.get(i + 1) {
                Some(b' ' | b'\t' | b'\x0c' | b't' | b'r' | b'n' | b'f') => i += 2,
                _ => return true,
            },
            _ => return true,
        }
    }
    false
}

/// The key/value pairs of properties text, in order.
pub(crate) fn read_properties(
    bytes: &[u8],
    encoding: &'static encoding_rs::Encoding,
) -> Result<Vec<(String, String)>, ConfigError> {
    check_size(bytes.len())?;
    let mut pairs = Vec::new();
    java_properties::PropertiesIter::new_with_encoding(bytes, encoding)
        .read_into(|key, value| pairs.push((key, value)))
        .map_err(|e| {
            // Its `Display` ends with " (line_number = N)"; the line is kept apart.
            let text = e.to_string();
            let reason = text
                .split(" (line_number")
                .next()
                .unwrap_or_default()
                .to_owned();
            ConfigError::new(ConfigErrorKind::Properties, reason).at(e.line_number(), None)
        })?;
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_keep_order_and_escapes() {
        let pairs = read_properties(
            b"# c\n! c\na = 1\nb: x\\\n   y\nc \\u00e9\n",
            encoding_rs::UTF_8,
        )
        .unwrap();
        assert_eq!(
            pairs,
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "xy".to_owned()),
                ("c".to_owned(), "é".to_owned()),
            ]
        );
        let err = read_properties(b"a=\\u12", encoding_rs::UTF_8).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::Properties);
        let big = vec![b'#'; MAX_BYTES + 1];
        let err = read_properties(&big, encoding_rs::UTF_8).unwrap_err();
        assert_eq!(
            (err.kind(), err.limit()),
            (ConfigErrorKind::TooLarge, Some(MAX_BYTES as u64))
        );
    }
}
