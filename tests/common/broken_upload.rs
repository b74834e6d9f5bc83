//! A request body that sends one chunk, then fails: the caller's upload
//! breaking (in a gateway, the downstream client went away mid-upload).
//! Shared by the tests that check it is the caller's error
//! (`Outcome::RequestError`) over HTTP/1, HTTP/2 and reqwest.
#![allow(dead_code)]

use bytes::Bytes;

/// Sends `part`, then fails with an I/O error. Not replayable.
pub struct BrokenUpload(pub u8);

impl http_body::Body for BrokenUpload {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0 += 1;
        std::task::Poll::Ready(Some(if self.0 == 1 {
            Ok(http_body::Frame::data(Bytes::from_static(b"part")))
        } else {
            Err(std::io::Error::other("the caller's upload broke"))
        }))
    }
}

impl tower_ribbon::retry::TryCloneBody for BrokenUpload {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

/// Sends `n` requests with `send` and checks each failed with exactly one
/// attempt, whose outcome is `RequestError` (not retried).
pub async fn expect_request_errors<R, F, Fut>(n: usize, send: F)
where
    R: std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<R, tower_ribbon::Error>>,
{
    for i in 0..n {
        let err = send().await.expect_err("the upload broke");
        let outcomes: Vec<_> = err.attempts().iter().map(|a| a.outcome).collect();
        assert_eq!(
            outcomes,
            [tower_ribbon::stats::Outcome::RequestError],
            "request {i}: {err:?}"
        );
    }
}

/// Checks that no instance of `snapshot` counts a failure, a consecutive
/// error, an ejection or a request still in flight.
pub fn expect_untouched(snapshot: &tower_ribbon::snapshot::Snapshot) {
    let now = tokio::time::Instant::now();
    for e in snapshot.endpoints() {
        let stats = e.stats();
        assert_eq!(
            (
                stats.consecutive_server_errors(),
                stats.failures(),
                stats.in_flight(),
                stats.is_ejected_at(now)
            ),
            (0, 0, 0, false),
            "{e}"
        );
    }
}
