//! The retry loop with scripted inner services and paused time: which
//! attempts are made, on which instances, and what the caller sees.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::{RetryBudgetConfig, RetryNonIdempotent, RetryPolicy};
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::stats::Outcome;
use tower_ribbon::{BoxError, LoadBalancer};

/// What the scripted instance on a port does.
#[derive(Clone, Copy, Debug)]
enum Act {
    Ok,
    Status(u16),
    Refuse,
    Reset,
    Hang,
}

type Log = Arc<Mutex<Vec<(u16, Method)>>>;

/// A balancer over ports 1..=n of 127.0.0.1 whose inner service acts per
/// port as `acts` says and logs every attempt.
fn balancer(
    acts: &[Act],
    policy: RetryPolicy,
) -> (
    LoadBalancer<
        impl tower::Service<
            Request<String>,
            Response = Response<String>,
            Error = BoxError,
            Future = impl Send,
        > + Clone
        + Send,
    >,
    Log,
) {
    let list: Vec<String> = (1..=acts.len()).map(|p| format!("127.0.0.1:{p}")).collect();
    let source = StaticSource::new()
        .with_list("svc", &list.join(","))
        .unwrap();
    let acts: Arc<HashMap<u16, Act>> = Arc::new(
        acts.iter()
            .enumerate()
            .map(|(i, a)| (i as u16 + 1, *a))
            .collect(),
    );
    let log: Log = Arc::default();
    let inner_log = Arc::clone(&log);
    let inner = tower::service_fn(move |req: Request<String>| {
        let port = req.uri().port_u16().unwrap_or(0);
        inner_log.lock().unwrap().push((port, req.method().clone()));
        let act = acts.get(&port).copied().unwrap_or(Act::Ok);
        async move {
            match act {
                Act::Ok => Ok(Response::new(format!("{port}"))),
                Act::Status(code) => {
                    let mut r = Response::new(format!("{port}"));
                    *r.status_mut() = StatusCode::from_u16(code).unwrap();
                    if code == 503 {
                        r.headers_mut()
                            .insert("retry-after", http::HeaderValue::from_static("2"));
                    }
                    Ok(r)
                }
                Act::Refuse => Err(BoxError::from(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                ))),
                Act::Reset => Err(BoxError::from(std::io::Error::from(
                    std::io::ErrorKind::ConnectionReset,
                ))),
                Act::Hang => std::future::pending().await,
            }
        }
    });
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .rule(|| RoundRobin::with_start(0))
        .retry(policy)
        .outlier_detection(OutlierDetection::disabled())
        .build(inner)
        .unwrap();
    (lb, log)
}

fn ports(log: &Log) -> Vec<u16> {
    log.lock().unwrap().iter().map(|(p, _)| *p).collect()
}

fn req(method: Method) -> Request<String> {
    Request::builder()
        .method(method)
        .uri("http://svc/x")
        .body("body".to_owned())
        .unwrap()
}

fn quick() -> RetryPolicy {
    RetryPolicy::default()
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .budget(RetryBudgetConfig::unlimited())
}

