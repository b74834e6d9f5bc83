//! At most one INFO line a second about events whose rate others choose:
//! requests to unknown services (a gateway forwards any host name) and
//! retries (one per request while an instance fails). The others go to
//! DEBUG and are counted in the next INFO line's `suppressed` field.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// A rate limit on one kind of INFO line: [`LogLimit::admit`] says whether
/// this event writes it. Lock-free; a race lets at most one line through.
pub(super) struct LogLimit {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last INFO line; `u64::MAX`: none
    /// yet.
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl LogLimit {
    /// The shortest time between two INFO lines.
    pub(super) const EVERY_MS: u64 = 1_000;

    /// `Some(events not logged at INFO since the last line)` if this event
    /// writes the INFO line, else `None` (log it at DEBUG).
    pub(super) fn admit(&self) -> Option<u64> {
        let ms = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis();
        self.admit_at(u64::try_from(ms).unwrap_or(u64::MAX - 1))
    }

    fn admit_at(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now_ms.saturating_sub(last) >= Self::EVERY_MS;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::LogLimit;

    #[test]
    fn one_line_a_second_counts_the_rest() {
        let limit = LogLimit::default();
        assert_eq!(limit.admit_at(0), Some(0));
        assert_eq!(limit.admit_at(1), None);
        assert_eq!(limit.admit_at(999), None);
        assert_eq!(limit.admit_at(1_000), Some(2));
        assert_eq!(limit.admit_at(1_500), None);
        // A clock read before the last line (a racing thread) waits.
        assert_eq!(limit.admit_at(900), None);
        assert_eq!(limit.admit_at(2_000), Some(2));
    }

    /// Eight threads admit 10 000 events each at the same clock readings
    /// (one tick a millisecond, 0..40 s): every event is counted exactly
    /// once, as an INFO line or in the next line's `suppressed`, and lines
    /// are at least a second apart.
    #[test]
    fn threads_at_once_lose_and_double_count_nothing() {
        let limit = LogLimit::default();
        let lines: Vec<(u64, u64)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let limit = &limit;
                    scope.spawn(move || {
                        (0..10_000u64)
                            .filter_map(|i| limit.admit_at(i * 4).map(|n| (i * 4, n)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let counted: u64 = lines.iter().map(|&(_, n)| n + 1).sum();
        let pending = limit.suppressed.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(counted + pending, 80_000);
        let mut at: Vec<u64> = lines.iter().map(|&(t, _)| t).collect();
        at.sort_unstable();
        assert!(
            at.windows(2).all(|w| w[1] - w[0] >= LogLimit::EVERY_MS),
            "{at:?}"
        );
        assert!(at.len() <= 40, "{}", at.len());
    }
}
