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

    fn expire(&self, now: Instant) {
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
    #[cfg(test)]
    pub(crate) fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// One request sent at `now` (the caller's clock read, so the
    /// request path reads the clock once): adds to the budget. Taken
    /// back with [`TpsBudget::take_back`] given the same instant.
    pub(crate) fn deposit_at(&self, now: Instant) {
        self.expire(now);
        self.writer.fetch_add(self.deposit_amount, Ordering::SeqCst);
    }

    /// Takes back the deposit made at `at` ([`TpsBudget::deposit_at`]) by
    /// a request that turned out to reach no instance (refused by a layer
    /// of the inner service, see `service::retrying::Spent`), from the
    /// window it went into, as [`TpsBudget::refund`] gives a withdrawal
    /// back; nothing once that window expired (the deposit no longer
    /// counts). Windows lie on a grid from the start, so `at` names the
    /// window (a deposit racing a window's end may have gone into the next
    /// one: it then expires one window later than its take-back, never
    /// counts twice).
    pub(crate) fn take_back(&self, at: Instant) {
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        self.expire_locked(&mut generation, Instant::now());
        let window = self.window.as_nanos().max(1);
        let since = at.saturating_duration_since(self.start).as_nanos() / window;
        let epoch = u64::try_from(since).unwrap_or(u64::MAX);
        self.add_to(&generation, epoch, -self.deposit_amount);
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
        self.add_to(&generation, withdrawal.epoch, self.withdraw_amount);
    }

    /// Adds `amount` to the window `epoch` if it still counts: the current
    /// one's writer, or its committed slot, not overwritten or emptied yet.
    /// The caller holds the lock (`generation`).
    fn add_to(&self, generation: &Generation, epoch: u64, amount: i64) {
        let age = generation.epoch.saturating_sub(epoch);
        if age == 0 {
            self.writer.fetch_add(amount, Ordering::SeqCst);
        } else if age <= u64::from(WINDOWS) {
            self.slots[slot(epoch)].fetch_add(amount, Ordering::SeqCst);
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
mod tests;
