//! Simulated backends: real hyper HTTP/1 servers on 127.0.0.1 whose
//! response time is drawn per request from a seeded log-normal
//! distribution.
//!
//! Modelled on `tests/support/backend.rs` (same server loop), which cannot
//! be reused as is: its behaviours are fixed delays, and the scenarios need
//! a latency sampled per request, a slow-down factor switched at run time,
//! hits counted per time bucket, a live in-flight count and a record of
//! every request that arrives after the instance was removed from the list.
//!
//! **Latency model.** Each request sleeps `median × factor × exp(sigma × Z)`
//! with `Z` a standard normal drawn (Box–Muller) from the backend's own
//! `SmallRng`, seeded from the run seed and the backend index, so every
//! backend replays the same sequence of draws in every run. With the
//! defaults (median 5 ms, sigma 0.3) the 90th, 99th and 99.9th percentiles
//! of the draws are 7.4, 10.1 and 12.7 ms. Tokio's timer rounds each sleep up
//! to its 1 ms tick, so measured latencies sit up to about 1 ms above the
//! draws. `factor` is 1 normally, 12 for the S1 slow backend and 2 for the
//! S2 half-speed backends. A median of 0 answers at once (no sleep).

#[path = "../../tests/support/serve.rs"]
mod serve;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Marks "not set" in the µs timestamps below.
const UNSET: u64 = u64::MAX;

/// The process-wide time origin of the µs timestamps.
pub fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// `t` in µs since [`base`].
pub fn micros(t: Instant) -> u64 {
    t.saturating_duration_since(base()).as_micros() as u64
}

/// Per-request response time: log-normal with this median and sigma.
#[derive(Debug, Clone, Copy)]
pub struct LatencyModel {
    /// Median in ms (0: answer at once).
    pub median_ms: f64,
    /// Sigma of the underlying normal.
    pub sigma: f64,
}

impl LatencyModel {
    /// One draw in ms, scaled by `factor`.
    pub fn sample_ms(&self, factor: f64, rng: &mut SmallRng) -> f64 {
        if self.median_ms <= 0.0 {
            return 0.0;
        }
        self.median_ms * factor * (self.sigma * standard_normal(rng)).exp()
    }

    /// The quantile of the draws (factor 1) at standard-normal score `z`,
    /// in ms.
    pub fn quantile_ms(&self, z: f64) -> f64 {
        self.median_ms * (self.sigma * z).exp()
    }

    /// One line for headers.
    pub fn describe(&self) -> String {
        format!(
            "log-normal per request, median {} ms, sigma {} (p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms of the draws), \
             seeded SmallRng per backend; sleeps rounded up to tokio's 1 ms timer tick",
            self.median_ms,
            self.sigma,
            self.quantile_ms(1.2816),
            self.quantile_ms(2.3263),
            self.quantile_ms(3.0902),
        )
    }
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Everything a backend records, shared with its connections.
struct State {
    name: Bytes,
    model: LatencyModel,
    factor_bits: AtomicU64,
    status: AtomicU16,
    rng: Mutex<SmallRng>,
    epoch_us: AtomicU64,
    bucket_us: u64,
    buckets: Box<[AtomicU64]>,
    hits: AtomicU64,
    /// Connections accepted.
    accepts: AtomicU64,
    in_flight: AtomicUsize,
    removed_at_us: AtomicU64,
    /// µs between the removal and each request that arrived after it.
    late: Mutex<Vec<u64>>,
}

/// Lowers the in-flight count however the request ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How to start a [`SimBackend`].
#[derive(Debug, Clone, Copy)]
pub struct BackendSpec {
    /// Latency model.
    pub model: LatencyModel,
    /// Seed of the latency draws.
    pub seed: u64,
    /// Width of a hit bucket.
    pub bucket: Duration,
    /// Buckets kept (hits past the last land in the last).
    pub buckets: usize,
}

/// One running simulated backend. Dropping it stops it.
pub struct SimBackend {
    index: usize,
    addr: SocketAddr,
    state: Arc<State>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl SimBackend {
    /// Starts backend number `index` on a free port of 127.0.0.1.
    pub async fn start(index: usize, spec: BackendSpec) -> std::io::Result<SimBackend> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            name: Bytes::from(format!("b{index}")),
            model: spec.model,
            factor_bits: AtomicU64::new(1f64.to_bits()),
            status: AtomicU16::new(200),
            rng: Mutex::new(SmallRng::seed_from_u64(spec.seed)),
            epoch_us: AtomicU64::new(micros(Instant::now())),
            bucket_us: spec.bucket.as_micros().max(1) as u64,
            buckets: (0..spec.buckets.max(1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            hits: AtomicU64::new(0),
            accepts: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            removed_at_us: AtomicU64::new(UNSET),
            late: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, Arc::clone(&state), stopped));
        Ok(SimBackend {
            index,
            addr,
            state,
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
        })
    }

