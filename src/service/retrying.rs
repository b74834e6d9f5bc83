//! The retry walk: which instance the next attempt goes to, whether a
//! result is retried and after how long, and why not when it is not.
//! Ribbon's `RetryHandler`/`LoadBalancerCommand` split these between
//! `MaxAutoRetries` (same instance) and `MaxAutoRetriesNextServer`.

use std::time::{Duration, SystemTime};

use http::Request;
use tokio::time::Instant;

use super::RequestConfig;
use super::ResponseStatus;
use super::ServiceState;
use super::attempt::{Attempted, Target};
use crate::error::Attempt;
use crate::instance::Endpoint;
use crate::retry::{RetryReason, TryCloneBody, Withdrawal, parse_retry_after};
use crate::stats::Outcome;

/// Attempts listed in an error at most (the first ones, then the last).
pub(super) const MAX_LISTED_ATTEMPTS: usize = 64;

/// A copy of `req` for another attempt, if its body can be replayed.
/// With `never_reached` (the last attempt never reached a server), a
/// stream that attempt read whole is copied too.
pub(super) fn try_clone_request<B: TryCloneBody>(
    req: &Request<B>,
    never_reached: bool,
) -> Option<Request<B>> {
    let body = if never_reached {
        req.body().try_clone_unsent()?
    } else {
        req.body().try_clone_body()?
    };
    let mut copy = Request::new(body);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
}

/// Where the next attempt goes: the same instance while same-instance
/// retries are left (Ribbon's `MaxAutoRetries`), then an instance not
/// tried yet (`MaxAutoRetriesNextServer`). A same-instance retry goes
/// elsewhere (a pick) if its instance has left the list, been ejected,
/// tripped its breaker or failed active checks since; a next-instance
/// retry goes back to a tried instance only when every one was tried, and
/// never to one the rule or the health view refuses (it fails with "no
/// instances" then, as a first attempt would).
pub(super) struct Walk {
    /// Every instance an attempt went to, once each (a same-instance
    /// retry's too, so one moved elsewhere avoids them all); allocated only
    /// once an attempt is retried.
    tried: Vec<Endpoint>,
    last: Option<Endpoint>,
    same: bool,
    same_left: u32,
    next_left: u32,
    /// Retries so far.
    pub(super) retries: u32,
    /// The last attempt provably never reached a server.
    never_reached: bool,
}

impl Walk {
    pub(super) fn new(policy: &crate::retry::RetryPolicy) -> Self {
        Self {
            tried: Vec::new(),
            last: None,
            same: false,
            same_left: policy.get_max_same(),
            next_left: policy.get_max_next(),
            retries: 0,
            never_reached: false,
        }
    }

    /// Retries the policy still allows (same-instance and next-instance).
    pub(super) fn retries_left(&self) -> u32 {
        self.same_left.saturating_add(self.next_left)
    }

    pub(super) fn target(&self) -> Target<'_> {
        match (&self.last, self.same) {
            (Some(endpoint), true) => Target::Same {
                endpoint,
                tried: &self.tried,
            },
            (last, _) => Target::Pick {
                tried: &self.tried,
                last: last.as_ref(),
            },
        }
    }

    /// The request for the next attempt. While another attempt may follow,
    /// it is a copy and the request stays in `slot` for the next one (one
    /// request in the call's future, not two); else it is the request.
    pub(super) fn request<B: TryCloneBody>(
        &self,
        slot: &mut Option<Request<B>>,
    ) -> Option<Request<B>> {
        // After an attempt that never reached a server, the request itself
        // may hold a stream that attempt started: its copy holds what the
        // attempt read.
        if self.same_left > 0 || self.next_left > 0 || self.never_reached {
            slot.as_ref()
                .and_then(|r| try_clone_request(r, self.never_reached))
                .or_else(|| slot.take())
        } else {
            slot.take()
        }
    }

    /// Whether `request` can be sent again after an attempt that ended
    /// with `outcome`: a request sharing a stream that the attempt started
    /// cannot, unless the attempt provably never reached a server (a
    /// connect failure or timeout: a refused stream) and read the stream
    /// whole ([`TryCloneBody::try_clone_unsent`]). Remembers which, for
    /// the next [`request`](Self::request).
    pub(super) fn replayable<B: TryCloneBody>(
        &mut self,
        request: Option<&Request<B>>,
        outcome: crate::stats::Outcome,
    ) -> bool {
        self.never_reached = outcome.never_reached_server();
        request.is_some_and(|r| {
            if self.never_reached {
                r.body().is_replayable_unsent()
            } else {
                r.body().is_replayable()
            }
        })
    }

    /// Steps past an attempt on `endpoint` that will be retried.
    pub(super) fn advance(&mut self, endpoint: Endpoint, policy: &crate::retry::RetryPolicy) {
        self.retries += 1;
        self.same = self.same_left > 0;
        if self.same {
            self.same_left -= 1;
        } else {
            self.next_left -= 1;
            self.same_left = policy.get_max_same();
        }
        // Every instance attempted, a same-instance retry's too: one that
        // moved elsewhere (its instance became unusable) was never listed,
        // so later picks went back to it (17 of 40 seeded runs).
        if !self.tried.iter().any(|t| t.same_identity(&endpoint)) {
            self.tried.push(endpoint.clone());
        }
        self.last = Some(endpoint);
    }
}

