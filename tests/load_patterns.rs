//! Patterns of loads against stop 48's first rule fixes (helper 126).
//!
//! - Best available with ties going to the least recently picked: "open a
//!   stream, make k calls, close it" pinned every stream to one instance
//!   and every call to the others (streams 600, 0, 0; calls 0, 900, 900),
//!   since the stream holder, skipped while loaded, came back as the least
//!   recent. Ties among partly loaded members are now drawn at random:
//!   streams 200 each, calls within a few percent.
//! - PeakEwmaP2c with a floor of the time since the last sample (capped at
//!   the default RTT) for instances with requests in flight: a fast
//!   instance holding a WebSocket got 0 of 300 calls beside a slow idle
//!   one. The estimate of a busy instance now decays toward the default
//!   instead: a fresh sample barely moves.
//! - A retry inside a hint tier (its lane mixed with the tier's key) was
//!   taken for a first pick and stamped: good requests 120 on one instance,
//!   none on another. Retries are now marked as such (`PickContext::retrying`).
//! - What held: concurrent idle picks from four threads, retries past
//!   every instance over seven rules (no straight repeat, even totals).

use std::collections::BTreeMap;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use tokio::time::Instant;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::instance::{Endpoint, Instance};
use tower_ribbon::retry::{RetryBudgetConfig, RetryPolicy};
use tower_ribbon::rule::*;
use tower_ribbon::snapshot::Snapshot;
use tower_ribbon::stats::Outcome;
use tower_ribbon::{BoxError, LoadBalancer};

fn snapshot(n: usize) -> Arc<Snapshot> {
    let eps = (0..n)
        .map(|i| Endpoint::new(Instance::new("svc", "127.0.0.1", 1 + i as u16).unwrap()))
        .collect();
    Arc::new(Snapshot::new("svc", eps, 1))
}

fn idx(e: &Endpoint) -> usize {
    (e.instance().port() - 1) as usize
}

// ---------------------------------------------------------------------
// 1. BestAvailable: "open a stream, make k calls while it is open, close
//    it" (one client's loop) over n instances. Every stream lands on one
//    instance, which then never gets a call.
// ---------------------------------------------------------------------

/// Returns (calls, streams) per instance for `cycles` cycles of: open a
/// stream (held), `k` calls (each finished before the next pick), close the
/// stream.
fn stream_then_calls(
    picker: &Arc<dyn Picker>,
    n: usize,
    k: usize,
    cycles: usize,
) -> (Vec<usize>, Vec<usize>) {
    let now = Instant::now();
    let ctx = PickContext::at(now);
    let mut calls = vec![0; n];
    let mut streams = vec![0; n];
    for _ in 0..cycles {
        let s = picker.pick(&ctx).unwrap();
        streams[idx(s)] += 1;
        let guard = s.stats().start_at(now);
        for _ in 0..k {
            let c = picker.pick(&ctx).unwrap();
            calls[idx(c)] += 1;
            c.stats().start_at(now).finish_at(Outcome::Success, now);
        }
        guard.finish_at(Outcome::Success, now);
    }
    (calls, streams)
}

#[tokio::test(start_paused = true)]
async fn best_available_spreads_streams_held_across_calls() {
    let mut bad = Vec::new();
    for (n, k) in [(3usize, 3usize), (3, 4), (4, 4), (5, 5), (8, 8)] {
        for start in [0usize, 1, 2, 7, usize::MAX] {
            let snap = snapshot(n);
            let picker = BestAvailable::with_start(start).build(&snap);
            let cycles = 600;
            let (calls, streams) = stream_then_calls(&picker, n, k, cycles);
            let picks: Vec<usize> = calls.iter().zip(&streams).map(|(c, s)| c + s).collect();
            println!(
                "n={n} k={k} start={start}: calls {calls:?} streams {streams:?} picks {picks:?}"
            );
            let call_share = (cycles * k) / n;
            let stream_share = cycles / n;
            if calls.iter().any(|&c| c * 2 < call_share)
                || streams.iter().any(|&s| s * 2 < stream_share)
            {
                bad.push(format!(
                    "n={n} k={k} start={start}: calls {calls:?} streams {streams:?}"
                ));
            }
        }
    }
    // Baseline (simulated, not run here): random tie breaks give every
    // instance ~1/n of streams and calls by symmetry (n=3, k=3: calls
    // 580/620/600, streams 203/184/213).
    assert!(bad.is_empty(), "{} skewed:\n{}", bad.len(), bad.join("\n"));
}

