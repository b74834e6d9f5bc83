//! The service's health view never loses an invalidation that lands while
//! a recount walks the list (`HealthView::recount`). Before the fix it
//! loaded `recount_at_ms` after the walk and compare-exchanged it from that
//! value, so an invalidation during the walk (already 0 when loaded) was
//! overwritten with "no change": an instance ejected during the walk was
//! not counted, the health filter stayed off, and the ejected instance kept
//! its round-robin share for its whole ejection (100 of 400 requests with
//! 3 healthy instances eligible).
//!
//! To hit the window deterministically, the global `metrics` recorder
//! blocks inside the walk (the walk emits `ribbon_ejection_returns_total`
//! when it ends an expired ejection), while another thread ejects an
//! instance the walk has already passed. Without the block the same race
//! occurs whenever an ejection (or breaker trip) lands on another core
//! during a recount, which on a large list takes a while.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tower::{Service, ServiceExt};
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::{BoxError, LoadBalancer};

static BLOCK: AtomicBool = AtomicBool::new(false);
#[allow(clippy::type_complexity)]
static GATE: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>> = Mutex::new(None);

struct Blocking;

impl Recorder for Blocking {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() == "ribbon_ejection_returns_total" && BLOCK.swap(false, Ordering::SeqCst) {
            if let Some((entered, release)) = GATE.lock().unwrap().take() {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
        }
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[derive(Clone, Default)]
struct Script {
    acts: Arc<Mutex<HashMap<u16, VecDeque<u16>>>>,
    seen: Arc<Mutex<Vec<u16>>>,
}

impl Script {
    fn push(&self, port: u16, code: u16) {
        self.acts
            .lock()
            .unwrap()
            .entry(port)
            .or_default()
            .push_back(code);
    }
    fn seen(&self) -> Vec<u16> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

type Fut = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send>>;

impl Service<Request<Full<Bytes>>> for Script {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Fut;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<Full<Bytes>>) -> Fut {
        let port = req.uri().port_u16().unwrap();
        self.seen.lock().unwrap().push(port);
        let code = self
            .acts
            .lock()
            .unwrap()
            .get_mut(&port)
            .and_then(VecDeque::pop_front)
            .unwrap_or(200);
        Box::pin(async move {
            let mut r = Response::new(Full::new(Bytes::from_static(b"x")));
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            Ok(r)
        })
    }
}

fn req() -> Request<Full<Bytes>> {
    Request::get("http://svc/")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

const B: u16 = 1000;
const E: u16 = 1001;

async fn send_until_seen(lb: &LoadBalancer<Script>, script: &Script, port: u16) {
    for _ in 0..100 {
        let _ = lb.clone().oneshot(req()).await;
        if script.seen().contains(&port) {
            return;
        }
    }
    panic!("port {port} never picked");
}

/// `race`: whether the ejection of B lands inside a recount's walk.
async fn run(race: bool) -> (usize, usize) {
    let _ = metrics::set_global_recorder(Blocking);
    let script = Script::default();
    let source = StaticSource::new()
        .with_list(
            "svc",
            "127.0.0.1:1000,127.0.0.1:1001,127.0.0.1:1002,127.0.0.1:1003",
        )
        .unwrap();
    let mut od = OutlierDetection::default();
    od.consecutive_5xx = 1;
    od.consecutive_gateway_failure = 1;
    od.base_ejection_time = Duration::from_secs(2);
    od.max_ejection_time = Duration::from_secs(2);
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .rule(|| RoundRobin::with_start(0))
        .retry(RetryPolicy::none())
        .read_timeout(None)
        .outlier_detection(od)
        .build(script.clone())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let ports: Vec<u16> = lb
        .snapshot("svc")
        .unwrap()
        .endpoints()
        .iter()
        .map(|e| e.instance().port())
        .collect();
    assert_eq!(ports, [1000, 1001, 1002, 1003]);

    // E is ejected, then its ejection runs out.
    script.push(E, 503);
    send_until_seen(&lb, &script, E).await;
    let _ = lb.clone().oneshot(req()).await; // recount: E unhealthy
    tokio::time::sleep(Duration::from_millis(2200)).await;
    script.seen();

    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let mut walker = None;
    if race {
        *GATE.lock().unwrap() = Some((entered_tx, release_rx));
        BLOCK.store(true, Ordering::SeqCst);
        // Thread X: its pick recounts; the walk passes B (healthy), then
        // ends E's ejection and blocks in the metrics call.
        let lb2 = lb.clone();
        walker = Some(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let _ = lb2.oneshot(req()).await;
            });
        }));
        entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    // Meanwhile B answers one 503 and is ejected (this invalidates the view).
    script.push(B, 503);
    send_until_seen(&lb, &script, B).await;
    let ep = lb.snapshot("svc").unwrap().endpoints()[0].clone();
    assert!(ep.stats().is_ejected_at(tokio::time::Instant::now()));
    if let Some(w) = walker {
        release_tx.send(()).unwrap();
        w.join().unwrap();
    }
    script.seen();

    // 400 requests while B is ejected.
    let mut to_b = 0;
    let mut total = 0;
    for _ in 0..400 {
        let _ = lb.clone().oneshot(req()).await;
        let seen = script.seen();
        if !ep.stats().is_ejected_at(tokio::time::Instant::now()) {
            break;
        }
        total += 1;
        to_b += seen.iter().filter(|&&p| p == B).count();
    }
    (to_b, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejection_during_a_recount_is_not_lost() {
    // Control: the same ejection outside a recount: B gets nothing.
    let (to_b, total) = run(false).await;
    assert!(
        total >= 300,
        "control: only {total} requests inside B's ejection"
    );
    assert_eq!(to_b, 0, "control: B got {to_b} of {total}");
    let (to_b, total) = run(true).await;
    assert!(total >= 300, "only {total} requests inside B's ejection");
    assert_eq!(
        to_b, 0,
        "ejected instance B got {to_b} of {total} requests while 3 healthy instances were eligible"
    );
}
