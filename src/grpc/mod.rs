//! gRPC through tonic: balance tonic calls over any
//! [`InstanceSource`](crate::discovery::InstanceSource), classify gRPC
//! statuses for stats, ejection and retry, and retry only the calls you
//! mark as safe.
//!
//! A tonic client takes any `tower::Service<http::Request<tonic::body::Body>>`
//! as its transport. [`balance`] builds that service from a
//! [`Builder`](crate::Builder) and an HTTP/2 client:
//!
//! ```text
//!  tonic client (origin http://my-grpc-service)
//!   └ GrpcRetry        marks opted-in methods retryable, buffers their body
//!      └ LoadBalancer  picks an instance per call, rewrites the URI, retries
//!         └ GrpcStatus maps a trailers-only grpc-status to an HTTP status
//!            └ client  h2c (h2c_client) or h2 over TLS (tls::HttpsClient)
//! ```
//!
//! - **Per call, not per connection**: every call picks an instance, even
//!   though each instance is reached over one multiplexed HTTP/2
//!   connection.
//! - **Status classification**: a gRPC server answers failures as HTTP 200
//!   with `grpc-status` in the headers ("trailers-only"). [`GrpcStatus`]
//!   rewrites such a response's HTTP status to the one Envoy's
//!   `Grpc::Utility::grpcToHttpStatus` gives ([`http_status_for`]:
//!   UNAVAILABLE → 503, RESOURCE_EXHAUSTED → 429, DEADLINE_EXCEEDED → 504,
//!   INTERNAL/UNKNOWN/DATA_LOSS → 500, UNIMPLEMENTED → 501, client errors
//!   → 4xx), so the balancer's [`FailureStatuses`]
//!   (stats, breaker), outlier detection (5xx) and retryable statuses (502,
//!   503, 504) see them. The `grpc-status` and `grpc-message` headers stay,
//!   and tonic reads them before the HTTP status, so the caller still gets
//!   the server's own `Status`. As tonic reads a `grpc-status` in the
//!   headers of a 200 whatever its content type, so does [`GrpcStatus`];
//!   a 200 with neither a gRPC content type nor a `grpc-status` (an HTTP
//!   server, not a gRPC one, at the instance's address) fails the call and
//!   counts as gRPC's UNKNOWN (a 500), as gRPC's HTTP-to-gRPC status
//!   mapping reads it. A status sent in trailers after response
//!   messages (a stream that fails midway) arrives while the attempt is
//!   still in flight (it ends with the response body), and classifies it
//!   the same way for stats, the breaker and outlier ejection (as Envoy
//!   reads it for outlier detection); the call is not retried, since its
//!   messages reached the caller.
//! - **Retries**: gRPC calls are POSTs, so the balancer treats them as not
//!   idempotent: only a connect failure (the call never left, or its
//!   stream was refused unprocessed) is retried.
//!   [`GrpcRetryLayer::method`] / [`GrpcRetryLayer::service`] opt methods
//!   in: their request body is buffered (bounded by
//!   [`max_buffer`](GrpcRetryLayer::max_buffer)) and marked
//!   [`RetryNonIdempotent`](crate::retry::RetryNonIdempotent), so UNAVAILABLE, a reset connection or a
//!   timeout is retried on another instance as the
//!   [`RetryPolicy`](crate::retry::RetryPolicy) allows. A body past
//!   `max_buffer` is sent once, unbuffered, as a call not opted in (as
//!   gRPC's and Envoy's retry buffers do): opting in never fails a call.
//!   A server's pushback (`grpc-retry-pushback-ms`, gRFC A6) is the wait
//!   before the retry, bounded by
//!   [`max_retry_after`](crate::retry::RetryPolicy::max_retry_after); a
//!   negative or unparsable one means no retry.
//! - **Deadlines**: a call's `grpc-timeout` (`tonic::Request::set_timeout`)
//!   bounds the whole call under [`GrpcRetry`], every retry included
//!   (gRFC A6), as tonic's `Channel` bounds its one attempt: past it the
//!   call ends with DEADLINE_EXCEEDED, and each attempt's `grpc-timeout`
//!   tells its server the time left. A retry that would not be sent
//!   before the deadline (a backoff or pushback past it) is not made: the
//!   caller gets the last answer at once. A server's DEADLINE_EXCEEDED,
//!   trailers-only or in trailers after messages, about when the deadline
//!   its call sent runs out (in the last fifth of the time the attempt was
//!   given, or its last 100 ms, at most its last half) is the caller's
//!   deadline running out
//!   there, as its running out at the client is: not the instance's
//!   failure and not retried (trailers-only, its HTTP status becomes 408,
//!   whatever `FailureStatuses` says of 504). Well before the deadline, or
//!   without one sent, it is the server's own 504.
//!
//! Feature `grpc` adds the tonic transport ([`balance`], [`h2c_client`],
//! [`GrpcRetryLayer`]); the classification ([`classify`],
//! [`effective_status`], [`GrpcStatus`]) depends only on `http` and is
//! always available.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::service::FailureStatuses;
use crate::stats::Outcome;

