//! Attempts that end with the response body, as tower's `PeakEwma` tracks
//! completion through the body: a streaming response keeps its instance's
//! in-flight count up until the body ends, fails or is dropped, and a
//! successful attempt's latency runs from the send to that moment.
//!
//! A response ends at its body's end of stream or its trailers frame; a
//! hyper or reqwest body's own framing says whether it ended with the
//! headers (an HTTP/2 204 may still carry DATA), any other body's headers
//! say so (a 204, a 304, `Content-Length: 0`). The count follows the
//! response only: a request body still uploading after the response ended
//! (a server answering before it read the whole upload) no longer counts,
//! as in tower's `PeakEwma` and `CompleteOnResponse`.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::ResponseStatus;
use super::ServiceState;
use crate::instance::Endpoint;
use crate::stats::{BreakerTransition, Detached, Outcome};

/// One attempt counted in flight on its instance until it is finished.
/// Dropped unfinished (the caller dropped the request), it leaves the
/// in-flight count and frees a half-open probe, and records nothing else.
///
/// It owns the attempt's instance (moved in from the pick, not cloned) and
/// the attempt detached from a stats guard, so a request costs no
/// reference-count traffic here beyond the instance's.
pub(super) struct InFlight {
    endpoint: Endpoint,
    attempt: Option<Detached>,
    sent: Instant,
    /// Whether the result is in the stats already (a failure is recorded
    /// at once, and stays in flight while its response body streams).
    recorded: bool,
    /// Whether the metrics carry an `instance` label (for a cancellation).
    per_instance: bool,
}

impl InFlight {
    /// Counts an attempt on `endpoint` in flight from `now`.
    pub(super) fn start(endpoint: Endpoint, now: Instant, per_instance: bool) -> Self {
        let attempt = endpoint.stats_handle().start_detached(now);
        Self {
            endpoint,
            attempt: Some(attempt),
            sent: now,
            recorded: false,
            per_instance,
        }
    }

    /// The instance.
    pub(super) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// When the attempt was sent.
    pub(super) fn sent(&self) -> Instant {
        self.sent
    }

    /// Whether the attempt took its instance's half-open probe.
    pub(super) fn is_probe(&self) -> bool {
        self.attempt.as_ref().is_some_and(Detached::is_probe)
    }

    /// The response's headers arrived: the circuit breaker is reset and the
    /// probe freed now, not when the body ends (see
    /// `EndpointStats::record_response_detached`). Returns what it did to
    /// the breaker (counted in the metrics).
    pub(super) fn response_arrived(&mut self, per_instance: bool) -> BreakerTransition {
        let Some(attempt) = self.attempt.as_mut().filter(|_| !self.recorded) else {
            return BreakerTransition::None;
        };
        let transition = self
            .endpoint
            .stats_handle()
            .record_response_detached(attempt);
        if transition != BreakerTransition::None {
            self.endpoint.metrics(per_instance).transition(transition);
        }
        transition
    }

    /// Records the attempt's result, `outcome` at `now`, in the instance's
    /// stats and metrics (once; later calls do nothing) and frees its
    /// half-open probe, keeping it in flight until it is dropped: a failed
    /// response handed to the caller is load until its body ends, as a
    /// successful one is. Returns what it did to the circuit breaker.
    #[inline]
    pub(super) fn record(
        &mut self,
        outcome: Outcome,
        now: Instant,
        per_instance: bool,
    ) -> BreakerTransition {
        let Some(attempt) = self.attempt.as_mut().filter(|_| !self.recorded) else {
            return BreakerTransition::None;
        };
        self.recorded = true;
        let elapsed = now.saturating_duration_since(attempt.started());
        let transition = self
            .endpoint
            .stats_handle()
            .record_detached(attempt, outcome, now, elapsed);
        self.endpoint
            .metrics(per_instance)
            .record(outcome, elapsed.as_secs_f64(), transition);
        transition
    }

