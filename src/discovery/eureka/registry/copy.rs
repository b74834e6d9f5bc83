//! The local copy of the registry: records by app and instance id, deltas
//! applied by `actionType`, the status-count hash, and the size bound.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::super::wire::{ActionType, Application, Applications};
use crate::instance::Instance;

/// One registry record: its raw status (for the hash) and, if usable, the
/// instance.
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub(super) raw_status: String,
    pub(super) instance: Option<Instance>,
}

/// App name (upper case) → instance id → record.
pub(super) type Registry = HashMap<String, BTreeMap<String, Record>>;

/// The status-count hash of `registry` (Eureka's
/// `Applications.getReconcileHashCode`): `STATUS_count_` per status, sorted.
pub(super) fn hash_of(registry: &Registry) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for app in registry.values() {
        for record in app.values() {
            *counts.entry(record.raw_status.as_str()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(status, n)| format!("{status}_{n}_"))
        .collect()
}

/// The status-count hash of a parsed payload (skipped records included).
pub fn status_hash(apps: &Applications) -> String {
    let mut registry = Registry::new();
    apply(&mut registry, apps, true);
    hash_of(&registry)
}

/// An app's records in the order [`apply`] takes them (usable ones, then
/// skipped ones that have an id): id, action, instance if usable, status.
pub(super) fn records_of(
    app: &Application,
) -> impl Iterator<Item = (&str, ActionType, Option<&Instance>, &str)> {
    app.instances
        .iter()
        .map(|i| {
            (
                i.instance.id(),
                i.action,
                Some(&i.instance),
                &*i.raw_status,
            )
        })
        .chain(app.rejected.iter().filter_map(|r| {
            Some((
                r.id.as_deref()?,
                r.action,
                None,
                r.raw_status.as_deref().unwrap_or("UNKNOWN"),
            ))
        }))
}

/// The key of an app in the copy: its name upper-cased the way Eureka
/// (Java's `toUpperCase(Locale.ROOT)`) does, Unicode included
/// (`über-service` is `ÜBER-SERVICE`).
pub(super) fn app_key(name: &str) -> String {
    name.trim().to_uppercase()
}

/// Applies `apps` to `registry`: as a full copy, or by `actionType`.
pub(super) fn apply(registry: &mut Registry, apps: &Applications, full: bool) {
    if full {
        registry.clear();
    }
    for app in &apps.applications {
        let name = app_key(&app.name);
        let entries = registry.entry(name.clone()).or_default();
        for (id, action, instance, raw_status) in records_of(app) {
            match action {
                ActionType::Deleted if !full => {
                    entries.remove(id);
                }
                // A delta entry without a known action is ignored, as the
                // Java client does.
                ActionType::Unknown if !full => {}
                _ => {
                    let record = Record {
                        raw_status: raw_status.to_owned(),
                        instance: instance.cloned(),
                    };
                    entries.insert(id.to_owned(), record);
                }
            }
        }
        if entries.is_empty() {
            registry.remove(&name);
        }
    }
}

/// What a copy holds, for its bounds: records (usable or not), the
/// metadata entries of their instances, and their text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Footprint {
    pub(super) records: usize,
    pub(super) metadata: usize,
    /// Bytes of metadata keys and values.
    pub(super) metadata_bytes: usize,
    /// Bytes of all the text a record keeps: its metadata, id, health
    /// check URL and status (each as the payload carried it once).
    pub(super) text_bytes: usize,
}

/// One record's part of a [`Footprint`]: metadata entries, metadata bytes,
/// all text bytes.
type Weight = (usize, usize, usize);

impl Footprint {
    fn add(&mut self, (entries, bytes, text): Weight) {
        self.records += 1;
        self.metadata = self.metadata.saturating_add(entries);
        self.metadata_bytes = self.metadata_bytes.saturating_add(bytes);
        self.text_bytes = self.text_bytes.saturating_add(text);
    }

    fn remove(&mut self, (entries, bytes, text): Weight) {
        self.records = self.records.saturating_sub(1);
        self.metadata = self.metadata.saturating_sub(entries);
        self.metadata_bytes = self.metadata_bytes.saturating_sub(bytes);
        self.text_bytes = self.text_bytes.saturating_sub(text);
    }
}

