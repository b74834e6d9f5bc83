//! A registration the server ignored: its copy was stamped by a clock
//! ahead of this host's.
//!
//! Over an existing lease, Eureka keeps its own copy when that copy's
//! `lastDirtyTimestamp` is later than the registration's, and answers 204
//! all the same (`AbstractInstanceRegistry.register`; Netflix/eureka#802).
//! Heartbeats stamped earlier than the copy get 200
//! (`InstanceResource.validateDirtyTimestamp`), so nothing corrects it.
//! Timestamps are wall-clock milliseconds of whoever wrote them, and
//! another clock can be ahead of this host's: a previous run of the
//! instance on a host whose clock was ahead (or this host's clock stepped
//! back by NTP since) left a copy with its old metadata and address,
//! served for as long as this run renewed the lease; an operator whose
//! clock is ahead cleared an override (the server then serves UNKNOWN and
//! 404s heartbeats, Netflix/eureka#955), and every re-registration was
//! ignored until this host's clock passed the operator's. Java's client
//! has the same gap (its `InstanceInfo` is stamped with its own clock
//! only).
//!
//! Here every registration reads the instance back (`GET
//! {base}/apps/{APP}/{id}`, JSON) from the server that took it: a copy
//! stamped later than the registration raises the instance's timestamp
//! past the copy's, and the instance registers once more. A copy stamped
//! at or past `i64::MAX` (Java's `Long`, which no later stamp fits) is
//! left, with a warning. A failed read is logged at DEBUG and the
//! registration stands. Cost: one GET per registration (the first, and
//! each one after a heartbeat's 404).

use std::sync::atomic::Ordering;

use serde::Deserialize;

use super::super::client::Fetched;
use super::super::wire::WireError;
use super::Shared;
use crate::instance::InstanceStatus;

/// The latest `lastDirtyTimestamp` a stamp can carry: Eureka parses it as
/// a Java `long`.
pub(super) const MAX_STAMP: u64 = i64::MAX as u64;

impl Shared {
    /// Reads the instance back from `server` after a registration stamped
    /// `sent`: `true` if the server kept a copy stamped later, and the
    /// instance's timestamp now passes it (register again). Call with `op`
    /// held.
    pub(super) async fn kept_newer_copy_locked(&self, server: &str, sent: u64) -> bool {
        let read = self.http.get_at(server, &self.path(), decode_dirty).await;
        // A failed read still ends the run's first: what the server held
        // at the start is unknown, so nothing counts as held then. Else the
        // next read (the first UP's) took a deployer's disable set
        // meanwhile for a crashed run's leftover and deleted it (helper
        // 228); a crashed run's drain is then kept, as Java's client keeps
        // it, until an explicit `set_status(Up)` finds it.
        match &read {
            Ok(Fetched::Found((_, overridden))) => self.first_up.registered(*overridden),
            _ => self.first_up.registered(None),
        }
        let theirs = match read {
            Ok(Fetched::Found((Some(theirs), _))) => theirs,
            Ok(Fetched::Found((None, _)) | Fetched::NotFound) => return false,
            Err(e) => {
                tracing::debug!(app = %self.app, id = %self.id, error = %e, "could not read the registration back");
                return false;
            }
        };
        if theirs <= sent {
            return false;
        }
        if theirs >= MAX_STAMP {
            tracing::warn!(app = %self.app, id = %self.id, %server, theirs, "Eureka keeps a copy of the instance stamped at the latest time a timestamp can carry; it cannot be replaced");
            return false;
        }
        tracing::warn!(app = %self.app, id = %self.id, %server, theirs, sent, "Eureka kept its copy of the instance, stamped later than this host's clock; registering again stamped past it");
        self.raise_dirty_past(theirs);
        true
    }

    /// Raises the dirty timestamp past `stamp`.
    fn raise_dirty_past(&self, stamp: u64) {
        let _ = self
            .dirty
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |was| {
                Some(was.max(stamp.saturating_add(1)).min(MAX_STAMP))
            });
    }
}

