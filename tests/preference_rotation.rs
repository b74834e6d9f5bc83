//! Picks confined by a preference wrapper (sticky session, hint, subset,
//! same instance) do not split the rotation of the requests without a
//! preference, whatever rotating rule they wrap.
//!
//! Before the fix a request pinned to one instance stepped the wrapped
//! round robin's cursor, so with pinned and unpinned requests in turn every
//! unpinned one went to the same instance (spring-cloud-commons#1144, which
//! Spring fixed for lists of one); and hinted requests to a group of two
//! among four, in turn with unhinted ones, all got the cursor's even steps:
//! every hinted request went to one member of the group.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Request, Response};
use tower::ServiceExt;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::{
    BestAvailable, HintBased, PickContext, RoundRobin, Rule, StickySession, WeightedRoundRobin,
};
use tower_ribbon::snapshot::Snapshot;
use tower_ribbon::{Endpoint, Instance, LoadBalancer};

/// `n` instances on ports 1000.., those in `canary` with metadata
/// `hint=canary`.
fn list(n: u16, canary: &[u16]) -> Arc<Snapshot> {
    let eps = (0..n)
        .map(|p| {
            let mut i = Instance::new("s", "127.0.0.1", 1000 + p).unwrap();
            if canary.contains(&p) {
                i = i.with_metadata("hint", "canary");
            }
            Endpoint::new(i)
        })
        .collect();
    Arc::new(Snapshot::new("s", eps, 1))
}

/// 100 rounds of a pick with `pinned` headers and one without; the ports
/// each kind got.
fn alternate(
    rule: &dyn Rule,
    pinned: &HeaderMap,
    n: u16,
    canary: &[u16],
) -> (BTreeMap<u16, usize>, BTreeMap<u16, usize>) {
    let picker = rule.build(&list(n, canary));
    let free = HeaderMap::new();
    let (mut pins, mut frees) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..100 {
        let p = picker
            .pick(&PickContext::new().with_headers(pinned))
            .unwrap();
        *pins.entry(p.instance().port()).or_insert(0) += 1;
        let f = picker
            .pick(&PickContext::new().with_headers(&free))
            .unwrap();
        *frees.entry(f.instance().port()).or_insert(0) += 1;
    }
    (pins, frees)
}

fn cookie(port: u16) -> HeaderMap {
    let mut h = HeaderMap::new();
    let value = format!("sc-lb-instance-id=127.0.0.1:{port}");
    h.insert(http::header::COOKIE, value.parse().unwrap());
    h
}

fn hint() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-sc-lb-hint", "canary".parse().unwrap());
    h
}

fn even(ports: std::ops::Range<u16>, each: usize) -> BTreeMap<u16, usize> {
    ports.map(|p| (p, each)).collect()
}

#[test]
fn sticky_requests_do_not_move_the_round_robin_of_the_others() {
    for n in [2u16, 4] {
        let rule = StickySession::new(RoundRobin::with_start(0));
        let (pins, frees) = alternate(&rule, &cookie(1000), n, &[]);
        assert_eq!(pins, BTreeMap::from([(1000, 100)]));
        assert_eq!(
            frees,
            even(1000..1000 + n, 100 / n as usize),
            "{n} instances"
        );
    }
}

#[test]
fn hinted_requests_to_a_one_instance_group_do_not_move_the_round_robin() {
    let rule = HintBased::new(RoundRobin::with_start(0));
    let (pins, frees) = alternate(&rule, &hint(), 2, &[0]);
    assert_eq!(pins, BTreeMap::from([(1000, 100)]));
    assert_eq!(frees, even(1000..1002, 50));
}

/// A group of two among four, for every rotating rule: hinted requests
/// take turns inside the group, the others over all four.
#[test]
fn hinted_requests_to_a_group_of_two_take_turns_and_leave_the_others_even() {
    let rules: Vec<(&str, Box<dyn Rule>)> = vec![
        (
            "round_robin",
            Box::new(HintBased::new(RoundRobin::with_start(0))),
        ),
        (
            "weighted_round_robin",
            Box::new(HintBased::new(WeightedRoundRobin::with_start(0))),
        ),
        (
            "best_available",
            Box::new(HintBased::new(BestAvailable::new())),
        ),
    ];
    for (name, rule) in rules {
        let (pins, frees) = alternate(&*rule, &hint(), 4, &[1, 2]);
        assert_eq!(pins, BTreeMap::from([(1001, 50), (1002, 50)]), "{name}");
        assert_eq!(frees, even(1000..1004, 25), "{name}");
    }
}

/// Through the balancer: a client alternating a session call (cookie) and
/// a stateless call spreads the stateless calls over both instances.
#[tokio::test]
async fn through_the_balancer_stateless_calls_alternate() {
    let seen = Arc::new(Mutex::new(Vec::<u16>::new()));
    let log = Arc::clone(&seen);
    let inner = tower::service_fn(move |req: Request<String>| {
        let log = Arc::clone(&log);
        async move {
            log.lock().unwrap().push(req.uri().port_u16().unwrap());
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    });
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:1000,127.0.0.1:1001")
        .unwrap();
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .rule(|| StickySession::new(RoundRobin::new()))
        .retry(RetryPolicy::none())
        .build(inner)
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let mut free = BTreeMap::new();
    for _ in 0..100 {
        let req = Request::get("http://svc/session")
            .header("cookie", "sc-lb-instance-id=127.0.0.1:1000")
            .body(String::new())
            .unwrap();
        lb.clone().oneshot(req).await.unwrap();
        assert_eq!(*seen.lock().unwrap().last().unwrap(), 1000);
        let req = Request::get("http://svc/stateless")
            .body(String::new())
            .unwrap();
        lb.clone().oneshot(req).await.unwrap();
        let port = *seen.lock().unwrap().last().unwrap();
        *free.entry(port).or_insert(0usize) += 1;
    }
    assert_eq!(free, even(1000..1002, 50), "stateless calls");
}
