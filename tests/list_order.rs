//! A source that answers in another order each time must not move the
//! rotation of position-based rules (round robin, weighted round robin,
//! and the wrappers over them): a refreshed list keeps the instances it
//! already held in their places and adds new ones after them.
//!
//! Before, the list took the source's order at every refresh while the
//! rules' cursor outlived it, so a list rotated one place against the
//! cursor at each refresh sent every request to one instance: 60 of 60
//! over 3 instances at one request per refresh, under each of the four
//! rules below; the other direction happened to spread. Sources that
//! rotate: a DNS server rotating its records (CoreDNS's `loadbalance`,
//! <https://github.com/coredns/coredns/issues/4083>), a registry's map
//! order, a custom source that shuffles. gRPC's round robin keeps its
//! state across address updates for the same reason
//! (<https://github.com/grpc/grpc-go/issues/2580>,
//! <https://github.com/grpc/grpc-java/pull/2872>).
//!
//! Paused time, a recording inner service (no network).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::{AvailabilityFiltering, RoundRobin, WeightedRoundRobin, ZoneAvoidance};

const RULES: [&str; 4] = [
    "round robin",
    "weighted round robin",
    "availability filtering over round robin",
    "zone avoidance over round robin",
];

/// `127.0.0.1:{port}` for each port, in that order, as a list.
fn list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Over a source listing `first`: sends one request, then gives the
/// source the next list of `then` (cycling) and lets one refresh (1 s)
/// apply it, `rounds` times, under rule `which` of [`RULES`]; returns the
/// requests per port and the list's version at the end.
async fn one_request_per_refresh(
    which: usize,
    first: &str,
    then: &[String],
    rounds: usize,
) -> (BTreeMap<u16, usize>, u64) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    let inner = tower::service_fn(move |req: Request<String>| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().push(req.uri().port_u16().unwrap());
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    });
    let source = StaticSource::new().with_list("svc", first).unwrap();
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_secs(1);
    refresh.jitter = 0.0;
    let builder = LoadBalancer::builder()
        .source(source.clone())
        .service("svc")
        .refresh(refresh)
        .retry(RetryPolicy::none());
    let lb = match which {
        0 => builder.rule(|| RoundRobin::with_start(0)).build(inner),
        1 => builder.rule(WeightedRoundRobin::new).build(inner),
        2 => builder
            .rule(|| AvailabilityFiltering::new(RoundRobin::with_start(0)))
            .build(inner),
        _ => builder
            .rule(|| ZoneAvoidance::new(RoundRobin::with_start(0)))
            .build(inner),
    }
    .expect("balancer");
    assert!(lb.ready_service("svc").await);
    for k in 1..=rounds {
        let request = Request::get("http://svc/").body(String::new()).unwrap();
        lb.clone().oneshot(request).await.expect("answered");
        source.set_list("svc", &then[(k - 1) % then.len()]).unwrap();
        tokio::time::sleep(Duration::from_millis(1_001)).await;
    }
    let mut counts = BTreeMap::new();
    for port in log.lock().unwrap().iter() {
        *counts.entry(*port).or_insert(0) += 1;
    }
    let version = lb.snapshot("svc").expect("svc").version();
    (counts, version)
}

/// The same 3 instances rotated one place at each refresh, both ways: 20
/// requests each, and the list is never replaced (version 1).
#[tokio::test(start_paused = true)]
async fn a_list_rotated_at_each_refresh_keeps_the_rotation_even() {
    let forward = [
        list(&[1000, 1001, 1002]),
        list(&[1001, 1002, 1000]),
        list(&[1002, 1000, 1001]),
    ];
    let forward_then = [forward[1].clone(), forward[2].clone(), forward[0].clone()];
    let backward_then = [forward[2].clone(), forward[1].clone(), forward[0].clone()];
    for (which, rule) in RULES.iter().enumerate() {
        for then in [&forward_then, &backward_then] {
            let (counts, version) = one_request_per_refresh(which, &forward[0], then, 60).await;
            let even = BTreeMap::from([(1000, 20), (1001, 20), (1002, 20)]);
            assert_eq!((&counts, version), (&even, 1), "{rule}");
        }
    }
}

/// 5 instances in a new seeded shuffle at each refresh: 12 requests each
/// of 60 under every rule.
#[tokio::test(start_paused = true)]
async fn a_list_shuffled_at_each_refresh_keeps_the_rotation_even() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut ports = vec![1000, 1001, 1002, 1003, 1004];
    let lists: Vec<String> = (0..60)
        .map(|_| {
            ports.shuffle(&mut rng);
            list(&ports)
        })
        .collect();
    for (which, rule) in RULES.iter().enumerate() {
        let (counts, _) = one_request_per_refresh(which, &lists[0], &lists[1..], 60).await;
        let even: BTreeMap<u16, usize> = (1000..1005).map(|p| (p, 12)).collect();
        assert_eq!(counts, even, "{rule}");
    }
}

/// An instance that joins in the middle of the source's list is placed
/// after those already listed, and the rotation goes on evenly over the 4
/// (one change of list, version 2).
#[tokio::test(start_paused = true)]
async fn a_joining_instance_is_placed_after_those_already_listed() {
    let first = list(&[1000, 1001, 1002]);
    let then = [
        list(&[1003, 1002, 1000, 1001]),
        list(&[1001, 1003, 1000, 1002]),
    ];
    for (which, rule) in RULES.iter().enumerate() {
        let (counts, version) = one_request_per_refresh(which, &first, &then, 61).await;
        // 1 request on the first list, then 60 over the 4.
        let total: usize = counts.values().sum();
        assert_eq!((total, version), (61, 2), "{rule}");
        let fair = counts.values().all(|n| (15..=16).contains(n));
        assert!(fair, "{rule}: {counts:?}");
    }
}