// ---------------------------------------------------------------------
// 2. PeakEwmaP2c: an instance holding one long stream (WebSocket) with
//    no recent sample now costs 30 ms x 2 = 60 ms; an idle 20 ms
//    instance costs 20 ms and takes every call, so the fast instance
//    never gets the short call that would sample it again.
// ---------------------------------------------------------------------

fn warm(e: &Endpoint, at: Instant, lat: Duration, times: usize) {
    for i in 0..times {
        let t = at + Duration::from_millis(50 * i as u64);
        e.stats().start_at(t).finish_at(Outcome::Success, t + lat);
    }
}

/// `fast` instances answering in 1 ms, each holding one open stream, and
/// one instance answering in `slow_ms`; sequential calls every `gap`.
/// Returns calls per instance (slow one last).
fn p2c_ws(fast: usize, slow_ms: u64, gap: Duration, calls: usize) -> (Vec<usize>, String) {
    let n = fast + 1;
    let snap = snapshot(n);
    let t0 = Instant::now();
    let lat = |i: usize| {
        if i < fast {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(slow_ms)
        }
    };
    for (i, e) in snap.endpoints().iter().enumerate() {
        warm(e, t0, lat(i), 10);
    }
    // Each fast instance holds a WebSocket from t0 + 1 s on.
    let t1 = t0 + Duration::from_secs(1);
    let _ws: Vec<_> = snap.endpoints()[..fast]
        .iter()
        .map(|e| e.stats().start_at(t1))
        .collect();
    let picker = PeakEwmaP2c::with_seed(7).build(&snap);
    let mut counts = vec![0; n];
    let mut now = t1 + Duration::from_millis(10);
    let mut note = String::new();
    for c in 0..calls {
        let e = picker.pick(&PickContext::at(now)).unwrap();
        let i = idx(e);
        counts[i] += 1;
        if c == 0 {
            // The pre-fix price: peak x (in flight + 1) / success.
            let old: Vec<f64> = snap
                .endpoints()
                .iter()
                .map(|e| {
                    let s = e.stats();
                    s.peak_ewma_us_at(now).unwrap_or(30_000.0) * (s.in_flight() as f64 + 1.0)
                })
                .collect();
            note = format!("pre-fix costs (us) at the first call: {old:.0?}");
        }
        e.stats()
            .start_at(now)
            .finish_at(Outcome::Success, now + lat(i));
        now += gap;
    }
    (counts, note)
}

