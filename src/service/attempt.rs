//! One attempt of a request: wait until the inner service is ready, pick an
//! instance, rewrite the URI to it, send, then classify the result and
//! record it in the instance's stats, metrics and health.
//!
//! A successful attempt stays in flight until its response body ends or is
//! dropped ([`Completion`]); a failed one is recorded when its result
//! arrives, and stays in flight until its response body ends if that
//! response goes to the caller (else it ends at once).
//!
//! The pick comes after readiness, so an instance removed or ejected while
//! the inner service was busy (a concurrency limit, a full buffer) is not
//! chosen, and the wait is not charged to any instance: an attempt's
//! latency runs from the send to the end of the inner call. That holds for
//! waits the inner service shows in `poll_ready`. A queue *inside* the
//! inner service hides its wait: tower's `Buffer` is ready while its
//! channel has room, so with `buffer(n).concurrency_limit(k)` as the inner
//! service a request waits for the limit after its pick, that wait counts
//! as the instance's latency and a per-try timeout firing in the queue as
//! its read timeout (helper 211: 18 of 20 such timeouts ejected an
//! instance that had answered every call in 100 ms). Put queueing layers
//! outside the balancer (`ServiceBuilder::new().buffer(n).concurrency_limit(k)
//! .layer(lb_layer)`), or a limit alone inside it. tower's `LoadShed`
//! inside refuses in `call`; its `Overloaded`, and a closed `Buffer`'s
//! error, are [`Outcome::RequestError`]s: charged to no instance and not
//! retried. A retry to the same instance checks it again against the
//! current list and its health, so it never follows one that left.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Uri};
use tokio::time::Instant;
use tower::Service;

mod pick;

#[cfg(test)]
use self::pick::listed;
use self::pick::{pick, still_usable};
use super::ServiceState;
use super::body::{Completion, InFlight};
use super::sending::Sending;
use super::{RequestConfig, ResponseStatus, classify_error};
use crate::error::BoxError;
use crate::instance::Endpoint;
use crate::retry::TryCloneBody;
use crate::stats::Outcome;

/// Where an attempt goes.
pub(super) enum Target<'a> {
    /// The same instance again (a same-instance retry); if it is no
    /// longer usable, a fresh pick avoiding `tried` (which holds it).
    Same {
        endpoint: &'a Endpoint,
        tried: &'a [Endpoint],
    },
    /// A fresh pick avoiding `tried` (when every one was tried, any
    /// instance the rule takes but `last`, the previous attempt's, while
    /// another is eligible); nothing when the rule and the health view
    /// take none, as for a first attempt.
    Pick {
        tried: &'a [Endpoint],
        last: Option<&'a Endpoint>,
    },
}

/// Who holds a finished attempt's instance.
pub(super) enum Held {
    /// A failed attempt: recorded already, in flight until dropped (with
    /// its response body, when the response goes to the caller).
    Failed(InFlight),
    /// A successful one: ends when the completion drops (with the body).
    Completion(Completion),
}

impl Held {
    /// The instance.
    pub(super) fn endpoint(&self) -> &Endpoint {
        match self {
            Held::Failed(in_flight) => in_flight.endpoint(),
            Held::Completion(completion) => completion.endpoint(),
        }
    }

    /// The completion that ends the attempt when dropped: a successful
    /// one's (which records it then), or a failed one's whose response
    /// goes to the caller (recorded already; only its load remains).
    pub(super) fn into_completion(self) -> Completion {
        match self {
            Held::Failed(in_flight) => Completion::of_recorded(in_flight),
            Held::Completion(completion) => completion,
        }
    }
}

/// A finished attempt.
pub(super) struct Attempted<R> {
    held: Held,
    pub(super) result: Result<R, BoxError>,
    pub(super) outcome: Outcome,
    pub(super) status: Option<u16>,
    /// When the request was sent.
    sent: Instant,
    /// How long a failed attempt took (a success is still running).
    pub(super) failed_after: Option<Duration>,
}

/// Why an attempt was not made.
pub(super) enum NotSent {
    /// The inner service failed or timed out while becoming ready.
    NotReady(BoxError),
    /// No instance could be picked.
    NoEndpoint,
    /// The URI could not be rewritten to the instance.
    Rewrite(Endpoint, http::uri::InvalidUriParts),
}

/// The bound on one wait: the per-try timeout, cut to the deadline.
pub(super) fn bound(per_try: Option<Duration>, deadline: Option<Instant>) -> Option<Duration> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    match (per_try, left) {
        (Some(t), Some(d)) => Some(t.min(d)),
        (t, d) => t.or(d),
    }
}