/// The `lastDirtyTimestamp` of a `GET /apps/{APP}/{id}` JSON answer
/// (`{"instance":{"lastDirtyTimestamp":"1764400000100",…}}`, a string in
/// Eureka's codec, a number accepted too); `None` when absent or not a
/// count of milliseconds. And its `overriddenStatus` (also spelled
/// `overriddenstatus`), `None` when absent or not text.
pub(super) fn decode_dirty(
    body: &[u8],
    _deadline: std::time::Instant,
) -> Result<(Option<u64>, Option<InstanceStatus>), WireError> {
    #[derive(Deserialize)]
    struct Envelope {
        instance: Record,
    }
    #[derive(Deserialize)]
    struct Record {
        #[serde(rename = "lastDirtyTimestamp", default)]
        last_dirty: super::first_up::Millis,
        // Both spellings, each its own field: Eureka's codec may write
        // both, and an alias would refuse the answer as a duplicate.
        #[serde(rename = "overriddenStatus", default)]
        camel: Status,
        #[serde(rename = "overriddenstatus", default)]
        lower: Status,
    }
    let record = serde_json::from_slice::<Envelope>(body)
        .map_err(WireError::from_json)?
        .instance;
    Ok((record.last_dirty.0, record.camel.0.or(record.lower.0)))
}

/// A status written as text; anything else is `None`, skipped without
/// being kept (as [`super::first_up::Millis`]).
#[derive(Debug, Default)]
struct Status(Option<InstanceStatus>);

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Status;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an instance status")
            }
            fn visit_str<E>(self, v: &str) -> Result<Status, E> {
                Ok(Status(Some(InstanceStatus::parse(v))))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Status, E> {
                Ok(Status(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Status, E> {
                Ok(Status(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Status, E> {
                Ok(Status(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Status, E> {
                Ok(Status(None))
            }
            fn visit_unit<E>(self) -> Result<Status, E> {
                Ok(Status(None))
            }
            fn visit_none<E>(self) -> Result<Status, E> {
                Ok(Status(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Status, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Status(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Status, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Status(None))
            }
        }
        d.deserialize_any(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_is_read_from_an_instance_answer() {
        let at = std::time::Instant::now();
        let dirty = |body: &str| decode_dirty(body.as_bytes(), at).map(|(d, _)| d);
        let over = |body: &str| decode_dirty(body.as_bytes(), at).map(|(_, o)| o);
        let both = r#"{"instance":{"overriddenStatus":"OUT_OF_SERVICE","overriddenstatus":"OUT_OF_SERVICE"}}"#;
        assert_eq!(over(both).unwrap(), Some(InstanceStatus::OutOfService));
        assert_eq!(over(r#"{"instance":{"overriddenstatus":"DOWN"}}"#).unwrap(), Some(InstanceStatus::Down));
        for odd in [r#"{"instance":{}}"#, r#"{"instance":{"overriddenStatus":[1,{"a":2}]}}"#, r#"{"instance":{"overriddenStatus":null}}"#] {
            assert_eq!(over(odd).unwrap(), None, "{odd}");
        }
        let text = r#"{"instance":{"status":"UP","lastDirtyTimestamp":"1796444945560"}}"#;
        assert_eq!(dirty(text).unwrap(), Some(1_796_444_945_560));
        let number = r#"{"instance":{"lastDirtyTimestamp":1796444945560}}"#;
        assert_eq!(dirty(number).unwrap(), Some(1_796_444_945_560));
        for odd in [
            r#"{"instance":{}}"#,
            r#"{"instance":{"lastDirtyTimestamp":"-5"}}"#,
            r#"{"instance":{"lastDirtyTimestamp":"soon"}}"#,
            r#"{"instance":{"lastDirtyTimestamp":-5}}"#,
            r#"{"instance":{"lastDirtyTimestamp":null}}"#,
            r#"{"instance":{"lastDirtyTimestamp":{"$":1}}}"#,
            r#"{"instance":{"lastDirtyTimestamp":[1796444945560,[0,{"a":[]}]]}}"#,
            r#"{"instance":{"lastDirtyTimestamp":1.5}}"#,
            r#"{"instance":{"lastDirtyTimestamp":true}}"#,
        ] {
            assert_eq!(dirty(odd).unwrap(), None, "{odd}");
        }
        // Out of a double's range: serde_json refuses the whole answer.
        assert!(dirty(r#"{"instance":{"lastDirtyTimestamp":1e400}}"#).is_err());
        assert!(dirty("<instance/>").is_err());
        assert!(dirty(r#"{"application":{}}"#).is_err());
    }
}
