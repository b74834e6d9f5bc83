//! The per-try timer on a multi-thread runtime, where a finished attempt
//! hands its timer, still filed with tokio, to the next attempt on its
//! thread (`service::try_timer`): a real loopback server answers `/fast`
//! at once and never answers `/hang`. After thousands of fast requests
//! have passed timers around, every hung request is still cut off at the
//! read timeout, no sooner, and named as such; fast requests after them
//! still succeed. Real time (tokio pauses time only on a current-thread
//! runtime, which pools nothing), so the bounds are one-sided: a timer
//! never fires early; the outer guard only turns a lost timer into a
//! failure instead of a hang.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::error::TimeoutKind;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::service::HttpClient;

const READ_TIMEOUT: Duration = Duration::from_millis(300);

/// Answers `/fast` with 200 at once; never answers `/hang`.
async fn server() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    if req.uri().path() == "/hang" {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

type Lb = LoadBalancer<HttpClient<Full<Bytes>>>;

async fn get(lb: &Lb, path: &str) -> Result<http::StatusCode, tower_ribbon::Error> {
    let request = Request::get(format!("http://svc{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    lb.clone().oneshot(request).await.map(|r| r.status())
}

/// `n` fast requests, `concurrency` at a time, each 200.
async fn fast_round(lb: &Lb, n: usize, concurrency: usize) {
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let lb = lb.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / concurrency {
                assert_eq!(get(&lb, "/fast").await.expect("fast"), 200);
            }
        }));
    }
    for task in tasks {
        task.await.expect("fast task");
    }
}

/// `n` hung requests at once: each fails with the per-try timeout, not
/// before it.
async fn hung_round(lb: &Lb, n: usize) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let lb = lb.clone();
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let err = get(&lb, "/hang").await.expect_err("a hung request");
            (err, start.elapsed())
        }));
    }
    for task in tasks {
        let (err, waited) = task.await.expect("hung task");
        assert_eq!(
            err.timeout(),
            Some(TimeoutKind::PerTry(READ_TIMEOUT)),
            "{err}"
        );
        assert!(err.is_timeout(), "{err}");
        assert!(waited >= READ_TIMEOUT, "cut off after {waited:?}");
        assert!(
            err.to_string()
                .contains("the per-try (read) timeout (300ms) fired"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_on_timers_still_cut_hung_requests_at_the_read_timeout() {
    let addr = server().await;
    let source = StaticSource::new()
        .with_list("svc", &addr.to_string())
        .expect("list");
    let lb: Lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .read_timeout(Some(READ_TIMEOUT))
        .retry(RetryPolicy::none())
        .build_http()
        .expect("build");
    let guard = Duration::from_secs(30);
    tokio::time::timeout(guard, async {
        for _ in 0..3 {
            fast_round(&lb, 2_000, 16).await;
            hung_round(&lb, 8).await;
        }
        // Hung and fast at once: the fast ones' timers are handed on
        // while the hung ones wait.
        let hung = tokio::spawn({
            let lb = lb.clone();
            async move { hung_round(&lb, 8).await }
        });
        fast_round(&lb, 2_000, 16).await;
        hung.await.expect("hung round");
    })
    .await
    .expect("a hung request outlived every timer");
}
