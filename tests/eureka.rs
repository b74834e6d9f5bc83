//! Against the real Spring Cloud Netflix Eureka server (tests/eureka-server).
//!
//! Three real backends on 127.0.0.1 register as USER-SERVICE through
//! Eureka's REST API; the balancer discovers them through `EurekaSource`
//! and requests go to `http://user-service/whoami`.

mod support;

use std::time::Duration;

use support::backend::Backend;
use support::backend::closed_port::ClosedPort;
use support::eureka::EurekaFixture;
use support::{HttpClient, counts, http_client, tally};
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::RefreshConfig;
use tower_ribbon::discovery::eureka::EurekaSource;
use tower_ribbon::rule::RoundRobin;

const INTERVAL: Duration = Duration::from_millis(1000);
const URI: &str = "http://user-service/whoami";

fn balancer(eureka: &EurekaFixture) -> LoadBalancer<HttpClient> {
    let source = EurekaSource::builder()
        .server_url(eureka.url())
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("source");
    LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .rule(|| RoundRobin::with_start(0))
        .refresh({
            let mut refresh = RefreshConfig::default();
            refresh.interval = INTERVAL;
            refresh.jitter = 0.0;
            refresh
        })
        .build(http_client())
        .expect("balancer")
}

async fn three_backends(eureka: &EurekaFixture) -> (Vec<Backend>, Vec<String>) {
    let mut backends = Vec::new();
    let mut ids = Vec::new();
    for name in ["b1", "b2", "b3"] {
        let backend = Backend::start(name).await.expect("backend");
        ids.push(eureka.register("user-service", backend.port()).await);
        backends.push(backend);
    }
    (backends, ids)
}

