//! [`TpsBudget`]: tower's `TpsBudget` (Finagle's `RetryBudget`) with the
//! same windows, but a deposit takes no lock while the current window
//! lasts. tower's locks a mutex and reads the clock on every deposit, and
//! the balancer deposits once per request sent, so two cores sending at once
//! queued on that lock.
//!
//! Two departures from tower's accounting, both so that retries never
//! exceed the configured bound: amounts are in millionths of a request
//! (tower's `(1 / ratio) as isize` truncates, so a ratio of 0.7 allowed a
//! retry per request and 0.3 one per three), and a withdrawal checks and
//! takes under the window lock (tower's reads the sum and then subtracts,
//! so withdrawals racing on several threads could all pass one check).
//! And one so that the ttl holds whatever the cadence of the calls: the
//! windows lie on a fixed grid from the start (tower's begin at the call
//! that ends the last one and empty one slot too many when a call comes
//! after a window's end, so steady traffic kept deposits for about 6 of
//! the 10 windows).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A retry budget: each request sent deposits, each retry withdraws; deposits
/// expire after `ttl` (in 10 windows); a reserve allows `min_per_sec`
/// retries per second. Amounts as in tower 0.5's `TpsBudget`.
#[derive(Debug)]
pub(crate) struct TpsBudget {
    generation: Mutex<Generation>,
    /// When the current window ends, in ns after `start`: before it, a
    /// deposit only adds (no lock).
    window_end_ns: AtomicU64,
    start: Instant,
    reserve: i64,
    slots: Box<[AtomicI64]>,
    window: Duration,
    writer: AtomicI64,
    deposit_amount: i64,
    withdraw_amount: i64,
}

#[derive(Debug)]
struct Generation {
    /// Windows begun since the start: the current one's slot is
    /// `epoch % WINDOWS`.
    epoch: u64,
    time: Instant,
}

/// A withdrawal, to give back with [`TpsBudget::refund`]: the window it
/// was taken in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Withdrawal {
    epoch: u64,
}

const WINDOWS: u32 = 10;

/// A retry withdraws this much; a request deposits `ratio` times it
/// (rounded), so the ratio counts to a millionth.
const UNIT: i64 = 1_000_000;

impl TpsBudget {
    /// `ttl` 1..=60 s, `retry_percent` 0..=1000, `min_per_sec` below
    /// `i32::MAX` (checked by `RetryBudgetConfig::validate`).
    pub(crate) fn new(ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        // At most 1000 × UNIT = 1e9 per request (NaN and below zero: 0).
        let deposit_amount =
            (f64::from(retry_percent.clamp(0.0, 1000.0)) * UNIT as f64).round() as i64;
        let withdraw_amount = UNIT;
        // At most i32::MAX × 60 000 ms × 1e3 < 1.3e17; the ttl's
        // milliseconds count (its whole seconds alone gave a 1.9 s ttl the
        // reserve of 1 s).
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let reserve = i64::from(min_per_sec)
            .saturating_mul(ttl_ms)
            .saturating_mul(withdraw_amount / 1000);
        let start = Instant::now();
        let window = ttl / WINDOWS;
        Self {
            generation: Mutex::new(Generation {
                epoch: 0,
                time: start,
            }),
            window_end_ns: AtomicU64::new(nanos(window)),
            start,
            reserve,
            slots: (0..WINDOWS).map(|_| AtomicI64::new(0)).collect(),
            window,
            writer: AtomicI64::new(0),
            deposit_amount,
            withdraw_amount,
        }
    }

    fn expire(&self) {
        let now = Instant::now();
        let at = nanos(now.saturating_duration_since(self.start));
        if at < self.window_end_ns.load(Ordering::Relaxed) {
            return;
        }
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        self.expire_locked(&mut generation, now);
    }

