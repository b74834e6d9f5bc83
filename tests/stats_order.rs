//! Stats under real concurrency with out-of-order timestamps (issue 10,
//! item 1).
//!
//! Several OS threads pick with [`PeakEwmaP2c`] between a fast (10 ms) and
//! a slow (50 ms) instance and record each attempt. Every pick and every
//! record carries a timestamp up to 3 ms older than the thread's clock
//! reading, so records and picks older than the last stored one interleave
//! all the time, as they do when a thread is descheduled between reading
//! the clock and touching the stats. The fast instance answers 1 % of its
//! requests with a 500 (priced at its own 10 ms, so only the success rate
//! carries the failure).
//!
//! With the wrapping 32-bit clock, a late failure set the fast instance's
//! success rate to 0 and a late pick read a decayed cost of 0 for both,
//! so picks split about evenly; now at least 90 % go to the fast one.
//!
//! The rule API is being reshaped (`Rule::choose` -> `Rule::build(..).pick(..)`);
//! the only call of it is [`pick`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tower_ribbon::discovery::Snapshot;
use tower_ribbon::rule::{PeakEwmaP2c, PickContext, Picker, Rule};
use tower_ribbon::stats::{EndpointStats, Outcome, StatsConfig};
use tower_ribbon::{Endpoint, Instance};

const THREADS: usize = 4;
const PICKS_PER_THREAD: usize = 5_000;
const FAST: usize = 0;

/// One pick through the rule's picker for the list.
fn pick(picker: &dyn Picker, at: Instant) -> usize {
    let e = picker.pick(&PickContext::at(at)).expect("an endpoint");
    usize::from(e.instance().port() - 9000)
}

/// A small seeded generator per thread (SplitMix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }

    fn lag(&mut self) -> Duration {
        Duration::from_micros(self.below(3_000))
    }
}

fn snapshot() -> Snapshot {
    let mut config = StatsConfig::default();
    config.failure_penalty = Duration::from_millis(10);
    let endpoint = |port| {
        let instance = Instance::new("svc", "127.0.0.1", port).expect("instance");
        Endpoint::with_stats(
            instance,
            Arc::new(EndpointStats::with_config(config.clone())),
        )
    };
    Snapshot::new("svc", vec![endpoint(9000), endpoint(9001)], 1)
}

/// Picks and records from `THREADS` threads; returns picks per instance
/// after the first 500 of each thread.
fn run(rule: &PeakEwmaP2c, snapshot: &Arc<Snapshot>) -> [usize; 2] {
    let picker = rule.build(snapshot);
    let picker = &*picker;
    let counts = [AtomicUsize::new(0), AtomicUsize::new(0)];
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let counts = &counts;
            scope.spawn(move || {
                let mut rng = Rng(thread as u64 + 1);
                for n in 0..PICKS_PER_THREAD {
                    let now = Instant::now() + Duration::from_millis(3);
                    let i = pick(picker, now - rng.lag());
                    let latency = Duration::from_millis(if i == FAST { 10 } else { 50 });
                    let outcome = if i == FAST && rng.below(100) == 0 {
                        Outcome::FailureStatus(500)
                    } else {
                        Outcome::Success
                    };
                    let end = Instant::now() + Duration::from_millis(3) - rng.lag();
                    let stats = snapshot.endpoints()[i].stats();
                    stats.start_at(end - latency).finish_at(outcome, end);
                    if n >= 500 {
                        counts[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    [
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
    ]
}

#[test]
fn p2c_keeps_90_percent_on_the_fast_instance_under_out_of_order_timestamps() {
    let snapshot = Arc::new(snapshot());
    let rule = PeakEwmaP2c::with_seed(42);
    let counts = run(&rule, &snapshot);
    let total = counts[0] + counts[1];
    assert_eq!(total, THREADS * (PICKS_PER_THREAD - 500));
    let share = counts[FAST] as f64 / total as f64;
    println!("fast {} slow {} share {share:.4}", counts[0], counts[1]);
    assert!(share >= 0.9, "fast share {share:.4} ({counts:?})");
    let fast = snapshot.endpoints()[FAST].stats();
    let rate = fast.success_rate().expect("recorded");
    assert!(rate > 0.9, "fast success rate {rate}");
    let mean = fast.mean_response_time().expect("recorded");
    assert!(
        mean >= Duration::from_millis(9) && mean <= Duration::from_millis(11),
        "{mean:?}"
    );
}
