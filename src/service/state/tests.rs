//! Tests of [`ServiceState`](super::ServiceState).

use super::*;
use crate::discovery::StaticSource;
use crate::rule::{PickContext, RoundRobin};

#[tokio::test(start_paused = true)]
async fn endpoints_of_a_refresh_use_the_stats_config() {
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:8081,127.0.0.1:8082")
        .unwrap();
    let stats = StatsConfig {
        breaker_threshold: 7,
        ..StatsConfig::default()
    };
    let state = ServiceState::new(
        "svc",
        Arc::new(RoundRobin::with_start(0)),
        RefreshConfig::default(),
        stats,
        50,
    );
    assert!(state.picker().pick(&PickContext::new()).is_none());
    let publish = |s| state.publish(s);
    assert!(state.refresh().refresh_once(&source, &publish).await);
    let snapshot = state.snapshot();
    assert_eq!(snapshot.len(), 2);
    for e in snapshot.endpoints() {
        assert_eq!(e.stats().config().breaker_threshold, 7);
    }
    // The picker was built for the published list.
    let picker = state.picker();
    assert!(Arc::ptr_eq(picker.snapshot(), &snapshot));
    assert_eq!(
        picker.pick(&PickContext::new()).unwrap().instance().port(),
        8081
    );
    assert_eq!(state.status().instances, 2);
}

#[tokio::test(start_paused = true)]
async fn builder_stats_reach_the_endpoints_and_refresh_is_validated() {
    let source = || {
        StaticSource::new()
            .with_list("svc", "127.0.0.1:8081")
            .unwrap()
    };
    let stats = StatsConfig {
        breaker_threshold: 9,
        breaker_base: Duration::from_secs(2),
        ..StatsConfig::default()
    };
    let lb = crate::LoadBalancer::builder()
        .source(source())
        .service("svc")
        .stats(stats)
        .build(())
        .unwrap();
    assert!(lb.ready_service("svc").await);
    let snapshot = lb.snapshot("svc").unwrap();
    let config = snapshot.endpoints()[0].stats().config();
    assert_eq!(config.breaker_threshold, 9);
    assert_eq!(config.breaker_base, Duration::from_secs(2));

    for (field, set) in [
        (
            "refresh.interval",
            (|c: &mut RefreshConfig| c.interval = Duration::ZERO) as fn(&mut RefreshConfig),
        ),
        ("refresh.jitter", |c| c.jitter = f64::NAN),
        ("refresh.jitter", |c| c.jitter = 0.6),
        ("refresh.fetch_timeout", |c| {
            c.fetch_timeout = Duration::ZERO
        }),
    ] {
        let mut refresh = RefreshConfig::default();
        set(&mut refresh);
        let err = crate::LoadBalancer::builder()
            .source(source())
            .service("svc")
            .refresh(refresh)
            .build(())
            .unwrap_err();
        assert!(
            matches!(&err, crate::error::BuildError::Invalid(setting) if setting.key() == field),
            "{err:?}"
        );
    }
}

/// An instance that left with a request in flight and is listed again
/// keeps its stats (the request still counts on it) but joins as a new
/// instance: in slow start again, and waiting for its first probe.
#[tokio::test(start_paused = true)]
async fn an_instance_listed_again_during_its_request_ramps_and_waits_for_a_probe() {
    use crate::rule::{SlowStart, SlowStartConfig};
    let both = StaticSource::new()
        .with_list("svc", "127.0.0.1:8081,127.0.0.1:8082")
        .unwrap();
    let one = StaticSource::new()
        .with_list("svc", "127.0.0.1:8081")
        .unwrap();
    let rule = SlowStart::new(
        RoundRobin::with_start(0),
        SlowStartConfig::new(Duration::from_secs(10)),
    );
    let state = ServiceState::new(
        "svc",
        Arc::new(rule),
        RefreshConfig::default(),
        StatsConfig::default(),
        50,
    );
    let publish = |s| state.publish(s);
    assert!(state.refresh().refresh_once(&both, &publish).await);
    tokio::time::advance(Duration::from_secs(30)).await;
    let leaving = Arc::clone(state.snapshot().endpoints()[1].stats_handle());
    let _stream = leaving.start_owned_at(tokio::time::Instant::now());
    assert!(state.refresh().refresh_once(&one, &publish).await);
    state
        .new_wait_for_probe
        .store(true, std::sync::atomic::Ordering::Release);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(state.refresh().refresh_once(&both, &publish).await);
    let back = state.snapshot().endpoints()[1].clone();
    assert!(Arc::ptr_eq(back.stats_handle(), &leaving));
    assert_eq!(back.stats().in_flight(), 1);
    let relisted = tokio::time::Instant::now();
    assert_eq!(back.stats().slow_start_since(), relisted);
    #[cfg(feature = "hyper-util")]
    assert!(back.stats().is_active_pending());
    // At half its window its factor is 0.5: a third of the picks.
    let ctx = PickContext::at(relisted + Duration::from_secs(5));
    let picker = state.picker();
    let hits = (0..3000)
        .filter(|_| picker.pick(&ctx).unwrap().instance().port() == 8082)
        .count();
    assert_eq!(hits, 1000);
}

