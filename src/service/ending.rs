//! How a call ends: the caller's response with the completion that ends
//! its attempt with the body, or an error that names the service, the
//! instance, every attempt, which timeout fired and why no retry followed.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::RequestConfig;
use super::ServiceState;
use super::attempt::{Attempted, NotSent};
use super::body::TrackCompletion;
use crate::error::{Attempt, BoxError, Error, TimedOut, TimeoutKind};

/// `error.type` of a call that ended without an attempt's result.
pub(super) fn error_class(err: &Error) -> &'static str {
    if err.timeout().is_some() {
        "timeout"
    } else if err.is_no_instances() {
        "no_instances"
    } else if err.is_discovery() {
        "discovery"
    } else if err.is_invalid_request() {
        "invalid_request"
    } else {
        "not_ready"
    }
}

/// The error for an attempt that was not sent.
pub(super) fn not_sent(
    config: &RequestConfig,
    state: &ServiceState,
    why: NotSent,
    attempts: Vec<Attempt>,
    deadline: Option<Instant>,
) -> Error {
    let service = state.service_id();
    match why {
        NotSent::NotReady(source) => {
            let outcome = crate::stats::Outcome::OtherError;
            let timeout = timeout_kind(config, outcome, &source, deadline, config.per_try);
            let (source, _) = name_timeout(source, timeout);
            match timeout {
                Some(timeout) => Error::not_ready(service, source, attempts)
                    .with_timeout(timeout)
                    .with_note("the inner service was not ready in time"),
                None => Error::not_ready(service, source, attempts),
            }
        }
        NotSent::NoEndpoint => {
            if state.labels_metrics() {
                metrics::counter!(crate::metrics::NO_INSTANCES, "service" => service.to_owned())
                    .increment(1);
            }
            // A retry that found no instance lists the attempts before it.
            let err = match state.error_before_first_success() {
                Some(source) => Error::discovery(service, source),
                None => match state.snapshot() {
                    // What the source listed, by status (issue 12 item 8).
                    s if s.is_empty() && s.version() > 0 => {
                        Error::none_up(service, s.listing().why_none_up())
                    }
                    s if s.is_empty() => Error::no_instances(service)
                        .with_note("the source lists no UP instance of it"),
                    s => Error::no_instances(service).with_note(format!(
                        "all {} UP instances are excluded (circuit breaker tripped or ejected)",
                        s.len()
                    )),
                },
            };
            err.with_attempts(attempts)
        }
        NotSent::Rewrite(endpoint, e) => Error::invalid_request(service, endpoint.to_string(), e),
    }
}

/// Why the last attempt's error is the caller's: for the error message.
pub(super) struct Why {
    /// Why a retry was refused, if one was.
    pub(super) refused: Option<String>,
    pub(super) deadline: Option<Instant>,
    pub(super) per_try: Option<Duration>,
}

/// Which timeout ended an attempt that failed with `source`.
pub(super) fn timeout_kind(
    config: &RequestConfig,
    outcome: crate::stats::Outcome,
    source: &BoxError,
    deadline: Option<Instant>,
    per_try: Option<Duration>,
) -> Option<TimeoutKind> {
    use crate::stats::Outcome;
    if source.is::<super::try_timer::Fired>() {
        // Our own timer: the deadline if it has passed, else the per-try.
        let past_deadline = deadline.is_some_and(|d| Instant::now() >= d);
        return Some(
            match (past_deadline, per_try, config.retry.get_deadline()) {
                (false, Some(t), _) => TimeoutKind::PerTry(t),
                (_, _, Some(d)) => TimeoutKind::Deadline(d),
                (_, t, None) => TimeoutKind::PerTry(t.unwrap_or_default()),
            },
        );
    }
    match outcome {
        Outcome::ConnectTimeout => Some(TimeoutKind::Connect(config.connect_timeout)),
        Outcome::ReadTimeout => Some(TimeoutKind::Client),
        _ => None,
    }
}

/// `source` with the timeout named: our own timer's `Fired` becomes a
/// [`TimedOut`] saying which timeout fired; a client's timeout keeps its
/// error and gets a note.
pub(super) fn name_timeout(
    source: BoxError,
    timeout: Option<TimeoutKind>,
) -> (BoxError, Vec<String>) {
    match timeout {
        Some(kind) if source.is::<super::try_timer::Fired>() => {
            (Box::new(TimedOut { kind, source }), Vec::new())
        }
        Some(kind) => (source, vec![kind.to_string()]),
        None => (source, Vec::new()),
    }
}

/// The response with its completion, which gets the request's reference
/// to the service (no count taken per request); the response to a HEAD
/// (`head`) ends its attempt at once.
pub(super) fn track<T: TrackCompletion>(
    finished: Result<(T, Option<super::Completion>), Error>,
    state: Arc<ServiceState>,
    head: bool,
) -> Result<T::Tracked, Error> {
    finished.map(|(response, completion)| {
        let completion = completion.map(|c| c.with_state(state));
        // A HEAD's response has no content (RFC 9110, section 9.3.2): its
        // attempt ends now, not when the caller drops the response.
        response.track(completion.filter(|_| !head))
    })
}

/// What a [`Declined`](crate::stats::Outcome::Declined) attempt means, for
/// people reading the error.
const DECLINED: &str = "the server closed the HTTP/2 connection before processing the request \
     (GOAWAY ENHANCE_YOUR_CALM: it refuses this client's traffic, often one request's \
     header list over its limit; counted against the instance at most once a second)";

