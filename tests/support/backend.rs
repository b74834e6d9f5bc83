//! Real HTTP backends on 127.0.0.1 for tests, examples and benches: a hyper
//! server per backend that answers every request with its own name and
//! counts what it served.
//!
//! A backend's [`Behavior`] can be switched while it runs (to answer a
//! status, to answer slowly, or to read a request and never answer), it
//! records the `x-request-id` of every request it receives, and it can be
//! stopped (new connects are refused; the port stays reserved, so no other
//! server of the test process takes it) and restarted on the same port.
//! [`Blackhole`] is an address whose connects get no answer at all, for
//! connect timeouts.
#![allow(dead_code)]

#[path = "serve.rs"]
pub mod serve;

pub use serve::closed_port;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// The header whose value a backend records with each request.
pub const REQUEST_ID: &str = "x-request-id";

/// The response header a backend echoes each received `Cookie` field in.
pub const ECHO_COOKIE: &str = "x-echo-cookie";

/// How a backend answers. Every behaviour but [`Behavior::HangAfterRead`]
/// answers with the backend's name as the body; every behaviour reads the
/// whole request body first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// 200.
    Ok,
    /// This status.
    Status(u16),
    /// This status with `Retry-After: <secs>`.
    StatusRetryAfter(u16, u64),
    /// 200 after this delay.
    Slow(Duration),
    /// This status after this delay.
    SlowStatus(Duration, u16),
    /// Reads the whole request (body included), then never answers.
    HangAfterRead,
}

impl Behavior {
    /// `status` with a `Retry-After` of `secs` seconds if given.
    pub fn status(code: u16, retry_after: Option<u64>) -> Self {
        match retry_after {
            Some(secs) => Behavior::StatusRetryAfter(code, secs),
            None => Behavior::Status(code),
        }
    }
}

/// What outlives one run of the server: survives [`Backend::restart`].
struct State {
    name: String,
    body: Bytes,
    hits: AtomicUsize,
    connections: AtomicUsize,
    behavior: ArcSwap<Behavior>,
    requests: Mutex<Vec<(String, Method)>>,
    /// The `Cookie` fields of every request, in order of arrival.
    cookies: Mutex<Vec<Vec<String>>>,
}

/// One running backend. Dropping it (or [`Backend::stop`]) closes the
/// listener and every open connection.
pub struct Backend {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    drain: watch::Sender<bool>,
    /// The server; its output holds the port once the listener closed.
    task: Option<JoinHandle<Option<closed_port::ClosedPort>>>,
    /// Holds the port while the backend is shut down (see
    /// [`Backend::shutdown`]).
    reserved: Option<closed_port::ClosedPort>,
}

impl Backend {
    /// Starts a backend named `name` on a free port of 127.0.0.1.
    pub async fn start(name: &str) -> io::Result<Backend> {
        Self::start_with(name, Behavior::Ok).await
    }