/// Waits (bounded) until the service's list has exactly `n` instances.
async fn wait_for_instances(lb: &LoadBalancer<HttpClient>, n: usize) {
    for _ in 0..100 {
        if lb.snapshot("user-service").is_some_and(|s| s.len() == n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "list never reached {n} instances: {:?}",
        lb.snapshot("user-service")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_follows_status_changes_and_deletes() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let (backends, ids) = three_backends(&eureka).await;
    let lb = balancer(&eureka);
    assert!(lb.ready_service("user-service").await);
    assert_eq!(lb.snapshot("user-service").map(|s| s.len()), Some(3));

    // 300 GETs: exactly 100 each.
    let got = tally(&lb, URI, 300).await;
    assert_eq!(got, counts(&[("b1", 100), ("b2", 100), ("b3", 100)]));
    for b in &backends {
        assert_eq!(b.hits(), 100, "{}", b.name());
    }

    // b1 OUT_OF_SERVICE: after three refresh intervals it gets none of 100.
    eureka
        .set_status("user-service", &ids[0], "OUT_OF_SERVICE")
        .await;
    tokio::time::sleep(INTERVAL * 3).await;
    let got = tally(&lb, URI, 100).await;
    assert_eq!(got, counts(&[("b2", 50), ("b3", 50)]));
    assert_eq!(backends[0].hits(), 100);

    // b2 deleted: gone from the list and from traffic.
    eureka.delete("user-service", &ids[1]).await;
    tokio::time::sleep(INTERVAL * 3).await;
    let snapshot = lb.snapshot("user-service").expect("known service");
    let ports: Vec<u16> = snapshot
        .endpoints()
        .iter()
        .map(|e| e.instance().port())
        .collect();
    assert_eq!(ports, [backends[2].port()]);
    assert_eq!(tally(&lb, URI, 30).await, counts(&[("b3", 30)]));

    // Back UP: b1 returns, and b3 keeps its stats (same identity).
    eureka.set_status("user-service", &ids[0], "UP").await;
    wait_for_instances(&lb, 2).await;
    let snapshot = lb.snapshot("user-service").expect("known service");
    let b3 = snapshot
        .endpoints()
        .iter()
        .find(|e| e.instance().port() == backends[2].port())
        .expect("b3 listed");
    assert_eq!(b3.stats().requests(), 100 + 50 + 30);
    let status = lb.refresh_status("user-service").expect("status");
    assert_eq!(status.failures, 0);
    assert!(status.successes >= 7, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_through_a_eureka_outage_and_follows_after_restart() {
    let Some(mut eureka) = EurekaFixture::start() else {
        return;
    };
    let (backends, _ids) = three_backends(&eureka).await;
    let lb = balancer(&eureka);
    assert!(lb.ready_service("user-service").await);
    assert_eq!(
        tally(&lb, URI, 30).await,
        counts(&[("b1", 10), ("b2", 10), ("b3", 10)])
    );

    // Registry down: refreshes fail, the last list keeps serving.
    eureka.stop();
    tokio::time::sleep(INTERVAL * 3).await;
    let status = lb.refresh_status("user-service").expect("status");
    assert!(status.consecutive_failures >= 2, "{status:?}");
    assert!(status.last_error.is_some());
    assert!(status.since_last_success.expect("had a success") >= INTERVAL * 2);
    assert_eq!(
        tally(&lb, URI, 90).await,
        counts(&[("b1", 30), ("b2", 30), ("b3", 30)])
    );

    // Registry back (empty, as after a real restart); b1 and b3 register
    // again, b2 does not: the change shows.
    eureka.restart();
    eureka.register("user-service", backends[0].port()).await;
    eureka.register("user-service", backends[2].port()).await;
    wait_for_instances(&lb, 2).await;
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(
        tally(&lb, URI, 100).await,
        counts(&[("b1", 50), ("b3", 50)])
    );
    let status = lb.refresh_status("user-service").expect("status");
    assert_eq!(status.consecutive_failures, 0, "{status:?}");
    assert!(status.last_error.is_none());
    assert_eq!(backends[1].hits(), 40);
}

/// Waits up to 5 s for `n` refreshes of `user-service` to run from now
/// (successful or not); whether they did.
async fn more_fetches(lb: &LoadBalancer<HttpClient>, n: u64) -> bool {
    let fetches = || {
        let s = lb.refresh_status("user-service").expect("status");
        s.successes + s.failures
    };
    let before = fetches();
    for _ in 0..100 {
        if fetches() >= before + n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A Eureka server that does not know the app (restarted with an empty
/// registry and not synced yet, or not yet replicated to) answers 404 for
/// `GET /apps/{APP}` (for `/vips/{vip}` it answers 200 with no
/// application). Listed first, its 404 used to end
/// the fetch: the service got an empty list (0 instances, every request
/// failing) although the next server listed the app. Java's
/// `RetryableEurekaHttpClient` moves on from such a 404; so does the
/// crate now, and a 404 is an empty list only when no server lists the app.
/// The VIP query's 200 with no application moves on too (it ended the
/// fetch with an empty list until helper 182's finding, stop 56).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_know_the_app_does_not_hide_the_next_one() {
    let Some(empty) = EurekaFixture::start() else {
        return;
    };
    let Some(listing) = EurekaFixture::start() else {
        return;
    };
    let backend = Backend::start("b1").await.expect("backend");
    let id = listing.register("user-service", backend.port()).await;
    let urls = format!("{},{}", empty.url(), listing.url());
    let source = EurekaSource::builder()
        .server_urls(&urls)
        .request_timeout(Duration::from_secs(5))
        .build()
        .expect("source");
    let app = source
        .fetch_application("user-service")
        .await
        .expect("fetch");
    let ids: Vec<&str> = app.instances.iter().map(|i| i.instance.id()).collect();
    assert_eq!(ids, [id.as_str()], "the second server's instance");
    // A VIP query: the first server answers 200 with no application (how
    // it answers a VIP it does not know), which used to end the fetch with
    // an empty list; it moves on as a 404 does.
    let registry = tower_ribbon::discovery::eureka::EurekaRegistry::builder()
        .server_urls(&urls)
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(5))
        .build()
        .expect("registry");
    let vip =
        tower_ribbon::discovery::InstanceSource::fetch(&registry.vip_source(), "user-service")
            .await
            .expect("vip fetch");
    let ids: Vec<&str> = vip.iter().map(|i| i.id()).collect();
    assert_eq!(ids, [id.as_str()], "the second server's instance, by VIP");
    // Requests reach the instance only the second server lists.
    let lb = LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .build(http_client())
        .expect("balancer");
    wait_for_instances(&lb, 1).await;
    assert_eq!(tally(&lb, URI, 3).await, counts(&[("b1", 3)]));
    // No server lists a deleted app: then the 404 is an empty list.
    listing.delete("user-service", &id).await;
    let source = EurekaSource::builder()
        .server_urls(&urls)
        .build()
        .expect("source");
    let app = source
        .fetch_application("user-service")
        .await
        .expect("404 everywhere");
    assert_eq!(app.instances.len(), 0);
}

/// One server's 404 beside a server that could not be asked is a failed
/// fetch, not an app without instances: a peer restarted empty answers 404
/// for every app until the instances renew, and the other may list them.
/// Before, a 404 won over the other server's failure: the service got an
/// empty list and every request failed (helper 182, against the real
/// server: 47 requests failed in a row with the second server refusing
/// connections; in a rolling restart of a two-peer cluster, 187). Java's
/// `RetryableEurekaHttpClient` never takes a 404 to an application query as
/// an answer. A 404 from every server is still an empty list (above).
/// The absence is taken once it has lasted `absence_hold` (default 90 s),
/// so a removed app is not kept for as long as the other server stays
/// down (helper 183: kept for good, 10 of 10 requests reaching the
/// deregistered instance, on the first version of the fix).
///
/// Peers' reports: [eureka#1490](https://github.com/Netflix/eureka/issues/1490)
/// (clients get only part of the instances while a cluster peer restarts),
/// [spring-cloud-netflix#3385](https://github.com/spring-cloud/spring-cloud-netflix/issues/3385)
/// (every instance briefly gone from Eureka: Ribbon fails on an empty
/// pool), [spring-cloud-netflix#1685](https://github.com/spring-cloud/spring-cloud-netflix/issues/1685)
/// (whether a client's cache is wiped when the registry is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_beside_a_server_that_failed_keeps_the_last_list_for_the_hold() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let refused = ClosedPort::new().expect("closed port");
    let backend = Backend::start("b1").await.expect("backend");
    let id = eureka.register("user-service", backend.port()).await;
    let refused_url = format!("http://127.0.0.1:{}/eureka", refused.port());
    let urls = format!("{},{refused_url}", eureka.url());
    let source = |hold: Duration| {
        EurekaSource::builder()
            .server_urls(&urls)
            .request_timeout(Duration::from_secs(2))
            .absence_hold(hold)
            .build()
            .expect("source")
    };
    let balancer = |hold: Duration| {
        LoadBalancer::builder()
            .source(source(hold))
            .service("user-service")
            .refresh({
                let mut refresh = RefreshConfig::default();
                refresh.interval = Duration::from_millis(200);
                refresh.jitter = 0.0;
                refresh
            })
            .build(http_client())
            .expect("balancer")
    };
    const HOLD: Duration = Duration::from_secs(2);
    let (lb, short) = (balancer(Duration::from_secs(90)), balancer(HOLD));
    wait_for_instances(&lb, 1).await;
    wait_for_instances(&short, 1).await;
    assert_eq!(tally(&lb, URI, 3).await, counts(&[("b1", 3)]));

    // A source that has fetched the app, as the balancers have.
    let probe = source(Duration::from_secs(90));
    let app = probe
        .fetch_application("user-service")
        .await
        .expect("fetch");
    assert_eq!(app.instances.len(), 1);

    // The first server forgets the app (as after a restart); the second
    // refuses connections.
    eureka.delete("user-service", &id).await;
    let deleted = std::time::Instant::now();
    match probe.fetch_application("user-service").await {
        Err(tower_ribbon::DiscoveryError::AbsenceUnconfirmed {
            server,
            path,
            failed,
            hold,
        }) => {
            assert_eq!(server, eureka.url());
            assert_eq!(path, "apps/USER-SERVICE");
            assert_eq!(hold, Duration::from_secs(90));
            assert!(failed.to_string().contains(&refused_url), "{failed}");
        }
        other => panic!("expected an unconfirmed absence, got {other:?}"),
    }
    assert!(more_fetches(&lb, 3).await, "no refresh after the delete");
    assert_eq!(lb.snapshot("user-service").map(|s| s.len()), Some(1));
    assert_eq!(tally(&lb, URI, 3).await, counts(&[("b1", 3)]));
    let status = lb.refresh_status("user-service").expect("status");
    assert!(status.consecutive_failures >= 3, "{status:?}");
    let text = status
        .last_error
        .as_deref()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        text.contains("lists nothing at `apps/USER-SERVICE`") && text.contains(&refused_url),
        "{text}"
    );

    // A source that never fetched the app has no list to keep: the answer
    // is taken at once.
    let fresh = source(Duration::from_secs(90));
    let app = fresh
        .fetch_application("user-service")
        .await
        .expect("fresh");
    assert_eq!(app.instances.len(), 0);

    // Past its hold, the short balancer takes the answer: no instance.
    while short.snapshot("user-service").map(|s| s.len()) != Some(0) {
        assert!(
            deleted.elapsed() < Duration::from_secs(30),
            "the absence was never taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        deleted.elapsed() >= HOLD,
        "taken after {:?}",
        deleted.elapsed()
    );
    assert_eq!(lb.snapshot("user-service").map(|s| s.len()), Some(1));
}

/// `keep_last_on_empty` guards against a registry that forgets: a fetch
/// that lists no instance at all. A registry that lists every instance
/// OUT_OF_SERVICE or DOWN has not forgotten them; an operator (or their
/// health) drains them. The guard used to keep them too: with both
/// backends set OUT_OF_SERVICE in the real server, 10 of 10 requests still
/// reached them, for as long as the drain lasted. Now the drained list is
/// applied and the requests fail naming the statuses; the guard still keeps
/// the list when the app is gone from the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_last_on_empty_does_not_keep_drained_instances() {
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let b1 = Backend::start("b1").await.expect("backend");
    let b2 = Backend::start("b2").await.expect("backend");
    let ids = [
        eureka.register("user-service", b1.port()).await,
        eureka.register("user-service", b2.port()).await,
    ];
    let source = EurekaSource::builder()
        .server_url(eureka.url())
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("source");
    let lb = LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .rule(|| RoundRobin::with_start(0))
        .refresh({
            let mut refresh = RefreshConfig::default();
            refresh.interval = Duration::from_millis(200);
            refresh.jitter = 0.0;
            refresh.keep_last_on_empty = true;
            refresh
        })
        .build(http_client())
        .expect("balancer");
    assert!(lb.ready_service("user-service").await);
    assert_eq!(tally(&lb, URI, 4).await, counts(&[("b1", 2), ("b2", 2)]));

    // Both drained; wait for two fetches that started after the change.
    for id in &ids {
        eureka
            .set_status("user-service", id, "OUT_OF_SERVICE")
            .await;
    }
    assert!(more_fetches(&lb, 2).await, "no refresh after the drain");
    let got = tally(&lb, URI, 10).await;
    let reached: usize = ["b1", "b2"].iter().filter_map(|b| got.get(*b)).sum();
    assert_eq!(reached, 0, "requests reached drained instances: {got:?}");
    assert_eq!(lb.snapshot("user-service").map(|s| s.len()), Some(0));
    assert_eq!(b1.hits() + b2.hits(), 4);

    // Back UP, then gone from the registry: the guard keeps the last list.
    for id in &ids {
        eureka.set_status("user-service", id, "UP").await;
    }
    wait_for_instances(&lb, 2).await;
    for id in &ids {
        eureka.delete("user-service", id).await;
    }
    more_fetches(&lb, 2).await;
    assert_eq!(lb.snapshot("user-service").map(|s| s.len()), Some(2));
    let status = lb.refresh_status("user-service").expect("status");
    assert!(
        matches!(
            status.last_error.as_deref(),
            Some(tower_ribbon::DiscoveryError::EmptyList { .. })
        ),
        "{status:?}"
    );
}
