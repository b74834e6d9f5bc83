//! Names and labels of what the crate records through the [`metrics`]
//! facade. Install any `metrics` recorder (a Prometheus exporter, ...) at
//! start-up, before building the balancer; without one, recording costs next
//! to nothing.
//!
//! Per-instance handles are registered once, on an endpoint's first request,
//! and reused, so the request path does not build label sets.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `ribbon_requests_total` | counter | `service`, `instance`, `outcome` | attempts by how they ended; `outcome` is `success`, `failure_status`, `connect_failure`, `connect_timeout`, `read_timeout`, `error`, `request_error` (the caller's request could not be sent) `declined` (the server's HTTP/2 `GOAWAY` with `ENHANCE_YOUR_CALM` left it unprocessed; the first of an instance each second is `connect_failure`) or `connection_lost` (the server closed the HTTP/2 connection with the stream open; the first stream of each closed connection is `error`, unless the instance declined a request within the last second); the last three are not counted against the instance; or `cancelled` ([`CANCELLED`]: dropped before its result, by the caller's own timeout or a dropped request, or by a panic unwinding through the request, as of a panicking inner service's future; not counted against the instance either) |
//! | `ribbon_request_duration_seconds` | histogram | `service`, `instance` | attempt latency in seconds, every outcome but `cancelled` |
//! | `ribbon_breaker_trips_total` | counter | `service`, `instance` | circuit breaker trips (and re-trips after a failed probe) |
//! | `ribbon_breaker_recoveries_total` | counter | `service`, `instance` | tripped breakers closed by a response |
//! | `ribbon_no_instances_total` | counter | `service` | requests that found no eligible instance |
//! | `ribbon_unknown_service_total` | counter | | requests whose host names no known service (no label: the host comes from the caller, so a label would let anyone add series) |
//! | `ribbon_retries_total` | counter | `service`, `reason` (`connect_failure`, `timeout`, `transport`, `status`) | retries decided, counted before the backoff (a retry whose request is dropped during its backoff counts, though it is never sent) |
//! | `ribbon_retry_budget_exhausted_total` | counter | | retries refused by the retry budget |
//! | `ribbon_ejections_total` | counter | `service`, `instance` | outlier ejections |
//! | `ribbon_ejection_returns_total` | counter | `service` | ejected instances whose ejection ended |
//! | `ribbon_health_checks_total` | counter | `service`, `result` (`healthy`, `unhealthy`) | active health checks |
//! | `ribbon_refresh_success_total` | counter | `service` | successful instance-list fetches |
//! | `ribbon_refresh_failure_total` | counter | `service` | failed fetches (last list kept) |
//! | `ribbon_instances` | gauge | `service` | eligible instances in the current list |
//! | `ribbon_refresh_staleness_seconds` | gauge | `service` | seconds since the last successful fetch, set after every fetch |
//!
//! `instance` is the instance id (Eureka's `instanceId`; `host:port` for
//! static lists). It is recorded only when
//! [`Builder::per_instance_metrics`](crate::service::Builder::per_instance_metrics)
//! is on: a `metrics` recorder keeps every series it has seen, so with
//! instances coming and going (autoscaling, redeploys) per-instance series
//! would grow without bound. Off (the default), those series carry only
//! `service`; on, let the exporter drop idle series (for example
//! `metrics-exporter-prometheus`'s `idle_timeout`).
//!
//! A service started by
//! [`Builder::discover_on_demand`](crate::service::Builder::discover_on_demand)
//! records series only once a fetch lists an instance of it: its name
//! comes from the caller's URI, so made-up names add none. When such a
//! service is evicted after its idle time, its gauges (`ribbon_instances`,
//! `ribbon_refresh_staleness_seconds`) keep the last values set: the
//! `metrics` facade cannot remove a series, and setting them to 0 would
//! read as a service with no instances. Its `ribbon_refresh_*_total`
//! counters stop growing, which tells an evicted service from a live one;
//! an exporter's idle timeout drops its series.
//!
//! Reading them back, here with metrics-util's debugging recorder (in a
//! service, install a Prometheus or other exporter the same way):
//!
//! ```
//! use metrics_util::debugging::DebuggingRecorder;
//!
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! metrics::with_local_recorder(&recorder, || {
//!     metrics::counter!(tower_ribbon::metrics::REFRESH_SUCCESS, "service" => "user-service")
//!         .increment(1);
//! });
//! let names: Vec<String> = snapshotter
//!     .snapshot()
//!     .into_vec()
//!     .into_iter()
//!     .map(|(key, ..)| key.key().name().to_owned())
//!     .collect();
//! assert_eq!(names, ["ribbon_refresh_success_total"]);
//! ```

use metrics::{Counter, Histogram};

use crate::stats::{BreakerTransition, Outcome};

/// Counter: attempts by how they ended. Labels: `service`, `instance`,
/// `outcome`: an [`Outcome`]'s [`outcome_label`], or
/// [`CANCELLED`] for an attempt dropped before its result (the caller's
/// own timeout, a dropped request, a panic unwinding through the request
/// such as a panicking inner service's future, whose fault it may not be;
/// not in the duration histogram, whose latency it does not know).
pub const REQUESTS: &str = "ribbon_requests_total";
/// The `outcome` label of [`REQUESTS`] for an attempt dropped before its
/// result.
pub const CANCELLED: &str = "cancelled";
/// Histogram: attempt latency in seconds. Labels: `service`, `instance`.
pub const REQUEST_DURATION: &str = "ribbon_request_duration_seconds";
/// Counter: breaker trips. Labels: `service`, `instance`.
pub const BREAKER_TRIPS: &str = "ribbon_breaker_trips_total";
/// Counter: breaker recoveries. Labels: `service`, `instance`.
pub const BREAKER_RECOVERIES: &str = "ribbon_breaker_recoveries_total";
/// Counter: requests that found no eligible instance. Label: `service`.
pub const NO_INSTANCES: &str = "ribbon_no_instances_total";
/// Counter: requests whose URI host names no service this balancer knows.
/// No labels.
pub const UNKNOWN_SERVICE: &str = "ribbon_unknown_service_total";
/// Counter: retries made. Labels: `service`, `reason`.
pub const RETRIES: &str = "ribbon_retries_total";
/// Counter: retries refused by the retry budget.
pub const RETRY_BUDGET_EXHAUSTED: &str = "ribbon_retry_budget_exhausted_total";
/// Counter: outlier ejections. Labels: `service`, `instance`.
pub const EJECTIONS: &str = "ribbon_ejections_total";
/// Counter: ejections that ended. Label: `service`. Counted at the first
/// pick or refresh after the end (on an idle service, at most a refresh
/// interval late). An ejection of an instance the balancer forgets (it
/// left the list and its stats are dropped, or its on-demand service is
/// evicted) counts as ended then, so `ribbon_ejections_total −
/// ribbon_ejection_returns_total` reads the instances ejected now.
pub const EJECTION_RETURNS: &str = "ribbon_ejection_returns_total";
/// Counter: active health checks. Labels: `service`, `result`.
pub const HEALTH_CHECKS: &str = "ribbon_health_checks_total";
/// Counter: successful instance-list fetches. Label: `service`.
pub const REFRESH_SUCCESS: &str = "ribbon_refresh_success_total";
/// Counter: failed instance-list fetches. Label: `service`.
pub const REFRESH_FAILURE: &str = "ribbon_refresh_failure_total";
/// Gauge: eligible instances in the current list. Label: `service`.
pub const INSTANCES: &str = "ribbon_instances";
/// Gauge: seconds since the last successful fetch. Label: `service`.
pub const REFRESH_STALENESS: &str = "ribbon_refresh_staleness_seconds";

/// The outcome label of an [`Outcome`].
pub fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::FailureStatus(_) => "failure_status",
        Outcome::ConnectFailure => "connect_failure",
        Outcome::ConnectTimeout => "connect_timeout",
        Outcome::ReadTimeout => "read_timeout",
        Outcome::OtherError => "error",
        Outcome::RequestError => "request_error",
        Outcome::Declined => "declined",
        Outcome::ConnectionLost => "connection_lost",
    }
}

