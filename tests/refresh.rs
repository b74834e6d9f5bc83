//! The background refresh and the request path, with paused time and
//! scripted sources (no network).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use tower::{Service, ServiceExt};
use tower_ribbon::discovery::{FetchFuture, InstanceSource, RefreshConfig, StaticSource};
use tower_ribbon::instance::Instance;
use tower_ribbon::rule::RoundRobin;
use tower_ribbon::{DiscoveryError, Error, LoadBalancer};

const INTERVAL: Duration = Duration::from_secs(10);

type Script = VecDeque<Result<Vec<Instance>, String>>;

/// Answers each fetch with the next scripted result (the last one repeats)
/// and counts fetches.
#[derive(Clone)]
struct Scripted {
    script: Arc<Mutex<Script>>,
    fetches: Arc<AtomicUsize>,
}

impl Scripted {
    fn new(script: Vec<Result<Vec<Instance>, String>>) -> Self {
        Self {
            script: Arc::new(Mutex::new(script.into())),
            fetches: Arc::new(AtomicUsize::new(0)),
        }
    }
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl InstanceSource for Scripted {
    fn fetch<'a>(&'a self, _service_id: &'a str) -> FetchFuture<'a> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let mut script = self.script.lock().unwrap();
        let next = if script.len() > 1 {
            script.pop_front()
        } else {
            script.front().cloned()
        };
        let result = match next {
            Some(Ok(list)) => Ok(list),
            Some(Err(msg)) => Err(DiscoveryError::Other(msg.into())),
            None => Ok(Vec::new()),
        };
        Box::pin(std::future::ready(result))
    }
}

/// Never answers.
struct Hanging;

impl InstanceSource for Hanging {
    fn fetch<'a>(&'a self, _service_id: &'a str) -> FetchFuture<'a> {
        Box::pin(std::future::pending())
    }
}

fn inst(port: u16) -> Instance {
    Instance::new("user-service", "127.0.0.1", port).unwrap()
}

/// The inner service's response: the URI it was sent.
type Echoed = http::Response<String>;

/// What the balancer hands back for an [`Echoed`] response.
type Balanced = http::Response<tower_ribbon::service::TrackedBody<String>>;

/// An inner service that answers with the URI it was sent.
fn echo()
-> impl Service<Request<()>, Response = Echoed, Error = Infallible, Future = impl Future + Send>
+ Clone
+ Send {
    tower::service_fn(|req: Request<()>| async move {
        Ok::<_, Infallible>(http::Response::new(req.uri().to_string()))
    })
}

/// A balancer of `user-service` over `source`, refreshed every
/// [`INTERVAL`], answering with [`echo`].
fn user_service(
    source: Scripted,
) -> LoadBalancer<
    impl Service<Request<()>, Response = Echoed, Error = Infallible, Future = impl Future + Send>
    + Clone
    + Send,
> {
    LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .refresh(config())
        .build(echo())
        .unwrap()
}

fn config() -> RefreshConfig {
    let mut config = RefreshConfig::default();
    config.interval = INTERVAL;
    config.jitter = 0.0;
    config
}

async fn get<S>(lb: &LoadBalancer<S>, uri: &str) -> Result<String, Error>
where
    LoadBalancer<S>: Service<Request<()>, Response = Balanced, Error = Error> + Clone,
{
    lb.clone()
        .oneshot(Request::get(uri).body(()).unwrap())
        .await
        .map(|r| r.into_body().into_inner())
}