/// A picker of [`Gated`]: the verdict its build read.
#[derive(Debug)]
struct Built(Arc<Snapshot>, #[allow(dead_code)] u64); // read through Debug

impl Picker for Built {
    fn pick(&self, _: &PickContext<'_>) -> Option<&Endpoint> {
        None
    }
    fn snapshot(&self) -> &Arc<Snapshot> {
        &self.0
    }
}

/// A rule whose build reads `verdict` (as slow start reads an
/// instance's return) and, for the list of version 2, then waits for
/// `go` after telling `read` (while `read` is open).
#[derive(Debug)]
struct Gated {
    verdict: Arc<std::sync::atomic::AtomicU64>,
    read: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    go: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Rule for Gated {
    fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
        let seen = self.verdict.load(std::sync::atomic::Ordering::SeqCst);
        if snapshot.version() == 2 && self.read.lock().unwrap().send(()).is_ok() {
            let _ = self.go.lock().unwrap().recv();
        }
        Arc::new(Built(Arc::clone(snapshot), seen))
    }
    fn name(&self) -> &'static str {
        "gated"
    }
}

/// A verdict that changes while a refresh builds its picker is not
/// lost: the verdict's rebuild swapped its picker in first, then the
/// refresh stored one built before the change. Before, the current
/// picker had read verdict 0 (an instance back from failing checks
/// took its full share at once, out of slow start); now 1.
#[tokio::test(start_paused = true)]
async fn a_verdict_changed_during_a_publish_is_not_lost() {
    let verdict = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (read_tx, read_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    let rule = Gated {
        verdict: Arc::clone(&verdict),
        read: std::sync::Mutex::new(read_tx),
        go: std::sync::Mutex::new(go_rx),
    };
    let config = RefreshConfig::default();
    let state = ServiceState::new("svc", Arc::new(rule), config, StatsConfig::default(), 50);
    std::thread::scope(|scope| {
        let refresh = scope.spawn(|| state.publish(Arc::new(Snapshot::new("svc", vec![], 2))));
        read_rx.recv().unwrap();
        verdict.store(1, std::sync::atomic::Ordering::SeqCst);
        state.rebuild_picker();
        drop(read_rx);
        go_tx.send(()).unwrap();
        refresh.join().unwrap();
    });
    let picker = format!("{:?}", state.picker());
    assert!(picker.contains("version: 2"), "{picker}");
    assert!(picker.ends_with(", 1)"), "{picker}");
}

/// A request picked from a list just before a refresh removes its
/// instance, and started just after (a pick and its start are not one
/// step), still counts on the instance when it comes back. The refresh
/// kept the stats of a leaving instance only if a request was in flight on
/// it at that moment, so it came back with fresh stats (in flight 0, 1
/// now); one that left with no request at all still comes back fresh.
#[tokio::test(start_paused = true)]
async fn a_request_started_just_after_its_instance_left_counts_when_it_returns() {
    let all = StaticSource::new()
        .with_list("svc", "127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083")
        .unwrap();
    let one = StaticSource::new()
        .with_list("svc", "127.0.0.1:8081")
        .unwrap();
    let state = round_robin_state();
    let publish = |s| state.publish(s);
    assert!(state.refresh().refresh_once(&all, &publish).await);
    let before = state.snapshot();
    // Picked from the list, not started yet.
    let picked = before.endpoints()[1].clone();
    assert!(state.refresh().refresh_once(&one, &publish).await);
    let _request = picked
        .stats_handle()
        .start_owned_at(tokio::time::Instant::now());
    // In use, though no listed instance has a request (an on-demand
    // service is not idle).
    assert!(state.has_in_flight());
    assert!(state.refresh().refresh_once(&all, &publish).await);
    let after = state.snapshot();
    let back = &after.endpoints()[1];
    assert!(Arc::ptr_eq(back.stats_handle(), picked.stats_handle()));
    assert_eq!(back.stats().in_flight(), 1);
    // 8083 left with nothing in flight: fresh stats.
    assert!(!Arc::ptr_eq(
        after.endpoints()[2].stats_handle(),
        before.endpoints()[2].stats_handle()
    ));
}

/// An instance that leaves the list marked down (ejected here) comes back
/// still marked down while the mark lasts, and with fresh stats after it
/// ended; past `MAX_DEPARTED` such instances, `MAX_DEPARTED` are kept
/// (those whose marks end soonest go first). Before, every departed instance without a request in
/// flight was forgotten at the next refresh: an ejected one listed again
/// one refresh later was healthy at once.
#[tokio::test(start_paused = true)]
async fn a_departed_instance_is_remembered_while_marked_down_within_a_bound() {
    use crate::discovery::MAX_DEPARTED;
    use crate::stats::EjectionTimes;
    use tokio::time::Instant;
    let times = EjectionTimes {
        base: Duration::from_secs(30),
        max: Duration::from_secs(300),
        interval: Duration::from_secs(10),
    };
    // More than a text list takes (`MAX_LIST_ENTRIES`): instances.
    let listed = |n: usize| {
        let list = (0..n)
            .map(|i| {
                let host = format!("127.0.{}.{}", i / 250, 1 + i % 250);
                crate::instance::Instance::new("svc", &host, 80).unwrap()
            })
            .collect();
        StaticSource::new().with_instances("svc", list)
    };
    let state = round_robin_state();
    let publish = |s| state.publish(s);
    let refresh = |source: StaticSource| {
        let publish = &publish;
        let state = &state;
        async move { assert!(state.refresh().refresh_once(&source, publish).await) }
    };
    refresh(listed(3)).await;
    let before = state.snapshot();
    assert!(
        before.endpoints()[1]
            .stats()
            .eject(Instant::now(), times)
            .is_some()
    );
    refresh(listed(1)).await;
    refresh(listed(1)).await;
    refresh(listed(3)).await;
    let back = state.snapshot();
    assert!(Arc::ptr_eq(
        back.endpoints()[1].stats_handle(),
        before.endpoints()[1].stats_handle()
    ));
    assert!(!back.endpoints()[1].stats().is_healthy_at(Instant::now()));
    // The third left healthy: fresh stats.
    assert!(!Arc::ptr_eq(
        back.endpoints()[2].stats_handle(),
        before.endpoints()[2].stats_handle()
    ));
    // Gone past its ejection: forgotten.
    refresh(listed(1)).await;
    tokio::time::sleep(Duration::from_secs(31)).await;
    refresh(listed(1)).await;
    refresh(listed(3)).await;
    let later = state.snapshot();
    assert!(!Arc::ptr_eq(
        later.endpoints()[1].stats_handle(),
        before.endpoints()[1].stats_handle()
    ));

    // More ejected departures than the bound: the bound's worth kept.
    let many = MAX_DEPARTED + 2;
    refresh(listed(many)).await;
    let full = state.snapshot();
    for e in &full.endpoints()[1..] {
        assert!(e.stats().eject(Instant::now(), times).is_some());
    }
    refresh(listed(1)).await;
    refresh(listed(1)).await;
    refresh(listed(many)).await;
    let again = state.snapshot();
    let kept = (again.endpoints().iter().zip(full.endpoints()))
        .skip(1)
        .filter(|(a, b)| Arc::ptr_eq(a.stats_handle(), b.stats_handle()))
        .count();
    assert_eq!(kept, MAX_DEPARTED);
}

/// A service `svc` under round robin from the first instance, default
/// refresh and stats.
fn round_robin_state() -> ServiceState {
    ServiceState::new(
        "svc",
        Arc::new(RoundRobin::with_start(0)),
        RefreshConfig::default(),
        StatsConfig::default(),
        50,
    )
}

/// A rule panicking in a rebuild run by the active-check task (a verdict
/// changed) keeps the current picker, and the caller goes on: before, the
/// panic ended the active-check task, so no verdict changed after it.
#[tokio::test(start_paused = true)]
async fn a_rule_panicking_in_a_rebuild_keeps_the_current_picker() {
    #[derive(Debug)]
    struct PanicsAfterFirst(std::sync::atomic::AtomicUsize);
    impl Rule for PanicsAfterFirst {
        fn build(&self, snapshot: &Arc<Snapshot>) -> Arc<dyn Picker> {
            // The build at construction (empty list) and the publish pass.
            if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 2 {
                panic!("rule bug");
            }
            RoundRobin::with_start(0).build(snapshot)
        }
        fn name(&self) -> &'static str {
            "panics_after_first"
        }
    }
    let source = StaticSource::new()
        .with_list("svc", "127.0.0.1:8081,127.0.0.1:8082")
        .unwrap();
    let state = ServiceState::new(
        "svc",
        Arc::new(PanicsAfterFirst(std::sync::atomic::AtomicUsize::new(0))),
        RefreshConfig::default(),
        StatsConfig::default(),
        50,
    );
    let publish = |s| state.publish(s);
    assert!(state.refresh().refresh_once(&source, &publish).await);
    let before = state.picker();
    state.rebuild_picker();
    assert!(Arc::ptr_eq(&before, &state.picker()));
    assert_eq!(
        state
            .picker()
            .pick(&PickContext::new())
            .unwrap()
            .instance()
            .port(),
        8081
    );
}