#[tokio::test(start_paused = true)]
async fn same_instance_retries_come_before_the_next_instance() {
    let (lb, log) = balancer(&[Act::Refuse; 3], quick().max_same(1).max_next(1));
    assert!(lb.ready_service("svc").await);
    let err = lb.clone().oneshot(req(Method::GET)).await.unwrap_err();
    let seen = ports(&log);
    assert_eq!(seen.len(), 4);
    assert_eq!((seen[0], seen[2]), (seen[1], seen[3]), "{seen:?}");
    assert_ne!(seen[0], seen[2]);
    let attempts = err.attempts();
    assert_eq!(attempts.len(), 4);
    assert!(
        attempts
            .iter()
            .all(|a| a.outcome == Outcome::ConnectFailure)
    );
    assert_eq!(
        attempts[2].instance,
        format!("http://127.0.0.1:{}", seen[2])
    );
    let text = err.to_string();
    assert!(
        text.contains("service `svc`") && text.contains("4 attempts"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_post_is_retried_only_when_it_never_reached_a_server() {
    // Refused: retried, even for POST.
    let (lb, log) = balancer(&[Act::Refuse, Act::Ok], quick());
    assert!(lb.ready_service("svc").await);
    let resp = lb.clone().oneshot(req(Method::POST)).await.unwrap();
    assert_eq!(resp.into_body().into_inner(), "2");
    assert_eq!(ports(&log), [1, 2]);

    // Reset after sending: a GET is retried, a POST is not.
    let (lb, log) = balancer(&[Act::Reset, Act::Ok], quick());
    assert!(lb.ready_service("svc").await);
    assert_eq!(
        lb.clone()
            .oneshot(req(Method::GET))
            .await
            .unwrap()
            .into_body()
            .into_inner(),
        "2"
    );
    assert_eq!(ports(&log), [1, 2]);
    // A new balancer, so the POST's first attempt meets the reset too
    // (retries do not move the rotation of first attempts: the same one
    // would send it to 2).
    let (lb, log) = balancer(&[Act::Reset, Act::Ok], quick());
    assert!(lb.ready_service("svc").await);
    let err = lb.clone().oneshot(req(Method::POST)).await.unwrap_err();
    assert_eq!(err.attempts().len(), 1);
    assert_eq!(err.attempts()[0].outcome, Outcome::OtherError);
    assert_eq!(ports(&log), [1]);

    // A 503 to a POST is returned as it is, unless the request opts in.
    let (lb, log) = balancer(&[Act::Status(503), Act::Ok], quick());
    assert!(lb.ready_service("svc").await);
    let mut opted = req(Method::POST);
    opted.extensions_mut().insert(RetryNonIdempotent);
    assert_eq!(
        lb.clone()
            .oneshot(opted)
            .await
            .unwrap()
            .into_body()
            .into_inner(),
        "2"
    );
    assert_eq!(ports(&log), [1, 2]);
    let (lb, log) = balancer(&[Act::Status(503), Act::Ok], quick());
    assert!(lb.ready_service("svc").await);
    let resp = lb.clone().oneshot(req(Method::POST)).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(ports(&log), [1]);
    assert!(log.lock().unwrap().iter().all(|(_, m)| m == Method::POST));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_within_the_deadline() {
    let (lb, log) = balancer(
        &[Act::Status(503), Act::Ok],
        quick().deadline(Duration::from_secs(1)),
    );
    assert!(lb.ready_service("svc").await);
    let start = tokio::time::Instant::now();
    let resp = lb.clone().oneshot(req(Method::GET)).await.unwrap();
    // Retry-After: 2 s does not fit in a 1 s deadline: the 503 is returned.
    assert_eq!(resp.status(), 503);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(ports(&log), [1]);

    let (lb, log) = balancer(
        &[Act::Status(503), Act::Ok],
        quick().deadline(Duration::from_secs(5)),
    );
    assert!(lb.ready_service("svc").await);
    let start = tokio::time::Instant::now();
    let resp = lb.clone().oneshot(req(Method::GET)).await.unwrap();
    assert_eq!(resp.into_body().into_inner(), "2");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(ports(&log), [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_and_deadline_bound_every_request() {
    let policy = quick()
        .per_try_timeout(Duration::from_millis(300))
        .deadline(Duration::from_millis(500));
    let (lb, log) = balancer(&[Act::Hang, Act::Hang], policy);
    assert!(lb.ready_service("svc").await);
    let start = tokio::time::Instant::now();
    let err = lb.clone().oneshot(req(Method::GET)).await.unwrap_err();
    // 300 ms on 1, then the deadline cuts the retry on 2 at 500 ms (plus backoff).
    assert!(
        start.elapsed() <= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert!(err.is_timeout(), "{err}");
    assert_eq!(ports(&log), [1, 2]);
    assert!(
        err.attempts()
            .iter()
            .all(|a| a.outcome == Outcome::ReadTimeout)
    );

    // A hung POST is not retried.
    let (lb, log) = balancer(
        &[Act::Hang, Act::Ok],
        quick().per_try_timeout(Duration::from_millis(300)),
    );
    assert!(lb.ready_service("svc").await);
    let err = lb.clone().oneshot(req(Method::POST)).await.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(ports(&log), [1]);
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries() {
    // Reserve: 1/s over a 1 s window = 1 retry; ratio 0.1: one per 10 requests.
    let budget = RetryBudgetConfig::default()
        .ttl(Duration::from_secs(1))
        .min_per_sec(1)
        .ratio(0.1);
    let (lb, log) = balancer(
        &[Act::Status(502), Act::Status(502)],
        quick().max_next(1).budget(budget),
    );
    assert!(lb.ready_service("svc").await);
    for _ in 0..30 {
        let resp = lb.clone().oneshot(req(Method::GET)).await.unwrap();
        assert_eq!(resp.status(), 502);
    }
    let attempts = ports(&log).len();
    // 30 requests, at most 1 (reserve) + 30 × 0.1 retries.
    assert!((31..=34).contains(&attempts), "{attempts}");
}

#[tokio::test(start_paused = true)]
async fn retries_spread_over_untried_instances_then_stop() {
    let (lb, log) = balancer(&[Act::Refuse; 3], quick().max_next(5));
    assert!(lb.ready_service("svc").await);
    let err = lb.clone().oneshot(req(Method::GET)).await.unwrap_err();
    let seen = ports(&log);
    assert_eq!(seen.len(), 6);
    // The first three attempts cover all three instances.
    let mut first: Vec<u16> = seen[..3].to_vec();
    first.sort();
    assert_eq!(first, [1, 2, 3]);
    assert!(err.is_inner(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn extreme_policies_neither_overflow_nor_wait_for_ever() {
    let huge = quick()
        .max_same(u32::MAX)
        .max_next(u32::MAX)
        .deadline(Duration::MAX)
        .backoff(Duration::MAX, Duration::MAX);
    assert_eq!(huge.max_attempts(), u32::MAX);
    let (lb, log) = balancer(&[Act::Ok], huge);
    assert!(lb.ready_service("svc").await);
    assert_eq!(
        lb.clone()
            .oneshot(req(Method::GET))
            .await
            .unwrap()
            .into_body()
            .into_inner(),
        "1"
    );
    assert_eq!(ports(&log), [1]);

    // A Retry-After beyond max_retry_after is returned, not waited for.
    let (lb, log) = balancer(
        &[Act::Status(503), Act::Ok],
        quick().max_retry_after(Duration::from_secs(1)),
    );
    assert!(lb.ready_service("svc").await);
    let start = tokio::time::Instant::now();
    assert_eq!(
        lb.clone().oneshot(req(Method::GET)).await.unwrap().status(),
        503
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(ports(&log), [1]);
}

/// Real time: with no backoff, an unlimited budget and a huge retry count,
/// instantly failing attempts still yield to other tasks, the deadline
/// ends the request, and the error lists a bounded number of attempts.
#[tokio::test]
async fn instant_failures_without_backoff_do_not_starve_the_runtime() {
    let policy = RetryPolicy::default()
        .max_next(u32::MAX)
        .backoff(Duration::ZERO, Duration::ZERO)
        .budget(RetryBudgetConfig::unlimited())
        .deadline(Duration::from_millis(200));
    let (lb, _log) = balancer(&[Act::Refuse, Act::Refuse], policy);
    assert!(lb.ready_service("svc").await);
    let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticker = {
        let ticks = Arc::clone(&ticks);
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let start = std::time::Instant::now();
    let err = lb.clone().oneshot(req(Method::GET)).await.unwrap_err();
    let took = start.elapsed();
    ticker.abort();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) > 100);
    assert!(err.attempts().len() <= 65, "{}", err.attempts().len());
}

#[tokio::test]
async fn bad_policies_are_refused_at_build_naming_the_setting() {
    let cases = [
        (
            RetryPolicy::default().backoff(Duration::from_millis(20), Duration::from_millis(10)),
            "RetryPolicy::backoff",
        ),
        (
            RetryPolicy::default().per_try_timeout(Duration::ZERO),
            "RetryPolicy::per_try_timeout",
        ),
        (
            RetryPolicy::default().deadline(Duration::ZERO),
            "RetryPolicy::deadline",
        ),
        (
            RetryPolicy::default().retryable_statuses([503, 1000]),
            "RetryPolicy::retryable_statuses",
        ),
    ];
    for (policy, key) in cases {
        let err = LoadBalancer::builder()
            .source(tower_ribbon::discovery::StaticSource::new())
            .retry(policy)
            .layer()
            .unwrap_err();
        assert_eq!(err.key(), Some(key), "{err}");
        assert!(err.to_string().contains(key), "{err}");
    }
}

/// A method the caller made up (a gateway forwards its clients' methods)
/// is quoted cut in the "not retried" reason, as other input in errors:
/// a 4 KiB method was in the message twice (8 KiB).
#[tokio::test(start_paused = true)]
async fn a_made_up_method_is_cut_in_the_error() {
    let (lb, log) = balancer(&[Act::Reset, Act::Ok], quick());
    assert!(lb.ready_service("svc").await);
    let made_up = format!("MADE-UP-{}", "X".repeat(4096));
    let method = Method::from_bytes(made_up.as_bytes()).unwrap();
    let err = lb.clone().oneshot(req(method)).await.unwrap_err();
    assert_eq!(err.attempts().len(), 1);
    assert_eq!(ports(&log), [1]);
    let text = err.to_string();
    let cut = format!("{}…", &made_up[..128]);
    assert!(text.contains(&format!("{cut} not retried")), "{text}");
    assert!(!text.contains(&made_up[..129]), "{text}");
    assert!(text.len() < 1024, "{} bytes", text.len());
}
