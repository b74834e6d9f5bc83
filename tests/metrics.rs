//! What the balancer records through the `metrics` facade, read back with
//! metrics-util's debugging recorder (installed once for this test binary).

use std::collections::BTreeMap;
use std::time::Duration;

use http::Request;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::{RefreshConfig, StaticSource};

/// `name{label=value,...}` -> value, for every metric recorded so far.
fn read(snapshotter: &Snapshotter) -> BTreeMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect()
}

fn counter(all: &BTreeMap<String, DebugValue>, key: &str) -> u64 {
    match all.get(key) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!(
            "{key}: {other:?}\nall: {:#?}",
            all.keys().collect::<Vec<_>>()
        ),
    }
}

fn gauge(all: &BTreeMap<String, DebugValue>, key: &str) -> f64 {
    match all.get(key) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{key}: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn requests_outcomes_latency_breaker_and_refresh_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("first recorder of this binary");

    let source = StaticSource::new()
        .with_list("user-service", "127.0.0.1:1")
        .unwrap();
    let inner = tower::service_fn(|req: Request<()>| async move {
        match req.uri().path() {
            "/refused" => Err(tower_ribbon::BoxError::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))),
            "/503" => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut r = http::Response::new(());
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                Ok::<_, tower_ribbon::BoxError>(r)
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(http::Response::new(()))
            }
        }
    });
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .services(["user-service", "empty-service"])
        .retry(tower_ribbon::retry::RetryPolicy::none())
        .refresh({
            let mut refresh = RefreshConfig::default();
            refresh.interval = Duration::from_secs(10);
            refresh.jitter = 0.0;
            refresh
        })
        .build(inner)
        .unwrap();
    assert!(lb.ready_service("user-service").await);
    let call = |uri: &'static str| lb.clone().oneshot(Request::get(uri).body(()).unwrap());
    for _ in 0..4 {
        call("http://user-service/ok").await.unwrap();
    }
    call("http://user-service/503").await.unwrap();
    for _ in 0..3 {
        call("http://user-service/refused").await.unwrap_err();
    }
    call("http://user-service/ok").await.unwrap(); // closes the tripped breaker
    assert!(
        call("http://empty-service/")
            .await
            .unwrap_err()
            .is_discovery()
    );
    tokio::time::sleep(Duration::from_secs(25)).await;

    let all = read(&snapshotter);
    let req = |outcome: &str| {
        counter(
            &all,
            &format!(
                "ribbon_requests_total{{instance=127.0.0.1:1,outcome={outcome},service=user-service}}"
            ),
        )
    };
    assert_eq!(req("success"), 5);
    assert_eq!(req("failure_status"), 1);
    assert_eq!(req("connect_failure"), 3);
    assert_eq!(req("read_timeout"), 0);
    match all.get("ribbon_request_duration_seconds{instance=127.0.0.1:1,service=user-service}") {
        Some(DebugValue::Histogram(values)) => {
            let mut ms: Vec<u64> = values
                .iter()
                .map(|v| (v.into_inner() * 1000.0).round() as u64)
                .collect();
            ms.sort();
            assert_eq!(ms, [0, 0, 0, 5, 5, 5, 5, 5, 20]);
        }
        other => panic!("histogram: {other:?}"),
    }
    assert_eq!(
        counter(
            &all,
            "ribbon_breaker_trips_total{instance=127.0.0.1:1,service=user-service}"
        ),
        1
    );
    assert_eq!(
        counter(
            &all,
            "ribbon_breaker_recoveries_total{instance=127.0.0.1:1,service=user-service}"
        ),
        1
    );
    // StaticSource has no `empty-service`: its refreshes fail.
    assert_eq!(
        counter(&all, "ribbon_refresh_success_total{service=user-service}"),
        3
    );
    assert!(counter(&all, "ribbon_refresh_failure_total{service=empty-service}") >= 3);
    assert_eq!(gauge(&all, "ribbon_instances{service=user-service}"), 1.0);
    assert_eq!(
        gauge(
            &all,
            "ribbon_refresh_staleness_seconds{service=user-service}"
        ),
        0.0
    );

    // An emptied list counts requests that found nobody.
    source.set_instances("user-service", vec![]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        call("http://user-service/")
            .await
            .unwrap_err()
            .is_no_instances()
    );
    let all = read(&snapshotter);
    assert_eq!(
        counter(&all, "ribbon_no_instances_total{service=user-service}"),
        1
    );
    assert_eq!(gauge(&all, "ribbon_instances{service=user-service}"), 0.0);
}
