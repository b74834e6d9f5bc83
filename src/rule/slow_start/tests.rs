use super::super::RoundRobin;
use super::super::test_support::{endpoints, index, instance};
use super::*;

#[test]
fn factor_follows_envoy() {
    let c = SlowStartConfig::new(Duration::from_secs(10));
    assert_eq!(c.factor(Duration::ZERO), 0.1);
    assert_eq!(c.factor(Duration::from_millis(2500)), 0.25);
    assert_eq!(c.factor(Duration::from_secs(5)), 0.5);
    assert_eq!(c.factor(Duration::from_secs(10)), 1.0);
    let fast = c.aggression(2.0).min_weight_percent(0.0);
    assert!((fast.factor(Duration::from_millis(2500)) - 0.5).abs() < 1e-12);
    // 1 ms floor of the time factor, and bad aggression read as 1.
    assert_eq!(fast.factor(Duration::ZERO), (1e-4f64).sqrt());
    assert_eq!(c.aggression(f64::NAN).factor(Duration::from_secs(5)), 0.5);
    assert_eq!(c.aggression(-2.0).factor(Duration::from_secs(5)), 0.5);
    assert_eq!(c.aggression(0.0).factor(Duration::from_secs(5)), 0.5);
    // Envoy: pow(time_factor, 1 / inf) = 1.
    assert_eq!(c.aggression(f64::INFINITY).factor(Duration::ZERO), 1.0);
    assert_eq!(
        c.aggression(f64::INFINITY).factor(Duration::from_secs(5)),
        1.0
    );
    assert_eq!(
        SlowStartConfig::new(Duration::ZERO).factor(Duration::ZERO),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn first_list_is_exempt_and_new_instances_ramp() {
    let old = endpoints(3);
    let rule = SlowStart::new(
        RoundRobin::with_start(0),
        SlowStartConfig::new(Duration::from_secs(10)),
    );
    let first = rule.build(&Arc::new(Snapshot::new("s", old.clone(), 1)));
    assert!(format!("{first:?}").starts_with("RoundRobinPicker"));
    tokio::time::advance(Duration::from_secs(1)).await;
    let new = Endpoint::new(instance("127.0.0.1", 1003));
    let mut list = old;
    list.push(new.clone());
    let p = rule.build(&Arc::new(Snapshot::new("s", list, 2)));
    let seen = new.stats().first_seen();
    // At 50 % of the window the new instance's factor is 0.5: share
    // 0.5 / 3.5 = 1/7, exactly, from the deterministic credit.
    let ctx = PickContext::at(seen + Duration::from_secs(5));
    let hits = (0..7000)
        .filter(|_| index(p.pick(&ctx).unwrap()) == 3)
        .count();
    assert_eq!(hits, 1000);
    // Only the new one eligible: slow start never makes a pick fail.
    let excluded: Vec<Endpoint> = p.snapshot().endpoints()[..3].to_vec();
    let only = ctx.with_excluded(&excluded);
    for _ in 0..20 {
        assert_eq!(index(p.pick(&only).unwrap()), 3);
    }
    assert_eq!(rule.name(), "slow_start");
    assert_eq!(rule.config().window, Duration::from_secs(10));
}
