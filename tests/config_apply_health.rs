//! `RibbonConfig::apply` over an active health check and a rule set in code
//! (helper 205): a file's health path or interval changes that setting of
//! the code's check (before, a path reset the interval to Ribbon's 30 s, an
//! interval alone did nothing, `configurations: health-check` replaced the
//! path), and a second file's wrapper keys wrap the code's rule, not the
//! first file's wrappers (slow start applied twice gave factor 0.01 for
//! 0.1).
mod support;

use std::time::Duration;

use support::backend::Backend;
use support::{http_client, tally};
use tower_ribbon::LoadBalancer;
use tower_ribbon::config::RibbonConfig;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::ActiveHealthCheck;

/// The check `apply` leaves on a builder whose code check probes `/code`
/// every 5 s (no jitter, thresholds 1 and 4, timeout 700 ms), given the
/// file's `keys`.
fn applied(keys: &str) -> ActiveHealthCheck {
    let mut check = ActiveHealthCheck::new("/code");
    check.interval = Duration::from_secs(5);
    check.interval_jitter = Duration::ZERO;
    check.timeout = Duration::from_millis(700);
    check.healthy_threshold = 1;
    check.unhealthy_threshold = 4;
    let config =
        RibbonConfig::from_properties_str(&format!("svc.ribbon.listOfServers=127.0.0.1:1\n{keys}"))
            .unwrap();
    let builder = config
        .apply("svc", LoadBalancer::builder().active_health_check(check))
        .unwrap();
    builder.get_active_health_check().cloned().unwrap()
}

/// Each health key changes its own setting of the code's check; the
/// others (thresholds, timeout, jitter) stay. Before: a path key gave
/// Ribbon's 30 s interval, an interval key alone did nothing, and
/// `configurations: health-check` replaced the path with
/// `/actuator/health`.
#[test]
fn health_keys_change_only_their_setting_of_the_code_check() {
    let c = applied("svc.ribbon.HealthCheckPath=/file\n");
    assert_eq!(
        (c.path.as_str(), c.interval, c.interval_jitter, c.timeout),
        (
            "/file",
            Duration::from_secs(5),
            Duration::ZERO,
            Duration::from_millis(700)
        )
    );
    assert_eq!((c.healthy_threshold, c.unhealthy_threshold), (1, 4));
    let c = applied("svc.ribbon.NFLoadBalancerPingInterval=1\n");
    assert_eq!(
        (c.path.as_str(), c.interval, c.interval_jitter, c.timeout),
        (
            "/code",
            Duration::from_secs(1),
            Duration::from_millis(100),
            Duration::from_millis(700)
        )
    );
    let c = applied(
        "spring.cloud.loadbalancer.configurations=health-check\n\
         spring.cloud.loadbalancer.health-check.interval=100ms\n",
    );
    // The code's 700 ms probe timeout stays: the interval key names the
    // interval only (before, it became the timeout too, so a 30 s
    // interval made each probe of a hung instance wait 30 s; helper 210).
    assert_eq!(
        (c.path.as_str(), c.interval, c.timeout),
        (
            "/code",
            Duration::from_millis(100),
            Duration::from_millis(700)
        )
    );
    let c = applied("spring.cloud.loadbalancer.health-check.interval=30s\n");
    assert_eq!(
        (c.interval, c.interval_jitter, c.timeout),
        (
            Duration::from_secs(30),
            Duration::from_secs(1),
            Duration::from_millis(700)
        )
    );
    // No health key: the code's check as it was.
    let c = applied("");
    assert_eq!(
        (c.path.as_str(), c.interval),
        ("/code", Duration::from_secs(5))
    );
}

async fn slow_start_share(applies: usize) -> (usize, String) {
    let mut bs = Vec::new();
    for n in ["a", "b", "c"] {
        bs.push(Backend::start(n).await.unwrap());
    }
    let addr = |i: usize| format!("127.0.0.1:{}", bs[i].port());
    let text = format!(
        "svc.ribbon.listOfServers={},{}\nsvc.ribbon.SlowStartWindow=600000\nsvc.ribbon.ServerListRefreshInterval=50\n",
        addr(0),
        addr(1)
    );
    let config = RibbonConfig::from_properties_str(&text).unwrap();
    let mut builder = LoadBalancer::builder();
    for _ in 0..applies {
        builder = config.apply("svc", builder).unwrap();
    }
    let src = StaticSource::new()
        .with_list("svc", &format!("{},{}", addr(0), addr(1)))
        .unwrap();
    let lb = match builder.source(src.clone()).build(http_client()) {
        Ok(lb) => lb,
        Err(e) => return (usize::MAX, format!("build error: {e}")),
    };
    assert!(lb.ready_service("svc").await);
    src.set_list("svc", &format!("{},{},{}", addr(0), addr(1), addr(2)))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let t = tally(&lb, "http://svc/x", 420).await;
    (t.get("c").copied().unwrap_or(0), format!("{t:?}"))
}

/// The same file applied twice (a base file and an override that repeats
/// the key): the new instance's share should be the slow start's once.
#[tokio::test]
async fn s1_slow_start_applied_twice_compounds() {
    let once = slow_start_share(1).await;
    let twice = slow_start_share(2).await;
    println!("s1: once {once:?} twice {twice:?}");
    assert!(twice.0 * 2 >= once.0, "once {once:?} twice {twice:?}");
}

/// Two files: the second changes `hint.svc`. Spring (the later property
/// source wins) routes to `b`-hinted instances only.
#[tokio::test]
async fn s2_hint_second_file_wins() {
    let a = Backend::start("ia").await.unwrap();
    let b = Backend::start("ib").await.unwrap();
    let c = Backend::start("ic").await.unwrap();
    let inst = format!(
        "spring.cloud.discovery.client.simple.instances.svc[0].uri=http://127.0.0.1:{}\n\
         spring.cloud.discovery.client.simple.instances.svc[0].metadata.hint=a\n\
         spring.cloud.discovery.client.simple.instances.svc[1].uri=http://127.0.0.1:{}\n\
         spring.cloud.discovery.client.simple.instances.svc[1].metadata.hint=b\n\
         spring.cloud.discovery.client.simple.instances.svc[2].uri=http://127.0.0.1:{}\n",
        a.port(),
        b.port(),
        c.port()
    );
    let f1 =
        RibbonConfig::from_properties_str(&format!("{inst}spring.cloud.loadbalancer.hint.svc=a\n"))
            .unwrap();
    let f2 =
        RibbonConfig::from_properties_str(&format!("{inst}spring.cloud.loadbalancer.hint.svc=b\n"))
            .unwrap();
    let builder = f2
        .apply("svc", f1.apply("svc", LoadBalancer::builder()).unwrap())
        .unwrap();
    let lb = match builder.build(http_client()) {
        Ok(lb) => lb,
        Err(e) => panic!("build error: {e}"),
    };
    assert!(lb.ready_service("svc").await);
    let t = tally(&lb, "http://svc/x", 12).await;
    println!("s2: {t:?}");
    assert_eq!(t.get("ib").copied(), Some(12), "{t:?}");
}
