//! Errors of input and configuration: [`InstanceError`], [`BuildError`].

use std::borrow::Cow;
use std::fmt;

use super::text::{quote, redact};

/// An address or instance description that cannot be used.
///
/// The text quoted from the input is cut to 128 bytes and has control
/// characters escaped; credentials are hidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceError {
    kind: InstanceErrorKind,
    input: String,
    reason: Cow<'static, str>,
}

/// What kind of input an [`InstanceError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InstanceErrorKind {
    /// The host cannot be part of a URI authority (empty, too long, bad
    /// characters, a bad IPv6 address).
    InvalidHost,
    /// The port is 0, not a number, or out of range.
    InvalidPort,
    /// A `listOfServers` entry cannot be parsed.
    InvalidEntry,
    /// A `listOfServers` has more entries than
    /// [`MAX_LIST_ENTRIES`](crate::discovery::MAX_LIST_ENTRIES).
    TooManyEntries,
}

impl InstanceError {
    pub(crate) fn new(
        kind: InstanceErrorKind,
        input: &str,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            kind,
            input: quote(&redact(input)),
            reason: reason.into(),
        }
    }

    /// What kind of input was refused.
    pub fn kind(&self) -> InstanceErrorKind {
        self.kind
    }

    /// The host was refused.
    pub fn is_invalid_host(&self) -> bool {
        self.kind == InstanceErrorKind::InvalidHost
    }

    /// The port was refused.
    pub fn is_invalid_port(&self) -> bool {
        self.kind == InstanceErrorKind::InvalidPort
    }

    /// A `listOfServers` entry was refused.
    pub fn is_invalid_entry(&self) -> bool {
        self.kind == InstanceErrorKind::InvalidEntry
    }

    /// The refused input, cut to 128 bytes, escaped and without credentials.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Why it was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for InstanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            InstanceErrorKind::InvalidHost => "host",
            InstanceErrorKind::InvalidPort => "port",
            InstanceErrorKind::InvalidEntry => "server entry",
            InstanceErrorKind::TooManyEntries => "list of servers",
        };
        write!(f, "invalid {what} `{}`: {}", self.input, self.reason)
    }
}

impl std::error::Error for InstanceError {}

/// A configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `build` was called outside a Tokio runtime; refresh tasks need one.
    #[error("no Tokio runtime: build the load balancer inside a runtime")]
    NoRuntime,
    /// No instance source was configured.
    #[error("no instance source configured")]
    NoSource,
    /// A setting has a value that cannot be used.
    #[error(transparent)]
    Invalid(InvalidSetting),
    /// An instance in a static list is invalid.
    #[error(transparent)]
    Instance(#[from] InstanceError),
}

impl BuildError {
    /// A setting `key` (its builder or field name, e.g.
    /// `RetryPolicy::backoff_cap`) that cannot be used, and why.
    pub(crate) fn invalid(
        key: impl Into<Cow<'static, str>>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        BuildError::Invalid(InvalidSetting {
            key: key.into(),
            reason: reason.into(),
        })
    }

    /// The setting refused, for [`BuildError::Invalid`].
    pub fn key(&self) -> Option<&str> {
        match self {
            BuildError::Invalid(setting) => Some(setting.key()),
            _ => None,
        }
    }
}

/// A setting that cannot be used: which one and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{key}`: {reason}")]
pub struct InvalidSetting {
    key: Cow<'static, str>,
    reason: Cow<'static, str>,
}

impl InvalidSetting {
    /// The setting's name (a builder method or a field, such as
    /// `RetryPolicy::backoff_cap`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Why it cannot be used.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}
