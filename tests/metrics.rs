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

/// Runs `test` on a paused current-thread runtime with a debugging
/// recorder local to it; `test` reads the recorder through the snapshotter.
fn on_paused_recorder<F: std::future::Future<Output = ()>>(test: impl FnOnce(Snapshotter) -> F) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || rt.block_on(test(snapshotter)));
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
        .per_instance_metrics(true)
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

/// Churn: 1 000 instances pass through the list one at a time, each
/// serving one request. With per-instance series off (the default), the
/// recorder holds the same handful of series at the end as after the first
/// instance. Paused time; the recorder holds under 20 series.
#[test]
fn series_stay_bounded_while_instances_churn() {
    on_paused_recorder(|snapshotter| async move {
        let source = StaticSource::new()
            .with_list("churn", "127.0.0.1:1")
            .unwrap();
        let inner = tower::service_fn(|_req: Request<()>| async {
            Ok::<_, tower_ribbon::BoxError>(http::Response::new(()))
        });
        let lb = LoadBalancer::builder()
            .source(source.clone())
            .service("churn")
            .retry(tower_ribbon::retry::RetryPolicy::none())
            .refresh({
                let mut c = RefreshConfig::default();
                c.interval = Duration::from_secs(1);
                c.jitter = 0.0;
                c
            })
            .build(inner)
            .unwrap();
        assert!(lb.ready_service("churn").await);
        let (mut after_first, mut counted) = (0, 0);
        let key = "ribbon_requests_total{outcome=success,service=churn}";
        for port in 1..=1_000u16 {
            source
                .set_list("churn", &format!("127.0.0.1:{port}"))
                .unwrap();
            tokio::time::sleep(Duration::from_millis(1_001)).await;
            let snap = lb.snapshot("churn").unwrap();
            assert_eq!(snap.endpoints()[0].instance().port(), port);
            let request = Request::get("http://churn/").body(()).unwrap();
            lb.clone().oneshot(request).await.unwrap();
            if port == 1 {
                // A snapshot takes the counters' values so far.
                let first = read(&snapshotter);
                after_first = first.len();
                counted = counter(&first, key);
            }
        }
        let all = read(&snapshotter);
        assert_eq!(
            all.len(),
            after_first,
            "{:?}",
            all.keys().collect::<Vec<_>>()
        );
        assert!(all.len() < 20, "{}", all.len());
        assert_eq!(counted + counter(&all, key), 1_000);
    });
}

