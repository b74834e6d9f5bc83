//! Real HTTP backends on 127.0.0.1 for tests, examples and benches: a hyper
//! server per backend that answers every request with its own name and
//! counts what it served.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// One running backend. Dropping it (or [`Backend::stop`]) closes the
/// listener and every open connection.
pub struct Backend {
    name: String,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    /// Starts a backend named `name` on a free port of 127.0.0.1.
    pub async fn start(name: &str) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let body = Bytes::from(name.to_owned());
        let counter = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let body = body.clone();
                let counter = Arc::clone(&counter);
                connections.spawn(async move {
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        let body = body.clone();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Backend {
            name: name.to_owned(),
            addr,
            hits,
            task: Some(task),
        })
    }

    /// The backend's name (also its response body).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// Closes the listener and all connections.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}
