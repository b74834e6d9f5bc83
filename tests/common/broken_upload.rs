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
