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

/// Picks of `port` in `n` picks at `at`.
fn hits(p: &dyn Picker, at: Instant, port: u16, n: usize) -> usize {
    let ctx = PickContext::at(at);
    (0..n)
        .filter(|_| p.pick(&ctx).unwrap().instance().port() == port)
        .count()
}

#[tokio::test(start_paused = true)]
async fn every_instance_new_and_instances_joining_and_leaving() {
    // The first fetch lists nothing: every later instance is new, and the
    // shares follow Envoy's weights relative to each other.
    let rule = SlowStart::new(
        RoundRobin::with_start(0),
        SlowStartConfig::new(Duration::from_secs(10)),
    );
    let t0 = Instant::now();
    let _ = rule.build(&Arc::new(Snapshot::new("s", Vec::new(), 1)));
    tokio::time::advance(Duration::from_secs(1)).await;
    let a = Endpoint::new(instance("127.0.0.1", 1000));
    tokio::time::advance(Duration::from_secs(5)).await;
    let b = Endpoint::new(instance("127.0.0.1", 1001));
    let p = rule.build(&Arc::new(Snapshot::new("s", vec![a.clone(), b.clone()], 2)));
    // At 7 s: a 0.6, b 0.1 (its floor): b's share 0.1 / 0.7 = 1/7.
    let at = t0 + Duration::from_secs(7);
    assert_eq!(hits(&*p, at, 1001, 7000), 1000);
    // b leaves: a alone gets everything, though still in its window.
    let p = rule.build(&Arc::new(Snapshot::new("s", vec![a.clone()], 3)));
    assert_eq!(hits(&*p, at, 1000, 100), 100);
    // c joins at 8 s, a at 0.7: c's share 0.1 / 0.8 = 1/8.
    tokio::time::advance(Duration::from_secs(2)).await;
    let c = Endpoint::new(instance("127.0.0.1", 1002));
    let p = rule.build(&Arc::new(Snapshot::new("s", vec![a, c], 4)));
    let at = t0 + Duration::from_secs(8);
    assert_eq!(hits(&*p, at, 1002, 8000), 1000);
    // Past c's window every instance is even.
    let at = t0 + Duration::from_secs(18);
    assert_eq!(hits(&*p, at, 1002, 8000), 4000);
}

/// Envoy puts a host that passes active health checks after failing back
/// into slow start; the first list's instances are otherwise exempt.
#[cfg(feature = "hyper-util")]
#[tokio::test(start_paused = true)]
async fn an_instance_back_from_failing_active_checks_ramps_again() {
    let list = endpoints(4);
    let rule = SlowStart::new(
        RoundRobin::with_start(0),
        SlowStartConfig::new(Duration::from_secs(10)),
    );
    let snapshot = Arc::new(Snapshot::new("s", list.clone(), 1));
    let first = rule.build(&snapshot);
    assert!(format!("{first:?}").starts_with("RoundRobinPicker"));
    tokio::time::advance(Duration::from_secs(30)).await;
    let back = &list[3];
    // One failed probe (threshold 1) makes it unhealthy: not in slow start
    // while it fails, nothing to ramp.
    assert!(back.stats().record_active_check(false, 1, 1));
    assert_eq!(back.stats().slow_start_since(), back.stats().first_seen());
    let failing = rule.build(&snapshot);
    assert!(format!("{failing:?}").starts_with("RoundRobinPicker"));
    tokio::time::advance(Duration::from_secs(5)).await;
    // One passed probe brings it back: its slow start begins now.
    assert!(back.stats().record_active_check(true, 1, 1));
    let returned = Instant::now();
    assert_eq!(back.stats().slow_start_since(), returned);
    assert_eq!(
        back.stats().first_seen() + Duration::from_secs(35),
        returned
    );
    let p = rule.build(&snapshot);
    assert!(format!("{p:?}").starts_with("SlowStartPicker"), "{p:?}");
    // At 50 % of the window its factor is 0.5: share 0.5 / 3.5 = 1/7.
    let ctx = PickContext::at(returned + Duration::from_secs(5));
    let hits = (0..7000)
        .filter(|_| index(p.pick(&ctx).unwrap()) == 3)
        .count();
    assert_eq!(hits, 1000);
    // A passed probe that changes nothing does not restart the ramp.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!back.stats().record_active_check(true, 1, 1));
    assert_eq!(back.stats().slow_start_since(), returned);
    // After the window: the wrapped picker itself again.
    tokio::time::advance(Duration::from_secs(10)).await;
    let later = rule.build(&snapshot);
    assert!(format!("{later:?}").starts_with("RoundRobinPicker"));
}

