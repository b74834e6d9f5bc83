//! Allocations and memory of the request path, counted by a global
//! allocator that wraps the system one and counts per thread (each test
//! runs on a current-thread runtime, so its work stays on one thread).
//!
//! - Requests through the balancer with an always-ready inner service and
//!   `RetryPolicy::none()` allocate once each: the boxed response future
//!   (`ResponseFuture` holds one `Pin<Box<dyn Future>>`). Picking, the URI
//!   rewrite (authority and scheme are shared `Bytes`), stats, the response
//!   body wrapper and the end of the attempt allocate nothing.
//! - A retried 64 MiB `Full<Bytes>` body is replayed by reference count:
//!   peak memory during the request grows by far less than the body.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::retry::{RetryBudgetConfig, RetryPolicy};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes as i64;
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - bytes as i64));
}

// SAFETY: every call is forwarded unchanged to `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        shrank(layout.size());
        grew(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Live bytes now; resets the peak to it.
fn reset_peak() -> i64 {
    let live = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(live));
    live
}

fn peak() -> i64 {
    PEAK.with(Cell::get)
}

/// A balancer over `source`'s service `svc` with `RetryPolicy::none()`,
/// its list fetched.
async fn ready_balancer<S: Clone>(source: StaticSource, inner: S) -> LoadBalancer<S> {
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .retry(RetryPolicy::none())
        .build(inner)
        .unwrap();
    assert!(lb.ready_service("svc").await);
    lb
}

/// `n` bodiless GETs to `http://svc/x`, built before any is measured.
fn requests(n: usize) -> std::vec::IntoIter<Request<()>> {
    let requests: Vec<Request<()>> = (0..n)
        .map(|_| Request::get("http://svc/x").body(()).unwrap())
        .collect();
    requests.into_iter()
}

/// 1 000 measured requests after 100 warm-up ones; paused time, well under
/// 1 MiB.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_allocates_once() {
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
        .unwrap();
    let inner = tower::service_fn(|_req: Request<()>| {
        std::future::ready(Ok::<_, std::convert::Infallible>(Response::new(())))
    });
    let lb = ready_balancer(source, inner).await;
    let mut requests = requests(1_100);
    for request in requests.by_ref().take(100) {
        drop(lb.clone().oneshot(request).await.unwrap());
    }
    let before = allocs();
    for request in requests {
        drop(lb.clone().oneshot(request).await.unwrap());
    }
    // Exactly one per request: the boxed response future.
    assert_eq!(allocs() - before, 1_000);
}

/// `LoadBalancer::request` (by reference, as hyper-util's
/// `Client::request`): the same single allocation per request, with no
/// clone of the balancer. 1 000 measured requests after 100 warm-up ones;
/// paused time.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_by_reference_allocates_once() {
    let source = StaticSource::new().with_list("svc", "127.0.0.1:7").unwrap();
    let inner = tower::service_fn(|req: Request<()>| {
        let mut response = Response::new(());
        // Sent to the instance: the URI was rewritten.
        if req.uri() == "http://127.0.0.1:7/x" {
            *response.status_mut() = http::StatusCode::ACCEPTED;
        }
        std::future::ready(Ok::<_, std::convert::Infallible>(response))
    });
    let lb = ready_balancer(source, inner).await;
    let mut requests = requests(1_100);
    for request in requests.by_ref().take(100) {
        drop(lb.request(request).await.unwrap());
    }
    let before = allocs();
    let mut accepted = 0;
    for request in requests {
        let response = lb.request(request).await.unwrap();
        accepted += usize::from(response.status() == 202);
    }
    // Exactly one per request: the boxed response future.
    assert_eq!(allocs() - before, 1_000);
    assert_eq!(accepted, 1_000);
}

/// A 64 MiB buffered body, answered 503 once and retried on another
/// instance: the replay shares the buffer, so peak memory during the
/// request grows by under 1 MiB. Paused time.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retried_buffered_body_is_not_copied() {
    const SIZE: usize = 64 << 20;
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1,127.0.0.1:2")
        .unwrap();
    let inner = tower::service_fn(|req: Request<Full<Bytes>>| {
        let status = if req.uri().port_u16() == Some(1) {
            503
        } else {
            200
        };
        let mut response = Response::new(());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        std::future::ready(Ok::<_, std::convert::Infallible>(response))
    });
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .rule(|| tower_ribbon::rule::RoundRobin::with_start(0))
        .retry(
            RetryPolicy::default()
                .retry_on_all_operations(true)
                .backoff(Duration::ZERO, Duration::ZERO)
                .budget(RetryBudgetConfig::unlimited()),
        )
        .build(inner)
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let body = Full::new(Bytes::from(vec![7u8; SIZE]));
    let request = Request::post("http://svc/upload").body(body).unwrap();
    let live = reset_peak();
    let response = lb.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let grown = peak() - live;
    assert!(
        grown < 1 << 20,
        "peak grew by {grown} bytes for a {SIZE}-byte body"
    );
}