/// Made-up host names under `discover_on_demand`: each starts discovery,
/// which lists nothing, and is evicted when idle. The host comes from the
/// caller (as for `ribbon_unknown_service_total`, which has no label), so
/// no series may carry it: 200 names, one at a time with the cap at 4,
/// leave no series labelled with any of them. A name that lists an
/// instance records its series as a declared service does. Paused time.
#[test]
fn made_up_on_demand_names_add_no_series() {
    on_paused_recorder(|snapshotter| async move {
        let source = StaticSource::new()
            .with_list("real", "127.0.0.1:1")
            .unwrap();
        let inner = tower::service_fn(|_req: Request<()>| async {
            Ok::<_, tower_ribbon::BoxError>(http::Response::new(()))
        });
        let lb = LoadBalancer::builder()
            .source(source)
            .discover_on_demand(true)
            .max_services(4)
            .on_demand_idle(Duration::from_secs(1))
            .retry(tower_ribbon::retry::RetryPolicy::none())
            .build(inner)
            .unwrap();
        for i in 0..200 {
            let request = Request::get(format!("http://made-up-{i}/"))
                .body(())
                .unwrap();
            assert!(lb.clone().oneshot(request).await.is_err());
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let request = Request::get("http://real/").body(()).unwrap();
        lb.clone().oneshot(request).await.unwrap();
        let all = read(&snapshotter);
        let made_up: Vec<&String> = all.keys().filter(|k| k.contains("made-up")).collect();
        assert_eq!(made_up.len(), 0, "{made_up:?}");
        assert_eq!(
            counter(&all, "ribbon_requests_total{outcome=success,service=real}"),
            1
        );
        assert_eq!(gauge(&all, "ribbon_instances{service=real}"), 1.0);
    });
}

/// An inner service answering 500 from port 1 and 200 from the others.
fn port_1_fails() -> impl tower::Service<
    Request<()>,
    Response = http::Response<()>,
    Error = tower_ribbon::BoxError,
    Future = impl Send,
> + Clone
+ Send {
    tower::service_fn(|req: Request<()>| async move {
        let mut response = http::Response::new(());
        if req.uri().port_u16() == Some(1) {
            *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        }
        Ok::<_, tower_ribbon::BoxError>(response)
    })
}

/// Three 5xx in a row eject for `secs`.
fn quick_ejection(secs: u64) -> tower_ribbon::health::OutlierDetection {
    let mut detection = tower_ribbon::health::OutlierDetection::default();
    detection.consecutive_5xx = 3;
    detection.base_ejection_time = Duration::from_secs(secs);
    detection.max_ejection_time = Duration::from_secs(secs);
    detection
}

/// `ribbon_ejections_total − ribbon_ejection_returns_total` reads the
/// instances ejected now, also when an ejected instance leaves the list:
/// the recount that counts returns walks only listed instances, so an
/// ejection that ended while its instance was away was never counted
/// (ejections 1, returns 0 for good; helper 188). Its return is counted
/// when the balancer drops the departed stats.
#[test]
fn an_ejection_ending_while_its_instance_is_away_is_counted_returned() {
    on_paused_recorder(|snapshotter| async move {
        let source = StaticSource::new()
            .with_list("svc", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
            .unwrap();
        let mut refresh = RefreshConfig::default();
        refresh.interval = Duration::from_millis(20);
        refresh.jitter = 0.0;
        let lb = LoadBalancer::builder()
            .source(source.clone())
            .service("svc")
            .rule(|| tower_ribbon::rule::RoundRobin::with_start(0))
            .refresh(refresh)
            .outlier_detection(quick_ejection(1))
            .retry(tower_ribbon::retry::RetryPolicy::none())
            .build(port_1_fails())
            .unwrap();
        assert!(lb.ready_service("svc").await);
        for _ in 0..9 {
            let _ = lb
                .clone()
                .oneshot(Request::get("http://svc/").body(()).unwrap())
                .await;
        }
        let all = read(&snapshotter);
        assert_eq!(counter(&all, "ribbon_ejections_total{service=svc}"), 1);
        assert!(!all.contains_key("ribbon_ejection_returns_total{service=svc}"));
        source.set_list("svc", "127.0.0.1:2,127.0.0.1:3").unwrap();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = lb
                .clone()
                .oneshot(Request::get("http://svc/").body(()).unwrap())
                .await;
        }
        assert_eq!(lb.snapshot("svc").unwrap().len(), 2);
        let all = read(&snapshotter);
        assert_eq!(
            counter(&all, "ribbon_ejections_total{service=svc}"),
            0,
            "read since"
        );
        assert_eq!(
            counter(&all, "ribbon_ejection_returns_total{service=svc}"),
            1
        );
    });
}

/// An ejection that ends on a service gone idle is counted returned at the
/// next refresh (helper 199): only a pick's health recount counted the
/// ends of listed instances' ejections, so 60 s after a 1 s ejection with
/// no request the metrics read 1 instance ejected (returns 0). With no
/// refresh since the end, it is not counted yet.
#[test]
fn an_ejection_ending_on_an_idle_service_is_counted_returned() {
    on_paused_recorder(|snapshotter| async move {
        let source = StaticSource::new()
            .with_list("svc", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
            .unwrap();
        let mut refresh = RefreshConfig::default();
        refresh.interval = Duration::from_secs(10);
        refresh.jitter = 0.0;
        let lb = LoadBalancer::builder()
            .source(source.clone())
            .service("svc")
            .rule(|| tower_ribbon::rule::RoundRobin::with_start(0))
            .refresh(refresh)
            .outlier_detection(quick_ejection(1))
            .retry(tower_ribbon::retry::RetryPolicy::none())
            .build(port_1_fails())
            .unwrap();
        assert!(lb.ready_service("svc").await);
        for _ in 0..9 {
            let _ = lb
                .clone()
                .oneshot(Request::get("http://svc/").body(()).unwrap())
                .await;
        }
        // Counted since the last read; none yet is no series.
        let returns = |all: &BTreeMap<String, DebugValue>| {
            let key = "ribbon_ejection_returns_total{service=svc}";
            if all.contains_key(key) {
                counter(all, key)
            } else {
                0
            }
        };
        let all = read(&snapshotter);
        assert_eq!(counter(&all, "ribbon_ejections_total{service=svc}"), 1);
        // Ended 1 s after the ejection, before the next refresh: not yet.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(returns(&read(&snapshotter)), 0);
        // The refresh at 10 s counts it, once.
        tokio::time::sleep(Duration::from_secs(55)).await;
        assert_eq!(returns(&read(&snapshotter)), 1);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(returns(&read(&snapshotter)), 0);
    });
}

/// An on-demand service evicted while one of its instances is ejected:
/// the ejection ends with the service (helper 188: never counted before).
#[test]
fn an_evicted_services_ejections_are_counted_returned() {
    on_paused_recorder(|snapshotter| async move {
        let source = StaticSource::new()
            .with_list("svc", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
            .unwrap();
        let lb = LoadBalancer::builder()
            .source(source)
            .discover_on_demand(true)
            .on_demand_idle(Duration::from_secs(60))
            .rule(|| tower_ribbon::rule::RoundRobin::with_start(0))
            .outlier_detection(quick_ejection(300))
            .retry(tower_ribbon::retry::RetryPolicy::none())
            .build(port_1_fails())
            .unwrap();
        for _ in 0..9 {
            let _ = lb
                .clone()
                .oneshot(Request::get("http://svc/").body(()).unwrap())
                .await;
        }
        let all = read(&snapshotter);
        assert_eq!(counter(&all, "ribbon_ejections_total{service=svc}"), 1);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(lb.snapshot("svc").is_none(), "evicted");
        let all = read(&snapshotter);
        assert_eq!(
            counter(&all, "ribbon_ejection_returns_total{service=svc}"),
            1
        );
    });
}

/// Attempts the caller drops before their result (its own timeout here)
/// count as `cancelled`: before, they were in the instance's stats but in
/// no `ribbon_requests_total` outcome (helper 188). A per-try timeout is a
/// `read_timeout`, not a cancellation.
#[test]
fn attempts_dropped_before_their_result_count_as_cancelled() {
    on_paused_recorder(|snapshotter| async move {
        let inner = tower::service_fn(|req: Request<()>| async move {
            if req.uri().path() == "/hangs" {
                std::future::pending::<()>().await;
            }
            Ok::<_, tower_ribbon::BoxError>(http::Response::new(()))
        });
        let lb = LoadBalancer::builder()
            .source(StaticSource::new().with_list("svc", "127.0.0.1:1").unwrap())
            .service("svc")
            .retry(tower_ribbon::retry::RetryPolicy::none())
            .read_timeout(Some(Duration::from_secs(1)))
            .build(inner)
            .unwrap();
        assert!(lb.ready_service("svc").await);
        for _ in 0..10 {
            let request = Request::get("http://svc/hangs").body(()).unwrap();
            let cut = tokio::time::timeout(Duration::from_millis(50), lb.request(request)).await;
            assert!(cut.is_err());
        }
        let request = Request::get("http://svc/hangs").body(()).unwrap();
        assert!(lb.request(request).await.unwrap_err().is_timeout());
        lb.request(Request::get("http://svc/").body(()).unwrap())
            .await
            .unwrap();
        let all = read(&snapshotter);
        let outcome = |o: &str| {
            counter(
                &all,
                &format!("ribbon_requests_total{{outcome={o},service=svc}}"),
            )
        };
        assert_eq!(
            (
                outcome("cancelled"),
                outcome("read_timeout"),
                outcome("success")
            ),
            (10, 1, 1)
        );
        match all.get("ribbon_request_duration_seconds{service=svc}") {
            Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 2),
            other => panic!("{other:?}"),
        }
        let e = lb.snapshot("svc").unwrap().endpoints()[0].clone();
        assert_eq!((e.stats().requests(), e.stats().in_flight()), (12, 0));
    });
}

/// A balancer dropped while one of its instances is ejected (a config
/// reload that builds a new one) ends that ejection for the metric, and
/// so does an ejection a request makes after its on-demand service was
/// evicted: both are counted when the service's state goes (helper 189:
/// ejections 1 and 2, returns 0 and 1 before).
#[test]
fn ejections_end_when_the_services_state_goes() {
    on_paused_recorder(|snapshotter| async move {
        let lb = LoadBalancer::builder()
            .source(
                StaticSource::new()
                    .with_list("svc", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
                    .unwrap(),
            )
            .service("svc")
            .rule(|| tower_ribbon::rule::RoundRobin::with_start(0))
            .outlier_detection(quick_ejection(300))
            .retry(tower_ribbon::retry::RetryPolicy::none())
            .build(port_1_fails())
            .unwrap();
        assert!(lb.ready_service("svc").await);
        for _ in 0..9 {
            let _ = lb
                .clone()
                .oneshot(Request::get("http://svc/").body(()).unwrap())
                .await;
        }
        let all = read(&snapshotter);
        assert_eq!(counter(&all, "ribbon_ejections_total{service=svc}"), 1);
        drop(lb);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let all = read(&snapshotter);
        assert_eq!(
            counter(&all, "ribbon_ejection_returns_total{service=svc}"),
            1
        );
    });
}

/// Answers 500 once `open`; until then not ready (polled again every
/// 500 ms of paused time).
#[derive(Clone)]
struct Gated {
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl tower::Service<Request<()>> for Gated {
    type Response = http::Response<()>;
    type Error = tower_ribbon::BoxError;
    type Future = std::future::Ready<Result<http::Response<()>, tower_ribbon::BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        if self.open.load(std::sync::atomic::Ordering::SeqCst) {
            return std::task::Poll::Ready(Ok(()));
        }
        let waker = cx.waker().clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            waker.wake();
        });
        std::task::Poll::Pending
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        std::future::ready(Ok(response))
    }
}

/// A request of an on-demand service waiting for its inner service past
/// the idle time keeps the service (helper 211; before, it was evicted
/// under the request), ejects an instance afterwards, and that ejection
/// ends, once the service is evicted too (helper 189: ejections 2, returns
/// 1 before).
#[test]
fn an_ejection_by_a_request_outliving_its_services_eviction_ends_too() {
    on_paused_recorder(|snapshotter| async move {
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mut detection = quick_ejection(30);
        detection.consecutive_5xx = 1;
        let lb = LoadBalancer::builder()
            .source(
                StaticSource::new()
                    .with_list("svc", "127.0.0.1:1,127.0.0.1:2")
                    .unwrap(),
            )
            .discover_on_demand(true)
            .on_demand_idle(Duration::from_secs(60))
            .outlier_detection(detection)
            .retry(tower_ribbon::retry::RetryPolicy::none())
            .read_timeout(None)
            .build(Gated {
                open: std::sync::Arc::clone(&open),
            })
            .unwrap();
        let _ = lb
            .clone()
            .oneshot(Request::get("http://svc/").body(()).unwrap())
            .await;
        tokio::time::sleep(Duration::from_secs(31)).await;
        open.store(false, std::sync::atomic::Ordering::SeqCst);
        let waiting = tokio::spawn(
            lb.clone()
                .oneshot(Request::get("http://svc/").body(()).unwrap()),
        );
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert!(lb.snapshot("svc").is_some(), "kept while the request waits");
        open.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = waiting.await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(lb.snapshot("svc").is_none(), "evicted once idle");
        let all = read(&snapshotter);
        assert_eq!(counter(&all, "ribbon_ejections_total{service=svc}"), 2);
        assert_eq!(
            counter(&all, "ribbon_ejection_returns_total{service=svc}"),
            2
        );
    });
}
