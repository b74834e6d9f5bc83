//! [`Upload`]: when a request body's upload ended, as the body saw it, so
//! the per-try timeout can start there instead of at the send.

use std::fmt;
use std::sync::{Arc, OnceLock};

use tokio::time::Instant;

/// The end of one request body's upload, shared between the body (which
/// marks it) and the balancer's attempt (which reads it).
///
/// The balancer hands a request body to the inner client as it is, so it
/// cannot see when the client has sent it. A body that says so through
/// [`TryCloneBody::upload`](super::TryCloneBody::upload) gets a per-try
/// timeout that starts when its upload ends (the end of its last frame, an
/// error, or its end reported by `is_end_stream`), as Envoy's timeouts
/// start once the request is sent, instead of at the send: an upload longer
/// than the per-try timeout (5 s by default) is no longer cut off. The
/// request deadline ([`RetryPolicy::deadline`](super::RetryPolicy::deadline))
/// still bounds the whole request, upload included.
/// [`ReplayBody::streaming`](super::ReplayBody::streaming) (and the gRPC
/// bodies, which are `ReplayBody`s) report their upload; a body of your own
/// can too: make one `Upload` per body, return a clone from `upload`, and
/// call [`end`](Self::end) when the body has yielded its last frame.
///
/// ```
/// use tower_ribbon::retry::Upload;
///
/// let upload = Upload::new();
/// assert!(upload.ended_at().is_none());
/// upload.end();
/// let at = upload.ended_at();
/// upload.end(); // the first end counts
/// assert_eq!(upload.ended_at(), at);
/// ```
#[derive(Clone, Default)]
pub struct Upload {
    ended: Arc<OnceLock<Instant>>,
}

impl Upload {
    /// An upload that has not ended yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the upload ended now (tokio's clock, so paused time applies).
    /// Only the first call counts.
    pub fn end(&self) {
        let _ = self.ended.get_or_init(Instant::now);
    }

    /// When the upload ended, if it has.
    pub fn ended_at(&self) -> Option<Instant> {
        self.ended.get().copied()
    }
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload")
            .field("ended", &self.ended_at().is_some())
            .finish()
    }
}
