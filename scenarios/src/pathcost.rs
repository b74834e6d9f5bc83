//! Path cost: CPU time per request of the balancers alone, with an inner
//! service that answers at once (no network, no backend), on one thread.
//! What `overhead` measures through loopback sockets, without their noise:
//! each mode sends `n` requests one after another, in 5 interleaved rounds;
//! the table shows the fastest round per mode (the least disturbed by other
//! load) and the median.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma};
use tower::{Service, ServiceExt};
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::retry::RetryPolicy;

use crate::BoxError;
use crate::report::{Report, Table};

type Req = Request<Empty<Bytes>>;
/// The inner service's answer: at once, or (diagnostic `PATHCOST_PENDING=1`)
/// after one `Pending` poll, as a network call is, so that timers armed on
/// the first poll (the per-try timeout) and the task's wake-up are counted.
pub struct Answer {
    pending: bool,
}

static PENDING_ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn answer_future() -> Answer {
    Answer {
        pending: PENDING_ONCE.load(std::sync::atomic::Ordering::Relaxed),
    }
}

impl std::future::Future for Answer {
    type Output = Result<Response<Empty<Bytes>>, Infallible>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if std::mem::take(&mut self.pending) {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Ok(Response::new(Empty::new())))
    }
}

fn instant()
-> impl Service<Req, Response = Response<Empty<Bytes>>, Error = Infallible, Future = Answer> + Clone
{
    tower::service_fn(|_req: Req| answer_future())
}

fn request() -> Req {
    Request::get("http://svc/x")
        .body(Empty::new())
        .expect("request")
}

/// A balancer over the instant inner service; `read_timeout` is the
/// builder's per-try timeout (`None` for none; the builder's default is 5 s).
async fn lb(
    policy: RetryPolicy,
    read_timeout: Option<Duration>,
) -> Result<impl Service<Req, Error = tower_ribbon::Error> + Clone, BoxError> {
    let source = StaticSource::new().with_list("svc", "127.0.0.1:8081")?;
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .retry(policy)
        .read_timeout(read_timeout)
        .build(instant())?;
    lb.ready_service("svc").await;
    Ok(lb)
}

/// Nanoseconds per request over `n` requests.
async fn direct_round(n: u32) -> f64 {
    let svc = instant();
    let start = Instant::now();
    for _ in 0..n {
        let response = svc.clone().oneshot(request()).await;
        drop(std::hint::black_box(response));
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

async fn lb_round<S>(svc: &S, n: u32) -> f64
where
    S: Service<Req> + Clone,
{
    let start = Instant::now();
    for _ in 0..n {
        let response = svc.clone().oneshot(request()).await;
        drop(std::hint::black_box(response));
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

type P2c = Balance<ServiceList<Vec<PeakEwma<tower::util::ServiceFn<fn(Req) -> Answer>>>>, Req>;

fn p2c() -> P2c {
    fn answer(_req: Req) -> Answer {
        answer_future()
    }
    let f: fn(Req) -> _ = answer;
    let hop = PeakEwma::new(
        tower::service_fn(f),
        Duration::from_millis(30),
        Duration::from_secs(10).as_nanos() as f64,
        CompleteOnResponse::default(),
    );
    Balance::new(ServiceList::new(vec![hop]))
}

async fn p2c_round(balance: &mut P2c, n: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let ready = balance.ready().await.expect("ready");
        let response = ready.call(request()).await;
        drop(std::hint::black_box(response));
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

/// A table of rounds (`rows[0]` the inner service alone): fastest and
/// median per mode, and the fastest over the inner's fastest.
fn cost_table(head: [&str; 2], labels: &[&str], rows: &[Vec<f64>]) -> Table {
    let stat = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (
            v.first().copied().unwrap_or(f64::NAN),
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN),
        )
    };
    let mut table = Table::new(&[
        head[0],
        head[1],
        ">ns/request (median)",
        ">added over inner, fastest (ns)",
    ]);
    let base = rows.first().map_or(f64::NAN, |v| stat(v).0);
    for (i, (label, v)) in labels.iter().zip(rows).enumerate() {
        let (min, median) = stat(v);
        table.row(vec![
            (*label).to_owned(),
            format!("{min:.0}"),
            format!("{median:.0}"),
            if i == 0 {
                "—".to_owned()
            } else {
                format!("{:+.0}", min - base)
            },
        ]);
    }
    table
}

/// Nanoseconds per request (wall time per thread) with the same balancer
/// used from two threads at once, each on a runtime of its own: what
/// the one-thread rounds cannot show, the reference counts, stats and
/// cursor shared across cores.
fn two_threads<S>(svc: &S, n: u32) -> f64
where
    S: Service<Req> + Clone + Send + 'static,
{
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let svc = svc.clone();
            let barrier = std::sync::Arc::clone(&barrier);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                barrier.wait();
                rt.block_on(lb_round(&svc, n))
            })
        })
        .collect();
    let ns: Vec<f64> = threads.into_iter().filter_map(|t| t.join().ok()).collect();
    ns.iter().sum::<f64>() / ns.len().max(1) as f64
}