    /// Its number (its name is `b<index>`).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the hit buckets at `epoch` (and clears them).
    pub fn begin(&self, epoch: Instant) {
        self.state.epoch_us.store(micros(epoch), Ordering::Relaxed);
        for b in self.state.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
    }

    /// Multiplies every later latency draw by `factor`.
    pub fn set_factor(&self, factor: f64) {
        self.state
            .factor_bits
            .store(factor.to_bits(), Ordering::Relaxed);
    }

    /// Answers every later request with `status` (at once, without the
    /// latency draw, unless it is 200).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::Relaxed);
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::Relaxed)
    }

    /// Requests received per bucket since [`SimBackend::begin`].
    pub fn bucket_hits(&self) -> Vec<u64> {
        self.state
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> u64 {
        self.state.accepts.load(Ordering::Relaxed)
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::Relaxed)
    }

    /// Records that the instance was taken off the list at `at`: every
    /// request that arrives later is recorded with its delay.
    pub fn mark_removed(&self, at: Instant) {
        self.state
            .removed_at_us
            .store(micros(at), Ordering::Relaxed);
    }

    /// When it was removed, if it was.
    pub fn removed_at_us(&self) -> Option<u64> {
        let v = self.state.removed_at_us.load(Ordering::Relaxed);
        (v != UNSET).then_some(v)
    }

    /// Delays after the removal of every request that arrived after it.
    pub fn late_arrivals(&self) -> Vec<Duration> {
        self.state
            .late
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|&us| Duration::from_micros(us))
            .collect()
    }

    /// Closes the listener and every connection (requests in progress on
    /// it fail).
    pub fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for SimBackend {
    fn drop(&mut self) {
        self.stop();
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

/// Accepts until told to stop, then closes the listener and every
/// connection.
async fn serve(listener: TcpListener, state: Arc<State>, stopped: oneshot::Receiver<()>) {
    let counts = Arc::clone(&state);
    serve::serve(
        listener,
        stopped,
        move |stream| {
            counts.accepts.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
        },
        move |req| answer(Arc::clone(&state), req),
    )
    .await;
}

async fn answer(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let now = micros(Instant::now());
    state.hits.fetch_add(1, Ordering::Relaxed);
    let since = now.saturating_sub(state.epoch_us.load(Ordering::Relaxed));
    let slot = ((since / state.bucket_us) as usize).min(state.buckets.len() - 1);
    state.buckets[slot].fetch_add(1, Ordering::Relaxed);
    let removed = state.removed_at_us.load(Ordering::Relaxed);
    if removed != UNSET && now >= removed {
        state
            .late
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(now - removed);
    }
    state.in_flight.fetch_add(1, Ordering::Relaxed);
    let _guard = InFlight(&state.in_flight);
    let _ = req.into_body().collect().await;
    let status = state.status.load(Ordering::Relaxed);
    if status == 200 {
        let factor = f64::from_bits(state.factor_bits.load(Ordering::Relaxed));
        let delay_ms = {
            let mut rng = state.rng.lock().unwrap_or_else(|e| e.into_inner());
            state.model.sample_ms(factor, &mut rng)
        };
        if delay_ms > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(delay_ms / 1e3)).await;
        }
    }
    let mut response = Response::new(Full::new(state.name.clone()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    Ok(response)
}
