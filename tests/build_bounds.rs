//! Every builder setting that takes a number or a duration, set out of
//! bounds: `build()` refuses it with a typed error naming the setting and
//! the bound (issue 12 item 6). One value per bound, exact messages.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::error::BuildError;
use tower_ribbon::health::{ActiveHealthCheck, OutlierDetection};
use tower_ribbon::retry::{RetryBudgetConfig, RetryPolicy};
use tower_ribbon::stats::StatsConfig;
use tower_ribbon::{Builder, LoadBalancer};

/// A change to the builder, the setting it breaks and the reason given.
type Case = (Set, &'static str, &'static str);

/// A change to the builder.
type Set = Box<dyn FnOnce(Builder) -> Builder>;

fn builder() -> Builder {
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1")
        .expect("list");
    LoadBalancer::builder().source(source).service("svc")
}

/// The error of building with `set` applied, as `(key, message)`.
fn refused(set: impl FnOnce(Builder) -> Builder) -> (String, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    match set(builder()).build(client) {
        Ok(_) => panic!("built"),
        Err(e @ BuildError::Invalid(_)) => (e.key().unwrap_or_default().to_owned(), e.to_string()),
        Err(e) => panic!("not Invalid: {e}"),
    }
}

fn refresh(f: impl FnOnce(&mut RefreshConfig)) -> Set {
    let mut c = RefreshConfig::default();
    f(&mut c);
    Box::new(move |b: Builder| b.refresh(c))
}

fn outliers(f: impl FnOnce(&mut OutlierDetection)) -> Set {
    let mut c = OutlierDetection::default();
    f(&mut c);
    Box::new(move |b: Builder| b.outlier_detection(c))
}

fn stats(f: impl FnOnce(&mut StatsConfig)) -> Set {
    let mut c = StatsConfig::default();
    f(&mut c);
    Box::new(move |b: Builder| b.stats(c))
}

fn health(f: impl FnOnce(&mut ActiveHealthCheck)) -> Set {
    let mut c = ActiveHealthCheck::default();
    f(&mut c);
    Box::new(move |b: Builder| b.active_health_check(c))
}

#[tokio::test]
async fn every_number_and_duration_out_of_bounds_is_named_with_its_bound() {
    let zero = Duration::ZERO;
    let cases: Vec<Case> = vec![
        (
            Box::new(|b: Builder| b.max_services(0)),
            "Builder::max_services",
            "0 is outside 1..=65536",
        ),
        (
            Box::new(|b: Builder| b.max_services(65_537)),
            "Builder::max_services",
            "65537 is outside 1..=65536",
        ),
        (
            Box::new(move |b: Builder| b.on_demand_idle(zero)),
            "Builder::on_demand_idle",
            "must be more than zero",
        ),
        (
            Box::new(move |b: Builder| b.read_timeout(Some(zero))),
            "Builder::read_timeout",
            "must be more than zero (None: no per-try bound)",
        ),
        (
            Box::new(move |b: Builder| b.connect_timeout(Some(zero))),
            "Builder::connect_timeout",
            "must be more than zero (None: the operating system's)",
        ),
        (
            Box::new(refresh(|c| c.interval = zero)),
            "refresh.interval",
            "must be at least 1 ms",
        ),
        (
            Box::new(refresh(|c| c.jitter = 0.6)),
            "refresh.jitter",
            "must be a fraction in 0.0..=0.5",
        ),
        (
            Box::new(refresh(|c| c.jitter = f64::NAN)),
            "refresh.jitter",
            "must be a fraction in 0.0..=0.5",
        ),
        (
            Box::new(refresh(|c| c.fetch_timeout = zero)),
            "refresh.fetch_timeout",
            "must be more than zero",
        ),
        (
            Box::new(move |b: Builder| b.retry(RetryPolicy::default().per_try_timeout(zero))),
            "RetryPolicy::per_try_timeout",
            "must be more than zero",
        ),
        (
            Box::new(move |b: Builder| b.retry(RetryPolicy::default().deadline(zero))),
            "RetryPolicy::deadline",
            "must be more than zero",
        ),
        (
            Box::new(|b: Builder| {
                b.retry(
                    RetryPolicy::default().backoff(Duration::from_secs(2), Duration::from_secs(1)),
                )
            }),
            "RetryPolicy::backoff",
            "cap below base",
        ),
        (
            Box::new(|b: Builder| b.retry(RetryPolicy::default().retryable_statuses([600]))),
            "RetryPolicy::retryable_statuses",
            "600 is not an HTTP status",
        ),
        (
            Box::new(|b: Builder| {
                b.retry(
                    RetryPolicy::default()
                        .budget(RetryBudgetConfig::default().ttl(Duration::from_secs(61))),
                )
            }),
            "retry budget",
            "ttl must be between 1 s and 60 s",
        ),
        (
            Box::new(|b: Builder| {
                b.retry(RetryPolicy::default().budget(RetryBudgetConfig::default().ratio(1001.0)))
            }),
            "retry budget",
            "ratio must be between 0.0 and 1000.0",
        ),
        (
            Box::new(outliers(|c| c.interval = zero)),
            "OutlierDetection::interval",
            "must be at least 1 ms",
        ),
        (
            Box::new(outliers(|c| c.base_ejection_time = zero)),
            "OutlierDetection::base_ejection_time",
            "must be at least 1 ms",
        ),
        (
            Box::new(outliers(|c| c.max_ejection_time = Duration::from_millis(1))),
            "OutlierDetection::max_ejection_time",
            "must be at least base_ejection_time",
        ),
        (
            Box::new(outliers(|c| c.max_ejection_percent = 101)),
            "OutlierDetection::max_ejection_percent",
            "must be at most 100",
        ),
        (
            Box::new(outliers(|c| c.panic_threshold_percent = 101)),
            "OutlierDetection::panic_threshold_percent",
            "must be at most 100",
        ),
        (
            Box::new(stats(|c| c.ewma_decay = zero)),
            "StatsConfig::ewma_decay",
            "must be at least 1 ms",
        ),
        (
            Box::new(stats(|c| c.mean_decay = zero)),
            "StatsConfig::mean_decay",
            "must be at least 1 ms",
        ),
        (
            Box::new(stats(|c| c.breaker_threshold = 0)),
            "StatsConfig::breaker_threshold",
            "must be at least 1",
        ),
        (
            Box::new(stats(|c| c.breaker_max = zero)),
            "StatsConfig::breaker_max",
            "must be at least breaker_base",
        ),
        (
            Box::new(health(|c| c.interval = Duration::from_millis(9))),
            "ActiveHealthCheck::interval",
            "must be at least 10 ms",
        ),
        (
            Box::new(health(|c| c.timeout = zero)),
            "ActiveHealthCheck::timeout",
            "must be at least 1 ms",
        ),
        (
            Box::new(health(|c| c.healthy_threshold = 0)),
            "ActiveHealthCheck::healthy_threshold",
            "must be at least 1",
        ),
        (
            Box::new(health(|c| c.unhealthy_threshold = 0)),
            "ActiveHealthCheck::unhealthy_threshold",
            "must be at least 1",
        ),
    ];
    let n = cases.len();
    for (set, key, reason) in cases {
        assert_eq!(
            refused(set),
            (key.to_owned(), format!("invalid setting `{key}`: {reason}"))
        );
    }
    assert_eq!(n, 28);
}