fn ports_of<S>(lb: &LoadBalancer<S>) -> Vec<u16> {
    lb.snapshot("user-service")
        .map(|s| s.endpoints().iter().map(|e| e.instance().port()).collect())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn failures_keep_the_last_list_and_staleness_is_readable() {
    let source = Scripted::new(vec![
        Ok(vec![inst(1), inst(2)]),
        Err("registry down".into()),
        Err("registry down".into()),
        Ok(vec![]),
        Ok(vec![inst(2), inst(3)]),
    ]);
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .service("user-service")
        .rule(|| RoundRobin::with_start(0))
        .refresh(config())
        .build(echo())
        .unwrap();
    assert!(lb.ready_service("user-service").await);
    assert_eq!(ports_of(&lb), [1, 2]);
    assert_eq!(
        get(&lb, "http://user-service/x").await.unwrap(),
        "http://127.0.0.1:1/x"
    );
    assert_eq!(
        get(&lb, "http://user-service/x").await.unwrap(),
        "http://127.0.0.1:2/x"
    );

    // Two failed refreshes: same list, counted, staleness grows exactly.
    tokio::time::sleep(INTERVAL + Duration::from_millis(1)).await;
    let s = lb.refresh_status("user-service").unwrap();
    assert_eq!((s.successes, s.failures, s.consecutive_failures), (1, 1, 1));
    assert_eq!(ports_of(&lb), [1, 2]);
    tokio::time::sleep(INTERVAL).await;
    let s = lb.refresh_status("user-service").unwrap();
    assert_eq!((s.successes, s.failures, s.consecutive_failures), (1, 2, 2));
    assert_eq!(
        s.since_last_success,
        Some(INTERVAL * 2 + Duration::from_millis(1))
    );
    assert!(s.last_error.unwrap().to_string().contains("registry down"));
    assert_eq!(
        get(&lb, "http://user-service/x").await.unwrap(),
        "http://127.0.0.1:1/x"
    );

    // A successful empty fetch applies (documented), and requests say so.
    tokio::time::sleep(INTERVAL).await;
    assert!(ports_of(&lb).is_empty());
    let err = get(&lb, "http://user-service/x").await.unwrap_err();
    assert!(err.is_no_instances(), "{err}");
    assert_eq!(err.service_id(), "user-service");
    // The message says what the source listed (issue 12 item 8): a
    // source that does not say what kind it is counts as a registry.
    assert_eq!(
        err.to_string(),
        "service `user-service` is not in the registry, so it has no UP instance"
    );

    // The next good fetch replaces it.
    tokio::time::sleep(INTERVAL).await;
    assert_eq!(ports_of(&lb), [2, 3]);
    let s = lb.refresh_status("user-service").unwrap();
    assert_eq!((s.successes, s.failures, s.consecutive_failures), (3, 2, 0));
    assert!(s.last_error.is_none());
    assert_eq!(source.fetches(), 5);
}

#[tokio::test(start_paused = true)]
async fn stats_survive_a_refresh_that_keeps_the_identity() {
    let source = StaticSource::new().with_instances("user-service", vec![inst(1), inst(2)]);
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .service("user-service")
        .rule(|| RoundRobin::with_start(0))
        .refresh(config())
        .build(echo())
        .unwrap();
    assert!(lb.ready_service("user-service").await);
    for _ in 0..4 {
        get(&lb, "http://user-service/").await.unwrap();
    }
    // Same identity with new metadata keeps stats; a changed port is new.
    source.set_instances("user-service", vec![inst(1).with_zone("zone-a"), inst(20)]);
    tokio::time::sleep(INTERVAL + Duration::from_millis(1)).await;
    let snap = lb.snapshot("user-service").unwrap();
    assert_eq!(snap.version(), 2);
    assert_eq!(snap.endpoints()[0].instance().zone(), Some("zone-a"));
    assert_eq!(snap.endpoints()[0].stats().requests(), 2);
    assert_eq!(snap.endpoints()[1].stats().requests(), 0);

    // An identical refresh keeps the snapshot and the rotation.
    let before = get(&lb, "http://user-service/").await.unwrap();
    tokio::time::sleep(INTERVAL).await;
    assert_eq!(lb.snapshot("user-service").unwrap().version(), 2);
    let after = get(&lb, "http://user-service/").await.unwrap();
    assert_ne!(before, after);
}

#[tokio::test(start_paused = true)]
async fn only_up_instances_are_listed() {
    use tower_ribbon::InstanceStatus::*;
    let list = vec![
        inst(1).with_status(Down),
        inst(2),
        inst(3).with_status(OutOfService),
        inst(4).with_status(Starting),
        inst(5).with_status(Unknown),
        inst(2), // a duplicate identity is listed once
    ];
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_instances("user-service", list))
        .service("user-service")
        .build(echo())
        .unwrap();
    assert!(lb.ready_service("user-service").await);
    assert_eq!(ports_of(&lb), [2]);
}

