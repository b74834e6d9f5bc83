//! An on-demand service whose only request is waiting for a busy inner
//! service (a concurrency limit shared with another service) is not
//! evicted under it: the request then picks from the current list. Before,
//! the sweeper read only the time of the last request's *start* and the
//! requests in flight (counted from the send), so the service was evicted
//! under the waiting request, its refresh stopped, and the request went to
//! an instance removed from the source two seconds earlier (helper 211).
//!
//! Paused time, scripted instances; the control with a long idle time
//! picks the current instance too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use tower::ServiceBuilder;
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::{BoxError, LoadBalancer};

/// The port `late`'s request went to, and whether `late` was still
/// listed right after it ended and an idle time after that.
async fn port_of_late_request(on_demand_idle: Duration) -> (u16, bool, bool) {
    let source = StaticSource::new()
        .with_list("hold", "127.0.0.1:9")
        .unwrap()
        .with_list("late", "127.0.0.1:1")
        .unwrap();
    let seen: Arc<Mutex<Vec<u16>>> = Arc::default();
    let log = Arc::clone(&seen);
    let instances = tower::service_fn(move |req: Request<String>| {
        let port = req.uri().port_u16().unwrap();
        log.lock().unwrap().push(port);
        async move {
            if port == 9 {
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
            Ok::<_, BoxError>(Response::new(port.to_string()))
        }
    });
    let inner = ServiceBuilder::new()
        .concurrency_limit(1)
        .service(instances);
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_millis(100);
    refresh.jitter = 0.0;
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .service("hold")
        .discover_on_demand(true)
        .on_demand_idle(on_demand_idle)
        .refresh(refresh)
        .retry(RetryPolicy::none().per_try_timeout(Duration::from_secs(10)))
        .build(inner)
        .unwrap();
    assert!(lb.ready_service("hold").await);
    // `hold` takes the inner service's only permit for 4 s.
    let hold = {
        let lb = lb.clone();
        tokio::spawn(async move {
            lb.request(Request::get("http://hold/").body(String::new()).unwrap())
                .await
                .map(|_| ())
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    // `late` (on demand) gets its list, then waits for the permit.
    let late = {
        let lb = lb.clone();
        tokio::spawn(async move {
            let r = lb
                .request(Request::get("http://late/").body(String::new()).unwrap())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(r.into_body().into_inner())
        })
    };
    // Two seconds later, `late`'s only instance moves to port 2.
    tokio::time::sleep(Duration::from_secs(2)).await;
    source.set_list("late", "127.0.0.1:2").unwrap();
    hold.await.unwrap().unwrap();
    let body = late.await.unwrap().unwrap();
    eprintln!(
        "on_demand_idle {on_demand_idle:?}: late went to port {body}; services now {:?}",
        lb.services()
    );
    let listed = |lb: &LoadBalancer<_>| lb.services().iter().any(|s| s == "late");
    let after = listed(&lb);
    // Once it ended, the hold is gone: an idle time later it is evicted.
    tokio::time::sleep(on_demand_idle * 2).await;
    (body.parse().unwrap(), after, listed(&lb))
}

#[tokio::test(start_paused = true)]
async fn control_a_long_idle_time_picks_the_current_instance() {
    assert_eq!(
        port_of_late_request(Duration::from_secs(60)).await,
        (2, true, false)
    );
}

#[tokio::test(start_paused = true)]
async fn a_service_waiting_for_the_inner_service_is_not_evicted_under_its_request() {
    // Idle 1 s, while its request waits 4 s for the shared permit.
    assert_eq!(
        port_of_late_request(Duration::from_secs(1)).await,
        (2, true, false),
        "(port, listed after the request, listed an idle time later)"
    );
}
