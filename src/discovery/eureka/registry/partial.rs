//! A full answer that lacks apps the copy holds.
//!
//! A Eureka peer restarted on its own refills as instances renew (up to
//! one renewal interval, 30 s by default): meanwhile it lists some apps and
//! not others. When the server the registry prefers cannot be asked and
//! such a peer answers (and the registry keeps asking it first from then
//! on), an app the copy holds with instances and the answer lacks may be
//! alive at the other server. So when a full answer lacks such apps, the
//! other servers are asked for the registry too (in order, until one
//! answers): an app another server lists, or every app when none answers,
//! keeps its records for `absence_hold` (Eureka's lease duration, 90 s, by
//! default) from the first such answer, as
//! [`EurekaSource`](super::super::EurekaSource) holds an app's 404 beside a
//! failed server and the registry holds an answer listing nothing at all.
//! An app that the other server lacks too, or that a single server lacks,
//! is taken at once, and so is an absence that lasted the hold: a removed
//! app is not kept for as long as a dead peer stays in the list. Before,
//! the partial answer replaced the copy: a live app's every request failed
//! with "not in the registry" until it renewed at the restarted peer (10 of
//! 10 with the other peer down; helper 219).
//!
//! The extra fetch comes only when an app leaves the copy, and costs one
//! answer more held at once (each within `max_body_bytes`) and, with the
//! other server hung, one request timeout. Instances missing from an app
//! the answer lists are taken as answered (its other instances carry its
//! traffic).

use std::collections::{BTreeMap, HashSet};

use super::copy::{Record, Registry, app_key};
use super::{Inner, wire};
use crate::discovery::eureka::client::EurekaHttp;
use crate::discovery::eureka::wire::Applications;

/// An app's records, by instance id, under its key.
pub(super) type Held = Vec<(String, BTreeMap<String, Record>)>;

/// The absence-tracking path of the copy's app `key`.
fn path(key: &str) -> String {
    format!("copy/{key}")
}

/// The keys of the apps `registry` holds records of and `apps` does not
/// list; none for an answer that lists nothing at all (`EurekaHttp::get`
/// held that one already, as a whole).
pub(super) fn missing(registry: &Registry, apps: &Applications) -> HashSet<String> {
    if apps.lists_nothing() {
        return HashSet::new();
    }
    let listed: HashSet<String> = listed_keys(apps);
    registry
        .iter()
        .filter(|(key, records)| !records.is_empty() && !listed.contains(*key))
        .map(|(key, _)| key.clone())
        .collect()
}

fn listed_keys(apps: &Applications) -> HashSet<String> {
    apps.applications
        .iter()
        .filter(|a| !a.lists_nothing())
        .map(|a| app_key(&a.name))
        .collect()
}

/// What another server says of the missing apps.
pub(super) enum Elsewhere {
    /// The keys of the missing apps another server lists (none: they are
    /// gone, or there is no other server).
    Listed(HashSet<String>),
    /// No other server answered.
    Unanswered,
}

/// Asks the servers other than the one that answered for the registry
/// when apps are `missing` (see the module docs).
pub(super) async fn elsewhere(inner: &Inner, missing: &HashSet<String>) -> Elsewhere {
    if missing.is_empty() || inner.http.server_count() < 2 {
        return Elsewhere::Listed(HashSet::new());
    }
    let options = inner.options;
    let answer = inner
        .http
        .other_answer("apps", move |body, deadline| {
            wire::decode_applications(body, options, Some(deadline))
        })
        .await;
    match answer {
        Some(apps) => {
            let listed = listed_keys(&apps);
            Elsewhere::Listed(missing.iter().filter(|k| listed.contains(*k)).cloned().collect())
        }
        None => Elsewhere::Unanswered,
    }
}

/// The records of the `missing` apps whose absence is held (listed by
/// another server, or none answered, and the hold not yet over); the
/// absences of the others, and of the apps the copy holds and the answer
/// lists, are settled.
pub(super) fn held(
    registry: &Registry,
    missing: &HashSet<String>,
    elsewhere: &Elsewhere,
    http: &EurekaHttp,
) -> Held {
    let mut held = Vec::new();
    for (key, records) in registry {
        let path = path(key);
        let unconfirmed = missing.contains(key)
            && match elsewhere {
                Elsewhere::Unanswered => true,
                Elsewhere::Listed(listed) => listed.contains(key),
            };
        if unconfirmed && http.hold_copy_absence(&path) {
            tracing::warn!(
                app = %crate::error::quote(key),
                "a Eureka server answered without an app the copy holds, which another server lists or could not confirm; keeping the app's records for the absence hold"
            );
            held.push((key.clone(), records.clone()));
        } else if !unconfirmed {
            http.settle_absence(&path);
        }
    }
    held
}

/// Puts `held` back into `registry` (after the answer was applied) if the
/// copy stays within `max_instances` records; `true` when nothing was
/// held (the copy is the server's).
pub(super) fn keep(registry: &mut Registry, held: Held, max_instances: usize) -> bool {
    if held.is_empty() {
        return true;
    }
    let records: usize = registry.values().map(BTreeMap::len).sum::<usize>()
        + held.iter().map(|(_, r)| r.len()).sum::<usize>();
    if records > max_instances {
        tracing::warn!(
            records,
            max_instances,
            "apps held after a failed Eureka server would take the copy past its bound; taking the answer as it is"
        );
        return true;
    }
    for (key, records) in held {
        registry.insert(key, records);
    }
    false
}