    /// Moves to the window `now` falls in; the caller holds the lock.
    /// Windows are `window` long from the start (a grid), so a deposit
    /// counts for 10 to 11 of them whatever the cadence of the calls.
    fn expire_locked(&self, generation: &mut Generation, now: Instant) {
        let diff = now.saturating_duration_since(generation.time);
        if diff < self.window {
            return;
        }
        let to_commit = self.writer.swap(0, Ordering::SeqCst);
        let index = slot(generation.epoch);
        self.slots[index].store(to_commit, Ordering::SeqCst);
        let window = self.window.as_nanos().max(1);
        // Windows that passed with no call are emptied, at most all of them
        // (tower's loop ran once per window, 3e8 times after a year idle).
        let passed = u64::try_from(diff.as_nanos() / window).unwrap_or(u64::MAX);
        let len = self.slots.len();
        for step in 0..passed.saturating_sub(1).min(len as u64) as usize {
            self.slots[(index + 1 + step) % len].store(0, Ordering::SeqCst);
        }
        generation.epoch = generation.epoch.saturating_add(passed);
        // The current window started on the grid, not now: tower's started
        // at the call that ended the last one, and a window run past its
        // end by a call 1.2 windows after its start emptied the next slot
        // (steady traffic kept deposits for about 6 windows) or, without
        // that, lasted 1.2 windows (13 s of deposits for a 10 s ttl).
        let into = u64::try_from(diff.as_nanos() % window).unwrap_or(0);
        generation.time = now.checked_sub(Duration::from_nanos(into)).unwrap_or(now);
        let end = generation.time.saturating_duration_since(self.start) + self.window;
        self.window_end_ns.store(nanos(end), Ordering::Relaxed);
    }

    fn sum(&self) -> i64 {
        let windowed = (self.slots.iter())
            .map(|slot| slot.load(Ordering::SeqCst))
            .fold(0, i64::saturating_add);
        (self.writer.load(Ordering::SeqCst))
            .saturating_add(windowed)
            .saturating_add(self.reserve)
    }

    /// One request: adds to the budget.
    pub(crate) fn deposit(&self) {
        self.expire();
        self.writer.fetch_add(self.deposit_amount, Ordering::SeqCst);
    }

    /// One retry: takes from the budget if it holds enough. Under the
    /// window lock, so the sum cannot move under the check except by
    /// deposits (which only add).
    #[cfg(test)]
    pub(crate) fn withdraw(&self) -> bool {
        self.take().is_some()
    }

    /// One retry, as [`TpsBudget::withdraw`]: the withdrawal if the budget
    /// held enough.
    pub(crate) fn take(&self) -> Option<Withdrawal> {
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        self.expire_locked(&mut generation, Instant::now());
        (self.sum() >= self.withdraw_amount).then(|| {
            self.writer
                .fetch_add(-self.withdraw_amount, Ordering::SeqCst);
            Withdrawal {
                epoch: generation.epoch,
            }
        })
    }
}

impl TpsBudget {
    /// Gives back a withdrawal whose retry was never sent (see
    /// `service::retrying::Unsent`), into the window it was taken in, so
    /// that the refund expires with it; nothing once that window expired
    /// (the withdrawal no longer counts). A refund into the current window
    /// outlived its withdrawal by up to a ttl, a retry the budget never
    /// held; and the 9 windows it was allowed in were too many, since a
    /// window is skipped whenever one runs past its end (a withdrawal
    /// expires in 5 windows of steady traffic).
    pub(crate) fn refund(&self, withdrawal: Withdrawal) {
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        self.expire_locked(&mut generation, Instant::now());
        let age = generation.epoch.saturating_sub(withdrawal.epoch);
        let amount = self.withdraw_amount;
        if age == 0 {
            self.writer.fetch_add(amount, Ordering::SeqCst);
        } else if age <= u64::from(WINDOWS) {
            // Committed to its slot, not overwritten or emptied yet.
            self.slots[slot(withdrawal.epoch)].fetch_add(amount, Ordering::SeqCst);
        }
    }
}

