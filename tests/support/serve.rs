//! The accept loop of the loopback HTTP/1 backends, shared by the test
//! backends (`tests/support/backend.rs`) and the scenario backends
//! (`scenarios/src/backend.rs`, the scenario runner).
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// Serves every connection of `listener` with `handler` until `stopped`
/// fires (or its sender is dropped), then closes the listener and every
/// connection and waits for them. `on_accept` sees each new connection
/// first.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    mut stopped: oneshot::Receiver<()>,
    on_accept: impl Fn(&TcpStream),
    handler: H,
) where
    H: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    continue;
                };
                on_accept(&stream);
                let handler = handler.clone();
                connections.spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(handler))
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}
