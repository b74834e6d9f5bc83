//! A static list naming one IPv4 server twice, once as its IPv4-mapped
//! IPv6 form (`[::ffff:127.0.0.1]:P`), lists it twice: that server takes
//! two round-robin shares (20 of 30 requests beside one other server,
//! where one share is 15), and its breaker / ejection / in-flight counts
//! are split between two instances.
//!
//! `parse_list_of_servers`'s docs promise that "an entry naming a server an
//! earlier one named (the same name in another case, the same address
//! written another way)" is dropped, the first spelling kept; the DNS
//! source already folds an IPv4-mapped AAAA into its A address
//! (`records::build`, `to_canonical`), the static list does not.

mod support;

use std::time::Duration;

use support::backend::Backend;
use support::{http_client, tally};
use tower_ribbon::LoadBalancer;
use tower_ribbon::discovery::{RefreshConfig, StaticSource, parse_list_of_servers};
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::RoundRobin;

#[test]
fn an_ipv4_mapped_spelling_is_the_same_server() {
    let listed = parse_list_of_servers("svc", "127.0.0.1:8080, [::ffff:127.0.0.1]:8080").unwrap();
    let shown: Vec<String> = listed.iter().map(ToString::to_string).collect();
    // Observed: ["http://127.0.0.1:8080", "http://[::ffff:127.0.0.1]:8080"].
    assert_eq!(
        shown,
        ["http://127.0.0.1:8080"],
        "one server listed twice: {shown:?}"
    );
}

#[tokio::test]
async fn an_ipv4_mapped_spelling_takes_a_second_share() {
    let a = Backend::start("a").await.unwrap();
    let b = Backend::start("b").await.unwrap();
    let list = format!(
        "127.0.0.1:{pa}, [::ffff:127.0.0.1]:{pa}, 127.0.0.1:{pb}",
        pa = a.port(),
        pb = b.port()
    );
    let mut refresh = RefreshConfig::default();
    refresh.interval = Duration::from_secs(1);
    let lb = LoadBalancer::builder()
        .source(StaticSource::new().with_list("svc", &list).unwrap())
        .service("svc")
        .refresh(refresh)
        .retry(RetryPolicy::none())
        .rule(|| RoundRobin::with_start(0))
        .build(http_client())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let got = tally(&lb, "http://svc/", 30).await;
    // Observed: {"a": 20, "b": 10}: both spellings reach server `a`.
    assert_eq!(
        (got.get("a").copied(), got.get("b").copied()),
        (Some(15), Some(15)),
        "one server named in two spellings takes two shares: {got:?}"
    );
}