#[tokio::test]
async fn the_bounds_themselves_are_accepted() {
    let client = || Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for max in [1, 65_536] {
        assert!(builder().max_services(max).build(client()).is_ok(), "{max}");
    }
    let mut edge = RefreshConfig::default();
    (edge.interval, edge.jitter) = (Duration::from_millis(1), 0.5);
    let mut check = ActiveHealthCheck::default();
    (check.interval, check.timeout) = (Duration::from_millis(10), Duration::from_millis(1));
    let lb = builder()
        .on_demand_idle(Duration::from_millis(1))
        .read_timeout(Some(Duration::from_nanos(1)))
        .connect_timeout(None)
        .refresh(edge)
        .retry(RetryPolicy::default().per_try_timeout(Duration::from_nanos(1)))
        .active_health_check(check)
        .build(client());
    assert!(lb.is_ok());
}

/// A declared service id over 253 bytes is refused: requests are routed by
/// their host, so it could never be reached, and a 1 MiB id went whole into
/// every span, log line and metric label.
#[tokio::test]
async fn a_service_id_over_a_host_names_bound_is_refused() {
    let reason =
        "invalid setting `service`: a service id is at most 253 bytes (a host name's bound)";
    for len in [254, 1 << 20] {
        let (key, message) = refused(move |b| b.service("a".repeat(len)));
        assert_eq!(
            (key.as_str(), message.as_str()),
            ("service", reason),
            "{len}"
        );
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    assert!(builder().service("a".repeat(253)).build(client).is_ok());
}

/// A declared service id that is no URI host (a port, a scheme, userinfo,
/// a path, a blank) is refused: requests are routed by their URI's host,
/// so `http://user-service:8080/x` names `user-service` and a service
/// declared as `user-service:8080` was never reached (every request an
/// "unknown service" error). Host forms requests can name still build.
#[tokio::test]
async fn a_service_id_no_request_uri_can_name_is_refused() {
    for id in [
        "user-service:8080",
        "http://user-service",
        "me@user-service",
        "user-service/api",
        "user service",
        "user-service?x",
        "[::1]:80",
    ] {
        let (key, message) = refused(move |b| b.service(id));
        assert_eq!(
            (key.as_str(), message.as_str()),
            (
                "service",
                format!(
                    "invalid setting `service`: `{id}` is not a URI host, so no request can name \
                     it (requests are routed by their URI's host: `http://user-service/...`)"
                )
                .as_str()
            ),
        );
    }
    for id in [
        "User_Service",
        "users.default.svc.",
        "10.0.0.1",
        "[::1]",
        " padded ",
    ] {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        assert!(builder().service(id).build(client).is_ok(), "{id}");
    }
}
