//! The request path: wait for the first list, then run attempts
//! ([`attempt`](super::attempt)) and retry onto the same or other instances
//! as the [`RetryPolicy`] allows.
//!
//! [`RetryPolicy`]: crate::retry::RetryPolicy

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use http::Request;
use tokio::time::Instant;
use tower::Service;

use super::ServiceState;
use super::attempt::{self, Attempted, NotSent, Target};
use super::body::TrackCompletion;
use super::ending::{Why, error_class, finish, not_sent, track};
use super::{RequestConfig, ResponseStatus, Shared, trace};
use crate::error::{Attempt, BoxError, Error};
use crate::instance::Endpoint;
use crate::retry::{RetryNonIdempotent, RetryReason, TryCloneBody, parse_retry_after};

/// Attempts listed in an error at most (the first ones, then the last).
const MAX_LISTED_ATTEMPTS: usize = 64;

/// A copy of `req` for another attempt, if its body can be replayed.
fn try_clone_request<B: TryCloneBody>(req: &Request<B>) -> Option<Request<B>> {
    let body = req.body().try_clone_body()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
}

/// One request: attempts and retries under the policy.
///
/// A plain function returning an `async` block rather than an `async fn`:
/// the block uses its captured values in place, where an `async fn` moves
/// each argument into a local and keeps both in its state (rustc issue
/// 62958), and the request's future is allocated per request. The attempt
/// steps before and after the inner call are plain functions
/// ([`attempt::start`], [`attempt::end`]), so the future holds only what
/// lives across an await.
pub(super) fn send<S, B>(
    state: Arc<ServiceState>,
    mut inner: S,
    req: Request<B>,
    span: tracing::Span,
    mut keep_alive: Option<Arc<Shared>>,
) -> impl Future<Output = Result<<S::Response as TrackCompletion>::Tracked, Error>>
where
    S: Service<Request<B>> + Send,
    S::Error: Into<BoxError>,
    S::Response: TrackCompletion,
    B: TryCloneBody,
{
    // The request lives here only; an attempt takes it out to send it.
    let mut slot = Some(req);
    async move {
        let service = state.service_id();
        let config = state.request_config();
        if !state.first_fetch_seen() && !state.wait_first_fetch_boxed().await {
            trace::failed(&span, "discovery");
            return Err(Error::discovery_timeout(service, state.first_fetch_wait()));
        }
        // The list is here: the request needs only its service's state now.
        drop(keep_alive.take());
        let Some(facts) = Facts::of(config, slot.as_ref()) else {
            return Err(Error::no_instances(service));
        };
        if let Some(budget) = state.retry_budget() {
            budget.deposit();
        }
        let policy = &config.retry;
        let mut walk = Walk::new(policy);
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut retries = 0u32;

        loop {
            let try_span = trace::attempt(&span, Some(&facts.method), service, retries);
            let call = attempt::Call {
                config,
                state: &state,
                hash_key: facts.hash_key,
                deadline: facts.deadline,
            };
            // In a block of its own, so that nothing of it but the inner
            // call's future and the attempt stays in the request's future.
            let (sending, in_flight) = {
                // Most inner services are always ready: one poll, and only
                // a pending one waits (boxed, under the per-try timeout).
                let first = std::future::poll_fn(|cx| {
                    Poll::Ready(inner.poll_ready(cx).map_err(Into::into))
                })
                .await;
                let ready = match first {
                    Poll::Ready(ready) => ready.map_err(NotSent::NotReady),
                    Poll::Pending => {
                        attempt::wait_ready(&mut inner, config.per_try, facts.deadline).await
                    }
                };
                let Some(request) = walk.request(&mut slot) else {
                    return Err(Error::no_instances(service));
                };
                match ready.and_then(|()| {
                    attempt::start(&call, &mut inner, request, walk.target(), &try_span)
                }) {
                    Ok(started) => started,
                    Err(why) => {
                        let attempts = std::mem::take(&mut attempts);
                        return Err(not_started(&call, why, attempts, &try_span, &span));
                    }
                }
            };
            let result = sending.await;
            let done = attempt::end(&call, in_flight, result);
            trace::ended(&try_span, done.outcome, done.status, done.timed_out());

            // Retry?
            let reason = policy.retry_reason(done.outcome, done.status, facts.idempotent);
            // A request sharing a stream that this attempt started cannot
            // be sent again.
            let have_copy = slot.as_ref().is_some_and(|r| r.body().is_replayable());
            let left = walk.same_left.saturating_add(walk.next_left);
            let decision = decide(
                config,
                reason,
                have_copy,
                left,
                retries,
                facts.deadline,
                &done,
            );
            let wait = match decision.spend(state.retry_budget()) {
                Decision::Retry(wait) => wait,
                Decision::Stop(why) => {
                    let finished = stop(&call, &facts, done, (reason, why), attempts, &span);
                    // The response takes the request's reference to its
                    // service (no count taken per request).
                    return track(finished, state);
                }
            };
            note_retry(&span, service, reason, &mut attempts, &done, retries, wait);
            let endpoint = done.into_endpoint(&state);
            pause(wait).await;
            retries += 1;
            walk.advance(endpoint, policy);
        }
    }
}

