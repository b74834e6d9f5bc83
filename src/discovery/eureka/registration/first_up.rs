//! A run's first registration with UP, and what it finds served.
//!
//! At a run's first UP the instance is read back once (`status.rs`): a
//! served DOWN or STARTING this registration never sent is a previous
//! run's (a run of the same id that went DOWN and died without
//! cancelling) and is undone; another status it never sent (an
//! OUT_OF_SERVICE: a previous run's drain, killed before it cancelled, or
//! an operator's) is kept, as Java's client keeps it, and noted, so an
//! explicit `set_status(Up)` removes it while the server still serves it
//! (and no change of the app's own came since). A run started STARTING
//! has its first UP at its `set_status(Up)`, sent in a registration that
//! restamps the record: there an OUT_OF_SERVICE it never sent is kept as
//! an operator's (a deployer's disable while it was STARTING), not noted.
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
    /// When the run's first UP registration was answered (ms since the
    /// Unix epoch, this host's clock).
    registered_ms: AtomicU64,
    /// The run's first registration was read back (or is being read).
    start_read: AtomicBool,
    /// The status bit of the override the server held then
    /// (`overriddenStatus`; 0: none, or not read).
    start_override: AtomicU8,
}

/// How long after the lease's registration (the registry's clock) a status
/// last changed still counts as the registration's own: Eureka stamps
/// `lastUpdatedTimestamp` in `register` just after it starts the lease.
const REGISTRATION_MS: u64 = 1_000;

/// How far the registry's clock may run ahead of this host's, for an
/// answer without its lease's `registrationTimestamp`.
pub(super) const CLOCK_SKEW_MS: u64 = 2_000;

/// When the registry last changed an instance, and when its lease was
/// registered (`lastUpdatedTimestamp`, `leaseInfo.registrationTimestamp`;
/// ms since the Unix epoch, the registry's clock; `None` when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) updated: Option<u64>,
    pub(super) registered: Option<u64>,
}

/// The `status` and [`Stamp`] of a `GET /apps/{APP}/{id}` JSON answer
/// (timestamps as numbers or strings of digits). The registry stamps
/// every status change, an operator's included, so an override served
/// twice with the same stamp is the same override.
pub(super) fn decode_served(
    body: &[u8],
    _deadline: std::time::Instant,
) -> Result<(InstanceStatus, Stamp), super::super::wire::WireError> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        instance: Record,
    }
    #[derive(serde::Deserialize)]
    struct Record {
        status: String,
        #[serde(rename = "lastUpdatedTimestamp", default)]
        updated: Millis,
        #[serde(rename = "leaseInfo", default)]
        lease: Option<Lease>,
    }
    #[derive(serde::Deserialize)]
    struct Lease {
        #[serde(rename = "registrationTimestamp", default)]
        registered: Millis,
    }
    serde_json::from_slice::<Envelope>(body)
        .map(|e| {
            let stamp = Stamp {
                updated: e.instance.updated.0,
                registered: e.instance.lease.and_then(|l| l.registered.0),
            };
            (InstanceStatus::parse(&e.instance.status), stamp)
        })
        .map_err(super::super::wire::WireError::from_json)
}

/// A timestamp in milliseconds as Eureka writes one: a number, or a string
/// of digits (its codec's `lastDirtyTimestamp`). Anything else (`null`, a
/// negative or fractional number, other text, an array, an object) is
/// `None`, and is skipped without being kept: a `serde_json::Value` or an
/// untagged enum held a whole array written in its place, 25 times the
/// body (a 16 KB gzip answer cost 400 MiB; helper 208).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Millis(pub(super) Option<u64>);

