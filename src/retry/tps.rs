//! [`TpsBudget`]: tower's `TpsBudget` (Finagle's `RetryBudget`) with the
//! same accounting, but a deposit takes no lock while the current window
//! lasts. tower's locks a mutex and reads the clock on every deposit, and
//! the balancer deposits once per request, so two cores sending at once
//! queued on that lock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A retry budget: each request deposits, each retry withdraws; deposits
/// expire after `ttl` (in 10 windows); a reserve allows `min_per_sec`
/// retries per second. Amounts as in tower 0.5's `TpsBudget`.
#[derive(Debug)]
pub(crate) struct TpsBudget {
    generation: Mutex<Generation>,
    /// When the current window ends, in ns after `start`: before it, a
    /// deposit only adds (no lock).
    window_end_ns: AtomicU64,
    start: Instant,
    reserve: isize,
    slots: Box<[AtomicIsize]>,
    window: Duration,
    writer: AtomicIsize,
    deposit_amount: isize,
    withdraw_amount: isize,
}

#[derive(Debug)]
struct Generation {
    index: usize,
    time: Instant,
}

const WINDOWS: u32 = 10;

impl TpsBudget {
    /// `ttl` 1..=60 s, `retry_percent` 0..=1000, `min_per_sec` below
    /// `i32::MAX` (checked by `RetryBudgetConfig::validate`).
    pub(crate) fn new(ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        let (deposit_amount, withdraw_amount) = if retry_percent <= 0.0 {
            (0, 1)
        } else if retry_percent <= 1.0 {
            (1, (1.0 / retry_percent) as isize)
        } else {
            (1000, (1000.0 / retry_percent) as isize)
        };
        let reserve = isize::try_from(min_per_sec)
            .unwrap_or(isize::MAX)
            .saturating_mul(isize::try_from(ttl.as_secs()).unwrap_or(isize::MAX))
            .saturating_mul(withdraw_amount);
        let start = Instant::now();
        let window = ttl / WINDOWS;
        Self {
            generation: Mutex::new(Generation {
                index: 0,
                time: start,
            }),
            window_end_ns: AtomicU64::new(nanos(window)),
            start,
            reserve,
            slots: (0..WINDOWS).map(|_| AtomicIsize::new(0)).collect(),
            window,
            writer: AtomicIsize::new(0),
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
        let diff = now.saturating_duration_since(generation.time);
        if diff < self.window {
            return;
        }
        let to_commit = self.writer.swap(0, Ordering::SeqCst);
        self.slots[generation.index].store(to_commit, Ordering::SeqCst);
        let mut diff = diff;
        let mut idx = (generation.index + 1) % self.slots.len();
        while diff > self.window {
            self.slots[idx].store(0, Ordering::SeqCst);
            diff -= self.window;
            idx = (idx + 1) % self.slots.len();
        }
        generation.index = idx;
        generation.time = now;
        let end = now.saturating_duration_since(self.start) + self.window;
        self.window_end_ns.store(nanos(end), Ordering::Relaxed);
    }

    fn sum(&self) -> isize {
        let windowed = (self.slots.iter())
            .map(|slot| slot.load(Ordering::SeqCst))
            .fold(0, isize::saturating_add);
        (self.writer.load(Ordering::SeqCst))
            .saturating_add(windowed)
            .saturating_add(self.reserve)
    }

    /// One request: adds to the budget.
    pub(crate) fn deposit(&self) {
        self.expire();
        self.writer.fetch_add(self.deposit_amount, Ordering::SeqCst);
    }

    /// One retry: takes from the budget if it holds enough.
    pub(crate) fn withdraw(&self) -> bool {
        self.expire();
        if self.sum() >= self.withdraw_amount {
            self.writer
                .fetch_add(-self.withdraw_amount, Ordering::SeqCst);
            true
        } else {
            false
        }
    }
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
}
