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
//! server keeps its streak. Here half-open stats are kept for
//! `breaker_max` after the blackout: long-gone instances neither fill the
//! map under churn nor hand their streak to a host and port reused much
//! later (helper 159). The first test runs in real time with a real
//! backend and a closed port; the others on paused time without requests.
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use support::backend::{Backend, closed_port};
use support::{HttpClient, http_client};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::stats::{BreakerState, Outcome, StatsConfig};
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

const CHURNED: usize = 4_096; // MAX_DEPARTED

fn inst(id: &str, port: u16) -> Instance {
    Instance::new("svc", "127.0.0.1", port).unwrap().with_id(id)
}

fn trip(lb: &LoadBalancer<HttpClient>, id: &str) {
    let snap = lb.snapshot("svc").unwrap();
    let e = snap
        .endpoints()
        .iter()
        .find(|e| e.instance().id() == id)
        .unwrap_or_else(|| panic!("{id} listed"));
    for _ in 0..3 {
        e.stats().start().finish(Outcome::ConnectFailure);
    }
    assert!(matches!(
        e.stats().breaker_state(),
        BreakerState::Open { .. }
    ));
}

fn state_of(lb: &LoadBalancer<HttpClient>, id: &str) -> Option<BreakerState> {
    let snap = lb.snapshot("svc").unwrap();
    snap.endpoints()
        .iter()
        .find(|e| e.instance().id() == id)
        .map(|e| e.stats().breaker_state())
}

/// Round robin over `list` (refreshed every 50 ms, no ejection), for the
/// paused-time tests: no request is sent.
async fn paused_balancer(list: Vec<Instance>) -> (StaticSource, LoadBalancer<HttpClient>) {
    let source = StaticSource::new().with_instances("svc", list);
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_millis(50);
    refresh.jitter = 0.0;
    let lb: LoadBalancer<HttpClient> = LoadBalancer::builder()
        .source(source.clone())
        .service("svc")
        .rule(tower_ribbon::rule::RoundRobin::new)
        .refresh(refresh)
        .outlier_detection(OutlierDetection::disabled())
        .build(http_client())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    (source, lb)
}

/// `churned`: how many dead instances tripped and left over the service's
/// past (each long half-open). Returns the flapping instance's breaker once
/// listed again 1 s after it left (its 10 s blackout not over).
async fn flapper_after(churned: usize) -> BreakerState {
    let good = inst("good", 20_000);
    let (source, lb) = paused_balancer(vec![good.clone()]).await;
    let settle = || tokio::time::sleep(Duration::from_millis(200));

    // The past: dead instances, in batches of 512, trip and leave (days of
    // rolling restarts, pods that died before they were deregistered).
    let mut next = 0;
    while next < churned {
        let batch: Vec<Instance> = (next..(next + 512).min(churned))
            .map(|i| inst(&format!("dead-{i}"), 30_000 + (i % 20_000) as u16))
            .collect();
        let mut list = vec![good.clone()];
        list.extend(batch.iter().cloned());
        source.set_instances("svc", list);
        settle().await;
        for i in &batch {
            trip(&lb, i.id());
        }
        source.set_instances("svc", vec![good.clone()]);
        settle().await;
        next += batch.len();
    }
    // Long after: every blackout of the past is over (breaker_max 30 s).
    tokio::time::sleep(Duration::from_secs(3600)).await;

    // Now: a sick instance trips, its registry status flaps DOWN then UP.
    let flapper = inst("flapper", 40_000);
    source.set_instances("svc", vec![good.clone(), flapper.clone()]);
    settle().await;
    trip(&lb, "flapper");
    let t0 = Instant::now();
    source.set_instances("svc", vec![good.clone()]); // DOWN
    settle().await;
    source.set_instances("svc", vec![good.clone(), flapper.clone()]); // UP
    settle().await;
    assert!(t0.elapsed() < Duration::from_secs(2));
    state_of(&lb, "flapper").expect("flapper listed again")
}

