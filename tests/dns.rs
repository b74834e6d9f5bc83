//! DNS discovery against a real DNS server: dnsmasq on 127.0.0.1 (see
//! `tests/support/dns.rs`), with records changed while the balancer runs.
//!
//! Real time throughout: dnsmasq, the resolver's sockets and the HTTP
//! backends are real, and paused time would fight them. Detection times are
//! printed (`--nocapture`) and bounded by one TTL: the source re-resolves
//! `AHEAD` (one refresh tick plus query time) before the TTL runs out.
//!
//! Public bug reports these tests guard against:
//! - grpc/grpc#12295, grpc/grpc-go#6604 (<https://github.com/grpc/grpc/issues/12295>,
//!   <https://github.com/grpc/grpc-go/issues/6604>): gRPC's DNS resolver
//!   re-resolves only when a connection fails, so pods added by a scale-up
//!   get no traffic while the old ones are healthy.
//!   -> [`scale_up_is_seen_within_one_ttl_while_backends_are_healthy`]
//! - grpc/grpc#22897 (<https://github.com/grpc/grpc/issues/22897>) and
//!   eclipse-vertx/vert.x#6251 (<https://github.com/eclipse-vertx/vert.x/issues/6251>):
//!   the client ignores the record TTL and keeps sending to a stale address
//!   under sustained traffic. -> [`address_swap_under_sustained_traffic_follows_the_ttl`]
//! - grpc/grpc-java#11896 (<https://github.com/grpc/grpc-java/issues/11896>):
//!   the resolver used the server's TTL instead of the configured min/max.
//!   -> [`ttl_floor_and_ceiling_bound_the_requery_interval`]
//! - grpc/grpc-java#6530 (<https://github.com/grpc/grpc-java/issues/6530>):
//!   after a cache hit (or a failure) the resolver never resolved again and
//!   stayed stuck with a bad result. -> [`outage_keeps_the_last_list_and_recovery_is_seen`],
//!   [`ttl_floor_and_ceiling_bound_the_requery_interval`]
//! - kubernetes/dns#234 (<https://github.com/kubernetes/dns/issues/234>):
//!   a headless service scaled to zero answers NXDOMAIN; a client reading
//!   that as a failure keeps its removed pods' addresses.
//!   -> [`a_service_scaled_to_zero_gets_no_traffic`]
//! - SRV semantics all traffic to one address / weights ignored
//!   (RFC 2782 priority groups). -> [`srv_priority_weight_and_reweight_end_to_end`]

#[path = "support/dns.rs"]
mod dns_support;
mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use dns_support::{Dnsmasq, IpBackend, Srv};
use support::{HttpClient, http_client, tally};
use tower_ribbon::discovery::dns::{DnsConfig, DnsError, DnsSource, DnsTarget, IpFamily};
use tower_ribbon::discovery::{InstanceSource, RefreshConfig};
use tower_ribbon::rule::{RoundRobin, WeightedRoundRobin};
use tower_ribbon::{DiscoveryError, LoadBalancer};

/// dnsmasq's `--local-ttl` in these tests.
const TTL: Duration = Duration::from_secs(2);
/// The balancer's refresh tick (the source answers from its cache between
/// DNS queries, so a short tick is cheap).
const TICK: Duration = Duration::from_millis(100);
/// Re-resolve this much before the TTL runs out: one tick plus up to 200 ms
/// for the query on a shared 2-core machine, so changes land within one TTL.
const AHEAD: Duration = Duration::from_millis(300);
/// Bound on seeing a change: one TTL.
const WITHIN: Duration = TTL;

const USERS: &str = "users.default.svc.cluster.local";

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn hosts(lasts: &[u8], name: &str) -> Vec<(IpAddr, String)> {
    lasts
        .iter()
        .map(|l| (IpAddr::V4(ip(*l)), name.to_owned()))
        .collect()
}

fn as_refs(h: &[(IpAddr, String)]) -> Vec<(IpAddr, &str)> {
    h.iter().map(|(i, n)| (*i, n.as_str())).collect()
}

