//! Real tonic servers on 127.0.0.1 for the gRPC tests and the example:
//! `grpc.health.v1.Health` (from `tonic-health`, no `protoc` needed) with
//! a unary `Check` and a server-streaming `Watch`, counting calls and
//! connections, answering `x-backend: <name>` in the response metadata,
//! switchable to UNAVAILABLE, and killable abruptly (every connection
//! dropped at once, as when a process dies).
#![allow(dead_code, unreachable_pub)]

#[path = "../common/closed_port.rs"]
mod closed_port;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The statuses every `Watch` streams, in order.
pub const WATCH: [ServingStatus; 3] = [
    ServingStatus::Serving,
    ServingStatus::NotServing,
    ServingStatus::Serving,
];

#[derive(Clone)]
struct Counters {
    name: Arc<str>,
    checks: Arc<AtomicUsize>,
    watches: Arc<AtomicUsize>,
    unavailable: Arc<AtomicBool>,
    /// `Watch` streams one status, then fails with UNAVAILABLE (in the
    /// trailers, after a message).
    fail_midway: Arc<AtomicBool>,
}

impl Counters {
    fn tagged<T>(&self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        if let Ok(value) = self.name.parse() {
            response.metadata_mut().insert("x-backend", value);
        }
        response
    }

    fn refuse(&self) -> Result<(), Status> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(Status::unavailable(format!("{} is unavailable", self.name)));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Health for Counters {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        self.refuse()?;
        Ok(self.tagged(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        self.refuse()?;
        let mut items: Vec<Result<HealthCheckResponse, Status>> = WATCH
            .map(|s| Ok(HealthCheckResponse { status: s as i32 }))
            .into();
        if self.fail_midway.load(Ordering::SeqCst) {
            items.truncate(1);
            items.push(Err(Status::unavailable(format!(
                "{} failed midway",
                self.name
            ))));
        }
        Ok(self.tagged(Box::pin(tokio_stream::iter(items)) as Self::WatchStream))
    }
}

/// A running tonic server; killed when dropped.
pub struct GrpcBackend {
    pub name: String,
    pub addr: SocketAddr,
    counters: Counters,
    connections: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
    /// Holds the port once killed (see [`GrpcBackend::kill`]).
    reserved: Option<closed_port::ClosedPort>,
}

impl GrpcBackend {
    /// Starts `Health` on a free port of 127.0.0.1 (h2c).
    pub async fn start(name: &str) -> std::io::Result<GrpcBackend> {
        Self::start_with(name, None).await
    }

    /// Starts `Health` on a free port of 127.0.0.1, over TLS when
    /// `tls` is given (the acceptor should offer ALPN `h2`).
    pub async fn start_with(
        name: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<GrpcBackend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Counters {
            name: name.into(),
            checks: Arc::new(AtomicUsize::new(0)),
            watches: Arc::new(AtomicUsize::new(0)),
            unavailable: Arc::new(AtomicBool::new(false)),
            fail_midway: Arc::new(AtomicBool::new(false)),
        };
        let connections = Arc::new(AtomicUsize::new(0));
        let routes = tonic::service::Routes::new(HealthServer::new(counters.clone()));
        let accepted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the task drops them
            // all at once.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accept = listener.accept() => {
                        let Ok((tcp, _)) = accept else { continue };
                        let _ = tcp.set_nodelay(true);
                        accepted.fetch_add(1, Ordering::SeqCst);
                        let service = TowerToHyperService::new(routes.clone());
                        let tls = tls.clone();
                        conns.spawn(async move {
                            let server = auto::Builder::new(TokioExecutor::new());
                            match tls {
                                None => {
                                    let _ = server
                                        .http2_only()
                                        .serve_connection(TokioIo::new(tcp), service)
                                        .await;
                                }
                                Some(acceptor) => {
                                    let Ok(stream) = acceptor.accept(tcp).await else {
                                        return;
                                    };
                                    let _ = server
                                        .http2_only()
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                }
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(GrpcBackend {
            name: name.to_owned(),
            addr,
            counters,
            connections,
            task: Some(task),
            reserved: None,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `Check` calls received (answered or refused).
    pub fn checks(&self) -> usize {
        self.counters.checks.load(Ordering::SeqCst)
    }

    /// `Watch` calls received.
    pub fn watches(&self) -> usize {
        self.counters.watches.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Answer every call with UNAVAILABLE (trailers-only) from now on.
    pub fn set_unavailable(&self, on: bool) {
        self.counters.unavailable.store(on, Ordering::SeqCst);
    }

    /// Make every `Watch` fail with UNAVAILABLE after its first message
    /// (the status in the trailers), from now on.
    pub fn set_fail_midway(&self, on: bool) {
        self.counters.fail_midway.store(on, Ordering::SeqCst);
    }

    /// Dies: the listener and every open connection close at once. The
    /// port stays bound, never listening, while this value lives: connects
    /// are refused, and no server of a parallel test is given the port.
    pub async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        if self.reserved.is_none() {
            self.reserved = closed_port::ClosedPort::at(self.addr).ok();
        }
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
