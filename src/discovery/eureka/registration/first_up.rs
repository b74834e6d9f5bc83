//! A run's first registration with UP, and what it finds served.
//!
//! At a run's first UP the instance is read back once (`status.rs`): a
//! served DOWN or STARTING this registration never sent is a previous
//! run's (a run of the same id that went DOWN and died without
//! cancelling) and is undone; another status it never sent (an
//! OUT_OF_SERVICE: a previous run's drain, killed before it cancelled, or
//! an operator's) is kept, as Java's client keeps it, and noted, so an
//! explicit `set_status(Up)` removes it while the server still serves it.
//!
//! When that read fails, the decision waits for the first read-back that
//! succeeds (`late.rs`), which applies the same rules once (helper 203:
//! armed instead to undo any DOWN for ten read-backs, it undid an
//! operator's DOWN set later in the run, and a crashed drain was never
//! noted). A restarted registration (`shutdown`, then `start`) is a new
//! run and starts over.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use super::Shared;
use crate::instance::InstanceStatus;

/// `status`'s bit in `Shared::sent` and `Shared::undoable`.
pub(super) fn bit(status: InstanceStatus) -> u8 {
    match status {
        InstanceStatus::Up => 1,
        InstanceStatus::Down => 2,
        InstanceStatus::Starting => 4,
        InstanceStatus::OutOfService => 8,
        InstanceStatus::Unknown => 16,
    }
}

/// The first-UP state of one run.
pub(super) struct FirstUp {
    /// The first UP's read was made (or is being made).
    read: AtomicBool,
    /// That read failed: the next read-back that succeeds decides.
    pending: AtomicBool,
    /// The status bit of an override found served from before the run
    /// (0: none), while no read showed it gone.
    found: AtomicU8,
    /// The `lastUpdatedTimestamp` it was served with (0: unknown).
    found_at: AtomicU64,
}

/// What the first UP's rules make of a served status this registration
/// never sent.
pub(super) enum Found {
    /// A previous run's DOWN or STARTING: send the wanted status.
    PreviousRun,
    /// An override from before the run: kept, and noted.
    Kept,
}

impl FirstUp {
    pub(super) const fn new() -> Self {
        Self {
            read: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            found: AtomicU8::new(0),
            found_at: AtomicU64::new(0),
        }
    }

    /// `true` once per run: this is the run's first UP.
    pub(super) fn take(&self) -> bool {
        !self.read.swap(true, Ordering::AcqRel)
    }

    /// The first UP's read failed: the next read-back decides.
    pub(super) fn read_failed(&self) {
        self.pending.store(true, Ordering::Release);
    }

    /// `true` once after a failed first read: this read-back decides.
    pub(super) fn take_pending(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// A read showed `served`, last updated at `updated`: an override
    /// noted before that is no longer served as then is forgotten (an
    /// operator's later one of the same status is not the one found).
    pub(super) fn seen(&self, served: InstanceStatus, updated: Option<u64>) {
        if !self.still_served(served, updated) {
            self.found.store(0, Ordering::Release);
        }
    }

    /// Whether the override noted is the one served now.
    pub(super) fn still_served(&self, served: InstanceStatus, updated: Option<u64>) -> bool {
        let found = self.found.load(Ordering::Acquire);
        let at = self.found_at.load(Ordering::Acquire);
        found != 0 && found == bit(served) && (at == 0 || updated.is_none_or(|u| u == at))
    }

    /// The status bit of the override found from before the run, if any.
    pub(super) fn found(&self) -> u8 {
        self.found.load(Ordering::Acquire)
    }

    /// The app changed its status: the override found is replaced.
    pub(super) fn forget(&self) {
        self.found.store(0, Ordering::Release);
    }

    /// A new run (a start after `shutdown`).
    pub(super) fn reset(&self) {
        self.read.store(false, Ordering::Release);
        self.pending.store(false, Ordering::Release);
        self.forget();
    }
}

impl Shared {
    /// The first UP's rules for `served` (not UP, never sent by this
    /// registration), read from `server`.
    pub(super) fn first_up_found(
        &self,
        served: InstanceStatus,
        updated: Option<u64>,
        server: &str,
    ) -> Found {
        if matches!(served, InstanceStatus::Down | InstanceStatus::Starting) {
            tracing::info!(app = %self.app, id = %self.id, served = served.as_str(), %server, "Eureka serves a previous run's DOWN or STARTING; sending the wanted status");
            return Found::PreviousRun;
        }
        (self.first_up.found_at).store(updated.unwrap_or(0), Ordering::Release);
        self.first_up.found.store(bit(served), Ordering::Release);
        tracing::warn!(app = %self.app, id = %self.id, served = served.as_str(), %server, "Eureka serves an override from before this run (an operator's, or a previous run's drain); left as it is: `set_status(Up)` removes it");
        Found::Kept
    }
}
