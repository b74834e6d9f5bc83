//! HTTP/1.1 upgrades through the balancer: a WebSocket handshake answered
//! `101 Switching Protocols`, a `CONNECT` answered 2xx, or any other
//! upgrade hyper's client hands over (it marks one by putting a
//! [`hyper::upgrade::OnUpgrade`] in the response's extensions).
//!
//! **They work as without the balancer.** The response keeps its
//! extensions, so `hyper::upgrade::on(&mut response).await` gives the
//! upgraded connection as it does with the client alone.
//!
//! **What an upgrade measures.** The attempt's result is the response
//! head: the 101 (or the 2xx to a `CONNECT`) is recorded as a success,
//! with the latency from the send to that head, when the response reaches
//! the caller. Its load is the connection: an upgraded connection is
//! counted in flight on its instance until it closes, as Envoy counts an
//! upgraded stream, whose payload passes through the same HTTP stream as
//! its headers ([Envoy: HTTP upgrades]), as an active request for its
//! least-request balancing ([Envoy: load balancers]). A WebSocket held
//! open is load for [`BestAvailable`](crate::rule::BestAvailable), P2C /
//! peak EWMA and least request, so new requests go to the instance
//! holding fewer of them.
//!
//! For the count to last until the connection closes, take the upgrade
//! with [`on`] (this module's) instead of `hyper::upgrade::on`: its
//! [`Upgraded`] holds the attempt and leaves the in-flight count when it
//! is dropped. A caller that uses `hyper::upgrade::on` still gets a
//! working connection, but the attempt leaves the in-flight count when the
//! response is dropped (the hold travels in the response's extensions),
//! so an open connection it took that way is not counted. The same holds
//! for reqwest's `Response::upgrade` (0.12, 0.13), which calls
//! `hyper::upgrade::on` on the response it wraps: with
//! [`ReqwestService`](crate::ReqwestService), take the connection with
//! [`on`] from the `http::Response` the balancer returns, before any
//! conversion to a `reqwest::Response` (four WebSockets taken through
//! reqwest's `upgrade()` were counted 0 in flight; helper 152).
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use hyper_util::rt::TokioIo;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! # async fn run(lb: tower_ribbon::LoadBalancer<tower_ribbon::service::HttpClient<Empty<Bytes>>>)
//! # -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let request = http::Request::get("http://chat-service/ws")
//!     .header("connection", "upgrade")
//!     .header("upgrade", "websocket")
//!     .header("sec-websocket-version", "13")
//!     .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
//!     .body(Empty::new())?;
//! let mut response = lb.request(request).await?;
//! // In flight on its instance until `io` is dropped.
//! let upgraded = tower_ribbon::service::upgrade::on(&mut response).await?;
//! let mut io = TokioIo::new(upgraded);
//! io.write_all(b"...").await?;
//! # Ok(()) }
//! ```
//!
//! [Envoy: HTTP upgrades]: https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/http/upgrades
//! [Envoy: load balancers]: https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/load_balancers#weighted-least-request

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};

use super::body::UpgradeHold as Hold;

/// Takes the pending upgrade of a response from the balancer, as
/// `hyper::upgrade::on` does, with its attempt: the connection it yields
/// counts in flight on its instance until it is dropped (see the
/// [module docs](self)).
///
/// Removes hyper's `OnUpgrade` and the balancer's hold from the
/// response's extensions; the response can be dropped at once. On a
/// response that is not an upgrade (no `OnUpgrade` in its extensions, as
/// for any status but a 101 or a 2xx to a `CONNECT`), the future fails as
/// hyper's does, and nothing is held.
pub fn on<B>(response: &mut http::Response<B>) -> OnUpgrade {
    let hold = response.extensions_mut().remove::<Hold>();
    OnUpgrade {
        inner: hyper::upgrade::on(response),
        hold,
    }
}

/// The future [`on`] returns: hyper's [`OnUpgrade`](hyper::upgrade::OnUpgrade)
/// with the attempt.
///
/// # Errors
///
/// Yields hyper's error when the response is not an upgrade, or the
/// connection closed or failed before the upgrade completed; the attempt
/// then leaves the in-flight count (its result, the response head, is
/// recorded already).
#[must_use = "futures do nothing unless polled"]
pub struct OnUpgrade {
    inner: hyper::upgrade::OnUpgrade,
    hold: Option<Hold>,
}

impl Future for OnUpgrade {
    type Output = Result<Upgraded, hyper::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll(cx);
        polled.map(|result| {
            let hold = this.hold.take();
            result.map(|io| Upgraded { io, hold })
        })
    }
}

impl fmt::Debug for OnUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnUpgrade")
            .field("inner", &self.inner)
            .field("held", &self.hold.is_some())
            .finish()
    }
}

/// An upgraded connection that counts in flight on its instance until it
/// is dropped: hyper's [`Upgraded`](hyper::upgrade::Upgraded) (read and
/// written through hyper's [`Read`] and [`Write`], or tokio's traits
/// through `hyper_util::rt::TokioIo`) with the attempt.
///
/// hyper's `Upgraded` cannot be built around another IO, so this is a
/// type of its own; [`into_inner`](Self::into_inner) gives hyper's (to
/// [`downcast`](hyper::upgrade::Upgraded::downcast) it, say) and ends the
/// count then.
pub struct Upgraded {
    io: hyper::upgrade::Upgraded,
    hold: Option<Hold>,
}

impl Upgraded {
    /// hyper's upgraded connection; the attempt leaves the in-flight count
    /// now.
    pub fn into_inner(self) -> hyper::upgrade::Upgraded {
        self.io
    }

    /// hyper's upgraded connection.
    pub fn get_ref(&self) -> &hyper::upgrade::Upgraded {
        &self.io
    }

    /// hyper's upgraded connection, mutably.
    pub fn get_mut(&mut self) -> &mut hyper::upgrade::Upgraded {
        &mut self.io
    }
}

impl Read for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

impl fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgraded")
            .field("io", &self.io)
            .field("held", &self.hold.is_some())
            .finish()
    }
}