/// Counts a retry and lists the attempt it follows (whether it listed
/// it: the first [`MAX_LISTED_ATTEMPTS`] are). The log line is INFO
/// at most once a second per service (with the retries logged at DEBUG
/// since the last one as `suppressed`), DEBUG otherwise: while an instance
/// fails, every request may retry, and one INFO line each flooded the logs
/// at the request rate.
pub(super) fn note_retry<R>(
    span: &tracing::Span,
    state: &ServiceState,
    reason: Option<RetryReason>,
    attempts: &mut Vec<Attempt>,
    done: &Attempted<R>,
    retries: u32,
    wait: Duration,
) -> bool {
    let service = state.service_id();
    let label = reason.map(RetryReason::label).unwrap_or("none");
    // One line, at INFO or DEBUG (tracing's levels are per call site).
    macro_rules! retrying {
        ($level:ident $(, $extra:ident)?) => {
            tracing::$level!(
                parent: span,
                service,
                instance = %done.endpoint(),
                reason = label,
                retry = retries + 1,
                ?wait,
                $($extra,)?
                "retrying"
            )
        };
    }
    match state.retries_logged().admit() {
        Some(suppressed) => retrying!(info, suppressed),
        None => retrying!(debug),
    }
    metrics::counter!(crate::metrics::RETRIES, "service" => service.to_owned(), "reason" => label)
        .increment(1);
    let listed = attempts.len() < MAX_LISTED_ATTEMPTS;
    if listed {
        let instance = done.endpoint().to_string();
        attempts.push(Attempt::new(instance, done.outcome, done.elapsed()));
    }
    listed
}