mod deadline;
pub(crate) use deadline::{CallDeadline, deadline_reached};
#[cfg(feature = "grpc")]
mod reset;
#[cfg(feature = "grpc")]
mod transport;

#[cfg(feature = "grpc")]
pub use transport::{
    GrpcBalancer, GrpcBody, GrpcRetry, GrpcRetryLayer, H2cClient, balance, h2c_client,
    h2c_client_with,
};

use crate::service::grpc_status::NotGrpcAnswer;
#[cfg(test)]
use crate::service::grpc_status::classified_status;
pub use crate::service::grpc_status::{effective_status, grpc_status, http_status_for, is_grpc};

/// The [`Outcome`] of a gRPC response for stats and the breaker: a
/// trailers-only failure counts as
/// [`Outcome::FailureStatus`] of its [`http_status_for`] code when
/// `statuses` counts that code (by default UNAVAILABLE, RESOURCE_EXHAUSTED,
/// DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, DATA_LOSS and UNIMPLEMENTED); OK,
/// client errors (INVALID_ARGUMENT, NOT_FOUND, ...) and responses whose
/// status comes later in trailers are [`Outcome::Success`] here (the
/// balancer classifies such a status when the trailers arrive).
pub fn classify<B>(response: &Response<B>, statuses: &FailureStatuses) -> Outcome {
    statuses.classify_status(Some(effective_status(
        response.status(),
        response.headers(),
    )))
}

/// gRPC's DEADLINE_EXCEEDED.
const DEADLINE_EXCEEDED: i32 = 4;

/// The gRPC status code of a trailers-only response whose HTTP status
/// [`GrpcStatus`] rewrote (a response extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrailersOnlyStatus(pub i32);

/// Wraps the balancer's inner client: rewrites a trailers-only gRPC
/// failure's HTTP status 200 to [`http_status_for`] its code (a
/// `grpc-status` in a 200's headers, whatever the content type, as tonic
/// reads it), so the balancer classifies it, and records the code as a
/// [`TrailersOnlyStatus`] extension; a 200 with neither a gRPC content
/// type nor a `grpc-status` is classified as UNKNOWN (500) and passed
/// unchanged to the caller. Other responses pass unchanged.
/// Under [`GrpcRetry`] (feature `grpc`), it also sets each attempt's
/// `grpc-timeout` to the time its call has left.
#[derive(Debug, Clone)]
pub struct GrpcStatus<S> {
    inner: S,
}

impl<S> GrpcStatus<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Makes [`GrpcStatus`] services.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcStatusLayer;

impl<S> Layer<S> for GrpcStatusLayer {
    type Service = GrpcStatus<S>;

