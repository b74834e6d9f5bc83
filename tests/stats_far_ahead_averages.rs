//! One record stamped far ahead (through the public `start_at`/`finish_at`)
//! no longer pins the decaying averages' clock. Before, every in-order
//! record after it was "no time elapsed" and moved nothing, for as long as
//! the stamp was ahead: after a success stamped an hour ahead, 2 000
//! failures left a success rate of 1.0 (0.82 without it); weighted
//! response time kept an instance slowed to 500 ms at a 2 ms mean and half
//! the picks (17 of 1 000 without it); peak-EWMA P2C gave a recovered
//! instance 0 of 24 000 requests (12 000 without it). The breaker, the
//! streaks and ejection took a stamp more than 1 s ahead as wrong already
//! (helpers 111, 119, 141); now the averages do too (helper 161). Paused
//! time; each case against a control without the stamp.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::rule::{PeakEwmaP2c, PickContext, Rule, WeightedResponseTime};
use tower_ribbon::snapshot::Snapshot;
use tower_ribbon::stats::{EndpointStats, Outcome};
use tower_ribbon::{BoxError, Endpoint, Instance, LoadBalancer};

const HOUR: Duration = Duration::from_secs(3600);

/// 2 000 failures one a millisecond, in order, after one success stamped an
/// hour ahead: the success rate stays 1.0. In order without the stamp:
/// exp(-0.2) = 0.82. (The breaker's streak counts the same failures.)
#[tokio::test(start_paused = true)]
async fn success_rate_ignores_every_failure_after_a_stamp_an_hour_ahead() {
    let t0 = Instant::now();
    let run = |ahead: bool| {
        let s = EndpointStats::new();
        s.start_at(t0)
            .finish_at(Outcome::Success, t0 + Duration::from_millis(1));
        if ahead {
            s.start_at(t0 + HOUR)
                .finish_at(Outcome::Success, t0 + HOUR + Duration::from_millis(1));
        }
        for n in 2..2002u64 {
            let at = t0 + Duration::from_millis(n);
            s.start_at(at - Duration::from_millis(1))
                .finish_at(Outcome::FailureStatus(500), at);
        }
        let now = t0 + Duration::from_millis(2002);
        (
            s.success_rate().unwrap(),
            s.success_rate_at(now).unwrap(),
            s.consecutive_server_errors(),
        )
    };
    let control = run(false);
    let stamped = run(true);
    println!("control {control:?}, stamped an hour ahead {stamped:?}");
    assert!(control.0 < 0.85);
    assert_eq!(stamped.2, 2000, "the streak counts them");
    assert!(
        stamped.0 < 0.9 && stamped.1 < 0.9,
        "success rate after 2 000 in-order failures: {} (read {} at now); control {}",
        stamped.0,
        stamped.1,
        control.0
    );
}

fn ep(port: u16) -> Endpoint {
    Endpoint::new(Instance::new("svc", "127.0.0.1", port).unwrap())
}

/// Weighted response time: A and B answer in 2 ms; B gets one 2 ms record
/// stamped an hour ahead, then answers in 500 ms for 10 s (one record each
/// 10 ms). Its mean stays 2 ms and it keeps half the picks; in order
/// (control) its mean is ~140 ms and it gets ~1 %.
#[tokio::test(start_paused = true)]
async fn weighted_response_time_keeps_a_slowed_instance_at_half_behind_a_stamp_ahead() {
    for ahead in [false, true] {
        let t0 = Instant::now();
        let (a, b) = (ep(9001), ep(9002));
        for n in 0..100u64 {
            let at = t0 + Duration::from_millis(10 * n + 10);
            for e in [&a, &b] {
                e.stats()
                    .start_at(at - Duration::from_millis(2))
                    .finish_at(Outcome::Success, at);
            }
        }
        if ahead {
            let at = t0 + HOUR;
            b.stats()
                .start_at(at)
                .finish_at(Outcome::Success, at + Duration::from_millis(2));
        }
        let base = t0 + Duration::from_secs(1);
        for n in 1..=1000u64 {
            let at = base + Duration::from_millis(10 * n);
            a.stats()
                .start_at(at - Duration::from_millis(2))
                .finish_at(Outcome::Success, at);
            b.stats()
                .start_at(at - Duration::from_millis(500))
                .finish_at(Outcome::Success, at);
        }
        let snap = Arc::new(Snapshot::new("svc", vec![a.clone(), b.clone()], 1));
        let picker = WeightedResponseTime::with_seed(3).build(&snap);
        let now = base + Duration::from_secs(10);
        let mut to_b = 0;
        for _ in 0..1000 {
            if picker
                .pick(&PickContext::at(now))
                .unwrap()
                .instance()
                .port()
                == 9002
            {
                to_b += 1;
            }
        }
        println!(
            "ahead {ahead}: B mean {:?}, A mean {:?}, B got {to_b} of 1000",
            b.stats().mean_response_time(),
            a.stats().mean_response_time()
        );
        assert!(
            to_b < 100,
            "ahead {ahead}: B (answering in 500 ms for 10 s) got {to_b} of 1000 picks, mean {:?}",
            b.stats().mean_response_time()
        );
    }
}