#[tokio::test(start_paused = true)]
async fn p2c_keeps_calling_a_fast_instance_that_holds_a_websocket() {
    let mut bad = Vec::new();
    for (fast, slow_ms, gap_ms) in [
        (1usize, 20u64, 100u64),
        (1, 29, 100),
        (2, 20, 100),
        (2, 20, 40),
        (4, 10, 50),
    ] {
        let calls = 300;
        let (counts, note) = p2c_ws(fast, slow_ms, Duration::from_millis(gap_ms), calls);
        let slow = counts[fast];
        println!(
            "{fast} fast (1 ms, one WebSocket each) + 1 slow ({slow_ms} ms), a call every {gap_ms} ms: {counts:?} ({note})"
        );
        // Documented (peak_ewma_p2c.rs cost): "an instance holding a long
        // stream with no recent sample still gets short calls". Latency
        // aware: the slow instance should not take most calls.
        if slow * 2 > calls {
            bad.push(format!(
                "{fast} fast + slow {slow_ms} ms, gap {gap_ms} ms: {counts:?}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "slow instance took most calls:\n{}",
        bad.join("\n")
    );
}

// ---------------------------------------------------------------------
// 3. Retries past every instance inside a preference wrapper stamp best
//    available's ties (the lane is the wrapper's, not RETRY_LANE).
// ---------------------------------------------------------------------

type Log = Arc<Mutex<Vec<(u16, u64)>>>;

/// Instances 1..=n with metadata hint "stable"; requests with `x-poison`
/// get 503 everywhere, the others 200. Logs (port, x-n).
fn hinted_lb(
    n: u16,
    rule: fn() -> Box<dyn Rule>,
    policy: RetryPolicy,
) -> (
    LoadBalancer<
        impl tower::Service<
            Request<String>,
            Response = Response<String>,
            Error = BoxError,
            Future = impl Send,
        > + Clone
        + Send,
    >,
    Log,
) {
    let instances: Vec<Instance> = (1..=n)
        .map(|p| {
            Instance::new("svc", "127.0.0.1", p)
                .unwrap()
                .with_metadata("hint", "stable")
        })
        .collect();
    let source = StaticSource::new().with_instances("svc", instances);
    let log: Log = Arc::default();
    let inner_log = Arc::clone(&log);
    let inner = tower::service_fn(move |req: Request<String>| {
        let port = req.uri().port_u16().unwrap_or(0);
        let n: u64 = req
            .headers()
            .get("x-n")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let poison = req.headers().contains_key("x-poison");
        inner_log.lock().unwrap().push((port, n));
        async move {
            let mut r = Response::new(format!("{port}"));
            if poison {
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok::<_, BoxError>(r)
        }
    });
    let lb = LoadBalancer::builder()
        .source(source)
        .service("svc")
        .rule(rule)
        .retry(policy)
        .outlier_detection(OutlierDetection::disabled())
        .build(inner)
        .unwrap();
    (lb, log)
}

fn req(n: u64, poison: bool) -> Request<String> {
    let mut b = Request::builder()
        .method(Method::GET)
        .uri("http://svc/x")
        .header("x-n", n.to_string());
    if poison {
        b = b.header("x-poison", "1");
    }
    b.body(String::new()).unwrap()
}

/// First attempts of the good requests, per port, for a run of
/// alternating poison / good GETs.
async fn first_attempts(
    rule: fn() -> Box<dyn Rule>,
    n: u16,
    requests: u64,
) -> (BTreeMap<u16, usize>, BTreeMap<u16, usize>) {
    let policy = RetryPolicy::default()
        .max_next(u32::from(n))
        .backoff(Duration::ZERO, Duration::ZERO)
        .budget(RetryBudgetConfig::unlimited());
    let (lb, log) = hinted_lb(n, rule, policy);
    assert!(lb.ready_service("svc").await);
    for i in 0..requests {
        let _ = lb.request(req(i, i % 2 == 0)).await;
        // Let breakers cool: no breaker effects wanted here.
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    let log = log.lock().unwrap().clone();
    let mut good = BTreeMap::new();
    let mut poison = BTreeMap::new();
    for i in 0..requests {
        let first = log.iter().find(|(_, m)| *m == i).map(|(p, _)| *p).unwrap();
        let m = if i % 2 == 0 { &mut poison } else { &mut good };
        *m.entry(first).or_insert(0) += 1;
    }
    (good, poison)
}

/// Alternating poison (503 everywhere, `max_next(n)`: the last attempt is
/// a retry past every instance) and good GETs over n = 3 and 5 instances.
/// Plain best available splits both populations' first attempts evenly
/// (40/40/40); the same rule inside `HintBased` (configured hint matching
/// every instance) does not: the retry past every instance runs in the
/// hint tier's lane, not RETRY_LANE, so it takes best available's
/// first-pick path and stamps. (n = 2 and 4 alias for any exact rotation:
/// period 2 divides n; not counted.)
#[tokio::test(start_paused = true)]
async fn best_available_retries_in_a_hint_tier_leave_first_picks_even() {
    let mut bad = Vec::new();
    for n in [3u16, 5] {
        let plain = first_attempts(|| Box::new(BestAvailable::with_start(0)), n, 240).await;
        let hinted = first_attempts(
            || Box::new(HintBased::new(BestAvailable::with_start(0)).hint("stable")),
            n,
            240,
        )
        .await;
        println!("n={n} plain  good {:?} poison {:?}", plain.0, plain.1);
        println!("n={n} hinted good {:?} poison {:?}", hinted.0, hinted.1);
        for (name, (good, poison)) in [("plain", &plain), ("hinted", &hinted)] {
            let share = 120 / usize::from(n);
            for p in 1..=n {
                let g = good.get(&p).copied().unwrap_or(0);
                let q = poison.get(&p).copied().unwrap_or(0);
                if g * 2 < share || q * 2 < share {
                    bad.push(format!("n={n} {name}: good {good:?} poison {poison:?}"));
                    break;
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Retries past every instance over several rules: 3 instances all 503,
/// `max_next(5)` (6 attempts): no attempt straight back to the instance
/// that just failed, and each instance near 1/3 of the attempts.
#[tokio::test(start_paused = true)]
async fn retries_past_every_instance_over_rules() {
    type Make = fn() -> Box<dyn Rule>;
    let rules: Vec<(&str, Make)> = vec![
        ("best", || Box::new(BestAvailable::with_start(0))),
        ("wrr", || Box::new(WeightedRoundRobin::with_start(0))),
        ("p2c", || Box::new(PeakEwmaP2c::with_seed(5))),
        ("random", || Box::new(Random::with_seed(5))),
        ("hash", || Box::new(ConsistentHash::new())),
        ("hint(best)", || {
            Box::new(HintBased::new(BestAvailable::with_start(0)).hint("stable"))
        }),
        ("af(best)", || {
            Box::new(AvailabilityFiltering::new(BestAvailable::with_start(0)))
        }),
    ];
    let mut bad = Vec::new();
    for (name, rule) in rules {
        let policy = RetryPolicy::default()
            .max_next(5)
            .backoff(Duration::ZERO, Duration::ZERO)
            .budget(RetryBudgetConfig::unlimited());
        let (lb, log) = hinted_lb(3, rule, policy);
        assert!(lb.ready_service("svc").await);
        for i in 0..60u64 {
            let _ = lb.request(req(i, true)).await;
            tokio::time::advance(Duration::from_secs(60)).await;
        }
        let log = log.lock().unwrap().clone();
        let mut back = 0;
        let mut total = BTreeMap::new();
        let mut lens = BTreeMap::new();
        for i in 0..60u64 {
            let ports: Vec<u16> = log
                .iter()
                .filter(|(_, m)| *m == i)
                .map(|(p, _)| *p)
                .collect();
            *lens.entry(ports.len()).or_insert(0) += 1;
            back += ports.windows(2).filter(|w| w[0] == w[1]).count();
            for p in ports {
                *total.entry(p).or_insert(0) += 1;
            }
        }
        println!("{name}: back-to-back {back}, attempts per request {lens:?}, per port {total:?}");
        if back > 0 || total.values().any(|&c| c * 2 < 120) {
            bad.push(format!("{name}: back {back} {total:?}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ---------------------------------------------------------------------
// 4. Concurrent pickers on several threads, idle calls: exact turns?
// ---------------------------------------------------------------------

#[test]
fn best_available_concurrent_idle_picks_spread() {
    let n = 5;
    let snap = snapshot(n);
    let picker = BestAvailable::with_start(3).build(&snap);
    let now = Instant::now();
    let counts: Vec<Arc<std::sync::atomic::AtomicUsize>> = (0..n).map(|_| Arc::default()).collect();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let picker = Arc::clone(&picker);
            let counts = counts.clone();
            s.spawn(move || {
                for _ in 0..5_000 {
                    let e = picker.pick(&PickContext::at(now)).unwrap();
                    let g = e.stats().start_at(now);
                    counts[idx(e)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    g.finish_at(Outcome::Success, now);
                }
            });
        }
    });
    let c: Vec<usize> = counts
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    println!("4 threads x 5000 idle calls over 5: {c:?}");
    // Four threads on this host's two cores: a thread preempted while its
    // call is in flight keeps that instance loaded, and least loaded
    // rightly avoids it meanwhile, so shares differ by run (2 161 to
    // 4 600 of 4 000 measured over 20 runs); no instance starves.
    assert!(c.iter().all(|&x| x * 4 >= 4000), "{c:?}");
    assert_eq!(c.iter().sum::<usize>(), 20_000);
}