/// Registered handles of one endpoint.
pub(crate) struct EndpointMetrics {
    outcomes: [Counter; 9],
    cancelled: Counter,
    duration: Histogram,
    trips: Counter,
    recoveries: Counter,
}

const OUTCOMES: [Outcome; 9] = [
    Outcome::Success,
    Outcome::FailureStatus(0),
    Outcome::ConnectFailure,
    Outcome::ConnectTimeout,
    Outcome::ReadTimeout,
    Outcome::OtherError,
    Outcome::RequestError,
    Outcome::Declined,
    Outcome::ConnectionLost,
];

fn outcome_index(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Success => 0,
        Outcome::FailureStatus(_) => 1,
        Outcome::ConnectFailure => 2,
        Outcome::ConnectTimeout => 3,
        Outcome::ReadTimeout => 4,
        Outcome::OtherError => 5,
        Outcome::RequestError => 6,
        Outcome::Declined => 7,
        Outcome::ConnectionLost => 8,
    }
}

impl EndpointMetrics {
    /// Handles for one endpoint: labelled with its instance when
    /// `instance` is given, else shared by every instance of the service.
    pub(crate) fn register(service: &str, instance: Option<&str>) -> Self {
        let Some(instance) = instance else {
            let s = service.to_owned();
            return Self {
                outcomes: OUTCOMES.map(|o| {
                    metrics::counter!(REQUESTS, "service" => s.clone(), "outcome" => outcome_label(o))
                }),
                cancelled: metrics::counter!(REQUESTS, "service" => s.clone(), "outcome" => CANCELLED),
                duration: metrics::histogram!(REQUEST_DURATION, "service" => s.clone()),
                trips: metrics::counter!(BREAKER_TRIPS, "service" => s.clone()),
                recoveries: metrics::counter!(BREAKER_RECOVERIES, "service" => s),
            };
        };
        let (s, i) = (service.to_owned(), instance.to_owned());
        Self {
            outcomes: OUTCOMES.map(|o| {
                metrics::counter!(REQUESTS, "service" => s.clone(), "instance" => i.clone(), "outcome" => outcome_label(o))
            }),
            cancelled: metrics::counter!(REQUESTS, "service" => s.clone(), "instance" => i.clone(), "outcome" => CANCELLED),
            duration: metrics::histogram!(REQUEST_DURATION, "service" => s.clone(), "instance" => i.clone()),
            trips: metrics::counter!(BREAKER_TRIPS, "service" => s.clone(), "instance" => i.clone()),
            recoveries: metrics::counter!(BREAKER_RECOVERIES, "service" => s, "instance" => i),
        }
    }