/// When the per-try timeout (cut to the deadline) of an attempt sent at
/// `sent` expires, without another clock read.
fn until(sent: Instant, per_try: Option<Duration>, deadline: Option<Instant>) -> Option<Instant> {
    let per_try = per_try.and_then(|t| sent.checked_add(t));
    match (per_try, deadline) {
        (Some(t), Some(d)) => Some(t.min(d)),
        (t, d) => t.or(d),
    }
}

/// What every attempt of one call shares.
pub(super) struct Call<'a> {
    pub(super) config: &'a RequestConfig,
    pub(super) state: &'a Arc<ServiceState>,
    pub(super) hash_key: Option<u64>,
    pub(super) deadline: Option<Instant>,
    /// The deadline the call told its servers (see
    /// `Completion::callers_deadline`).
    pub(super) callers_deadline: Option<Instant>,
}

/// Waits, under the per-try timeout cut to the deadline, until `inner` is
/// ready. The caller polls readiness once inline (most inner services, HTTP
/// clients among them, are always ready) and comes here only when that was
/// pending, so this future is boxed and stays out of every request's.
pub(super) fn wait_ready<'a, S, B>(
    inner: &'a mut S,
    per_try: Option<Duration>,
    deadline: Option<Instant>,
) -> Pin<Box<dyn Future<Output = Result<(), NotSent>> + Send + 'a>>
where
    S: Service<Request<B>> + Send,
    S::Error: Into<BoxError>,
{
    let ready = std::future::poll_fn(move |cx| inner.poll_ready(cx).map_err(Into::into));
    let bound = bound(per_try, deadline);
    Box::pin(async move {
        let result = match bound {
            // Our own timer's mark, so the error names the per-try timeout
            // or the deadline (tokio's `Elapsed` was read as no timeout at
            // all: `timeout()` None, "deadline has elapsed"; helper 233).
            Some(bound) => tokio::time::timeout(bound, ready)
                .await
                .unwrap_or_else(|_| Err(Box::new(super::try_timer::Fired))),
            None => ready.await,
        };
        result.map_err(NotSent::NotReady)
    })
}

/// Starts one attempt, the inner service being ready: picks an instance
/// (see the [module docs](self)), rewrites the URI to it, counts it in
/// flight and calls the inner service.
pub(super) fn start<S, B>(
    call: &Call<'_>,
    inner: &mut S,
    mut request: Request<B>,
    target: Target<'_>,
    span: &tracing::Span,
) -> Result<(Sending<S::Future>, InFlight), NotSent>
where
    S: Service<Request<B>>,
    B: TryCloneBody,
{
    let state = call.state;
    // One clock read for the pick and the send.
    let sent = Instant::now();
    let endpoint = match target {
        // Still listed and healthy: the same instance again.
        Target::Same { endpoint, tried } => match still_usable(state, endpoint, sent) {
            Some(endpoint) => endpoint,
            // Removed, ejected, tripped or failing active checks since the
            // last attempt: the retry goes elsewhere, as a pick avoiding
            // every instance tried (not only this one).
            None => pick(
                state,
                tried,
                Some(endpoint),
                call.hash_key,
                sent,
                request.headers(),
            )
            .ok_or(NotSent::NoEndpoint)?,
        },
        // Nothing to pick: no fallback to the last instance, which the
        // rule or the health view refuses now (ejected, tripped, past an
        // availability limit) as it would refuse a first attempt.
        Target::Pick { tried, last } => {
            pick(state, tried, last, call.hash_key, sent, request.headers())
                .ok_or(NotSent::NoEndpoint)?
        }
    };
    super::trace::picked(span, &endpoint);
    if let Err(e) = rewrite(&mut request, &endpoint) {
        return Err(NotSent::Rewrite(endpoint, e));
    }
    if let Some(name) = state.instance_cookie() {
        instance_cookie(request.headers_mut(), name, state, &endpoint);
    }
    let in_flight = InFlight::start(endpoint, sent, call.config.per_instance_metrics);
    if in_flight.is_probe() {
        // The instance is out until the probe's result: the health view
        // counts it unhealthy from the next pick.
        state.health().invalidate();
    }
    // A stream still to be uploaded: the per-try timeout starts at its end.
    let upload = call
        .config
        .per_try
        .and_then(|per_try| Some((per_try, request.body().upload()?)))
        .filter(|(_, upload)| upload.ended_at().is_none());
    // The inner client's own spans are children of the attempt's.
    let fut = tracing::Instrument::instrument(inner.call(request), span.clone());
    let until = until(sent, call.config.per_try, call.deadline);
    Ok((
        Sending::new(fut, until, upload, call.deadline, sent),
        in_flight,
    ))
}