    fn layer(&self, inner: S) -> GrpcStatus<S> {
        GrpcStatus::new(inner)
    }
}

/// The response to a gRPC call, as the balancer should classify it: a
/// 200 carrying `grpc-status` in its headers is a trailers-only response
/// whatever its content type (tonic reads the status from the headers
/// first, so it is what the caller is told): its HTTP status becomes the
/// code's; a 200 with neither a gRPC content type nor a `grpc-status` is
/// marked [`NotGrpcAnswer`]. Before, both counted as successes whatever
/// the caller got, and an instance answering so was never ejected.
///
/// A DEADLINE_EXCEEDED answering, about when it ends, a call that told
/// its server a deadline (`grpc-timeout` under [`GrpcRetry`];
/// `deadline_reached`: in the last fifth of the time the attempt was
/// given, or its last 100 ms, at most its last half) is the caller's
/// deadline running out, at the server (or at a call the server passed
/// the deadline on to), not the
/// instance's failure: it becomes 408, which no default failure status
/// or retryable status counts, as the balancer counts the caller's
/// deadline running out at the client. Before, it counted as a 504:
/// every instance of a service whose downstream was slow was ejected,
/// and each such call was retried with a few milliseconds left (helper
/// 190). One answered well before the deadline is the server's own
/// failure (504).
fn rewrite_status<B>(mut response: Response<B>, deadline_reached: bool) -> Response<B> {
    if response.status() != StatusCode::OK {
        return response;
    }
    match grpc_status(response.headers()) {
        Some(DEADLINE_EXCEEDED) if deadline_reached => {
            *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
            (response.extensions_mut()).insert(TrailersOnlyStatus(DEADLINE_EXCEEDED));
        }
        Some(code) => {
            if let Ok(status) = StatusCode::from_u16(http_status_for(code)) {
                if status != StatusCode::OK {
                    *response.status_mut() = status;
                    response.extensions_mut().insert(TrailersOnlyStatus(code));
                }
            }
        }
        None if !is_grpc(response.headers()) => {
            response.extensions_mut().insert(NotGrpcAnswer);
        }
        None => {}
    }
    response
}

