//! [`ConfigError`]: why a configuration cannot be read or used.

use std::borrow::Cow;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// What kind of problem a [`ConfigError`] reports. Match on it with a
/// wildcard arm: kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read ([`ConfigError::path`], `source()`).
    Io,
    /// The file's extension is not `.properties`, `.yml` or `.yaml`.
    UnsupportedFormat,
    /// The text is not a valid properties file ([`ConfigError::line`]).
    Properties,
    /// The text is not valid YAML ([`ConfigError::line`],
    /// [`ConfigError::column`]), or a document is not a map of settings.
    Yaml,
    /// The input is over a bound ([`ConfigError::limit`]): file size,
    /// nesting depth, or YAML nodes after alias expansion.
    TooLarge,
    /// A key has a value that cannot be read ([`ConfigError::key`],
    /// [`ConfigError::value`]).
    InvalidValue,
    /// A number outside the key's allowed range ([`ConfigError::key`],
    /// [`ConfigError::value`], [`ConfigError::allowed`],
    /// [`ConfigError::unit`]).
    OutOfRange,
    /// Two clients set a balancer-wide key differently, so one
    /// [`RibbonConfig::builder`](super::RibbonConfig::builder) cannot serve
    /// both ([`ConfigError::key`], [`ConfigError::client`] and
    /// [`ConfigError::other_client`], [`ConfigError::value`] and
    /// [`ConfigError::other_value`]).
    Conflicting,
    /// A client has no way to find instances ([`ConfigError::client`]).
    NoSource,
    /// [`RibbonConfig::builder`](super::RibbonConfig::builder) found no
    /// configured client.
    NoClients,
}

/// Why a configuration cannot be read or used: a [kind](ConfigError::kind)
/// and accessors for what the kind names (the key, the value as written,
/// the allowed range, the client, the file, the line). One word in size.
/// Values that may hold credentials (before an `@`) are shown as `***`.
/// The `Display` text is for people, not for matching.
pub struct ConfigError {
    inner: Box<Inner>,
}