/// 4 096 dead instances that tripped and left over the service's past do
/// not fill the departed map: a sick instance whose status flaps an hour
/// later is still marked down when listed again. With half-open stats kept
/// until a response (my first version), the map filled and its overflow
/// purge dropped the flapper's open breaker: it came back `Closed`
/// (helper 159).
#[tokio::test(start_paused = true)]
async fn a_flapping_sick_instance_stays_marked_down_after_churn() {
    let control = flapper_after(0).await;
    println!("no churn: flapper relisted {control:?}");
    assert!(
        matches!(control, BreakerState::Open { .. }),
        "control: kept marked down, got {control:?}"
    );
    println!(
        "size_of EndpointStats {} B (+ InstanceKey strings, HashMap slot) per departed entry",
        std::mem::size_of::<tower_ribbon::stats::EndpointStats>()
    );
    let churned = flapper_after(CHURNED).await;
    println!("after {CHURNED} dead instances left over the past: flapper relisted {churned:?}");
    assert!(
        matches!(churned, BreakerState::Open { .. }),
        "after {CHURNED} long-gone dead instances, the sick flapper came back {churned:?} (fresh stats), \
         expected Open as without churn: departed half-open entries never expire and the \
         MAX_DEPARTED overflow purge dropped the flapper's open breaker"
    );
}

/// `MAX_DEPARTED`'s docs: departed stats are kept for their health alone
/// "each for at most the breaker's or the ejection's longest time"
/// (`breaker_max`, 30 s here). A dead instance gone for 2 h (past Ribbon's
/// 30-minute stats cache too; a Kubernetes pod IP and port reused) comes
/// back with fresh stats, not half-open (helper 159, against my first
/// version of the fix, which kept half-open stats until a response).
#[tokio::test(start_paused = true)]
async fn departed_stats_are_not_kept_past_the_breakers_longest_time() {
    let good = inst("good", 20_000);
    let dead = inst("dead", 20_001);
    let (source, lb) = paused_balancer(vec![good.clone(), dead.clone()]).await;
    trip(&lb, "dead");
    source.set_instances("svc", vec![good.clone()]);
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    source.set_instances("svc", vec![good.clone(), dead.clone()]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = state_of(&lb, "dead").unwrap();
    println!("relisted after 2 h: {s:?}");
    assert_eq!(
        s,
        BreakerState::Closed,
        "stats of an instance departed 2 h ago (breaker_max 30 s) still held: {s:?}"
    );
}

/// A mass outage past `MAX_DEPARTED`: an instance tripped 5 ms before
/// 4 196 others, then those, then a flapper 5 ms after them, all leave the
/// list together; one other list change follows, and the first and the
/// flapper are listed again 0.4 s after they tripped. The map keeps the
/// 4 096 marks that end latest: the flapper comes back open, the first
/// (its mark ending soonest) with fresh stats. Before, the overflow purge
/// dropped every mark without a request in flight: past 4 096 tripped
/// departures the flapper came back `Closed` (helper 171: 4 001 came back
/// open, 4 201 closed).
#[tokio::test(start_paused = true)]
async fn a_mass_outage_past_the_bound_keeps_the_marks_ending_latest() {
    let good = inst("good", 20_000);
    let (first, flapper) = (inst("first", 20_001), inst("flapper", 20_002));
    let dead: Vec<Instance> = (0..CHURNED + 100)
        .map(|i| inst(&format!("dead-{i}"), 30_000 + i as u16))
        .collect();
    let mut all = vec![good.clone(), first.clone(), flapper.clone()];
    all.extend(dead.iter().cloned());
    let (source, lb) = paused_balancer(all).await;
    let snap = lb.snapshot("svc").unwrap();
    let trip_where = |keep: &dyn Fn(&str) -> bool| {
        for e in snap.endpoints().iter().filter(|e| keep(e.instance().id())) {
            for _ in 0..3 {
                e.stats().start().finish(Outcome::ConnectFailure);
            }
        }
    };
    trip_where(&|id| id == "first");
    tokio::time::advance(Duration::from_millis(5)).await;
    trip_where(&|id| id.starts_with("dead-"));
    tokio::time::advance(Duration::from_millis(5)).await;
    trip_where(&|id| id == "flapper");
    let settle = || tokio::time::sleep(Duration::from_millis(200));
    source.set_instances("svc", vec![good.clone()]);
    settle().await;
    source.set_instances("svc", vec![good.clone(), inst("new", 20_003)]);
    settle().await;
    let back = vec![good.clone(), inst("new", 20_003), first, flapper];
    source.set_instances("svc", back);
    settle().await;
    let (first, flapper) = (state_of(&lb, "first"), state_of(&lb, "flapper"));
    println!("listed again: first {first:?}, flapper {flapper:?}");
    assert!(
        matches!(flapper, Some(BreakerState::Open { .. })),
        "{flapper:?}"
    );
    assert_eq!(first, Some(BreakerState::Closed));
}