/// What a request's attempts share, read once from the request.
struct Facts {
    method: http::Method,
    /// Whether a request that may have reached the server can be retried.
    idempotent: bool,
    hash_key: Option<u64>,
    /// The policy's overall deadline, from now.
    deadline: Option<Instant>,
}

impl Facts {
    fn of<B>(config: &RequestConfig, req: Option<&Request<B>>) -> Option<Self> {
        let req = req?;
        let policy = &config.retry;
        Some(Self {
            method: req.method().clone(),
            idempotent: policy.is_idempotent(req.method())
                || req.extensions().get::<RetryNonIdempotent>().is_some(),
            hash_key: config
                .hash_key
                .as_ref()
                .and_then(|key| key.extract(req.uri(), req.headers())),
            deadline: policy
                .get_deadline()
                .and_then(|d| Instant::now().checked_add(d)),
        })
    }
}

/// The call's error when an attempt could not be sent.
fn not_started(
    call: &attempt::Call<'_>,
    why: NotSent,
    attempts: Vec<Attempt>,
    try_span: &tracing::Span,
    span: &tracing::Span,
) -> Error {
    let err = not_sent(call.config, call.state, why, attempts, call.deadline);
    trace::failed(try_span, error_class(&err));
    trace::failed(span, error_class(&err));
    err
}

/// The call's end after its last attempt: the response, or the error
/// saying why no retry followed.
fn stop<T: ResponseStatus>(
    call: &attempt::Call<'_>,
    facts: &Facts,
    done: Attempted<T>,
    (reason, why): (Option<RetryReason>, Option<&'static str>),
    attempts: Vec<Attempt>,
    span: &tracing::Span,
) -> Result<(T, Option<super::Completion>), Error> {
    let (config, service) = (call.config, call.state.service_id());
    let refused = refused(
        &config.retry,
        &done,
        reason,
        why,
        &facts.method,
        facts.idempotent,
        service,
    );
    let why = Why {
        refused,
        deadline: facts.deadline,
        per_try: config.per_try,
    };
    trace::finished(span, done.endpoint(), attempts.len() + 1);
    trace::ended(span, done.outcome, done.status, done.timed_out());
    finish(config, service, done, attempts, &why)
}

/// Where the next attempt goes: the same instance while same-instance
/// retries are left (Ribbon's `MaxAutoRetries`), then an instance not
/// tried yet (`MaxAutoRetriesNextServer`).
struct Walk {
    /// Instances left behind by a next-instance retry (allocated only once
    /// an attempt fails).
    tried: Vec<Endpoint>,
    last: Option<Endpoint>,
    same: bool,
    same_left: u32,
    next_left: u32,
}

impl Walk {
    fn new(policy: &crate::retry::RetryPolicy) -> Self {
        Self {
            tried: Vec::new(),
            last: None,
            same: false,
            same_left: policy.get_max_same(),
            next_left: policy.get_max_next(),
        }
    }

    fn target(&self) -> Target<'_> {
        match (&self.last, self.same) {
            (Some(endpoint), true) => Target::Same(endpoint),
            _ => Target::Pick {
                tried: &self.tried,
                last: self.last.as_ref(),
            },
        }
    }

    /// The request for the next attempt. While another attempt may follow,
    /// it is a copy and the request stays in `slot` for the next one (one
    /// request in the call's future, not two); else it is the request.
    fn request<B: TryCloneBody>(&self, slot: &mut Option<Request<B>>) -> Option<Request<B>> {
        if self.same_left > 0 || self.next_left > 0 {
            slot.as_ref()
                .and_then(try_clone_request)
                .or_else(|| slot.take())
        } else {
            slot.take()
        }
    }

    /// Steps past an attempt on `endpoint` that will be retried.
    fn advance(&mut self, endpoint: Endpoint, policy: &crate::retry::RetryPolicy) {
        self.same = self.same_left > 0;
        if self.same {
            self.same_left -= 1;
        } else {
            self.next_left -= 1;
            self.same_left = policy.get_max_same();
            self.tried.push(endpoint.clone());
        }
        self.last = Some(endpoint);
    }
}