    /// Starts a backend named `name` that answers as `behavior`.
    pub async fn start_with(name: &str, behavior: Behavior) -> io::Result<Backend> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            name: name.to_owned(),
            body: Bytes::from(name.to_owned()),
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            behavior: ArcSwap::from_pointee(behavior),
            requests: Mutex::new(Vec::new()),
            cookies: Mutex::new(Vec::new()),
        });
        let mut backend = Backend {
            addr,
            state,
            stop: None,
            drain: watch::channel(false).0,
            task: None,
            reserved: None,
        };
        backend.spawn(listener);
        Ok(backend)
    }

    fn spawn(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel();
        self.stop = Some(stop);
        let (drain, draining) = watch::channel(false);
        self.drain = drain;
        self.task = Some(tokio::spawn(serve(
            listener,
            Arc::clone(&self.state),
            stopped,
            draining,
        )));
    }

    /// The backend's name (also its response body).
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests received so far (counted when the request head arrives,
    /// whatever the behaviour; restarts keep counting).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Switches how it answers from the next request on.
    pub fn set_behavior(&self, behavior: Behavior) {
        self.state.behavior.store(Arc::new(behavior));
    }

    /// How it answers now.
    pub fn behavior(&self) -> Behavior {
        Behavior::clone(&self.state.behavior.load())
    }

    /// `(x-request-id, method)` of every request received that had the
    /// header, in arrival order.
    pub fn requests(&self) -> Vec<(String, Method)> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The `x-request-id`s received, in arrival order.
    pub fn request_ids(&self) -> Vec<String> {
        self.requests().into_iter().map(|(id, _)| id).collect()
    }

    /// The `Cookie` fields each request carried (one inner list per
    /// request, in arrival order; non-UTF-8 bytes replaced).
    pub fn cookies(&self) -> Vec<Vec<String>> {
        self.state
            .cookies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether it is serving (not stopped).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished()) && self.stop.is_some()
    }

    /// Closes the listener and all connections. The server task does it as
    /// soon as it runs (at once on a multi-thread runtime); use
    /// [`Backend::shutdown`] to wait until it is done.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Goes away gracefully: the listener closes at once (new connects are
    /// refused; the port stays reserved, as after [`Backend::shutdown`])
    /// and each connection finishes the request it is serving, then
    /// closes, as a server draining for a shutdown does.
    pub fn drain(&self) {
        self.drain.send_replace(true);
    }

    /// Stops and waits until the listener and every connection are closed:
    /// from then on connects to [`Backend::addr`] are refused.
    ///
    /// The port stays bound, never listening (a [`closed_port::ClosedPort`]
    /// taken by the server task as its listener closes, so also after
    /// [`Backend::stop`] and [`Backend::drain`]), until [`Backend::restart`]
    /// or drop: a port released here could be given to the next server any
    /// test starts, and then requests meant to be refused would be
    /// answered, or two backends stopped and started in turn would share
    /// one port (grpc_java_6650 in `tests/peer_bugs.rs` failed so in CI).
    pub async fn shutdown(&mut self) {
        self.stop();
        if let Some(task) = self.task.take()
            && let Ok(reserved) = task.await
        {
            self.reserved = self.reserved.take().or(reserved);
        }
        if self.reserved.is_none() {
            self.reserved = closed_port::ClosedPort::at(self.addr).ok();
        }
    }

    /// Stops (if running) and listens again on the same port, keeping name,
    /// behaviour, hit counts and recorded ids. Fails if the port was taken
    /// meanwhile.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.shutdown().await;
        self.reserved = None;
        let listener = TcpListener::bind(self.addr).await?;
        self.spawn(listener);
        Ok(())
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Accepts until told to stop, then closes the listener and every
/// connection (and waits for them); returns the port's reservation.
async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    stopped: oneshot::Receiver<()>,
    draining: watch::Receiver<bool>,
) -> Option<closed_port::ClosedPort> {
    let counter = Arc::clone(&state);
    serve::serve_draining(
        listener,
        stopped,
        draining,
        move |_| {
            counter.connections.fetch_add(1, Ordering::SeqCst);
        },
        move |req| answer(Arc::clone(&state), req),
    )
    .await
}

async fn answer(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    if let Some(id) = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id.to_owned(), req.method().clone()));
    }
    let cookies: Vec<String> = (req.headers().get_all(http::header::COOKIE).iter())
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    state
        .cookies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(cookies.clone());
    let behavior = state.behavior.load_full();
    // Read the whole request first (a broken body is the client's problem).
    let _ = req.into_body().collect().await;
    let status =
        |code: u16| StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Full::new(state.body.clone()));
    // Echo every `Cookie` field back, one `x-echo-cookie` field each.
    for cookie in cookies {
        if let Ok(v) = http::HeaderValue::from_str(&cookie) {
            response.headers_mut().append(ECHO_COOKIE, v);
        }
    }
    match *behavior {
        Behavior::Ok => {}
        Behavior::Status(code) => *response.status_mut() = status(code),
        Behavior::StatusRetryAfter(code, secs) => {
            *response.status_mut() = status(code);
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, secs.into());
        }
        Behavior::Slow(delay) => tokio::time::sleep(delay).await,
        Behavior::SlowStatus(delay, code) => {
            tokio::time::sleep(delay).await;
            *response.status_mut() = status(code);
        }
        Behavior::HangAfterRead => std::future::pending::<()>().await,
    }
    Ok(response)
}

/// An address on 127.0.0.1 whose connects are never answered, so a client
/// connect times out: a listener with a backlog of 1 that never accepts,
/// whose accept queue is filled by raw connects; Linux then drops further
/// SYNs (the client retransmits the SYN after 1 s, 3 s, ...).
pub struct Blackhole {
    addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    /// Binds, fills the backlog and checks that one more connect gets no
    /// answer within 100 ms.
    pub async fn start() -> io::Result<Blackhole> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(1)?;
        let addr = listener.local_addr()?;
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => fillers.push(stream),
                Ok(Err(e)) => return Err(e),
                // This connect got no answer: the accept queue is full.
                Err(_) => {
                    return Ok(Blackhole {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    });
                }
            }
        }
        Err(io::Error::other(format!(
            "{addr}: backlog still accepting after {} connects",
            fillers.len()
        )))
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}
