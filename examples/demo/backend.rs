//! Instances of a made-up `user-service` that behave like real ones: each
//! is a hyper HTTP/1.1 server on 127.0.0.1 answering after a log-normal
//! delay (most requests near the median, a long tail), with its name as
//! the body. An instance can be slowed down or killed while it runs.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Spread of the log-normal delay: σ of the underlying normal. 0.5 puts
/// p99 at about 3.2 × the median.
const SIGMA: f64 = 0.5;

struct Shared {
    name: String,
    median_us: AtomicU64,
    seed: AtomicU64,
}

/// One running instance; dropping it kills it.
pub struct Instance {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl Instance {
    /// Starts an instance named `name` with a median delay of `median`.
    pub async fn start(name: &str, median: Duration, seed: u64) -> io::Result<Instance> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            median_us: AtomicU64::new(duration_us(median)),
            seed: AtomicU64::new(seed),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Instance {
            addr,
            shared,
            task: Some(task),
        })
    }

    /// `host:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the median delay from the next request on.
    pub fn set_median(&self, median: Duration) {
        self.shared
            .median_us
            .store(duration_us(median), Ordering::Relaxed);
    }

    /// Closes the listener and every open connection: from now on connects
    /// are refused, as when a process dies.
    pub fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connections live in this set, so aborting the accept task (kill)
    // drops the set and closes every connection too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let service = service_fn(move |req| answer(Arc::clone(&shared), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn answer(
    shared: Arc<Shared>,
    _req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let seed = shared.seed.fetch_add(1, Ordering::Relaxed);
    let median_us = shared.median_us.load(Ordering::Relaxed) as f64;
    let delay_us = median_us * (SIGMA * standard_normal(&mut SmallRng::seed_from_u64(seed))).exp();
    tokio::time::sleep(Duration::from_micros(delay_us.min(60e6) as u64)).await;
    Ok(Response::new(Full::new(Bytes::from(shared.name.clone()))))
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
