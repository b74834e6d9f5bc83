//! [`Upload`]: how a request body's upload is going, as the body sees it,
//! so the per-try timeout can start at the upload's end instead of at the
//! send, and still bound an upload that stalls.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// The progress of one request body's upload, shared between the body
/// (which marks it) and the balancer's attempt (which reads it).
///
/// The balancer hands a request body to the inner client as it is, so it
/// cannot see when the client has sent it. A body that reports its upload
/// through [`TryCloneBody::upload`](super::TryCloneBody::upload) gets a
/// per-try timeout that starts when its upload ends (the end of its last
/// frame, an error, or its end reported by `is_end_stream`), as Envoy's
/// timeouts start once the request is sent, instead of at the send: an
/// upload longer than the per-try timeout (5 s by default) is no longer
/// cut off. While the upload lasts, the per-try timeout bounds the time
/// since the body last yielded a frame (or since the send), as a socket
/// timeout bounds inactivity: an upload that stalls (a server that stops
/// reading, a body that stops producing) is still cut off. The request
/// deadline ([`RetryPolicy::deadline`](super::RetryPolicy::deadline))
/// bounds the whole request, upload included.
/// [`ReplayBody::streaming`](super::ReplayBody::streaming) (and the gRPC
/// bodies, which are `ReplayBody`s) report their upload; a body of your own
/// can too: make one `Upload` per body, return a clone from `upload`, call
/// [`frame`](Self::frame) for each frame it yields and [`end`](Self::end)
/// when it has yielded its last.
///
/// ```
/// use tower_ribbon::retry::Upload;
///
/// let upload = Upload::new();
/// assert!(upload.ended_at().is_none());
/// upload.frame();
/// assert!(upload.last_frame_at().is_some());
/// upload.end();
/// let at = upload.ended_at();
/// upload.end(); // the first end counts
/// assert_eq!(upload.ended_at(), at);
/// ```
#[derive(Clone)]
pub struct Upload {
    state: Arc<State>,
}

struct State {
    /// The origin of `last_frame`.
    base: Instant,
    /// Nanoseconds after `base` plus one when the body last yielded a
    /// frame; 0: none yet.
    last_frame: AtomicU64,
    ended: OnceLock<Instant>,
}

impl Default for Upload {
    fn default() -> Self {
        Self::new()
    }
}

impl Upload {
    /// An upload that has not ended yet, with no frame yielded.
    pub fn new() -> Self {
        Self {
            state: Arc::new(State {
                base: Instant::now(),
                last_frame: AtomicU64::new(0),
                ended: OnceLock::new(),
            }),
        }
    }

    /// Marks that the body yielded a frame now (tokio's clock, so paused
    /// time applies).
    pub fn frame(&self) {
        let since = Instant::now().saturating_duration_since(self.state.base);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1);
        self.state
            .last_frame
            .fetch_max(nanos.saturating_add(1), Ordering::Relaxed);
    }

    /// When the body last yielded a frame, if it has.
    pub fn last_frame_at(&self) -> Option<Instant> {
        let n = self.state.last_frame.load(Ordering::Relaxed);
        let nanos = n.checked_sub(1)?;
        self.state.base.checked_add(Duration::from_nanos(nanos))
    }

    /// Marks the upload ended now. Only the first call counts.
    pub fn end(&self) {
        let _ = self.state.ended.get_or_init(Instant::now);
    }

    /// When the upload ended, if it has.
    pub fn ended_at(&self) -> Option<Instant> {
        self.state.ended.get().copied()
    }
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload")
            .field("ended", &self.ended_at().is_some())
            .finish()
    }
}
