//! A dead instance (connection refused) whose breaker tripped, removed from
//! the list and listed again after its blackout ended, keeps its breaker:
//! one half-open probe, which fails and re-trips it with a doubled
//! blackout, as when it stays listed. Before, the stats of a departed
//! instance were kept only while its breaker was open (or it was ejected
//! or had requests in flight); half-open after the blackout, they were
//! dropped at the next refresh, and the relisted instance came back with
//! fresh stats: three connect failures (3 attempts from 20 requests, the
//! streak back to 3 and the base blackout) where one probe was due, and
//! as many again at every relisting (helper 158). Ribbon keeps a server's
//! `ServerStats` in a cache for 30 minutes by default, so its relisted
//! server keeps its streak. Real time, a real backend and a closed port.
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use support::backend::{Backend, closed_port};
use support::{HttpClient, http_client};
use tower::ServiceExt;
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::stats::StatsConfig;
use tower_ribbon::{Instance, LoadBalancer};

async fn send(lb: &LoadBalancer<HttpClient>, n: usize) {
    for _ in 0..n {
        let req = Request::get("http://svc/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let r = lb
            .clone()
            .oneshot(req)
            .await
            .expect("retried onto the live one");
        assert_eq!(r.status(), 200);
        let _ = r.into_body().collect().await;
    }
}

/// Attempts the dead instance gets from 20 requests after its first blackout
/// ended; `relist`: removed and listed again meanwhile.
async fn dead_attempts(relist: bool) -> (u64, u32) {
    let good = Backend::start("good").await.unwrap();
    let dead = closed_port::ClosedPort::new().unwrap();
    let list = |with_dead: bool| {
        let mut v = vec![Instance::new("svc", "127.0.0.1", good.port()).unwrap()];
        if with_dead {
            v.push(Instance::new("svc", "127.0.0.1", dead.port()).unwrap());
        }
        v
    };
    let source = StaticSource::new().with_instances("svc", list(true));
    let mut stats = StatsConfig::default();
    stats.breaker_base = Duration::from_millis(300);
    stats.breaker_max = Duration::from_secs(30);
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_millis(20);
    refresh.jitter = 0.0;
    let lb: LoadBalancer<HttpClient> = LoadBalancer::builder()
        .source(source.clone())
        .service("svc")
        .rule(tower_ribbon::rule::RoundRobin::new)
        .stats(stats)
        .refresh(refresh)
        .outlier_detection(OutlierDetection::disabled())
        .build(http_client())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let find = |lb: &LoadBalancer<HttpClient>| {
        lb.snapshot("svc")
            .unwrap()
            .endpoints()
            .iter()
            .find(|e| e.instance().port() == dead.port())
            .cloned()
    };
    // Trip it: 3 connect failures.
    send(&lb, 12).await;
    let e = find(&lb).unwrap();
    assert_eq!(e.stats().requests(), 3, "tripped after 3");
    assert!(e.stats().is_tripped_at(tokio::time::Instant::now()));
    if relist {
        source.set_instances("svc", list(false));
        tokio::time::sleep(Duration::from_millis(500)).await; // blackout (300 ms) over, refreshes ran
        source.set_instances("svc", list(true));
        tokio::time::sleep(Duration::from_millis(100)).await;
    } else {
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let e = find(&lb).unwrap();
    let before = e.stats().requests();
    send(&lb, 20).await;
    let e = find(&lb).unwrap();
    (
        e.stats().requests() - before,
        e.stats().successive_connection_failures(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relisted_dead_instance_keeps_its_half_open_breaker() {
    let (kept, kept_streak) = dead_attempts(false).await;
    let (relisted, relisted_streak) = dead_attempts(true).await;
    println!(
        "kept listed: {kept} attempts (streak {kept_streak}); relisted: {relisted} attempts (streak {relisted_streak})"
    );
    assert_eq!(kept, 1, "control: one half-open probe");
    assert_eq!(
        relisted, kept,
        "relisted dead instance got {relisted} attempts, kept listed {kept}; streak {relisted_streak} vs {kept_streak}"
    );
}
