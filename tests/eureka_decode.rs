//! Decoding cost and logging on honest payloads.
//!
//! - `decode_timing` (ignored; run with `--release --ignored --nocapture`):
//!   decodes a generated `/apps` payload of 10 000 instances over 100 apps
//!   in the real server's format (about 1.1 KB per instance, as
//!   `tests/data/eureka/apps-full.json`) and prints the median time and the
//!   peak heap growth, counted by a global counting allocator.
//! - One warning per payload, with counts, however many records are
//!   skipped (issue 11: the old decoder logged one warning per element).
#![cfg(feature = "eureka")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tower_ribbon::discovery::eureka::wire;

#[path = "common/log_capture.rs"]
mod log_capture;

#[path = "common/peak_alloc.rs"]
mod peak_alloc;

#[global_allocator]
static GLOBAL: peak_alloc::Peak = peak_alloc::Peak;

/// One instance record in the real server's format.
fn instance(app: usize, n: usize) -> String {
    let host = format!("10.{}.{}.{}", app / 250, app % 250, n % 250);
    let port = 8000 + n;
    format!(
        r#"{{"instanceId":"svc-{app}-{n}:service-{app}:{port}","hostName":"{host}","app":"SERVICE-{app}","ipAddr":"{host}","status":"UP","overriddenStatus":"UNKNOWN","port":{{"$":{port},"@enabled":"true"}},"securePort":{{"$":443,"@enabled":"false"}},"countryId":1,"dataCenterInfo":{{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"}},"leaseInfo":{{"renewalIntervalInSecs":30,"durationInSecs":90,"registrationTimestamp":1764400000000,"lastRenewalTimestamp":1764400030000,"evictionTimestamp":0,"serviceUpTimestamp":1764400000500}},"metadata":{{"management.port":"{port}","zone":"zone-{z}"}},"homePageUrl":"http://{host}:{port}/","statusPageUrl":"http://{host}:{port}/actuator/info","healthCheckUrl":"http://{host}:{port}/actuator/health","vipAddress":"service-{app}","secureVipAddress":"service-{app}","isCoordinatingDiscoveryServer":"false","lastUpdatedTimestamp":"1764400000500","lastDirtyTimestamp":"1764400000100","actionType":"ADDED"}}"#,
        z = n % 3
    )
}

/// `/apps` with `instances` spread over `apps` applications.
fn payload(instances: usize, apps: usize) -> Vec<u8> {
    let per_app = instances / apps;
    let applications: Vec<String> = (0..apps)
        .map(|a| {
            let records: Vec<String> = (0..per_app).map(|n| instance(a, n)).collect();
            format!(
                r#"{{"name":"SERVICE-{a}","instance":[{}]}}"#,
                records.join(",")
            )
        })
        .collect();
    format!(
        r#"{{"applications":{{"versions__delta":"1","apps__hashcode":"UP_{instances}_","application":[{}]}}}}"#,
        applications.join(",")
    )
    .into_bytes()
}

#[test]
#[ignore = "timing; run with --release --ignored --nocapture"]
fn decode_timing() {
    log_capture::init();
    for instances in [1_000, 10_000, 50_000] {
        let body = payload(instances, 100);
        let mut times = Vec::new();
        let mut peak = 0;
        for _ in 0..7 {
            let base = peak_alloc::live();
            peak_alloc::set_peak(base);
            let started = Instant::now();
            let apps = wire::parse_applications(&body).expect("decodes");
            times.push(started.elapsed());
            peak = peak.max(peak_alloc::peak() - base);
            let n: usize = apps.applications.iter().map(|a| a.instances.len()).sum();
            assert_eq!(n, instances);
        }
        times.sort();
        eprintln!(
            "{instances} instances, {} KB body: median {:?} (min {:?}), peak heap +{} KiB",
            body.len() / 1000,
            times[times.len() / 2],
            times[0],
            peak / 1024
        );
    }
}

/// Counts WARN events and keeps their formatted fields.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().expect("warnings").push(fields.0);
    }
}

/// 10 000 skipped records (three reasons) in one payload: one warning,
/// with the counts.
#[test]
fn one_warning_per_payload_with_counts() {
    log_capture::init();
    use tracing_subscriber::layer::SubscriberExt;
    let warnings = Warnings::default();
    let subscriber = tracing_subscriber::registry().with(warnings.clone());
    let mut records = vec![instance(0, 1)];
    for n in 0..5_000 {
        records.push(format!(
            r#"{{"instanceId":"d{n}","hostName":"h","port":{{"$":1,"@enabled":"false"}}}}"#
        ));
    }
    for n in 0..4_000 {
        records.push(format!(
            r#"{{"instanceId":"p{n}","hostName":"h","port":"9001x"}}"#
        ));
    }
    records.extend(std::iter::repeat_n("0".to_owned(), 1_000));
    let body = format!(
        r#"{{"application":{{"name":"SERVICE-0","instance":[{}]}}}}"#,
        records.join(",")
    );
    let app = tracing::subscriber::with_default(subscriber, || {
        wire::parse_application(body.as_bytes()).expect("one good record")
    });
    assert_eq!(app.instances.len(), 1);
    assert_eq!(app.rejected.len(), 9_000, "non-objects are only counted");
    let warnings = warnings.0.lock().expect("warnings");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let text = &warnings[0];
    for needle in [
        "skipped=10000",
        "records=10001",
        "1000 not an object",
        "4000 a port is not a number",
        "5000 neither port nor securePort is enabled",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
}

/// A guard against a decoder that is quadratic in the number of records:
/// 10 000 records decode within 2 s even in a debug build.
#[test]
fn ten_thousand_instances_decode_in_linear_time() {
    log_capture::init();
    let body = payload(10_000, 100);
    let started = Instant::now();
    let apps = wire::parse_applications(&body).expect("decodes");
    let took = started.elapsed();
    assert_eq!(apps.applications.len(), 100);
    assert!(took < Duration::from_secs(2), "{took:?}");
}