/// The slot of the window `epoch`.
fn slot(epoch: u64) -> usize {
    (epoch % u64::from(WINDOWS)) as usize
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    //! tower 0.5's `TpsBudget` tests, on this one (paused time).
    use super::*;

    #[test]
    fn empty() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _g = rt.enter();
        let b = TpsBudget::new(Duration::from_secs(1), 0, 1.0);
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn leaky() {
        let b = TpsBudget::new(Duration::from_secs(1), 0, 1.0);
        b.deposit();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn slots() {
        let b = TpsBudget::new(Duration::from_secs(1), 0, 0.5);
        b.deposit();
        b.deposit();
        tokio::time::advance(Duration::from_millis(901)).await;
        assert!(b.withdraw());
        tokio::time::advance(Duration::from_millis(2001)).await;
        b.deposit();
        tokio::time::advance(Duration::from_millis(301)).await;
        b.deposit();
        tokio::time::advance(Duration::from_millis(801)).await;
        b.deposit();
        assert!(b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn reserve() {
        let b = TpsBudget::new(Duration::from_secs(1), 5, 1.0);
        for _ in 0..5 {
            assert!(b.withdraw());
        }
        assert!(!b.withdraw());
        // The ttl's fraction counts: 4 per second over 2.5 s is 10 (its
        // whole seconds alone gave 8; helper 204).
        let b = TpsBudget::new(Duration::from_millis(2500), 4, 0.0);
        for _ in 0..10 {
            assert!(b.withdraw());
        }
        assert!(!b.withdraw());
    }

    /// A refund gives a withdrawal back while it counts, and nothing once
    /// it expired (that would add a retry the budget never held).
    #[tokio::test(start_paused = true)]
    async fn a_refund_gives_back_only_a_withdrawal_that_still_counts() {
        let b = TpsBudget::new(Duration::from_secs(1), 1, 0.0);
        let taken = b.take().unwrap();
        assert!(!b.withdraw());
        tokio::time::advance(Duration::from_millis(500)).await;
        b.refund(taken);
        assert!(b.withdraw());
        assert!(!b.withdraw());
        let taken = b.take();
        assert!(taken.is_none());
        tokio::time::advance(Duration::from_millis(1200)).await;
        let taken = b.take().unwrap();
        tokio::time::advance(Duration::from_millis(1200)).await;
        // Expired with its window: the reserve holds one retry again.
        b.refund(taken);
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    /// A refund expires with its withdrawal: given back 800 ms after it
    /// was taken (ttl 1 s), it is gone with it 400 ms later, when the
    /// budget holds only what came since (before: the refund, in the
    /// window it was made in, stayed a retry the budget never held).
    #[tokio::test(start_paused = true)]
    async fn a_refund_expires_with_its_withdrawal() {
        let b = TpsBudget::new(Duration::from_secs(1), 0, 1.0);
        for _ in 0..5 {
            b.deposit();
        }
        let taken: Vec<_> = std::iter::from_fn(|| b.take()).collect();
        assert_eq!(taken.len(), 5);
        tokio::time::advance(Duration::from_millis(800)).await;
        for t in taken {
            b.refund(t);
        }
        b.deposit();
        tokio::time::advance(Duration::from_millis(400)).await;
        b.deposit();
        let n = std::iter::from_fn(|| b.withdraw().then_some(())).count();
        assert_eq!(n, 2, "the two deposits since");
    }

    /// A refund gives back exactly what its withdrawal still takes: taken
    /// at 0 (ttl 1 s, 100 ms windows), the withdrawal counts until its
    /// window leaves at 1.1 s; refunded at 1.05 s, it is given back into
    /// that window and both leave together (before, a withdrawal older
    /// than 9 windows was not refunded, and the budget was a retry short).
    #[tokio::test(start_paused = true)]
    async fn a_refund_leaves_with_its_withdrawal() {
        let b = TpsBudget::new(Duration::from_secs(1), 1, 0.0);
        let taken = b.take().unwrap();
        tokio::time::advance(Duration::from_millis(1050)).await;
        assert!(!b.withdraw(), "the withdrawal still counts");
        b.refund(taken);
        assert_eq!(b.sum(), UNIT, "the reserve, given back");
        tokio::time::advance(Duration::from_millis(50)).await;
        b.deposit();
        assert_eq!(b.sum(), UNIT, "the reserve, both gone");
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    /// A deposit counts for the ttl (10 windows) to a window more, whatever
    /// the cadence of the calls: with a call every `step` (ttl 10 s, ratio
    /// 1), the budget holds the deposits of the last 10 to 11 s. A window
    /// that ran past its end (a call 1.2 windows after its start) emptied
    /// the next as if it had passed with no call, as tower's loop does: a
    /// call every 300 ms kept 21 deposits, not 33 (6.3 s), and every
    /// 1001 ms kept 6, not 9 (and windows that started at the call that
    /// ended the last one, without that, kept 41 of a call every 300 ms).
    #[tokio::test(start_paused = true)]
    async fn deposits_count_for_the_ttl_at_any_cadence() {
        for step in [
            100_u64, 250, 300, 500, 700, 999, 1000, 1001, 1100, 1500, 2500,
        ] {
            let b = TpsBudget::new(Duration::from_secs(10), 0, 1.0);
            for _ in 0..30_000 / step {
                tokio::time::advance(Duration::from_millis(step)).await;
                b.deposit();
            }
            let kept = std::iter::from_fn(|| b.withdraw().then_some(())).count() as u64;
            let (ttl, most) = (10_000 / step, 11_000 / step + 1);
            assert!(
                (ttl..=most).contains(&kept),
                "a call every {step} ms: {kept} deposits kept, not {ttl} to {most}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_of_deposits() {
        let b = TpsBudget::new(Duration::from_secs(10), 0, 0.2);
        for _ in 0..10 {
            b.deposit();
        }
        assert!(b.withdraw());
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    /// Retries allowed by `deposits` requests under `ratio` (no reserve).
    fn allowed(ratio: f32, deposits: usize) -> usize {
        let b = TpsBudget::new(Duration::from_secs(10), 0, ratio);
        for _ in 0..deposits {
            b.deposit();
        }
        std::iter::from_fn(|| b.withdraw().then_some(())).count()
    }

    #[tokio::test(start_paused = true)]
    async fn ratios_that_are_not_one_over_n() {
        // tower's `(1 / ratio) as isize` gave 10, 5 and 10 here.
        assert_eq!(allowed(0.7, 10), 7);
        assert_eq!(allowed(0.3, 10), 3);
        assert_eq!(allowed(0.55, 100), 55);
        assert_eq!(allowed(2.5, 10), 25);
        assert_eq!(allowed(1000.0, 1), 1000);
        assert_eq!(allowed(0.0, 1000), 0);
        assert_eq!(allowed(f32::NAN, 1000), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_idle_spell_costs_one_pass_over_the_windows() {
        let b = TpsBudget::new(Duration::from_secs(1), 2, 1.0);
        for _ in 0..50 {
            b.deposit();
        }
        // 1000 years of 100 ms windows: tower's loop stepped 3e11 times.
        tokio::time::advance(Duration::from_secs(1000 * 365 * 86_400)).await;
        b.deposit();
        let n = std::iter::from_fn(|| b.withdraw().then_some(())).count();
        assert_eq!(n, 3, "the reserve of 2 and the one new deposit");
    }

    #[test]
    fn racing_withdrawals_never_exceed_the_budget() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        for round in 0..5000 {
            // A reserve of 5 retries and 10 deposits at ratio 0.5: 10. (Before
            // the fix, 5000 rounds of 8 threads on 2 cores took more than 10.)
            let b = std::sync::Arc::new(TpsBudget::new(Duration::from_secs(1), 5, 0.5));
            let _g = rt.enter();
            for _ in 0..10 {
                b.deposit();
            }
            let start = std::sync::Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (b, start) = (b.clone(), start.clone());
                    let handle = rt.handle().clone();
                    std::thread::spawn(move || {
                        let _g = handle.enter();
                        start.wait();
                        (0..20).filter(|_| b.withdraw()).count()
                    })
                })
                .collect();
            let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert_eq!(taken, 10, "round {round}");
        }
    }

    proptest::proptest! {
        /// Within one window, deposits and withdrawals interleaved in any
        /// order never take more than `ratio` × deposits (to a millionth)
        /// plus the reserve, and taking until refused takes exactly that.
        #[test]
        fn never_more_than_ratio_plus_reserve(
            ratio_micro in 0u32..=5_000_000,
            min_per_sec in 0u32..20,
            ttl_secs in 1u64..=60,
            ops in proptest::collection::vec(proptest::bool::ANY, 0..400),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let _g = rt.enter();
            let ratio = ratio_micro as f32 / 1e6;
            let b = TpsBudget::new(Duration::from_secs(ttl_secs), min_per_sec, ratio);
            let per_deposit = u64::from(ratio_micro);
            let reserve = u64::from(min_per_sec) * ttl_secs;
            let (mut deposits, mut taken) = (0u64, 0u64);
            for deposit in ops {
                if deposit {
                    b.deposit();
                    deposits += 1;
                } else if b.withdraw() {
                    taken += 1;
                }
                proptest::prop_assert!(taken <= per_deposit * deposits / 1_000_000 + reserve);
            }
            while b.withdraw() {
                taken += 1;
            }
            proptest::prop_assert_eq!(taken, per_deposit * deposits / 1_000_000 + reserve);
        }
    }
}
