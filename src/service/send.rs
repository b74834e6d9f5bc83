//! The request path: wait for the first list, then run attempts
//! ([`attempt`](super::attempt)) and retry onto the same or other instances
//! as the [`RetryPolicy`] allows.
//!
//! [`RetryPolicy`]: crate::retry::RetryPolicy

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::Request;
use tokio::time::Instant;
use tower::Service;

use super::ServiceState;
use super::attempt::{self, Attempted, NotSent};
use super::body::TrackCompletion;
use super::ending::{self, Previous, Why, error_class, finish, not_sent, track};
use super::retrying::{Decision, Unsent, Walk, decide, note_retry, refused};
use super::state::LiveRequest;
use super::{RequestConfig, ResponseStatus, Shared, trace};
use crate::error::{Attempt, BoxError, Error};
use crate::instance::Endpoint;
use crate::retry::{RetryNonIdempotent, RetryReason, TryCloneBody};
use crate::stats::Outcome;

/// What a request's future holds besides its service: the balancer until
/// the service's first list (see `start`), and an on-demand service's
/// [`LiveRequest`] for the request's whole life (the service is not
/// evicted under it). One value, so the future has one drop of it.
pub(super) struct Hold {
    pub(super) shared: Option<Arc<Shared>>,
    pub(super) _live: Option<LiveRequest>,
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
pub(super) fn send<S, B, R, F>(
    state: Arc<ServiceState>,
    mut inner: S,
    req: Request<B>,
    span: tracing::Span,
    hold: Hold,
    output: F,
) -> impl Future<Output = Result<R, Error>>
where
    F: FnOnce(<S::Response as TrackCompletion>::Tracked) -> R,
    S: Service<Request<B>> + Send,
    S::Error: Into<BoxError>,
    S::Response: TrackCompletion,
    B: TryCloneBody,
{
    // The request lives here only; an attempt takes it out to send it.
    let mut slot = Some(req);
    async move {
        // Moved in whole: naming only `hold.shared` would capture that
        // field alone, and the `LiveRequest` would drop when `send` returns.
        let mut hold = hold;
        // Read from `state` where used rather than kept in locals: every
        // local that lives across an await takes room in the future.
        let config = state.request_config();
        // Before the first list: the deadline starts before the wait for
        // it (boxed: only the first requests of a service wait).
        let deadline = if state.first_fetch_seen() {
            None
        } else {
            match Box::pin(first_list(&state, config)).await {
                Ok(deadline) => Some(deadline),
                Err(err) => {
                    trace::failed(&span, "discovery");
                    return Err(err);
                }
            }
        };
        // The list is here: the request needs only its service's state now.
        drop(hold.shared.take());
        let Some(facts) = Facts::of(config, slot.as_ref(), deadline) else {
            return Err(Error::no_instances(state.service_id()));
        };
        let mut walk = Walk::new(&config.retry);
        let mut past = Past::default();
        let mut unsent = Unsent::default();

        loop {
            // The attempt in a block, so that nothing of it but the
            // instance stays in the request's future during a backoff.
            let (endpoint, wait, token) = {
                let try_span =
                    trace::attempt(&span, Some(&facts.method), state.service_id(), walk.retries);
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
                        return Err(Error::no_instances(state.service_id()));
                    };
                    match ready.and_then(|()| {
                        attempt::start(
                            &facts.call(config, &state),
                            &mut inner,
                            request,
                            walk.target(),
                            &try_span,
                        )
                    }) {
                        Ok(started) => started,
                        Err(why) => {
                            let call = facts.call(config, &state);
                            let done = not_started(&call, why, &mut past, &try_span, &span);
                            return track(done, state, facts.method == http::Method::HEAD)
                                .map(output);
                        }
                    }
                };
                let spent = unsent.sent(&state, walk.retries, in_flight.sent());
                let result = Taken::new(sending, &mut past.previous).await;
                let done = attempt::end(&facts.call(config, &state), in_flight, result);
                spent.settle(&state, walk.retries, done.outcome, done.sent());
                trace::ended(&try_span, done.outcome, done.status, done.timed_out());

                // A request sharing a stream that this attempt started
                // cannot be sent again (unless it never reached a server).
                let replayable = walk.replayable(slot.as_ref(), done.outcome);
                let call = facts.call(config, &state);
                let next = next(&call, &facts, done, replayable, &walk, &mut past, &span);
                match next {
                    Next::Retry(endpoint, wait, token) => (endpoint, wait, token),
                    // The response takes the request's reference to its
                    // service (no count taken per request).
                    Next::Done(finished) => {
                        let head = facts.method == http::Method::HEAD;
                        return track(finished, state, head).map(output);
                    }
                }
            };
            // Given back if the retry is never sent (see `Unsent`).
            unsent = token;
            pause(wait).await;
            walk.advance(endpoint, &config.retry);
        }
    }
}