/// Through the balancer, peak-EWMA P2C, 8 callers on paused time: A and B
/// answer in 10 ms; B answers in 300 ms for 2 s, then in 10 ms again.
/// In the last 30 s of 90 s, B gets its share back (control); after one
/// record stamped an hour ahead on B's stats, its peak stays 300 ms (no
/// observation after the stamp lowers it and reads never decay): 0 picks.
#[tokio::test(start_paused = true)]
async fn p2c_never_gives_a_recovered_instance_back_its_share_behind_a_stamp_ahead() {
    let mut results = Vec::new();
    for ahead in [false, true] {
        let slow = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&slow);
        let inner = tower::service_fn(move |req: Request<Full<Bytes>>| {
            let port = req.uri().port_u16().unwrap();
            let delay = if port == 9002 && s2.load(Ordering::Relaxed) {
                300
            } else {
                10
            };
            async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok::<_, BoxError>(Response::new(Full::new(Bytes::from(port.to_string()))))
            }
        });
        let source = StaticSource::new().with_instances(
            "svc",
            vec![
                Instance::new("svc", "127.0.0.1", 9001).unwrap(),
                Instance::new("svc", "127.0.0.1", 9002).unwrap(),
            ],
        );
        let lb = LoadBalancer::builder()
            .source(source)
            .service("svc")
            .rule(|| Box::new(PeakEwmaP2c::with_seed(5)) as Box<dyn Rule>)
            .build(inner)
            .unwrap();
        // Warm up (and get the list).
        macro_rules! send {
            ($lb:expr) => {{
                let r = Request::get("http://svc/")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let resp = $lb.request(r).await.unwrap();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                body.as_ref() == b"9002"
            }};
        }
        for _ in 0..20 {
            let _ = send!(lb);
        }
        if ahead {
            let snap = lb.snapshot("svc").unwrap();
            let b = snap
                .endpoints()
                .iter()
                .find(|e| e.instance().port() == 9002)
                .unwrap();
            let at = Instant::now() + HOUR;
            b.stats()
                .start_at(at)
                .finish_at(Outcome::Success, at + Duration::from_millis(10));
        }
        let start = Instant::now();
        slow.store(true, Ordering::Relaxed);
        let late = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let late_b = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (lb, slow, late, late_b) = (
                    lb.clone(),
                    Arc::clone(&slow),
                    Arc::clone(&late),
                    Arc::clone(&late_b),
                );
                tokio::spawn(async move {
                    while start.elapsed() < Duration::from_secs(90) {
                        if start.elapsed() > Duration::from_secs(2) {
                            slow.store(false, Ordering::Relaxed);
                        }
                        let to_b = send!(lb);
                        if start.elapsed() > Duration::from_secs(60) {
                            late.fetch_add(1, Ordering::Relaxed);
                            late_b.fetch_add(usize::from(to_b), Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let snap = lb.snapshot("svc").unwrap();
        let b = snap
            .endpoints()
            .iter()
            .find(|e| e.instance().port() == 9002)
            .unwrap();
        let (n, nb) = (late.load(Ordering::Relaxed), late_b.load(Ordering::Relaxed));
        println!(
            "ahead {ahead}: B got {nb} of {n} in the last 30 s; B peak {:?}",
            b.stats().peak_ewma_at(Instant::now())
        );
        results.push((ahead, nb, n, b.stats().peak_ewma_at(Instant::now())));
    }
    for (ahead, nb, n, peak) in &results {
        assert!(
            *nb * 5 > *n,
            "ahead {ahead}: recovered B got {nb} of {n} requests in the last 30 s (peak {peak:?}): {results:?}"
        );
    }
}
