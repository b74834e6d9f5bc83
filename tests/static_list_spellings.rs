//! A static list naming one server in two spellings lists it once
//! (helper 148).
//!
//! A DNS name's case does not change the name (RFC 4343), and addresses
//! already came out in one form (`127.0.0.1:80` beside `http://127.0.0.1`,
//! `[::1]` beside `[0::1]`). Names were kept as written, so
//! `svc-a.test:1,SVC-A.test:1,svc-b.test:1` made two instances of one
//! server: 20 of 30 round-robin requests to it where one server's share is
//! 15, and its breaker, ejection and in-flight counts split between the
//! two. Now the first spelling is kept. Kept apart (helper 149, against the
//! first version): a name with and without its final dot (absolute, it
//! skips the resolver's search list: `localhost.` does not resolve here
//! where `localhost` does), and IPv6 zone ids differing in case (interface
//! names are case-sensitive on Linux).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::{RefreshConfig, StaticSource, parse_list_of_servers};
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::RoundRobin;

/// Sends 30 requests over `list`; requests per lower-cased host without a final dot.
async fn shares(list: &str) -> BTreeMap<String, usize> {
    let log = Arc::new(Mutex::new(BTreeMap::new()));
    let seen = Arc::clone(&log);
    let inner = tower::service_fn(move |req: Request<String>| {
        let seen = Arc::clone(&seen);
        async move {
            let host = req.uri().host().unwrap().to_ascii_lowercase();
            let host = host.trim_end_matches('.').to_owned();
            *seen.lock().unwrap().entry(host).or_insert(0) += 1;
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    });
    let source = StaticSource::new().with_list("svc", list).unwrap();
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_secs(1);
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .refresh(refresh)
        .retry(RetryPolicy::none())
        .rule(|| RoundRobin::with_start(0))
        .build(inner)
        .unwrap();
    assert!(lb.ready_service("svc").await);
    for _ in 0..30 {
        let req = Request::get("http://svc/").body(String::new()).unwrap();
        lb.request(req).await.unwrap();
    }
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn exact_duplicates_are_listed_once() {
    let got = shares("svc-a.test:1,svc-a.test:1,svc-b.test:1").await;
    assert_eq!(got["svc-a.test"], 15, "{got:?}");
}

#[tokio::test]
async fn a_host_listed_in_two_cases_gets_one_share() {
    let got = shares("svc-a.test:1,SVC-A.test:1,svc-b.test:1").await;
    assert_eq!(
        (got["svc-a.test"], got["svc-b.test"]),
        (15, 15),
        "one server named in two cases takes two shares: {got:?}"
    );
}

#[test]
fn the_first_spelling_is_kept() {
    let listed = parse_list_of_servers(
        "svc",
        "a.test:1, A.TEST:1, a.test.:1, a.test:2, https://a.test:1, [fe80::1%25eth0]:8, \
         [fe80::1%25ETH0]:8, [FE80::1%25eth0]:8",
    )
    .unwrap();
    let got: Vec<String> = listed.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "http://a.test:1",
            "http://a.test.:1",
            "http://a.test:2",
            "https://a.test:1",
            "http://[fe80::1%25eth0]:8",
            "http://[fe80::1%25ETH0]:8",
        ]
    );
}