impl<'de> serde::Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Millis;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a timestamp in milliseconds")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Millis, E> {
                Ok(Millis(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Millis, E> {
                Ok(Millis(u64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Millis, E> {
                Ok(Millis(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Millis, E> {
                Ok(Millis(None))
            }
            fn visit_str<E>(self, v: &str) -> Result<Millis, E> {
                Ok(Millis(v.trim().parse().ok()))
            }
            fn visit_unit<E>(self) -> Result<Millis, E> {
                Ok(Millis(None))
            }
            fn visit_none<E>(self) -> Result<Millis, E> {
                Ok(Millis(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Millis, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Millis(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Millis, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Millis(None))
            }
        }
        d.deserialize_any(Visit)
    }
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
            registered_ms: AtomicU64::new(0),
            start_read: AtomicBool::new(false),
            start_override: AtomicU8::new(0),
        }
    }

    /// The read-back of a registration (`kept.rs`): at the run's first,
    /// notes the override the server held (`overriddenStatus`), which a
    /// start through STARTING cannot tell by its stamp at its first UP.
    pub(super) fn registered(&self, overridden: Option<InstanceStatus>) {
        if !self.start_read.swap(true, Ordering::AcqRel) {
            let found = overridden.filter(|s| *s != InstanceStatus::Up && *s != InstanceStatus::Unknown);
            self.start_override.store(found.map_or(0, bit), Ordering::Release);
        }
    }

    /// Whether the server held `served` as the override when the run
    /// first registered.
    pub(super) fn at_start(&self, served: InstanceStatus) -> bool {
        let at = self.start_override.load(Ordering::Acquire);
        at != 0 && at == bit(served)
    }

    /// `true` once per run: this is the run's first UP (its registration
    /// was just answered; the time is noted).
    pub(super) fn take(&self) -> bool {
        let first = !self.read.swap(true, Ordering::AcqRel);
        if first {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            self.registered_ms.store(now, Ordering::Release);
        }
        first
    }

    /// Whether a status served with `stamp` was there when this run
    /// registered: last changed within [`REGISTRATION_MS`] of the lease's
    /// registration (both the registry's clock), else, without the
    /// registration time, by this host's clock within [`CLOCK_SKEW_MS`].
    /// One changed later (an operator's DOWN while the first read kept
    /// failing) is kept, not taken for a previous run's (helper 206).
    /// Unknown counts as before.
    pub(super) fn before_run(&self, stamp: Stamp) -> bool {
        let Some(updated) = stamp.updated else {
            return true;
        };
        match stamp.registered {
            Some(lease) => updated <= lease.saturating_add(REGISTRATION_MS),
            None => {
                let registered = self.registered_ms.load(Ordering::Acquire);
                updated <= registered.saturating_add(CLOCK_SKEW_MS)
            }
        }
    }

    /// The first UP's read failed: the next read-back decides.
    pub(super) fn read_failed(&self) {
        self.pending.store(true, Ordering::Release);
    }

    /// `true` once after a failed first read: this read-back decides (it
    /// lapses with the read-backs; helper 206: it lasted the whole run, so a
    /// later `set_status(Up)` removed an operator's override).
    pub(super) fn take_pending(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// A read showed `served`, last updated at `updated`: an override
    /// noted before that is no longer served as then is forgotten (an
    /// operator's later one of the same status is not the one found).
    pub(super) fn seen(&self, served: InstanceStatus, stamp: Stamp) {
        if !self.still_served(served, stamp) {
            self.found.store(0, Ordering::Release);
        }
    }

    /// Whether the override noted is the one served now.
    pub(super) fn still_served(&self, served: InstanceStatus, stamp: Stamp) -> bool {
        let updated = stamp.updated;
        let found = self.found.load(Ordering::Acquire);
        let at = self.found_at.load(Ordering::Acquire);
        found != 0 && found == bit(served) && (at == 0 || updated.is_none_or(|u| u == at))
    }

    /// The status bit of the override found from before the run, if any.
    pub(super) fn found(&self) -> u8 {
        self.found.load(Ordering::Acquire)
    }

    /// The app changed its status: the override found is no longer
    /// removed by a repeated UP.
    pub(super) fn forget(&self) {
        self.found.store(0, Ordering::Release);
    }

    /// A new run (a start after `shutdown`).
    pub(super) fn reset(&self) {
        self.read.store(false, Ordering::Release);
        self.pending.store(false, Ordering::Release);
        self.start_read.store(false, Ordering::Release);
        self.start_override.store(0, Ordering::Release);
        self.forget();
    }
}

impl Shared {
    /// The first UP's rules for `served` (not UP, never sent by this
    /// registration), read from `server`.
    pub(super) fn first_up_found(
        &self,
        served: InstanceStatus,
        stamp: Stamp,
        server: &str,
    ) -> Found {
        if matches!(served, InstanceStatus::Down | InstanceStatus::Starting) {
            tracing::info!(app = %self.app, id = %self.id, served = served.as_str(), %server, "Eureka serves a previous run's DOWN or STARTING; sending the wanted status");
            return Found::PreviousRun;
        }
        (self.first_up.found_at).store(stamp.updated.unwrap_or(0), Ordering::Release);
        self.first_up.found.store(bit(served), Ordering::Release);
        tracing::warn!(app = %self.app, id = %self.id, served = served.as_str(), %server, "Eureka serves an override from before this run (an operator's, or a previous run's drain); left as it is: `set_status(Up)` removes it");
        Found::Kept
    }
}
