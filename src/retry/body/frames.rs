//! [`ReplayBody`] as a body: its frames, with the upload's end marked
//! and what an attempt read kept for a retry that never reached a server.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::{Inner, LengthCheck, ReplayBody, Stream};
use crate::error::BoxError;

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // `ReplayBody` is `Unpin`: the stream is pinned in its own box.
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Buffered(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Streaming {
                slot,
                taken,
                upload,
                record,
                length,
            } => {
                if taken.is_none() {
                    let stream = slot.lock().ok().and_then(|mut s| s.stream.take());
                    match stream {
                        Some(stream) => *taken = Some(stream),
                        None => {
                            return Poll::Ready(Some(Err(
                                "streaming body was already sent by another attempt".into(),
                            )));
                        }
                    }
                }
                let polled = match taken {
                    Some(Stream {
                        head: head @ Some(_),
                        ..
                    }) => Poll::Ready(head.take().map(|b| Ok(Frame::data(b)))),
                    Some(Stream { body, .. }) => body.as_mut().poll_frame(cx).map_err(Into::into),
                    None => Poll::Ready(None),
                };
                // A length the request declared: a frame passing it, or an
                // end short of it, is the body's error (`length.rs`).
                let polled = match (polled, length.as_mut()) {
                    (Poll::Ready(Some(Ok(frame))), Some(check)) => Poll::Ready(Some(
                        check.frame(&frame).map(|()| frame).map_err(Into::into),
                    )),
                    (Poll::Ready(None), Some(check)) => check
                        .end()
                        .map_or_else(|e| Poll::Ready(Some(Err(e.into()))), |()| Poll::Ready(None)),
                    (polled, _) => polled,
                };
                let complete = length.as_ref().is_none_or(LengthCheck::is_complete);
                // The upload is over at the last frame, an error or the end.
                let ended = match &polled {
                    Poll::Ready(Some(Ok(_))) => {
                        complete
                            && taken
                                .as_ref()
                                .is_some_and(|s| s.head.is_none() && s.body.is_end_stream())
                    }
                    Poll::Ready(_) => true,
                    Poll::Pending => false,
                };
                if matches!(polled, Poll::Ready(Some(Ok(_)))) {
                    upload.frame();
                }
                if ended {
                    upload.end();
                }
                // Kept for a retry after an attempt that never reached a
                // server (the whole body, once it ends).
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        record.push(frame);
                        if ended {
                            record.publish(slot);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => record.close(),
                    Poll::Ready(None) => record.publish(slot),
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Buffered(bytes) => bytes.is_none(),
            Inner::Streaming {
                taken: Some(s),
                upload,
                length,
                ..
            } => {
                // Not before a declared length is reached: polled again,
                // the body fails there (`length.rs`).
                let ended = s.head.is_none()
                    && s.body.is_end_stream()
                    && length.as_ref().is_none_or(LengthCheck::is_complete);
                if ended {
                    upload.end();
                }
                ended
            }
            Inner::Streaming { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Buffered(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Buffered(None) => SizeHint::with_exact(0),
            Inner::Streaming { taken: Some(s), .. } => {
                let rest = s.body.size_hint();
                let head = s.head.as_ref().map_or(0, |h| h.len() as u64);
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(head));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(head));
                }
                hint
            }
            Inner::Streaming { .. } => SizeHint::default(),
        }
    }
}
