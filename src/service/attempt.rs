//! One attempt of a request: wait until the inner service is ready, pick an
//! instance, rewrite the URI to it, send, then classify the result and
//! record it in the instance's stats, metrics and health.
//!
//! A successful attempt stays in flight until its response body ends or is
//! dropped ([`Completion`]); a failed one ends when its result arrives.
//!
//! The pick comes after readiness, so an instance removed or ejected while
//! the inner service was busy (a concurrency limit, a full buffer) is not
//! chosen, and the wait is not charged to any instance: an attempt's
//! latency runs from the send to the end of the inner call.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Uri};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::ServiceState;
use super::body::Completion;
use super::{RequestConfig, ResponseStatus, classify_error};
use crate::error::BoxError;
use crate::instance::Endpoint;
use crate::rule::PickContext;
use crate::stats::Outcome;

/// Where an attempt goes.
pub(super) enum Target<'a> {
    /// The same instance again (a same-instance retry).
    Same(&'a Endpoint),
    /// A fresh pick avoiding `tried`; `last` if nothing can be picked.
    Pick {
        tried: &'a [Endpoint],
        last: Option<&'a Endpoint>,
    },
}

/// Who holds a finished attempt's instance.
pub(super) enum Held {
    /// A failed attempt: ended already.
    Endpoint(Endpoint),
    /// A successful one: ends when the completion drops (with the body).
    Completion(Completion),
}

impl Held {
    /// The instance.
    pub(super) fn endpoint(&self) -> &Endpoint {
        match self {
            Held::Endpoint(endpoint) => endpoint,
            Held::Completion(completion) => completion.endpoint(),
        }
    }

    /// The completion of a successful attempt, which ends it when dropped.
    pub(super) fn into_completion(self) -> Option<Completion> {
        match self {
            Held::Endpoint(_) => None,
            Held::Completion(completion) => Some(completion),
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

/// `fut` bounded by `bound`; expiry is tokio's `Elapsed` (a read timeout).
async fn bounded<T>(
    bound: Option<Duration>,
    fut: impl Future<Output = Result<T, BoxError>>,
) -> Result<T, BoxError> {
    match bound {
        Some(bound) => tokio::time::timeout(bound, fut)
            .await
            .unwrap_or_else(|elapsed| Err(Box::new(elapsed))),
        None => fut.await,
    }
}

/// What every attempt of one call shares.
pub(super) struct Call<'a> {
    pub(super) config: &'a RequestConfig,
    pub(super) state: &'a Arc<ServiceState>,
    pub(super) hash_key: Option<u64>,
    pub(super) deadline: Option<Instant>,
}

/// Waits until `inner` is ready. Most inner services (HTTP clients) are
/// always ready: poll once, and only when that is pending wait under the
/// timeout, in a boxed future (kept out of every request's future).
async fn ready<S, B>(
    inner: &mut S,
    per_try: Option<Duration>,
    deadline: Option<Instant>,
) -> Result<(), NotSent>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(inner.poll_ready(cx)))
        .await
        .map_err(Into::into);
    match first {
        std::task::Poll::Ready(Ok(())) => Ok(()),
        std::task::Poll::Ready(Err(e)) => Err(NotSent::NotReady(e)),
        std::task::Poll::Pending => {
            let ready = inner.ready();
            let wait = bounded(bound(per_try, deadline), async move {
                ready.await.map(|_| ()).map_err(Into::into)
            });
            Box::pin(wait).await.map_err(NotSent::NotReady)
        }
    }
}

