//! Typed errors of the wire decoder: [`WireError`] for a payload that is
//! refused as a whole, [`RecordError`] for one instance record that is
//! skipped while the rest of the payload is kept.

/// Why a whole payload was refused. The caller keeps its last good list.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The body ended in the middle of a JSON document (a cut connection,
    /// a proxy that gave up).
    #[error("truncated JSON at line {line}, column {column}")]
    Truncated {
        /// Line of the end of input, from 1.
        line: usize,
        /// Column of the end of input, from 1.
        column: usize,
    },
    /// The body is not JSON at all (an HTML error page, plain text).
    #[error("not Eureka JSON: syntax error at line {line}, column {column}")]
    Syntax {
        /// Line of the error, from 1.
        line: usize,
        /// Column of the error, from 1.
        column: usize,
    },
    /// JSON whose structure is not Eureka's: a field of the wrong type where
    /// the envelope needs an object or a list, a duplicate field, nesting
    /// deeper than 128 levels.
    #[error("malformed Eureka JSON at line {line}, column {column}")]
    Malformed {
        /// Line of the error, from 1.
        line: usize,
        /// Column of the error, from 1.
        column: usize,
        /// The JSON decoder's own description, escaped and cut to 512
        /// bytes (its message quotes the unexpected text).
        #[source]
        source: serde_json::Error,
    },
    /// The root object lacks the expected key (`application` for
    /// `/apps/{APP}`, `applications` for `/apps`, `/apps/delta`, `/vips`).
    #[error("no `{key}` object at the root")]
    NoRoot {
        /// The key that was expected.
        key: &'static str,
    },
    /// An `application` object without a `name`: not an application, so not
    /// a valid "no instances" answer (`{"application":{"garbage":true}}`).
    #[error("an `application` object has no `name`")]
    NoName,
    /// An `applications` object with none of `application`,
    /// `apps__hashcode`, `versions__delta`: not a registry answer.
    #[error(
        "the `applications` object has none of `application`, `apps__hashcode`, `versions__delta`"
    )]
    NotRegistry,
    /// Every instance record of the payload is malformed (for example
    /// every port is `"9001x"`): the server is sending garbage, not an
    /// application without usable instances. Checked over the whole
    /// payload: in `/apps`, `/apps/delta` or `/vips/{vip}`, an application
    /// whose records are all malformed beside applications with
    /// well-formed records only has its records skipped.
    #[error("all {records} instance records of the payload are malformed (first: {first})")]
    AllRecordsMalformed {
        /// How many records the application listed.
        records: usize,
        /// What was wrong with the first one.
        first: RecordError,
    },
    /// More instance records (usable or not) than the configured bound
    /// ([`ParseOptions::max_instances`](crate::discovery::eureka::wire::ParseOptions::max_instances)).
    #[error("more than {limit} instance records")]
    TooManyInstances {
        /// The bound that was exceeded.
        limit: usize,
    },
    /// More metadata entries in the payload's records together than the
    /// configured bound
    /// ([`ParseOptions::max_metadata_entries`](crate::discovery::eureka::wire::ParseOptions::max_metadata_entries)).
    #[error("more than {limit} metadata entries in one payload")]
    TooMuchMetadata {
        /// The bound that was exceeded.
        limit: usize,
    },
    /// The body, after gzip inflation, exceeds the body limit.
    #[error("body larger than {limit} bytes (after gzip inflation)")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The gzip stream is corrupt or cut.
    #[error("bad gzip body: {source}")]
    Gzip {
        /// The decompressor's error.
        #[source]
        source: std::io::Error,
    },
    /// Decoding was still running when the request deadline passed.
    #[error("decoding did not finish before the request deadline")]
    Deadline,
}

impl WireError {
    pub(crate) fn from_json(e: serde_json::Error) -> Self {
        let (line, column) = (e.line(), e.column());
        match e.classify() {
            serde_json::error::Category::Eof => Self::Truncated { line, column },
            serde_json::error::Category::Syntax => Self::Syntax { line, column },
            // The decoder's message quotes an unexpected string whole
            // (`invalid type: string "…"`, megabytes of registry text):
            // kept escaped and cut, as other registry text in errors.
            _ => Self::Malformed {
                line,
                column,
                source: serde::de::Error::custom(super::text::quote_within(
                    &e.to_string(),
                    super::text::MAX_QUOTED_MESSAGE,
                )),
            },
        }
    }
}

/// Why one instance record was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The element is not a JSON object (`0`, `"x"`, `null`, a list).
    #[error("not an object")]
    NotAnObject,
    /// A field that must be a string is not (`"instanceId": 7`).
    #[error("a field has the wrong type")]
    WrongType,
    /// Neither `hostName` nor `ipAddr`.
    #[error("no hostName or ipAddr")]
    NoHost,
    /// A port is not a number in 0..=65535 (`"9001x"`, `70000`, `-1`), or
    /// has no `$`.
    #[error("a port is not a number in 0..=65535")]
    BadPort,
    /// `@enabled` is neither a bool nor `"true"`/`"false"`.
    #[error("`@enabled` is neither a bool nor \"true\"/\"false\"")]
    BadEnabled,
    /// An enabled port 0.
    #[error("an enabled port is 0")]
    PortZero,
    /// The host cannot be part of a URI authority.
    #[error("the host cannot be part of a URI")]
    BadHost,
    /// The instance id is longer than
    /// [`MAX_INSTANCE_ID_BYTES`](crate::discovery::eureka::wire::MAX_INSTANCE_ID_BYTES).
    #[error("the instance id is longer than 8 KiB")]
    LongId,
    /// More metadata entries than
    /// [`MAX_METADATA_ENTRIES`](crate::discovery::eureka::wire::MAX_METADATA_ENTRIES).
    #[error("too many metadata entries")]
    TooManyMetadata,
    /// A well-formed record with neither port nor securePort enabled: valid
    /// Eureka, but nothing to send traffic to.
    #[error("neither port nor securePort is enabled")]
    NoEnabledPort,
}

impl RecordError {
    /// Whether the record is malformed (as opposed to well-formed but
    /// unusable, [`RecordError::NoEnabledPort`]). A payload whose records
    /// are all malformed is refused ([`WireError::AllRecordsMalformed`]).
    pub fn is_malformed(self) -> bool {
        !matches!(self, Self::NoEnabledPort)
    }
}
