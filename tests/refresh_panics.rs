//! A panic in code the background refresh runs for the user (a custom
//! [`InstanceSource`], a custom [`Rule`]) is a failed refresh: the last
//! list and its picker stay, the failure is counted with a
//! `DiscoveryError::Panicked` naming what panicked, and the refresh goes on
//! at its usual pace.
//!
//! Before, one panic ended the refresh task for good, silently: the list
//! of that moment stayed forever, so instances the registry removed later
//! kept their traffic and new ones never got any. The peers guard their
//! loops the same way: Ribbon's `PollingServerListUpdater` catches a failed
//! update cycle and runs the next one, Eureka's `TimedSupervisorTask`
//! catches `Throwable`; a loop that did not died on the first error
//! (fmcejudo/quarkus-eureka#11: "the eureka client stops sending heartbeats
//! and registration requests" after one uncaught exception;
//! spring-cloud/spring-cloud-netflix#1416: a refresh task that stopped
//! running left invalid IP addresses in the cache).
//!
//! Paused time, scripted sources; no network.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use tower::ServiceExt;
use tower_ribbon::discovery::{FetchFuture, InstanceSource, RefreshConfig, Snapshot};
use tower_ribbon::instance::Instance;
use tower_ribbon::rule::{Picker, RoundRobin, Rule};
use tower_ribbon::{DiscoveryError, LoadBalancer};

const INTERVAL: Duration = Duration::from_secs(10);

/// What one fetch does.
#[derive(Clone)]
enum Step {
    List(Vec<u16>),
    /// Panics inside the returned future, after one pending poll.
    PanicWhilePolled,
    /// Panics in `fetch` itself, before any future exists.
    PanicWhileMaking,
}

/// Plays its steps in order, then repeats the last one.
#[derive(Clone)]
struct Scripted {
    steps: Arc<Mutex<Vec<Step>>>,
    fetches: Arc<AtomicUsize>,
}

impl Scripted {
    fn new(steps: Vec<Step>) -> Self {
        Self {
            steps: Arc::new(Mutex::new(steps)),
            fetches: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl InstanceSource for Scripted {
    fn fetch<'a>(&'a self, _service_id: &'a str) -> FetchFuture<'a> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst);
        let step = {
            let steps = self.steps.lock().unwrap();
            steps[n.min(steps.len() - 1)].clone()
        };
        match step {
            Step::List(ports) => Box::pin(std::future::ready(Ok(ports
                .iter()
                .map(|&p| Instance::new("user-service", "127.0.0.1", p).unwrap())
                .collect()))),
            Step::PanicWhilePolled => Box::pin(async {
                tokio::task::yield_now().await;
                panic!("registry client bug: index out of bounds")
            }),
            Step::PanicWhileMaking => panic!("source bug before any future"),
        }
    }
}

/// Round robin, except that its build panics for a list of `panic_on`
/// instances, `times` times.
#[derive(Debug)]
struct PanickyRule {
    panic_on: usize,
    times: AtomicUsize,
}

impl Rule for PanickyRule {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        if snapshot.len() == self.panic_on
            && self
                .times
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| t.checked_sub(1))
                .is_ok()
        {
            panic!("rule bug on {} instances", snapshot.len());
        }
        RoundRobin::with_start(0).build(snapshot)
    }

    fn name(&self) -> &'static str {
        "panicky"
    }
}

fn config() -> RefreshConfig {
    let mut config = RefreshConfig::default();
    config.interval = INTERVAL;
    config.jitter = 0.0;
    config
}

type Echo = tower::util::ServiceFn<
    fn(Request<()>) -> std::future::Ready<Result<http::Response<String>, Infallible>>,
>;

fn echo() -> Echo {
    tower::service_fn(|req: Request<()>| {
        std::future::ready(Ok(http::Response::new(req.uri().to_string())))
    })
}

fn ports(lb: &LoadBalancer<Echo>) -> Vec<u16> {
    lb.snapshot("user-service")
        .map(|s| s.endpoints().iter().map(|e| e.instance().port()).collect())
        .unwrap_or_default()
}

/// The ports of `n` requests, in order.
async fn sent_to(lb: &LoadBalancer<Echo>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let req = Request::get("http://user-service/x").body(()).unwrap();
        let response = lb.clone().oneshot(req).await.unwrap();
        out.push(response.into_body().into_inner());
    }
    out
}

