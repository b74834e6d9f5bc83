//! The request path: wait for the first list, pick, rewrite, send, and
//! retry onto the same or other instances as the [`RetryPolicy`] allows.
//!
//! [`RetryPolicy`]: crate::retry::RetryPolicy

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Request, Uri};
use tokio::time::Instant;
use tower::retry::budget::Budget as _;
use tower::{Service, ServiceExt};

use super::ServiceState;
use super::{ResponseStatus, Shared, classify_error};
use crate::error::{BoxError, Error};
use crate::instance::Endpoint;
use crate::retry::{Attempt, RetryNonIdempotent, RetryReason, TryCloneBody, parse_retry_after};
use crate::rule::PickContext;
use crate::stats::Outcome;

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

/// Picks an endpoint not in `tried` if one is eligible, else any.
fn pick(state: &ServiceState, tried: &[Endpoint], hash_key: Option<u64>) -> Option<Endpoint> {
    let picker = state.picker();
    let mut ctx = PickContext::new();
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

/// One request.
pub(super) async fn send<S, B>(
    shared: Arc<Shared>,
    state: Arc<ServiceState>,
    mut inner: S,
    req: Request<B>,
) -> Result<S::Response, Error>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Response: ResponseStatus,
    B: TryCloneBody,
{
    let service = state.service_id();
    if !state.wait_first_fetch().await {
        return Err(Error::DiscoveryTimeout {
            service: service.to_owned(),
            waited: state.first_fetch_wait(),
        });
    }
    let policy = &shared.retry;
    let started = Instant::now();
    let deadline = policy.get_deadline().and_then(|d| started.checked_add(d));
    let idempotent = policy.is_idempotent(req.method())
        || req.extensions().get::<RetryNonIdempotent>().is_some();
    let hash_key = shared
        .hash_key
        .as_ref()
        .and_then(|key| key.extract(req.uri(), req.headers()));
    if let Some(budget) = &shared.budget {
        budget.deposit();
    }

    let Some(mut endpoint) = pick(&state, &[], hash_key) else {
        metrics::counter!(crate::metrics::NO_INSTANCES, "service" => service.to_owned())
            .increment(1);
        return Err(match state.error_before_first_success() {
            Some(source) => Error::Discovery {
                service: service.to_owned(),
                source,
            },
            None => Error::NoInstances {
                service: service.to_owned(),
            },
        });
    };

    // Allocated only once an attempt fails.
    let mut tried: Vec<Endpoint> = Vec::new();
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut same_left = policy.get_max_same();
    let mut next_left = policy.get_max_next();
    let mut retries = 0u32;
    let mut req = Some(req);

    loop {
        let Some(mut request) = req.take() else {
            unreachable_request();
            return Err(Error::NoInstances {
                service: service.to_owned(),
            });
        };
        let may_retry = same_left > 0 || next_left > 0;
        let spare = if may_retry {
            try_clone_request(&request)
        } else {
            None
        };
        rewrite(&mut request, &endpoint).map_err(|e| Error::InvalidRequest {
            service: service.to_owned(),
            instance: endpoint.to_string(),
            reason: e.to_string(),
        })?;

        // One attempt, bounded by the per-try timeout and the deadline.
        let attempt_started = Instant::now();
        let bound = match (policy.get_per_try_timeout(), deadline) {
            (Some(t), Some(d)) => Some(t.min(d.saturating_duration_since(attempt_started))),
            (Some(t), None) => Some(t),
            (None, Some(d)) => Some(d.saturating_duration_since(attempt_started)),
            (None, None) => None,
        };
        let guard = endpoint.stats().start_at(attempt_started);
        let call = async {
            let ready = inner.ready().await.map_err(Into::into)?;
            ready.call(request).await.map_err(Into::into)
        };
        let result: Result<S::Response, BoxError> = match bound {
            Some(bound) => match tokio::time::timeout(bound, call).await {
                Ok(result) => result,
                Err(elapsed) => Err(Box::new(elapsed)),
            },
            None => call.await,
        };
        let status = result.as_ref().ok().and_then(ResponseStatus::status_code);
        let outcome = match &result {
            Ok(_) => shared.failure_statuses.classify_status(status),
            Err(e) => classify_error(e),
        };
        // One clock read ends the attempt for stats, metrics and ejection.
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(attempt_started);
        let transition = guard.finish_at(outcome, now);
        endpoint
            .metrics()
            .record(outcome, elapsed.as_secs_f64(), transition);
        if transition != crate::stats::BreakerTransition::None {
            state.health().invalidate();
        }
        if let Some(time) = shared.outliers.observe(&state.snapshot(), &endpoint, now) {
            tracing::warn!(service, instance = %endpoint, ?time, "outlier ejected");
            metrics::counter!(crate::metrics::EJECTIONS, "service" => service.to_owned(), "instance" => endpoint.instance().id().to_owned())
                .increment(1);
            state.health().invalidate();
        }

        // Retry?
        let reason = policy.retry_reason(outcome, status, idempotent);
        // A spare sharing a stream that this attempt started cannot be sent.
        let have_copy = spare.as_ref().is_some_and(|r| r.body().is_replayable());
        let decision = decide(
            &shared,
            reason,
            have_copy,
            same_left.saturating_add(next_left),
            retries,
            deadline,
            &result,
        );
        let wait = match decision {
            Decision::Retry(wait) => wait,
            Decision::Stop(why) => {
                if let (Some(reason), Some(why)) = (reason, why) {
                    tracing::debug!(service, reason = reason.label(), why, "not retrying");
                }
                return finish(service, &endpoint, result, attempts, outcome, elapsed);
            }
        };
        let reason = reason.map(RetryReason::label).unwrap_or("none");
        metrics::counter!(crate::metrics::RETRIES, "service" => service.to_owned(), "reason" => reason)
            .increment(1);
        if attempts.len() < MAX_LISTED_ATTEMPTS {
            attempts.push(Attempt {
                instance: endpoint.to_string(),
                outcome,
                elapsed,
            });
        }
        drop(result);
        if wait.is_zero() {
            // Let other tasks (and timeouts around this request) run even
            // when attempts fail at once with no backoff.
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(wait).await;
        }
        retries += 1;
        req = spare;
        if same_left > 0 {
            same_left -= 1;
        } else {
            next_left -= 1;
            same_left = policy.get_max_same();
            tried.push(endpoint.clone());
            match pick(&state, &tried, hash_key) {
                Some(next) => endpoint = next,
                None => {
                    // The list emptied meanwhile: keep the last endpoint.
                }
            }
        }
    }
}

#[cold]
fn unreachable_request() {
    tracing::error!("retry loop lost its request; this is a bug");
}

enum Decision {
    Retry(Duration),
    Stop(Option<&'static str>),
}

/// Whether to retry, and after how long.
fn decide<R: ResponseStatus>(
    shared: &Shared,
    reason: Option<RetryReason>,
    have_copy: bool,
    retries_left: u32,
    retries: u32,
    deadline: Option<Instant>,
    result: &Result<R, BoxError>,
) -> Decision {
    if reason.is_none() {
        return Decision::Stop(None);
    }
    if retries_left == 0 {
        return Decision::Stop(Some("no retries left"));
    }
    if !have_copy {
        return Decision::Stop(Some("body cannot be replayed"));
    }
    let mut wait = shared.retry.backoff_for(retries, &shared.rng);
    if let Ok(response) = result {
        if matches!(response.status_code(), Some(429 | 503)) {
            if let Some(after) = response
                .retry_after()
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
            {
                if after > shared.retry.get_max_retry_after() {
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
    if let Some(budget) = &shared.budget {
        if !budget.withdraw() {
            metrics::counter!(crate::metrics::RETRY_BUDGET_EXHAUSTED).increment(1);
            return Decision::Stop(Some("retry budget exhausted"));
        }
    }
    Decision::Retry(wait)
}

/// The result of the last attempt, as the caller sees it.
fn finish<T>(
    service: &str,
    endpoint: &Endpoint,
    result: Result<T, BoxError>,
    mut attempts: Vec<Attempt>,
    outcome: Outcome,
    elapsed: Duration,
) -> Result<T, Error> {
    match result {
        Ok(response) => Ok(response),
        Err(source) => {
            attempts.push(Attempt {
                instance: endpoint.to_string(),
                outcome,
                elapsed,
            });
            Err(Error::Inner {
                service: service.to_owned(),
                instance: endpoint.to_string(),
                source,
                attempts,
            })
        }
    }
}
