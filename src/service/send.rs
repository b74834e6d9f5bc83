//! The request path: wait for the first list, then run attempts
//! ([`attempt`](super::attempt)) and retry onto the same or other instances
//! as the [`RetryPolicy`] allows.
//!
//! [`RetryPolicy`]: crate::retry::RetryPolicy

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Request;
use tokio::time::Instant;
use tower::Service;

use super::ServiceState;
use super::attempt::{self, Attempted, Target};
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
pub(super) async fn send<S, B>(
    state: Arc<ServiceState>,
    mut inner: S,
    req: Request<B>,
    span: tracing::Span,
    keep_alive: Option<Arc<Shared>>,
) -> Result<<S::Response as TrackCompletion>::Tracked, Error>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Response: TrackCompletion,
    B: TryCloneBody,
{
    let service = state.service_id();
    let config = state.request_config();
    if !state.first_fetch_seen() && !state.wait_first_fetch_boxed().await {
        trace::failed(&span, "discovery");
        return Err(Error::discovery_timeout(service, state.first_fetch_wait()));
    }
    // The list is here: the request needs only its service's state now.
    drop(keep_alive);
    let policy = &config.retry;
    let deadline = policy
        .get_deadline()
        .and_then(|d| Instant::now().checked_add(d));
    let method = req.method().clone();
    let idempotent = policy.is_idempotent(req.method())
        || req.extensions().get::<RetryNonIdempotent>().is_some();
    let hash_key = config
        .hash_key
        .as_ref()
        .and_then(|key| key.extract(req.uri(), req.headers()));
    if let Some(budget) = state.retry_budget() {
        budget.deposit();
    }

    let mut walk = Walk::new(policy);
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut retries = 0u32;
    // The request lives here only; the attempt takes it out to send it (so
    // nested futures hold no copy of it).
    let mut slot = Some(req);

    loop {
        let spare = if walk.same_left > 0 || walk.next_left > 0 {
            slot.as_ref().and_then(try_clone_request)
        } else {
            None
        };
        let target = walk.target();
        let call = attempt::Call {
            config,
            state: &state,
            hash_key,
            deadline,
        };
        let (done, timed_out) = traced_attempt(
            &call,
            &mut inner,
            &mut slot,
            target,
            &span,
            retries,
            &mut attempts,
        )
        .await?;

        // Retry?
        let reason = policy.retry_reason(done.outcome, done.status, idempotent);
        // A spare sharing a stream that this attempt started cannot be sent.
        let have_copy = spare.as_ref().is_some_and(|r| r.body().is_replayable());
        let left = walk.same_left.saturating_add(walk.next_left);
        let decision = decide(config, reason, have_copy, left, retries, deadline, &done);
        let wait = match decision.spend(state.retry_budget()) {
            Decision::Retry(wait) => wait,
            Decision::Stop(why) => {
                let refused = refused(policy, &done, reason, why, &method, idempotent, service);
                let why = Why {
                    refused,
                    deadline,
                    per_try: config.per_try,
                };
                trace::finished(&span, done.endpoint(), attempts.len() + 1);
                trace::ended(&span, done.outcome, done.status, timed_out);
                return track(finish(config, service, done, attempts, &why), state);
            }
        };
        note_retry(&span, service, reason, &mut attempts, &done, retries, wait);
        let endpoint = done.into_endpoint(&state);
        pause(wait).await;
        retries += 1;
        let Some(next) = spare else {
            // `decide` retries only with a copy.
            return Err(Error::no_instances(service));
        };
        slot = Some(next);
        walk.advance(endpoint, policy);
    }
}

/// One attempt in its `ribbon.attempt` span; a request that could not be
/// sent is the call's error. Returns the attempt and whether the balancer's
/// own timer cut it off.
async fn traced_attempt<S, B>(
    call: &attempt::Call<'_>,
    inner: &mut S,
    slot: &mut Option<Request<B>>,
    target: Target<'_>,
    span: &tracing::Span,
    retries: u32,
    attempts: &mut Vec<Attempt>,
) -> Result<(Attempted<S::Response>, bool), Error>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Response: ResponseStatus,
{
    let service = call.state.service_id();
    let method = slot.as_ref().map(Request::method);
    let try_span = trace::attempt(span, method, service, retries);
    let done = match attempt::run(call, inner, slot, target, &try_span).await {
        Ok(done) => done,
        Err(why) => {
            let attempts = std::mem::take(attempts);
            let err = not_sent(call.config, call.state, why, attempts, call.deadline);
            trace::failed(&try_span, error_class(&err));
            trace::failed(span, error_class(&err));
            return Err(err);
        }
    };
    let timed_out = done
        .result
        .as_ref()
        .err()
        .is_some_and(|e| e.is::<tokio::time::error::Elapsed>());
    trace::ended(&try_span, done.outcome, done.status, timed_out);
    Ok((done, timed_out))
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