struct Inner {
    kind: ConfigErrorKind,
    key: Option<String>,
    value: Option<String>,
    other_value: Option<String>,
    client: Option<String>,
    other_client: Option<String>,
    path: Option<PathBuf>,
    line: Option<usize>,
    column: Option<usize>,
    allowed: Option<RangeInclusive<u64>>,
    unit: Option<&'static str>,
    limit: Option<u64>,
    reason: Cow<'static, str>,
    source: Option<std::io::Error>,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                key: None,
                value: None,
                other_value: None,
                client: None,
                other_client: None,
                path: None,
                line: None,
                column: None,
                allowed: None,
                unit: None,
                limit: None,
                reason: reason.into(),
                source: None,
            }),
        }
    }

    /// A value that cannot be read; value and reason are redacted.
    pub(crate) fn invalid(key: &str, value: &str, reason: impl Into<Cow<'static, str>>) -> Self {
        let reason: Cow<'static, str> = reason.into();
        let mut e = Self::new(ConfigErrorKind::InvalidValue, crate::error::redact(&reason));
        e.inner.key = Some(crate::error::quote(key));
        e.inner.value = Some(crate::error::quote(&crate::error::redact(value)));
        e
    }

    /// A number outside `allowed` (in `unit`).
    pub(crate) fn out_of_range(
        key: &str,
        value: &str,
        allowed: RangeInclusive<u64>,
        unit: &'static str,
    ) -> Self {
        let number = value.trim().parse::<i128>().ok();
        Self::out_of_range_as(key, value, number, allowed, unit)
    }

    /// A number outside `allowed`, written as `value` (`0s`) and read as
    /// `number` (in `unit`).
    pub(crate) fn out_of_range_as(
        key: &str,
        value: &str,
        number: Option<i128>,
        allowed: RangeInclusive<u64>,
        unit: &'static str,
    ) -> Self {
        let (min, max) = (*allowed.start(), *allowed.end());
        let reason: Cow<'static, str> = match number {
            Some(n) if n < 0 => "must not be negative".into(),
            Some(n) if n < i128::from(min) => format!("must be at least {min}").into(),
            Some(_) => format!("must be at most {max}").into(),
            None => "out of range".into(),
        };
        let mut e = Self::new(ConfigErrorKind::OutOfRange, reason);
        e.inner.key = Some(crate::error::quote(key));
        e.inner.value = Some(crate::error::quote(&crate::error::redact(value)));
        e.inner.allowed = Some(allowed);
        e.inner.unit = Some(unit);
        e
    }

    /// An input over a bound of `limit`.
    pub(crate) fn too_large(limit: u64, reason: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(ConfigErrorKind::TooLarge, reason);
        e.inner.limit = Some(limit);
        e
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        // The OS reason's kind in the text ("entity not found"), the whole
        // `io::Error` as the source.
        let reason = format!("cannot read the file ({})", source.kind());
        let mut e = Self::new(ConfigErrorKind::Io, reason);
        e.inner.path = Some(path.to_owned());
        e.inner.source = Some(source);
        e
    }

    pub(crate) fn conflicting(
        key: &str,
        (first_client, first_value): (&str, String),
        (second_client, second_value): (&str, String),
    ) -> Self {
        let mut e = Self::new(
            ConfigErrorKind::Conflicting,
            "one load balancer has one rule, retry policy, refresh, breaker and health check; \
             build one per client with `RibbonConfig::builder_for`",
        );
        e.inner.key = Some(crate::error::quote(key));
        e.inner.client = Some(crate::error::quote(first_client));
        e.inner.value = Some(first_value);
        e.inner.other_client = Some(crate::error::quote(second_client));
        e.inner.other_value = Some(second_value);
        e
    }

    pub(crate) fn no_source(client: &str, reason: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(ConfigErrorKind::NoSource, reason);
        e.inner.client = Some(crate::error::quote(client));
        e
    }

    pub(crate) fn with_path(mut self, path: &Path) -> Self {
        self.inner.path = Some(path.to_owned());
        self
    }

    pub(crate) fn at(mut self, line: Option<usize>, column: Option<usize>) -> Self {
        self.inner.line = line;
        self.inner.column = column;
        self
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.inner.kind
    }

    /// The key as written (`user-service.ribbon.MaxAutoRetries`), for
    /// [`InvalidValue`](ConfigErrorKind::InvalidValue),
    /// [`OutOfRange`](ConfigErrorKind::OutOfRange) and
    /// [`Conflicting`](ConfigErrorKind::Conflicting) (there the key name
    /// without client, such as `MaxAutoRetries`).
    pub fn key(&self) -> Option<&str> {
        self.inner.key.as_deref()
    }

    /// The value as written (credentials hidden); for a conflict, the first
    /// client's effective value.
    pub fn value(&self) -> Option<&str> {
        self.inner.value.as_deref()
    }

    /// The second client's effective value of a conflict.
    pub fn other_value(&self) -> Option<&str> {
        self.inner.other_value.as_deref()
    }

    /// The client without a source, or the first client of a conflict
    /// (cut to 128 bytes, control characters escaped).
    pub fn client(&self) -> Option<&str> {
        self.inner.client.as_deref()
    }

    /// The second client of a conflict (quoted as [`ConfigError::client`]).
    pub fn other_client(&self) -> Option<&str> {
        self.inner.other_client.as_deref()
    }

    /// The file, when the error came from reading one.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The 1-based line of a syntax error, when known.
    pub fn line(&self) -> Option<usize> {
        self.inner.line
    }

    /// The 1-based column of a YAML syntax error, when known.
    pub fn column(&self) -> Option<usize> {
        self.inner.column
    }

    /// The values an [`OutOfRange`](ConfigErrorKind::OutOfRange) key
    /// accepts, in [`ConfigError::unit`].
    pub fn allowed(&self) -> Option<RangeInclusive<u64>> {
        self.inner.allowed.clone()
    }

    /// The unit of the key's number: `"ms"`, `"s"`, `"count"`, ...
    pub fn unit(&self) -> Option<&'static str> {
        self.inner.unit
    }

    /// The bound a [`TooLarge`](ConfigErrorKind::TooLarge) input is over
    /// (bytes, levels or nodes, as the message says).
    pub fn limit(&self) -> Option<u64> {
        self.inner.limit
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.inner;
        if let Some(path) = &i.path {
            write!(f, "`{}`: ", path.display())?;
        }
        match i.kind {
            ConfigErrorKind::Io => write!(f, "{}", i.reason)?,
            ConfigErrorKind::UnsupportedFormat => {
                f.write_str("unknown configuration format (expected .properties, .yml or .yaml)")?;
            }
            ConfigErrorKind::Properties => write!(f, "invalid properties: {}", i.reason)?,
            ConfigErrorKind::Yaml => write!(f, "invalid YAML: {}", i.reason)?,
            ConfigErrorKind::TooLarge => write!(f, "refused: {}", i.reason)?,
            ConfigErrorKind::InvalidValue | ConfigErrorKind::OutOfRange => {
                let key = i.key.as_deref().unwrap_or_default();
                let value = i.value.as_deref().unwrap_or_default();
                write!(f, "`{key}` = \"{value}\": {}", i.reason)?;
                if let (Some(allowed), Some(unit)) = (&i.allowed, i.unit) {
                    write!(
                        f,
                        " (allowed {}..={} {unit})",
                        allowed.start(),
                        allowed.end()
                    )?;
                }
            }
            ConfigErrorKind::Conflicting => write!(
                f,
                "clients `{}` and `{}` disagree on `{}` ({} vs {}): {}",
                i.client.as_deref().unwrap_or_default(),
                i.other_client.as_deref().unwrap_or_default(),
                i.key.as_deref().unwrap_or_default(),
                i.value.as_deref().unwrap_or_default(),
                i.other_value.as_deref().unwrap_or_default(),
                i.reason
            )?,
            ConfigErrorKind::NoSource => write!(
                f,
                "client `{}` has no instance source: {}",
                i.client.as_deref().unwrap_or_default(),
                i.reason
            )?,
            ConfigErrorKind::NoClients => f.write_str(
                "no client configured: no `<client>.ribbon.<Key>` or \
                 `spring.cloud.loadbalancer.clients.<name>.<key>` key was found",
            )?,
        }
        match (i.line, i.column) {
            (Some(line), Some(column)) => write!(f, " (line {line}, column {column})"),
            (Some(line), None) => write!(f, " (line {line})"),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.inner;
        let mut d = f.debug_struct("ConfigError");
        d.field("kind", &i.kind);
        if let Some(key) = &i.key {
            d.field("key", key);
        }
        if let Some(value) = &i.value {
            d.field("value", value);
        }
        if let Some(client) = &i.client {
            d.field("client", client);
        }
        if let Some(path) = &i.path {
            d.field("path", path);
        }
        if let Some(allowed) = &i.allowed {
            d.field("allowed", allowed);
        }
        d.field("reason", &i.reason);
        d.finish_non_exhaustive()
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_word_and_names_what_failed() {
        assert_eq!(size_of::<ConfigError>(), size_of::<usize>());
        let e = ConfigError::out_of_range("a.ribbon.X", "0", 1..=10, "s");
        assert_eq!(e.kind(), ConfigErrorKind::OutOfRange);
        assert_eq!((e.key(), e.value()), (Some("a.ribbon.X"), Some("0")));
        assert_eq!(e.allowed(), Some(1..=10));
        assert_eq!(
            e.to_string(),
            "`a.ribbon.X` = \"0\": must be at least 1 (allowed 1..=10 s)"
        );
        let e = ConfigError::invalid("k", "http://u:secret@h", "bad http://u:secret@h");
        assert!(!format!("{e} {e:?}").contains("secret"));
    }
}
