//! `EurekaRegistry`'s local copy against a model of the server: seeded
//! random sequences of registrations, status changes (every status Eureka
//! writes), port changes, cancellations and re-registrations over two apps
//! whose instance ids collide, with deltas (`/eureka/apps/delta`) carrying
//! the latest change of each instance since the last successful fetch,
//! sometimes every unchanged instance again (the server's delta queue
//! repeats changes for its retention time), sometimes with one change lost,
//! and fetches failing with 500. After each successful fetch the copy
//! holds exactly what the client should: the server's registry, or, after
//! a lost change that leaves the status-count hash equal, the copy with
//! that change missing (Eureka's hash cannot see it; `delta_retention`
//! bounds how long). A mismatch must make the client fetch the whole
//! registry. A failed fetch keeps the copy.
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use eureka_stub::{Answer, Stub, record};
use proptest::prelude::*;
use tower_ribbon::discovery::eureka::EurekaRegistry;

static FETCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const IDS: &[&str] = &["a", "b", "c", "d", "e"];
const APPS: &[&str] = &["SVC", "OTHER"];
const STATUSES: &[&str] = &["UP", "DOWN", "STARTING", "OUT_OF_SERVICE", "UNKNOWN"];

#[derive(Debug, Clone)]
enum Op {
    Add(usize, usize, u16, usize),
    Status(usize, usize, usize),
    Port(usize, usize, u16),
    Delete(usize, usize),
    Fetch {
        fail: bool,
        resend: bool,
        drop: Option<usize>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..APPS.len(), 0..IDS.len(), 1000u16..1010, 0..STATUSES.len()).prop_map(|(a, i, p, s)| Op::Add(a, i, p, s)),
        2 => (0..APPS.len(), 0..IDS.len(), 0..STATUSES.len()).prop_map(|(a, i, s)| Op::Status(a, i, s)),
        1 => (0..APPS.len(), 0..IDS.len(), 1000u16..1010).prop_map(|(a, i, p)| Op::Port(a, i, p)),
        2 => (0..APPS.len(), 0..IDS.len()).prop_map(|(a, i)| Op::Delete(a, i)),
        3 => (any::<bool>(), any::<bool>(), proptest::option::weighted(0.3, 0usize..8)).prop_map(|(f, r, d)| Op::Fetch { fail: f && r, resend: r, drop: d }),
    ]
}

type Key = (usize, usize);
type Model = BTreeMap<Key, (u16, usize)>;

fn hash(model: &Model) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, s) in model.values() {
        *counts.entry(STATUSES[*s]).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(s, n)| format!("{s}_{n}_"))
        .collect()
}

fn payload(hash: &str, entries: &[(Key, u16, usize, &str)]) -> String {
    let mut apps = Vec::new();
    for (ai, app) in APPS.iter().enumerate() {
        let recs: Vec<String> = entries
            .iter()
            .filter(|((a, _), ..)| *a == ai)
            .map(|((_, i), port, s, action)| {
                record(app, IDS[*i], *port, STATUSES[*s], action, "{}")
            })
            .collect();
        if !recs.is_empty() {
            apps.push(format!(
                r#"{{"name":"{app}","instance":[{}]}}"#,
                recs.join(",")
            ));
        }
    }
    format!(
        r#"{{"applications":{{"versions__delta":"1","apps__hashcode":"{hash}","application":[{}]}}}}"#,
        apps.join(",")
    )
}

fn full(model: &Model) -> String {
    let entries: Vec<_> = model
        .iter()
        .map(|(k, (p, s))| (*k, *p, *s, "ADDED"))
        .collect();
    payload(&hash(model), &entries)
}

fn seen(registry: &EurekaRegistry) -> BTreeSet<(String, u16, String)> {
    APPS.iter()
        .flat_map(|app| {
            registry.instances(app).into_iter().map(move |i| {
                (
                    format!("{app}-{}", i.id()),
                    i.port(),
                    i.status().as_str().to_owned(),
                )
            })
        })
        .collect()
}

fn expected(model: &Model) -> BTreeSet<(String, u16, String)> {
    model
        .iter()
        .map(|((a, i), (p, s))| {
            (
                format!("{}-{}", APPS[*a], IDS[*i]),
                *p,
                STATUSES[*s].to_owned(),
            )
        })
        .collect()
}