/// A record's weight: its instance's metadata entries and their bytes
/// (keys and values), and its text: those bytes plus the id (the copy's
/// key, the one text a skipped record keeps besides its status), the
/// instance's host, health check URL and zone, the raw status and its
/// service name (the instance's, which each delta's records hold in a copy
/// of their own; a skipped record's app's). Each as a field of the payload
/// carried it, so a copy no full payload could carry is over the body
/// bound, and none a payload within it carries is (a service name is
/// counted per record: an upper bound of what the copies of it take). The
/// copy holds the id and a `metadata.zone` twice: at most twice the text
/// counted. The key of each app the copy
/// holds counts once more, in [`footprint`], [`footprint_of`] and
/// [`footprint_after`].
fn weight_of(app: &str, id: &str, instance: Option<&Instance>, raw_status: &str) -> Weight {
    let (entries, bytes) = instance.map_or((0, 0), |i| {
        let bytes = (i.metadata().iter())
            .map(|(k, v)| k.len().saturating_add(v.len()))
            .fold(0usize, usize::saturating_add);
        (i.metadata().len(), bytes)
    });
    // The instance's host, health check URL and zone, each as the payload
    // carried it: a zone from `dataCenterInfo` was counted nowhere, so
    // deltas of ~90 KiB zones each within a 1 MiB body bound held 7 MiB
    // (helper 144); one from `metadata.zone` is in `bytes` already.
    // Counting the copies of the id and the zone the copy also keeps
    // refused full payloads within the bound (helper 146).
    let own = instance.map_or(0, |i| {
        let zone = i.zone().filter(|z| i.metadata().get("zone").is_none_or(|m| m != z));
        [
            i.host().len(),
            i.health_check_url().map_or(0, str::len),
            zone.map_or(0, str::len),
        ]
        .into_iter()
        .fold(0, usize::saturating_add)
    });
    let service = instance.map_or(app.len(), |i| i.service_id().len());
    let text = [id.len(), own, raw_status.len(), service]
        .into_iter()
        .fold(bytes, usize::saturating_add);
    (entries, bytes, text)
}

/// A held record's weight.
fn weight_of_record(app: &str, id: &str, record: &Record) -> Weight {
    weight_of(app, id, record.instance.as_ref(), &record.raw_status)
}

/// What `registry` holds: its records, and the key of each app once (an
/// app's name upper-cased, which can be three times the bytes the payload
/// carried: `ΐ` is two bytes, `Ϊ́` six). The keys were not counted: a
/// record saying `"app":"A"` under an app named with 1 MiB let each delta
/// add 1 MiB (24 MiB held under a 4 MiB body bound), and a 3.5 MiB payload
/// leave a 10.5 MiB key (helper 132).
pub(super) fn footprint(registry: &Registry) -> Footprint {
    let mut held = Footprint::default();
    for (app, records) in registry {
        for (id, record) in records {
            held.add(weight_of_record(app, id, record));
        }
        held.text_bytes = held.text_bytes.saturating_add(app.len());
    }
    held
}

/// The key of each app of `apps`, in order.
fn app_keys(apps: &Applications) -> Vec<String> {
    apps.applications.iter().map(|a| app_key(&a.name)).collect()
}

/// What a full copy of `apps` would hold (the last record for an id wins,
/// as in [`apply`]).
pub(super) fn footprint_of(apps: &Applications) -> Footprint {
    // Each app's key once, borrowed by its records' entries: a copy per
    // record made a 1 MiB app name with 200 records cost 200 MiB here.
    let names = app_keys(apps);
    let mut last: HashMap<(&str, &str), Weight> = HashMap::new();
    for (app, name) in apps.applications.iter().zip(&names) {
        for (id, _, instance, raw_status) in records_of(app) {
            let weight = weight_of(name, id, instance, raw_status);
            last.insert((name.as_str(), id), weight);
        }
    }
    let mut held = Footprint::default();
    let mut keys: HashSet<&str> = HashSet::new();
    for ((name, _), m) in last {
        held.add(m);
        if keys.insert(name) {
            held.text_bytes = held.text_bytes.saturating_add(name.len());
        }
    }
    held
}

