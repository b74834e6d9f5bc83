//! The per-try timeout (or the deadline) firing while the inner service is
//! not ready names which one fired. Before (helper 233): the error was
//! `is_timeout()` but `timeout()` was `None`, its text was tokio's
//! "deadline has elapsed" (no deadline was set), and the note "the inner
//! service was not ready in time" never appeared: the readiness wait failed
//! with tokio's `Elapsed`, while `timeout_kind` only recognises the
//! attempt timer's `Fired` (regression of 2c10521).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower::Service;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::error::TimeoutKind;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::{BoxError, LoadBalancer};

/// Never ready (a full concurrency limit, a saturated pool).
#[derive(Clone)]
struct NeverReady;

impl Service<Request<String>> for NeverReady {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Pending
    }

    fn call(&mut self, _req: Request<String>) -> Self::Future {
        unreachable!("never ready")
    }
}

fn lb(retry: RetryPolicy, read_timeout: Option<Duration>) -> LoadBalancer<NeverReady> {
    LoadBalancer::builder()
        .source(StaticSource::new().with_list("svc", "127.0.0.1:1").unwrap())
        .service("svc")
        .retry(retry)
        .read_timeout(read_timeout)
        .build(NeverReady)
        .unwrap()
}

fn get() -> Request<String> {
    Request::get("http://svc/x").body(String::new()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_readiness_wait_cut_by_the_per_try_timeout_names_it() {
    let lb = lb(RetryPolicy::default(), Some(Duration::from_secs(1)));
    assert!(lb.ready_service("svc").await);
    let started = tokio::time::Instant::now();
    let err = lb.request(get()).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    eprintln!("timeout() = {:?}; text: {err}", err.timeout());
    // Observed: timeout() = None; text: "service `svc`, instance none: deadline has elapsed"
    assert!(err.is_timeout());
    assert_eq!(
        err.timeout(),
        Some(TimeoutKind::PerTry(Duration::from_secs(1))),
        "{err}"
    );
    assert!(err.to_string().contains("not ready in time"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_readiness_wait_cut_by_the_deadline_names_it() {
    let lb = lb(
        RetryPolicy::default().deadline(Duration::from_millis(300)),
        None,
    );
    assert!(lb.ready_service("svc").await);
    let err = lb.request(get()).await.unwrap_err();
    eprintln!("timeout() = {:?}; text: {err}", err.timeout());
    assert_eq!(
        err.timeout(),
        Some(TimeoutKind::Deadline(Duration::from_millis(300))),
        "{err}"
    );
}