/// Nanoseconds per request of the balancer's spans and events with no
/// subscriber: the same macros, fields and records as
/// `tower_ribbon::service::trace` (one request span, one attempt span,
/// their records), `n` times.
fn spans_round(n: u32) -> f64 {
    use tracing::field::Empty;
    let method = http::Method::GET;
    let start = Instant::now();
    for i in 0..n {
        let request = tracing::info_span!(
            "ribbon.request",
            otel.kind = "client",
            http.request.method = method.as_str(),
            peer.service = "svc",
            ribbon.instance.id = Empty,
            ribbon.attempts = Empty,
            http.response.status_code = Empty,
            "error.type" = Empty,
        );
        let attempt = if request.is_disabled() {
            tracing::Span::none()
        } else {
            tracing::info_span!(parent: &request, "ribbon.attempt", otel.kind = "client")
        };
        if !attempt.is_disabled() {
            attempt.record("server.port", 8081);
        }
        attempt.record("http.response.status_code", 200);
        let _entered = attempt.enter();
        std::hint::black_box((&request, &attempt, i));
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

pub async fn run(report: &mut Report) -> Result<(), BoxError> {
    eprintln!("pathcost: measuring ...");
    const N: u32 = 200_000;
    const ROUNDS: usize = 5;
    let per_try = Some(tower_ribbon::service::DEFAULT_READ_TIMEOUT);
    let rr = lb(RetryPolicy::default(), per_try).await?;
    let rr_none = lb(RetryPolicy::none(), per_try).await?;
    let mut balance = p2c();
    // Diagnostics: PATHCOST_ONLY=inner|rr|rr_none|rr_none_no_timer|p2c sends
    // PATHCOST_N (1 000 000) requests in that mode alone and reports nothing
    // (for instruction counts with `scripts/path-instructions`, which the
    // host's load does not move). `rr_none_no_timer` is `rr_none` without a
    // per-try timeout: with `PATHCOST_PENDING=1`, the difference is what the
    // per-try timer costs an attempt that waits.
    if let Ok(only) = std::env::var("PATHCOST_ONLY") {
        PENDING_ONCE.store(
            std::env::var("PATHCOST_PENDING").is_ok_and(|v| v == "1"),
            std::sync::atomic::Ordering::Relaxed,
        );
        let n = std::env::var("PATHCOST_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1_000_000);
        let ns = match only.as_str() {
            "inner" => direct_round(n).await,
            "rr" => lb_round(&rr, n).await,
            "rr_none" => lb_round(&rr_none, n).await,
            "rr_none_no_timer" => lb_round(&lb(RetryPolicy::none(), None).await?, n).await,
            "p2c" => p2c_round(&mut balance, n).await,
            other => return Err(format!("PATHCOST_ONLY: unknown mode {other:?}").into()),
        };
        eprintln!("pathcost {only}: {ns:.0} ns/request");
        return Ok(());
    }
    let mut ns: [Vec<f64>; 4] = Default::default();
    // Warm-up.
    direct_round(N / 10).await;
    lb_round(&rr, N / 10).await;
    lb_round(&rr_none, N / 10).await;
    p2c_round(&mut balance, N / 10).await;
    for _ in 0..ROUNDS {
        ns[0].push(direct_round(N).await);
        ns[1].push(lb_round(&rr, N).await);
        ns[2].push(lb_round(&rr_none, N).await);
        ns[3].push(p2c_round(&mut balance, N).await);
    }
    let labels = [
        "inner service alone (instant answer)",
        "LoadBalancer round_robin (default policy)",
        "LoadBalancer round_robin, RetryPolicy::none()",
        "tower p2c + PeakEwma",
    ];
    let table = cost_table(["mode", ">ns/request (fastest round)"], &labels, &ns);
    // Two threads at once, to see what sharing across cores adds.
    let mut two: [Vec<f64>; 3] = Default::default();
    let inner = instant();
    for _ in 0..ROUNDS {
        two[0].push(two_threads(&inner, N / 2));
        two[1].push(two_threads(&rr, N / 2));
        two[2].push(two_threads(&rr_none, N / 2));
    }
    let shared = cost_table(
        [
            "mode, two threads at once",
            ">ns/request per thread (fastest round)",
        ],
        &labels,
        &two,
    );
    let spans = (0..ROUNDS)
        .map(|_| spans_round(N * 5))
        .fold(f64::INFINITY, f64::min);
    report.add(&format!(
        "## Path cost\n\nCPU per request of the balancer alone: an inner service that answers at once, \
         {N} requests one after another per round on one thread, {ROUNDS} rounds interleaved; no \
         network, so this is the balancer's own cost without the noise of `overhead`.\n\n{}\n\
         The same balancers used from two threads at once (each on a runtime of its own, {} \
         requests each per round): what sharing reference counts, stats and the cursor across \
         cores adds.\n\n{}\n\
         The balancer's tracing spans (one per request, one per attempt, their records) with no \
         subscriber: {spans:.1} ns per request (fastest of {ROUNDS} rounds of {} requests).\n\n",
        table.markdown(),
        N / 2,
        shared.markdown(),
        N * 5
    ));
    Ok(())
}