fn counts(lb: &LoadBalancer<Echo>) -> (u64, u64, u64, String) {
    let s = lb.refresh_status("user-service").unwrap();
    let error = s.last_error.map(|e| e.to_string()).unwrap_or_default();
    (s.successes, s.failures, s.consecutive_failures, error)
}

/// A balancer of `user-service` over `source` with `rule`: its first list
/// is `[1, 2]`, its second refresh fails with `error` and keeps that list
/// (2 requests go to 1 then 2).
async fn first_refresh_fails<R: Rule>(
    source: &Scripted,
    rule: impl Fn() -> R + Send + Sync + 'static,
    error: &str,
) -> LoadBalancer<Echo> {
    let lb = LoadBalancer::builder()
        .source(source.clone())
        .service("user-service")
        .rule(rule)
        .refresh(config())
        .build(echo())
        .unwrap();
    assert!(lb.ready_service("user-service").await);
    assert_eq!(ports(&lb), [1, 2]);
    tokio::time::sleep(INTERVAL + Duration::from_millis(1)).await;
    assert_eq!(counts(&lb), (1, 1, 1, error.to_owned()));
    assert_eq!(ports(&lb), [1, 2]);
    assert_eq!(
        sent_to(&lb, 2).await,
        ["http://127.0.0.1:1/x", "http://127.0.0.1:2/x"]
    );
    lb
}

/// A source panicking inside its future, then in `fetch` itself: two
/// failed refreshes that keep the list, then the next list is applied on
/// schedule. Before, the first panic ended the task: the list stayed
/// `[1, 2]` for good and 0 of 4 requests reached port 3.
#[tokio::test(start_paused = true)]
async fn a_panicking_source_is_a_failed_refresh_and_the_refresh_goes_on() {
    let source = Scripted::new(vec![
        Step::List(vec![1, 2]),
        Step::PanicWhilePolled,
        Step::PanicWhileMaking,
        Step::List(vec![3, 4]),
    ]);
    let lb = first_refresh_fails(
        &source,
        || RoundRobin::with_start(0),
        "the instance source panicked: registry client bug: index out of bounds; keeping the last list",
    )
    .await;
    let status = lb.refresh_status("user-service").unwrap();
    assert!(matches!(
        status.last_error.as_deref(),
        Some(DiscoveryError::Panicked {
            during: "the instance source",
            ..
        })
    ));

    tokio::time::sleep(INTERVAL).await;
    assert_eq!(
        counts(&lb),
        (
            1,
            2,
            2,
            "the instance source panicked: source bug before any future; keeping the last list"
                .to_owned()
        )
    );
    assert_eq!(ports(&lb), [1, 2]);

    tokio::time::sleep(INTERVAL).await;
    assert_eq!(counts(&lb), (2, 2, 0, String::new()));
    assert_eq!(ports(&lb), [3, 4]);
    // A new membership starts its rotation at an offset drawn from the
    // rule's seeded generator (`Cursor::anchor`): turns in either order.
    let sent = sent_to(&lb, 4).await;
    assert!(
        sent[0] != sent[1] && sent[0] == sent[2] && sent[1] == sent[3],
        "{sent:?}"
    );
    let mut first_two = [sent[0].as_str(), sent[1].as_str()];
    first_two.sort_unstable();
    assert_eq!(first_two, ["http://127.0.0.1:3/x", "http://127.0.0.1:4/x"]);
    assert_eq!(source.fetches.load(Ordering::SeqCst), 4);
}

/// A rule whose build panics for the new list: the refresh fails, the last
/// list and its picker stay (list and picker never disagree), and the next
/// refresh builds the new list once the rule does not panic. Before, the
/// panic ended the task and the list stayed `[1, 2]` for good.
#[tokio::test(start_paused = true)]
async fn a_rule_panicking_on_a_new_list_keeps_the_last_list_and_its_picker() {
    let source = Scripted::new(vec![Step::List(vec![1, 2]), Step::List(vec![3, 4, 5])]);
    let lb = first_refresh_fails(
        &source,
        || PanickyRule {
            panic_on: 3,
            times: AtomicUsize::new(1),
        },
        "the rule panicked: rule bug on 3 instances; keeping the last list",
    )
    .await;

    tokio::time::sleep(INTERVAL).await;
    assert_eq!(counts(&lb), (2, 1, 0, String::new()));
    assert_eq!(ports(&lb), [3, 4, 5]);
    assert_eq!(
        sent_to(&lb, 3).await,
        [
            "http://127.0.0.1:3/x",
            "http://127.0.0.1:4/x",
            "http://127.0.0.1:5/x"
        ]
    );
}
