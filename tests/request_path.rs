//! The request path around the inner service: readiness before the pick,
//! what latency measures, bounds on hostile input.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use tower::{Service, ServiceExt};
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::{BoxError, LoadBalancer};

/// An inner service that is not ready until its gate opens (a stand-in for
/// a concurrency limit or a full buffer). Clones share the gate.
#[derive(Clone)]
struct Gate<S> {
    inner: S,
    open: Arc<AtomicBool>,
    waiters: Arc<Mutex<Vec<Waker>>>,
}

impl<S> Gate<S> {
    fn closed(inner: S) -> Self {
        Self {
            inner,
            open: Arc::new(AtomicBool::new(false)),
            waiters: Arc::default(),
        }
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        for waker in self.waiters.lock().unwrap().drain(..) {
            waker.wake();
        }
    }
}

impl<S: Service<R>, R> Service<R> for Gate<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if !self.open.load(Ordering::SeqCst) {
            self.waiters.lock().unwrap().push(cx.waker().clone());
            if !self.open.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.inner.call(req)
    }
}

fn echo()
-> impl Service<Request<String>, Response = Response<String>, Error = BoxError, Future = impl Send>
+ Clone
+ Send {
    tower::service_fn(|req: Request<String>| async move {
        Ok::<_, BoxError>(Response::new(req.uri().to_string()))
    })
}

/// Paused time; no memory bound needed (two instances, one request).
#[tokio::test(start_paused = true)]
async fn the_pick_waits_for_a_ready_inner_and_the_wait_is_not_latency() {
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1,127.0.0.1:2")
        .unwrap();
    let gate = Gate::closed(echo());
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .service("svc")
        .rule(|| RoundRobin::with_start(0))
        .refresh(
            RefreshConfig::default()
                .interval(Duration::from_secs(1))
                .jitter(0.0),
        )
        .retry(RetryPolicy::none())
        .build(gate.clone())
        .unwrap();
    assert!(lb.ready_service("svc").await);

    let start = tokio::time::Instant::now();
    let call = tokio::spawn(
        lb.clone()
            .oneshot(Request::get("http://svc/x").body(String::new()).unwrap()),
    );
    // While the inner service is not ready, the instance round robin would
    // pick first (port 1) leaves the list.
    tokio::time::sleep(Duration::from_millis(500)).await;
    source.set_list("svc", "127.0.0.1:2").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ports: Vec<u16> = lb
        .snapshot("svc")
        .unwrap()
        .endpoints()
        .iter()
        .map(|e| e.instance().port())
        .collect();
    assert_eq!(ports, [2]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    gate.open();

    let response = call.await.unwrap().unwrap();
    assert_eq!(response.into_body(), "http://127.0.0.1:2/x");
    assert_eq!(start.elapsed(), Duration::from_millis(4500));
    // The 4.5 s spent waiting for readiness is charged to no instance.
    let snapshot = lb.snapshot("svc").unwrap();
    let stats = snapshot.endpoints()[0].stats();
    assert_eq!(stats.requests(), 1);
    assert_eq!(stats.ewma(), Some(Duration::ZERO));
    assert_eq!(stats.in_flight(), 0);
}