    /// Ends the attempt at `now`: records `outcome` unless a result is
    /// recorded already, and leaves the in-flight count.
    pub(super) fn finish(
        &mut self,
        outcome: Outcome,
        now: Instant,
        per_instance: bool,
    ) -> BreakerTransition {
        let transition = self.record(outcome, now, per_instance);
        if let Some(attempt) = self.attempt.take() {
            self.endpoint.stats_handle().cancel_detached(attempt);
        }
        transition
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(attempt) = self.attempt.take() else {
            return;
        };
        let stats = self.endpoint.stats_handle();
        if self.recorded {
            stats.cancel_detached(attempt);
        } else {
            // Dropped before its result: the wait so far is a lower bound
            // of the instance's latency, and the attempt counts as
            // `cancelled` in `ribbon_requests_total` (before, attempts the
            // caller's own timeout cut showed in no metric; helper 188).
            stats.cancel_unanswered(attempt, Instant::now());
            self.endpoint.metrics(self.per_instance).cancelled();
        }
    }
}

/// The end of one successful attempt, still to be recorded: dropping it
/// ends the attempt in the instance's stats and metrics.
pub struct Completion {
    in_flight: InFlight,
    /// The service, told when the attempt moves the circuit breaker.
    /// Attached when the request's future hands over its own reference
    /// (no count taken per request).
    state: Option<Arc<ServiceState>>,
    outcome: Outcome,
    per_instance: bool,
    /// The deadline the call told its server (`grpc-timeout`): a
    /// DEADLINE_EXCEEDED in its trailers about when it ends is that
    /// deadline running out, not the instance's failure (see
    /// `grpc::GrpcStatus`).
    pub(super) callers_deadline: Option<Instant>,
    /// The connection the response came on
    /// ([`ResponseStatus::connection_id`]), if known: its end, read in the
    /// body, counts once however late it is read.
    pub(super) connection: Option<std::num::NonZeroU64>,
}

impl Completion {
    pub(super) fn new(in_flight: InFlight, outcome: Outcome, per_instance: bool) -> Self {
        Self {
            callers_deadline: None,
            connection: None,
            in_flight,
            state: None,
            outcome,
            per_instance,
        }
    }

    /// The completion of a failed attempt whose response goes to the
    /// caller: its result is in the stats already (recorded when the
    /// attempt ended), and it leaves the in-flight count with the body.
    pub(super) fn of_recorded(in_flight: InFlight) -> Self {
        debug_assert!(in_flight.recorded);
        Self::new(in_flight, Outcome::OtherError, false)
    }

    /// The response body failed: the attempt ends as
    /// [`Outcome::OtherError`] (a failure for the success rate and
    /// outlier ejection, not a connection failure for the breaker) unless
    /// its result was recorded already.
    pub(super) fn body_failed(&mut self) {
        if self.outcome.is_success() {
            self.outcome = Outcome::OtherError;
        }
    }

    /// The caller's request stream failed while the response was read:
    /// the attempt ends as the caller's error (counted in no stats),
    /// unless a failure is recorded already.
    pub(super) fn request_failed(&mut self) {
        if self.outcome.is_success() {
            self.outcome = Outcome::RequestError;
        }
    }

    /// Attaches the service's state.
    pub(super) fn with_state(mut self, state: Arc<ServiceState>) -> Self {
        self.state = Some(state);
        self
    }

    /// The instance the attempt went to.
    pub(super) fn endpoint(&self) -> &Endpoint {
        self.in_flight.endpoint()
    }
}

impl Completion {
    /// Records the attempt's result now, keeping it in flight until the
    /// completion is dropped: an upgraded connection's result is its
    /// response head (the 101, the 2xx to a `CONNECT`), while its load
    /// lasts as long as the connection (see [`super::upgrade`]).
    #[cfg(any(feature = "hyper-util", feature = "reqwest"))]
    pub(super) fn record_now(&mut self) {
        let now = Instant::now();
        let records_now = !self.in_flight.recorded;
        let transition = self.in_flight.record(self.outcome, now, self.per_instance);
        self.recorded(records_now, transition, now);
    }