/// A pod's view: search list and ndots:5 as the kubelet writes them, the
/// server dnsmasq, TTL floor 1 s so dnsmasq's 2 s TTL is followed.
fn pod_config(server: &Dnsmasq) -> DnsConfig {
    DnsConfig::kubernetes("default", server.addr())
        .timeout(Duration::from_millis(500))
        .attempts(1)
        .resolve_timeout(Duration::from_secs(3))
        .ttl_floor(Duration::from_secs(1))
        .ttl_ceiling(Duration::from_secs(10))
        .failure_backoff(Duration::from_millis(100))
        .refresh_ahead(AHEAD)
}

fn refresh() -> RefreshConfig {
    {
        let mut c = RefreshConfig::default();
        c.interval = TICK;
        c.jitter = 0.0;
        c.first_fetch_wait = Duration::from_secs(5);
        c
    }
}

fn balancer<R: tower_ribbon::rule::Rule + 'static>(
    source: DnsSource,
    rule: fn() -> R,
) -> LoadBalancer<HttpClient> {
    LoadBalancer::builder()
        .source(source)
        .service("users")
        .rule(rule)
        .refresh(refresh())
        .build(http_client())
        .expect("balancer")
}

/// `ip:port` of the current snapshot, sorted.
fn listed(lb: &LoadBalancer<HttpClient>) -> Vec<String> {
    let mut v: Vec<String> = lb
        .snapshot("users")
        .map(|s| {
            s.endpoints()
                .iter()
                .map(|e| e.authority().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn weights(lb: &LoadBalancer<HttpClient>) -> BTreeMap<String, u32> {
    lb.snapshot("users")
        .map(|s| {
            s.endpoints()
                .iter()
                .map(|e| (e.authority().to_string(), e.instance().weight()))
                .collect()
        })
        .unwrap_or_default()
}

fn authorities(backends: &[&IpBackend]) -> Vec<String> {
    let mut v: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    v.sort();
    v
}

/// Polls `done` every 20 ms until it holds or `limit` has passed since
/// `start` (taken just before the change); the time since `start`, or a
/// panic naming `what`.
async fn wait_until(
    what: &str,
    start: Instant,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Duration {
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not seen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// grpc/grpc#12295, grpc/grpc-go#6604: a scale-up must reach the client
/// without any connection failing. Pods 127.0.0.2 and .3 serve; .4 is added
/// to DNS, then .2 removed; both changes are seen within one TTL and
/// traffic follows, end to end over real HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_is_seen_within_one_ttl_while_backends_are_healthy() {
    let backends = IpBackend::start_same_port(&[ip(2), ip(3), ip(4)])
        .await
        .expect("backends");
    let port = backends[0].port();
    let initial = hosts(&[2, 3], USERS);
    let Some(server) = Dnsmasq::start(2, &as_refs(&initial), &[]) else {
        return;
    };
    // The short name goes through the search list (ndots:5).
    let source = DnsSource::new(pod_config(&server))
        .unwrap()
        .with_service("users", DnsTarget::host("users", port))
        .unwrap();
    let lb = balancer(source.clone(), || RoundRobin::with_start(0));
    let uri = "http://users/";

    let first = tally(&lb, uri, 4).await;
    assert_eq!(first, support::counts(&[("b2", 2), ("b3", 2)]));
    assert_eq!(listed(&lb), authorities(&[&backends[0], &backends[1]]));
    assert_eq!(source.last_ttl("users"), Some(TTL));

    // Scale up: .4 joins.
    let t0 = Instant::now();
    server.set_hosts(&as_refs(&hosts(&[2, 3, 4], USERS)));
    let want = authorities(&[&backends[0], &backends[1], &backends[2]]);
    let added = wait_until("added address", t0, WITHIN, || listed(&lb) == want).await;
    let after = tally(&lb, uri, 6).await;
    assert_eq!(after, support::counts(&[("b2", 2), ("b3", 2), ("b4", 2)]));

    // Scale down: .2 leaves.
    let t0 = Instant::now();
    server.set_hosts(&as_refs(&hosts(&[3, 4], USERS)));
    let want = authorities(&[&backends[1], &backends[2]]);
    let removed = wait_until("removed address", t0, WITHIN, || listed(&lb) == want).await;
    let hits_before = backends[0].hits();
    let after = tally(&lb, uri, 4).await;
    assert_eq!(after, support::counts(&[("b3", 2), ("b4", 2)]));
    assert_eq!(
        backends[0].hits(),
        hits_before,
        "no request to the removed pod"
    );
    println!("A/AAAA: added seen after {added:?}, removed after {removed:?} (TTL {TTL:?})");
    // No refresh failed along the way.
    assert_eq!(lb.refresh_status("users").unwrap().failures, 0);
}

/// grpc/grpc#22897, eclipse-vertx/vert.x#6251: under continuous traffic the
/// address must still follow DNS once the TTL runs out. The only address is
/// swapped from .5 to .6 while requests keep flowing; the old backend stays
/// up (it is stale, not broken), so only DNS can move the traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_swap_under_sustained_traffic_follows_the_ttl() {
    let backends = IpBackend::start_same_port(&[ip(5), ip(6)])
        .await
        .expect("backends");
    let port = backends[0].port();
    let Some(server) = Dnsmasq::start(2, &as_refs(&hosts(&[5], "api.test")), &[]) else {
        return;
    };
    let source = DnsSource::new(pod_config(&server))
        .unwrap()
        .with_service("users", DnsTarget::host("api.test.", port))
        .unwrap();
    let lb = balancer(source, || RoundRobin::with_start(0));
    assert_eq!(
        tally(&lb, "http://users/", 3).await,
        support::counts(&[("b5", 3)])
    );

    let changed = Instant::now();
    server.set_hosts(&as_refs(&hosts(&[6], "api.test")));
    let mut first_new = None;
    while changed.elapsed() < WITHIN + Duration::from_secs(1) {
        let got = tally(&lb, "http://users/", 1).await;
        if got.contains_key("b6") {
            first_new = Some(changed.elapsed());
            break;
        }
        assert_eq!(
            got,
            support::counts(&[("b5", 1)]),
            "only the old pod before the swap"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first_new = first_new.expect("traffic never moved to the new address");
    println!("address swap: first request to the new address after {first_new:?}");
    assert!(first_new <= WITHIN, "{first_new:?}");
    // From then on, only the new one.
    assert_eq!(
        tally(&lb, "http://users/", 5).await,
        support::counts(&[("b6", 5)])
    );
}

/// SRV end to end: two targets at priority 10 with weights 3 and 1 on
/// distinct ports, a backup at priority 20 that gets nothing; weighted
/// round robin sends exactly 6 and 2 of 8. Re-weighting to 1:1 (dnsmasq
/// restarted with new `--srv-host` lines) is seen within one TTL; when the
/// priority-10 targets lose their addresses the backup group takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_priority_weight_and_reweight_end_to_end() {
    let a = IpBackend::start("a", ip(1), 0).await.unwrap();
    let b = IpBackend::start("b", ip(1), 0).await.unwrap();
    let backup = IpBackend::start("backup", ip(1), 0).await.unwrap();
    let name = "_http._tcp.users.default.svc.cluster.local";
    let records = |wa, wb| {
        vec![
            Srv::new(name, "a.test", a.port(), 10, wa),
            Srv::new(name, "b.test", b.port(), 10, wb),
            Srv::new(name, "backup.test", backup.port(), 20, 5),
        ]
    };
    let addrs = hosts(&[1], "a.test")
        .into_iter()
        .chain(hosts(&[1], "b.test"))
        .chain(hosts(&[1], "backup.test"))
        .collect::<Vec<_>>();
    let Some(mut server) = Dnsmasq::start(2, &as_refs(&addrs), &records(3, 1)) else {
        return;
    };
    let source = DnsSource::new(pod_config(&server))
        .unwrap()
        .with_service("users", DnsTarget::srv("_http._tcp.users"))
        .unwrap();
    let lb = balancer(source.clone(), WeightedRoundRobin::new);

    let counts = tally(&lb, "http://users/", 8).await;
    assert_eq!(counts, support::counts(&[("a", 6), ("b", 2)]));
    let w = weights(&lb);
    assert_eq!(w.get(&a.addr().to_string()), Some(&3));
    assert_eq!(w.get(&b.addr().to_string()), Some(&1));
    assert_eq!(w.len(), 2, "the priority-20 backup is not listed: {w:?}");
    let answer = source.answer("users").unwrap();
    assert_eq!(answer.ttl, TTL);
    assert_eq!(answer.instances[0].metadata()["dns.priority"], "10");

    // Re-weight 3:1 -> 1:1.
    let t0 = Instant::now();
    server.set_srv(&records(1, 1));
    let reweighted = wait_until("re-weight", t0, WITHIN, || {
        weights(&lb).values().copied().collect::<Vec<_>>() == [1, 1]
    })
    .await;
    let counts = tally(&lb, "http://users/", 8).await;
    assert_eq!(counts, support::counts(&[("a", 4), ("b", 4)]));
    println!("SRV: re-weight seen after {reweighted:?} (TTL {TTL:?}, includes a dnsmasq restart)");

    // Targets of priority 10 lose their addresses: the backup group is used.
    let t0 = Instant::now();
    server.set_hosts(&as_refs(&hosts(&[1], "backup.test")));
    let want = vec![backup.addr().to_string()];
    let failed_over = wait_until("priority fallback", t0, WITHIN, || listed(&lb) == want).await;
    assert_eq!(
        tally(&lb, "http://users/", 3).await,
        support::counts(&[("backup", 3)])
    );
    assert_eq!(weights(&lb)[&backup.addr().to_string()], 5);
    println!("SRV: fallback to priority 20 after {failed_over:?}");
}

/// A headless service scaled to zero: its name leaves DNS (NXDOMAIN on
/// every search name). That is an answer, not an outage, so the list
/// empties within one TTL and requests fail "no instances" at once; the
/// removed pods' addresses, which Kubernetes hands to other pods, get no
/// request. Before, the answer was an error and the last list stayed until
/// the name came back: both addresses were still listed one TTL later.
/// `RefreshConfig::keep_last_on_empty` keeps the list instead, and counts
/// the fetch as failed. Scaling up again is seen within one TTL.
/// Envoy's `STRICT_DNS` empties its cluster the same way (c-ares'
/// `ARES_ENOTFOUND` and `ARES_ENODATA` are resolutions with no records).
/// kubernetes/dns#234 (<https://github.com/kubernetes/dns/issues/234>,
/// PR #245): a headless service with no ready endpoints answers NXDOMAIN,
/// by the Kubernetes DNS spec. coredns/coredns#1365
/// (<https://github.com/coredns/coredns/issues/1365>) is the flip side, an
/// NXDOMAIN answered by mistake for minutes: the guard's case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_scaled_to_zero_gets_no_traffic() {
    let backends = IpBackend::start_same_port(&[ip(11), ip(12)])
        .await
        .expect("backends");
    let port = backends[0].port();
    let Some(server) = Dnsmasq::start(2, &as_refs(&hosts(&[11, 12], USERS)), &[]) else {
        return;
    };
    let source = || {
        DnsSource::new(pod_config(&server))
            .unwrap()
            .with_service("users", DnsTarget::host("users", port))
            .unwrap()
    };
    let lb = balancer(source(), || RoundRobin::with_start(0));
    let guarded = LoadBalancer::builder()
        .source(source())
        .service("users")
        .rule(|| RoundRobin::with_start(0))
        .refresh({
            let mut c = refresh();
            c.keep_last_on_empty = true;
            c
        })
        .build(http_client())
        .expect("balancer");
    let both = support::counts(&[("b11", 2), ("b12", 2)]);
    assert_eq!(tally(&lb, "http://users/", 4).await, both);
    assert_eq!(tally(&guarded, "http://users/", 4).await, both);
    let all = authorities(&[&backends[0], &backends[1]]);

    let t0 = Instant::now();
    server.set_hosts(&[]);
    let emptied = wait_until("scaled to zero", t0, WITHIN, || listed(&lb).is_empty()).await;
    let hits = (backends[0].hits(), backends[1].hits());
    let request = || {
        http::Request::get("http://users/")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    for _ in 0..4 {
        let error = lb
            .request(request())
            .await
            .expect_err("no instance is left");
        assert!(error.is_no_instances(), "{error}");
    }
    assert_eq!((backends[0].hits(), backends[1].hits()), hits);
    let status = lb.refresh_status("users").unwrap();
    assert_eq!(
        status.failures, 0,
        "an empty answer is no failure: {status:?}"
    );
    // The guarded balancer keeps its list and says the fetch failed.
    wait_until("the guard's failed fetch", t0, WITHIN, || {
        guarded
            .refresh_status("users")
            .unwrap()
            .consecutive_failures
            > 0
    })
    .await;
    assert_eq!(listed(&guarded), all);
    assert_eq!(
        tally(&guarded, "http://users/", 2).await,
        support::counts(&[("b11", 1), ("b12", 1)])
    );

    let t0 = Instant::now();
    server.set_hosts(&as_refs(&hosts(&[12], USERS)));
    let want = authorities(&[&backends[1]]);
    let back = wait_until("scaled up", t0, WITHIN, || listed(&lb) == want).await;
    assert_eq!(
        tally(&lb, "http://users/", 2).await,
        support::counts(&[("b12", 2)])
    );
    println!(
        "scaled to zero: list empty after {emptied:?}; one pod back after {back:?} (TTL {TTL:?})"
    );
}

/// grpc/grpc-java#6530 (a resolver stuck after a bad result): dnsmasq is
/// killed; for three TTLs the balancer keeps the last list and keeps
/// serving, with the failures counted and typed; after a restart with a
/// changed record set the change is seen within one TTL of the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_keeps_the_last_list_and_recovery_is_seen() {
    let backends = IpBackend::start_same_port(&[ip(7), ip(8)])
        .await
        .expect("backends");
    let port = backends[0].port();
    let Some(mut server) = Dnsmasq::start(2, &as_refs(&hosts(&[7], USERS)), &[]) else {
        return;
    };
    let source = DnsSource::new(pod_config(&server))
        .unwrap()
        .with_service("users", DnsTarget::host("users", port))
        .unwrap();
    let lb = balancer(source.clone(), || RoundRobin::with_start(0));
    assert_eq!(
        tally(&lb, "http://users/", 2).await,
        support::counts(&[("b7", 2)])
    );
    let before = listed(&lb);

    let t0 = Instant::now();
    server.stop();
    let outage = t0;
    // Expiry (one TTL), then every search name fails in turn.
    wait_until("a failed refresh", t0, TTL + Duration::from_secs(4), || {
        lb.refresh_status("users").unwrap().consecutive_failures > 0
    })
    .await;
    while outage.elapsed() < 3 * TTL {
        assert_eq!(listed(&lb), before, "the last good list is kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        tally(&lb, "http://users/", 2).await,
        support::counts(&[("b7", 2)])
    );
    let status = lb.refresh_status("users").unwrap();
    assert!(status.consecutive_failures >= 1, "{status:?}");
    assert!(status.since_last_success.unwrap() >= 2 * TTL, "{status:?}");
    let last = status.last_error.expect("an error is recorded");
    let DiscoveryError::Other(inner) = last.as_ref() else {
        panic!("not a DNS error: {last:?}");
    };
    let dns = inner.downcast_ref::<DnsError>().expect("a DnsError");
    assert!(
        matches!(
            dns,
            DnsError::Resolve { .. } | DnsError::Timeout { .. } | DnsError::Backoff { .. }
        ),
        "{dns:?}"
    );
    // The backoff keeps queries far below one per tick: 6 s of ticks is 60.
    let during = source.resolutions();
    assert!(during < 40, "{during} resolutions during the outage");
    assert_eq!(source.answer("users").unwrap().instances.len(), 1);

    // DNS comes back with .8 added.
    server.set_hosts(&as_refs(&hosts(&[7, 8], USERS)));
    server.restart();
    let t0 = Instant::now();
    let want = authorities(&[&backends[0], &backends[1]]);
    let recovered = wait_until("recovery", t0, WITHIN, || listed(&lb) == want).await;
    assert_eq!(
        tally(&lb, "http://users/", 4).await,
        support::counts(&[("b7", 2), ("b8", 2)])
    );
    assert_eq!(lb.refresh_status("users").unwrap().consecutive_failures, 0);
    println!(
        "outage: last list kept for {:?}, recovery seen {recovered:?} after restart",
        3 * TTL
    );
}

/// grpc/grpc-java#11896 (server TTL used instead of the configured bounds)
/// and #6530 (no re-resolution after a cache hit): with TTL 0 and a 1 s
/// floor DNS is asked about once a second, not once per fetch; with TTL
/// 3600 and a 1 s ceiling a change is seen within about a second, and the
/// answer reports the raw TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_floor_and_ceiling_bound_the_requery_interval() {
    let Some(zero) = Dnsmasq::start(0, &as_refs(&hosts(&[2], "zero.test")), &[]) else {
        return;
    };
    let source = DnsSource::new(
        DnsConfig::new([zero.addr()])
            .ttl_floor(Duration::from_secs(1))
            .ttl_ceiling(Duration::from_secs(1)),
    )
    .unwrap()
    .with_service("zero", DnsTarget::host("zero.test.", 80))
    .unwrap();
    let start = Instant::now();
    let mut fetches = 0;
    while start.elapsed() < Duration::from_millis(2500) {
        assert_eq!(source.fetch("zero").await.unwrap().len(), 1);
        fetches += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Resolutions at about 0, 1 and 2 s: three, whatever the fetch count.
    assert!(fetches > 50, "{fetches}");
    assert_eq!(source.resolutions(), 3, "{fetches} fetches");
    let answer = source.answer("zero").unwrap();
    assert_eq!(answer.ttl, Duration::ZERO);
    assert_eq!(answer.valid_for, Duration::from_secs(1));

    let Some(long) = Dnsmasq::start(3600, &as_refs(&hosts(&[2], "long.test")), &[]) else {
        return;
    };
    let source = DnsSource::new(
        DnsConfig::new([long.addr()])
            .ttl_floor(Duration::from_millis(500))
            .ttl_ceiling(Duration::from_secs(1)),
    )
    .unwrap()
    .with_service("long", DnsTarget::host("long.test.", 80))
    .unwrap();
    assert_eq!(source.fetch("long").await.unwrap()[0].host(), "127.0.0.2");
    assert_eq!(source.last_ttl("long"), Some(Duration::from_secs(3600)));
    assert_eq!(
        source.answer("long").unwrap().valid_for,
        Duration::from_secs(1)
    );
    let changed = Instant::now();
    long.set_hosts(&as_refs(&hosts(&[3], "long.test")));
    loop {
        let list = source.fetch("long").await.unwrap();
        if list[0].host() == "127.0.0.3" {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_millis(1500),
            "ceiling not applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "TTL 3600 with ceiling 1 s: change seen after {:?}",
        changed.elapsed()
    );
}

/// Search list and ndots as the kubelet sets them, typed errors, bounded
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_list_errors_and_bounds() {
    let mut records = hosts(&[2, 3], USERS);
    records.extend(hosts(&[9], "orders.shop.svc.cluster.local"));
    let many: Vec<(IpAddr, String)> = (10..50u8)
        .map(|l| (IpAddr::V4(ip(l)), "big.test".to_owned()))
        .collect();
    records.extend(many);
    records.push(("::1".parse().unwrap(), "dual.test".to_owned()));
    records.push((IpAddr::V4(ip(2)), "dual.test".to_owned()));
    let Some(server) = Dnsmasq::start(2, &as_refs(&records), &[]) else {
        return;
    };
    let source = DnsSource::new(pod_config(&server).max_records(8))
        .unwrap()
        .with_service("users", DnsTarget::host("users", 80))
        .unwrap()
        .with_service("orders", DnsTarget::host("orders.shop", 80))
        .unwrap()
        .with_service("absolute", DnsTarget::host("users.", 80))
        .unwrap()
        .with_service("missing", DnsTarget::host("nobody", 80))
        .unwrap()
        .with_service("big", DnsTarget::host("big.test.", 80))
        .unwrap()
        .with_service("nosrv", DnsTarget::srv("_http._tcp.users"))
        .unwrap()
        .with_service(
            "dual",
            DnsTarget::host("dual.test.", 8080).with_secure(true),
        )
        .unwrap();

    // `users` -> users.default.svc.cluster.local (first search domain).
    let users = source.fetch("USERS").await.unwrap();
    let shown: Vec<String> = users.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["http://127.0.0.2:80", "http://127.0.0.3:80"]);
    assert_eq!(users[0].metadata()["dns.name"], "users");
    // `orders.shop` has one dot < ndots 5: searched, found under svc.cluster.local.
    assert_eq!(source.fetch("orders").await.unwrap()[0].host(), "127.0.0.9");
    // A final dot disables the search list: `users.` does not exist. A name
    // gone from DNS (NXDOMAIN on every search name) is an answer, not a
    // failure: no instance (an error before, so the last list stayed).
    assert!(source.fetch("absolute").await.unwrap().is_empty());
    assert!(source.fetch("missing").await.unwrap().is_empty());
    // The empty answer is cached like any other: within its TTL the source
    // does not ask again.
    let asked = source.resolutions();
    assert!(source.fetch("missing").await.unwrap().is_empty());
    assert_eq!(source.resolutions(), asked);
    assert_eq!(source.answer("missing").unwrap().instances.len(), 0);
    // No SRV records: no instance either.
    assert!(source.fetch("nosrv").await.unwrap().is_empty());
    // 40 addresses, max_records 8: 8 of them in address order, flagged;
    // which 8 depends on the client's subset seed, so clients differ (the
    // 8 lowest for every client before).
    let big = source.fetch("big").await.unwrap();
    assert_eq!(big.len(), 8);
    let hosts: Vec<IpAddr> = big.iter().map(|i| i.host().parse().unwrap()).collect();
    assert!(hosts.windows(2).all(|w| w[0] < w[1]), "{hosts:?}");
    assert!(
        hosts
            .iter()
            .all(|h| (IpAddr::V4(ip(10))..=IpAddr::V4(ip(49))).contains(h))
    );
    assert!(source.answer("big").unwrap().truncated);
    let mut subsets = std::collections::BTreeSet::new();
    for seed in 0..4 {
        let seeded = DnsSource::new(pod_config(&server).max_records(8).subset_seed(seed))
            .unwrap()
            .with_service("big", DnsTarget::host("big.test.", 80))
            .unwrap();
        let kept: Vec<String> = seeded
            .fetch("big")
            .await
            .unwrap()
            .iter()
            .map(|i| i.host().to_owned())
            .collect();
        assert_eq!(kept.len(), 8);
        subsets.insert(kept);
    }
    assert_eq!(subsets.len(), 4, "4 seeds, 4 subsets: {subsets:?}");
    // A and AAAA both kept (dual-stack headless service); `IpFamily` narrows.
    let dual: Vec<String> = source
        .fetch("dual")
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(dual, ["https://127.0.0.2:8080", "https://[::1]:8080"]);
    let v6 = DnsSource::new(pod_config(&server).ip_family(IpFamily::V6))
        .unwrap()
        .with_service("dual", DnsTarget::host("dual.test.", 8080))
        .unwrap();
    let only: Vec<String> = v6
        .fetch("dual")
        .await
        .unwrap()
        .iter()
        .map(|i| i.host().to_owned())
        .collect();
    assert_eq!(only, ["::1"]);
    // Re-targeting a service drops its cached answer: the next fetch asks DNS.
    source
        .set_service("users", DnsTarget::host("orders.shop", 80))
        .unwrap();
    assert_eq!(source.fetch("users").await.unwrap()[0].host(), "127.0.0.9");
    // Unknown service id.
    assert!(matches!(
        source.fetch("other").await.unwrap_err(),
        DiscoveryError::UnknownService { .. }
    ));
    // Configuration errors are typed too.
    assert!(matches!(
        source.set_service(
            "x",
            DnsTarget::host(format!("{}.test", "a".repeat(250)), 80)
        ),
        Err(DnsError::NameTooLong { .. })
    ));
    assert!(matches!(
        source.set_service("x", DnsTarget::host("bad name", 80)),
        Err(DnsError::InvalidName { .. })
    ));
}

/// A server that never answers: the whole resolution is cut at
/// `resolve_timeout` with a typed error, whatever the search list length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out_within_the_bound() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = DnsConfig::kubernetes("default", silent.local_addr().unwrap())
        .timeout(Duration::from_millis(200))
        .attempts(2)
        .resolve_timeout(Duration::from_millis(600));
    let source = DnsSource::new(config)
        .unwrap()
        .with_service("users", DnsTarget::host("users", 80))
        .unwrap();
    let start = Instant::now();
    let err = source.fetch("users").await.unwrap_err();
    let took = start.elapsed();
    let DiscoveryError::Other(inner) = err else {
        panic!("{err:?}")
    };
    let dns = inner.downcast_ref::<DnsError>().unwrap();
    assert!(matches!(dns, DnsError::Timeout { .. }), "{dns:?}");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(900),
        "{took:?}"
    );
}