/// Waits for the service's first list, for at most the first-fetch bound
/// and until the policy's deadline, which starts now (the deadline covers
/// the whole request, this wait included); returns that deadline. A
/// discovery timeout when the bound passes, marked as the deadline's when
/// the deadline comes first.
async fn first_list(
    state: &ServiceState,
    config: &RequestConfig,
) -> Result<Option<Instant>, Error> {
    let started = Instant::now();
    let deadline = config
        .retry
        .get_deadline()
        .and_then(|d| started.checked_add(d));
    let waited = match deadline {
        Some(at) => tokio::time::timeout_at(at, state.wait_first_fetch_boxed()).await,
        None => Ok(state.wait_first_fetch_boxed().await),
    };
    match waited {
        Ok(true) => Ok(deadline),
        Ok(false) => Err(Error::discovery_timeout(
            state.service_id(),
            state.first_fetch_wait(),
        )),
        Err(_) => Err(
            Error::discovery_timeout(state.service_id(), started.elapsed()).with_timeout(
                crate::error::TimeoutKind::Deadline(
                    config.retry.get_deadline().unwrap_or_default(),
                ),
            ),
        ),
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
    /// The deadline the call told its servers (a gRPC call's
    /// `grpc-timeout` under `GrpcRetry`).
    callers_deadline: Option<Instant>,
}

impl Facts {
    /// The last instant a retry may be sent: the policy's deadline, or the
    /// call's (a gRPC `grpc-timeout` under `GrpcRetry`) if sooner. Only
    /// retries are decided by the call's deadline: `GrpcRetry` ends the
    /// call at it, and a retry past it only held the server's status back
    /// (helper 190: a 2 s pushback under a 300 ms `grpc-timeout` ended in
    /// DEADLINE_EXCEEDED after 300 ms, where the UNAVAILABLE was known at
    /// once).
    fn retry_until(&self) -> Option<Instant> {
        match (self.deadline, self.callers_deadline) {
            (Some(at), Some(call)) => Some(at.min(call)),
            (at, call) => at.or(call),
        }
    }

    /// What the attempts of this call share.
    fn call<'a>(
        &self,
        config: &'a RequestConfig,
        state: &'a Arc<ServiceState>,
    ) -> attempt::Call<'a> {
        attempt::Call {
            config,
            state,
            hash_key: self.hash_key,
            deadline: self.deadline,
            callers_deadline: self.callers_deadline,
        }
    }

    /// `deadline`: the policy's deadline if it was computed already
    /// (`Some`, before the wait for the first list), else computed now.
    fn of<B>(
        config: &RequestConfig,
        req: Option<&Request<B>>,
        deadline: Option<Option<Instant>>,
    ) -> Option<Self> {
        let req = req?;
        let policy = &config.retry;
        let deadline = deadline.unwrap_or_else(|| {
            policy
                .get_deadline()
                .and_then(|d| Instant::now().checked_add(d))
        });
        let call = req.extensions().get::<super::grpc_status::CallDeadline>();
        Some(Self {
            method: req.method().clone(),
            idempotent: policy.is_idempotent(req.method())
                || req.extensions().get::<RetryNonIdempotent>().is_some(),
            hash_key: config
                .hash_key
                .as_ref()
                .and_then(|key| key.extract(req.uri(), req.headers())),
            deadline,
            callers_deadline: call.map(|c| c.0),
        })
    }
}

/// The attempts listed so far (for an error), and the result before a
/// retry until the retry is taken (see [`Previous`]).
struct Past<T> {
    attempts: Vec<Attempt>,
    previous: Option<Box<Previous<T>>>,
}

impl<T> Default for Past<T> {
    fn default() -> Self {
        Self {
            attempts: Vec::new(),
            previous: None,
        }
    }
}

/// What follows an attempt.
enum Next<T> {
    /// Another attempt, after the backoff, walking on from this instance,
    /// holding the retry's budget token until it is sent.
    Retry(Endpoint, Duration, Unsent),
    /// The call's end.
    Done(Result<(T, Option<super::Completion>), Error>),
}

