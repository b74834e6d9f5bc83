//! Stress of the on-demand claim and re-route (helper 216; it found no
//! defect, kept as a guard): one name hammered by
//! many tasks while the sweeper runs every 1 ms (idle 1 ms and 0.5 ms),
//! and a `max_services(1)` ping-pong between two real names plus made-up
//! ones. Checks: no request for a listed name fails with unknown service
//! when the cap is not involved; after the storm every entry leaves (no
//! claimed entry stuck), and the cap still admits a name (count not
//! drifted). One second per case (helper 216 ran three: 86 778 to 115 975
//! requests each, 0 unknown-service errors, no entry left).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::{BoxError, LoadBalancer};

fn lb(
    idle: Duration,
    max: usize,
) -> LoadBalancer<
    impl tower_ribbon::InnerService<
        String,
        Output = Response<tower_ribbon::service::TrackedBody<String>>,
    >,
> {
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1")
        .unwrap()
        .with_list("other", "127.0.0.1:2")
        .unwrap();
    let inner = tower::service_fn(|_req: Request<String>| async move {
        tokio::task::yield_now().await;
        Ok::<_, BoxError>(Response::new(String::new()))
    });
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_millis(5);
    refresh.jitter = 0.0;
    LoadBalancer::builder()
        .source(source)
        .discover_on_demand(true)
        .on_demand_idle(idle)
        .max_services(max)
        .refresh(refresh)
        .retry(RetryPolicy::none())
        .build(inner)
        .unwrap()
}

async fn storm(idle: Duration) -> (usize, usize, Vec<String>) {
    let lb = lb(idle, 1024);
    let ok = Arc::new(AtomicUsize::new(0));
    let unknown = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (lb, ok, unknown) = (lb.clone(), ok.clone(), unknown.clone());
        tasks.push(tokio::spawn(async move {
            let end = tokio::time::Instant::now() + Duration::from_millis(1000);
            let mut i = 0u64;
            while tokio::time::Instant::now() < end {
                i += 1;
                let req = Request::get("http://svc/").body(String::new()).unwrap();
                match lb.request(req).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        let s = format!("{e:#}");
                        if s.contains("unknown") {
                            unknown.fetch_add(1, Ordering::Relaxed);
                        }
                        0
                    }
                };
                // Gaps so the service goes idle between bursts.
                if (i + t) % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    (
        ok.load(Ordering::Relaxed),
        unknown.load(Ordering::Relaxed),
        lb.services(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_hammered_while_the_sweeper_runs_every_millisecond() {
    for idle in [Duration::from_millis(1), Duration::from_micros(500)] {
        let (ok, unknown, left) = storm(idle).await;
        eprintln!(
            "idle {idle:?}: ok {ok}, unknown-service {unknown}, left after 100 ms quiet {left:?}"
        );
        assert_eq!((unknown, left), (0, Vec::<String>::new()), "idle {idle:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_services_one_ping_pong_leaves_no_stuck_claim_nor_drift() {
    let lb = lb(Duration::from_millis(1), 1);
    let counts: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for t in 0..12usize {
        let (lb, counts) = (lb.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            let end = tokio::time::Instant::now() + Duration::from_millis(1000);
            let mut i = 0usize;
            while tokio::time::Instant::now() < end {
                i += 1;
                let host = match (t + i) % 5 {
                    0 | 1 => "svc".to_owned(),
                    2 | 3 => "other".to_owned(),
                    _ => format!("made-up-{}", i % 97),
                };
                let req = Request::get(format!("http://{host}/"))
                    .body(String::new())
                    .unwrap();
                let k = match lb.request(req).await {
                    Ok(_) => 0,
                    Err(e) if format!("{e:#}").contains("unknown") => 1,
                    Err(_) => 2,
                };
                counts[k].fetch_add(1, Ordering::Relaxed);
                if i % 3 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let left = lb.services();
    eprintln!(
        "ok {}, unknown {}, other errors {}; left {left:?}",
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        counts[2].load(Ordering::Relaxed)
    );
    assert!(left.is_empty(), "entries left after 100 ms quiet: {left:?}");
    // The cap admits one name, then (after idle) the other.
    for host in ["svc", "other", "svc"] {
        let req = Request::get(format!("http://{host}/"))
            .body(String::new())
            .unwrap();
        lb.request(req)
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:#}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
