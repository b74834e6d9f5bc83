//! [`Absences`]: what each path's last fetch found, so that an answer
//! listing nothing while another server could not be asked is held for a
//! while after one that listed instances.
//!
//! A Eureka peer restarted on its own knows no instance until they renew
//! (one renewal interval, 30 s by default) and answers 404 (or an empty
//! registry) meanwhile. When another server of the list could not be
//! asked, that answer may hide instances the other server lists, so the
//! fetch fails and the refresh keeps its last list; an absence that lasts
//! the hold (Eureka's lease duration by default) is taken, so a removed app
//! is not kept for as long as a dead peer stays in the list. A path whose
//! last answer listed nothing (or that was never fetched) has no list to
//! keep: its absence is taken at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Most paths tracked at once; past it the entry changed longest ago is
/// dropped (a path forgotten so takes its next absence at once). The
/// balancer's on-demand services are capped at 1 024 by default.
const MAX_TRACKED: usize = 4_096;

/// What the last fetch at a path found.
#[derive(Clone, Copy, Debug)]
enum Seen {
    /// A server listed something (at this time).
    Listed(Instant),
    /// The servers that answered have listed nothing beside a failure
    /// since this time.
    AbsentSince(Instant),
}

impl Seen {
    fn at(self) -> Instant {
        match self {
            Seen::Listed(t) | Seen::AbsentSince(t) => t,
        }
    }
}

/// What each path's fetches found (shared by clones of one client: a
/// registry and its VIP source).
#[derive(Clone, Debug, Default)]
pub(crate) struct Absences {
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

impl Absences {
    /// Notes that the servers that answered listed nothing at `path` while
    /// another failed, at `now`; `true` when that answer is to be taken:
    /// the path's last answer listed nothing (there is no list to keep),
    /// or the absence has lasted `hold`. A hold of zero takes it at once.
    pub(crate) fn held_past(&self, path: &str, now: Instant, hold: Duration) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(path).copied() {
            None => true,
            Some(Seen::AbsentSince(first)) => now.saturating_duration_since(first) >= hold,
            Some(Seen::Listed(_)) => {
                seen.insert(path.to_owned(), Seen::AbsentSince(now));
                hold.is_zero()
            }
        }
    }

    /// A server listed something at `path`, at `now`.
    pub(crate) fn listed(&self, path: &str, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains_key(path) && seen.len() >= MAX_TRACKED {
            if let Some(oldest) = seen.iter().min_by_key(|(_, s)| s.at()).map(|(k, _)| k.clone()) {
                seen.remove(&oldest);
            }
        }
        seen.insert(path.to_owned(), Seen::Listed(now));
    }

    /// A copy the caller keeps at `path` (the registry's, which deltas
    /// change too) holds instances: marks the path listed, unless an
    /// absence is already being held there (it keeps running).
    pub(crate) fn copy_listed(&self, path: &str, now: Instant) {
        let held = {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            matches!(seen.get(path), Some(Seen::AbsentSince(_)))
        };
        if !held {
            self.listed(path, now);
        }
    }

    /// Every server listed nothing at `path` (or the absence was taken):
    /// the path is absent, with no list to keep.
    pub(crate) fn settled(&self, path: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.remove(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absence_after_a_listing_is_taken_once_it_lasted_the_hold() {
        let a = Absences::default();
        let t0 = Instant::now();
        let hold = Duration::from_secs(90);
        // Never listed: nothing to keep, taken at once.
        assert!(a.held_past("apps/A", t0, hold));
        a.listed("apps/A", t0);
        assert!(!a.held_past("apps/A", t0 + Duration::from_secs(1), hold));
        assert!(!a.held_past("apps/A", t0 + Duration::from_secs(90), hold));
        assert!(a.held_past("apps/A", t0 + Duration::from_secs(91), hold));
        // Another path has its own state.
        a.listed("apps/B", t0);
        assert!(!a.held_past("apps/B", t0 + Duration::from_secs(91), hold));
        // A copy that holds instances keeps a held absence running.
        a.copy_listed("apps/B", t0 + Duration::from_secs(92));
        assert!(a.held_past("apps/B", t0 + Duration::from_secs(182), hold));
        // Taken (settled): the next absence is taken at once; listed again,
        // the next one is held again.
        a.settled("apps/A");
        assert!(a.held_past("apps/A", t0 + Duration::from_secs(100), hold));
        a.listed("apps/A", t0 + Duration::from_secs(100));
        assert!(!a.held_past("apps/A", t0 + Duration::from_secs(101), hold));
        // A hold of zero takes an absence at once.
        a.listed("apps/C", t0);
        assert!(a.held_past("apps/C", t0, Duration::ZERO));
    }

    #[test]
    fn the_tracked_paths_are_bounded() {
        let a = Absences::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED + 10 {
            a.listed(&format!("apps/{i}"), t0 + Duration::from_millis(i as u64));
        }
        let seen = a.seen.lock().unwrap();
        assert_eq!(seen.len(), MAX_TRACKED);
        // The oldest went first.
        assert!(!seen.contains_key("apps/0"));
        assert!(seen.contains_key(&format!("apps/{}", MAX_TRACKED + 9)));
    }
}
