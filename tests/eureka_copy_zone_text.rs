//! The registry copy's text bound counts every zone it holds (helper 144).
//!
//! Deltas each within `max_body_bytes` must not pile text into the copy
//! past that bound (`DiscoveryError::RegistryTextTooLarge`). An instance's
//! zone was counted nowhere when it came from
//! `dataCenterInfo.metadata["availability-zone"]` (AWS instances' usual
//! place): 8 deltas of ten ~90 KiB zones under a 1 MiB bound were all
//! taken and the copy held 7 373 200 bytes of zone text. A zone from
//! `metadata.zone` counts once, as the payload carried it (the copy holds
//! it twice, in the metadata and as the instance's zone: at most twice the
//! bound), so a full payload within the bound is always taken (helper 146:
//! counting the copies refused one).
//!
//! A stub Eureka (`support/eureka_stub.rs`): a real server takes no
//! registration whose zone is 90 KiB long to serve back in a delta.
#![cfg(feature = "eureka")]

#[path = "support/eureka_stub.rs"]
mod eureka_stub;

use std::time::Duration;

use eureka_stub::{Answer, Stub, apps, record};
use tower_ribbon::discovery::eureka::EurekaRegistry;

/// The body bound of the registries here (1 MiB).
const LIMIT: usize = 1 << 20;
/// Deltas served, and records per delta.
const ROUNDS: usize = 8;
const PER_DELTA: usize = 10;

/// A zone of about 90 KiB, distinct per record.
fn zone(d: usize, i: usize) -> String {
    format!("z{d}-{i}-{}", "x".repeat(90 * 1024))
}

/// Serves one instance in full, then [`ROUNDS`] deltas of [`PER_DELTA`]
/// records made by `make(delta, index)`, each delta within [`LIMIT`];
/// refreshes once per delta. Returns the deltas refused, the instances
/// held, and the zone and metadata text they hold.
async fn pile_up(make: impl Fn(usize, usize) -> String) -> (usize, usize, usize, usize) {
    let stub = Stub::start().await;
    let base = record("BIG", "base", 1000, "UP", "ADDED", "{}");
    stub.set(
        "/eureka/apps",
        vec![Answer::ok(apps("UP_1_", "BIG", &[base]))],
    );
    let deltas: Vec<Answer> = (1..=ROUNDS)
        .map(|d| {
            let records: Vec<String> = (0..PER_DELTA).map(|i| make(d, i)).collect();
            let body = apps(&format!("UP_{}_", 1 + PER_DELTA * d), "BIG", &records);
            assert!(body.len() < LIMIT, "each delta within the body bound");
            Answer::ok(body)
        })
        .collect();
    stub.set("/eureka/apps/delta", deltas);
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(10))
        .max_body_bytes(LIMIT)
        .build()
        .expect("build");
    registry.ready().await.expect("full fetch");
    let mut refused = 0;
    for _ in 0..ROUNDS {
        if registry.refresh_now().await.is_err() {
            refused += 1;
        }
    }
    let instances = registry.instances("BIG");
    let zones = instances
        .iter()
        .filter_map(|i| i.zone())
        .map(str::len)
        .sum();
    let metadata = (instances.iter())
        .flat_map(|i| i.metadata().iter().map(|(k, v)| k.len() + v.len()))
        .sum();
    (refused, instances.len(), zones, metadata)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_zones_from_data_center_info_count_toward_the_text_bound() {
    let (refused, instances, zones, _) = pile_up(|d, i| {
        record("BIG", &format!("d{d}-{i}"), 2000, "UP", "ADDED", "{}").replace(
            r#""metadata":{}"#,
            &format!(
                r#""dataCenterInfo":{{"@class":"com.netflix.appinfo.AmazonInfo","name":"Amazon","metadata":{{"availability-zone":"{}"}}}},"metadata":{{}}"#,
                zone(d, i)
            ),
        )
    })
    .await;
    println!("{instances} instances, {refused} deltas refused, zone text {zones} B");
    assert!(zones <= LIMIT, "zone text {zones} B held; bound {LIMIT}");
    // The first delta fits (about 900 KiB of zones); every later one would
    // pass the bound.
    assert_eq!((refused, instances), (ROUNDS - 1, 1 + PER_DELTA));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_zone_counts_once_as_the_payload_carried_it() {
    let (refused, instances, zones, metadata) = pile_up(|d, i| {
        let meta = format!(r#"{{"zone":"{}"}}"#, zone(d, i));
        record("BIG", &format!("d{d}-{i}"), 2000, "UP", "ADDED", &meta)
    })
    .await;
    println!(
        "{instances} instances, {refused} deltas refused, zone {zones} + metadata {metadata} B"
    );
    // Counted as the payload carried it (in the metadata), held twice.
    assert!(
        metadata <= LIMIT,
        "metadata {metadata} B held; bound {LIMIT}"
    );
    assert!(zones + metadata <= 2 * LIMIT, "held {} B", zones + metadata);
    assert_eq!((refused, instances), (ROUNDS - 1, 1 + PER_DELTA));
}

/// A full payload within `max_body_bytes` is taken, whatever the copy
/// then holds twice (helper 146: 200 compact records with 200-byte k8s
/// host names, `host:app:port` ids and a `metadata.zone`, 127 314 bytes
/// at a bound of exactly that, were refused when ids and metadata zones
/// counted twice: "would hold 174 606 bytes").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compact_full_payload_within_the_bound_is_taken() {
    let host = format!(
        "{}svc.cluster.local",
        "pod-abcdef0123456789-abcdef0123456789.".repeat(5)
    );
    let records: Vec<String> = (0..200)
        .map(|i| {
            format!(
                r#"{{"instanceId":"{host}:orders-service:{p}","hostName":"{host}","app":"ORDERS","status":"UP","port":{{"$":{p}}},"metadata":{{"zone":"{z}"}}}}"#,
                p = 8000 + i,
                z = "zone-".repeat(20),
            )
        })
        .collect();
    let body = format!(
        r#"{{"applications":{{"versions__delta":"1","apps__hashcode":"UP_200_","application":[{{"name":"ORDERS","instance":[{}]}}]}}}}"#,
        records.join(",")
    );
    let stub = Stub::start().await;
    let size = body.len();
    stub.set("/eureka/apps", vec![Answer::ok(body)]);
    let registry = EurekaRegistry::builder()
        .server_urls(&stub.url())
        .fetch_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(10))
        .max_body_bytes(size)
        .build()
        .expect("build");
    registry.ready().await.expect("a payload within the bound");
    assert_eq!(registry.instances("ORDERS").len(), 200);
}