/// Ends an attempt with its result: classifies it, and records a failure
/// at once in stats, metrics and outlier ejection; a success stays in
/// flight in the returned [`Completion`] until its body ends.
pub(super) fn end<R: ResponseStatus>(
    call: &Call<'_>,
    in_flight: InFlight,
    result: Result<R, BoxError>,
) -> Attempted<R> {
    let (config, state) = (call.config, call.state);
    let mut in_flight = in_flight;
    let sent = in_flight.sent();
    let status = result.as_ref().ok().and_then(ResponseStatus::status_code);
    let mut outcome = match &result {
        Ok(_) => config.failure_statuses.classify_status(status),
        Err(e) => instance_scheme(classify_error(e), e, in_flight.endpoint()),
    };
    let mut failed_after = None;
    let held = if result.is_ok() && outcome.is_success() {
        // The state is attached by the caller, which hands over its own
        // reference when the response goes out (no count per request).
        let per_instance = config.per_instance_metrics;
        // Any response closes the breaker (Ribbon), at its headers.
        if in_flight.response_arrived(per_instance) != crate::stats::BreakerTransition::None {
            state.health().invalidate();
        }
        let mut done = Completion::new(in_flight, outcome, per_instance);
        done.callers_deadline = call.callers_deadline;
        done.connection = result
            .as_ref()
            .ok()
            .and_then(ResponseStatus::connection_id)
            .and_then(std::num::NonZeroU64::new);
        Held::Completion(done)
    } else {
        // One clock read ends the attempt for stats, metrics and ejection.
        let now = Instant::now();
        failed_after = Some(now.saturating_duration_since(sent));
        // A declined attempt counts once a second per instance, as a
        // connect failure (a burst of them is one connection's GOAWAY); one
        // whose HTTP/2 connection the server closed, once per connection's
        // end (told by time) and not after a decline, as an other error.
        let stats = in_flight.endpoint().stats_handle();
        match outcome {
            Outcome::Declined if stats.count_declined(now) => outcome = Outcome::ConnectFailure,
            Outcome::ConnectionLost if stats.count_lost(sent, now, None) => {
                outcome = Outcome::OtherError
            }
            _ => {}
        }
        // Recorded now; still in flight while the `Held` lives (a response
        // handed to the caller keeps it until its body ends).
        let transition = in_flight.record(outcome, now, config.per_instance_metrics);
        if transition != crate::stats::BreakerTransition::None {
            state.health().invalidate();
        }
        // Only a failure can eject (a success resets the counts), and not
        // the caller's own: an instance held at its trigger by the cap is
        // not ejected by the caller's broken request.
        if outcome.counts_against_instance() {
            super::body::observe(config, state, in_flight.endpoint(), now);
        }
        Held::Failed(in_flight)
    };
    Attempted {
        held,
        result,
        outcome,
        status,
        sent,
        failed_after,
    }
}

impl<R> Attempted<R> {
    /// How long the attempt took: until its failure, or until now for a
    /// success (whose body may still be running).
    pub(super) fn elapsed(&self) -> Duration {
        self.failed_after.unwrap_or_else(|| self.sent.elapsed())
    }

    /// The instance the attempt went to.
    pub(super) fn endpoint(&self) -> &Endpoint {
        self.held.endpoint()
    }

    /// Whether the balancer's own timer (per-try timeout or deadline) cut
    /// the attempt off.
    pub(super) fn timed_out(&self) -> bool {
        self.result
            .as_ref()
            .err()
            .is_some_and(|e| e.is::<super::try_timer::Fired>())
    }

    /// The result and the instance, ending the attempt now (it is
    /// retried; a success's completion is dropped, which ends it and may
    /// tell `state` that the breaker moved).
    pub(super) fn into_retried(self, state: &Arc<ServiceState>) -> (Result<R, BoxError>, Endpoint) {
        let endpoint = self.endpoint().clone();
        match self.held {
            Held::Failed(in_flight) => drop(in_flight),
            Held::Completion(completion) => drop(completion.with_state(Arc::clone(state))),
        }
        (self.result, endpoint)
    }

    /// When the attempt was sent.
    pub(super) fn sent(&self) -> Instant {
        self.sent
    }

    /// The result, and who holds the instance.
    pub(super) fn into_parts(self) -> (Result<R, BoxError>, Held) {
        (self.result, self.held)
    }
}

/// Sets the instance cookie naming `endpoint` (a retry replaces the
/// previous attempt's); an id that is not a cookie value adds none (and drops a pair of that name naming another instance), and the
/// service's first such refusal logs a warning.
fn instance_cookie(
    headers: &mut http::HeaderMap,
    name: &str,
    state: &ServiceState,
    endpoint: &Endpoint,
) {
    let instance = endpoint.instance();
    if !super::cookie::set(headers, name, instance) && state.first_cookie_refusal() {
        tracing::warn!(
            service = state.service_id(),
            instance = %endpoint,
            id = ?crate::error::DebugCut(instance.id()),
            cookie = name,
            "instance id is not a cookie value: no instance cookie added (warned once per service)"
        );
    }
}