pub(super) enum Decision {
    Retry(Duration),
    Stop(Option<&'static str>),
}

/// Whether to retry, and after how long.
pub(super) fn decide<R: ResponseStatus>(
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
        // gRPC's server pushback (gRFC A6) decides in place of the backoff:
        // negative or unparsable, "do not retry"; else the wait, bounded as
        // a `Retry-After` is.
        if let Some(value) = response.retry_pushback() {
            let Some(after) = parse_pushback(value) else {
                return Decision::Stop(Some("the server's grpc-retry-pushback-ms asks for none"));
            };
            if after > config.retry.get_max_retry_after() {
                return Decision::Stop(Some("grpc-retry-pushback-ms beyond max_retry_after"));
            }
            wait = after;
        } else if matches!(done.status, Some(429 | 503)) {
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

/// gRPC's `grpc-retry-pushback-ms` (gRFC A6: a signed 32-bit count of
/// milliseconds): the wait it asks for, or `None` when it asks for no
/// retry (negative or unparsable).
fn parse_pushback(value: &http::HeaderValue) -> Option<Duration> {
    let ms: i32 = value.to_str().ok()?.parse().ok()?;
    u64::try_from(ms).ok().map(Duration::from_millis)
}

impl Decision {
    /// A retry spends one token of the service's budget (tower's
    /// `TpsBudget`), returned with it; without one it stops.
    pub(super) fn spend(
        self,
        budget: Option<&crate::retry::TpsBudget>,
    ) -> (Self, Option<Withdrawal>) {
        match (self, budget) {
            (Decision::Retry(wait), Some(budget)) => match budget.take() {
                Some(token) => (Decision::Retry(wait), Some(token)),
                None => {
                    metrics::counter!(crate::metrics::RETRY_BUDGET_EXHAUSTED).increment(1);
                    (Decision::Stop(Some("retry budget exhausted")), None)
                }
            },
            (decision, _) => (decision, None),
        }
    }
}

/// A retry's token, taken from the service's retry budget when the retry
/// was decided, given back if the retry is never sent: the caller dropped
/// the request during the backoff or while the inner service was not
/// ready, or the retry found no instance or a not-ready inner service (or
/// the inner service refused it, see [`Spent`]).
/// The budget bounds the load retries add to instances, and an unsent
/// retry added none (a caller cancelling during backoffs drained it, and
/// other requests' retries were refused as "retry budget exhausted").
///
/// Holds its own reference to the service (taken only for a retry under a
/// budget), since the request's future hands its own to the response;
/// boxed, so every request's future grows by one pointer only (the
/// allocation is made per retry, as the backoff's timer is).
#[derive(Default)]
pub(super) struct Unsent(Option<Box<(std::sync::Arc<super::ServiceState>, Withdrawal)>>);

impl Unsent {
    /// A retry was decided, and took `token` if the service has a budget:
    /// the token, held until the retry is sent.
    pub(super) fn taken(
        state: &std::sync::Arc<super::ServiceState>,
        token: Option<Withdrawal>,
    ) -> Self {
        Self(token.map(|token| Box::new((std::sync::Arc::clone(state), token))))
    }

    /// The attempt (after `retries` retries) was handed to the inner
    /// service at `sent`: a retry's token is spent, and a first attempt
    /// deposits into the budget, until [`Spent::settle`] says otherwise. A
    /// request deposits only once it reached an instance: one that never
    /// did (its inner service not ready or failing its readiness, no
    /// instance to pick, dropped while it waited) added no load to retry
    /// against, and 20 such requests let 10 of 10 failing requests retry
    /// under a ratio of 0.5 (helper 188; `tests/retry_budget_unsent.rs`).
    pub(super) fn sent(
        &mut self,
        state: &super::ServiceState,
        retries: u32,
        sent: Instant,
    ) -> Spent {
        if retries == 0 {
            if let Some(budget) = state.retry_budget() {
                budget.deposit_at(sent);
            }
        }
        Spent(self.0.take())
    }
}

/// What an attempt in flight put into or took from the retry budget,
/// settled by its outcome. An attempt the inner service refused as the
/// caller's [`RequestError`](Outcome::RequestError) (tower's `LoadShed`
/// inside the balancer, a closed `Buffer`) reached no instance: a first
/// attempt's deposit is taken back and a retry's token given back, as for
/// one whose inner service was not ready. Before, 20 requests shed in
/// `call` let 10 of 10 requests answered 503 retry under a ratio of 0.5,
/// where the budget allows 5 (attack 62a; `tests/retry_budget_unsent.rs`).
/// Dropped unsettled (the request cancelled in flight), both stand: the
/// attempt was handed over and may have reached its instance.
pub(super) struct Spent(Option<Box<(std::sync::Arc<super::ServiceState>, Withdrawal)>>);

impl Spent {
    /// Settles the attempt (after `retries` retries, sent at `sent`) that
    /// ended with `outcome`.
    pub(super) fn settle(
        self,
        state: &super::ServiceState,
        retries: u32,
        outcome: Outcome,
        sent: Instant,
    ) {
        if outcome != Outcome::RequestError {
            return;
        }
        if retries == 0 {
            if let Some(budget) = state.retry_budget() {
                budget.take_back(sent);
            }
        }
        // The token, given back by `Unsent`'s drop.
        drop(Unsent(self.0));
    }
}

impl Drop for Unsent {
    fn drop(&mut self) {
        if let Some(taken) = self.0.take() {
            let (state, token) = *taken;
            if let Some(budget) = state.retry_budget() {
                budget.refund(token);
            }
        }
    }
}

/// Why no retry followed a retryable result, for the error message (and a
/// debug event).
pub(super) fn refused<R>(
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
            let method = crate::error::quote(method.as_str());
            Some(format!("{method} not retried: {why}"))
        }
        (None, _)
            if !idempotent
                && policy
                    .retry_reason(done.outcome, done.status, true)
                    .is_some() =>
        {
            // The method comes from the caller (a gateway forwards its
            // clients' methods): quoted, as other input in errors.
            let method = crate::error::quote(method.as_str());
            Some(format!(
                "{method} not retried: the request may have reached the server and {method} is not \
                 idempotent (opt in with `RetryNonIdempotent` or `retry_on_all_operations`)"
            ))
        }
        _ => None,
    }
}
