//! Spans of the request path, after the OpenTelemetry HTTP client semantic
//! conventions (<https://opentelemetry.io/docs/specs/semconv/http/http-spans/>).
//!
//! - `ribbon.request` (level INFO), one per call: `otel.kind` = `client`,
//!   `http.request.method`, `peer.service` (the service id), and when it
//!   ends `ribbon.instance.id` (the last attempt's instance),
//!   `ribbon.attempts`, `http.response.status_code` or `error.type`.
//! - `ribbon.attempt` (INFO), a child per attempt (OTel's HTTP client span
//!   is one per physical request): `otel.kind`, `otel.name` (the method, as
//!   OTel names client spans), `http.request.method`, `peer.service`,
//!   `server.address` and `server.port` of the chosen instance,
//!   `ribbon.instance.id` (cut to 128 bytes and escaped as the crate's log
//!   events quote registry text), `http.request.resend_count` (set on retries
//!   only, 1 for the first retry, as OTel asks), then
//!   `http.response.status_code` or `error.type`.
//!
//! `error.type` is the status code as text for a 4xx/5xx response (as OTel
//! asks), else a low-cardinality class: `connect_failure`,
//! `connect_timeout`, `timeout` (per-try or read), `deadline`,
//! `no_instances`, `discovery`, `not_ready`, `invalid_request`,
//! `request_error`, `declined` or `_OTHER`.
//!
//! Events whose rate others choose are limited to one INFO line a second,
//! the others written at DEBUG and counted in the next INFO line's
//! `suppressed` field: `retrying` (per service; fields `service`,
//! `instance`, `reason`, `retry`, `wait`), inside the request's span, and
//! `request to an unknown service` (per balancer). Counters count every
//! one (`ribbon_retries_total`, `ribbon_unknown_service_total`).
//!
//! Without a subscriber that wants them, creating, entering and recording
//! these spans is a few atomic loads and branches per request (measured in
//! BENCHMARKS.md's overhead table, which runs without one).

use tracing::Span;
use tracing::field::Empty;

use crate::instance::Endpoint;
use crate::stats::Outcome;

/// The span of one call.
pub(super) fn request(method: &http::Method, service: &str) -> Span {
    tracing::info_span!(
        "ribbon.request",
        otel.kind = "client",
        http.request.method = method_label(method),
        peer.service = service,
        ribbon.instance.id = Empty,
        ribbon.attempts = Empty,
        http.response.status_code = Empty,
        "error.type" = Empty,
    )
}

/// The span of one attempt, a child of `parent`; `resends` is how many
/// attempts came before it.
/// The `http.request.method` of a span: a method RFC 9110 (or RFC 5789's
/// PATCH) defines, else `_OTHER`, as OpenTelemetry's HTTP conventions ask.
/// An extension method comes from the caller, so as a span name or
/// attribute it would let anyone add names (or 1 MiB of text) to traces.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::CONNECT => "CONNECT",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::TRACE => "TRACE",
        http::Method::PATCH => "PATCH",
        _ => OTHER_METHOD,
    }
}

const OTHER_METHOD: &str = "_OTHER";

pub(super) fn attempt(
    parent: &Span,
    method: Option<&http::Method>,
    service: &str,
    resends: u32,
) -> Span {
    if parent.is_disabled() {
        return Span::none();
    }
    let method = method.map_or("", method_label);
    let name = if method == OTHER_METHOD {
        "HTTP"
    } else {
        method
    };
    let span = tracing::info_span!(
        parent: parent,
        "ribbon.attempt",
        otel.kind = "client",
        otel.name = name,
        http.request.method = method,
        peer.service = service,
        server.address = Empty,
        server.port = Empty,
        ribbon.instance.id = Empty,
        http.request.resend_count = Empty,
        http.response.status_code = Empty,
        "error.type" = Empty,
    );
    if resends > 0 {
        span.record("http.request.resend_count", resends);
    }
    span
}

/// An instance's id as span fields carry it: registry text, cut to 128
/// bytes and escaped as the crate's log events quote it (an id can be 8 KiB
/// and hold line breaks or bidirectional marks, which a JSON or
/// OpenTelemetry exporter passes on as they are).
fn instance_id(endpoint: &Endpoint) -> tracing::field::DisplayValue<crate::error::Quoted<'_>> {
    tracing::field::display(crate::error::Quoted::new(endpoint.instance().id()))
}

/// Records the chosen instance on an attempt span.
pub(super) fn picked(span: &Span, endpoint: &Endpoint) {
    if span.is_disabled() {
        return;
    }
    let authority = endpoint.authority();
    span.record("server.address", authority.host());
    if let Some(port) = authority.port_u16() {
        span.record("server.port", port);
    }
    span.record("ribbon.instance.id", instance_id(endpoint));
}

/// Records how an attempt (or the whole call) ended.
pub(super) fn ended(span: &Span, outcome: Outcome, status: Option<u16>, timeout: bool) {
    if span.is_disabled() {
        return;
    }
    if let Some(code) = status {
        span.record("http.response.status_code", code);
        if code >= 400 {
            span.record("error.type", code.to_string().as_str());
        }
        return;
    }
    let class = match outcome {
        Outcome::Success => return,
        Outcome::FailureStatus(_) => "_OTHER",
        Outcome::ConnectFailure => "connect_failure",
        Outcome::ConnectTimeout => "connect_timeout",
        Outcome::ReadTimeout => "timeout",
        Outcome::OtherError if timeout => "timeout",
        Outcome::OtherError => "_OTHER",
        Outcome::RequestError => "request_error",
        Outcome::Declined => "declined",
        Outcome::ConnectionLost => "connection_lost",
    };
    span.record("error.type", class);
}

/// Records a call that ended without an attempt's result (`class` as in the
/// module docs).
pub(super) fn failed(span: &Span, class: &'static str) {
    span.record("error.type", class);
}

/// Records the last attempt's instance and the attempt count on the call
/// span.
pub(super) fn finished(span: &Span, endpoint: &Endpoint, attempts: usize) {
    if span.is_disabled() {
        return;
    }
    span.record("ribbon.instance.id", instance_id(endpoint));
    span.record("ribbon.attempts", attempts);
}