/// A rebuild (a new list, a changed active-check verdict) carries each
/// instance's acceptance credit over, by identity: started from 0 at every
/// build, an instance at factor 0.1 needed 10 offers within one picker,
/// so with a rebuild every 5 picks it got none of its share (0 of 1 100
/// picks where Envoy's weights give 100), also when the list's order
/// changed.
#[tokio::test(start_paused = true)]
async fn credits_carry_over_rebuilds_by_identity() {
    let a = Endpoint::new(instance("127.0.0.1", 1000));
    let rule = SlowStart::new(
        RoundRobin::with_start(0),
        SlowStartConfig::new(Duration::from_secs(100)),
    );
    let _ = rule.build(&Arc::new(Snapshot::new("s", vec![a.clone()], 1)));
    tokio::time::advance(Duration::from_secs(1)).await;
    let b = Endpoint::new(instance("127.0.0.1", 1001));
    // 1 s into a 100 s window: b's factor is its floor, 0.1; its share
    // 0.1 / 1.1 = 1/11.
    let at = b.stats().first_seen() + Duration::from_secs(1);
    let s = Arc::new(Snapshot::new("s", vec![a.clone(), b.clone()], 2));
    assert_eq!(hits(&*rule.build(&s), at, 1001, 1100), 100);
    // The same list rebuilt every 5 picks.
    let total: usize = (0..220).map(|_| hits(&*rule.build(&s), at, 1001, 5)).sum();
    assert_eq!(total, 100);
    // The list's order changing at every rebuild: b's credit follows it
    // by identity, not by position.
    let swapped = Arc::new(Snapshot::new("s", vec![b.clone(), a.clone()], 3));
    let total: usize = (0..220)
        .map(|k| {
            let list = if k % 2 == 0 { &swapped } else { &s };
            hits(&*rule.build(list), at, 1001, 5)
        })
        .sum();
    // Round robin offers b a little less often when its position flips
    // at every rebuild (88 here); 0 when credits restarted.
    assert!((80..=100).contains(&total), "{total}");
}

/// `old` instances each holding 4 requests, then one new instance (in
/// slow start at factor 0.1, 1 ms into a 10 s window) and 20 picks, each
/// held: the picks each instance got (the new one last).
async fn held_picks_with_a_newcomer(inner: Box<dyn Rule>, old: u16) -> Vec<usize> {
    let first = endpoints(old);
    let rule = SlowStart::new(inner, SlowStartConfig::new(Duration::from_secs(10)));
    let _ = rule.build(&Arc::new(Snapshot::new("s", first.clone(), 1)));
    tokio::time::advance(Duration::from_millis(1)).await;
    let mut list = first;
    list.push(Endpoint::new(instance("127.0.0.1", 1000 + old)));
    let p = rule.build(&Arc::new(Snapshot::new("s", list, 2)));
    let now = Instant::now();
    let mut held: Vec<_> = p.snapshot().endpoints()[..usize::from(old)]
        .iter()
        .flat_map(|e| (0..4).map(|_| Arc::clone(e.stats_handle()).start_owned_at(now)))
        .collect();
    let mut counts = vec![0; usize::from(old) + 1];
    let ctx = PickContext::new();
    for _ in 0..20 {
        let e = p.pick(&ctx).unwrap();
        counts[index(e)] += 1;
        held.push(Arc::clone(e.stats_handle()).start_owned_at(now));
    }
    counts
}

/// A new instance is the least loaded one (it has nothing in flight), so
/// a least-loaded rule chose it again at every pick slow start refused,
/// until its credit let it through: slow start did nothing. Best
/// available over 3 old instances holding 4 requests each sent 8 of 20
/// held picks to the new one at factor 0.1 (as without slow start), P2C
/// over one old instance 12 of 20; now the new one is passed over for the
/// rest of a refused pick, 2 of 20 and 2 of 20 (one offer per pick, every
/// tenth accepted).
#[tokio::test(start_paused = true)]
async fn a_least_loaded_newcomer_is_passed_over_when_refused() {
    use crate::rule::{BestAvailable, PeakEwmaP2c};
    let best = held_picks_with_a_newcomer(Box::new(BestAvailable::with_start(0)), 3).await;
    assert_eq!(best[3], 2, "{best:?}");
    assert_eq!(best.iter().sum::<usize>(), 20);
    let p2c = held_picks_with_a_newcomer(Box::new(PeakEwmaP2c::with_seed(3)), 1).await;
    assert_eq!(p2c, [18, 2]);
}

/// The same with P2C in a preferred zone of two (one old instance holding
/// 4 requests and the new one) among three instances: both are drawn at
/// every pick, so the cheaper new one won every re-pick, 12 of 20; now 2.
#[tokio::test(start_paused = true)]
async fn a_least_loaded_newcomer_in_a_tier_of_two_is_passed_over() {
    use crate::rule::{PeakEwmaP2c, ZoneAvoidance};
    let zone = |i: u16| {
        let z = if i == 0 || i == 3 { "a" } else { "b" };
        instance("127.0.0.1", 1000 + i).with_zone(z)
    };
    let first: Vec<Endpoint> = (0..3).map(|i| Endpoint::new(zone(i))).collect();
    let config = SlowStartConfig::new(Duration::from_secs(10));
    let rule = ZoneAvoidance::new(SlowStart::new(PeakEwmaP2c::with_seed(3), config))
        .preferred_zone(Some("a"));
    let _ = rule.build(&Arc::new(Snapshot::new("s", first.clone(), 1)));
    tokio::time::advance(Duration::from_millis(1)).await;
    let mut list = first;
    list.push(Endpoint::new(zone(3)));
    let p = rule.build(&Arc::new(Snapshot::new("s", list, 2)));
    let now = Instant::now();
    let old = p.snapshot().endpoints()[0].stats_handle();
    let mut held: Vec<_> = (0..4)
        .map(|_| Arc::clone(old).start_owned_at(now))
        .collect();
    let mut counts = [0; 4];
    for _ in 0..20 {
        let e = p.pick(&PickContext::new()).unwrap();
        counts[index(e)] += 1;
        held.push(Arc::clone(e.stats_handle()).start_owned_at(now));
    }
    assert_eq!(counts, [18, 0, 0, 2]);
}
