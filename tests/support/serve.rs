//! The accept loop of the loopback HTTP/1 backends, shared by the test
//! backends (`tests/support/backend.rs`) and the scenario backends
//! (`scenarios/src/backend.rs`, the scenario runner).
#![allow(dead_code, unreachable_pub)]

#[path = "../common/closed_port.rs"]
pub mod closed_port;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use closed_port::ClosedPort;

/// Serves every connection of `listener` with `handler` until `stopped`
/// fires (or its sender is dropped), then closes the listener and every
/// connection and waits for them. `on_accept` sees each new connection
/// first. The port is released when it returns (see [`serve_draining`] to
/// keep it).
pub async fn serve<H, Fut>(
    listener: TcpListener,
    stopped: oneshot::Receiver<()>,
    on_accept: impl Fn(&TcpStream),
    handler: H,
) where
    H: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let (_never, drain) = watch::channel(false);
    serve_draining(listener, stopped, drain, on_accept, handler).await;
}

/// [`serve`], and once `drain` turns true a graceful stop: the listener
/// closes (new connects are refused), each connection finishes the request
/// it is serving and closes (hyper's `graceful_shutdown`; idle ones at
/// once). `stopped` then closes what is left.
///
/// From the moment the listener closes, its port is held by a
/// [`ClosedPort`] (bound, never listening), which is returned: connects
/// are refused, and no server another test starts meanwhile is given the
/// port, for as long as the caller keeps it (a backend keeps it in its
/// task's output until it is shut down, restarted or dropped).
pub async fn serve_draining<H, Fut>(
    listener: TcpListener,
    mut stopped: oneshot::Receiver<()>,
    mut drain: watch::Receiver<bool>,
    on_accept: impl Fn(&TcpStream),
    handler: H,
) -> Option<ClosedPort>
where
    H: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let addr = listener.local_addr().ok();
    let mut reserved = None;
    let mut connections = JoinSet::new();
    let mut listener = Some(listener);
    loop {
        let accept = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        let draining = async {
            let drained = listener.is_some() && drain.wait_for(|d| *d).await.is_ok();
            if !drained {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = &mut stopped => break,
            () = draining => {
                listener = None;
                reserved = reserve(addr);
            }
            accepted = accept => {
                let Ok((stream, _)) = accepted else {
                    continue;
                };
                on_accept(&stream);
                let handler = handler.clone();
                let mut drain = drain.clone();
                connections.spawn(async move {
                    let conn = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(handler));
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        drained = async { drain.wait_for(|d| *d).await.is_ok() } => {
                            if !drained {
                                let _ = conn.await;
                                return;
                            }
                        }
                    }
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    if listener.take().is_some() {
        reserved = reserve(addr);
    }
    connections.shutdown().await;
    reserved
}

/// Holds `addr` once its listener is closed (see [`ClosedPort`]).
fn reserve(addr: Option<SocketAddr>) -> Option<ClosedPort> {
    ClosedPort::at(addr?).ok()
}