    /// Records one finished attempt.
    pub(crate) fn record(&self, outcome: Outcome, seconds: f64, transition: BreakerTransition) {
        self.outcomes[outcome_index(outcome)].increment(1);
        self.duration.record(seconds);
        self.transition(transition);
    }

    /// Counts one attempt dropped before its result.
    pub(crate) fn cancelled(&self) {
        self.cancelled.increment(1);
    }

    /// Counts a move of the circuit breaker.
    pub(crate) fn transition(&self, transition: BreakerTransition) {
        match transition {
            BreakerTransition::Tripped => self.trips.increment(1),
            BreakerTransition::Recovered => self.recoveries.increment(1),
            BreakerTransition::None => {}
        }
    }
}

/// Counts `returns` ejections of `service` over (none: nothing recorded).
pub(crate) fn record_ejection_returns(service: &str, returns: u32) {
    if returns > 0 {
        metrics::counter!(EJECTION_RETURNS, "service" => service.to_owned())
            .increment(u64::from(returns));
    }
}

/// Records one fetch of `service`'s list: its outcome, the eligible
/// instances and the time since the last success.
pub(crate) fn record_refresh(
    service: &str,
    ok: bool,
    instances: usize,
    since_success: Option<std::time::Duration>,
) {
    let service = service.to_owned();
    let counter = if ok { REFRESH_SUCCESS } else { REFRESH_FAILURE };
    metrics::counter!(counter, "service" => service.clone()).increment(1);
    metrics::gauge!(INSTANCES, "service" => service.clone()).set(instances as f64);
    if let Some(since) = since_success {
        metrics::gauge!(REFRESH_STALENESS, "service" => service).set(since.as_secs_f64());
    }
}