    /// After a result was recorded at `now` (`records_now`: by this call,
    /// not when the attempt ended): outlier ejection for a failure, and
    /// the service told when the breaker moved.
    fn recorded(&self, records_now: bool, transition: BreakerTransition, now: Instant) {
        let Some(state) = &self.state else { return };
        // A body that failed counts toward outlier ejection as an error
        // before the headers does: an instance whose every body breaks
        // was never ejected, since no attempt of it failed before then.
        // Not the caller's own (a bidirectional stream whose upload broke
        // after the headers): an instance the cap holds at its trigger was
        // ejected by it (helper 207), as `attempt::end` already guards.
        if records_now && !self.outcome.is_success() && self.outcome.counts_against_instance() {
            let config = state.request_config();
            observe(config, state, self.in_flight.endpoint(), now);
        }
        if transition != BreakerTransition::None {
            state.health().invalidate();
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let now = Instant::now();
        // A failure recorded when its attempt ended was checked for
        // ejection then; only one recorded here is checked.
        let records_now = !self.in_flight.recorded;
        let transition = self.in_flight.finish(self.outcome, now, self.per_instance);
        self.recorded(records_now, transition, now);
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("instance", &self.endpoint().to_string())
            .finish_non_exhaustive()
    }
}

/// A response the balancer can follow to its end. Implemented for
/// `http::Response<B>` (the body is wrapped in a [`TrackedBody`]; an
/// upgrade response, one with hyper's `OnUpgrade` in its extensions, gets
/// its attempt in its extensions instead, for `service::upgrade::on` to
/// carry over to the upgraded connection).
pub trait TrackCompletion: ResponseStatus + Sized {
    /// The response handed to the caller.
    type Tracked;

    /// Hands `done` to the response, to be dropped when the response ends.
    fn track(self, done: Option<Completion>) -> Self::Tracked;
}

impl<B: 'static> TrackCompletion for http::Response<B> {
    type Tracked = http::Response<TrackedBody<B>>;