/// One attempt; see the [module docs](self).
pub(super) async fn run<S, B>(
    call: &Call<'_>,
    inner: &mut S,
    slot: &mut Option<Request<B>>,
    target: Target<'_>,
    span: &tracing::Span,
) -> Result<Attempted<S::Response>, NotSent>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Response: ResponseStatus,
{
    let Call {
        config,
        state,
        hash_key,
        deadline,
    } = *call;
    let per_try = config.per_try;
    ready(inner, per_try, deadline).await?;
    // One clock read for the pick and the send.
    let sent = Instant::now();
    let endpoint = match target {
        Target::Same(endpoint) => endpoint.clone(),
        Target::Pick { tried, last } => {
            let headers = slot.as_ref().map(Request::headers);
            pick(state, tried, hash_key, sent, headers)
        }
        .or_else(|| last.cloned())
        .ok_or(NotSent::NoEndpoint)?,
    };
    super::trace::picked(span, &endpoint);
    let Some(request) = slot.as_mut() else {
        return Err(NotSent::NoEndpoint);
    };
    if let Err(e) = rewrite(request, &endpoint) {
        return Err(NotSent::Rewrite(endpoint, e));
    }
    if let Some(name) = state.instance_cookie() {
        instance_cookie(request.headers_mut(), name, state, &endpoint);
    }

    // Borrowed from `endpoint`: no reference count taken per attempt.
    let guard = endpoint.stats_handle().start_at(sent);
    let Some(request) = slot.take() else {
        return Err(NotSent::NoEndpoint);
    };
    // The inner client's own spans are children of the attempt's.
    let call = tracing::Instrument::instrument(inner.call(request), span.clone());
    let result = match until(sent, per_try, deadline) {
        Some(at) => match tokio::time::timeout_at(at, call).await {
            Ok(result) => result.map_err(Into::into),
            Err(elapsed) => Err(Box::new(elapsed) as BoxError),
        },
        None => call.await.map_err(Into::into),
    };
    let status = result.as_ref().ok().and_then(ResponseStatus::status_code);
    let outcome = match &result {
        Ok(_) => config.failure_statuses.classify_status(status),
        Err(e) => classify_error(e),
    };
    let mut failed_after = None;
    let held = if result.is_ok() && outcome.is_success() {
        let attempt = guard.detach();
        let per_instance = config.per_instance_metrics;
        // The state is attached by the caller, which hands over its own
        // reference when the response goes out (no count per request).
        Held::Completion(Completion::new(attempt, endpoint, outcome, per_instance))
    } else {
        // One clock read ends the attempt for stats, metrics and ejection.
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(sent);
        failed_after = Some(elapsed);
        let transition = guard.finish_at(outcome, now);
        let metrics = endpoint.metrics(config.per_instance_metrics);
        metrics.record(outcome, elapsed.as_secs_f64(), transition);
        if transition != crate::stats::BreakerTransition::None {
            state.health().invalidate();
        }
        // Only a failure can eject (a success resets the counts).
        observe(config, state, &endpoint, now);
        Held::Endpoint(endpoint)
    };
    Ok(Attempted {
        held,
        result,
        outcome,
        status,
        sent,
        failed_after,
    })
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

    /// The instance, ending a successful attempt now (a success that is
    /// retried: its response is dropped, which ends the attempt and may
    /// tell `state` that the breaker moved).
    pub(super) fn into_endpoint(self, state: &Arc<ServiceState>) -> Endpoint {
        match self.held {
            Held::Endpoint(endpoint) => endpoint,
            Held::Completion(completion) => {
                let endpoint = completion.endpoint().clone();
                drop(completion.with_state(Arc::clone(state)));
                endpoint
            }
        }
    }

    /// The result, and who holds the instance.
    pub(super) fn into_parts(self) -> (Result<R, BoxError>, Held) {
        (self.result, self.held)
    }
}

/// Outlier ejection after an attempt's result.
fn observe(config: &RequestConfig, state: &ServiceState, endpoint: &Endpoint, now: Instant) {
    if let Some(time) = config.outliers.observe(&state.snapshot(), endpoint, now) {
        let service = state.service_id();
        tracing::warn!(service, instance = %endpoint, ?time, "outlier ejected");
        if config.per_instance_metrics {
            metrics::counter!(crate::metrics::EJECTIONS, "service" => service.to_owned(), "instance" => endpoint.instance().id().to_owned())
                .increment(1);
        } else {
            metrics::counter!(crate::metrics::EJECTIONS, "service" => service.to_owned())
                .increment(1);
        }
        state.health().invalidate();
    }
}

/// Picks an endpoint not in `tried` if one is eligible, else any.
fn pick(
    state: &ServiceState,
    tried: &[Endpoint],
    hash_key: Option<u64>,
    now: Instant,
    headers: Option<&http::HeaderMap>,
) -> Option<Endpoint> {
    let picker = state.picker();
    let mut ctx = PickContext::at(now);
    if let Some(headers) = headers {
        ctx = ctx.with_headers(headers);
    }
    if let Some(key) = hash_key {
        ctx = ctx.with_hash_key(key);
    }
    if state.health().filter(picker.snapshot(), ctx.now()) {
        ctx = ctx.with_health_filter();
    }
    if !tried.is_empty() {
        if let Some(e) = picker.pick(&ctx.with_excluded(tried)) {
            return Some(e.clone());
        }
    }
    picker.pick(&ctx).cloned()
}

/// Sets the instance cookie naming `endpoint` (a retry replaces the
/// previous attempt's); an id that is not a cookie value adds none, and the
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
            id = ?instance.id(),
            cookie = name,
            "instance id is not a cookie value: no instance cookie added (warned once per service)"
        );
    }
}

/// Rewrites `req`'s URI to `endpoint`, keeping path and query.
fn rewrite<B>(req: &mut Request<B>, endpoint: &Endpoint) -> Result<(), http::uri::InvalidUriParts> {
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
