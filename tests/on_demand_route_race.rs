//! An on-demand service is not evicted under a request already routed to
//! it. The request's hold (`LiveRequest`) was taken at the end of
//! `LoadBalancer::start`, after the route, with the caller's code in
//! between (the body's `TryCloneBody::exact_len`, the inner service's
//! `Clone`, the tracing subscriber): the sweeper saw no hold and removed
//! the entry, and the request picked from a list no longer refreshed, an
//! instance removed 150 ms before (helper 214). The hold is now taken right
//! after the route, and the sweeper claims an entry (`live` from 0 to its
//! evicted bit) before removing it, so a request routed to a claimed entry
//! routes again.
//!
//! Here the stall is a body whose `exact_len` blocks its thread for 400 ms
//! (standing in for a preempted or slow thread); idle 100 ms, refresh every
//! 20 ms. Expected: the service stays listed, the second request goes to
//! port 2.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::retry::{RetryPolicy, TryCloneBody};
use tower_ribbon::{BoxError, LoadBalancer};

/// A request body in memory whose `exact_len` takes `stall` (blocking).
#[derive(Clone, Default)]
struct SlowLen {
    stall: Duration,
}

impl TryCloneBody for SlowLen {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
    fn exact_len(&self) -> Option<u64> {
        std::thread::sleep(self.stall);
        Some(0)
    }
}

fn get(stall: Duration) -> Request<SlowLen> {
    Request::get("http://late/")
        .header(http::header::CONTENT_LENGTH, "0")
        .body(SlowLen { stall })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_request_keeps_its_on_demand_service() {
    let source = StaticSource::new()
        .with_list("late", "127.0.0.1:1")
        .unwrap();
    let seen: Arc<Mutex<Vec<u16>>> = Arc::default();
    let log = Arc::clone(&seen);
    let inner = tower::service_fn(move |req: Request<SlowLen>| {
        let port = req.uri().port_u16().unwrap();
        log.lock().unwrap().push(port);
        async move { Ok::<_, BoxError>(Response::new(String::new())) }
    });
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_millis(20);
    refresh.jitter = 0.0;
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .discover_on_demand(true)
        .on_demand_idle(Duration::from_millis(100))
        .refresh(refresh)
        .retry(RetryPolicy::none())
        .build(inner)
        .unwrap();
    // The service is discovered and used once.
    lb.request(get(Duration::ZERO)).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [1]);

    // The second request is routed to it, then stalls before its hold.
    let second = {
        let lb = lb.clone();
        tokio::spawn(async move {
            lb.request(get(Duration::from_millis(400)))
                .await
                .map(|_| ())
        })
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    let listed_during = lb.services().iter().any(|s| s == "late");
    // The instance moves while the request is alive.
    source.set_list("late", "127.0.0.1:2").unwrap();
    second.await.unwrap().unwrap();
    let ports = seen.lock().unwrap().clone();
    eprintln!("listed while the request was alive: {listed_during}; ports {ports:?}");
    assert_eq!(
        (listed_during, ports),
        (true, vec![1, 2]),
        "(service listed while its request was alive, ports the requests went to)"
    );
}