async fn run(initial: Vec<(Key, u16, usize)>, ops: Vec<Op>) -> Result<(), String> {
    let stub = Stub::start().await;
    let mut model: Model = initial.into_iter().map(|(k, p, s)| (k, (p, s))).collect();
    stub.set("/eureka/apps", vec![Answer::ok(full(&model))]);
    stub.set("/eureka/apps/delta", vec![Answer::status(500)]);
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .build()
        .map_err(|e| e.to_string())?;
    registry.ready().await.map_err(|e| e.to_string())?;
    if seen(&registry) != expected(&model) {
        return Err(format!(
            "first copy {:?} != {:?}",
            seen(&registry),
            expected(&model)
        ));
    }
    // What the client's copy should hold.
    let mut copy = model.clone();
    // Latest change per instance since the last successful fetch.
    let mut changed: BTreeMap<Key, (u16, usize, &'static str)> = BTreeMap::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Add(a, i, p, s) => {
                let action = if model.contains_key(&(a, i)) {
                    "MODIFIED"
                } else {
                    "ADDED"
                };
                model.insert((a, i), (p, s));
                changed.insert((a, i), (p, s, action));
            }
            Op::Status(a, i, s) => {
                if let Some(e) = model.get_mut(&(a, i)) {
                    e.1 = s;
                    changed.insert((a, i), (e.0, s, "MODIFIED"));
                }
            }
            Op::Port(a, i, p) => {
                if let Some(e) = model.get_mut(&(a, i)) {
                    e.0 = p;
                    changed.insert((a, i), (p, e.1, "MODIFIED"));
                }
            }
            Op::Delete(a, i) => {
                if let Some((p, s)) = model.remove(&(a, i)) {
                    changed.insert((a, i), (p, s, "DELETED"));
                }
            }
            Op::Fetch { fail, resend, drop } => {
                let mut entries: Vec<(Key, u16, usize, &str)> = changed
                    .iter()
                    .map(|(k, (p, s, a))| (*k, *p, *s, *a))
                    .collect();
                if resend {
                    for (k, (p, s)) in &model {
                        if !changed.contains_key(k) {
                            entries.push((*k, *p, *s, "MODIFIED"));
                        }
                    }
                }
                if let Some(d) = drop {
                    if !entries.is_empty() {
                        entries.remove(d % entries.len());
                    }
                }
                stub.set("/eureka/apps", vec![Answer::ok(full(&model))]);
                if fail {
                    stub.set("/eureka/apps/delta", vec![Answer::status(500)]);
                    stub.set("/eureka/apps", vec![Answer::status(500)]);
                } else {
                    stub.set(
                        "/eureka/apps/delta",
                        vec![Answer::ok(payload(&hash(&model), &entries))],
                    );
                }
                let result = registry.refresh_now().await;
                if fail {
                    continue;
                }
                if let Err(e) = result {
                    return Err(format!("step {step}: {e}"));
                }
                changed.clear();
                let mut next = copy.clone();
                for (k, p, st, action) in &entries {
                    if *action == "DELETED" {
                        next.remove(k);
                    } else {
                        next.insert(*k, (*p, *st));
                    }
                }
                // A hash mismatch makes the client fetch the whole registry.
                copy = if hash(&next) == hash(&model) {
                    next
                } else {
                    model.clone()
                };
                FETCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (got, want) = (seen(&registry), expected(&copy));
                if got != want {
                    return Err(format!("step {step}: copy {got:?} != server {want:?}"));
                }
            }
        }
    }
    Ok(())
}

/// The property, then a check that it compared many copies (so it cannot
/// pass by failing every fetch).
#[test]
fn the_copy_is_checked_after_many_fetches() {
    the_copy_follows_the_server();
    let fetches = FETCHES.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{fetches} copies compared");
    assert!(fetches >= 1000, "{fetches}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500,
        rng_seed: proptest::test_runner::RngSeed::Fixed(32),
        failure_persistence: None, ..ProptestConfig::default() })]
    fn the_copy_follows_the_server(
        initial in proptest::collection::vec(((0..APPS.len(), 0..IDS.len()), 1000u16..1010, 0..STATUSES.len()), 0..6),
        ops in proptest::collection::vec(op(), 1..30),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = rt.block_on(run(initial, ops));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());

    }
}
