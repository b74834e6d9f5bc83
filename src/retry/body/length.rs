//! A streamed body checked against its request's `Content-Length` as it
//! is sent: the length is unknown until the stream ends, so the balancer
//! cannot refuse a contradicting request before the send as it does a
//! body in memory (`service::framing`). Sent as it is, a stream short of
//! its declared length made an HTTP/1 server wait for the rest and an
//! HTTP/2 server reset the stream (`PROTOCOL_ERROR`, RFC 9113 section
//! 8.1.1), and a longer one was cut at the length by hyper's HTTP/1
//! client (the server read a truncated body as whole) or reset by the
//! HTTP/2 server: failures of a healthy instance, or a corrupted upload.
//! Failing the body instead makes the client fail the request as the
//! caller's (`Outcome::RequestError`), counted against no instance.

use bytes::Bytes;
use http_body::Frame;

/// The declared length and what was sent of it.
#[derive(Clone, Copy, Debug)]
pub(super) struct LengthCheck {
    declared: u64,
    sent: u64,
}

impl LengthCheck {
    pub(super) fn new(declared: u64) -> Self {
        Self { declared, sent: 0 }
    }

    /// The same check for a copy that has sent nothing.
    pub(super) fn restart(&self) -> Self {
        Self::new(self.declared)
    }

    /// Counts `frame`'s data; the error when it passes the declared
    /// length (the frame is not sent).
    pub(super) fn frame(&mut self, frame: &Frame<Bytes>) -> Result<(), LengthMismatch> {
        let len = frame.data_ref().map_or(0, |d| d.len() as u64);
        let sent = self.sent.saturating_add(len);
        if sent > self.declared {
            return Err(LengthMismatch {
                declared: self.declared,
                sent,
                ended: false,
            });
        }
        self.sent = sent;
        Ok(())
    }

    /// Whether the stream may end here.
    pub(super) fn is_complete(&self) -> bool {
        self.sent == self.declared
    }

    /// The error of a stream ending here, short of its length.
    pub(super) fn end(&self) -> Result<(), LengthMismatch> {
        if self.is_complete() {
            return Ok(());
        }
        Err(LengthMismatch {
            declared: self.declared,
            sent: self.sent,
            ended: true,
        })
    }
}

/// A boxed stream with a declared length (see
/// [`TryCloneBody::check_len`](crate::retry::TryCloneBody::check_len) for
/// boxed bodies): it does not report its end before its data reached the
/// length, so hyper's HTTP/1 client, asking for the next frame, finds the
/// end itself and fails the request (`BodyWriteAborted`, the caller's
/// error). A body reporting its end with a last frame short of the length
/// made hyper send it short and the server wait for the rest: a read
/// timeout of a healthy instance. (It cannot fail with an error of its
/// own: a boxed body's error type is the caller's.)
pub(crate) struct EndAtLength<B> {
    inner: B,
    check: LengthCheck,
}

impl<B> EndAtLength<B> {
    pub(crate) fn new(inner: B, declared: u64) -> Self {
        Self {
            inner,
            check: LengthCheck::new(declared),
        }
    }
}

impl<B> http_body::Body for EndAtLength<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            // Past the length: counted as all of it (the client stops
            // there on HTTP/1); only the end short of it matters here.
            if self.check.frame(frame).is_err() {
                self.check = LengthCheck {
                    declared: self.check.declared,
                    sent: self.check.declared,
                };
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.check.is_complete()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A stream failing with [`LengthMismatch`] at the first frame past its
/// declared length or at an end short of it, and reporting no end before
/// the length: for a body whose error type the crate can choose
/// (`reqwest::Body` wraps any; [`ReplayBody`](super::ReplayBody) checks in
/// place). The client then fails the request as the caller's, over HTTP/1
/// and HTTP/2.
#[cfg(feature = "reqwest")]
pub(crate) struct Checked<B> {
    inner: B,
    check: LengthCheck,
}

#[cfg(feature = "reqwest")]
impl<B> Checked<B> {
    pub(crate) fn new(inner: B, declared: u64) -> Self {
        Self {
            inner,
            check: LengthCheck::new(declared),
        }
    }
}

#[cfg(feature = "reqwest")]
impl<B> http_body::Body for Checked<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<crate::error::BoxError>,
{
    type Data = Bytes;
    type Error = crate::error::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(
                self.check.frame(&frame).map(|()| frame).map_err(Into::into),
            )),
            Poll::Ready(None) => match self.check.end() {
                Ok(()) => Poll::Ready(None),
                Err(e) => Poll::Ready(Some(Err(e.into()))),
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.check.is_complete()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A streamed request body contradicting its request's `Content-Length`:
/// the caller's error, never the instance's.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LengthMismatch {
    /// The length the request declared, in bytes.
    declared: u64,
    /// The data bytes the body had given with its last frame.
    sent: u64,
    /// Whether the body ended (short of the length), else it passed it.
    ended: bool,
}

impl std::fmt::Display for LengthMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (declared, sent) = (self.declared, self.sent);
        if self.ended {
            write!(
                f,
                "the request body ended after {sent} bytes, short of its content-length {declared}"
            )
        } else {
            write!(
                f,
                "the request body passed its content-length {declared} (at {sent} bytes)"
            )
        }
    }
}

impl std::error::Error for LengthMismatch {}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Frame<Bytes> {
        Frame::data(Bytes::from(vec![b'x'; n]))
    }

    #[test]
    fn a_stream_must_give_exactly_its_declared_length() {
        let mut check = LengthCheck::new(10);
        assert_eq!(check.frame(&data(4)), Ok(()));
        assert!(!check.is_complete());
        assert_eq!(
            check.end().unwrap_err().to_string(),
            "the request body ended after 4 bytes, short of its content-length 10"
        );
        assert_eq!(check.frame(&Frame::trailers(Default::default())), Ok(()));
        assert_eq!(check.frame(&data(6)), Ok(()));
        assert!(check.is_complete());
        assert_eq!(check.end(), Ok(()));
        let err = check.frame(&data(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the request body passed its content-length 10 (at 11 bytes)"
        );
        // The refused frame is not counted as sent.
        assert_eq!(check.end(), Ok(()));
        let mut zero = LengthCheck::new(0);
        assert_eq!(zero.frame(&data(0)), Ok(()));
        assert_eq!(zero.end(), Ok(()));
        assert!(zero.frame(&data(1)).is_err());
        let mut huge = LengthCheck::new(u64::MAX);
        assert_eq!(huge.frame(&data(3)), Ok(()));
        assert!(huge.end().is_err());
    }
}