/// A plain client's refusal of `https` is the caller's
/// ([`Outcome::RequestError`](crate::stats::Outcome::RequestError)) when the
/// caller asked for `https`, and the instance's (a connect failure: this
/// client cannot reach it, another instance is tried) when the instance is
/// registered as secure.
fn instance_scheme(
    outcome: crate::stats::Outcome,
    error: &crate::error::BoxError,
    endpoint: &Endpoint,
) -> crate::stats::Outcome {
    #[cfg(any(feature = "hyper-util", feature = "reqwest"))]
    if outcome == crate::stats::Outcome::RequestError
        && endpoint.scheme() == &http::uri::Scheme::HTTPS
        && super::classify::refused_scheme(error)
    {
        return crate::stats::Outcome::ConnectFailure;
    }
    // A redirect's hop elsewhere failed: the instance had answered.
    #[cfg(feature = "reqwest")]
    if outcome != crate::stats::Outcome::RequestError
        && super::classify::failed_past_redirect(error, endpoint)
    {
        return crate::stats::Outcome::RequestError;
    }
    let _ = (error, endpoint);
    outcome
}

/// Rewrites `req`'s URI to `endpoint`, keeping path and query. A `Host`
/// the caller set stays, except on a request that says it goes over
/// HTTP/2 or HTTP/3, where it is dropped when it differs from the new
/// authority (see `instance::authority::drop_host_differing_from`).
fn rewrite<B>(req: &mut Request<B>, endpoint: &Endpoint) -> Result<(), http::uri::InvalidUriParts> {
    if matches!(req.version(), http::Version::HTTP_2 | http::Version::HTTP_3) {
        crate::instance::drop_host_differing_from(req.headers_mut(), endpoint.authority().as_str());
    }
    let connect = req.method() == http::Method::CONNECT;
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.authority = Some(endpoint.authority().clone());
    if connect {
        // CONNECT keeps the authority form (RFC 9110 §9.3.6).
        parts.scheme = None;
        parts.path_and_query = None;
    } else {
        // As Spring Cloud's `LoadBalancerUriTools`: a secure instance
        // upgrades the scheme to https; otherwise the caller's scheme stays
        // (an https request is never downgraded).
        let keep_https = parts.scheme.as_ref() == Some(&http::uri::Scheme::HTTPS);
        parts.scheme = Some(if keep_https {
            http::uri::Scheme::HTTPS
        } else {
            endpoint.scheme().clone()
        });
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
    }
    *req.uri_mut() = Uri::from_parts(parts)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::StaticSource;
    use crate::discovery::{RefreshConfig, Refreshed};
    use crate::instance::tests::IDENTITY_TESTS;
    use crate::rule::RoundRobin;
    use crate::stats::StatsConfig;

    /// A same-instance retry finds the
    /// instance in the current list by its index of identities, not by
    /// comparing it with every listed endpoint: over 2 000 instances, the
    /// last one took 2 000 identity tests per retry before (about 10 µs per
    /// retry at 10 000 instances), none now.
    #[tokio::test(start_paused = true)]
    async fn a_same_instance_retry_finds_its_instance_without_a_walk() {
        let list = (0..2_000)
            .map(|i| format!("127.0.0.{}:{}", 1 + i / 1_000, 10_000 + i % 1_000))
            .collect::<Vec<_>>()
            .join(",");
        let source = StaticSource::new().with_list("svc", &list).unwrap();
        let listed_state = || async {
            let state = ServiceState::new(
                "svc",
                Arc::new(RoundRobin::with_start(0)),
                RefreshConfig::default(),
                StatsConfig::default(),
                50,
            );
            let publish = |s| state.publish(s);
            assert!(state.refresh().refresh_once(&source, &publish).await);
            state
        };
        let state = listed_state().await;
        let snapshot = state.snapshot();
        let last = snapshot.endpoints()[1_999].clone();
        let now = Instant::now();
        IDENTITY_TESTS.with(|n| n.set(0));
        for _ in 0..10 {
            let found = still_usable(&state, &last, now).expect("listed and healthy");
            assert!(found.same_identity(&last));
            assert!(listed(&state, &last).is_some());
        }
        // The two checks above are the only identity tests.
        assert_eq!(IDENTITY_TESTS.with(|n| n.get()), 10);
        // An instance no longer listed is found absent, also without a walk.
        let other = listed_state().await;
        let stranger = other.snapshot().endpoints()[0].clone();
        IDENTITY_TESTS.with(|n| n.set(0));
        assert!(listed(&state, &stranger).is_none());
        assert_eq!(IDENTITY_TESTS.with(|n| n.get()), 0);
    }
}