/// Decides what follows the attempt `done`: a retry if the policy, the
/// budget, the deadline and the body (`replayable`) allow one, else the
/// call's end.
#[inline]
fn next<T: ResponseStatus>(
    call: &attempt::Call<'_>,
    facts: &Facts,
    done: Attempted<T>,
    replayable: bool,
    walk: &Walk,
    past: &mut Past<T>,
    span: &tracing::Span,
) -> Next<T> {
    let (config, state) = (call.config, call.state);
    let attempts = &mut past.attempts;
    // A retry the inner service refused (as the caller's `RequestError`)
    // ends with the result before it.
    let previous = past.previous.take();
    if let Some(previous) = previous.filter(|_| done.outcome == Outcome::RequestError) {
        drop(done);
        let why = "the inner service refused it";
        return Next::Done(ending::kept(
            call,
            *previous,
            why,
            std::mem::take(attempts),
            span,
        ));
    }
    let reason = config
        .retry
        .retry_reason(done.outcome, done.status, facts.idempotent);
    let left = walk.retries_left();
    let decision = decide(
        config,
        reason,
        replayable,
        left,
        walk.retries,
        facts.retry_until(),
        &done,
    );
    let (decision, token) = decision.spend(state.retry_budget());
    match decision {
        Decision::Retry(wait) => {
            let listed = note_retry(span, state, reason, attempts, &done, walk.retries, wait);
            let (outcome, status, elapsed) = (done.outcome, done.status, done.elapsed());
            let (result, endpoint) = done.into_retried(state);
            past.previous = Some(Box::new(Previous {
                result,
                endpoint: endpoint.clone(),
                outcome,
                status,
                elapsed,
                listed,
            }));
            Next::Retry(endpoint, wait, Unsent::taken(state, token))
        }
        Decision::Stop(why) => {
            let attempts = std::mem::take(attempts);
            Next::Done(stop(call, facts, done, (reason, why), attempts, span))
        }
    }
}

/// The call's end when an attempt could not be sent: the error (taking
/// the attempts made before it), or, for a retry whose inner service was
/// not ready, the result before it (`previous`, see [`Previous`]).
fn not_started<T>(
    call: &attempt::Call<'_>,
    why: NotSent,
    past: &mut Past<T>,
    try_span: &tracing::Span,
    span: &tracing::Span,
) -> Result<(T, Option<super::Completion>), Error> {
    let attempts = std::mem::take(&mut past.attempts);
    if let (NotSent::NotReady(_), Some(previous)) = (&why, past.previous.take()) {
        let why = "the inner service was not ready";
        return ending::kept(call, *previous, why, attempts, span);
    }
    let err = not_sent(call.config, call.state, why, attempts, call.deadline);
    trace::failed(try_span, error_class(&err));
    trace::failed(span, error_class(&err));
    Err(err)
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

pin_project_lite::pin_project! {
    /// An attempt's inner call. The result before a retry is kept (see
    /// [`Previous`]) until the inner service takes the retry, its future
    /// pending at a poll, and dropped then: a refusal (tower's `LoadShed`,
    /// a closed `Buffer`) answers at once, and a response kept longer would
    /// hold its connection through the retry. One await for all attempts
    /// (one per kind made the request's future 304 bytes larger).
    struct Taken<'a, F, P> {
        #[pin]
        sending: F,
        previous: &'a mut Option<P>,
    }
}

impl<'a, F, P> Taken<'a, F, P> {
    fn new(sending: F, previous: &'a mut Option<P>) -> Self {
        Self { sending, previous }
    }
}

impl<F: Future, P> Future for Taken<'_, F, P> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let polled = this.sending.poll(cx);
        if polled.is_pending() && this.previous.is_some() {
            **this.previous = None;
        }
        polled
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

#[cfg(all(test, feature = "hyper-util"))]
mod tests {
    use super::*;
    use crate::discovery::RefreshConfig;
    use crate::rule::RoundRobin;
    use crate::stats::StatsConfig;

    /// glibc's per-thread cache serves allocations of at most this many
    /// bytes; a larger request future cost about 1 µs more per request in
    /// `scenarios overhead` (2 008 bytes before the cut, see `CHANGELOG.md`).
    const THREAD_CACHE_MAX: usize = 1_032;

    #[test]
    fn the_request_future_around_hyper_util_fits_the_allocators_thread_cache() {
        let state = Arc::new(ServiceState::new(
            "svc",
            Arc::new(RoundRobin::with_start(0)),
            RefreshConfig::default(),
            StatsConfig::default(),
            50,
        ));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let request = Request::get("http://svc/")
            .body(http_body_util::Empty::new())
            .unwrap();
        let future = send(
            state,
            client,
            request,
            tracing::Span::none(),
            Hold {
                shared: None,
                _live: None,
            },
            std::convert::identity,
        );
        let size = std::mem::size_of_val(&future);
        eprintln!("request future: {size} bytes");
        assert!(
            size <= THREAD_CACHE_MAX,
            "the request future is {size} bytes, more than {THREAD_CACHE_MAX}"
        );
    }
}