    fn track(self, done: Option<Completion>) -> Self::Tracked {
        // An upgrade's load is its connection's, not its (empty) body's.
        #[cfg(any(feature = "hyper-util", feature = "reqwest"))]
        let (response, done) = hold_upgrade(self, done);
        #[cfg(not(any(feature = "hyper-util", feature = "reqwest")))]
        let response = self;
        // A response without content, or whose body has ended already, has
        // ended with its headers: its attempt ends now, not when the caller
        // drops the response (a held 204 kept its instance busy and its
        // latency running). A body that knows its framing says which; any
        // other is read by its headers.
        let mut response = response;
        let framing = content::ended_with_headers(&mut response);
        let mut done = done;
        // A stream already failed (an error read ahead): a failed attempt,
        // recorded now (the caller still gets the error at its first read).
        if let (Some(error), Some(done)) = (framing.failed, done.as_mut()) {
            done.body_error(error);
        }
        let done = done.filter(|_| !framing.ended);
        response.map(|inner| TrackedBody {
            inner,
            done,
            peeked: framing.peeked,
            trailers_end: framing.known,
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its attempt (in-flight count, latency,
    /// breaker) when it yields its last frame, fails, or is dropped. A
    /// body that fails ends a successful attempt as a failure
    /// ([`Outcome::OtherError`](crate::stats::Outcome::OtherError); cut
    /// by its HTTP/2 connection's end, counted once per end, as
    /// [`Outcome::ConnectionLost`](crate::stats::Outcome::ConnectionLost)
    /// says; the caller's own request stream failing, not at all), and
    /// so do trailers whose `grpc-status` maps to a failure status
    /// ([`Outcome::FailureStatus`](crate::stats::Outcome::FailureStatus)
    /// of [`http_status_for`](crate::grpc::http_status_for) the code), and
    /// a body that panics while it is polled.
    ///
    /// The attempt ends only through this body: one leaked
    /// ([`std::mem::forget`], a reference cycle) keeps its instance's
    /// in-flight count up for good, so least-loaded rules avoid the
    /// instance, as with tower's `PeakEwma` and `PendingRequests`. Drop
    /// bodies you do not read.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        done: Option<Completion>,
        // A frame read ahead to tell whether the response had ended (see
        // `content::ended_with_headers`), handed out first.
        peeked: Option<content::Peeked>,
        // Whether a trailers frame ends the body (its framing is known).
        trailers_end: bool,
    }
}

impl<B> TrackedBody<B> {
    /// The body, ending the attempt now. A frame read ahead of the caller
    /// (only a 204, 304 or `Content-Length: 0` response that still streams
    /// over HTTP/2 has one) is dropped: [`into_parts`](Self::into_parts)
    /// keeps it.
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// The body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> TrackedBody<B>
where
    B::Data: 'static,
    B::Error: 'static,
{
    /// The frame read ahead of the caller, if any (to be read first), and
    /// the body, ending the attempt now. (The frame's type is the one
    /// `Body::poll_frame` yields.)
    #[allow(clippy::type_complexity)]
    pub fn into_parts(self) -> (Option<Result<Frame<B::Data>, B::Error>>, B) {
        (content::take::<B>(self.peeked), self.inner)
    }
}

impl<B: Body> Body for TrackedBody<B>
where
    B::Data: 'static,
    B::Error: 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = match content::take::<B>(this.peeked.take()) {
            Some(frame) => Poll::Ready(Some(frame)),
            None => {
                // A body that panics while polled fails its attempt as a
                // body error does (its stats recorded a success before,
                // helper 188); a panic of the caller's own code while it
                // holds the body is no fault of the instance.
                let guard = ends::PanicFails(this.done);
                let polled = this.inner.as_mut().poll_frame(cx);
                std::mem::forget(guard);
                polled
            }
        };
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Err(e))) => {
                // A body cut off (a reset, a truncated message) is a failed
                // attempt, whatever its headers said; unless the caller's
                // own request stream failed, or the connection's end cut
                // it (counted once per end): see `Completion::body_error`.
                if let Some(done) = this.done.as_mut() {
                    done.body_error(super::classify::classify_body_error(e));
                }
                true
            }
            Poll::Ready(Some(Ok(frame))) => {
                // Trailers are an HTTP message's last frame: an HTTP/1
                // chunked body read to its trailers says it has ended only
                // at the next poll, which a caller stopping there (as
                // tonic's `Streaming` does) never makes, so its instance
                // stayed loaded while the body was held (helper 135). A
                // body of unknown framing ends at its own end of stream.
                let trailers = frame.trailers_ref();
                if let (Some(trailers), Some(done)) = (trailers, this.done.as_mut()) {
                    done.trailers(trailers);
                }
                (trailers.is_some() && *this.trailers_end) || this.inner.is_end_stream()
            }
            Poll::Pending => false,
        };
        if ended {
            this.done.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.peeked.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        content::size_with::<B>(self.inner.size_hint(), self.peeked.as_ref())
    }
}

impl<B: fmt::Debug> fmt::Debug for TrackedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Outlier ejection after an attempt's result (also after a response
/// body that failed, see [`Completion`]).
pub(super) fn observe(
    config: &super::RequestConfig,
    state: &ServiceState,
    endpoint: &Endpoint,
    now: Instant,
) {
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

mod content;
#[cfg(test)]
mod content_tests;
mod ends;
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
mod upgrade_hold;
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
pub(super) use upgrade_hold::UpgradeHold;
#[cfg(any(feature = "hyper-util", feature = "reqwest"))]
use upgrade_hold::hold_upgrade;