impl<S, B, R> Service<Request<B>> for GrpcStatus<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Each attempt tells the server the time its call has left.
        deadline::send_time_left(&mut req);
        let deadline = req.extensions().get::<CallDeadline>().map(|d| d.0);
        let sent = tokio::time::Instant::now();
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            let reached =
                deadline.is_some_and(|at| deadline_reached(sent, at, tokio::time::Instant::now()));
            Ok(rewrite_status(response, reached))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn headers(grpc: Option<&str>, content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_str(content_type).unwrap_or_else(|_| unreachable!()),
        );
        if let Some(code) = grpc {
            h.insert(
                "grpc-status",
                http::HeaderValue::from_str(code).unwrap_or_else(|_| unreachable!()),
            );
        }
        h
    }

    #[test]
    fn effective_statuses() {
        let ok = StatusCode::OK;
        assert_eq!(
            effective_status(ok, &headers(Some("14"), "application/grpc")),
            503
        );
        assert_eq!(
            effective_status(ok, &headers(Some("8"), "application/grpc+proto")),
            429
        );
        assert_eq!(
            effective_status(ok, &headers(Some("4"), "application/grpc")),
            504
        );
        assert_eq!(
            effective_status(ok, &headers(Some("13"), "application/grpc")),
            500
        );
        assert_eq!(
            effective_status(ok, &headers(Some("0"), "application/grpc")),
            200
        );
        assert_eq!(
            effective_status(ok, &headers(Some("5"), "application/grpc")),
            404
        );
        assert_eq!(
            effective_status(ok, &headers(Some("99"), "application/grpc")),
            500
        );
        // Garbage is UNKNOWN, as tonic tells the caller.
        assert_eq!(
            effective_status(ok, &headers(Some("x"), "application/grpc")),
            500
        );
        // Not gRPC, no status, or already an HTTP failure.
        assert_eq!(
            effective_status(ok, &headers(Some("14"), "text/plain")),
            200
        );
        assert_eq!(
            effective_status(ok, &headers(None, "application/grpc")),
            200
        );
        let bad = StatusCode::BAD_GATEWAY;
        assert_eq!(
            effective_status(bad, &headers(Some("0"), "application/grpc")),
            502
        );
    }

    #[test]
    fn outcomes() {
        let d = FailureStatuses::default();
        let response = |code: &str| {
            let mut r = Response::new(());
            *r.headers_mut() = headers(Some(code), "application/grpc");
            r
        };
        assert_eq!(classify(&response("14"), &d), Outcome::FailureStatus(503));
        assert_eq!(classify(&response("8"), &d), Outcome::FailureStatus(429));
        assert_eq!(classify(&response("4"), &d), Outcome::FailureStatus(504));
        assert_eq!(classify(&response("13"), &d), Outcome::FailureStatus(500));
        assert_eq!(classify(&response("2"), &d), Outcome::FailureStatus(500));
        assert_eq!(classify(&response("0"), &d), Outcome::Success);
        assert_eq!(classify(&response("3"), &d), Outcome::Success);
        assert_eq!(classify(&response("5"), &d), Outcome::Success);
        let only = FailureStatuses::only([503]);
        assert_eq!(
            classify(&response("14"), &only),
            Outcome::FailureStatus(503)
        );
        assert_eq!(classify(&response("13"), &only), Outcome::Success);
    }

    #[test]
    fn rewrite_keeps_grpc_headers() {
        let mut r = Response::new(());
        *r.headers_mut() = headers(Some("14"), "application/grpc");
        let r = rewrite_status(r, false);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(grpc_status(r.headers()), Some(14));
        assert_eq!(r.extensions().get(), Some(&TrailersOnlyStatus(14)));
        let mut ok = Response::new(());
        *ok.headers_mut() = headers(None, "application/grpc");
        let ok = rewrite_status(ok, false);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.extensions().get::<TrailersOnlyStatus>(), None);
        assert_eq!(classified_status(&ok), 200);
        // tonic reads a grpc-status in the headers whatever the content type.
        let mut plain = Response::new(());
        *plain.headers_mut() = headers(Some("14"), "text/plain");
        let plain = rewrite_status(plain, false);
        assert_eq!(plain.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(classified_status(&plain), 503);
        // Neither a gRPC content type nor a status: UNKNOWN, status kept.
        let mut html = Response::new(());
        *html.headers_mut() = headers(None, "text/html");
        let html = rewrite_status(html, false);
        assert_eq!(html.status(), StatusCode::OK);
        assert_eq!(classified_status(&html), 500);
        assert_eq!(
            classified_status(&rewrite_status(Response::new(()), false)),
            500
        );
    }

    /// DEADLINE_EXCEEDED answering a call that sent `grpc-timeout` is the
    /// caller's deadline (408: neither a failure nor retried by default);
    /// without one, the server's own failure (504).
    #[test]
    fn a_deadline_exceeded_is_the_callers_when_the_call_sent_a_deadline() {
        let answer = || {
            let mut r = Response::new(());
            *r.headers_mut() = headers(Some("4"), "application/grpc");
            r
        };
        let callers = rewrite_status(answer(), true);
        assert_eq!(callers.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(callers.extensions().get(), Some(&TrailersOnlyStatus(4)));
        let d = FailureStatuses::default();
        assert_eq!(classify(&callers, &d), Outcome::Success);
        let servers = rewrite_status(answer(), false);
        assert_eq!(servers.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(classify(&servers, &d), Outcome::FailureStatus(504));
        // Other codes are the server's whether or not a deadline was sent.
        let mut r = Response::new(());
        *r.headers_mut() = headers(Some("14"), "application/grpc");
        assert_eq!(
            rewrite_status(r, true).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
