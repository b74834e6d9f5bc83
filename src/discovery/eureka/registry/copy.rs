//! The local copy of the registry: records by app and instance id, deltas
//! applied by `actionType`, the status-count hash, and the size bound.

use std::collections::{BTreeMap, HashMap};

use super::super::wire::{ActionType, Applications};
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

/// Applies `apps` to `registry`: as a full copy, or by `actionType`.
pub(super) fn apply(registry: &mut Registry, apps: &Applications, full: bool) {
    if full {
        registry.clear();
    }
    for app in &apps.applications {
        let name = app.name.to_ascii_uppercase();
        let entries = registry.entry(name.clone()).or_default();
        let records = app
            .instances
            .iter()
            .map(|i| {
                (
                    i.instance.id().to_owned(),
                    i.action,
                    Record {
                        raw_status: i.raw_status.to_string(),
                        instance: Some(i.instance.clone()),
                    },
                )
            })
            .chain(app.rejected.iter().filter_map(|r| {
                let id = r.id.clone()?;
                Some((
                    id,
                    r.action,
                    Record {
                        raw_status: r.raw_status.clone().unwrap_or_else(|| "UNKNOWN".to_owned()),
                        instance: None,
                    },
                ))
            }));
        for (id, action, record) in records {
            match action {
                ActionType::Deleted if !full => {
                    entries.remove(&id);
                }
                // A delta entry without a known action is ignored, as the
                // Java client does.
                ActionType::Unknown if !full => {}
                _ => {
                    entries.insert(id, record);
                }
            }
        }
        if entries.is_empty() {
            registry.remove(&name);
        }
    }
}

/// The number of records `registry` would hold after applying `delta`
/// (an over-estimate if the delta names an id twice), computed without
/// changing it, so a delta that would pass the bound can be refused with
/// the copy intact.
pub(super) fn size_after(registry: &Registry, delta: &Applications) -> usize {
    let mut size: usize = registry.values().map(BTreeMap::len).sum();
    for app in &delta.applications {
        let known = registry.get(&app.name.to_ascii_uppercase());
        let has = |id: &str| known.is_some_and(|records| records.contains_key(id));
        let ids = app
            .instances
            .iter()
            .map(|i| (i.instance.id(), i.action))
            .chain(
                app.rejected
                    .iter()
                    .filter_map(|r| Some((r.id.as_deref()?, r.action))),
            );
        for (id, action) in ids {
            match action {
                ActionType::Added | ActionType::Modified if !has(id) => size += 1,
                ActionType::Deleted if has(id) => size = size.saturating_sub(1),
                _ => {}
            }
        }
    }
    size
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
    fn size_after_counts_new_ids_and_deletes_of_known_ones() {
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
        assert_eq!(size_after(&registry, &delta), 3);
        apply(&mut registry, &delta, false);
        assert_eq!(registry["A"].len(), 3);
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
