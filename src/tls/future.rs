//! [`ResponseFuture`]: [`HttpsClient`](super::HttpsClient)'s answer, with a
//! handshake its server refused after the connect typed as a
//! [`ConnectError`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use hyper::body::Incoming;

use super::ConnectError;
use crate::error::BoxError;

/// The future of [`HttpsClient`](super::HttpsClient)'s `call`: hyper-util's
/// response future, whose error it boxes. An error that carries a server's
/// fatal handshake-only alert (under TLS 1.3 a server refuses the client
/// certificate after the connect, once hyper wrote the request; the
/// server never processed it) becomes a [`ConnectError`] whose
/// [`is_handshake`](ConnectError::is_handshake) holds, with rustls' alert
/// as its [`rustls_error`](ConnectError::rustls_error); every other error
/// is hyper-util's [`Error`](hyper_util::client::legacy::Error), boxed.
/// One poll of the inner future per poll; nothing more is done until it
/// fails.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    inner: hyper_util::client::legacy::ResponseFuture,
}

impl ResponseFuture {
    pub(super) fn new(inner: hyper_util::client::legacy::ResponseFuture) -> Self {
        Self { inner }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // hyper-util's future is `Unpin` (it boxes its state).
        Pin::new(&mut self.inner).poll(cx).map_err(typed)
    }
}

/// hyper-util's error, or the [`ConnectError`] of the handshake-only alert
/// in its chain.
fn typed(error: hyper_util::client::legacy::Error) -> BoxError {
    match super::alert::refusal_in_chain(&error) {
        Some(alert) => Box::new(ConnectError::refused(alert)),
        None => Box::new(error),
    }
}
