//! The inner service's future under the attempt's timers: the per-try
//! timeout cut to the request deadline, started at the send, or, for a
//! request body that reports its upload ([`Upload`]), at the upload's
//! end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tracing::instrument::Instrumented;

use crate::error::BoxError;
use crate::retry::Upload;

use super::try_timer::{Fired, TryTimer};

pin_project_lite::pin_project! {
    /// The inner service's future, under the per-try timeout cut to the
    /// deadline if there is one (expiry is [`Fired`], a read timeout), in
    /// the attempt's span.
    #[project = SendingProj]
    pub(super) enum Sending<F> {
        Bounded { #[pin] fut: Instrumented<F>, timer: TryTimer },
        Unbounded { #[pin] fut: Instrumented<F> },
        // A body still uploading: the timer fires at the per-try timeout
        // after the send, then after the upload's end (re-armed while it
        // lasts), and at the deadline. Boxed: only streams come here, and
        // every request's future carries the largest variant.
        Uploading {
            #[pin] fut: Instrumented<F>,
            watch: Box<Watch>,
        },
    }
}

/// An uploading attempt's timer and what it needs to re-arm.
pub(super) struct Watch {
    timer: TryTimer,
    upload: Upload,
    per_try: Duration,
    deadline: Option<Instant>,
    sent: Instant,
}

/// When an uploading attempt times out, seen at `now`: the per-try
/// timeout after the upload's end; while it lasts, after the body's last
/// frame (or the send): an upload that stalls is cut off as a socket
/// timeout cuts an idle connection; all cut to the deadline. `None`
/// without a bound (a per-try timeout too large to add, and no deadline).
fn next(
    upload: &Upload,
    per_try: Duration,
    deadline: Option<Instant>,
    sent: Instant,
) -> Option<Instant> {
    let from = match upload.ended_at() {
        Some(end) => end,
        None => upload.last_frame_at().map_or(sent, |f| f.max(sent)),
    };
    match (from.checked_add(per_try), deadline) {
        (Some(t), Some(d)) => Some(t.min(d)),
        (t, d) => t.or(d),
    }
}

impl<F: Future> Sending<F> {
    /// `fut` bounded at `until` (the per-try timeout after the send, cut to
    /// the deadline); with `upload` (the per-try timeout and a body's
    /// upload not yet ended), the per-try part moves to the upload's end.
    #[inline]
    pub(super) fn new(
        fut: Instrumented<F>,
        until: Option<Instant>,
        upload: Option<(Duration, Upload)>,
        deadline: Option<Instant>,
        sent: Instant,
    ) -> Self {
        match (until, upload) {
            (Some(at), Some((per_try, upload))) => Sending::Uploading {
                fut,
                watch: Box::new(Watch {
                    timer: TryTimer::new(at),
                    upload,
                    per_try,
                    deadline,
                    sent,
                }),
            },
            (Some(at), None) => Sending::Bounded {
                fut,
                timer: TryTimer::new(at),
            },
            (None, _) => Sending::Unbounded { fut },
        }
    }
}

impl<F, T, E> Future for Sending<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            // The inner future first, as tokio's `Timeout` does: one that
            // answers at once arms no timer.
            SendingProj::Bounded { fut, timer } => match fut.poll(cx) {
                Poll::Ready(result) => Poll::Ready(result.map_err(Into::into)),
                Poll::Pending => timer
                    .poll_fired(cx)
                    .map(|()| Err(Box::new(Fired) as BoxError)),
            },
            SendingProj::Unbounded { fut } => fut.poll(cx).map_err(Into::into),
            SendingProj::Uploading { fut, watch } => {
                if let Poll::Ready(result) = fut.poll(cx) {
                    return Poll::Ready(result.map_err(Into::into));
                }
                loop {
                    if watch.timer.poll_fired(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let now = Instant::now();
                    match next(&watch.upload, watch.per_try, watch.deadline, watch.sent) {
                        // The upload goes on, or ended less than the
                        // per-try timeout ago: wait on.
                        Some(at) if at > now => watch.timer.rearm(at),
                        Some(_) => return Poll::Ready(Err(Box::new(Fired))),
                        None => return Poll::Pending,
                    }
                }
            }
        }
    }
}
