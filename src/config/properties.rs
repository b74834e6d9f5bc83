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