#[tokio::test(start_paused = true)]
async fn keep_last_on_empty_guards_against_a_registry_that_forgets() {
    let source = Scripted::new(vec![Ok(vec![inst(1)]), Ok(vec![])]);
    let lb = LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .refresh({
            let mut config = config();
            config.keep_last_on_empty = true;
            config
        })
        .build(echo())
        .unwrap();
    assert!(lb.ready_service("user-service").await);
    tokio::time::sleep(INTERVAL + Duration::from_millis(1)).await;
    assert_eq!(ports_of(&lb), [1]);
    let s = lb.refresh_status("user-service").unwrap();
    assert_eq!(s.failures, 1);
    assert!(matches!(
        s.last_error.as_deref(),
        Some(DiscoveryError::EmptyList { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn first_request_waits_for_the_first_fetch_up_to_the_bound() {
    let lb = LoadBalancer::builder()
        .source(Hanging)
        .service("user-service")
        .refresh({
            let mut config = config();
            config.first_fetch_wait = Duration::from_secs(2);
            config.fetch_timeout = Duration::from_secs(60);
            config
        })
        .build(echo())
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = get(&lb, "http://user-service/").await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(err.is_timeout() && err.discovery_waited() == Some(Duration::from_secs(2)));
    assert!(err.is_discovery());

    // After the fetch timeout the refresh counts a timeout.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let s = lb.refresh_status("user-service").unwrap();
    assert_eq!(s.failures, 1);
    assert!(s.last_error.unwrap().is_timeout());
}

#[tokio::test(start_paused = true)]
async fn a_failing_first_fetch_is_a_discovery_error_and_is_retried_sooner() {
    let source = Scripted::new(vec![
        Err("connection refused".into()),
        Err("connection refused".into()),
        Ok(vec![inst(7)]),
    ]);
    let lb = user_service(source.clone());
    let err = get(&lb, "http://user-service/").await.unwrap_err();
    assert!(err.is_discovery(), "unexpected {err}");
    assert_eq!(err.service_id(), "user-service");
    let cause = err.discovery_error().expect("a discovery error");
    assert!(cause.to_string().contains("connection refused"));
    let chained = std::error::Error::source(&err).expect("source");
    assert!(chained.to_string().contains("connection refused"));
    // Retries after 1 s, then 2 s, instead of the 10 s interval.
    tokio::time::sleep(Duration::from_millis(1001)).await;
    assert_eq!(source.fetches(), 2);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(source.fetches(), 3);
    assert_eq!(
        get(&lb, "http://user-service/").await.unwrap(),
        "http://127.0.0.1:7/"
    );
}

/// `lb.oneshot(req)` drops the balancer right after the call. A request
/// still waiting for its service's first list keeps the balancer, and so
/// the refresh task bringing that list, alive; once the list is there the
/// request holds only its service's state, and the tasks stop with the
/// last balancer as before.
#[tokio::test(start_paused = true)]
async fn a_request_waiting_for_the_first_list_keeps_its_refresh_alive() {
    let source = Scripted::new(vec![Ok(vec![inst(7)])]);
    let lb = user_service(source.clone());
    // No await before the call: the first fetch has not run yet.
    let request = Request::get("http://user-service/x").body(()).unwrap();
    let response = lb.oneshot(request).await.expect("the first list arrived");
    assert_eq!(response.into_body().into_inner(), "http://127.0.0.1:7/x");
    assert_eq!(source.fetches(), 1);
    // The balancer is gone: no refresh after the request ended.
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(source.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn refresh_tasks_stop_when_the_balancer_is_dropped() {
    let source = Scripted::new(vec![Ok(vec![inst(1)])]);
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .services(["user-service", "order-service"])
        .refresh(config())
        .build(echo())
        .unwrap();
    let clone = lb.clone();
    assert!(lb.ready_service("user-service").await);
    assert!(lb.ready_service("order-service").await);
    drop(lb);
    tokio::time::sleep(INTERVAL * 3 + Duration::from_millis(1)).await;
    assert_eq!(source.fetches(), 2 + 2 * 3, "a clone keeps the tasks alive");
    drop(clone);
    tokio::time::sleep(INTERVAL * 5).await;
    assert_eq!(source.fetches(), 8);
}

#[tokio::test(start_paused = true)]
async fn uris_are_rewritten_to_the_instance() {
    let source = StaticSource::new()
        .with_list("user-service", "127.0.0.1:8081")
        .unwrap()
        .with_list("v6", "https://[::1]:8443")
        .unwrap()
        .with_instances(
            "zoned",
            vec![Instance::new("zoned", "fe80::1%eth0", 80).unwrap()],
        );
    let lb = LoadBalancer::builder()
        .source(source)
        .services(["user-service", "V6", "zoned"])
        .build(echo())
        .unwrap();
    assert_eq!(
        get(&lb, "http://user-service/api/x?q=1&r=%20")
            .await
            .unwrap(),
        "http://127.0.0.1:8081/api/x?q=1&r=%20"
    );
    assert_eq!(
        get(&lb, "http://USER-SERVICE:9999").await.unwrap(),
        "http://127.0.0.1:8081/"
    );
    assert_eq!(
        get(&lb, "http://v6/a").await.unwrap(),
        "https://[::1]:8443/a"
    );
    assert_eq!(
        get(&lb, "http://zoned/").await.unwrap(),
        "http://[fe80::1%25eth0]:80/"
    );

    // An https request is never downgraded; CONNECT keeps authority form.
    assert_eq!(
        get(&lb, "https://user-service:9999/s").await.unwrap(),
        "https://127.0.0.1:8081/s"
    );
    let connect = lb
        .clone()
        .oneshot(Request::connect("user-service:443").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(connect.into_body().into_inner(), "127.0.0.1:8081");

    let err = get(&lb, "http://other-service/").await.unwrap_err();
    assert!(err.is_unknown_service());
    assert_eq!(
        err.to_string(),
        "unknown service `other-service`: not configured on this load balancer; known services: `V6`, `user-service`, `zoned`; declare it with `Builder::service`, or turn on `Builder::discover_on_demand`"
    );
    let err = get(&lb, "/relative").await.unwrap_err();
    assert!(err.is_no_service_in_uri(), "{err}");
    assert_eq!(lb.services(), ["V6", "user-service", "zoned"]);
}

#[tokio::test(start_paused = true)]
async fn discover_on_demand_starts_unknown_services() {
    let source = StaticSource::new()
        .with_list("late-service", "127.0.0.1:9000")
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .discover_on_demand(true)
        .max_services(2)
        .build(echo())
        .unwrap();
    assert!(lb.services().is_empty());
    assert_eq!(
        get(&lb, "http://late-service/").await.unwrap(),
        "http://127.0.0.1:9000/"
    );
    assert_eq!(lb.services(), ["late-service"]);
    let err = get(&lb, "http://nowhere/").await.unwrap_err();
    assert!(
        matches!(
            err.discovery_error(),
            Some(DiscoveryError::UnknownService { .. })
        ),
        "{err}"
    );
    // The cap: a third unknown host is refused without starting discovery.
    let err = get(&lb, "http://third/").await.unwrap_err();
    assert!(err.is_unknown_service(), "{err}");
    assert_eq!(lb.services(), ["late-service", "nowhere"]);
}

#[tokio::test(start_paused = true)]
async fn in_flight_is_released_when_a_request_is_cancelled() {
    let source = StaticSource::new()
        .with_list("user-service", "127.0.0.1:1")
        .unwrap();
    let never = tower::service_fn(|_req: Request<()>| {
        std::future::pending::<Result<http::Response<String>, Infallible>>()
    });
    let lb = LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .build(never)
        .unwrap();
    assert!(lb.ready_service("user-service").await);
    let fut = lb
        .clone()
        .oneshot(Request::get("http://user-service/").body(()).unwrap());
    let timed = tokio::time::timeout(Duration::from_secs(1), fut).await;
    assert!(timed.is_err());
    let snap = lb.snapshot("user-service").unwrap();
    assert_eq!(snap.endpoints()[0].stats().in_flight(), 0);
    assert_eq!(snap.endpoints()[0].stats().requests(), 1);
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    let err = LoadBalancer::builder()
        .source(StaticSource::new())
        .layer()
        .unwrap_err();
    assert!(matches!(err, tower_ribbon::error::BuildError::NoRuntime));
    let err = LoadBalancer::builder().layer().unwrap_err();
    assert!(matches!(err, tower_ribbon::error::BuildError::NoSource));
}

#[tokio::test(start_paused = true)]
async fn outcomes_are_classified_and_recorded_against_the_chosen_instance() {
    use tower_ribbon::stats::BreakerState;
    let source = StaticSource::new()
        .with_list("user-service", "127.0.0.1:1")
        .unwrap();
    let inner = tower::service_fn(|req: Request<()>| async move {
        match req.uri().path() {
            "/refused" => Err(tower_ribbon::BoxError::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))),
            "/503" => {
                let mut r = http::Response::new(String::new());
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                Ok(r)
            }
            _ => Ok(http::Response::new(String::new())),
        }
    });
    let lb = LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .retry(tower_ribbon::retry::RetryPolicy::none())
        .build(inner)
        .unwrap();
    assert!(lb.ready_service("user-service").await);
    let call = |path: &'static str| {
        lb.clone().oneshot(
            Request::get(format!("http://user-service{path}"))
                .body(())
                .unwrap(),
        )
    };
    call("/ok").await.unwrap();
    assert_eq!(call("/503").await.unwrap().status(), 503);
    let stats = || {
        lb.snapshot("user-service").unwrap().endpoints()[0]
            .stats_handle()
            .clone()
    };
    assert_eq!((stats().requests(), stats().failures()), (2, 1));
    for _ in 0..3 {
        let err = call("/refused").await.unwrap_err();
        assert!(err.is_inner());
    }
    assert_eq!(stats().successive_connection_failures(), 3);
    assert_eq!(
        stats().breaker_state(),
        BreakerState::Open {
            remaining: Duration::from_secs(10)
        }
    );
    // A response resets the breaker.
    call("/ok").await.unwrap();
    assert_eq!(stats().breaker_state(), BreakerState::Closed);
    assert_eq!(
        (stats().requests(), stats().failures(), stats().in_flight()),
        (6, 4, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_hash_key_header_makes_routing_sticky() {
    use tower_ribbon::rule::ConsistentHash;
    use tower_ribbon::service::HashKey;
    let source = StaticSource::new()
        .with_list(
            "user-service",
            "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4",
        )
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("user-service")
        .rule(ConsistentHash::new)
        .hash_key(HashKey::header(http::HeaderName::from_static("x-user-id")))
        .build(echo())
        .unwrap();
    assert!(lb.ready_service("user-service").await);
    let send = |user: String| {
        lb.clone().oneshot(
            Request::get("http://user-service/")
                .header("x-user-id", user)
                .body(())
                .unwrap(),
        )
    };
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..40 {
        let first = send(format!("user-{user}"))
            .await
            .unwrap()
            .into_body()
            .into_inner();
        for _ in 0..5 {
            assert_eq!(
                send(format!("user-{user}"))
                    .await
                    .unwrap()
                    .into_body()
                    .into_inner(),
                first
            );
        }
        seen.insert(first);
    }
    // 40 users spread over all four instances.
    assert_eq!(seen.len(), 4);
}

/// A service the source stops having (`StaticSource::remove_service`: its
/// fetches fail with `UnknownService`) is no longer routed to its last
/// instances: the refresh took the failure as an outage and kept the list,
/// so 10 requests over 10 intervals after the removal all went to the
/// removed instance; now its list empties at the next refresh and they
/// fail with "no instances". With `keep_last_on_empty` the list is kept,
/// as for any fetch that lists nothing.
#[tokio::test(start_paused = true)]
async fn a_service_removed_from_the_source_loses_its_instances() {
    for keep_last_on_empty in [false, true] {
        let source = StaticSource::new()
            .with_list("user-service", "127.0.0.1:9000")
            .unwrap();
        let mut refresh = config();
        refresh.keep_last_on_empty = keep_last_on_empty;
        let lb = LoadBalancer::builder()
            .source(source.clone())
            .service("user-service")
            .refresh(refresh)
            .build(echo())
            .unwrap();
        assert_eq!(
            get(&lb, "http://user-service/").await.unwrap(),
            "http://127.0.0.1:9000/"
        );
        source.remove_service("user-service");
        // Half an interval off the refresh ticks, so each request comes
        // after a refresh, whatever order the tasks wake in.
        tokio::time::sleep(INTERVAL / 2).await;
        let mut routed = 0;
        for _ in 0..10 {
            tokio::time::sleep(INTERVAL).await;
            routed += usize::from(get(&lb, "http://user-service/").await.is_ok());
        }
        let status = lb.refresh_status("user-service").unwrap();
        println!("keep_last_on_empty {keep_last_on_empty}: {routed} of 10 routed; {status:?}");
        let expected = if keep_last_on_empty {
            (10, vec![9000])
        } else {
            (0, vec![])
        };
        assert_eq!((routed, ports_of(&lb)), expected);
        // The removal shows as the source's error either way.
        assert_eq!(status.consecutive_failures, 10, "{status:?}");
        assert!(
            matches!(
                status.last_error.as_deref(),
                Some(DiscoveryError::UnknownService { .. })
            ),
            "{status:?}"
        );
        if !keep_last_on_empty {
            let err = get(&lb, "http://user-service/").await.unwrap_err();
            assert!(err.is_no_instances(), "{err}");
        }
    }
}