/// What a [`ConnectionLost`](crate::stats::Outcome::ConnectionLost)
/// attempt means, for people reading the error.
const CONNECTION_LOST: &str = "the server closed the HTTP/2 connection, or began to (a graceful \
     GOAWAY), with the request's stream open (it may have processed the request; the \
     connection's end is counted against the instance once, and not after a GOAWAY \
     ENHANCE_YOUR_CALM that another request drew)";

/// The result of the last attempt, as the caller sees it.
pub(super) fn finish<T>(
    config: &RequestConfig,
    service: &str,
    done: Attempted<T>,
    mut attempts: Vec<Attempt>,
    why: &Why,
) -> Result<(T, Option<super::Completion>), Error> {
    // An error always ended its attempt, so no clock read here.
    let elapsed = done.failed_after.unwrap_or_default();
    let outcome = done.outcome;
    let (result, held) = done.into_parts();
    let source = match result {
        Ok(response) => return Ok((response, Some(held.into_completion()))),
        Err(source) => source,
    };
    let instance = held.endpoint().to_string();
    attempts.push(Attempt::new(instance.clone(), outcome, elapsed));
    Err(failed(
        config,
        service,
        (instance, outcome, source),
        attempts,
        why,
    ))
}

/// The result of the attempt before a retry, kept from the retry's
/// decision until the retry is handed to the inner service and taken
/// (its future pending at its first poll, or answered). A retry that is
/// not sent (the inner service not ready, or refusing it as the caller's
/// [`RequestError`](crate::stats::Outcome::RequestError), as tower's
/// `LoadShed` does) ends the call with it: the response the caller would
/// have had without retries, or that attempt's error, rather than an
/// error naming an instance that received nothing. The attempt itself
/// ended when the retry was decided (its stats, in-flight count and
/// breaker), so a response returned this way is no longer in flight.
/// Envoy's router likewise returns the upstream response when the retry
/// budget refuses a retry. Boxed: only retries keep one.
pub(super) struct Previous<T> {
    pub(super) result: Result<T, BoxError>,
    pub(super) endpoint: crate::instance::Endpoint,
    pub(super) outcome: crate::stats::Outcome,
    pub(super) status: Option<u16>,
    pub(super) elapsed: Duration,
    /// Whether the retry's decision listed the attempt in the call's
    /// attempts (the first `MAX_LISTED_ATTEMPTS` are).
    pub(super) listed: bool,
}

/// The call's end with the previous attempt's result, its retry not sent
/// (`not_sent`, for the error's note): the response as it came, or the
/// error, whose attempts list only those sent.
pub(super) fn previous<T>(
    config: &RequestConfig,
    service: &str,
    previous: Previous<T>,
    mut attempts: Vec<Attempt>,
    why: &Why,
) -> Result<(T, Option<super::Completion>), Error> {
    let source = match previous.result {
        Ok(response) => return Ok((response, None)),
        Err(source) => source,
    };
    let instance = previous.endpoint.to_string();
    if !previous.listed {
        attempts.push(Attempt::new(
            instance.clone(),
            previous.outcome,
            previous.elapsed,
        ));
    }
    let failure = (instance, previous.outcome, source);
    Err(failed(config, service, failure, attempts, why))
}

/// The call's error after an attempt on `instance` failed with `source`.
fn failed(
    config: &RequestConfig,
    service: &str,
    (instance, outcome, source): (String, crate::stats::Outcome, BoxError),
    attempts: Vec<Attempt>,
    why: &Why,
) -> Error {
    let timeout = timeout_kind(config, outcome, &source, why.deadline, why.per_try);
    let (source, mut notes) = name_timeout(source, timeout);
    match outcome {
        crate::stats::Outcome::Declined => notes.push(DECLINED.to_owned()),
        crate::stats::Outcome::ConnectionLost => notes.push(CONNECTION_LOST.to_owned()),
        _ => {}
    }
    if let Some(refused) = &why.refused {
        notes.push(refused.clone());
    }
    let mut err = Error::inner(service, instance, source, attempts);
    if let Some(timeout) = timeout {
        err = err.with_timeout(timeout);
    }
    if notes.is_empty() {
        err
    } else {
        err.with_note(notes.join("; "))
    }
}

/// The call's end when its retry was not sent (`why`, in the error's
/// note): the previous attempt's result (see [`Previous`]).
pub(super) fn kept<T>(
    call: &super::attempt::Call<'_>,
    previous: Previous<T>,
    why: &str,
    attempts: Vec<Attempt>,
    span: &tracing::Span,
) -> Result<(T, Option<super::Completion>), Error> {
    let (config, service) = (call.config, call.state.service_id());
    tracing::debug!(
        parent: span,
        service,
        instance = %previous.endpoint,
        why,
        "retry not sent: the call ends with the attempt before it"
    );
    let timed_out =
        (previous.result.as_ref().err()).is_some_and(|e| e.is::<super::try_timer::Fired>());
    let sent = attempts.len() + usize::from(!previous.listed);
    super::trace::finished(span, &previous.endpoint, sent);
    super::trace::ended(span, previous.outcome, previous.status, timed_out);
    let why = Why {
        refused: Some(format!("a retry was not sent: {why}")),
        deadline: call.deadline,
        per_try: config.per_try,
    };
    self::previous(config, service, previous, attempts, &why)
}
