//! Structure-aware property test of the Eureka payload decoder
//! (`wire::parse_applications*`, `wire::parse_application*`): payloads in
//! the real server's shape (tests/data/eureka/apps-full.json) with random
//! fields replaced by hostile values (every JSON type, nested junk, huge
//! and negative numbers, empty, long and control-character strings,
//! status and action words), or removed, both single-element quirks
//! (`application` and `instance` as an object), then cut short, a byte
//! changed, `1e400` inserted, or a port and a zone made `1e400` and a lone
//! surrogate. 5 000 seeded cases with both port preferences and both host
//! choices. Each payload decodes or fails with a `WireError`; no panic;
//! every kept instance has a host and a non-zero port; each decode takes
//! under 2 s and grows the heap by at most 64 bytes per payload byte plus
//! 1 MiB (counting allocator).
#![cfg(feature = "eureka")]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower_ribbon::discovery::eureka::wire::{self, ParseOptions, PortPreference};

#[path = "common/peak_alloc.rs"]
mod peak_alloc;

#[global_allocator]
static GLOBAL: peak_alloc::Peak = peak_alloc::Peak;

fn junk() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        proptest::sample::select(
            &[
                "",
                " ",
                "UP",
                "DOWN",
                "up",
                "OUT_OF_SERVICE",
                "STARTING",
                "UNKNOWN",
                "true",
                "false",
                "8080",
                "0",
                "-1",
                "65536",
                "70000",
                "1e3",
                "::1",
                "[::1]",
                "127.0.0.1",
                "a..b",
                "host name",
                "ADDED",
                "MODIFIED",
                "DELETED",
                "x\u{0}y",
                "\u{feff}",
                "é",
                "\u{202e}",
                "999999999999999999999",
                "1.5",
                "zone-a",
                "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                "Amazon",
                "MyOwn"
            ][..]
        )
        .prop_map(|s| Value::String(s.to_owned())),
        "[ -~]{0,20}".prop_map(Value::String),
        (1usize..3000).prop_map(|n| Value::String("h".repeat(n))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-z$@]{0,8}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn good_instance(i: usize) -> Value {
    json!({
        "instanceId": format!("id-{i}"),
        "hostName": format!("10.0.0.{}", i % 250 + 1),
        "app": "USER-SERVICE",
        "ipAddr": format!("10.0.0.{}", i % 250 + 1),
        "status": "UP",
        "overriddenStatus": "UNKNOWN",
        "port": {"$": 8080 + i, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
        "metadata": {"zone": "zone-a", "weight": "3"},
        "homePageUrl": "http://x/",
        "healthCheckUrl": "http://10.0.0.1:8080/actuator/health",
        "vipAddress": "user-service",
        "secureVipAddress": "user-service",
        "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": "1764400000500",
        "lastDirtyTimestamp": "1764400000100",
        "actionType": "ADDED"
    })
}

const FIELDS: &[&str] = &[
    "instanceId",
    "hostName",
    "app",
    "ipAddr",
    "status",
    "overriddenStatus",
    "port",
    "securePort",
    "dataCenterInfo",
    "leaseInfo",
    "metadata",
    "healthCheckUrl",
    "vipAddress",
    "secureVipAddress",
    "actionType",
    "$",
    "@enabled",
    "zone",
    "weight",
];

/// Mutations: (field index, replacement or removal).
fn instance() -> impl Strategy<Value = Value> {
    (
        0usize..1000,
        proptest::collection::vec(
            (0..FIELDS.len(), proptest::option::of(junk()), 0u8..3),
            0..4,
        ),
    )
        .prop_map(|(i, muts)| {
            let mut v = good_instance(i);
            for (f, junk, depth) in muts {
                let name = FIELDS[f];
                let obj = match (depth, name) {
                    (1, _) => v.get_mut("port").and_then(Value::as_object_mut),
                    (2, _) => v.get_mut("metadata").and_then(Value::as_object_mut),
                    _ => v.as_object_mut(),
                };
                if let Some(obj) = obj {
                    match junk {
                        Some(j) => {
                            obj.insert(name.to_owned(), j);
                        }
                        None => {
                            obj.remove(name);
                        }
                    }
                }
            }
            v
        })
}

fn payload() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let app = (
        "[A-Z-]{0,12}",
        proptest::collection::vec(instance(), 0..5),
        any::<bool>(),
        proptest::option::of(junk()),
    )
        .prop_map(|(name, insts, as_object, extra)| {
            let mut m = Map::new();
            m.insert("name".into(), Value::String(name));
            let inst = if as_object && insts.len() == 1 {
                insts.into_iter().next().unwrap()
            } else {
                Value::Array(insts)
            };
            m.insert("instance".into(), inst);
            if let Some(e) = extra {
                m.insert("instance".into(), e);
            }
            Value::Object(m)
        });
    (proptest::collection::vec(app, 0..4), any::<bool>(), proptest::option::of(junk()), 0u8..8, any::<usize>(), any::<u8>(), any::<bool>())
        .prop_map(|(apps, single, hash, text_mut, at, byte, one_app)| {
            let application = if single && apps.len() == 1 { apps[0].clone() } else { Value::Array(apps.clone()) };
            let v = if one_app {
                json!({"application": apps.first().cloned().unwrap_or(Value::Null)})
            } else {
                json!({"applications": {"versions__delta": "1", "apps__hashcode": hash.unwrap_or(json!("UP_1_")), "application": application}})
            };
            let mut text = serde_json::to_vec(&v).unwrap();
            let n = text.len().max(1);
            match text_mut {
                0 => text.truncate(at % n),
                1 => { let i = at % n; text[i] = byte; }
                2 => { let i = at % n; text.splice(i..i, b"1e400".iter().copied()); }
                3 => { let s = String::from_utf8_lossy(&text).replacen("8080", "1e400", 1).replacen("zone-a", "\\ud800", 1); text = s.into_bytes(); }
                _ => {}
            }
            (text, one_app)
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 5000,
        rng_seed: proptest::test_runner::RngSeed::Fixed(32),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn hostile_payloads_decode_or_fail_typed((text, one_app) in payload(), secure in any::<bool>(), prefer_ip in any::<bool>()) {
        let options = ParseOptions::default()
            .with_prefer_ip_address(prefer_ip)
            .with_port_preference(if secure { PortPreference::Secure } else { PortPreference::Plain });
        let base = peak_alloc::start();
        let start = Instant::now();
        if one_app {
            if let Ok(app) = wire::parse_application_with(&text, options) {
                for i in &app.instances { prop_assert!(i.instance.port() != 0); prop_assert!(!i.instance.host().is_empty()); }
            }
        } else if let Ok(apps) = wire::parse_applications_with(&text, options) {
            for a in &apps.applications { for i in &a.instances {  prop_assert!(i.instance.port() != 0); prop_assert!(!i.instance.host().is_empty()); } }
        }
        let _ = wire::parse_applications(&text);
        let _ = wire::parse_application(&text);
        let grown = peak_alloc::grown(base);
        prop_assert!(start.elapsed() < Duration::from_secs(2));
        prop_assert!(grown <= 64 * text.len() + (1 << 20), "grew {} for {} bytes", grown, text.len());
    }
}