/// Exactly what `registry` would hold after applying `delta` (the last
/// entry for an id wins, as in [`apply`]), computed without changing it,
/// so a delta that would pass a bound can be refused with the copy intact.
pub(super) fn footprint_after(registry: &Registry, delta: &Applications) -> Footprint {
    let mut held = footprint(registry);
    // The delta's last word on each id: `Some(weight)` for a record kept,
    // `None` for a delete.
    let names = app_keys(delta);
    let mut last: HashMap<(&str, &str), Option<Weight>> = HashMap::new();
    for (app, name) in delta.applications.iter().zip(&names) {
        for (id, action, instance, raw_status) in records_of(app) {
            let after = match action {
                ActionType::Deleted => None,
                ActionType::Unknown => continue,
                _ => Some(weight_of(name, id, instance, raw_status)),
            };
            last.insert((name.as_str(), id), after);
        }
    }
    // Per app the delta names, how many records it holds after it.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for ((name, id), after) in last {
        let count = counts
            .entry(name)
            .or_insert_with(|| registry.get(name).map_or(0, BTreeMap::len));
        let before = registry.get(name).and_then(|records| records.get(id));
        if let Some(before) = before {
            held.remove(weight_of_record(name, id, before));
            *count -= 1;
        }
        if let Some(weight) = after {
            held.add(weight);
            *count += 1;
        }
    }
    // An app's key is held while it has a record (`apply` drops an empty
    // app).
    for (name, count) in counts {
        match (registry.contains_key(name), count > 0) {
            (false, true) => held.text_bytes = held.text_bytes.saturating_add(name.len()),
            (true, false) => held.text_bytes = held.text_bytes.saturating_sub(name.len()),
            _ => {}
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::eureka::wire;

    fn parse(json: &str) -> Applications {
        wire::parse_applications(json.as_bytes()).unwrap()
    }

    fn record(id: &str, status: &str, action: &str) -> String {
        format!(
            r#"{{"instanceId": "{id}", "hostName": "127.0.0.1", "app": "A", "status": "{status}",
                "port": {{"$": 1}}, "actionType": "{action}"}}"#
        )
    }

    fn apps(hash: &str, records: &[String]) -> Applications {
        parse(&format!(
            r#"{{"applications": {{"apps__hashcode": "{hash}", "application": [{{"name": "A", "instance": [{}]}}]}}}}"#,
            records.join(",")
        ))
    }

    #[test]
    fn deltas_apply_by_action_and_are_idempotent() {
        let mut registry = Registry::new();
        apply(
            &mut registry,
            &apps(
                "UP_2_",
                &[record("a", "UP", "ADDED"), record("b", "UP", "ADDED")],
            ),
            true,
        );
        assert_eq!(hash_of(&registry), "UP_2_");
        let delta = apps(
            "DOWN_1_UP_1_",
            &[
                record("a", "UP", "DELETED"),
                record("b", "DOWN", "MODIFIED"),
                record("c", "UP", "MODIFIED"), // unknown: added
                record("zz", "UP", "DELETED"), // unknown: no-op
            ],
        );
        apply(&mut registry, &delta, false);
        assert_eq!(hash_of(&registry), "DOWN_1_UP_1_");
        apply(&mut registry, &delta, false);
        assert_eq!(hash_of(&registry), "DOWN_1_UP_1_");
        let ids: Vec<&String> = registry["A"].keys().collect();
        assert_eq!(ids, ["b", "c"]);
        // Deleting the last instance removes the app.
        apply(
            &mut registry,
            &apps(
                "",
                &[record("b", "DOWN", "DELETED"), record("c", "UP", "DELETED")],
            ),
            false,
        );
        assert!(registry.is_empty());
        assert_eq!(hash_of(&registry), "");
    }

    #[test]
    fn the_shared_delta_fixture_reconciles_to_its_hash() {
        let base = parse(include_str!(
            "../../../../tests/data/eureka/delta-base-full.json"
        ));
        let delta = parse(include_str!(
            "../../../../tests/data/eureka/delta-add-modify-delete.json"
        ));
        let mut registry = Registry::new();
        apply(&mut registry, &base, true);
        assert_eq!(Some(hash_of(&registry)), base.apps_hashcode);
        apply(&mut registry, &delta, false);
        assert_eq!(hash_of(&registry), "OUT_OF_SERVICE_1_UP_1_");
        assert_eq!(Some(hash_of(&registry)), delta.apps_hashcode);
        let ids: Vec<&String> = registry["ORDER-SERVICE"].keys().collect();
        assert_eq!(ids, ["order-b", "order-c"]);
        // The full-registry fixtures carry their own hashes.
        for json in [
            include_str!("../../../../tests/data/eureka/apps-full.json"),
            include_str!("../../../../tests/data/eureka/apps-mixed-status.json"),
            include_str!("../../../../tests/data/eureka/apps-empty.json"),
        ] {
            let apps = parse(json);
            assert_eq!(Some(status_hash(&apps)), apps.apps_hashcode);
        }
    }

    #[test]
    fn footprint_after_counts_new_ids_and_deletes_of_known_ones() {
        let mut registry = Registry::new();
        apply(
            &mut registry,
            &apps(
                "UP_2_",
                &[record("a", "UP", "ADDED"), record("b", "UP", "ADDED")],
            ),
            true,
        );
        let delta = apps(
            "",
            &[
                record("a", "DOWN", "MODIFIED"), // known: same size
                record("c", "UP", "ADDED"),      // new: +1
                record("d", "UP", "MODIFIED"),   // new: +1
                record("b", "UP", "DELETED"),    // known: -1
                record("zz", "UP", "DELETED"),   // unknown: 0
            ],
        );
        assert_eq!(footprint_after(&registry, &delta).records, 3);
        apply(&mut registry, &delta, false);
        assert_eq!(registry["A"].len(), 3);
        assert_eq!(footprint(&registry).records, 3);
    }

    fn with_metadata(id: &str, action: &str, entries: usize) -> String {
        let metadata: Vec<String> = (0..entries).map(|k| format!(r#""k{k}": "v""#)).collect();
        format!(
            r#"{{"instanceId": "{id}", "hostName": "127.0.0.1", "app": "A", "status": "UP",
                "port": {{"$": 1}}, "metadata": {{{}}}, "actionType": "{action}"}}"#,
            metadata.join(",")
        )
    }

    #[test]
    fn footprints_count_metadata_exactly_with_repeated_ids() {
        let mut registry = Registry::new();
        let full = apps(
            "",
            &[with_metadata("a", "ADDED", 3), with_metadata("a", "ADDED", 5), with_metadata("b", "ADDED", 2)],
        );
        // Each entry `k<n>: v` is 3 bytes of text; each record adds its id
        // (1 byte), its host (`127.0.0.1`, 9), status (`UP`) and service
        // name (`A`): 14; the app's key (`A`) counts once.
        let expected = Footprint {
            records: 2,
            metadata: 7,
            metadata_bytes: 21,
            text_bytes: 48,
        };
        assert_eq!(footprint_of(&full), expected);
        apply(&mut registry, &full, true);
        assert_eq!(footprint(&registry), expected);
        // a: 5 -> deleted, then re-added with 1; b: 2 -> 4; c: new with 6;
        // a delete of an unknown id and a repeated delete change nothing.
        let delta = apps(
            "",
            &[
                with_metadata("a", "DELETED", 0),
                with_metadata("a", "DELETED", 0),
                with_metadata("a", "ADDED", 1),
                with_metadata("b", "MODIFIED", 4),
                with_metadata("c", "ADDED", 6),
                with_metadata("zz", "DELETED", 0),
            ],
        );
        let after = footprint_after(&registry, &delta);
        apply(&mut registry, &delta, false);
        assert_eq!(after, footprint(&registry));
        let expected = Footprint {
            records: 3,
            metadata: 11,
            metadata_bytes: 33,
            text_bytes: 73,
        };
        assert_eq!(after, expected);
        // Every record of the app deleted, and a new app added: the key of
        // the one leaves the copy, the other's joins it.
        let mut delta = apps(
            "",
            &["a", "b", "c"].map(|id| with_metadata(id, "DELETED", 0)),
        );
        delta.applications.extend(
            apps("", &[with_metadata("n", "ADDED", 0)])
                .applications
                .into_iter()
                .map(|mut app| {
                    app.name = "longer-name".to_owned();
                    app
                }),
        );
        let after = footprint_after(&registry, &delta);
        apply(&mut registry, &delta, false);
        assert_eq!(after, footprint(&registry));
        // `n`, `127.0.0.1`, `UP`, `A` and `LONGER-NAME`.
        assert_eq!((after.records, after.text_bytes), (1, 24));
    }

    #[test]
    fn app_keys_upper_case_unicode_like_java() {
        assert_eq!(app_key(" über-service "), "ÜBER-SERVICE");
        assert_eq!(app_key("straße"), "STRASSE");
    }

    #[test]
    fn skipped_records_still_count_in_the_hash() {
        let no_port = r#"{"instanceId": "x", "hostName": "h", "status": "STARTING", "port": {"$": 1, "@enabled": "false"}, "actionType": "ADDED"}"#;
        let all = apps(
            "STARTING_1_UP_1_",
            &[record("a", "UP", "ADDED"), no_port.to_owned()],
        );
        assert_eq!(status_hash(&all), "STARTING_1_UP_1_");
    }
}
