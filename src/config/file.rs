//! [`RibbonConfig::from_file`]: a file read by its extension.

use std::path::Path;

use super::error::{ConfigError, ConfigErrorKind};
use super::reader::read_bounded;
use super::{RibbonConfig, properties};

impl RibbonConfig {
    /// Reads a file by its extension: `.properties` (UTF-8, or ISO-8859-1
    /// as Java's `Properties.load` reads it when the bytes are not UTF-8),
    /// `.yml` or `.yaml` (UTF-8). Files over 1 MiB are refused unread.
    ///
    /// # Errors
    /// [`Io`](ConfigErrorKind::Io),
    /// [`UnsupportedFormat`](ConfigErrorKind::UnsupportedFormat),
    /// [`TooLarge`](ConfigErrorKind::TooLarge), and the errors of the
    /// format's reader, each with [the path](ConfigError::path).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let format_is_yaml = match extension.as_deref() {
            Some("properties") => false,
            Some("yml" | "yaml") => true,
            _ => {
                return Err(
                    ConfigError::new(ConfigErrorKind::UnsupportedFormat, "").with_path(path)
                );
            }
        };
        let bytes = read_bounded(path)?;
        let with_path = |e: ConfigError| e.with_path(path);
        if format_is_yaml {
            let text = std::str::from_utf8(&bytes).map_err(|e| {
                ConfigError::new(ConfigErrorKind::Yaml, format!("not UTF-8: {e}")).with_path(path)
            })?;
            Self::from_yaml_str(text).map_err(with_path)
        } else {
            let encoding = if std::str::from_utf8(&bytes).is_ok() {
                encoding_rs::UTF_8
            } else {
                encoding_rs::WINDOWS_1252
            };
            let documents =
                properties::read_properties_documents(&bytes, encoding).map_err(with_path)?;
            Self::from_documents(documents, "properties").map_err(with_path)
        }
    }
}