/// Counts a retry and lists the attempt it follows.
fn note_retry<R>(
    span: &tracing::Span,
    service: &str,
    reason: Option<RetryReason>,
    attempts: &mut Vec<Attempt>,
    done: &Attempted<R>,
    retries: u32,
    wait: Duration,
) {
    let label = reason.map(RetryReason::label).unwrap_or("none");
    tracing::info!(
        parent: span,
        service,
        instance = %done.endpoint(),
        reason = label,
        retry = retries + 1,
        ?wait,
        "retrying"
    );
    metrics::counter!(crate::metrics::RETRIES, "service" => service.to_owned(), "reason" => label)
        .increment(1);
    if attempts.len() < MAX_LISTED_ATTEMPTS {
        let instance = done.endpoint().to_string();
        attempts.push(Attempt::new(instance, done.outcome, done.elapsed()));
    }
}

/// The backoff before a retry. A zero wait still yields, so other tasks
/// (and timeouts around this request) run even when attempts fail at once.
async fn pause(wait: Duration) {
    if wait.is_zero() {
        tokio::task::yield_now().await;
    } else {
        // Boxed: only retries sleep, so the timer stays out of every
        // request's future.
        Box::pin(tokio::time::sleep(wait)).await;
    }
}

enum Decision {
    Retry(Duration),
    Stop(Option<&'static str>),
}

/// Whether to retry, and after how long.
fn decide<R: ResponseStatus>(
    config: &RequestConfig,
    reason: Option<RetryReason>,
    have_copy: bool,
    retries_left: u32,
    retries: u32,
    deadline: Option<Instant>,
    done: &Attempted<R>,
) -> Decision {
    if reason.is_none() {
        return Decision::Stop(None);
    }
    if retries_left == 0 {
        let off = config.retry.get_max_same() == 0 && config.retry.get_max_next() == 0;
        return Decision::Stop(Some(if off {
            "retries are off (the `RetryPolicy` allows none)"
        } else {
            "no retries left"
        }));
    }
    if !have_copy {
        return Decision::Stop(Some("body cannot be replayed"));
    }
    let mut wait = config.retry.backoff_for(retries, &config.rng);
    if let Ok(response) = &done.result {
        if matches!(done.status, Some(429 | 503)) {
            if let Some(after) = response
                .retry_after()
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
            {
                if after > config.retry.get_max_retry_after() {
                    return Decision::Stop(Some("Retry-After beyond max_retry_after"));
                }
                wait = wait.max(after);
            }
        }
    }
    if let Some(deadline) = deadline {
        if Instant::now()
            .checked_add(wait)
            .is_none_or(|at| at >= deadline)
        {
            return Decision::Stop(Some("deadline"));
        }
    }
    Decision::Retry(wait)
}

impl Decision {
    /// A retry spends one token of the service's budget (tower's
    /// `TpsBudget`); without one it stops.
    fn spend(self, budget: Option<&crate::retry::TpsBudget>) -> Self {
        match (self, budget) {
            (Decision::Retry(_), Some(budget)) if !budget.withdraw() => {
                metrics::counter!(crate::metrics::RETRY_BUDGET_EXHAUSTED).increment(1);
                Decision::Stop(Some("retry budget exhausted"))
            }
            (decision, _) => decision,
        }
    }
}

/// Why no retry followed a retryable result, for the error message (and a
/// debug event).
fn refused<R>(
    policy: &crate::retry::RetryPolicy,
    done: &Attempted<R>,
    reason: Option<RetryReason>,
    why: Option<&'static str>,
    method: &http::Method,
    idempotent: bool,
    service: &str,
) -> Option<String> {
    match (reason, why) {
        (Some(reason), Some(why)) => {
            tracing::debug!(service, reason = reason.label(), why, "not retrying");
            Some(format!("{method} not retried: {why}"))
        }
        (None, _)
            if !idempotent
                && policy
                    .retry_reason(done.outcome, done.status, true)
                    .is_some() =>
        {
            Some(format!(
                "{method} not retried: the request may have reached the server and {method} is not \
                 idempotent (opt in with `RetryNonIdempotent` or `retry_on_all_operations`)"
            ))
        }
        _ => None,
    }
}
